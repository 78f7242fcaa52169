"""The kinds of Newton Jacobian ``shift*M - dg/du`` of implicit methods, in one registry.

A state-dependent mass ``M(u)`` (``mass.depends_on_state``) makes the Jacobian
``shift*M(u) + d(M(u) u')/du - dg/du``: the kinds then linearise ``h = g(t, u) - M(u) u'``
at the stage's ``u'`` and take ``M(u)`` at the same point (``matrix-free`` and ``dense``;
``blocks`` refuses it).

Each kind is a class registered under its ``jacobian=`` name. It owns a PETSc Mat, is
told the linearisation point by :meth:`IJacobianKind.at` (PETSc's IJacobian callback)
and brings the KSP/PC options that solve with it (``solver_defaults``; the user's options
and the command line win). Adding a kind is one class here.

* ``"matrix-free"``: a shell whose ``mult`` (Newton's Krylov solves) and ``multTranspose``
  (the adjoint's transposed solves) reuse one autograd graph of ``g`` per linearisation
  point (the double-backward trick: ``(dg/du) v`` is the derivative of ``(dg/du)^T w`` in
  ``w``). Measured per point with 3 products (2 shared CPU cores, float64): ROBER (n=3)
  0.7 ms, against 4.5 ms with ``torch.func.jvp`` and 166 ms with ``torch.func.linearize``;
  a 2-50-2 MLP on 20 points (n=40) 1.5 ms against 9 ms and 139 ms. GMRES, no PC.
* ``"dense"``: ``dg/du`` from one batched backward (``n`` seeds) into a ``seqdense`` Mat
  that shares its memory with a torch buffer; ``ksp_type preonly``, ``pc_type lu``: each
  Newton step is one exact solve, and so is the adjoint's transposed solve.
* ``"blocks"``: a batched state ``(B, *sample)`` whose samples do not interact has a
  block-diagonal Jacobian with ``B`` blocks of size ``m = numel / B``, all from ``m``
  batched backward seeds (seed ``j`` puts a 1 at component ``j`` of every sample) into a
  ``seqbaij`` Mat of block size ``m``; ``pc_type pbjacobi`` inverts the blocks exactly.
  Every assembly also applies one random VJP of the true function and raises
  :class:`ConfigurationError` if it disagrees with the blocks (samples coupled).
* ``"coloured"``: the sparse ``dg/du`` of a :class:`pnode.dmda.DMDAProblem`, one backward
  pass of ``func`` on the ghosted patch per stencil colour (:mod:`pnode.colouring`), into
  the DMDA's AIJ matrix (each rank its own rows) by ``MatSetValuesCOO``; ``ksp_type
  gmres``, ``pc_type bjacobi`` (ILU(0) blocks), any PETSc PC by options. The first
  assembly checks one random VJP against the rows (``func`` reaching past its stencil).

``jacobian="auto"`` (:func:`choose_jacobian`) tries the kinds in ``AUTO_ORDER`` and takes
the first whose :meth:`IJacobianKind.suits` says yes: ``"coloured"`` for an implicit part
that is a CPU DMDA problem (any number of ranks); ``"blocks"`` for a batched state
(``ndim >= 2``, ``B > 1``) with ``m <= BLOCK_MAX`` whose samples are found independent at
``(t0, y0)``; ``"dense"`` for ``n <= DENSE_MAX``; otherwise ``"matrix-free"``. The dense
and block kinds need a CPU state on a one-process communicator.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from .colouring import StencilColouring
from .comm import allreduce, as_petsc_comm
from .dmda import DMDAProblem
from .errors import ConfigurationError
from .guard import CallbackGuard
from .matop import shell_mat
from .startup import PETSc
from .vec import as_tensor, host_array

DENSE_MAX = 256
BLOCK_MAX = 128
SMALL_DENSE = 4  # up to this many unknowns, one backward per row beats a batched one
# up to this many values per rank the coloured kind's seeds go through one batched backward,
# beyond it one backward each on one graph (measured, 11 seeds, the 2-D Brusselator with a
# 2-16-2 MLP, one thread: 2,048 values 2.2 ms against 12.7 ms; 8,192: 33 ms against 19 ms;
# 66,248: 208 ms against 94 ms; forward-mode vmap(jvp) 256 ms)
COLOURED_BATCHED_MAX = 4096

#: default solver options of implicit methods (the user's options and the command line win)
SOLVER_DEFAULTS = {"snes_type": "newtonls", "snes_rtol": 1e-10, "snes_atol": 1e-12,
                   "snes_max_it": 50, "ksp_type": "gmres", "pc_type": "none",
                   "ksp_rtol": 1e-12, "ksp_atol": 1e-30, "ksp_max_it": 1000}

KINDS: dict[str, type["IJacobianKind"]] = {}
AUTO_ORDER = ("coloured", "blocks", "dense", "matrix-free")


def register(cls):
    """Class decorator: make ``cls`` the Jacobian kind named ``cls.name``."""
    KINDS[cls.name] = cls
    return cls


def jacobian_names() -> tuple[str, ...]:
    """What ``jacobian=`` accepts."""
    return ("auto",) + tuple(KINDS)


def check_jacobian(jacobian: str) -> str:
    """Validate a user's ``jacobian=`` keyword."""
    if jacobian not in jacobian_names():
        raise ConfigurationError(
            f"jacobian must be one of {', '.join(map(repr, jacobian_names()))}, got {jacobian!r}")
    return jacobian


