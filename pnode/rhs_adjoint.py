"""Matrix-free PETSc shells for the adjoint: ``(df/du)^T v`` and ``(df/dp)^T v``.

PETSc's adjoint asks, stage by stage, for the RHS Jacobian at a state (a callback that
records the state) and then for ``J^T v`` and ``Jp^T v`` with the same ``v``. One
backward pass through ``f``'s graph at that stage answers both: the state part goes to
PETSc's output vector in place, the parameter part is kept for the ``Jp^T v`` request
that follows. (Measured on the spiral MLP: a VJP by ``torch.autograd.grad`` ~270 us
against ~780 us for ``torch.func.vjp``; the graph recorded in the forward pass and a
direct engine call, :mod:`pnode.tape`, bring it to ~80 us.)
"""
from __future__ import annotations

import torch

from .guard import CallbackGuard
from .matop import shell_mat
from .params import ParamBuffer
from .tape import StageTape, engine_vjp
from .vec import ViewCache


class AdjointShells:
    """The RHS Jacobian and parameter Jacobian shells of one problem.

    With a :class:`pnode.tape.StageTape`, a stage whose graph was recorded is
    differentiated without evaluating ``f`` again; otherwise ``f`` is re-run with a graph.
    """

    def __init__(self, problem, comm, params: ParamBuffer, tape: StageTape | None, views: ViewCache,
                 guard: CallbackGuard):
        self.problem = problem
        self.params = params
        self.tape = tape
        self.views = views  # cleared by the owner before each solve
        self._inputs = params.params
        self._t = 0.0
        self._u = None
        # (v's handle, v's state, parameter gradients) of the last J^T v, for the Jp^T v
        # that follows; packed straight into Jp's output, which saves a copy (~8 us a stage)
        self._stash = None
        n = problem.numel
        self.J = shell_mat(_Transposer(self.state_vjp), n, n, comm, guard)
        self.Jp = shell_mat(_Transposer(self.param_vjp), n, params.numel, comm, guard)

    def at(self, ts, t, u, J, P=None) -> None:
        """RHSJacobian callback: remember where the Jacobian is to be applied."""
        self._t = t
        self._u = u
        self._stash = None

    def at_p(self, ts, t, u, Jp) -> None:
        """RHSJacobianP callback."""
        if self._u is not u or self._t != t:
            self._t, self._u = t, u
            self._stash = None

    def _vjp(self, v_vec):
        prob = self.problem
        x = self.views.get(self._u, "r", prob.shape)
        v = self.views.get(v_vec, "r", prob.shape)
        grads = self.tape.vjp(self._t, x, self._inputs, v) if self.tape is not None else None
        if grads is None:
            with torch.enable_grad():
                leaf = x.detach().requires_grad_(True)
                f = prob.rhs(self._t, leaf)
            grads = engine_vjp(f, (leaf,) + self._inputs, v, keep_graph=False)
        return grads

    def state_vjp(self, v_vec, out_vec) -> None:
        grads = self._vjp(v_vec)
        out = self.views.get(out_vec, "rw", self.problem.shape)
        if grads[0] is None:
            out.zero_()
        else:
            out.copy_(grads[0])
        self._stash = (v_vec.handle, v_vec.stateGet(), grads[1:])

    def param_vjp(self, v_vec, out_vec) -> None:
        stash, self._stash = self._stash, None
        if stash is not None and stash[0] == v_vec.handle and stash[1] == v_vec.stateGet():
            grads = stash[2]
        else:
            grads = self._vjp(v_vec)[1:]
        self.params.pack(grads, self.views.get(out_vec))

    def destroy(self) -> None:
        self.J.destroy()
        self.Jp.destroy()


class _Transposer:
    """Python context of a shell Mat that only knows how to apply its transpose."""

    def __init__(self, fn):
        self.fn = fn

    def multTranspose(self, mat, x, y):
        self.fn(x, y)
