"""Domains of collocation problems: boxes (intervals, rectangles, any dimension) and
space x time.

A :class:`Box` samples its interior (:meth:`Box.sample`) and its boundary faces
(:meth:`Box.boundary`, points spread over the faces by their measure) and checks that
points lie in it (:meth:`Box.contains`). :class:`SpaceTime` is the box of a spatial box
times ``[t0, t1]`` with time as the last coordinate; its :meth:`SpaceTime.initial`
points lie at ``t0`` and :meth:`SpaceTime.boundary` is the spatial boundary over time.
"""
from __future__ import annotations

from typing import Sequence

import torch

from pnode.errors import ConfigurationError

from .sampling import DTYPE, sample_box


class Box:
    """The box ``[lower_0, upper_0] x ... x [lower_{d-1}, upper_{d-1}]``."""

    def __init__(self, lower: Sequence[float], upper: Sequence[float]):
        self.lower = [float(v) for v in lower]
        self.upper = [float(v) for v in upper]
        if len(self.lower) != len(self.upper) or not self.lower or any(
                hi <= lo for lo, hi in zip(self.lower, self.upper)):
            raise ConfigurationError(f"a box needs lower < upper of equal length, got {self.lower}, {self.upper}")

    @property
    def dim(self) -> int:
        return len(self.lower)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.lower}, {self.upper})"

    def contains(self, points: torch.Tensor, tol: float = 1e-12) -> torch.Tensor:
        """Whether each row of ``points`` ``(N, d)`` lies in the box (to ``tol``)."""
        self.check_shape(points)
        lo = torch.tensor(self.lower, dtype=points.dtype, device=points.device)
        hi = torch.tensor(self.upper, dtype=points.dtype, device=points.device)
        return ((points >= lo - tol) & (points <= hi + tol)).all(dim=1)

    def check_shape(self, points: torch.Tensor, what: str = "points") -> None:
        if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[1] != self.dim:
            shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
            raise ConfigurationError(f"{what} must have shape (N, {self.dim}) for {self!r}, got {shape}")

    def sample(self, n: int, method: str = "sobol", seed: int | None = 0, dtype: torch.dtype = DTYPE) -> torch.Tensor:
        """``n`` interior points (``grid``: a tensor-product grid, boundary included)."""
        return sample_box(self.lower, self.upper, n, method, seed, dtype)

    def boundary(self, n: int, method: str = "sobol", seed: int | None = 0, dtype: torch.dtype = DTYPE,
                 axes: Sequence[int] | None = None) -> torch.Tensor:
        """About ``n`` points on the faces normal to ``axes`` (default all), each face taking
        a share by its measure (a 1-D box: its two end points, repeated)."""
        axes = list(range(self.dim)) if axes is None else list(axes)
        faces = []
        for axis in axes:
            others = [i for i in range(self.dim) if i != axis]
            measure = 1.0
            for i in others:
                measure *= self.upper[i] - self.lower[i]
            for side in (self.lower[axis], self.upper[axis]):
                faces.append((axis, side, others, measure))
        total = sum(f[3] for f in faces)
        out = []
        for j, (axis, side, others, measure) in enumerate(faces):
            m = max(1, round(n * measure / total))
            pts = torch.empty(m, self.dim, dtype=dtype)
            if others:
                lo = [self.lower[i] for i in others]
                hi = [self.upper[i] for i in others]
                pts[:, others] = sample_box(lo, hi, m, method, None if seed is None else seed + j, dtype)
            pts[:, axis] = side
            out.append(pts)
        return torch.cat(out)


class Interval(Box):
    """``[a, b]``."""

    def __init__(self, a: float, b: float):
        super().__init__([a], [b])


class Rectangle(Box):
    """``[x0, x1] x [y0, y1]``."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float):
        super().__init__([x0, y0], [x1, y1])


class SpaceTime(Box):
    """``space x [t0, t1]``; points are ``(x_0, ..., x_{d-1}, t)``."""

    def __init__(self, space: Box, t0: float, t1: float):
        if not isinstance(space, Box):
            raise ConfigurationError(f"space must be a pnode.pinn Box, got {type(space).__name__}")
        super().__init__([*space.lower, t0], [*space.upper, t1])
        self.space = space

    @property
    def time_axis(self) -> int:
        return self.dim - 1

    def initial(self, n: int, method: str = "sobol", seed: int | None = 0, dtype: torch.dtype = DTYPE) -> torch.Tensor:
        """``n`` points of the space at ``t0``."""
        pts = self.space.sample(n, method, seed, dtype)
        return torch.cat([pts, torch.full((pts.shape[0], 1), self.lower[-1], dtype=dtype)], dim=1)

    def boundary(self, n: int, method: str = "sobol", seed: int | None = 0, dtype: torch.dtype = DTYPE,
                 axes: Sequence[int] | None = None) -> torch.Tensor:
        """About ``n`` points on the spatial boundary times ``[t0, t1]``."""
        return super().boundary(n, method, seed, dtype, range(self.dim - 1) if axes is None else axes)
