"""Public entry points: ``odeint``, ``odeint_adjoint`` and the ``NeuralODE`` module."""
from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .adjoint import AdjointFunction, Solve
from .checkpoint import Checkpoint
from .comm import Checks, as_petsc_comm, collective_checks
from .errors import ConfigurationError
from .ijacobians import check_jacobian, choose_jacobian
from .integrator import Setup
from .methods import TS_TYPES, resolve
from .newton import Newton, as_newton
from .options import ScopedOptions
from .pool import IntegratorPool
from .problem import build_problem
from .vec import check_tensor


def _check_times(t: torch.Tensor) -> tuple[float, np.ndarray, float]:
    """(origin t[0], PETSc times measured from it (increasing), sign of the grid)."""
    if not isinstance(t, torch.Tensor):
        raise ConfigurationError(f"t must be a 1-D torch.Tensor of times, got {type(t).__name__}")
    if t.ndim != 1 or t.numel() < 2:
        raise ConfigurationError(f"t must be 1-D with at least two times, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ConfigurationError(f"t must be a floating-point tensor, got dtype {t.dtype}")
    tn = t.detach().cpu().to(torch.float64).numpy()
    if not np.isfinite(tn).all():
        raise ConfigurationError("t contains non-finite values")
    d = np.diff(tn)
    if (d > 0).all():
        sign = 1.0
    elif (d < 0).all():
        sign = -1.0
    else:
        bad = int(np.argmax(d <= 0) if d[0] > 0 else np.argmax(d >= 0))
        raise ConfigurationError(
            f"t must be strictly increasing or strictly decreasing; t[{bad}]={tn[bad]:.10g}, "
            f"t[{bad + 1}]={tn[bad + 1]:.10g}")
    s = sign * (tn - tn[0])
    # steps land on output times to an ulp or two (matched to 1e-12 relative, measured
    # from t[0]): consecutive times must be further apart than that
    gaps = np.diff(s)
    if not (gaps > 1e-10 * s[1:]).all():
        k = int(np.argmin(gaps / s[1:]))
        raise ConfigurationError(
            f"the output times t[{k}]={tn[k]:.17g} and t[{k + 1}]={tn[k + 1]:.17g} are closer than "
            f"float64 time stepping resolves {abs(s[k + 1]):.3g} from t[0] (relative gap below 1e-10)")
    return float(tn[0]), s, sign


def _check_state(y0: torch.Tensor) -> None:
    check_tensor(y0, "y0")
    if not bool(torch.isfinite(y0).all()):
        raise ConfigurationError("y0 contains non-finite values (NaN or Inf)")


def _check_params(params: Sequence[torch.Tensor], y0: torch.Tensor) -> None:
    for i, p in enumerate(params):
        if p.dtype != y0.dtype or p.device != y0.device:
            raise ConfigurationError(
                f"parameter {i} has dtype {p.dtype} on {p.device}; y0 has {y0.dtype} on {y0.device}")
        if not bool(torch.isfinite(p).all()):
            raise ConfigurationError(f"parameter {i} (shape {tuple(p.shape)}) contains non-finite values")


def _params_of(func: Callable, adjoint_params, implicit: Callable | None = None) -> tuple[torch.Tensor, ...]:
    if adjoint_params is not None:
        return tuple(adjoint_params)
    found: dict[int, torch.Tensor] = {}
    for part in (func, implicit):
        if isinstance(part, torch.nn.Module):
            found.update((id(p), p) for p in part.parameters() if p.requires_grad)
    return tuple(found.values())


def _number(value, name: str, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _check_step(step_size, rtol, atol) -> tuple[float | None, float, float]:
    step_size = _number(step_size, "step_size", allow_none=True)
    rtol, atol = _number(rtol, "rtol"), _number(atol, "atol")
    if step_size is not None and not (step_size > 0 and np.isfinite(step_size)):
        raise ConfigurationError(f"step_size must be a positive finite number, got {step_size!r}")
    if not (rtol > 0 and atol >= 0 and np.isfinite(rtol) and np.isfinite(atol)):
        raise ConfigurationError(f"need rtol > 0 and atol >= 0, got rtol={rtol}, atol={atol}")
    return step_size, rtol, atol


def _as_checkpoint(checkpoint) -> Checkpoint:
    if checkpoint is None:
        return Checkpoint()
    if isinstance(checkpoint, str):
        return Checkpoint(checkpoint)
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    raise ConfigurationError(f"checkpoint must be a Checkpoint or 'all'/'solution', got {checkpoint!r}")


class _Config:
    """The keywords shared by odeint, odeint_adjoint and NeuralODE, checked once."""

    def __init__(self, func, method, rtol, atol, step_size, options, options_prefix, comm,
                 implicit=None, mass=None, jacobian="auto", newton=None, jac=None):
        if not callable(func):
            raise ConfigurationError(f"func must be callable as func(t, y), got {type(func).__name__}")
        self.func = func
        self.step_size, self.rtol, self.atol = _check_step(step_size, rtol, atol)
        self.implicit, self.mass, self.jacobian = implicit, mass, check_jacobian(jacobian)
        self.newton, self.jac = as_newton(newton), jac
        self.scoped = ScopedOptions(options_prefix, options)
        self.method = resolve(method, self.scoped.options, self.scoped.command_line(
            ("ts_type",) + tuple(k.subtype for k in TS_TYPES.values() if k.subtype)))
        comm = comm if comm is not None else getattr(func, "state_comm", None)
        self.comm = as_petsc_comm(comm)

    def setup(self, y0: torch.Tensor, params, sign: float, s0: float) -> Setup:
        problem = build_problem(self.func, self.implicit, self.mass, self.method, y0.shape, y0.dtype,
                                y0.device, params, sign, self.jac)
        jacobian = (choose_jacobian(self.jacobian, problem, s0, y0, self.comm) if self.method.implicit
                    else "matrix-free")
        return Setup(self.func, self.implicit, self.mass, self.method, tuple(y0.shape), y0.dtype,
                     y0.device, tuple(params), sign, self.rtol, self.atol, self.step_size,
                     self.scoped, self.comm, jacobian, self.newton, self.jac)

    def check_call(self, checks: Checks, y0, t, params=()) -> tuple[float, np.ndarray, float]:
        """The per-call checks (under :func:`collective_checks` on several ranks)."""
        _check_state(y0)
        _check_params(params, y0)
        origin, tp, sign = _check_times(t)
        checks.agree("methods", self.method.name, self.step_size, self.rtol, self.atol)
        checks.agree("output times", origin, tp)
        return origin, tp, sign

    def rhs_at(self):
        """``(t, y) -> dy/dt`` in user time, for gradients with respect to ``t``."""
        if self.mass is not None:
            return None
        if self.implicit is None:
            return self.func
        return lambda t, y: self.func(t, y) + self.implicit(t, y)


def _check_dae(setup: Setup, y0: torch.Tensor, origin: float) -> None:
    problem = setup.problem()
    check = getattr(problem, "check_consistent", None)
    if check is not None:
        problem.origin = origin
        check(0.0, y0.detach(), comm=setup.comm)


def odeint(func: Callable, y0: torch.Tensor, t: torch.Tensor, *, method: str | None = "dopri5",
           rtol: float = 1e-7, atol: float = 1e-9, step_size: float | None = None,
           options: Mapping[str, Any] | None = None, options_prefix: str | None = None,
           comm=None, implicit: Callable | None = None, mass: torch.Tensor | None = None,
           jacobian: str = "auto", newton: Newton | dict | None = None,
           jac: Callable | None = None) -> torch.Tensor:
    """Solve ``dy/dt = func(t, y)`` with PETSc TS; returns ``y`` at ``t``, shape ``(len(t), *y0.shape)``.

    Implicit methods (``"beuler"``, ``"cn"``, ``"theta"``, ``"arkimex"``; forward only:
    ``"bdf"``, ``"rosw"``) solve ``mass @ y' = func(t, y)`` by Newton's method (``mass``:
    ``(n, n)`` or diagonal ``(n,)``, ``n = y0.numel()``, may be singular: an index-1 DAE
    whose ``y0`` must be consistent). ``implicit=g`` with ``method="arkimex"`` splits
    ``y' = g(t, y) + func(t, y)``: ``g`` stiff (implicit), ``func`` explicit. No graph is
    built (see :func:`odeint_adjoint`).

    ``jacobian`` (implicit methods): ``"dense"`` assembles ``dg/du`` and solves each Newton
    step by LU; ``"blocks"`` assembles one block per sample of a batched state
    ``(B, ...)`` whose samples do not interact (point-block Jacobi, exact);
    ``"matrix-free"`` uses Jacobian-vector products and GMRES. ``"auto"``: ``"blocks"``
    when ``y0`` is batched with at most 128 values per sample and the samples are found
    independent at ``(t[0], y0)``, else ``"dense"`` for ``y0.numel() <= 256``, else
    ``"matrix-free"`` (also for CUDA states and multi-process communicators). ``jac(t, y)``
    may give ``dg/du`` itself (``(n, n)``, or ``(B, m, m)`` blocks with ``"blocks"``; checked
    once against autograd). ``newton`` (a :class:`pnode.Newton` or a dict of its fields):
    Jacobian reuse and the Newton stopping test, see :mod:`pnode.newton`.

    ``options`` go to PETSc's options database under the object's prefix, like a command
    line: they are code (a ``*_python_type`` imports a class, a monitor writes a file) and
    are rejected when they name Python types (see :mod:`pnode.options`). One key is
    pnode's own: ``adjoint_ksp_rtol``, the adjoint's linear tolerance of implicit methods
    (default: the forward's ``ksp_rtol``; docs/implicit.md).
    """
    cfg = _Config(func, method, rtol, atol, step_size, options, options_prefix, comm, implicit, mass, jacobian,
                  newton, jac)
    with collective_checks(cfg.comm) as checks:
        origin, tp, sign = cfg.check_call(checks, y0, t)
        setup = cfg.setup(y0.detach(), (), sign, 0.0)
    _check_dae(setup, y0, origin)
    out = torch.empty((len(tp),) + tuple(y0.shape), dtype=y0.dtype, device=y0.device)
    integ = setup.integrator()
    try:
        with torch.no_grad():
            integ.forward(y0.detach().contiguous(), origin, tp, out)
        return out
    finally:
        integ.destroy()


def _check_adjoint(method) -> None:
    if not method.adjoint:
        have = ", ".join(name for name, kind in TS_TYPES.items() if kind.adjoint)
        raise ConfigurationError(
            f"method {method.name!r} (TS type {method.ts_type}) has no discrete adjoint in PETSc; "
            f"use it with pnode.odeint (no gradients), or a type with an adjoint: {have}")


def odeint_adjoint(func: Callable, y0: torch.Tensor, t: torch.Tensor, *, method: str | None = "dopri5",
                   rtol: float = 1e-7, atol: float = 1e-9, step_size: float | None = None,
                   options: Mapping[str, Any] | None = None, options_prefix: str | None = None,
                   comm=None, checkpoint: Checkpoint | str | None = None,
                   adjoint_params: Sequence[torch.Tensor] | None = None,
                   implicit: Callable | None = None, mass: torch.Tensor | None = None,
                   jacobian: str = "auto", newton: Newton | dict | None = None,
                   jac: Callable | None = None) -> torch.Tensor:
    """Like :func:`odeint`, differentiable by PETSc's discrete adjoint (TSAdjoint).

    Gradients reach ``y0`` and the parameters of ``func`` and ``implicit`` (or
    ``adjoint_params``) from a loss on any output times; they equal backpropagation
    through the same discrete steps (for implicit methods up to the Newton and Krylov
    tolerances, see :mod:`pnode.implicit`). A ``t`` that requires grad gets the
    sensitivities of the exact flow at the computed solution (as torchdiffeq's).
    """
    cfg = _Config(func, method, rtol, atol, step_size, options, options_prefix, comm, implicit, mass, jacobian,
                  newton, jac)
    _check_adjoint(cfg.method)
    ck = _as_checkpoint(checkpoint)
    params = _params_of(func, adjoint_params, implicit)
    with collective_checks(cfg.comm) as checks:
        origin, tp, sign = cfg.check_call(checks, y0, t, params)
        setup = cfg.setup(y0.detach(), params, sign, 0.0)
    _check_dae(setup, y0, origin)
    pool = IntegratorPool(setup)
    if not _differentiable(y0, t, params):
        return _plain_solve(pool, y0, origin, tp, owns_pool=True)[0]
    solve = Solve(pool, ck.policy(), origin, tp, params, owns_pool=True, rhs_at=cfg.rhs_at())
    return AdjointFunction.apply(solve, t, y0, *params)


def _differentiable(y0, t, params) -> bool:
    return torch.is_grad_enabled() and (y0.requires_grad or t.requires_grad
                                        or any(p.requires_grad for p in params))


def _plain_solve(pool: IntegratorPool, y0, origin, tp, owns_pool: bool):
    """A solve nobody will differentiate: no trajectory, nothing kept. Returns (the
    output, the integrator that ran, for its statistics)."""
    setup = pool.setup
    out = torch.empty((len(tp),) + tuple(setup.shape), dtype=setup.dtype, device=setup.device)
    integ = pool.lease(None)
    try:
        with torch.no_grad():
            integ.forward(y0.detach().contiguous(), origin, tp, out)
    finally:
        pool.give_back(integ)
        if owns_pool:
            pool.close()
    return out, integ


class NeuralODE(torch.nn.Module):
    """``y = NeuralODE(func, ...)(y0, t)``: a module that keeps its TS between calls.

    Its integrators are rebuilt only when the state's shape, dtype or device (or the
    grid's direction) changes. Every call owns what its backward pass needs until that
    pass runs (or its output is dropped): calls in between (a second batch, an evaluation
    under ``torch.no_grad()``) use other integrators, and a call that failed leaves the
    module usable. Keywords are those of :func:`odeint_adjoint`; a method without a
    discrete adjoint (``"bdf"``, ``"rosw"``) serves calls that need no gradient only.
    """

    def __init__(self, func: Callable, *, method: str | None = "dopri5", rtol: float = 1e-7,
                 atol: float = 1e-9, step_size: float | None = None,
                 options: Mapping[str, Any] | None = None, options_prefix: str | None = None,
                 comm=None, checkpoint: Checkpoint | str | None = None,
                 adjoint_params: Sequence[torch.Tensor] | None = None,
                 implicit: Callable | None = None, mass: torch.Tensor | None = None,
                 jacobian: str = "auto", newton: Newton | dict | None = None,
                 jac: Callable | None = None):
        super().__init__()
        self.func, self.implicit = func, implicit
        self._cfg = _Config(func, method, rtol, atol, step_size, options, options_prefix, comm,
                            implicit, mass, jacobian, newton, jac)
        self.checkpoint = _as_checkpoint(checkpoint)
        self._policy = self.checkpoint.policy()
        self._adjoint_params = tuple(adjoint_params) if adjoint_params is not None else None
        self._key = None
        self._pool: IntegratorPool | None = None
        self._last: dict = {}

    @property
    def options_prefix(self) -> str:
        return self._cfg.scoped.prefix

    def _new_setup(self, checks: Checks, y0: torch.Tensor, params, sign: float):
        """(key, a Setup) when the state's shape, dtype, device, the grid's direction or the
        parameters changed, else None; whether to rebuild is decided by every rank."""
        key = (tuple(y0.shape), y0.dtype, y0.device, sign, tuple(id(p) for p in params))
        rebuild = key != self._key
        checks.all_or_none("a change of the state's shape, dtype or device (a new solver)", rebuild)
        return (key, self._cfg.setup(y0, params, sign, 0.0)) if rebuild else None

    def _pool_for(self, new) -> IntegratorPool:
        if new is not None:
            if self._pool is not None:
                self._pool.close()
            self._key, self._pool = new[0], IntegratorPool(new[1])
        return self._pool

    @property
    def step_times(self) -> np.ndarray:
        """User times of the accepted steps of the last forward solve (start included)."""
        return self._last.get("step_times", np.empty(0))

    @property
    def stats(self) -> dict:
        """Counts of the last forward solve (steps, rejected, newton_iterations,
        krylov_iterations; implicit methods: jacobian_evaluations, jacobian_retries and the
        newton_test), the ``ts_type``/``ts_subtype`` that ran and the ``jacobian`` in use;
        empty before the first call. With a checkpoint budget, after a backward pass
        also ``checkpoint_states`` (the most states it held) and ``recomputed_steps``
        (steps it took again: re-advances plus one recording replay per step)."""
        return self._last.get("stats", {})

    def forward(self, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        params = _params_of(self.func, self._adjoint_params, self.implicit)
        with collective_checks(self._cfg.comm) as checks:
            origin, tp, sign = self._cfg.check_call(checks, y0, t, params)
            new = self._new_setup(checks, y0.detach(), params, sign)
        pool = self._pool_for(new)
        _check_dae(pool.setup, y0, origin)
        if not _differentiable(y0, t, params):
            out, integ = _plain_solve(pool, y0, origin, tp, owns_pool=False)
            self._remember(integ.stats(), integ.step_times, origin, sign)
            return out
        _check_adjoint(self._cfg.method)  # forward-only types (bdf, rosw) run under no_grad
        solve = Solve(pool, self._policy, origin, tp, params, owns_pool=False, rhs_at=self._cfg.rhs_at())
        out = AdjointFunction.apply(solve, t, y0, *params)
        self._remember(solve.record.stats, solve.record.step_times, origin, sign)
        return out

    def _remember(self, stats: dict, step_times, origin: float, sign: float) -> None:
        self._last = {"stats": stats, "step_times": origin + sign * np.asarray(step_times)}
