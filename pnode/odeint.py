"""Public entry points: ``odeint``, ``odeint_adjoint`` and the ``NeuralODE`` module."""
from __future__ import annotations

import weakref
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .adjoint import AdjointFunction, Solve
from .checkpoint import Checkpoint
from .errors import ConfigurationError
from .integrator import Integrator
from .methods import resolve
from .options import ScopedOptions
from .assembled import check_jacobian, choose
from .implicit import build_problem
from .vec import check_tensor


def _check_times(t: torch.Tensor, dtype: torch.dtype) -> tuple[np.ndarray, float]:
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
        return tn.copy(), 1.0
    if (d < 0).all():
        return -tn, -1.0
    bad = int(np.argmax(d <= 0) if d[0] > 0 else np.argmax(d >= 0))
    raise ConfigurationError(
        f"t must be strictly increasing or strictly decreasing; t[{bad}]={tn[bad]:.6g}, t[{bad + 1}]={tn[bad + 1]:.6g}")


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


def _check_dae(integ: Integrator, y0: torch.Tensor, tp: np.ndarray) -> None:
    check = getattr(integ.problem, "check_consistent", None)
    if check is not None:
        check(float(tp[0]), y0.detach(), comm=integ.comm)


def _check_step(step_size, rtol, atol):
    if step_size is not None and not (float(step_size) > 0 and np.isfinite(float(step_size))):
        raise ConfigurationError(f"step_size must be a positive finite number, got {step_size!r}")
    if not (rtol > 0 and atol >= 0):
        raise ConfigurationError(f"need rtol > 0 and atol >= 0, got rtol={rtol}, atol={atol}")


class _Config:
    """The keywords shared by odeint, odeint_adjoint and NeuralODE, checked once."""

    def __init__(self, method, rtol, atol, step_size, options, options_prefix, comm,
                 implicit=None, mass=None, jacobian="auto"):
        _check_step(step_size, rtol, atol)
        self.implicit, self.mass, self.jacobian = implicit, mass, check_jacobian(jacobian)
        self.scoped = ScopedOptions(options_prefix, options)
        self.method = resolve(method, self.scoped.options)
        self.rtol, self.atol, self.step_size, self.comm = rtol, atol, step_size, comm

    def integrator(self, func, y0, params, sign, adjoint, checkpoint: Checkpoint | None,
                   s0: float) -> Integrator:
        problem = build_problem(func, self.implicit, self.mass, self.method, y0.shape, y0.dtype,
                                y0.device, params, sign)
        comm = self.comm if self.comm is not None else getattr(func, "state_comm", None)
        jacobian = (choose(self.jacobian, problem, s0, y0, comm) if self.method.implicit
                    else "matrix-free")
        return Integrator(problem, self.method, rtol=self.rtol, atol=self.atol,
                          step_size=self.step_size, options=self.scoped, comm=comm,
                          adjoint=adjoint and (checkpoint is None or checkpoint.mode != "budget"),
                          solution_only=checkpoint is not None and checkpoint.mode != "all",
                          jacobian=jacobian,
                          graph_bytes=checkpoint.graph_bytes() if adjoint and checkpoint.mode == "all" else None)


def odeint(func: Callable, y0: torch.Tensor, t: torch.Tensor, *, method: str | None = "dopri5",
           rtol: float = 1e-7, atol: float = 1e-9, step_size: float | None = None,
           options: Mapping[str, Any] | None = None, options_prefix: str | None = None,
           comm=None, implicit: Callable | None = None, mass: torch.Tensor | None = None,
           jacobian: str = "auto") -> torch.Tensor:
    """Solve ``dy/dt = func(t, y)`` with PETSc TS; returns ``y`` at ``t``, shape ``(len(t), *y0.shape)``.

    Implicit methods (``"beuler"``, ``"cn"``, ``"theta"``, ``"arkimex"``) solve
    ``mass @ y' = func(t, y)`` by Newton's method (``mass``: ``(n, n)`` or diagonal ``(n,)``,
    ``n = y0.numel()``, may be singular: an index-1 DAE whose ``y0`` must be consistent).
    ``implicit=g`` with ``method="arkimex"`` splits ``y' = g(t, y) + func(t, y)``: ``g``
    stiff (implicit), ``func`` explicit. No graph is built (see :func:`odeint_adjoint`).

    ``jacobian`` (implicit methods): ``"dense"`` assembles ``dg/du`` and solves each Newton
    step by LU; ``"blocks"`` assembles one block per sample of a batched state
    ``(B, ...)`` whose samples do not interact (point-block Jacobi, exact);
    ``"matrix-free"`` uses Jacobian-vector products and GMRES. ``"auto"``: ``"blocks"``
    when ``y0`` is batched with at most 128 values per sample and the samples are found
    independent at ``(t[0], y0)``, else ``"dense"`` for ``y0.numel() <= 256``, else
    ``"matrix-free"`` (also for CUDA states and multi-process communicators).
    """
    cfg = _Config(method, rtol, atol, step_size, options, options_prefix, comm, implicit, mass, jacobian)
    _check_state(y0)
    tp, sign = _check_times(t, y0.dtype)
    integ = cfg.integrator(func, y0.detach(), (), sign, adjoint=False, checkpoint=None, s0=float(tp[0]))
    try:
        _check_dae(integ, y0, tp)
        out = torch.empty((len(tp),) + tuple(y0.shape), dtype=y0.dtype, device=y0.device)
        with torch.no_grad():
            integ.forward(y0.detach().contiguous(), tp, out)
        return out
    finally:
        integ.destroy()


