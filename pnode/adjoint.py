"""The autograd bridge: forward is a TS solve, backward is a TS adjoint solve."""
from __future__ import annotations

import numpy as np
import torch

from .checkpoint import Checkpoint
from .integrator import Integrator
from .jacobians import ParamBuffer


class Solve:
    """One differentiable solve on an :class:`Integrator` (which it may own)."""

    def __init__(self, integrator: Integrator, t_petsc: np.ndarray, checkpoint: Checkpoint,
                 owns: bool):
        self.integrator, self.t, self.checkpoint, self.owns = integrator, t_petsc, checkpoint, owns

    def forward(self, y0: torch.Tensor) -> torch.Tensor:
        prob = self.integrator.problem
        out = torch.empty((len(self.t),) + prob.shape, dtype=prob.dtype, device=prob.device)
        if self.checkpoint.mode == "budget":
            from .revolve import BudgetedAdjoint

            self.budgeted = BudgetedAdjoint(self.integrator, self.checkpoint)
            self.budgeted.forward(y0, self.t, out)
        else:
            self.integrator.forward(y0, self.t, out)
        return out

    def backward(self, grad_out: torch.Tensor):
        if self.checkpoint.mode == "budget":
            lam, mu = self.budgeted.adjoint(grad_out)
        else:
            lam, mu = self.integrator.adjoint(grad_out)
        prob = self.integrator.problem
        gy0 = lam.view(prob.shape).clone()
        gparams = [g.clone() for g in self.integrator.pbuf.unpack(mu)]
        return gy0, gparams

    def __del__(self):
        if self.owns:
            self.integrator.destroy()


class AdjointFunction(torch.autograd.Function):
    """``out = AdjointFunction.apply(solve, y0, *params)``."""

    @staticmethod
    def forward(ctx, solve: Solve, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.solve = solve
        return solve.forward(y0.detach())

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        solve = ctx.solve
        gy0, gparams = solve.backward(grad_out.contiguous())
        ctx.solve = None
        return (None, gy0, *gparams)


__all__ = ["AdjointFunction", "Solve", "ParamBuffer"]
