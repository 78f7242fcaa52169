"""What the neural-Galerkin examples share: a command line built from a config dataclass."""
from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm


def main_from_config(doc: str, out: str, config, quick: dict, run: Callable, argv=None) -> dict:
    """Parse ``--out``, ``--quick`` and one option per field of ``config`` (a dataclass
    instance: its defaults), run ``run(cfg, Path(out))`` and print its metrics."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default=out)
    parser.add_argument("--quick", action="store_true", help=f"a short run ({', '.join(f'{k}={v}' for k, v in quick.items())})")
    for name, value in asdict(config).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    args = parser.parse_args(argv[1:] if argv else None)
    cfg = replace(config, **(quick if args.quick else {}))
    cfg = replace(cfg, **{k: v for k, v in vars(args).items() if k in asdict(cfg) and v is not None})
    metrics = run(cfg, Path(args.out))
    for key, value in metrics.items():
        print(f"{key}: {value:.12e}" if isinstance(value, float) else f"{key}: {value}")
    return metrics


def two_panels(size: tuple[float, float]):
    """A figure with two axes side by side (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, 2, figsize=size)


def save(fig, path: Path) -> None:
    """Lay out, write (120 dpi) and close ``fig``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class TimeProgress(torch.nn.Module):
    """``func(t, y)`` with a tqdm bar over the time reached (``[0, T]``): a progress bar for
    a long march. Its parameters are ``func``'s."""

    def __init__(self, func: torch.nn.Module, T: float, desc: str):
        super().__init__()
        self.func = func
        self.bar = tqdm(total=float(T), desc=desc, bar_format="{l_bar}{bar}| t={n:.3f}/{total:.3f} [{elapsed}]")

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reached = float(t)
        if reached > self.bar.n:
            self.bar.update(reached - self.bar.n)
        return self.func(t, y)

    def close(self) -> None:
        self.bar.close()
