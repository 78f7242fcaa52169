"""Hierarchies of models for multilevel training: levels and the maps between them.

A :class:`Hierarchy` holds the levels of one model, coarsest first, each level's
parameters in a :class:`pnode.params.ParamVec` on one communicator, and for each pair of
consecutive levels ``l - 1 -> l`` three linear maps of flat parameter vectors, assembled
as PETSc AIJ matrices with the ParamVecs' row splits:

- the prolongation ``P`` (coarse -> fine), given by the subclass
  (:meth:`Hierarchy.prolongation_entries`);
- the restriction of iterates ``Pi`` (fine -> coarse): ``"injection"`` (the subclass's
  :meth:`Hierarchy.injection_entries`) or ``"full_weighting"``, the row-scaled transpose
  ``D^{-1} P^T`` with ``D`` the column sums of ``P`` (constants are kept);
- the restriction of gradients ``P^T`` (the fine objective's gradient along the
  prolongated directions: what makes a coarse model first-order consistent).

:class:`DepthHierarchy` is the shipped one: residual networks
(:class:`ResidualNetwork`, ``x_{k+1} = x_k + h F_k(x_k)``) read as forward-Euler
discretisations of an ODE on ``[0, T]`` and coarsened in depth: a fine level of
``2L - 1`` blocks from a coarse one of ``L`` (step ``T / (L - 1)``). Prolongation copies
coarse block ``k`` to fine block ``2k`` and gives the new fine block ``2k + 1`` the mean
of coarse blocks ``k`` and ``k + 1``; injection takes fine block ``2k``; the stem and the
head (input and output layers) are shared and copied. Blocks can be anything whose
parameters have the same shapes in every block (MLP or convolutional).

:class:`StepCountHierarchy` is the same coarsening for :class:`EulerNeuralODE` levels: a
pnode neural ODE integrated by PETSc TS forward Euler with one block of weights per
step, whose levels are TS step counts (``L`` and ``2L - 1`` steps); it reuses
DepthHierarchy's maps unchanged.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
import torch

from pnode.errors import ConfigurationError
from pnode.odeint import odeint_adjoint
from pnode.params import ParamVec
from pnode.startup import PETSc

from .objective import as_param_vec

RESTRICTIONS = ("injection", "full_weighting")
Entries = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, columns, values


def parameter_offsets(model: torch.nn.Module) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Each trainable parameter's name -> (offset in the flat vector, shape), in the order
    a ParamVec of the model lays them out."""
    out, offset = {}, 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[name] = (offset, tuple(p.shape))
            offset += p.numel()
    return out


