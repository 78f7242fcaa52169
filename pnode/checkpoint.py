"""Checkpoint policies: how memory is traded for recomputation in the backward pass."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError


@dataclass(frozen=True)
class Checkpoint:
    """What the forward pass keeps for the adjoint.

    - ``Checkpoint("all")`` (default): solutions and stages of every step and, for explicit
      methods, each stage's autograd graph, so the backward pass runs only backward
      passes through ``func``: fastest, with the memory of backpropagation through the
      solver (every stage's activations).
    - ``Checkpoint("solution")``: solutions only; the backward pass recomputes each step's
      stages (with their graphs, used once and freed): one more evaluation of ``func`` per
      stage, memory of one state per step.
    - ``Checkpoint(budget=K)``: at most ``K`` stored states whatever the number of steps,
      with a binomial (revolve-class) schedule; ``disk=True`` keeps them in files.
    """

    mode: str = "all"
    budget: int | None = None
    disk: bool = False
    directory: str | None = None

    def __post_init__(self):
        mode = "budget" if self.budget is not None else self.mode
        object.__setattr__(self, "mode", mode)
        if mode not in ("all", "solution", "budget"):
            raise ConfigurationError(f"unknown checkpoint mode {self.mode!r}; use 'all', 'solution' or budget=K")
        if mode == "budget":
            if not isinstance(self.budget, int) or isinstance(self.budget, bool) or self.budget < 1:
                raise ConfigurationError(f"checkpoint budget must be an integer >= 1, got {self.budget!r}")
        elif self.disk:
            raise ConfigurationError("disk=True needs a budget: Checkpoint(budget=K, disk=True)")
