"""Communicator helpers, data-parallel gradient reduction and DMDA-distributed states.

Data parallelism: every rank integrates its :func:`shard` of a batch with its own TS on
COMM_SELF (plain :func:`pnode.odeint_adjoint`), then :class:`GradientReducer` sums the
parameter gradients (and the loss) with one Allreduce.

Distributed states: :class:`DMDAProblem` wraps ``func(t, patch)``, written for one rank's
ghosted patch of a PETSc DMDA, into a right-hand side of the rank's owned values. The
ghost exchange (DMGlobalToLocal) is an autograd operation whose transpose is
DMLocalToGlobal with ADD_VALUES, so the adjoint's state VJP sends ghost contributions
back to their owners; the transpose is differentiable in turn (its derivative is the
exchange), so the matrix-free Newton JVPs of implicit and IMEX methods (a derivative of
a VJP) and the batched VJPs of assembled Jacobians see the ghost coupling too. Pass it
to :func:`pnode.odeint_adjoint` with the owned part of ``y0`` (for IMEX, both ``func``
and ``implicit=`` as DMDAProblems on the same DMDA); the TS, its Vecs and its adjoint
then live on the DMDA's communicator, and the parameter gradient (each rank's own block
of the ``mu`` Vec) is summed over the ranks at the end of the adjoint.
"""
from __future__ import annotations

import sys
import traceback
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .errors import ConfigurationError
from .vec import PETSc, as_mpi_comm, as_petsc_comm

_BOUNDARIES = ("periodic", "ghosted")


def _world(comm):
    from mpi4py import MPI

    return MPI.COMM_WORLD if comm is None else as_mpi_comm(comm)


def is_root(comm=None) -> bool:
    """Whether this process is rank 0 of ``comm`` (default COMM_WORLD): the one that prints and saves."""
    return _world(comm).Get_rank() == 0


