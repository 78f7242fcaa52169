"""Checkpoint policies: how memory is traded for recomputation in the backward pass."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigurationError


@dataclass(frozen=True)
class Checkpoint:
    """What the forward pass keeps for the adjoint.

    - ``Checkpoint("all")`` (default): solutions and stages of every step and, for explicit
      methods, each stage's autograd graph, so the backward pass runs only backward
      passes through ``func``: fastest, with the memory of backpropagation through the
      solver (every stage's activations). ``graph_memory`` caps the graphs' bytes per
      process (default: a quarter of the machine's memory shared by the MPI ranks on it;
      0 keeps none); stages beyond the cap are re-evaluated in the backward pass.
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
    graph_memory: int | None = None

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
        if self.graph_memory is not None:
            if mode != "all":
                raise ConfigurationError("graph_memory applies to Checkpoint('all') only")
            if not isinstance(self.graph_memory, int) or isinstance(self.graph_memory, bool) \
                    or self.graph_memory < 0:
                raise ConfigurationError(
                    f"graph_memory must be a number of bytes >= 0, got {self.graph_memory!r}")

    def graph_bytes(self) -> int:
        """The cap on recorded stage graphs per process, in bytes (see the class docstring)."""
        if self.graph_memory is not None:
            return self.graph_memory
        return default_graph_memory()


def default_graph_memory() -> int:
    """A quarter of the physical memory, divided among the MPI ranks of this node (as the
    launcher tells them: MPICH's MPI_LOCALNRANKS, Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    local = next((int(os.environ[k]) for k in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
                  if os.environ.get(k, "").isdigit()), 1)
    return total // (4 * max(local, 1))
