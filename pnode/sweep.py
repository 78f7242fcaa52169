"""The adjoint sweep: ``TSAdjointSolve`` back through the output times, adding each output's
incoming gradient as a jump.

PETSc's adjoint variables are ``lambda`` (dL/du, on the state's layout) and ``mu`` (dL/dp,
one block of all parameters per rank). :class:`AdjointSweep` owns them for one
integrator, hands them to PETSc, reverses a number of steps at a time, adds jumps,
checks that the adjoint stays finite (once per reversed interval: one reduction) and, at
the end, sums the ranks' ``mu`` blocks. Checkpoint policies that keep PETSc's trajectory
reverse a whole solve with :meth:`AdjointSweep.run`; budgets drive the same object one
recorded step at a time on a replaying integrator.
"""
from __future__ import annotations

import numpy as np
import torch

from .comm import allreduce, allreduce_sum_
from .errors import ConvergenceError
from .integrator import Integrator
from .vec import as_vec


class AdjointSweep:
    """``lambda``/``mu`` of one integrator and the loop that reverses its steps."""

    def __init__(self, integ: Integrator):
        self.integ = integ
        prob = integ.problem
        self.lam = torch.zeros(prob.numel, dtype=prob.dtype, device=prob.device)
        self.L = as_vec(self.lam, integ.comm)
        self.mu = torch.zeros(integ.params.numel, dtype=prob.dtype, device=prob.device)
        self.M = as_vec(self.mu, integ.comm) if integ.params.numel else None
        integ.adopt(self.L, self.M)

    @classmethod
    def of(cls, integ: Integrator) -> "AdjointSweep":
        """The sweep of ``integ`` (made once, kept with it)."""
        sweep = getattr(integ, "_sweep", None)
        if sweep is None:
            sweep = integ._sweep = cls(integ)
        return sweep

    def start(self, grad_last: torch.Tensor) -> None:
        """Begin a backward pass with the incoming gradient of the last output."""
        self.lam.copy_(grad_last.reshape(-1))
        self.mu.zero_()
        self.L.stateIncrease()
        if self.M is not None:
            self.M.stateIncrease()
            self.integ.ts.setCostGradients([self.L], [self.M])
        else:
            self.integ.ts.setCostGradients([self.L])

    def reverse(self, nsteps: int, steps: tuple[int, int], times: tuple[float, float]) -> None:
        """Reverse the last ``nsteps`` steps not yet reversed (forward steps ``steps[0]`` ->
        ``steps[1]``, PETSc times ``times[0]`` -> ``times[1]``, for messages); raise if the
        adjoint is no longer finite, naming that interval."""
        integ = self.integ
        integ.adjoint_steps(nsteps)
        total = float(self.lam.sum()) + (float(self.mu.sum()) if self.M is not None else 0.0)
        if integ.comm.getSize() > 1:
            total = allreduce(total, "sum", integ.comm)
        if not abs(total) < np.inf:
            raise ConvergenceError(
                f"the adjoint (gradient) became non-finite (NaN or Inf) while reversing the steps "
                f"from t={integ._user_t(times[1]):.10g} back to t={integ._user_t(times[0]):.10g} "
                f"(steps {steps[1]} to {steps[0]}); the backward pass of func produced it",
                step=steps[1], collective=True)

    def jump(self, grad: torch.Tensor) -> None:
        """Add an output's incoming gradient to ``lambda``."""
        self.lam.add_(grad.reshape(-1))
        self.L.stateIncrease()

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum the ranks' ``mu`` blocks; returns copies of (dL/dy0, dL/dparams), flat."""
        if self.M is not None:
            allreduce_sum_(self.mu, self.integ.comm)
        return self.lam.clone(), self.mu.clone()

    def run(self, grads_out: torch.Tensor, out_steps: list[int],
            step_times: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole backward pass of the integrator's last forward solve (its output steps
        and accepted step times)."""
        g = grads_out.reshape(len(out_steps), -1)
        self.start(g[-1])
        for k in range(len(out_steps) - 1, 0, -1):
            a, b = out_steps[k - 1], out_steps[k]
            self.reverse(b - a, (a, b), (step_times[a], step_times[b]))
            self.jump(g[k - 1])
        return self.finish()