class IJacobianKind:
    """One way of forming ``shift*M - dg/du`` for PETSc (see the module docstring)."""

    name: ClassVar[str]
    solver_defaults: ClassVar[dict] = {}
    mat = None

    @classmethod
    def unsupported(cls, problem, comm) -> str | None:
        """Why this kind cannot serve ``problem`` on ``comm`` (None: it can)."""
        return None

    @classmethod
    def suits(cls, problem, s0: float, y0: torch.Tensor) -> bool:
        """Whether ``"auto"`` should pick this kind (it is supported)."""
        return True

    def __init__(self, problem, comm, guard: CallbackGuard):
        self.problem = problem

    def linearise(self, t: float, x: torch.Tensor, xdot: torch.Tensor | None = None) -> None:
        """Evaluate ``dg/du`` (or the linearisation point) at PETSc time ``t`` and flat
        state ``x`` (and time derivative ``xdot``, used by a state-dependent mass), and
        keep it."""
        raise NotImplementedError

    def form(self, shift: float) -> None:
        """Write ``shift*M - dg/du`` with the kept ``dg/du`` into the Mat."""
        raise NotImplementedError

    def at(self, t: float, x: torch.Tensor, shift: float, xdot: torch.Tensor | None = None) -> None:
        """Linearise at ``(t, x, xdot)`` and form the matrix for ``shift``."""
        self.linearise(t, x, xdot)
        self.form(shift)

    def destroy(self) -> None:
        self.mat.destroy()


def choose_jacobian(requested: str, problem, s0: float, y0: torch.Tensor, comm) -> str:
    """Resolve ``jacobian=`` for ``problem`` (see the module docstring for the rule)."""
    comm = as_petsc_comm(comm)
    if problem.jac is not None:
        requested = _user_kind(requested, problem, s0, y0)
    if requested != "auto":
        why = KINDS[requested].unsupported(problem, comm)
        if why is not None:
            raise ConfigurationError(f"jacobian={requested!r} {why}")
        return requested
    for name in AUTO_ORDER:
        kind = KINDS[name]
        if kind.unsupported(problem, comm) is None and kind.suits(problem, s0, y0.reshape(-1)):
            return name
    return "matrix-free"