def odeint_adjoint(func: Callable, y0: torch.Tensor, t: torch.Tensor, *, method: str | None = "dopri5",
                   rtol: float = 1e-7, atol: float = 1e-9, step_size: float | None = None,
                   options: Mapping[str, Any] | None = None, options_prefix: str | None = None,
                   comm=None, checkpoint: Checkpoint | str | None = None,
                   adjoint_params: Sequence[torch.Tensor] | None = None,
                   implicit: Callable | None = None, mass: torch.Tensor | None = None,
                   jacobian: str = "auto") -> torch.Tensor:
    """Like :func:`odeint`, differentiable by PETSc's discrete adjoint (TSAdjoint).

    Gradients reach ``y0`` and the parameters of ``func`` and ``implicit`` (or
    ``adjoint_params``) from a loss on any output times; they equal backpropagation
    through the same discrete steps (for implicit methods up to the Newton and Krylov
    tolerances, see :mod:`pnode.implicit`).
    """
    cfg = _Config(method, rtol, atol, step_size, options, options_prefix, comm, implicit, mass, jacobian)
    ck = _as_checkpoint(checkpoint)
    params = _params_of(func, adjoint_params, implicit)
    _check_state(y0)
    _check_params(params, y0)
    tp, sign = _check_times(t, y0.dtype)
    integ = cfg.integrator(func, y0.detach(), params, sign, adjoint=True, checkpoint=ck, s0=float(tp[0]))
    _check_dae(integ, y0, tp)
    return AdjointFunction.apply(Solve(integ, tp, ck, owns=True), y0, *params)


def _as_checkpoint(checkpoint) -> Checkpoint:
    if checkpoint is None:
        return Checkpoint()
    if isinstance(checkpoint, str):
        return Checkpoint(checkpoint)
    if isinstance(checkpoint, Checkpoint):
        return checkpoint
    raise ConfigurationError(f"checkpoint must be a Checkpoint or 'all'/'solution', got {checkpoint!r}")


class NeuralODE(torch.nn.Module):
    """``y = NeuralODE(func, ...)(y0, t)``: a module that keeps its TS between calls.

    The TS is rebuilt only when the state's shape, dtype or device (or the grid's
    direction) changes. Keywords are those of :func:`odeint_adjoint`.
    """

    def __init__(self, func: Callable, *, method: str | None = "dopri5", rtol: float = 1e-7,
                 atol: float = 1e-9, step_size: float | None = None,
                 options: Mapping[str, Any] | None = None, options_prefix: str | None = None,
                 comm=None, checkpoint: Checkpoint | str | None = None,
                 adjoint_params: Sequence[torch.Tensor] | None = None,
                 implicit: Callable | None = None, mass: torch.Tensor | None = None,
                 jacobian: str = "auto"):
        super().__init__()
        self.func, self.implicit = func, implicit
        self._cfg = _Config(method, rtol, atol, step_size, options, options_prefix, comm, implicit, mass,
                            jacobian)
        self.checkpoint = _as_checkpoint(checkpoint)
        self._adjoint_params = tuple(adjoint_params) if adjoint_params is not None else None
        self._key = None
        self._integ: Integrator | None = None
        self._finalizer = None

    @property
    def options_prefix(self) -> str:
        return self._cfg.scoped.prefix

    def _integrator(self, y0: torch.Tensor, params, sign: float, s0: float) -> Integrator:
        key = (tuple(y0.shape), y0.dtype, y0.device, sign, tuple(id(p) for p in params))
        if key != self._key:
            if self._finalizer is not None:
                self._finalizer()
            self._integ = self._cfg.integrator(self.func, y0, params, sign, adjoint=True,
                                               checkpoint=self.checkpoint, s0=s0)
            self._finalizer = weakref.finalize(self, self._integ.destroy)
            self._key = key
        return self._integ

    @property
    def step_times(self) -> np.ndarray:
        """User times of the accepted steps of the last forward solve (start included)."""
        if self._integ is None:
            return np.empty(0)
        return self._integ.problem.sign * np.asarray(self._integ.step_times)

    @property
    def stats(self) -> dict:
        """Counts of the last forward solve (steps, rejected, newton_iterations,
        krylov_iterations) and the ``jacobian`` in use; empty before the first call. With a
        checkpoint budget, after a backward pass also ``checkpoint_states`` (the most states
        it held) and ``recomputed_steps`` (steps it took again: re-advances plus one
        recording replay per step)."""
        if self._integ is None:
            return {}
        return self._integ.stats()

    def forward(self, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        params = _params_of(self.func, self._adjoint_params, self.implicit)
        _check_state(y0)
        _check_params(params, y0)
        tp, sign = _check_times(t, y0.dtype)
        integ = self._integrator(y0.detach(), params, sign, float(tp[0]))
        _check_dae(integ, y0, tp)
        return AdjointFunction.apply(Solve(integ, tp, self.checkpoint, owns=False), y0, *params)
