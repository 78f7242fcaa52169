"""What a training solver records per iteration, and its progress bar.

:class:`History` keeps one row per iteration (loss, gradient norm, trust-region radius,
gradient evaluations so far, seconds since the start) and survives a checkpoint
(:meth:`History.state_dict`). :class:`Progress` shows a tqdm bar on rank 0 only.
"""
from __future__ import annotations

import math
import time
from typing import Any

from pnode.comm import is_root

FIELDS = ("iteration", "loss", "gradient_norm", "radius", "gradients", "seconds")


class History:
    """Per-iteration records of one optimisation (continued across resumes)."""

    def __init__(self):
        self.rows: dict[str, list[float]] = {name: [] for name in FIELDS}
        self._offset = 0.0  # seconds spent before a resume
        self._start = time.perf_counter()

    def append(self, iteration: int, loss: float, gradient_norm: float, radius: float = math.nan,
               gradients: float = math.nan) -> None:
        """One row; a second row for the same iteration (a trust-region solver reporting a
        rejected step) replaces the first."""
        row = (iteration, loss, gradient_norm, radius, gradients,
               self._offset + time.perf_counter() - self._start)
        again = len(self) and self.rows["iteration"][-1] == iteration
        for name, value in zip(FIELDS, row):
            if again:
                self.rows[name][-1] = float(value)
            else:
                self.rows[name].append(float(value))

    def __len__(self) -> int:
        return len(self.rows["iteration"])

    def __getitem__(self, name: str) -> list[float]:
        return self.rows[name]

    def last(self, name: str, default: float = math.nan) -> float:
        column = self.rows[name]
        return column[-1] if column else default

    def state_dict(self) -> dict[str, Any]:
        return {name: list(values) for name, values in self.rows.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = {name: [float(v) for v in state.get(name, [])] for name in FIELDS}
        self._offset = self.last("seconds", 0.0)
        self._start = time.perf_counter()


class Progress:
    """A tqdm bar on rank 0 of ``comm`` (nothing elsewhere or with ``enabled=False``)."""

    def __init__(self, total: int | None, desc: str, comm=None, enabled: bool = True, initial: int = 0):
        self.bar = None
        if enabled and is_root(comm):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, initial=initial, leave=False, dynamic_ncols=True)

    def update(self, steps: int = 1, **postfix: float) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            self.bar.set_postfix({k: f"{v:.3e}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
