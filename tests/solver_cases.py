"""Small problems shared by the solver tests (serial and under mpiexec)."""
from __future__ import annotations

import torch

from pnode.comm import shard

DT = torch.float64


def regression_data(n: int = 48, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs on [-1, 1]^2 and a smooth target."""
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand(n, 2, generator=g, dtype=DT) - 1
    y = (torch.sin(2 * x[:, :1]) * torch.cos(x[:, 1:]) + 0.5 * x[:, 1:] ** 2)
    return x, y


def mlp(width: int = 8, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, 1)).to(DT)


def sharded_regression(comm, n: int = 48):
    """(model, closure, residual) with the data split over ``comm``'s ranks: the ranks'
    losses add up to the mean squared error over all ``n`` samples."""
    x, y = regression_data(n)
    part = shard(n, comm)
    x, y = x[part], y[part]
    net = mlp()

    def closure():
        return 0.5 * ((net(x) - y) ** 2).sum() / n

    def residual():
        return (net(x) - y) / n ** 0.5

    return net, closure, residual


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def resnet_regression(comm, n: int = 48, levels: int = 3, coarse_blocks: int = 3, width: int = 6,
                      restriction: str = "injection", network=None):
    """(hierarchy, closure(model, forward=None)) of MLP residual networks in depth (or,
    ``network=EulerNeuralODE``, neural ODEs in TS step counts) on the regression data of
    :func:`regression_data`, split over ``comm``'s ranks like :func:`sharded_regression`.
    ``forward(model, x)`` replaces ``model(x)`` (e.g. ``ResidualNetwork.forward``: the
    residual recursion by autograd, a reference for the neural ODE)."""
    from pnode.solvers import DepthHierarchy, EulerNeuralODE, ResidualNetwork, StepCountHierarchy, mlp_resnet

    network = network or ResidualNetwork
    x, y = regression_data(n)
    part = shard(n, comm)
    x, y = x[part], y[part]
    torch.manual_seed(3)
    models = mlp_resnet(2, width, 1, coarse_blocks, levels, horizon=2.0, network=network)

    def closure(model, forward=None):
        out = model(x) if forward is None else forward(model, x)
        return 0.5 * ((out - y) ** 2).sum() / n

    kind = StepCountHierarchy if network is EulerNeuralODE else DepthHierarchy
    return kind(models, comm, restriction=restriction), closure