def _user_kind(requested: str, problem, s0: float, y0: torch.Tensor) -> str:
    """The assembled kind a user's ``jac=`` fills: by request, or by what it returns."""
    if requested == "matrix-free":
        raise ConfigurationError("jac= assembles dg/du: use it with jacobian='dense', 'blocks' or 'auto'")
    if requested != "auto":
        return requested
    with torch.no_grad():
        jac = problem.jac(problem.user_time(s0), y0.detach().reshape(problem.shape))
    shape, n = tuple(getattr(jac, "shape", ())), problem.numel
    if shape in ((n, n), tuple(problem.shape) * 2):
        return "dense"
    if len(problem.shape) >= 2 and shape == (problem.shape[0], n // problem.shape[0], n // problem.shape[0]):
        return "blocks"
    raise ConfigurationError(
        f"jac(t, y) must return dg/du as ({n}, {n}) (dense) or ({problem.shape[0]}, m, m) per-sample "
        f"blocks for a state of shape {tuple(problem.shape)}, got {shape or type(jac).__name__}")


def build_jacobian(kind: str, problem, comm, guard: CallbackGuard) -> IJacobianKind:
    """The Jacobian object of ``kind`` for ``problem``."""
    return KINDS[kind](problem, comm, guard)


def state_mass(problem) -> bool:
    """Whether ``problem``'s mass matrix depends on the state."""
    return problem.mass is not None and problem.mass.depends_on_state


def implicit_part(problem, t: float, x: torch.Tensor, xdot: torch.Tensor | None) -> torch.Tensor:
    """``h = g(t, x)`` flat, or ``g(t, x) - M(x) xdot`` for a state-dependent mass (its
    derivative in ``x`` then holds ``-d(M(x) xdot)/dx``)."""
    g = problem.implicit.rhs(t, x).reshape(-1)
    if xdot is None or not state_mass(problem):
        return g
    return g - problem.mass.product(t, x, xdot.detach()).reshape(-1)


class Linearisation:
    """``h(t, x)`` (:func:`implicit_part`) with its autograd graph at one point, built
    lazily and reused."""

    def __init__(self, problem):
        self.problem = problem
        self.x = torch.zeros(problem.numel, dtype=problem.dtype, device=problem.device)
        self._xdot = torch.zeros_like(self.x) if state_mass(problem) else None
        self.xdot = None  # the point's u' (a state-dependent mass), or None: h = g
        self.t = 0.0
        self._graph = None

    def set_point(self, t: float, x: torch.Tensor, xdot: torch.Tensor | None = None) -> None:
        self.t = t
        self.x.copy_(x)
        self.xdot = None if xdot is None or self._xdot is None else self._xdot.copy_(xdot)
        self._graph = None

    def graph(self):
        """(x leaf, h(t, x) flat) with a retained graph."""
        if self._graph is None:
            prob = self.problem
            with torch.enable_grad():
                xr = self.x.detach().view(prob.shape).requires_grad_(True)
                h = implicit_part(prob, self.t, xr, self.xdot)
            self._graph = (xr, h)
        return self._graph

    def mass_product(self, v: torch.Tensor, transpose: bool) -> torch.Tensor:
        """``M v`` (or ``M^T v``) at the linearisation point; ``v`` without a mass."""
        mass = self.problem.mass
        if mass is None:
            return v
        if not mass.depends_on_state:
            return mass.apply(v, transpose)
        with torch.no_grad():
            return mass.product(self.t, self.x.view(self.problem.shape), v, transpose).reshape(-1)


class _ShiftedProducts(Linearisation):
    """Shell context of ``shift*M - dg/du`` (also scaled by ``MatScale`` calls)."""

    def __init__(self, problem):
        super().__init__(problem)
        self.shift, self.factor = 0.0, 1.0
        self._dual = None

    def set_point(self, t: float, x: torch.Tensor, xdot: torch.Tensor | None = None) -> None:
        super().set_point(t, x, xdot)
        self._dual = None

    def set_shift(self, shift: float) -> None:
        self.shift, self.factor = shift, 1.0

    def _jvp(self, v: torch.Tensor) -> torch.Tensor:
        # (dg/du) v = d/dw <(dg/du)^T w, v>, with one double-backward graph per point
        if self._dual is None:
            xr, g = self.graph()
            gt = w = None
            if g.requires_grad:
                with torch.enable_grad():
                    w = torch.zeros_like(g, requires_grad=True)
                    (gt,) = torch.autograd.grad(g, xr, w, create_graph=True, allow_unused=True)
            self._dual = (w, gt)
        w, gt = self._dual
        if gt is None:  # g does not depend on the state
            return torch.zeros_like(v)
        # gt = (dg/du)^T w is linear in w: a backward pass that does not reach w is one
        # that autograd cannot differentiate (it would silently give a zero product)
        jv = None
        if gt.requires_grad:
            (jv,) = torch.autograd.grad(gt, w, v.view(gt.shape), retain_graph=True, allow_unused=True)
        if jv is None:
            raise ConfigurationError(
                "the matrix-free Jacobian needs the implicit function to be twice "
                "differentiable (its Jacobian-vector products differentiate a backward pass), "
                "but its backward pass is not differentiable (a custom autograd.Function "
                "marked once_differentiable, or one that detaches?); use jacobian='dense' or "
                "'blocks', or make the backward differentiable")
        return jv.reshape(-1)

    def _vjp(self, v: torch.Tensor) -> torch.Tensor:
        xr, g = self.graph()
        if not g.requires_grad:
            return torch.zeros_like(v)
        (jt,) = torch.autograd.grad(g, xr, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if jt is None else jt.reshape(-1)

    def mult(self, mat, X, Y) -> None:
        v = as_tensor(X, None, "r")
        out = self.mass_product(v, False).mul(self.shift).sub_(self._jvp(v)).mul_(self.factor)
        as_tensor(Y).copy_(out)

    def multTranspose(self, mat, X, Y) -> None:
        v = as_tensor(X, None, "r")
        out = self.mass_product(v, True).mul(self.shift).sub_(self._vjp(v)).mul_(self.factor)
        as_tensor(Y).copy_(out)

    def scale(self, mat, a) -> None:
        self.factor *= float(a)


@register
class MatrixFreeJacobian(IJacobianKind):
    """``shift*M - dg/du`` as a shell of Jacobian-vector products; GMRES."""

    name = "matrix-free"
    solver_defaults = {}

    def __init__(self, problem, comm, guard: CallbackGuard):
        super().__init__(problem, comm, guard)
        self.products = _ShiftedProducts(problem)
        self.mat = shell_mat(self.products, problem.numel, problem.numel, comm, guard)

    def linearise(self, t: float, x: torch.Tensor, xdot: torch.Tensor | None = None) -> None:
        self.products.set_point(t, x, xdot)

    def form(self, shift: float) -> None:
        self.products.set_shift(shift)


def seeded_vjps(g: torch.Tensor, leaf: torch.Tensor, seeds: torch.Tensor, batched: bool) -> torch.Tensor:
    """``seeds[k]^T dg/d(leaf)`` for every ``k`` (``seeds`` shaped ``(k, *g.shape)``, the
    result ``(k, *leaf.shape)``): one batched backward, or one backward per seed on one
    graph (cheaper for few seeds or large states); zeros where ``g`` does not depend on
    ``leaf``."""
    if g.requires_grad:
        if batched:
            (vjps,) = torch.autograd.grad(g, leaf, seeds, is_grads_batched=True, allow_unused=True)
        else:
            vjps = [torch.autograd.grad(g, leaf, seed, retain_graph=True, allow_unused=True)[0] for seed in seeds]
            vjps = None if vjps[0] is None else torch.stack(vjps)
        if vjps is not None:
            return vjps
    return torch.zeros(len(seeds), *leaf.shape, dtype=leaf.dtype, device=leaf.device)


def _state_vjps(problem, t: float, x: torch.Tensor, seeds: torch.Tensor, xdot, batched: bool) -> torch.Tensor:
    """``seeds[k]^T dh/du`` (flat rows) at ``(t, x, xdot)`` by :func:`seeded_vjps`."""
    with torch.enable_grad():
        xr = x.detach().reshape(problem.shape).requires_grad_(True)
        g = implicit_part(problem, t, xr, xdot).reshape(problem.shape)
    rows = seeded_vjps(g, xr, seeds.view(seeds.shape[0], *problem.shape), batched)
    return rows.reshape(seeds.shape[0], -1)


def batched_vjp(problem, t: float, x: torch.Tensor, seeds: torch.Tensor,
                xdot: torch.Tensor | None = None) -> torch.Tensor:
    """``seeds[k]^T dh/du`` for every ``k`` (flat rows; ``h``: :func:`implicit_part`), one
    batched backward at ``(t, x, xdot)``."""
    return _state_vjps(problem, t, x, seeds, xdot, batched=True)


def row_vjps(problem, t: float, x: torch.Tensor, eye: torch.Tensor,
             xdot: torch.Tensor | None = None) -> torch.Tensor:
    """``dh/du`` at ``(t, x, xdot)`` by one backward pass per row on one graph (the fastest
    way for a few unknowns: a batched backward costs more than ``SMALL_DENSE`` plain ones)."""
    return _state_vjps(problem, t, x, eye, xdot, batched=False).reshape(eye.shape)


def dense_assembly(problem, eye: torch.Tensor):
    """``(t, x, xdot) -> dh/du`` (flat rows): the user's ``jac=`` (checked at its first
    call), one backward per row for at most ``SMALL_DENSE`` unknowns, else one batched
    backward."""
    if problem.jac is not None:
        user = UserJacobian(problem, (problem.numel, problem.numel))
        return lambda t, x, xdot: user(t, x)
    if problem.numel <= SMALL_DENSE:
        return lambda t, x, xdot: row_vjps(problem, t, x, eye, xdot)
    return lambda t, x, xdot: batched_vjp(problem, t, x, eye, xdot)


class UserJacobian:
    """The user's ``jac(t, y)`` as ``dg/du`` in PETSc time, of ``shape`` (dense ``(n, n)``
    or blocks ``(B, m, m)``), checked once against a random vector-Jacobian product."""

    def __init__(self, problem, shape: tuple[int, ...]):
        self.problem, self.shape, self.checked = problem, shape, False

    def __call__(self, t: float, x: torch.Tensor) -> torch.Tensor:
        prob = self.problem
        y = x.detach().reshape(prob.shape)
        with torch.no_grad():
            jac = prob.jac(prob.user_time(t), y)
        if not isinstance(jac, torch.Tensor) or jac.numel() != _numel(self.shape) or jac.dtype != prob.dtype:
            got = (f"shape {tuple(jac.shape)}, dtype {jac.dtype}" if isinstance(jac, torch.Tensor)
                   else type(jac).__name__)
            raise ConfigurationError(f"jac(t, y) must return dg/du of shape {self.shape} and dtype "
                                     f"{prob.dtype} for a state of shape {tuple(prob.shape)}, got {got}")
        if tuple(jac.shape) not in (self.shape, tuple(prob.shape) * 2):
            raise ConfigurationError(f"jac(t, y) returned shape {tuple(jac.shape)}; expected {self.shape}")
        jac = jac.reshape(self.shape) * prob.sign
        if not self.checked:
            self._check(t, x, jac)
            self.checked = True
        return jac

    def _check(self, t: float, x: torch.Tensor, jac: torch.Tensor) -> None:
        prob = self.problem
        v = torch.rand(prob.numel, generator=torch.Generator().manual_seed(4321), dtype=prob.dtype).add_(0.5)
        v = v.to(prob.device)
        want = batched_vjp(prob, t, x, v[None])[0]
        if len(self.shape) == 2:
            got = v @ jac
            scale = v @ jac.abs()
        else:
            B, m = self.shape[:2]
            got = torch.einsum("bjk,bj->bk", jac, v.view(B, m)).reshape(-1)
            scale = torch.einsum("bjk,bj->bk", jac.abs(), v.view(B, m)).reshape(-1)
        scale = torch.maximum(scale, want.abs()).add_(1e-300)
        mismatch = float(((got - want).abs() / scale).max())
        if not mismatch <= 1e-6:
            raise ConfigurationError(
                f"jac(t, y) disagrees with the function's own derivative at t={float(prob.user_time(t)):.6g} "
                f"(relative mismatch {mismatch:.2e} of a random vector-Jacobian product): it must return "
                "dg/du[i, j] = d g_i / d y_j of the implicit part")


def _numel(shape) -> int:
    return int(torch.Size(shape).numel())


class _AssembledJacobian(IJacobianKind):
    """Assembled kinds: a CPU state on one process."""

    @classmethod
    def unsupported(cls, problem, comm) -> str | None:
        if comm.getSize() != 1 or problem.device.type != "cpu":
            return "needs a CPU state on a one-process communicator; use jacobian='matrix-free'"
        if state_mass(problem) and problem.jac is not None:
            return ("cannot use jac= with a state-dependent mass matrix (the Jacobian also holds "
                    "d(M(u) u')/du); leave jac= out")
        return None


@register
class DenseJacobian(_AssembledJacobian):
    """``shift*M - dg/du`` as a ``seqdense`` Mat over a torch buffer; LU-preconditioned."""

    name = "dense"
    solver_defaults = {"ksp_type": "preonly", "pc_type": "lu"}

    @classmethod
    def suits(cls, problem, s0: float, y0: torch.Tensor) -> bool:
        return problem.numel <= DENSE_MAX

    def __init__(self, problem, comm, guard: CallbackGuard):
        super().__init__(problem, comm, guard)
        n = problem.numel
        self.eye = torch.eye(n, dtype=problem.dtype, device=problem.device)
        self.buf = torch.zeros(n, n, dtype=problem.dtype, device=problem.device)
        # PETSc stores dense matrices by columns: its matrix is buf.T
        self.mat = PETSc().Mat().createDense((n, n), array=host_array(self.buf, "jacobian='dense'").reshape(-1),
                                             comm=comm)
        self.mat.setUp()
        self.mat.assemble()
        self.dgdu = torch.zeros(n, n, dtype=problem.dtype, device=problem.device)
        self.assemble = dense_assembly(problem, self.eye)
        buf = host_array(self.buf)
        self.mass = None
        if state_mass(problem):
            self.mass = torch.zeros(n, n, dtype=problem.dtype, device=problem.device)
        elif problem.mass is not None:
            self.mass = problem.mass.M
        mass = None if self.mass is None else host_array(self.mass)
        self._np = (buf.T, buf.reshape(-1)[::n + 1], mass)  # A = buf.T, its diagonal, M
        self._dgdu_np = host_array(self.dgdu)

    def linearise(self, t: float, x: torch.Tensor, xdot: torch.Tensor | None = None) -> None:
        """``dh/du`` (and a state-dependent ``M(x)``) at ``(t, x, xdot)``."""
        self.dgdu.copy_(self.assemble(t, x, xdot))
        if state_mass(self.problem):
            with torch.no_grad():
                self.mass.copy_(self.problem.mass.matrix(t, x.view(self.problem.shape)))

    def form(self, shift: float) -> None:
        """Write ``shift*M - dg/du`` and bump the Mat's state (numpy on the host buffers: a
        torch op costs several microseconds on matrices this small)."""
        A, diagonal, mass = self._np
        np.negative(self._dgdu_np, out=A)
        if mass is None:
            diagonal += shift
        elif mass.ndim == 1:
            diagonal += shift * mass
        else:
            A += shift * mass
        self.mat.assemble()


def _block_seeds(B: int, m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``m`` compressed seeds (a 1 at component ``j`` of every sample) and one random probe."""
    seeds = torch.zeros(m + 1, B, m, dtype=dtype)
    seeds[torch.arange(m), :, torch.arange(m)] = 1.0
    seeds[m] = torch.rand(B, m, generator=torch.Generator().manual_seed(1234), dtype=dtype) + 0.5
    return seeds.view(m + 1, -1).to(device)


def block_jacobian(problem, seeds: torch.Tensor, t: float, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The per-sample blocks ``dg_b/du_b`` at ``(t, x)``, shape ``(B, m, m)``, and the
    coupling check's worst relative mismatch (rounding level for independent samples)."""
    B = problem.shape[0]
    m = problem.numel // B
    rows = batched_vjp(problem, t, x, seeds)
    blocks = rows[:m].view(m, B, m).transpose(0, 1)
    w = seeds[m].view(B, m)
    expected = torch.einsum("bjk,bj->bk", blocks, w)
    scale = torch.einsum("bjk,bj->bk", blocks.abs(), w).add_(1e-300)
    return blocks, float(((rows[m].view(B, m) - expected).abs() / scale).max())


@register
class BlockJacobian(_AssembledJacobian):
    """Block-diagonal ``shift*M - dg/du`` (one block per sample) as ``seqbaij``; pbjacobi."""

    name = "blocks"
    solver_defaults = {"ksp_type": "preonly", "pc_type": "pbjacobi"}

    @classmethod
    def unsupported(cls, problem, comm) -> str | None:
        why = super().unsupported(problem, comm)
        if why is None and state_mass(problem):
            why = "does not support a state-dependent mass matrix; use jacobian='dense' or 'matrix-free'"
        if why is None and len(problem.shape) < 2:
            why = f"needs a batched state (batch, ...), got shape {tuple(problem.shape)}"
        if why is None and problem.mass is not None and not problem.mass.diagonal:
            why = "supports only a diagonal mass= (shape (n,))"
        return why

    @classmethod
    def suits(cls, problem, s0: float, y0: torch.Tensor) -> bool:
        B = problem.shape[0]
        if B <= 1 or problem.numel // B > BLOCK_MAX:
            return False
        seeds = _block_seeds(B, problem.numel // B, problem.dtype, problem.device)
        return block_jacobian(problem, seeds, s0, y0)[1] <= 1e-8

    def __init__(self, problem, comm, guard: CallbackGuard):
        super().__init__(problem, comm, guard)
        B = problem.shape[0]
        m = problem.numel // B
        self.B, self.m = B, m
        self.seeds = _block_seeds(B, m, problem.dtype, problem.device)
        self.blocks = torch.zeros(B, m, m, dtype=problem.dtype, device=problem.device)
        self.dgdu = torch.zeros_like(self.blocks)
        self.user = UserJacobian(problem, (B, m, m)) if problem.jac is not None else None
        idx = torch.arange(B + 1, dtype=torch.int32)
        self.rows, self.cols = host_array(idx), host_array(idx[:-1])
        self._values = host_array(self.blocks, "jacobian='blocks'").reshape(-1)
        self.mat = PETSc().Mat().createBAIJ((problem.numel, problem.numel), m,
                                            csr=(self.rows, self.cols, self._values), comm=comm)
        self.mat.assemble()
        self._mass = None if problem.mass is None else problem.mass.M.view(B, m)

    def linearise(self, t: float, x: torch.Tensor, xdot: torch.Tensor | None = None) -> None:
        """Evaluate the blocks of ``dg/du`` at ``(t, x)``; raise if samples interact."""
        if self.user is not None:
            self.dgdu.copy_(self.user(t, x))
            return
        blocks, mismatch = block_jacobian(self.problem, self.seeds, t, x)
        if not mismatch <= 1e-8:
            raise ConfigurationError(
                f"jacobian='blocks' needs the samples of the state (its dim 0, {self.B} of them) "
                f"not to interact, but dg/du couples them (relative mismatch {mismatch:.2e} of a "
                "random vector-Jacobian product); use jacobian='dense' or 'matrix-free'")
        self.dgdu.copy_(blocks)

    def form(self, shift: float) -> None:
        """Write the blocks of ``shift*M - dg/du``."""
        A = self.blocks
        torch.neg(self.dgdu, out=A)
        if self._mass is None:
            A.diagonal(dim1=1, dim2=2).add_(shift)
        else:
            A.diagonal(dim1=1, dim2=2).add_(self._mass, alpha=shift)
        self.mat.setValuesBlockedCSR(self.rows, self.cols, self._values)
        self.mat.assemble()


def _dmda_of(problem):
    """The :class:`DMDAProblem` of the implicit part, or None."""
    func = problem.implicit.func
    return func if isinstance(func, DMDAProblem) else None


@register
class ColouredJacobian(IJacobianKind):
    """``shift*M - dg/du`` of a DMDA problem as an AIJ Mat on the DMDA's layout, from one
    backward pass of ``func`` on the patch per colour (:mod:`pnode.colouring`); GMRES with
    PETSc's block Jacobi (ILU(0) blocks) by default."""

    name = "coloured"
    solver_defaults = {"ksp_type": "gmres", "pc_type": "bjacobi"}

    @classmethod
    def unsupported(cls, problem, comm) -> str | None:
        dmda = _dmda_of(problem)
        if dmda is None:
            return ("needs the implicit part to be a pnode.distributed.DMDAProblem (its sparsity comes "
                    "from the DMDA's stencil); use jacobian='dense', 'blocks' or 'matrix-free'")
        if dmda.da.getDim() not in (1, 2):
            return f"supports 1-D and 2-D DMDAs, got a {dmda.da.getDim()}-D one"
        if problem.device.type != "cpu":
            return "needs a CPU state; use jacobian='matrix-free'"
        if problem.jac is not None:
            return "assembles dg/du from the stencil: it does not take jac="
        if problem.mass is not None and (problem.mass.depends_on_state or not getattr(problem.mass, "diagonal", False)):
            return "supports only a constant diagonal mass= (shape (n,))"
        return None

    def __init__(self, problem, comm, guard: CallbackGuard):
        super().__init__(problem, comm, guard)
        self.dmda = dmda = _dmda_of(problem)
        self.colouring = colouring = StencilColouring(dmda, problem.dtype)
        P = PETSc()
        start = dmda.halo.g.getOwnershipRange()[0]
        diagonal = np.arange(start, start + problem.numel, dtype=P.IntType)
        self.mat = dmda.da.createMat()
        self.mat.setPreallocationCOO(np.concatenate([colouring.rows, diagonal]),
                                     np.concatenate([colouring.cols, diagonal]))
        self.entries = len(colouring.rows)
        self.values = np.zeros(self.entries + problem.numel, dtype=P.ScalarType)
        self.dgdu = np.zeros(self.entries, dtype=P.ScalarType)
        probe = torch.rand(problem.shape, generator=torch.Generator().manual_seed(2468), dtype=problem.dtype)
        self.seeds = torch.cat([colouring.seeds, probe.add_(0.5)[None]])
        self.checked = False
        self._mass = None if problem.mass is None else host_array(problem.mass.M)

    def linearise(self, t: float, x: torch.Tensor, xdot: torch.Tensor | None = None) -> None:
        """Evaluate the entries of ``dg/du`` at ``(t, x)`` (``xdot`` is unused: the mass is
        constant); on the first call also check them against a random VJP (raises on every
        rank if ``func`` reaches past its stencil)."""
        prob, dmda = self.problem, self.dmda
        seeds = self.seeds if not self.checked else self.seeds[:-1]
        with torch.no_grad():
            patch = dmda.halo.to_local(x.detach().view(prob.shape))
        with torch.enable_grad():
            leaf = patch.requires_grad_(True)
            g = dmda.on_patch(prob.implicit.user_time(t), leaf)
        vjps = seeded_vjps(g, leaf, seeds, prob.numel <= COLOURED_BATCHED_MAX)
        values = self.colouring.entries(vjps[:self.colouring.count])
        if not self.checked:
            self._check(values, vjps[-1])
            self.checked = True
        np.multiply(values.numpy(), prob.sign, out=self.dgdu)

    def _check(self, values: torch.Tensor, probe_vjp: torch.Tensor) -> None:
        worst = allreduce(self.colouring.mismatch(values, self.seeds[-1], probe_vjp), "max", self.mat.getComm())
        if not worst <= 1e-8:
            da = self.dmda.da
            stencil = "star" if da.getStencilType() == da.StencilType.STAR else "box"
            exc = ConfigurationError(
                f"jacobian='coloured' needs func(t, patch) to couple each point only with the patch points "
                f"of its {stencil} stencil of width {da.getStencilWidth()} (the DMDA's), but dg/du has other "
                f"entries (relative mismatch {worst:.2e} of a random vector-Jacobian product); create the DMDA "
                "with the stencil func uses (stencil_width, stencil='box'), or use jacobian='matrix-free'")
            exc.collective = True  # every rank raises it (the mismatch is reduced)
            raise exc

    def form(self, shift: float) -> None:
        """Write ``shift*M - dg/du`` (one COO insertion, which assembles the Mat)."""
        values = self.values
        np.negative(self.dgdu, out=values[:self.entries])
        if self._mass is None:
            values[self.entries:] = shift
        else:
            np.multiply(self._mass, shift, out=values[self.entries:])
        self.mat.setValuesCOO(values, addv=PETSc().InsertMode.INSERT_VALUES)
