"""Finite-difference stencils on ghosted patches (of :class:`pnode.dmda.DMDAProblem`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import ConfigurationError


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