def shard(n: int, comm=None) -> slice:
    """The contiguous slice of ``range(n)`` this rank owns on ``comm`` (default COMM_WORLD).

    Blocks are balanced as PETSc splits ownership: the first ``n % size`` ranks hold one
    item more. Every item belongs to exactly one rank.
    """
    c = _world(comm)
    size, rank = c.Get_size(), c.Get_rank()
    if n < 0:
        raise ConfigurationError(f"cannot shard a batch of {n} items")
    base, extra = divmod(int(n), size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def abort_on_error(comm, exc: BaseException) -> None:
    """Print ``exc`` (with this rank's number and traceback) and abort every rank of ``comm``.

    A failure inside a callback of a TS on several ranks would leave the other ranks
    waiting in the next collective; aborting ends the whole job with the message.
    """
    c = as_mpi_comm(comm)
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    sys.stderr.write(f"pnode: rank {c.Get_rank()} of {c.Get_size()} failed, aborting all ranks:\n"
                     + "".join(lines))
    sys.stderr.flush()
    c.Abort(1)


class GradientReducer:
    """Sums the gradients of ``params`` over ``comm`` (default COMM_WORLD) with one Allreduce.

    Use it after ``loss.backward()`` on each rank's shard, with the loss already scaled
    for the global batch (e.g. ``sum over the shard / global batch size``)::

        loss = criterion(out, target) * (n_local / n_global)
        loss.backward()
        total = reducer.reduce(loss)   # gradients and loss summed over the ranks
    """

    def __init__(self, params: Iterable[torch.Tensor], comm=None):
        self.params = [p for p in params if p.requires_grad]
        self.comm = _world(comm)
        self.sizes = [p.numel() for p in self.params]
        dtype = self.params[0].dtype if self.params else torch.float64
        self.buffer = torch.zeros(sum(self.sizes) + 1, dtype=dtype)

    def reduce(self, loss: torch.Tensor | float | None = None) -> float:
        """Replace each ``p.grad`` by its sum over the ranks (a missing grad counts as
        zero); returns the summed ``loss`` (0.0 when not given)."""
        from mpi4py import MPI

        buf, off = self.buffer, 0
        for p, n in zip(self.params, self.sizes):
            if p.grad is None:
                buf[off:off + n].zero_()
            else:
                buf[off:off + n].copy_(p.grad.reshape(-1))
            off += n
        buf[off] = float(loss) if loss is not None else 0.0
        self.comm.Allreduce(MPI.IN_PLACE, buf.numpy(), op=MPI.SUM)
        off = 0
        for p, n in zip(self.params, self.sizes):
            g = buf[off:off + n].view(p.shape).to(p.device)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
            off += n
        return float(buf[off])


def create_dmda(sizes: Sequence[int], *, stencil_width: int = 1, boundary: str = "periodic",
                dof: int = 1, stencil: str = "box", comm=None):
    """A 1-D or 2-D PETSc DMDA of ``sizes`` (x first) on ``comm`` (default COMM_WORLD).

    ``stencil_width`` is the ghost width: the radius of the finite-difference stencil or of
    the convolution kernel applied to each patch. ``boundary="periodic"`` wraps around;
    ``"ghosted"`` gives ghost points outside the domain that hold zero (homogeneous
    Dirichlet data).
    """
    if len(sizes) not in (1, 2):
        raise ConfigurationError(f"create_dmda supports 1-D and 2-D grids, got sizes {tuple(sizes)}")
    if boundary not in _BOUNDARIES:
        raise ConfigurationError(f"boundary must be one of {_BOUNDARIES}, got {boundary!r}")
    if stencil not in ("box", "star"):
        raise ConfigurationError(f"stencil must be 'box' or 'star', got {stencil!r}")
    if stencil_width < 0:
        raise ConfigurationError(f"stencil_width must be >= 0, got {stencil_width}")
    P = PETSc()
    kind = P.DM.BoundaryType.PERIODIC if boundary == "periodic" else P.DM.BoundaryType.GHOSTED
    st = P.DMDA.StencilType.BOX if stencil == "box" else P.DMDA.StencilType.STAR
    comm = P.COMM_WORLD if comm is None else as_petsc_comm(comm)
    da = P.DMDA().create(dim=len(sizes), dof=dof, sizes=tuple(int(s) for s in sizes),
                         boundary_type=(kind,) * len(sizes), stencil_type=st,
                         stencil_width=stencil_width, comm=comm)
    da.setUp()
    return da


class _Halo:
    """The ghost exchange of one DMDA on tensors.

    PETSc's own DMGlobalToLocal, applied once at construction to the owner rank and the
    owner's local index of every value, maps each point of this rank's ghosted patch to
    one of: an owned value (copied by torch indexing), a ghost owned by another rank
    (received by :class:`_GhostExchange`, multi-rank only) or a point outside a
    ``"ghosted"`` domain (zero). The indexing is an ordinary differentiable torch
    operation, so double backward (the JVPs of implicit methods) and batched backward
    (assembled Jacobians) work through it; the remote part is an autograd pair whose
    members are each other's transpose (DMGlobalToLocal, DMLocalToGlobal ADD).
    """

    def __init__(self, da):
        self.da = da
        starts, counts = da.getCorners()
        gstarts, gcounts = da.getGhostCorners()
        dim, dof, w = da.getDim(), da.getDof(), da.getStencilWidth()
        if any(s - g != w or c - n != 2 * w
               for s, g, n, c in zip(starts, gstarts, counts, gcounts)):
            raise ConfigurationError(
                "the DMDA's ghosted patches must have the full stencil width on every side; "
                "create it with boundary type PERIODIC or GHOSTED (see create_dmda)")
        tail = (dof,) if dof > 1 else ()
        self.starts, self.counts = tuple(starts[:dim]), tuple(counts[:dim])
        self.owned_shape = tuple(reversed(self.counts)) + tail
        self.ghosted_shape = tuple(reversed(gcounts[:dim])) + tail
        self.width = w
        self.g = da.createGlobalVec()
        self.l = da.createLocalVec()
        self.multi_rank = da.getComm().getSize() > 1
        self._index_patch()

    def _index_patch(self) -> None:
        """Build :attr:`source` (flat patch point -> position in ``[owned, remote, 0]``)
        and :attr:`remote` (patch positions received from other ranks)."""
        rank = self.da.getComm().getRank()
        n = self.g.getLocalSize()
        owner = self._exchange(np.full(n, rank + 1.0)) - 1  # -1: outside the domain
        index = self._exchange(np.arange(n, dtype=np.float64))
        mine, outside = owner == rank, owner < 0
        remote = ~mine & ~outside
        source = np.full(owner.shape, n + int(remote.sum()), dtype=np.int64)
        source[mine] = index[mine].astype(np.int64)
        source[remote] = n + np.arange(int(remote.sum()))
        self.source = torch.from_numpy(source)
        self.remote = torch.from_numpy(np.flatnonzero(remote))

    def _exchange(self, owned: np.ndarray) -> np.ndarray:
        P = PETSc()
        self.g.getArray()[:] = owned
        self.l.zeroEntries()
        self.da.globalToLocal(self.g, self.l, addv=P.InsertMode.INSERT_VALUES)
        return self.l.getArray().copy()

    def to_local(self, x: torch.Tensor) -> torch.Tensor:
        """The ghosted patch of the owned values ``x`` (differentiable, also twice)."""
        flat = x.reshape(-1)
        zero = flat.new_zeros(1)
        parts = [flat, _GhostExchange.apply(self, x, False), zero] if self.multi_rank else [flat, zero]
        return torch.cat(parts)[self.source].view(self.ghosted_shape)

    def receive(self, x: torch.Tensor) -> torch.Tensor:
        """The ghost values this rank receives from other ranks (DMGlobalToLocal)."""
        patch = torch.zeros(self.ghosted_shape, dtype=x.dtype)
        self._move(x.detach().contiguous(), patch, forward=True)
        return patch.view(-1)[self.remote]

    def send_back(self, ghosts: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`receive`: ghost values added to their owners
        (DMLocalToGlobal with ADD_VALUES)."""
        patch = torch.zeros(self.ghosted_shape, dtype=ghosts.dtype)
        patch.view(-1)[self.remote] = ghosts.detach()
        out = torch.zeros(self.owned_shape, dtype=ghosts.dtype)
        self._move(patch, out, forward=False)
        return out

    def _move(self, src: torch.Tensor, dst: torch.Tensor, forward: bool) -> None:
        P = PETSc()
        g, l = self.g, self.l
        if forward:
            g.placeArray(src.view(-1).numpy())
            l.placeArray(dst.view(-1).numpy())
        else:
            l.placeArray(src.view(-1).numpy())
            g.placeArray(dst.view(-1).numpy())
        try:
            if forward:
                self.da.globalToLocal(g, l, addv=P.InsertMode.INSERT_VALUES)
            else:
                self.da.localToGlobal(l, g, addv=P.InsertMode.ADD_VALUES)
        finally:
            g.resetArray()
            l.resetArray()

    def destroy(self) -> None:
        self.g.destroy()
        self.l.destroy()


class _GhostExchange(torch.autograd.Function):
    """``transpose=False``: owned values -> the ghosts other ranks own (DMGlobalToLocal);
    ``transpose=True``: ghost values -> added to their owners (DMLocalToGlobal ADD). Each
    direction's backward is the other one, so the exchange is differentiable any number of
    times. Collective."""

    @staticmethod
    def forward(ctx, halo: _Halo, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        ctx.halo, ctx.transpose = halo, transpose
        return halo.send_back(x) if transpose else halo.receive(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, _GhostExchange.apply(ctx.halo, grad, not ctx.transpose), None


class DMDAProblem(torch.nn.Module):
    """``f(t, u_owned) = func(t, ghosted patch of u)`` on a 1-D or 2-D DMDA.

    ``func(t, patch)`` gets this rank's patch (shape :attr:`ghosted_shape`: ``(nx,)`` or
    ``(ny, nx)`` plus ``(dof,)`` when ``dof > 1``, with :attr:`width` ghost points on
    each side) and returns the right-hand side at the owned points (:attr:`owned_shape`),
    e.g. ``laplacian(patch, h, width) + net(patch)``. It sees the same neighbourhood as
    on one rank, so results do not depend on the number of ranks. Integrate with
    ``pnode.odeint_adjoint(problem, problem.scatter(u0), t)``: the TS runs on
    :attr:`state_comm`, the DMDA's communicator.
    """

    def __init__(self, da, func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.da = da
        self.func = func
        self.halo = _Halo(da)

    @property
    def state_comm(self):
        """The PETSc communicator the state is distributed over (the DMDA's)."""
        return self.da.getComm()

    @property
    def owned_shape(self) -> tuple[int, ...]:
        return self.halo.owned_shape

    @property
    def ghosted_shape(self) -> tuple[int, ...]:
        return self.halo.ghosted_shape

    @property
    def width(self) -> int:
        return self.halo.width

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.owned_shape:
            raise ConfigurationError(
                f"the state on this rank must have the owned shape {self.owned_shape}, got {tuple(x.shape)}")
        out = self.func(t, self.halo.to_local(x))
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != self.owned_shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigurationError(
                f"func(t, patch) must return the owned values, shape {self.owned_shape}; got {got}")
        return out

    def _owned_slices(self, lead: int) -> tuple[slice, ...]:
        spatial = tuple(slice(s, s + n) for s, n in zip(reversed(self.halo.starts), reversed(self.halo.counts)))
        return (slice(None),) * lead + spatial

    def scatter(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's owned part of a global field ``full`` (shape ``(..., *global shape)``;
        leading dimensions such as time are kept)."""
        lead = full.ndim - len(self.owned_shape)
        spatial = self._owned_slices(lead)
        return full[spatial].contiguous()

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """The global field from every rank's owned part (on every rank; collective)."""
        comm = as_mpi_comm(self.state_comm)
        lead = local.ndim - len(self.owned_shape)
        parts = comm.allgather((self.halo.starts, local.detach().cpu().numpy()))
        sizes = tuple(reversed(self.da.getSizes()))
        tail = (self.da.getDof(),) if self.da.getDof() > 1 else ()
        full = np.zeros(tuple(local.shape[:lead]) + sizes + tail, dtype=parts[0][1].dtype)
        for starts, arr in parts:
            idx = (slice(None),) * lead + tuple(
                slice(s, s + n) for s, n in zip(reversed(starts), arr.shape[lead:lead + len(sizes)]))
            full[idx] = arr
        return torch.from_numpy(full).to(local.device)

    def destroy(self) -> None:
        """Free the ghost-exchange vectors (the DMDA stays the caller's)."""
        self.halo.destroy()


def interior(patch: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """The owned part of a ghosted ``patch`` whose first ``dim`` axes are spatial."""
    return patch[(slice(width, patch.shape[0] - width),) + tuple(
        slice(width, patch.shape[d] - width) for d in range(1, dim))]


def laplacian(patch: torch.Tensor, spacing: float | Sequence[float], width: int, dim: int) -> torch.Tensor:
    """The second-order central-difference Laplacian at the owned points of a ghosted
    ``patch`` (first ``dim`` axes spatial, ``width >= 1`` ghost points each side);
    ``spacing`` is one grid step or one per patch axis (``(hy, hx)`` in 2-D)."""
    if width < 1:
        raise ConfigurationError("the Laplacian needs a ghost width of at least 1")
    hs = [float(spacing)] * dim if np.isscalar(spacing) else [float(h) for h in spacing]
    centre = interior(patch, width, dim)
    out = torch.zeros_like(centre)
    for d in range(dim):
        n = patch.shape[d]
        idx = [slice(width, patch.shape[k] - width) for k in range(dim)]
        lo, hi = list(idx), list(idx)
        lo[d] = slice(width - 1, n - width - 1)
        hi[d] = slice(width + 1, n - width + 1)
        out = out + (patch[tuple(hi)] - 2 * centre + patch[tuple(lo)]) / hs[d] ** 2
    return out