class Hierarchy:
    """Levels of one model (coarsest first) and the maps between consecutive levels.

    Subclasses give :meth:`prolongation_entries` and :meth:`injection_entries` (COO
    entries in flat parameter indices) and may check their levels in
    :meth:`check_levels` (raising :class:`pnode.ConfigurationError`).
    """

    def __init__(self, models: Sequence[torch.nn.Module], comm=None, restriction: str = "injection"):
        self.models = list(models)
        if len(self.models) < 2:
            raise ConfigurationError(f"a hierarchy needs at least two levels, got {len(self.models)}")
        if restriction not in RESTRICTIONS:
            raise ConfigurationError(f"restriction must be one of {RESTRICTIONS}, got {restriction!r}")
        self.restriction = restriction
        self.check_levels()
        self.pvecs: list[ParamVec] = [as_param_vec(m, comm) for m in self.models]
        self._P: list = [None]
        self._Pi: list = [None]
        self._norms = [math.nan]
        for level in range(1, len(self.models)):
            fine, coarse = self.pvecs[level], self.pvecs[level - 1]
            entries = self._checked(level, self.prolongation_entries(level), fine.numel, coarse.numel, "prolongation")
            self._P.append(_aij(entries, fine, coarse))
            if restriction == "injection":
                pi = self._checked(level, self.injection_entries(level), coarse.numel, fine.numel, "injection")
            else:
                pi = full_weighting(entries, coarse.numel)
            self._Pi.append(_aij(pi, coarse, fine))
            P = self._P[level]
            # ||P||_2 <= sqrt(||P||_1 ||P||_inf)
            self._norms.append(math.sqrt(P.norm(PETSc().NormType.NORM_1) * P.norm(PETSc().NormType.NORM_INFINITY)))

    def __len__(self) -> int:
        return len(self.models)

    # -- what a subclass gives -----------------------------------------------------------

    def check_levels(self) -> None:
        """Raise a ConfigurationError when the models do not form a hierarchy."""

    def prolongation_entries(self, level: int) -> Entries:
        """COO entries of ``P``: level ``level - 1`` -> ``level`` (rows: fine indices)."""
        raise NotImplementedError

    def injection_entries(self, level: int) -> Entries:
        """COO entries of the injection: level ``level`` -> ``level - 1`` (rows: coarse)."""
        raise NotImplementedError

    # -- the maps on distributed Vecs ------------------------------------------------------

    def prolong(self, level: int, coarse, fine) -> None:
        """``fine = P coarse`` (level ``level - 1`` -> ``level``)."""
        self._P[self._level(level)].mult(coarse, fine)

    def restrict(self, level: int, fine, coarse) -> None:
        """An iterate of level ``level`` restricted to level ``level - 1`` (injection or
        full weighting)."""
        self._Pi[self._level(level)].mult(fine, coarse)

    def restrict_gradient(self, level: int, fine, coarse) -> None:
        """``coarse = P^T fine``: a gradient of level ``level`` on level ``level - 1``."""
        self._P[self._level(level)].multTranspose(fine, coarse)

    def prolong_models(self, start: int = 0) -> None:
        """Set the model of every level above ``start`` to the prolongation of the one
        below it, starting from level ``start``'s parameters. With a
        :class:`DepthHierarchy` the finer networks' weights are then piecewise linear in
        depth (smooth), and injection gives each coarser level back exactly."""
        if not 0 <= start < len(self.models) - 1:
            raise ConfigurationError(f"start must lie in [0, {len(self.models) - 2}], got {start}")
        coarse = self.pvecs[start].pull(self.pvecs[start].duplicate())
        for level in range(start + 1, len(self.models)):
            fine = self.pvecs[level].duplicate()
            self.prolong(level, coarse, fine)
            self.pvecs[level].push(fine)
            coarse.destroy()
            coarse = fine
        coarse.destroy()

    def prolongation_norm(self, level: int) -> float:
        """An upper bound on ``||P||_2`` (``sqrt(||P||_1 ||P||_inf)``)."""
        return self._norms[self._level(level)]

    def matrix(self, level: int, kind: str = "prolongation") -> torch.Tensor:
        """A map as a dense tensor (``"prolongation"`` or ``"restriction"``), for
        inspection and tests of small hierarchies."""
        mats = {"prolongation": self._P, "restriction": self._Pi}
        if kind not in mats:
            raise ConfigurationError(f"kind must be 'prolongation' or 'restriction', got {kind!r}")
        M = mats[kind][self._level(level)]
        rows, cols = M.getSize()
        dense = torch.zeros(rows, cols, dtype=torch.float64)
        r0, r1 = M.getOwnershipRange()
        for i in range(r0, r1):
            j, v = M.getRow(i)
            dense[i, torch.as_tensor(j, dtype=torch.long)] = torch.as_tensor(v, dtype=torch.float64)
        return torch.as_tensor(self.pvecs[0].mpi.allreduce(dense.numpy()))

    def _level(self, level: int) -> int:
        if not 1 <= level < len(self.models):
            raise ConfigurationError(f"level {level} has no coarser level (levels 1..{len(self.models) - 1} do)")
        return level

    def _checked(self, level: int, entries: Entries, rows: int, cols: int, what: str) -> Entries:
        r, c, v = (np.asarray(a) for a in entries)
        if not (r.shape == c.shape == v.shape) or r.size and (r.min() < 0 or r.max() >= rows
                                                                 or c.min() < 0 or c.max() >= cols):
            raise ConfigurationError(
                f"the {what} entries of level {level} do not fit a {rows} x {cols} map")
        return r.astype(np.int64), c.astype(np.int64), v.astype(np.float64)

    def destroy(self) -> None:
        for M in self._P[1:] + self._Pi[1:]:
            M.destroy()


def full_weighting(prolongation: Entries, coarse_numel: int) -> Entries:
    """``D^{-1} P^T`` from the entries of ``P`` (``D``: the column sums of ``P``)."""
    rows, cols, vals = prolongation
    sums = np.bincount(cols, weights=vals, minlength=coarse_numel)
    if np.any(sums[cols] == 0):
        raise ConfigurationError("full weighting needs every coarse parameter to reach the fine level")
    return cols, rows, vals / sums[cols]


