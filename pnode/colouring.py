"""Graph colouring of a DMDA stencil: the sparse Jacobian of a :class:`pnode.dmda.DMDAProblem`
from a handful of vector-Jacobian products.

``func(t, patch)`` of a DMDA problem computes the values at the owned points from the
ghosted patch, and a stencil of ghost width ``s`` makes the row of an owned point depend
only on the patch points within its stencil (the star or the box of radius ``s``, every
``dof`` of each). Two owned points whose stencils share no patch point may share a
*colour*: one backward pass seeded with a 1 at every row of one colour (in every ``dof``
that the colour names) returns each of those rows' derivatives at distinct patch points.
So ``count`` batched VJPs of ``func`` on the patch give every entry of ``dg/du``.

Colours are a lattice formula of this rank's owned grid index ``(i, j)`` and the ``dof``
``d``: ``d + dof * ((i + q j) mod m)`` in 2-D, ``d + dof * (i mod m)`` in 1-D, with the
smallest ``m`` (and a ``q``) for which no two points of one colour lie within the
stencil's reach of each other (:func:`lattice`): ``m = 2s + 1`` in 1-D, ``(2s + 1)^2``
for a 2-D box (the digits ``(i mod 3) + 3 (j mod 3)`` for ``s = 1``), 5 for the 2-D star
of width 1. The derivatives are taken with respect to the patch, whose points are
distinct variables, so the colouring needs no periodic wrap-around (patch points that are
the same grid point, on a small periodic grid, are added into one matrix entry) and no
agreement between ranks: every rank colours and assembles its own rows, and PETSc's
global indices of the patch points (the DMDA's ghost exchange of the indices themselves)
place the entries.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .startup import PETSc


def stencil_offsets(dim: int, width: int, stencil: str) -> np.ndarray:
    """The patch offsets ``(dy, dx)`` (or ``(dx,)``) a row may depend on, shape ``(k, dim)``."""
    span = range(-width, width + 1)
    box = np.array(list(itertools.product(span, repeat=dim)), dtype=np.int64).reshape(-1, dim)
    if stencil == "star" and dim > 1:
        box = box[(box != 0).sum(axis=1) <= 1]
    return box


def lattice(offsets: np.ndarray) -> tuple[int, int]:
    """The smallest ``m`` and a ``q`` such that ``(i + q j) mod m`` (``i mod m`` in 1-D)
    gives different colours to any two distinct points whose stencils overlap."""
    reach = np.unique((offsets[:, None, :] - offsets[None, :, :]).reshape(-1, offsets.shape[1]), axis=0)
    reach = reach[(reach != 0).any(axis=1)]
    for m in range(len(offsets), len(offsets) ** 2 + 1):
        for q in range(m if offsets.shape[1] > 1 else 1):
            key = reach[:, -1] + (q * reach[:, 0] if offsets.shape[1] > 1 else 0)
            if not (key % m == 0).any():
                return m, q
    raise AssertionError("a box colouring always exists")  # m = (2s+1)^dim, q = 2s+1


class StencilColouring:
    """The colours, seeds and entry map of one rank's rows of a DMDA problem's Jacobian.

    ``seeds`` (``count`` x owned shape) are the backward seeds; :meth:`entries` turns the
    batched VJPs (``count`` x patch shape) into the values of the COO entries
    ``(rows, cols)`` (PETSc global indices; entries on points outside the domain or in the
    unexchanged corners of a star stencil's patch are left out).
    """

    def __init__(self, problem, dtype: torch.dtype):
        halo = problem.halo
        da = problem.da
        dim, dof, width = da.getDim(), da.getDof(), halo.width
        stencil = "star" if da.getStencilType() == da.StencilType.STAR else "box"
        self.offsets = stencil_offsets(dim, width, stencil)
        m, q = lattice(self.offsets)
        owned = tuple(reversed(halo.counts))  # (ny, nx) or (nx,)
        patch = tuple(n + 2 * width for n in owned)
        grid = np.indices(owned).reshape(dim, -1).T  # owned points, C order
        spatial = (grid[:, -1] + (q * grid[:, 0] if dim > 1 else 0)) % m
        self.count = m * dof
        # rows: every (owned point, dof); colour of each
        point_rows = np.repeat(np.arange(len(grid)), dof)
        row_dof = np.tile(np.arange(dof), len(grid))
        row_colour = spatial[point_rows] * dof + row_dof
        seeds = np.zeros((self.count, len(grid) * dof))
        seeds[row_colour, np.arange(len(grid) * dof)] = 1.0
        self.seeds = torch.from_numpy(seeds).to(dtype).view(self.count, *halo.owned_shape)
        # entries: (row, offset, column dof) -> patch column and position in the VJP block
        centre = grid[point_rows] + width  # the row's point in patch coordinates
        points = centre[:, None, :] + self.offsets[None, :, :]  # (rows, k, dim)
        point_index = np.ravel_multi_index(tuple(np.moveaxis(points, -1, 0)), patch)
        columns = (point_index[:, :, None] * dof + np.arange(dof)).reshape(len(point_rows), -1)
        patch_numel = int(np.prod(patch)) * dof
        take = row_colour[:, None] * patch_numel + columns
        rows = np.broadcast_to(np.arange(len(point_rows))[:, None], columns.shape)
        global_index = halo.global_indices()
        cols = global_index[columns]
        keep = cols >= 0
        offset = halo.g.getOwnershipRange()[0]
        self.rows = (rows[keep] + offset).astype(PETSc().IntType)
        self.cols = cols[keep].astype(PETSc().IntType)
        self.take = torch.from_numpy(take[keep])
        self._row = torch.from_numpy(rows[keep])  # local row of each entry
        self._column = torch.from_numpy(columns[keep])  # patch column of each entry
        self._patch_numel = patch_numel
        self._real = torch.from_numpy(np.flatnonzero(global_index >= 0))  # patch points in the domain

    def entries(self, vjps: torch.Tensor) -> torch.Tensor:
        """The COO values from the ``count`` batched VJPs (one per colour) on the patch."""
        return vjps.reshape(-1)[self.take]

    def mismatch(self, values: torch.Tensor, probe: torch.Tensor, probe_vjp: torch.Tensor) -> float:
        """The worst relative difference, over this rank's patch points in the domain,
        between ``probe^T dg/du`` from the COO ``values`` and the true VJP ``probe_vjp``:
        rounding level when ``func`` depends on the stencil's points only."""
        terms = values * probe.reshape(-1)[self._row]
        n = self._patch_numel
        got = torch.zeros(n, dtype=values.dtype).index_add_(0, self._column, terms)[self._real]
        scale = torch.zeros(n, dtype=values.dtype).index_add_(0, self._column, terms.abs())[self._real]
        want = probe_vjp.reshape(-1)[self._real]
        scale = torch.maximum(scale, want.abs()).add_(1e-300)
        return float(((got - want).abs() / scale).max()) if len(want) else 0.0
