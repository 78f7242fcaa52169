"""The autograd bridge: forward is a TS solve, backward is a TS adjoint solve.

A :class:`Solve` is one differentiable call. Its checkpoint policy's forward pass returns
a record that owns what the backward pass needs; the Solve keeps it until
``backward`` or until autograd drops the graph (then the record is released at once:
trajectories go back to the pool, checkpoint files are removed). The parameters'
version counters are noted after the forward pass: a parameter changed in place before
the backward pass (an optimiser step) would make a recomputing policy differentiate
another function, so that raises, as autograd does for its own saved tensors.
"""
from __future__ import annotations

import numpy as np
import torch

from .checkpoint import CheckpointPolicy, Recorded
from .comm import allreduce
from .errors import ConfigurationError, PnodeError
from .pool import IntegratorPool


class Solve:
    """One differentiable solve with ``policy`` on integrators from ``pool``."""

    def __init__(self, pool: IntegratorPool, policy: CheckpointPolicy, origin: float,
                 t_petsc: np.ndarray, params: tuple[torch.Tensor, ...], owns_pool: bool,
                 rhs_at=None):
        self.pool, self.policy, self.origin, self.t = pool, policy, origin, t_petsc
        self.params, self.owns_pool, self.rhs_at = params, owns_pool, rhs_at
        self.record: Recorded | None = None
        self.versions: list[int] = []

    def forward(self, y0: torch.Tensor) -> torch.Tensor:
        setup = self.pool.setup
        out = torch.empty((len(self.t),) + tuple(setup.shape), dtype=setup.dtype, device=setup.device)
        self.record = self.policy.forward(self.pool, y0, self.origin, self.t, out)
        self.versions = [p._version for p in self.params]
        return out

    def backward(self, grad_out: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        changed = [i for i, (p, v) in enumerate(zip(self.params, self.versions)) if p._version != v]
        if changed:
            self.release()
            raise PnodeError(
                f"parameter(s) {changed} were modified in place after the forward solve and before "
                "its backward pass (an optimiser step between two losses' backward passes?); "
                "the gradient would be that of other parameters: call backward before changing "
                "them, or solve again")
        record, self.record = self.record, None
        lam, mu = record.backward(grad_out)
        setup = self.pool.setup
        gparams = [g.clone() for g in _unflatten(self.params, mu)]
        return lam.view(setup.shape), gparams

    def release(self) -> None:
        if self.record is not None:
            record, self.record = self.record, None
            record.release()

    def __del__(self):
        self.release()
        if self.owns_pool:
            self.pool.close()


def _unflatten(params, flat: torch.Tensor) -> list[torch.Tensor]:
    out, off = [], 0
    for p in params:
        out.append(flat[off:off + p.numel()].view(p.shape))
        off += p.numel()
    return out


class AdjointFunction(torch.autograd.Function):
    """``out = AdjointFunction.apply(solve, t, y0, *params)``; ``t`` gets a gradient when it
    requires one (the sensitivity of the exact flow at the computed solution)."""

    @staticmethod
    def forward(ctx, solve: Solve, t: torch.Tensor, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.solve = solve
        out = solve.forward(y0.detach())
        ctx.time_grad = t.requires_grad
        if ctx.time_grad:
            ctx.save_for_backward(out, t)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        solve = ctx.solve
        if solve is None:
            raise PnodeError("a pnode solve can be differentiated once (its backward pass consumes "
                             "the trajectory and checkpoints); retain_graph=True does not keep "
                             "them: solve again for another backward pass")
        gy0, gparams = solve.backward(grad_out.contiguous())
        gt = None
        if ctx.time_grad:
            out, t = ctx.saved_tensors
            gt = _time_gradient(solve, t, out, grad_out, gy0)
        ctx.solve = None
        return (None, gt, gy0, *gparams)


def _time_gradient(solve: Solve, t: torch.Tensor, out: torch.Tensor, grad_out: torch.Tensor,
                   gy0: torch.Tensor) -> torch.Tensor:
    """dL/dt_k = <g_k, f(t_k, y_k)> for k >= 1 and dL/dt_0 = -<dL/dy0 - g_0, f(t_0, y_0)>
    (``g_k`` the incoming gradient of output ``k``): the derivatives of the exact flow,
    evaluated at the discrete solution, as torchdiffeq gives them."""
    if solve.rhs_at is None:
        raise ConfigurationError("gradients with respect to t are not available for this problem")
    dots = []
    with torch.no_grad():
        for k in range(len(t)):
            f = solve.rhs_at(t[k].detach(), out[k])
            w = grad_out[k] if k else grad_out[0] - gy0
            dots.append(float((w * f).sum()))
    comm = solve.pool.setup.comm
    if comm.getSize() > 1:
        dots = [allreduce(d, "sum", comm) for d in dots]
    return torch.tensor(dots, dtype=t.dtype, device=t.device)
