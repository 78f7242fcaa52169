"""The autograd bridge: forward is a TS solve, backward is a TS adjoint solve."""
from __future__ import annotations

import numpy as np
import torch

from .checkpoint import Checkpoint
from .errors import PnodeError
from .integrator import Integrator
from .revolve import BudgetedAdjoint


class Solve:
    """One differentiable solve on an :class:`Integrator` (which it may own)."""

    def __init__(self, integrator: Integrator, t_petsc: np.ndarray, checkpoint: Checkpoint,
                 owns: bool):
        self.integrator, self.t, self.checkpoint, self.owns = integrator, t_petsc, checkpoint, owns
        self.runner = BudgetedAdjoint(integrator, checkpoint) if checkpoint.mode == "budget" else integrator

    def forward(self, y0: torch.Tensor) -> torch.Tensor:
        prob = self.integrator.problem
        out = torch.empty((len(self.t),) + prob.shape, dtype=prob.dtype, device=prob.device)
        self.runner.forward(y0, self.t, out)
        return out

    def backward(self, grad_out: torch.Tensor):
        lam, mu = self.runner.adjoint(grad_out)
        prob = self.integrator.problem
        gy0 = lam.view(prob.shape).clone()
        gparams = [g.clone() for g in self.runner.pbuf.unpack(mu)]
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
        if solve is None:
            raise PnodeError("a pnode solve can be differentiated once (its backward pass consumes "
                             "the trajectory and checkpoints); retain_graph=True does not keep "
                             "them: solve again for another backward pass")
        gy0, gparams = solve.backward(grad_out.contiguous())
        ctx.solve = None
        return (None, gy0, *gparams)

