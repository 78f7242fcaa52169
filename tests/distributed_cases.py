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


class Diffusion(torch.nn.Module):
    """``exp(log_nu) * Laplacian`` (exact FD): the stiff part, with a learnable diffusivity."""

    def __init__(self, h: float, nu: float, dim: int):
        super().__init__()
        self.h, self.dim = h, dim
        self.log_nu = torch.nn.Parameter(torch.tensor(math.log(nu), dtype=torch.float64))

    def forward(self, t, patch):
        return self.log_nu.exp() * laplacian(patch, self.h, 1, self.dim)


#: implicit cases: name -> (dim, method, nu of the implicit diffusion or None when
#: ``func`` (diffusion included) is treated implicitly as a whole)
IMPLICIT_CASES = {"cn-1d": (1, "cn", None), "imex-1d": (1, "arkimex", 0.2), "imex-2d": (2, "arkimex", 0.05)}
STIFF_NU = 0.2  # nu * dt / h^2 = 2.3 on the 1-D grid: beyond rk4's stability limit with STEP


def pad(u: torch.Tensor, periodic: bool) -> torch.Tensor:
    """The ghosted patch of a whole 1-D (periodic) or 2-D (zero outside) field."""
    if periodic:
        return torch.cat([u[-1:], u, u[:1]])
    return torch.nn.functional.pad(u, (1, 1, 1, 1))


def grid(dim: int) -> list[int]:
    """Global DMDA sizes (x first) of the ``dim``-D cases."""
    return [24] if dim == 1 else [10, 8]


def implicit_models(name: str) -> tuple[torch.nn.Module, Diffusion | None]:
    """(func, implicit part or None) of IMPLICIT_CASES[name], seeded."""
    dim, _, nu = IMPLICIT_CASES[name]
    torch.manual_seed(3)
    h = 1.0 / grid(dim)[0]
    closure = Closure1D if dim == 1 else Closure2D
    if nu is None:
        return closure(h, STIFF_NU), None
    return closure(h, 0.0), Diffusion(h, nu, dim)


def _loss_and_grads(prob, y0, out, params, comm, grad: bool):
    """Weighted squared loss over the ranks, dL/du0 gathered, parameter gradients."""
    dim = out.ndim - 1
    weights = torch.linspace(0.5, 1.5, len(T), dtype=torch.float64).view((-1,) + (1,) * dim)
    local = (weights * out ** 2).sum() + out[-1].sum()
    loss = pnode.comm.as_mpi_comm(comm).allreduce(float(local.detach()), op=MPI.SUM)
    if not grad:
        return loss, None, None
    grads = torch.autograd.grad(local, [y0] + list(params))
    return loss, prob.gather(grads[0]), list(grads[1:])


def _perturbed(model: torch.nn.Module, perturb: tuple[int, float] | None) -> None:
    if perturb is not None:
        with torch.no_grad():
            next(model.parameters()).view(-1)[perturb[0]] += perturb[1]


def dmda_case(dim: int, comm, perturb: tuple[int, float] | None = None, grad: bool = True,
              checkpoint=None, adaptive: bool = False):
    """Solve the ``dim``-D case on ``comm`` (with ``checkpoint``; rk4 with fixed steps, or
    adaptive dopri5); returns (loss, dL/du0 gathered, [dL/dp])."""
    torch.manual_seed(1)
    sizes = grid(dim)
    model = Closure1D(1.0 / sizes[0]) if dim == 1 else Closure2D(1.0 / sizes[0])
    _perturbed(model, perturb)
    da = create_dmda(sizes, boundary="periodic" if dim == 1 else "ghosted", comm=comm)
    prob = DMDAProblem(da, model)
    try:
        y0 = prob.scatter(initial_field(sizes)).requires_grad_(grad)
        if grad:
            steps = dict(method="dopri5", rtol=1e-10, atol=1e-12) if adaptive else dict(method="rk4", step_size=STEP)
            out = pnode.odeint_adjoint(prob, y0, T, checkpoint=checkpoint, **steps)
        else:
            out = pnode.odeint(prob, y0, T, method="rk4", step_size=STEP)
        return _loss_and_grads(prob, y0, out, model.parameters(), comm, grad)
    finally:
        prob.destroy()
        da.destroy()


def implicit_case(name: str, comm, jacobian: str = "matrix-free", perturb: tuple[int, float] | None = None,
                  grad: bool = True):
    """Solve IMPLICIT_CASES[name] on ``comm`` with a NeuralODE; returns (loss, dL/du0
    gathered, [dL/dp] of func's then the implicit part's parameters, the solve's stats).
    ``perturb`` shifts one value of the first parameter of the implicit part (or of func)."""
    dim, method, _ = IMPLICIT_CASES[name]
    model, diffusion = implicit_models(name)
    _perturbed(diffusion if diffusion is not None else model, perturb)
    sizes = grid(dim)
    da = create_dmda(sizes, boundary="periodic" if dim == 1 else "ghosted", comm=comm)
    prob = DMDAProblem(da, model)
    stiff = DMDAProblem(da, diffusion) if diffusion is not None else None
    params = list(model.parameters()) + (list(diffusion.parameters()) if diffusion is not None else [])
    try:
        ode = pnode.NeuralODE(prob, method=method, implicit=stiff, step_size=STEP, jacobian=jacobian)
        y0 = prob.scatter(initial_field(sizes)).requires_grad_(grad)
        out = ode(y0, T) if grad else ode(y0, T).detach()
        return (*_loss_and_grads(prob, y0, out, params, comm, grad), ode.stats)
    finally:
        for p in (prob, stiff):
            if p is not None:
                p.destroy()
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
