"""pnode's exception types and PETSc converged reasons in words."""
from __future__ import annotations


class PnodeError(RuntimeError):
    """Base class of every error pnode raises on purpose."""


class ConfigurationError(PnodeError, ValueError):
    """A bad argument: shape, dtype, time grid, method name, option, budget..."""


class BuildMismatchError(PnodeError):
    """The PETSc build cannot hold the user's tensors (scalar type, precision, CUDA)."""


class ConvergenceError(PnodeError):
    """A solve failed: diverged nonlinear/linear solve, collapsing step, non-finite state."""

    def __init__(self, message: str, *, time: float | None = None, step: int | None = None,
                 reason: str | None = None):
        where = []
        if time is not None:
            where.append(f"t={time:.6g}")
        if step is not None:
            where.append(f"step {step}")
        if reason:
            where.append(f"reason: {reason}")
        super().__init__(message + (f" ({', '.join(where)})" if where else ""))
        self.time, self.step, self.reason = time, step, reason


_TS_REASONS = {
    -1: "TS_DIVERGED_NONLINEAR_SOLVE: the nonlinear solve failed too many times",
    -2: "TS_DIVERGED_STEP_REJECTED: too many rejected steps (the step size collapsed)",
    -3: "TS_FORWARD_DIVERGED_LINEAR_SOLVE",
    -4: "TS_ADJOINT_DIVERGED_LINEAR_SOLVE",
    1: "TS_CONVERGED_TIME", 2: "TS_CONVERGED_ITS", 3: "TS_CONVERGED_USER", 4: "TS_CONVERGED_EVENT",
    5: "TS_CONVERGED_PSEUDO_FATOL", 6: "TS_CONVERGED_PSEUDO_FRTOL",
}

_SNES_REASONS = {
    -1: "SNES_DIVERGED_FUNCTION_DOMAIN", -2: "SNES_DIVERGED_FUNCTION_COUNT",
    -3: "SNES_DIVERGED_LINEAR_SOLVE: the Krylov solve failed", -4: "SNES_DIVERGED_FNORM_NAN",
    -5: "SNES_DIVERGED_MAX_IT: Newton did not converge", -6: "SNES_DIVERGED_LINE_SEARCH",
    -7: "SNES_DIVERGED_INNER", -8: "SNES_DIVERGED_LOCAL_MIN", -9: "SNES_DIVERGED_DTOL",
    -10: "SNES_DIVERGED_JACOBIAN_DOMAIN", -11: "SNES_DIVERGED_TR_DELTA",
}


def ts_reason(code: int) -> str:
    """TSConvergedReason code -> words."""
    return _TS_REASONS.get(int(code), f"TS converged reason {int(code)}")


def snes_reason(code: int) -> str:
    """SNESConvergedReason code -> words."""
    return _SNES_REASONS.get(int(code), f"SNES converged reason {int(code)}")
