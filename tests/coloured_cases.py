"""Shared cases of the coloured (sparse, DMDA) Jacobian tests, on any communicator."""
from __future__ import annotations

import math

import numpy as np
import torch
from mpi4py import MPI

import pnode
from pnode.distributed import DMDAProblem, create_dmda, interior, laplacian
from pnode.guard import CallbackGuard
from pnode.ijacobians import build_jacobian
from pnode.methods import resolve
from pnode.problem import build_problem

DT = torch.float64


class Reaction(torch.nn.Module):
    """Diffusion of each species, a one-sided difference in x and a pointwise MLP coupling
    the ``dof`` species at each point: every entry of a width-1 star stencil is non-zero."""

    def __init__(self, dof: int, h: float, dim: int = 2):
        super().__init__()
        self.dof, self.h, self.dim = dof, h, dim
        self.nu = torch.linspace(0.02, 0.05, dof, dtype=DT)
        self.net = torch.nn.Sequential(torch.nn.Linear(dof, 8), torch.nn.Tanh(), torch.nn.Linear(8, dof)).double()

    def forward(self, t, patch):
        field = patch if self.dof > 1 else patch[..., None]
        lap = torch.stack([laplacian(field[..., k], self.h, 1, self.dim) for k in range(self.dof)], -1)
        u = interior(field, 1, self.dim)
        shift = field[(slice(1, -1),) * (self.dim - 1) + (slice(0, -2),)]  # the point to the left
        out = lap * self.nu + 0.5 * (u - shift) * u.sum(-1, keepdim=True) + self.net(u) * (1 + 0.1 * t)
        return out if self.dof > 1 else out[..., 0]


def sizes_of(dim: int) -> list[int]:
    return [12] if dim == 1 else [7, 6]


def dmda_problem(dof: int, comm, *, dim: int = 2, boundary: str = "periodic", stencil: str = "star",
                 func=None) -> DMDAProblem:
    torch.manual_seed(5)
    sizes = sizes_of(dim)
    da = create_dmda(sizes, boundary=boundary, dof=dof, stencil=stencil, comm=comm)
    return DMDAProblem(da, func if func is not None else Reaction(dof, 1.0 / sizes[0], dim))


def global_field(prob: DMDAProblem) -> torch.Tensor:
    """A smooth global state of the problem's grid (natural order, trailing dof axis)."""
    sizes, dof = prob.da.getSizes(), prob.da.getDof()
    axes = [torch.arange(n, dtype=DT) / n for n in reversed(sizes)]
    grids = torch.meshgrid(*axes, indexing="ij")
    base = sum(torch.sin(2 * math.pi * g + 0.4 * k) for k, g in enumerate(grids))
    return torch.stack([base * (1 + 0.3 * d) + 0.5 for d in range(dof)], -1).squeeze(-1) if dof > 1 else base + 0.5


def padded(prob: DMDAProblem, u: torch.Tensor) -> torch.Tensor:
    """The ghosted patch of the whole field ``u`` (periodic wrap or zero outside)."""
    dim, dof = prob.da.getDim(), prob.da.getDof()
    field = u if dof > 1 else u[..., None]
    moved = field.movedim(-1, 0)[None]  # (1, dof, *spatial)
    periodic = prob.da.getBoundaryType()[0] == prob.da.BoundaryType.PERIODIC
    out = torch.nn.functional.pad(moved, (1, 1) * dim, mode="circular" if periodic else "constant")
    out = out[0].movedim(0, -1)
    return out if dof > 1 else out[..., 0]


def coloured_entries(prob: DMDAProblem, t: float = 0.3) -> tuple[np.ndarray, int]:
    """``dg/du`` assembled by ``jacobian="coloured"`` at the smooth state, as a dense matrix
    in natural order on every rank, and the number of colours."""
    comm = prob.state_comm
    u = prob.scatter(global_field(prob))
    problem = build_problem(prob, None, None, resolve("beuler"), u.shape, DT, torch.device("cpu"),
                            list(prob.parameters()), 1.0)
    kind = build_jacobian("coloured", problem, comm, CallbackGuard(comm))
    try:
        kind.linearise(t, u.reshape(-1))
        kind.form(0.0)  # the Mat holds -dg/du
        start, end = kind.mat.getOwnershipRange()
        n = kind.mat.getSize()[0]
        rows = -kind.mat.getValues(range(start, end), range(n))
        count = kind.colouring.count
    finally:
        kind.destroy()
    mpi = pnode.comm.as_mpi_comm(comm)
    petsc = np.concatenate(mpi.allgather(rows))  # rows in PETSc order
    index = prob.gather(torch.arange(start, end, dtype=DT).view(prob.owned_shape)).reshape(-1).long().numpy()
    return petsc[np.ix_(index, index)], count


def autograd_jacobian(prob: DMDAProblem, t: float = 0.3) -> np.ndarray:
    """``dg/du`` of the whole field by autograd through the padded pure-torch function."""
    u = global_field(prob)
    tt = torch.tensor(t, dtype=DT)
    jac = torch.autograd.functional.jacobian(lambda v: prob.func(tt, padded(prob, v)), u)
    return jac.reshape(u.numel(), u.numel()).numpy()


def coloured_and_autograd(prob: DMDAProblem) -> tuple[np.ndarray, int, np.ndarray]:
    """The coloured entries, their colour count and the autograd Jacobian of ``prob``;
    the problem and its DMDA are destroyed after."""
    try:
        got, count = coloured_entries(prob)
        return got, count, autograd_jacobian(prob)
    finally:
        prob.destroy()
        prob.da.destroy()


def stiff_diffusion(comm, jacobian: str, options: dict | None = None, newton=None, stiffness: float = 400.0):
    """2-D diffusion ``nu dt / h^2 = stiffness`` with a mild pointwise MLP on 32 x 32 points,
    backward Euler, 3 steps: the state at the end and the solve's stats."""
    torch.manual_seed(7)
    n = 32
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    h, nu, dt = 1.0 / n, 1.0, stiffness / n ** 2

    def func(t, patch):
        return nu * laplacian(patch, h, 1, 2) + 0.1 * net(interior(patch, 1, 2)[..., None])[..., 0]

    da = create_dmda([n, n], boundary="ghosted", stencil="star", comm=comm)
    prob = DMDAProblem(da, func)
    try:
        y0 = prob.scatter(global_field(prob))
        ode = pnode.NeuralODE(prob, method="beuler", step_size=dt, jacobian=jacobian, options=options,
                              newton=newton)
        with torch.no_grad():
            out = ode(y0, torch.tensor([0.0, 3 * dt], dtype=DT))
        return prob.gather(out[-1]), ode.stats
    finally:
        prob.destroy()
        da.destroy()


def gradient_case(comm, jacobian: str, method: str, **kw):
    """Loss and gradients (``u0``, parameters) of the 2-species 2-D case through an implicit
    method with ``jacobian``."""
    prob = dmda_problem(2, comm, boundary="ghosted")
    try:
        y0 = prob.scatter(global_field(prob)).requires_grad_(True)
        ode = pnode.NeuralODE(prob, method=method, jacobian=jacobian, **kw)
        out = ode(y0, torch.tensor([0.0, 0.05, 0.1], dtype=DT))
        local = (out ** 2).sum() + out[-1, ..., 0].sum()
        loss = pnode.comm.as_mpi_comm(comm).allreduce(float(local.detach()), op=MPI.SUM)
        params = list(prob.parameters())
        grads = torch.autograd.grad(local, [y0] + params)
        return loss, prob.gather(grads[0]), list(grads[1:]), ode.stats
    finally:
        prob.destroy()
        prob.da.destroy()
