"""Shared cases for the distributed tests: the same problem on any communicator.

Each case returns the global loss, the gradient of the global initial state (gathered)
and the parameter gradients, so results on several ranks can be compared with the same
case solved on COMM_SELF in the same process.
"""
from __future__ import annotations

import math

import torch
from mpi4py import MPI

import pnode
from pnode.distributed import DMDAProblem, GradientReducer, create_dmda, interior, laplacian, shard
from models import CubicMLP

T = torch.linspace(0.0, 0.2, 3, dtype=torch.float64)
STEP = 0.02


class Closure1D(torch.nn.Module):
    """Diffusion (exact FD) + a 3-point convolutional closure on a 1-D ghosted patch."""

    def __init__(self, h: float, nu: float = 0.01):
        super().__init__()
        self.h, self.nu = h, nu
        self.net = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 3), torch.nn.Tanh(),
                                       torch.nn.Conv1d(4, 1, 1)).double()

    def forward(self, t, patch):
        return self.nu * laplacian(patch, self.h, 1, 1) + self.net(patch[None, None])[0, 0]


class Closure2D(torch.nn.Module):
    """Diffusion (exact FD) + a 3x3 convolution and a pointwise MLP on a 2-D ghosted patch."""

    def __init__(self, h: float, nu: float = 0.005):
        super().__init__()
        self.h, self.nu = h, nu
        self.conv = torch.nn.Conv2d(1, 1, 3).double()
        self.point = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()

    def forward(self, t, patch):
        u = interior(patch, 1, 2)
        return (self.nu * laplacian(patch, self.h, 1, 2) + 0.1 * torch.tanh(self.conv(patch[None, None])[0, 0])
                + self.point(u[..., None])[..., 0])


def initial_field(sizes) -> torch.Tensor:
    """A smooth field on the global grid (shape ``(ny, nx)`` or ``(nx,)``)."""
    axes = [torch.arange(n, dtype=torch.float64) / n for n in reversed(sizes)]
    grids = torch.meshgrid(*axes, indexing="ij")
    return sum(torch.sin(2 * math.pi * (k + 1) * g + 0.3 * k) for k, g in enumerate(grids))


def dmda_case(dim: int, comm, perturb: tuple[int, float] | None = None, grad: bool = True):
    """Solve the ``dim``-D case on ``comm``; returns (loss, dL/du0 gathered, [dL/dp])."""
    torch.manual_seed(1)
    sizes = [24] if dim == 1 else [10, 8]
    model = Closure1D(1.0 / sizes[0]) if dim == 1 else Closure2D(1.0 / sizes[0])
    if perturb is not None:
        with torch.no_grad():
            next(model.parameters()).view(-1)[perturb[0]] += perturb[1]
    da = create_dmda(sizes, boundary="periodic" if dim == 1 else "ghosted", comm=comm)
    prob = DMDAProblem(da, model)
    try:
        u0 = initial_field(sizes)
        y0 = prob.scatter(u0).requires_grad_(grad)
        solver = pnode.odeint_adjoint if grad else pnode.odeint
        out = solver(prob, y0, T, method="rk4", step_size=STEP)
        weights = torch.linspace(0.5, 1.5, len(T), dtype=torch.float64).view((-1,) + (1,) * dim)
        local = (weights * out ** 2).sum() + out[-1].sum()
        loss = pnode.vec.as_mpi_comm(comm).allreduce(float(local.detach()), op=MPI.SUM)
        if not grad:
            return loss, None, None
        grads = torch.autograd.grad(local, [y0] + list(model.parameters()))
        return loss, prob.gather(grads[0]), list(grads[1:])
    finally:
        prob.destroy()
        da.destroy()


def data_parallel_case(comm, batch: int = 6):
    """Mean-squared loss of a batch of spiral trajectories, sharded over ``comm``."""
    torch.manual_seed(2)
    model = CubicMLP()
    y0 = torch.randn(batch, 2, dtype=torch.float64)
    part = shard(batch, comm)
    out = pnode.odeint_adjoint(model, y0[part], T, method="rk4", step_size=STEP)
    loss = (out ** 2).sum() / batch
    model.zero_grad()
    loss.backward()
    total = GradientReducer(model.parameters(), comm).reduce(loss.detach())
    return total, [p.grad.clone() for p in model.parameters()]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference of two tensors."""
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def np_rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)

