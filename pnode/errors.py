"""pnode's exception types, PETSc's converged reasons in words and failure diagnostics."""
from __future__ import annotations


class PnodeError(RuntimeError):
    """Base class of every error pnode raises on purpose."""


class ConfigurationError(PnodeError, ValueError):
    """A bad argument: shape, dtype, time grid, method name, option, budget..."""


class BuildMismatchError(PnodeError):
    """The PETSc build cannot hold the user's tensors (scalar type, precision, CUDA)."""


class PnodeWarning(UserWarning):
    """Something pnode did not do as asked, without failing (e.g. an option nobody read)."""


class ConvergenceError(PnodeError):
    """A solve failed: diverged nonlinear/linear solve, collapsing step, non-finite state.

    ``collective`` is True when every rank of the solve raises it together (a verdict
    reached by a reduction), so that no rank needs to abort the others. ``last_good``:
    for a non-finite state, ``(time, state)`` of the last output time reached with a
    finite state (None otherwise)."""

    collective = False
    last_good = None

    def __init__(self, message: str, *, time: float | None = None, step: int | None = None,
                 reason: str | None = None, collective: bool = False):
        self.collective = collective
        where = []
        if time is not None:
            where.append(f"t={time:.10g}")
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


def petsc_error_words(exc) -> str:
    """The last line of a petsc4py error, or words for the codes pnode knows."""
    if getattr(exc, "ierr", None) == 72:
        return "a non-finite value (NaN or Inf) appeared"
    lines = [ln.split("] ", 1)[-1] for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else str(exc)


def failure_detail(ts, reason: int) -> tuple[str, str]:
    """(reason in words, hint) for a failed TS solve or adjoint solve; for implicit
    methods the last Newton and linear solves are described too."""
    words = ts_reason(reason)
    prefix = "-" + (ts.getOptionsPrefix() or "")
    implicit = ts.getType() not in ("rk", "euler", "ssp")
    if reason == -1 and implicit:
        snes = ts.getSNES()
        words += f"; last Newton solve: {snes_reason(snes.getConvergedReason())}"
        ksp = snes.getKSP()
        if int(ksp.getConvergedReason()) < 0:
            words += f"; its linear solve: KSP reason {int(ksp.getConvergedReason())}"
        failures = ts.getSNESFailures()
        if failures > 1:  # PETSc cut the step after each failure: smaller steps did not help
            hint = (f"Newton failed {failures} times in this solve although the step was cut after "
                    f"each failure (limit {prefix}ts_max_snes_failures): allow more failures or "
                    f"Newton iterations ({prefix}snes_max_it), tighten rtol/atol, add a "
                    f"preconditioner ({prefix}pc_type ...) or try another tableau; check that the "
                    "implicit function is smooth")
        else:
            hint = (f"Newton did not converge: try a smaller step_size, an adaptive method "
                    f"(method='arkimex'), more iterations ({prefix}snes_max_it) or a preconditioner "
                    f"({prefix}pc_type ...); check that the implicit function is smooth")
    elif reason == -2:
        hint = ("the step size collapsed after repeated rejections: loosen rtol/atol, raise "
                f"{prefix}ts_max_reject or check the problem for a singularity")
    elif reason in (-3, -4):
        hint = (f"the linear solve diverged: raise {prefix}ksp_max_it, add a preconditioner "
                f"({prefix}pc_type ...) or check that shift*M - dg/du is nonsingular")
    elif implicit:
        hint = "try tighter tolerances or a smaller step"
    else:
        hint = "try tighter tolerances, a smaller step, an implicit method or another preconditioner"
    return words, hint
