"""Flat parameters: a list of tensors <-> one buffer <-> one PETSc Vec split over ranks.

:class:`ParamBuffer` packs and unpacks gradients of a parameter list into one flat
buffer (the adjoint's ``mu``, the data-parallel reducer's message). :class:`ParamVec`
holds a replicated model's parameters in one PETSc Vec on a communicator, each rank
owning a contiguous block (PETSc's balanced split), so that an optimiser working on the
Vec (TAO, LMVM matrices, Krylov vectors) keeps its state split over the ranks: local
gradients are reduce-scattered into the Vec, and a step is all-gathered back into the
model.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from .comm import allgather_blocks, as_petsc_comm, reduce_scatter_sum, shard_counts, world
from .errors import ConfigurationError
from .vec import as_tensor, as_vec, check_tensor


class ParamBuffer:
    """One flat layout for a list of parameters (packing helpers)."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self.params = tuple(params)
        self.sizes = [p.numel() for p in self.params]
        self.numel = sum(self.sizes)
        self._views: dict[int, list[torch.Tensor]] = {}

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of ``flat`` shaped like each parameter, made once per buffer (they keep its
        storage alive, so its address stays its own)."""
        views = self._views.get(flat.data_ptr())
        if views is None:
            views = self._views[flat.data_ptr()] = self.unpack(flat)
        return views

    def pack(self, grads: Sequence[torch.Tensor | None], out: torch.Tensor) -> None:
        """Write ``grads`` (None meaning zero) into the flat ``out`` (one fused copy)."""
        views = self.views(out)
        if not grads:
            return
        if all(g is not None for g in grads):
            torch._foreach_copy_(views, grads)
            return
        for g, view in zip(grads, views):
            if g is None:
                view.zero_()
            else:
                view.copy_(g)

    def unpack(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of ``flat`` shaped like each parameter."""
        out, off = [], 0
        for p, n in zip(self.params, self.sizes):
            out.append(flat[off:off + n].view(p.shape))
            off += n
        return out

    def pack_values(self, out: torch.Tensor) -> torch.Tensor:
        """The parameters' current values, flat, into ``out``."""
        self.pack([p.detach() for p in self.params], out)
        return out

    def pack_grads(self, out: torch.Tensor) -> torch.Tensor:
        """The parameters' ``.grad`` (missing: zero), flat, into ``out``."""
        self.pack([p.grad for p in self.params], out)
        return out

    def assign(self, flat: torch.Tensor) -> None:
        """Set the parameters' values from ``flat`` (in place, outside autograd)."""
        with torch.no_grad():
            torch._foreach_copy_(list(self.params), self.unpack(flat))


class ParamVec:
    """A replicated model's parameters in one PETSc Vec split over ``comm``'s ranks.

    ``comm`` defaults to COMM_WORLD (a distributed object). Every rank holds the whole
    model; the Vec's local block on rank ``r`` is entries ``offsets[r]:offsets[r+1]`` of the
    flat parameters. :meth:`pull` copies the model into the Vec, :meth:`push` a Vec into
    the model (one Allgatherv), :meth:`gradient_into` the model's ``.grad`` (this rank's
    contribution) into a Vec, summed over ranks (one Reduce_scatter) or, with
    ``reduce=False`` (every rank computed the same full gradient), taken as it is.
    """

    def __init__(self, params: Iterable[torch.Tensor], comm=None):
        params = [p for p in params]
        if not params:
            raise ConfigurationError("ParamVec needs at least one parameter")
        for i, p in enumerate(params):
            check_tensor(p, f"parameter {i}")
            if p.dtype != params[0].dtype or p.device != params[0].device:
                raise ConfigurationError(
                    f"parameter {i} has dtype {p.dtype} on {p.device}; parameter 0 has "
                    f"{params[0].dtype} on {params[0].device}")
        self.buffer = ParamBuffer(params)
        self.mpi = world(comm)
        self.comm = as_petsc_comm(self.mpi)
        size, rank = self.mpi.Get_size(), self.mpi.Get_rank()
        self.counts = shard_counts(self.buffer.numel, size)
        self.start = sum(self.counts[:rank])
        self.stop = self.start + self.counts[rank]
        dt, dev = params[0].dtype, params[0].device
        self.full = torch.zeros(self.buffer.numel, dtype=dt, device=dev)
        self.local = torch.zeros(self.counts[rank], dtype=dt, device=dev)
        self.vec = as_vec(self.local, self.comm)

    @property
    def params(self) -> tuple[torch.Tensor, ...]:
        return self.buffer.params

    @property
    def numel(self) -> int:
        return self.buffer.numel

    def duplicate(self):
        """A new Vec with the same layout (zeroed)."""
        v = self.vec.duplicate()
        v.zeroEntries()
        return v

    def pull(self, vec=None):
        """Copy the model's parameters into ``vec`` (default: :attr:`vec`); returns it."""
        vec = self.vec if vec is None else vec
        self.buffer.pack_values(self.full)
        _local(vec).copy_(self.full[self.start:self.stop])
        vec.stateIncrease()
        return vec

    def push(self, vec=None) -> None:
        """Set the model's parameters (on every rank) from ``vec`` (default :attr:`vec`)."""
        vec = self.vec if vec is None else vec
        allgather_blocks(_local(vec, "r"), self.counts, self.full, self.mpi)
        self.buffer.assign(self.full)

    def gradient_into(self, vec, reduce: bool = True):
        """Write the model's ``.grad`` into ``vec``: summed over ranks (each rank's
        contribution of a sharded loss) or, with ``reduce=False``, this rank's own block."""
        self.buffer.pack_grads(self.full)
        out = _local(vec)
        if reduce:
            reduce_scatter_sum(self.full, self.counts, out, self.mpi)
        else:
            out.copy_(self.full[self.start:self.stop])
        vec.stateIncrease()
        return vec

    def to_full(self, vec, out: torch.Tensor | None = None) -> torch.Tensor:
        """The whole flat vector of ``vec`` on every rank (one Allgatherv)."""
        out = torch.empty_like(self.full) if out is None else out
        allgather_blocks(_local(vec, "r"), self.counts, out, self.mpi)
        return out

    def local_of(self, vec, mode: str = "rw") -> torch.Tensor:
        """This rank's block of ``vec`` as a tensor view (no copy)."""
        return _local(vec, mode)

    def destroy(self) -> None:
        self.vec.destroy()


def _local(vec, mode: str = "rw") -> torch.Tensor:
    return as_tensor(vec, None, mode)
