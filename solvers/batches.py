"""The hybrid stochastic-deterministic mode: a mini-batch that grows when progress stalls.

:class:`BatchGrowth` is the rule (docs/solvers.md): the batch starts at ``initial``
samples; after each step the loss on the step's batch is recorded; when it has not
fallen below ``(1 - tol)`` times the best loss recorded at the current size for
``patience`` steps in a row, the size becomes ``min(total, ceil(factor * size))``
and the record starts again. At ``total`` the batch is the whole data set and the
method is the deterministic one.

:class:`HybridBatches` draws the batches: one seeded permutation per pass over the
data (the same on every rank), consecutive slices of ``size`` samples, and each rank
takes its share of a batch (:func:`pnode.comm.shard`), so the ranks' losses add up to
the batch's. At full size every batch is the whole data set in order and
:meth:`HybridBatches.closure` returns the same closure object each time, so a solver
reuses the evaluation at its iterate.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from pnode.comm import shard, world
from pnode.errors import ConfigurationError


class BatchGrowth:
    """When and how much the mini-batch grows (module docstring)."""

    def __init__(self, initial: int, total: int, factor: float = 2.0, patience: int = 3, tol: float = 0.01):
        if not 1 <= int(initial) <= int(total):
            raise ConfigurationError(f"need 1 <= initial <= total, got {initial}, {total}")
        if not (factor > 1 and int(patience) >= 1 and 0 <= tol < 1):
            raise ConfigurationError(f"need factor > 1, patience >= 1, 0 <= tol < 1; got {factor}, {patience}, {tol}")
        self.size, self.total = int(initial), int(total)
        self.factor, self.patience, self.tol = float(factor), int(patience), float(tol)
        self.best = math.inf
        self.stalled = 0  # steps in a row without enough decrease
        self.sizes: list[int] = [self.size]  # the size after each recorded step

    @property
    def full(self) -> bool:
        return self.size == self.total

    def record(self, loss: float) -> bool:
        """The loss after a step; True when the batch grew."""
        grew = False
        if loss < (1 - self.tol) * self.best:
            self.best, self.stalled = loss, 0
        elif not self.full:
            self.stalled += 1
            if self.stalled >= self.patience:
                self.size = min(self.total, math.ceil(self.factor * self.size))
                self.best, self.stalled, grew = math.inf, 0, True
        self.sizes.append(self.size)
        return grew

    def state_dict(self) -> dict:
        return {"size": self.size, "best": self.best, "stalled": self.stalled, "sizes": list(self.sizes)}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.best, self.stalled = int(state["size"]), float(state["best"]), int(state["stalled"])
        self.sizes = [int(s) for s in state["sizes"]]


class HybridBatches:
    """Mini-batches of ``n`` samples sized by ``growth``, this rank's share of each."""

    def __init__(self, n: int, growth: BatchGrowth, comm=None, seed: int = 0):
        if growth.total != n:
            raise ConfigurationError(f"the growth rule is for {growth.total} samples, the data set has {n}")
        self.n, self.growth, self.mpi = int(n), growth, world(comm)
        self._gen = torch.Generator().manual_seed(int(seed))
        self._order = torch.randperm(self.n, generator=self._gen)
        self._pos = 0
        self._full_closure: Callable | None = None

    def next(self) -> tuple[torch.Tensor, int]:
        """This rank's sample indices of the next batch and the batch's (global) size."""
        size = self.growth.size
        if self.growth.full:
            batch = torch.arange(self.n)
        else:
            if self._pos + size > self.n:
                self._order, self._pos = torch.randperm(self.n, generator=self._gen), 0
            batch = self._order[self._pos:self._pos + size]
            self._pos += size
        return batch[shard(size, self.mpi)], size

    def closure(self, loss_sum: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]) -> Callable:
        """A closure ``closure(model)`` for the next batch: ``loss_sum(model, idx)`` (this
        rank's sum of per-sample losses over its indices) over the batch size. At full
        size the same closure object comes back each time."""
        if self.growth.full and self._full_closure is not None:
            return self._full_closure
        idx, size = self.next()

        def closure(model):
            return loss_sum(model, idx) / size
        if self.growth.full:
            self._full_closure = closure
        return closure

    def record(self, loss: float) -> bool:
        """The loss after a step (see :meth:`BatchGrowth.record`)."""
        return self.growth.record(loss)

    def state_dict(self) -> dict:
        """The growth rule's state and where the sampler is (to resume the same batches)."""
        return {"growth": self.growth.state_dict(), "generator": self._gen.get_state(), "order": self._order.clone(),
                "position": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.growth.load_state_dict(state["growth"])
        self._gen.set_state(state["generator"])
        self._order, self._pos = state["order"].clone(), int(state["position"])
        self._full_closure = None
