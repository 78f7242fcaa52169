"""Imaging operators on distributed grids, assembled as PETSc AIJ matrices.

* :func:`gaussian_blur`: a 2-D Gaussian blur on a DMDA (a ``(2r+1)^2`` stencil, rows and
  columns laid out like the DMDA's global vectors, so a rank's image part is its owned
  patch); outside the domain the image is zero (``boundary="ghosted"``) or wraps
  (``"periodic"``).
* :func:`laplacian_matrix`, :func:`stencil_matrix`: the 5-point Laplacian (Tikhonov's
  regulariser) and any square stencil, the same way.
* :func:`owned_part`, :func:`gather_images`: images to and from a rank's owned part.
* :func:`piecewise_smooth_image`: a generated test image (smooth background, constant
  rectangles and discs).
* :func:`ray_sum`: line integrals of the image along parallel rays at several angles (a
  tomography-like projection), by bilinear sampling at half-pixel steps; rays split over
  the ranks by rows, columns in the DMDA's layout.

Pixel ``(i, j)`` (column ``i`` of row ``j``) has its centre at ``((i + 0.5) h, (j + 0.5) h)``
on the unit square, ``h = 1/n``.
"""
from __future__ import annotations

from typing import Sequence

import math

import numpy as np
import torch

from pnode.comm import as_mpi_comm
from pnode.errors import ConfigurationError
from pnode.startup import PETSc


def gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """The normalised 1-D Gaussian weights at offsets ``-radius .. radius``."""
    if sigma <= 0 or radius < 0:
        raise ConfigurationError(f"the blur needs sigma > 0 and radius >= 0, got {sigma} and {radius}")
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (offsets / sigma) ** 2)
    return g / g.sum()


def gaussian_blur(da, sigma: float, radius: int | None = None):
    """The AIJ matrix of a Gaussian blur of width ``sigma`` (pixels) truncated at
    ``radius`` (default: the DMDA's stencil width, which must be at least ``radius``)."""
    radius = da.getStencilWidth() if radius is None else int(radius)
    g = gaussian_kernel(sigma, radius)
    return stencil_matrix(da, np.outer(g, g))


def laplacian_matrix(da):
    """The AIJ matrix of the 5-point negative Laplacian (in pixel units) on a DMDA: zero
    outside a ``"ghosted"`` domain (Dirichlet), wrap-around for ``"periodic"``."""
    return stencil_matrix(da, np.array([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]))


