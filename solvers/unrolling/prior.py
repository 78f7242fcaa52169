"""A learned prior on a distributed image: a small convolutional network on DMDA patches.

:class:`PatchPrior` maps a batch of this rank's image parts (flat owned values, the
layout of the DMDA's global vectors) to the network's output at the same points. Each
image goes through :class:`pnode.dmda.Halo` (the ghost exchange of ``DMDAProblem``:
owned values by indexing, remote ghosts by a differentiable DMGlobalToLocal whose
backward is DMLocalToGlobal ADD), then through ``depth`` unpadded 3x3 convolutions that
shrink the ghosted patch back to the owned one. The DMDA's stencil width must be at least
``depth``; outside a ``"ghosted"`` domain the image is zero, as with zero padding on one
rank, so the output does not depend on the number of ranks. Use it as the network of a
:class:`.prox.Learned` prox.
"""
from __future__ import annotations

import torch

from pnode.dmda import Halo
from pnode.errors import ConfigurationError


class PatchPrior(torch.nn.Module):
    """``depth`` 3x3 convolutions (``channels`` wide, ReLU between) on ghosted patches."""

    def __init__(self, da, channels: int = 8, depth: int = 3, dtype: torch.dtype = torch.float64):
        super().__init__()
        if depth < 1:
            raise ConfigurationError(f"the patch prior needs depth >= 1, got {depth}")
        if da.getStencilWidth() < depth:
            raise ConfigurationError(
                f"{depth} unpadded 3x3 convolutions need a DMDA stencil width >= {depth}, "
                f"got {da.getStencilWidth()}")
        self.halo = Halo(da)
        self.depth = depth
        widths = [1] + [channels] * (depth - 1) + [1]
        layers: list[torch.nn.Module] = []
        for k in range(depth):
            layers.append(torch.nn.Conv2d(widths[k], widths[k + 1], 3, dtype=dtype))
            if k < depth - 1:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)

    @property
    def owned_shape(self) -> tuple[int, ...]:
        return self.halo.owned_shape

    def patches(self, v: torch.Tensor) -> torch.Tensor:
        """The ghosted patches ``(batch, 1, gy, gx)`` of flat owned values ``(batch, n)``."""
        full = torch.stack([self.halo.to_local(row.view(self.owned_shape)) for row in v])
        trim = self.halo.width - self.depth  # a wider stencil than the network needs
        if trim:
            full = full[:, trim:full.shape[1] - trim, trim:full.shape[2] - trim]
        return full.unsqueeze(1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        lead = v.shape[:-1]
        flat = v.reshape(-1, v.shape[-1])
        out = self.net(self.patches(flat))
        return out.reshape(*lead, -1)
