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