def _aij(entries: Entries, rows_of: ParamVec, cols_of: ParamVec):
    """An AIJ matrix with the row split of ``rows_of`` and the column split of ``cols_of``
    from global COO entries (each rank keeps its own rows)."""
    rows, cols, vals = entries
    mine = (rows >= rows_of.start) & (rows < rows_of.stop)
    rows, cols, vals = rows[mine] - rows_of.start, cols[mine], vals[mine]
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    n_local = rows_of.stop - rows_of.start
    indptr = np.zeros(n_local + 1, dtype=PETSc().IntType)
    np.add.at(indptr, rows + 1, 1)
    np.cumsum(indptr, out=indptr)
    M = PETSc().Mat().createAIJ(((n_local, rows_of.numel), (cols_of.stop - cols_of.start, cols_of.numel)),
                                csr=(indptr, cols.astype(PETSc().IntType), vals.astype(PETSc().ScalarType)),
                                comm=rows_of.comm)
    M.assemble()
    return M


class ResidualNetwork(torch.nn.Module):
    """``head(x_L)`` with ``x_0 = stem(x)`` and ``x_{k+1} = x_k + h F_k(x_k)``: forward
    Euler on ``[0, horizon]`` with one block ``F_k`` per step, ``h = horizon / (L - 1)``
    for ``L`` blocks."""

    def __init__(self, stem: torch.nn.Module, blocks: Sequence[torch.nn.Module], head: torch.nn.Module,
                 horizon: float = 1.0):
        super().__init__()
        if len(blocks) < 2:
            raise ConfigurationError(f"a ResidualNetwork needs at least 2 blocks, got {len(blocks)}")
        self.stem, self.blocks, self.head = stem, torch.nn.ModuleList(blocks), head
        self.horizon = float(horizon)
        self.step = self.horizon / (len(blocks) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = x + self.step * block(x)
        return self.head(x)


class EulerNeuralODE(ResidualNetwork):
    """``head(y(L h))`` with ``y(0) = stem(x)`` and ``y' = F_k(y)`` on ``[t_k, t_k + h)``,
    ``t_k = k h``: a neural ODE with one block of weights per step, solved by
    :func:`pnode.odeint_adjoint` with PETSc TS forward Euler (``L`` steps of
    ``h = horizon / (L - 1)`` for ``L`` blocks, block ``k`` acting at ``t_k``, so that the
    blocks sit on the nodes of ``[0, horizon]`` as a :class:`ResidualNetwork`'s do), its
    gradients by TSAdjoint. It computes the ResidualNetwork's recursion, through the TS;
    the stem and head are differentiated by autograd. ``options`` go to the TS."""

    def __init__(self, stem: torch.nn.Module, blocks: Sequence[torch.nn.Module], head: torch.nn.Module,
                 horizon: float = 1.0, options: dict | None = None):
        super().__init__(stem, blocks, head, horizon)
        self.options = dict(options or {})

    def field(self, t, y: torch.Tensor) -> torch.Tensor:
        """The right-hand side: block ``round(t / h)`` at ``y``."""
        k = min(max(int(round(float(t) / self.step)), 0), len(self.blocks) - 1)
        return self.blocks[k](y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0 = self.stem(x)
        t = torch.tensor([0.0, len(self.blocks) * self.step], dtype=y0.dtype, device=y0.device)
        y = odeint_adjoint(self.field, y0, t, method="euler", step_size=self.step, options=self.options,
                           adjoint_params=list(self.blocks.parameters()))
        return self.head(y[-1])


def residual_levels(stem: torch.nn.Module, block: Callable[[], torch.nn.Module], head: torch.nn.Module,
                    coarse_blocks: int, levels: int, horizon: float = 1.0,
                    network: type[ResidualNetwork] = ResidualNetwork) -> list[ResidualNetwork]:
    """``levels`` residual networks (``network``: :class:`ResidualNetwork` or
    :class:`EulerNeuralODE`), coarsest first, of ``L, 2L - 1, 4L - 3, ...`` blocks
    (``L = coarse_blocks``), each with its own copies of ``stem`` and ``head`` and new
    blocks from ``block()``."""
    if levels < 1 or coarse_blocks < 2:
        raise ConfigurationError(f"need levels >= 1 and coarse_blocks >= 2, got {levels}, {coarse_blocks}")
    out, n = [], coarse_blocks
    for _ in range(levels):
        out.append(network(copy.deepcopy(stem), [block() for _ in range(n)], copy.deepcopy(head), horizon))
        n = 2 * n - 1
    return out


def mlp_resnet(d_in: int, width: int, d_out: int, coarse_blocks: int, levels: int, horizon: float = 1.0,
               activation: Callable[[], torch.nn.Module] = torch.nn.Tanh,
               dtype: torch.dtype = torch.float64,
               network: type[ResidualNetwork] = ResidualNetwork) -> list[ResidualNetwork]:
    """MLP residual networks for a :class:`DepthHierarchy` (or, ``network=EulerNeuralODE``,
    neural ODEs for a :class:`StepCountHierarchy`): a linear stem to ``width``, blocks
    ``activation(W x + b)``, a linear head (coarsest first)."""
    def block():
        return torch.nn.Sequential(torch.nn.Linear(width, width), activation()).to(dtype)
    return residual_levels(torch.nn.Linear(d_in, width).to(dtype), block, torch.nn.Linear(width, d_out).to(dtype),
                           coarse_blocks, levels, horizon, network)


class DepthHierarchy(Hierarchy):
    """Residual networks coarsened in depth (module docstring); ``models`` coarsest first,
    each a :class:`ResidualNetwork` with ``2L - 1`` blocks when the one before has ``L``,
    the same horizon, stem and head shapes, and blocks of one parameter layout."""

    level_type: type[ResidualNetwork] = ResidualNetwork

    def check_levels(self) -> None:
        for i, m in enumerate(self.models):
            if not isinstance(m, self.level_type):
                raise ConfigurationError(f"level {i} is a {type(m).__name__}, not an instance of {self.level_type.__name__}")
        layout = _block_layout(self.models[0].blocks[0])
        for i, m in enumerate(self.models):
            if i and len(m.blocks) != 2 * len(self.models[i - 1].blocks) - 1:
                raise ConfigurationError(
                    f"level {i} has {len(m.blocks)} blocks; a level above one of {len(self.models[i - 1].blocks)} "
                    f"blocks needs {2 * len(self.models[i - 1].blocks) - 1}")
            if m.horizon != self.models[0].horizon:
                raise ConfigurationError(f"level {i} has horizon {m.horizon}, level 0 {self.models[0].horizon}")
            for k, b in enumerate(m.blocks):
                if _block_layout(b) != layout:
                    raise ConfigurationError(
                        f"block {k} of level {i} has parameters {_block_layout(b)}, block 0 of level 0 {layout}")
            if _shared_layout(m) != _shared_layout(self.models[0]):
                raise ConfigurationError(
                    f"the stem and head of level {i} ({_shared_layout(m)}) differ from level 0's "
                    f"({_shared_layout(self.models[0])})")

    def prolongation_entries(self, level: int) -> Entries:
        fine, coarse = parameter_offsets(self.models[level]), parameter_offsets(self.models[level - 1])
        parts = []
        for name, (offset, shape) in fine.items():
            n = math.prod(shape)
            block, rest = _block_name(name)
            if block is None:
                sources = [(name, 1.0)]
            elif block % 2 == 0:
                sources = [(f"blocks.{block // 2}.{rest}", 1.0)]
            else:
                sources = [(f"blocks.{(block - 1) // 2}.{rest}", 0.5), (f"blocks.{(block + 1) // 2}.{rest}", 0.5)]
            for src, weight in sources:
                parts.append(_copy_entries(offset, coarse[src][0], n, weight))
        return _concat(parts)

    def injection_entries(self, level: int) -> Entries:
        fine, coarse = parameter_offsets(self.models[level]), parameter_offsets(self.models[level - 1])
        parts = []
        for name, (offset, shape) in coarse.items():
            block, rest = _block_name(name)
            src = name if block is None else f"blocks.{2 * block}.{rest}"
            parts.append(_copy_entries(offset, fine[src][0], math.prod(shape), 1.0))
        return _concat(parts)


class StepCountHierarchy(DepthHierarchy):
    """:class:`EulerNeuralODE` levels, coarsest first, of ``L, 2L - 1, ...`` TS steps (one
    block of weights per step): DepthHierarchy's prolongation and restrictions, on the
    neural ODE's per-step weights."""

    level_type = EulerNeuralODE


def _block_name(name: str) -> tuple[int | None, str]:
    parts = name.split(".", 2)
    if parts[0] == "blocks" and len(parts) == 3:
        return int(parts[1]), parts[2]
    return None, name


def _block_layout(block: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, shape) for name, (_, shape) in parameter_offsets(block).items()]


def _shared_layout(model: ResidualNetwork) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, s) for n, (_, s) in parameter_offsets(model).items() if _block_name(n)[0] is None]


def _copy_entries(row0: int, col0: int, n: int, weight: float) -> Entries:
    idx = np.arange(n, dtype=np.int64)
    return row0 + idx, col0 + idx, np.full(n, weight)


def _concat(parts: list[Entries]) -> Entries:
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]
