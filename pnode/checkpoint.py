"""Checkpoint policies: how memory is traded for recomputation in the backward pass.

``pnode.Checkpoint(...)`` is the public description; :meth:`Checkpoint.policy` gives the
object that implements it, with one protocol (:class:`CheckpointPolicy`):
``policy.forward(pool, y0, origin, t_out, out)`` runs the forward solve recording what
its backward pass will need and returns a :class:`Recorded`, which owns that data (an
integrator lent from the pool whose TS keeps the trajectory, or pnode's own store of
states) until ``recorded.backward(grads)`` has run or ``recorded.release()`` is called.
So two calls of one ``NeuralODE`` never share a trajectory. Adding a policy is one class
here and one entry of :data:`POLICIES`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .errors import ConfigurationError
from .integrator import Integrator
from .pool import IntegratorPool
from .revolve import BudgetStore, reverse_with_budget
from .sweep import AdjointSweep


class Recorded(Protocol):
    """What one forward solve kept for its backward pass (owned until used or released)."""

    stats: dict
    step_times: np.ndarray  # PETSc times of the accepted steps, start included

    def backward(self, grads_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dL/dy0, dL/dparams), flat and owned by the caller; releases the data."""

    def release(self) -> None:
        """Free the recorded data now (no backward pass will come)."""


class CheckpointPolicy(Protocol):
    """How a differentiable solve records its forward pass and runs its backward pass."""

    def forward(self, pool: IntegratorPool, y0: torch.Tensor, origin: float, t_out: np.ndarray,
                out: torch.Tensor) -> Recorded:
        """Solve, writing ``out``; return what the backward pass needs."""


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
      with a binomial (revolve-class) schedule; ``disk=True`` keeps them in files in a
      private folder under ``directory`` (default: the system's temporary folder), removed
      as soon as no backward pass can need them.
    """

    mode: str = "all"
    budget: int | None = None
    disk: bool = False
    directory: str | None = None
    graph_memory: int | None = None

    def __post_init__(self):
        mode = "budget" if self.budget is not None else self.mode
        object.__setattr__(self, "mode", mode)
        if mode not in POLICIES:
            raise ConfigurationError(f"unknown checkpoint mode {self.mode!r}; use 'all', 'solution' or budget=K")
        if mode == "budget":
            if not isinstance(self.budget, int) or isinstance(self.budget, bool) or self.budget < 1:
                raise ConfigurationError(f"checkpoint budget must be an integer >= 1, got {self.budget!r}")
        elif self.disk:
            raise ConfigurationError("disk=True needs a budget: Checkpoint(budget=K, disk=True)")
        if self.directory is not None:
            if not self.disk:
                raise ConfigurationError("directory= needs disk=True: Checkpoint(budget=K, disk=True, directory=...)")
            if not os.path.isdir(self.directory) or not os.access(self.directory, os.W_OK | os.X_OK):
                raise ConfigurationError(
                    f"checkpoint directory {self.directory!r} does not exist or is not writable")
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

    def policy(self) -> CheckpointPolicy:
        """The object that implements this description."""
        return POLICIES[self.mode](self)


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


class _InTrajectory:
    """A forward solve whose backward data is PETSc's trajectory in a lent integrator."""

    def __init__(self, pool: IntegratorPool, integ: Integrator):
        self.pool, self.integ = pool, integ
        self.stats = integ.stats()
        self.step_times = np.asarray(integ.step_times, dtype=np.float64)
        self.out_steps = list(integ.out_steps)

    def backward(self, grads_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return AdjointSweep.of(self.integ).run(grads_out, self.out_steps, self.step_times)
        finally:
            self.release()

    def release(self) -> None:
        if self.integ is not None:
            integ, self.integ = self.integ, None
            self.pool.give_back(integ)


class _TrajectoryPolicy:
    """Keep PETSc's trajectory: ``trajectory`` stages or solutions, graphs up to a cap."""

    trajectory = "stages"

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint

    def graphs(self, integ: Integrator) -> tuple[bool, int | None]:
        """(record stage graphs in the forward solve, their byte cap)."""
        return False, None

    def forward(self, pool, y0, origin, t_out, out) -> Recorded:
        integ = pool.lease(self.trajectory)
        try:
            record, cap = self.graphs(integ)
            integ.forward(y0, origin, t_out, out, record=record, graph_bytes=cap)
        except BaseException:
            pool.give_back(integ)
            raise
        return _InTrajectory(pool, integ)


class StoreAll(_TrajectoryPolicy):
    """``Checkpoint("all")``: stages and (explicit methods) stage graphs from the forward."""

    trajectory = "stages"

    def graphs(self, integ: Integrator) -> tuple[bool, int | None]:
        return True, self.checkpoint.graph_bytes()


class StoreSolution(_TrajectoryPolicy):
    """``Checkpoint("solution")``: one state per step; stages recomputed backwards."""

    trajectory = "solution"


class _InBudgetStore:
    """A forward solve whose backward data is at most ``budget`` states in pnode's store."""

    def __init__(self, pool: IntegratorPool, store: BudgetStore, integ: Integrator, origin: float,
                 budget: int):
        self.pool, self.store, self.origin, self.budget = pool, store, origin, budget
        self.stats = integ.stats()
        self.step_times = np.asarray(integ.step_times, dtype=np.float64)
        self.out_steps = list(integ.out_steps)

    def backward(self, grads_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        store, self.store = self.store, None
        try:
            grads, peak, recomputed = reverse_with_budget(
                self.pool, store, self.origin, self.step_times, self.out_steps, grads_out, self.budget)
        finally:
            store.close()
        self.stats.update(checkpoint_states=peak, recomputed_steps=recomputed)
        return grads

    def release(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            store.close()


class Budget:
    """``Checkpoint(budget=K)``: states placed online in the forward solve, reversed by
    binomial schedules (:mod:`pnode.revolve`)."""

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint

    def forward(self, pool, y0, origin, t_out, out) -> Recorded:
        ck = self.checkpoint
        store = BudgetStore(ck.budget, ck.disk, ck.directory, y0.device)
        integ = pool.lease(None)
        try:
            store.put(0, y0.reshape(-1))
            integ.forward(y0, origin, t_out, out, on_step=store.offer)
            return _InBudgetStore(pool, store, integ, origin, ck.budget)
        except BaseException:
            store.close()
            raise
        finally:
            pool.give_back(integ)


#: checkpoint mode -> policy class
POLICIES = {"all": StoreAll, "solution": StoreSolution, "budget": Budget}
