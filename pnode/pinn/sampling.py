"""Point samplers on boxes and residual-based adaptive resampling.

:func:`sample_box` draws ``n`` points in ``[lower, upper]`` (a box of any dimension) by
one of :data:`SAMPLERS`: ``uniform`` (pseudo-random), ``lhs`` (Latin hypercube),
``sobol`` and ``halton`` (scrambled low-discrepancy sequences), all from
``scipy.stats.qmc`` with a seed, or ``grid`` (a tensor-product grid with about ``n``
points, the end points included). :func:`resample_by_residual` picks new collocation
points where a residual is large (Wu et al.'s residual-based adaptive distribution:
probability proportional to ``|r|^k / mean |r|^k + c``).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from pnode.errors import ConfigurationError

SAMPLERS = ("uniform", "lhs", "sobol", "halton", "grid")
DTYPE = torch.float64


def _unit(n: int, d: int, method: str, seed: int | None) -> np.ndarray:
    from scipy.stats import qmc

    if method == "uniform":
        return np.random.default_rng(seed).random((n, d))
    if method == "lhs":
        return qmc.LatinHypercube(d, seed=seed).random(n)
    if method == "sobol":
        engine = qmc.Sobol(d, scramble=True, seed=seed)
        m = math.ceil(math.log2(max(n, 1)))
        return engine.random_base2(m)[:n]  # a power-of-two prefix keeps the balance properties
    if method == "halton":
        return qmc.Halton(d, scramble=True, seed=seed).random(n)
    per_axis = max(2, round(n ** (1.0 / d)))
    axes = [np.linspace(0.0, 1.0, per_axis)] * d
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, d)


def sample_box(lower: Sequence[float], upper: Sequence[float], n: int, method: str = "sobol",
               seed: int | None = 0, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """``n`` points (``grid``: the nearest tensor-product count) in the box, shape ``(n, d)``."""
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    if method not in SAMPLERS:
        raise ConfigurationError(f"unknown sampler {method!r}; choose one of {', '.join(SAMPLERS)}")
    if lo.shape != hi.shape or lo.ndim != 1 or not np.all(hi > lo):
        raise ConfigurationError(f"a box needs lower < upper of equal length, got {lo.tolist()}, {hi.tolist()}")
    if int(n) < 1:
        raise ConfigurationError(f"need at least one point, got n={n}")
    unit = _unit(int(n), lo.size, method, seed)
    return torch.as_tensor(lo + (hi - lo) * unit, dtype=dtype)


def resample_by_residual(residual: Callable[[torch.Tensor], torch.Tensor], candidates: torch.Tensor, n: int,
                         k: float = 1.0, c: float = 1.0, seed: int | None = 0) -> torch.Tensor:
    """``n`` of the ``candidates`` rows drawn without replacement with probability
    proportional to ``|r|^k / mean(|r|^k) + c`` (``c = 0``: the residual alone; large
    ``c``: nearly uniform). ``residual(points)`` returns one value (or row) per point."""
    if n > candidates.shape[0]:
        raise ConfigurationError(f"cannot draw {n} points from {candidates.shape[0]} candidates")
    with torch.no_grad():
        r = residual(candidates).detach().reshape(candidates.shape[0], -1).abs().sum(dim=1)
    if not torch.isfinite(r).all():
        raise ConfigurationError("the residual is not finite at some candidate points")
    w = r.double().pow(k)
    w = w / w.mean().clamp_min(1e-300) + c
    g = torch.Generator().manual_seed(0 if seed is None else int(seed))
    pick = torch.multinomial(w.cpu(), n, replacement=False, generator=g)
    return candidates[pick.to(candidates.device)]
