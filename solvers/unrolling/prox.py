"""Proximal operators as small interchangeable modules.

Every piece is called as ``prox(v, theta)``: ``v`` a batch of signals (last dimension the
signal, this rank's part of it on several ranks), ``theta`` the per-iteration weight of
the regulariser (a threshold for the sparsity pieces, ignored by projections, passed to a
learned prox). An unrolled iteration takes any of them (``prox=``).
"""
from __future__ import annotations

import math

import torch

from pnode.comm import allreduce, as_mpi_comm, sum_over_ranks
from pnode.errors import ConfigurationError


class Prox(torch.nn.Module):
    """A proximal map ``v -> prox_{theta g}(v)``."""

    def forward(self, v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


def soft_threshold(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``sign(v) max(|v| - theta, 0)``: the prox of ``theta ||.||_1``."""
    return torch.sign(v) * torch.relu(v.abs() - theta)


class SoftThreshold(Prox):
    """The prox of ``theta ||x||_1`` (``theta`` may be a scalar or one per entry)."""

    def forward(self, v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return soft_threshold(v, theta)


class SupportSelection(Prox):
    """Soft thresholding except on the ``fraction`` of entries of largest magnitude (per
    signal), which pass unchanged (Chen et al., LISTA-CPSS: the entries trusted to be in
    the support are not shrunk).

    On several ranks (``comm``) the largest entries are chosen over the whole signal: the
    cut-off is the global ``k``-th largest magnitude, found among every rank's own ``k``
    largest (one allgather)."""

    def __init__(self, fraction: float, comm=None):
        super().__init__()
        if not 0.0 <= fraction <= 1.0:
            raise ConfigurationError(f"the support fraction must lie in [0, 1], got {fraction}")
        self.fraction = float(fraction)
        self.comm = comm

    def extra_repr(self) -> str:
        return f"fraction={self.fraction}"

    def cutoff(self, magnitude: torch.Tensor) -> torch.Tensor | None:
        """The smallest magnitude that passes, per signal (``None`` when none does)."""
        mpi = as_mpi_comm(self.comm) if self.comm is not None else None
        n = magnitude.shape[-1] if mpi is None else allreduce(magnitude.shape[-1], "sum", mpi)
        k = int(math.floor(self.fraction * n))
        if k == 0:
            return None
        local = magnitude.detach().topk(min(k, magnitude.shape[-1]), dim=-1).values
        if mpi is not None and mpi.Get_size() > 1:
            blocks = mpi.allgather(local.cpu())
            local = torch.cat([b.to(local) for b in blocks], dim=-1).topk(k, dim=-1).values
        return local[..., k - 1:k]

    def forward(self, v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        magnitude = v.abs()
        cut = self.cutoff(magnitude)
        shrunk = soft_threshold(v, theta)
        return shrunk if cut is None else torch.where(magnitude >= cut, v, shrunk)


class Box(Prox):
    """The projection onto ``lower <= x <= upper`` (``theta`` ignored)."""

    def __init__(self, lower: float = 0.0, upper: float = 1.0):
        super().__init__()
        if not lower <= upper:
            raise ConfigurationError(f"the box needs lower <= upper, got [{lower}, {upper}]")
        self.lower, self.upper = float(lower), float(upper)

    def forward(self, v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return v.clamp(self.lower, self.upper)


class L2Ball(Prox):
    """The projection onto ``||x||_2 <= radius`` per signal (``theta`` ignored); the norm is
    over the whole signal on several ranks (``comm``)."""

    def __init__(self, radius: float = 1.0, comm=None):
        super().__init__()
        if radius <= 0:
            raise ConfigurationError(f"the l2 ball needs a positive radius, got {radius}")
        self.radius = float(radius)
        self.comm = comm

    def forward(self, v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        squares = (v * v).sum(-1, keepdim=True)
        if self.comm is not None:
            squares = sum_over_ranks(squares, self.comm)
        norm = squares.clamp_min(1e-300).sqrt()
        return v * torch.clamp(self.radius / norm, max=1.0)


class Learned(Prox):
    """A learned prox: ``v - theta * net(v)`` (a residual correction scaled by the
    iteration's weight, so ``theta = 0`` is the identity). ``net`` maps a batch of signals
    to the same shape: an MLP on vectors, or a :class:`PatchPrior` on a distributed image."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        out = self.net(v)
        if out.shape != v.shape:
            raise ConfigurationError(
                f"the learned prox's network must keep the signal's shape {tuple(v.shape)}, "
                f"got {tuple(out.shape)}")
        return v - theta * out


PROXES = {"soft": SoftThreshold, "box": Box, "l2ball": L2Ball}


def as_prox(prox: Prox | str) -> Prox:
    """A prox module from itself or from a name in :data:`PROXES`."""
    if isinstance(prox, Prox):
        return prox
    if isinstance(prox, str) and prox in PROXES:
        return PROXES[prox]()
    raise ConfigurationError(f"prox must be a Prox module or one of {sorted(PROXES)}, got {prox!r}")