def stencil_matrix(da, weights: np.ndarray):
    """The AIJ matrix of a ``(2r+1) x (2r+1)`` stencil (``weights[dy + r, dx + r]``) on a 2-D
    DMDA whose stencil width is at least ``r``; rows and columns in the DMDA's layout."""
    if da.getDim() != 2 or da.getDof() != 1:
        raise ConfigurationError("stencil matrices work on a 2-D DMDA with one degree of freedom")
    weights = np.asarray(weights, dtype=np.float64)
    radius = (weights.shape[0] - 1) // 2
    if weights.shape != (2 * radius + 1, 2 * radius + 1):
        raise ConfigurationError(f"a stencil must be square of odd size, got {weights.shape}")
    if radius > da.getStencilWidth():
        raise ConfigurationError(f"a stencil of radius {radius} needs a DMDA stencil width >= {radius}, "
                                 f"got {da.getStencilWidth()}")
    P = PETSc()
    (xs, xe), (ys, ye) = da.getRanges()
    (gx, gy), (gnx, _) = da.getGhostCorners()
    jj, ii = np.meshgrid(np.arange(ys, ye), np.arange(xs, xe), indexing="ij")
    dj, di = np.meshgrid(np.arange(-radius, radius + 1), np.arange(-radius, radius + 1), indexing="ij")
    rows = ((jj - gy) * gnx + (ii - gx)).reshape(-1, 1)  # indices in the ghosted patch
    cols = (jj.reshape(-1, 1) + dj.reshape(1, -1) - gy) * gnx + (ii.reshape(-1, 1) + di.reshape(1, -1) - gx)
    values = weights.reshape(-1)
    mat = da.createMat()
    mat.setOption(P.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
    for r, c in zip(rows.astype(P.IntType), cols.astype(P.IntType)):
        mat.setValuesLocal(r, c, values)  # ghost points outside a "ghosted" domain map to -1: dropped
    mat.assemble()
    return mat


def ray_sum(da, angles: Sequence[float], detectors: int | None = None):
    """The AIJ matrix of parallel-beam line integrals of the DMDA's image: ``detectors``
    rays (default: the image width) per angle (radians), evenly spaced across the
    square's diagonal; rows split over the DMDA's ranks, columns in its layout."""
    if da.getDim() != 2 or da.getDof() != 1:
        raise ConfigurationError("the ray sum works on a 2-D DMDA with one degree of freedom")
    nx, ny = da.getSizes()
    if nx != ny:
        raise ConfigurationError(f"the ray sum needs a square image, got {nx} x {ny}")
    P = PETSc()
    n = nx
    detectors = n if detectors is None else int(detectors)
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    if detectors < 1 or angles.size < 1:
        raise ConfigurationError("the ray sum needs at least one angle and one detector")
    rows = angles.size * detectors
    comm = da.getComm()
    layout = P.Vec().createMPI((P.DECIDE, rows), comm=comm)
    start, end = layout.getOwnershipRange()
    layout.destroy()
    ao = da.getAO()
    h = 1.0 / n
    half = np.sqrt(0.5)
    offsets = (np.arange(detectors) + 0.5) / detectors * 2 * half - half
    ts = np.arange(-half, half, 0.5 * h) + 0.25 * h  # sample points along the ray
    indptr, indices, values = [0], [], []
    for row in range(start, end):
        theta, s = angles[row // detectors], offsets[row % detectors]
        d = np.array([np.cos(theta), np.sin(theta)])
        normal = np.array([-d[1], d[0]])
        pts = 0.5 + s * normal[None, :] + ts[:, None] * d[None, :]
        col, val = _bilinear(pts / h - 0.5, n)
        natural = np.unique(col)
        summed = np.bincount(np.searchsorted(natural, col), weights=val, minlength=natural.size) * 0.5 * h
        keep = summed != 0.0
        petsc_cols = ao.app2petsc(natural[keep].astype(P.IntType))
        order = np.argsort(petsc_cols)
        indices.append(petsc_cols[order])
        values.append(summed[keep][order])
        indptr.append(indptr[-1] + int(keep.sum()))
    ncols_local = da.getCorners()[1][0] * da.getCorners()[1][1]
    csr = (np.asarray(indptr, dtype=P.IntType),
           np.concatenate(indices).astype(P.IntType) if indices else np.zeros(0, dtype=P.IntType),
           np.concatenate(values) if values else np.zeros(0))
    mat = P.Mat().createAIJ(((end - start, rows), (ncols_local, n * n)), csr=csr, comm=comm)
    mat.assemble()
    return mat


def _bilinear(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Natural pixel indices and bilinear weights of points ``(x, y)`` in pixel units
    (pixel centres at integers); points outside the image get nothing."""
    base = np.floor(coords).astype(np.int64)
    frac = coords - base
    cols, vals = [], []
    for dx in (0, 1):
        for dy in (0, 1):
            i, j = base[:, 0] + dx, base[:, 1] + dy
            w = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            inside = (i >= 0) & (i < n) & (j >= 0) & (j < n) & (w > 0)
            cols.append(j[inside] * n + i[inside])
            vals.append(w[inside])
    return np.concatenate(cols), np.concatenate(vals)


def piecewise_smooth_image(n: int, seed: int = 0) -> torch.Tensor:
    """An ``(n, n)`` piecewise-smooth image in [0, 1]: a smooth background plus a few
    constant rectangles and discs."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    Y, X = torch.meshgrid(s, s, indexing="ij")
    img = 0.3 + 0.2 * torch.sin(2 * math.pi * (X * torch.rand(1, generator=g, dtype=torch.float64) + Y))
    for _ in range(3):
        x0, y0, x1, y1 = torch.rand(4, generator=g, dtype=torch.float64).tolist()
        box = (X > min(x0, x1)) & (X < max(x0, x1)) & (Y > min(y0, y1)) & (Y < max(y0, y1))
        img = torch.where(box, torch.rand(1, generator=g, dtype=torch.float64), img)
    for _ in range(2):
        cx, cy, r = torch.rand(3, generator=g, dtype=torch.float64).tolist()
        img = torch.where((X - cx) ** 2 + (Y - cy) ** 2 < (0.25 * r) ** 2,
                          torch.rand(1, generator=g, dtype=torch.float64), img)
    return img.clamp(0, 1)


def owned_part(da, images: torch.Tensor) -> torch.Tensor:
    """This rank's part of images ``(..., ny, nx)``, flat in the DMDA's layout ``(..., n_owned)``."""
    (xs, xe), (ys, ye) = da.getRanges()
    return images[..., ys:ye, xs:xe].reshape(*images.shape[:-2], -1).contiguous()


def gather_images(da, local: torch.Tensor) -> torch.Tensor:
    """The whole images ``(batch, ny, nx)`` from every rank's owned parts (on every rank; collective)."""
    nx, ny = da.getSizes()
    local = local.detach().reshape(-1, local.shape[-1])
    full = torch.zeros(local.shape[0], ny, nx, dtype=local.dtype)
    (xs, xe), (ys, ye) = da.getRanges()
    for (x0, x1, y0, y1), part in as_mpi_comm(da.getComm()).allgather(((xs, xe, ys, ye), local.cpu())):
        full[:, y0:y1, x0:x1] = part.view(-1, y1 - y0, x1 - x0)
    return full
