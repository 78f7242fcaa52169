"""States distributed over a PETSc DMDA: ``create_dmda`` and ``DMDAProblem``.

:class:`DMDAProblem` wraps ``func(t, patch)``, written for one rank's ghosted patch of a
PETSc DMDA, into a right-hand side of the rank's owned values. The ghost exchange
(DMGlobalToLocal) is a linear operation whose backward is DMLocalToGlobal with
ADD_VALUES (:func:`pnode.matop.linear_apply`), so the adjoint's state VJP sends ghost
contributions back to their owners; the transpose is differentiable in turn (its
derivative is the exchange), so the matrix-free Newton JVPs of implicit and IMEX methods
(a derivative of a VJP) and the batched VJPs of assembled Jacobians see the ghost
coupling too. Pass it to :func:`pnode.odeint_adjoint` with the owned part of ``y0`` (for
IMEX, both ``func`` and ``implicit=`` as DMDAProblems on the same DMDA); the TS, its Vecs
and its adjoint then live on the DMDA's communicator, and the parameter gradient (each
rank's own block of the ``mu`` Vec) is summed over the ranks at the end of the adjoint.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .comm import as_mpi_comm, as_petsc_comm
from .errors import ConfigurationError
from .matop import linear_apply
from .startup import PETSc
from .vec import lent

_BOUNDARIES = ("periodic", "ghosted")


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


class Halo:
    """The ghost exchange of one DMDA on tensors.

    PETSc's own DMGlobalToLocal, applied once at construction to the owner rank and the
    owner's local index of every value, maps each point of this rank's ghosted patch to
    one of: an owned value (copied by torch indexing), a ghost owned by another rank
    (received through :meth:`apply`, multi-rank only) or a point outside a
    ``"ghosted"`` domain (zero). The indexing is an ordinary differentiable torch
    operation, so double backward (the JVPs of implicit methods) and batched backward
    (assembled Jacobians) work through it; the remote part is a linear operation whose
    transpose is its backward (DMGlobalToLocal, DMLocalToGlobal ADD), and the reverse.
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

    def global_indices(self) -> np.ndarray:
        """PETSc's global index of every point (and dof) of this rank's ghosted patch, flat;
        -1 outside the domain (and in a star stencil's corners). Collective."""
        start, end = self.g.getOwnershipRange()
        return (self._exchange(np.arange(start + 1, end + 1, dtype=np.float64)) - 1).astype(np.int64)

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
        parts = [flat, linear_apply(self, x), zero] if self.multi_rank else [flat, zero]
        return torch.cat(parts)[self.source].view(self.ghosted_shape)

    def apply(self, x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """The remote ghosts of the owned values ``x`` (DMGlobalToLocal), or, transposed,
        ghost values added to their owners (DMLocalToGlobal ADD). Collective."""
        return self.send_back(x) if transpose else self.receive(x)

    def receive(self, x: torch.Tensor) -> torch.Tensor:
        """The ghost values this rank receives from other ranks (DMGlobalToLocal)."""
        patch = torch.zeros(self.ghosted_shape, dtype=x.dtype, device=x.device)
        self._move(x.detach().contiguous(), patch, forward=True)
        return patch.view(-1)[self.remote]

    def send_back(self, ghosts: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`receive`: ghost values added to their owners
        (DMLocalToGlobal with ADD_VALUES)."""
        patch = torch.zeros(self.ghosted_shape, dtype=ghosts.dtype, device=ghosts.device)
        patch.view(-1)[self.remote] = ghosts.detach()
        out = torch.zeros(self.owned_shape, dtype=ghosts.dtype, device=ghosts.device)
        self._move(patch, out, forward=False)
        return out

    def _move(self, src: torch.Tensor, dst: torch.Tensor, forward: bool) -> None:
        P = PETSc()
        if forward:
            with lent(self.g, src) as g, lent(self.l, dst) as l:
                self.da.globalToLocal(g, l, addv=P.InsertMode.INSERT_VALUES)
        else:
            with lent(self.l, src) as l, lent(self.g, dst) as g:
                self.da.localToGlobal(l, g, addv=P.InsertMode.ADD_VALUES)

    def destroy(self) -> None:
        self.g.destroy()
        self.l.destroy()


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
        self.halo = Halo(da)

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
        return self.on_patch(t, self.halo.to_local(x))

    def on_patch(self, t: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        """``func(t, patch)`` on a ghosted patch, its shape checked (the owned values)."""
        out = self.func(t, patch)
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
