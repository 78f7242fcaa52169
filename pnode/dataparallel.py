"""Data parallelism: each rank integrates its :func:`pnode.comm.shard` of a batch with its
own solves on COMM_SELF, then :class:`GradientReducer` sums the parameter gradients (and
the loss) with one Allreduce.

A rank that fails while the others wait in the reduction would hang them. Two things
prevent it: an uncaught exception aborts every rank (installed by :func:`pnode.init` on
several ranks), and :meth:`GradientReducer.guard` turns an exception inside the local
step into a failure every rank sees in :meth:`GradientReducer.reduce`, so that all of
them raise and can skip the batch together.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch

from .comm import abort_on_uncaught, allreduce_sum_, world
from .errors import PnodeError
from .params import ParamBuffer


class RankFailedError(PnodeError):
    """Another rank failed in its part of a data-parallel step (its error was raised there)."""


class GradientReducer:
    """Sums the gradients of ``params`` over ``comm`` (default COMM_WORLD) with one Allreduce.

    Use it after ``loss.backward()`` on each rank's shard, with the loss already scaled
    for the global batch (e.g. ``sum over the shard / global batch size``)::

        with reducer.guard():          # a failure here reaches every rank's reduce()
            loss = criterion(out, target) * (n_local / n_global)
            loss.backward()
        total = reducer.reduce(loss)   # gradients and loss summed over the ranks
    """

    def __init__(self, params: Iterable[torch.Tensor], comm=None):
        self.buffer = ParamBuffer([p for p in params if p.requires_grad])
        self.comm = world(comm)
        dtype = self.buffer.params[0].dtype if self.buffer.params else torch.float64
        device = self.buffer.params[0].device if self.buffer.params else torch.device("cpu")
        self._flat = torch.zeros(self.buffer.numel + 2, dtype=dtype, device=device)
        abort_on_uncaught()

    @property
    def params(self) -> tuple[torch.Tensor, ...]:
        return self.buffer.params

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run this rank's part of a step; if it raises, tell the other ranks (their
        :meth:`reduce` raises :class:`RankFailedError`), then raise the error here."""
        try:
            yield
        except BaseException:
            self._exchange(None, failed=True)
            raise

    def reduce(self, loss: torch.Tensor | float | None = None) -> float:
        """Replace each ``p.grad`` by its sum over the ranks (a missing grad counts as
        zero); returns the summed ``loss`` (0.0 when not given). Raises
        :class:`RankFailedError` on every rank if one failed inside :meth:`guard`."""
        return self._exchange(loss, failed=False)

    def _exchange(self, loss, failed: bool) -> float:
        flat = self._flat
        grads = self.buffer.views(flat[:self.buffer.numel])
        self.buffer.pack([p.grad for p in self.params], flat[:self.buffer.numel])
        flat[-2] = float(loss) if loss is not None and not failed else 0.0
        flat[-1] = 1.0 if failed else 0.0
        allreduce_sum_(flat, self.comm)
        n_failed = int(flat[-1])
        if n_failed and not failed:
            raise RankFailedError(f"{n_failed} rank(s) of {self.comm.Get_size()} failed in this step "
                                  "(their errors were raised on them); no gradient was reduced")
        if failed:
            return 0.0
        for p, g in zip(self.params, grads):
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
        return float(flat[-2])
