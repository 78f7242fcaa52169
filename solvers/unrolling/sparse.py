"""Generated sparse-recovery data (no downloads): the standard LISTA setup."""
from __future__ import annotations

import math

import torch


def gaussian_dictionary(m: int, n: int, generator: torch.Generator | None = None,
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """An ``(m, n)`` Gaussian matrix with unit-norm columns."""
    A = torch.randn(m, n, generator=generator, dtype=dtype) / math.sqrt(m)
    return A / A.norm(dim=0, keepdim=True)


def bernoulli_gaussian(batch: int, n: int, p: float = 0.1, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``batch`` signals with i.i.d. entries ``N(0, 1)`` kept with probability ``p``."""
    values = torch.randn(batch, n, generator=generator, dtype=dtype)
    return values * (torch.rand(batch, n, generator=generator, dtype=dtype) < p)


def measurements(A: torch.Tensor, x: torch.Tensor, snr_db: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``A x`` plus white noise at ``snr_db`` (per signal: noise power = signal power /
    10^(snr/10)); noiseless for ``None``."""
    y = x @ A.T
    if snr_db is None:
        return y
    power = (y ** 2).mean(-1, keepdim=True) / 10.0 ** (snr_db / 10.0)
    return y + power.sqrt() * torch.randn(y.shape, generator=generator, dtype=y.dtype)
