"""Torch models trained by PETSc TAO, with the parameters in one Vec split over the ranks.

Public API (``pnode.solvers``)::

    objective = Objective(closure)                       # closure() -> this rank's scalar loss
    objective = Objective(residual=fn, jacobian="shell")  # fn() -> this rank's residual rows
    solver = TaoSolver(model, objective, tao_type="lmvm", lmvm="sr1", comm=None,
                       options={"tao_gatol": 1e-8}, options_prefix="fit_", bounds=None,
                       progress=True, checkpoint=None, checkpoint_every=0)
    result = solver.solve(max_it=100)   # TaoResult(reason, words, converged, iterations, loss, gradient_norm)
    solver.history["loss"]; solver.state_dict(); solver.load_state_dict(state)
    solver.save(path); solver.load(path); solver.destroy()
    minimize(model, closure, **kwargs) -> TaoResult;  tao_reason(code) -> words

``model`` is an ``nn.Module``, a list of tensors or a :class:`pnode.params.ParamVec`. The
model is replicated on every rank of ``comm``; its parameters live in a ParamVec whose
blocks are split over the ranks, so TAO's state (quasi-Newton pairs, Krylov vectors) is
split too. Each evaluation all-gathers the point into the model, runs the closure and
reduce-scatters the ranks' gradients (``Objective(reduce="sum")``: every rank returns its
shard's share of the loss).

Every TAO, KSP, PC and Mat option is read under ``options_prefix`` (``-fit_tao_type ntr``,
``-fit_tao_ntr_ksp_type gltr``, ``-fit_tao_lmvm_mat_type lmvmsymbroyden``), the command line
winning over ``options`` and over the keyword arguments. Second-order types (``nls``,
``ntr``, ``ntl``, ``bnls``, ``bntr``, ``bntl``, ``tron``, ...) get a Hessian shell whose
product is a Hessian-vector product by double backward; ``brgn`` (Gauss-Newton,
``-tao_brgn_regularization_type lm`` for Levenberg-Marquardt) and ``pounders`` get the
residual vector and its Jacobian as a JVP/VJP shell (or assembled, ``jacobian="dense"``).
A non-finite loss or gradient raises :class:`NonFiniteObjectiveError` with the model and
the solution Vec at the last accepted iterate. The TAO state itself (quasi-Newton
history) does not survive :meth:`TaoSolver.save`; the iterate, the iteration count, the
history and the last trust radius do.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch

from pnode.comm import is_root
from pnode.errors import ConfigurationError
from pnode.guard import CallbackGuard
from pnode.matop import shell_mat
from pnode.options import ScopedOptions
from pnode.startup import PETSc

from .monitor import History, Progress
from .objective import Evaluator, Objective, as_param_vec, host_rows

# short names of PETSc's limited-memory matrices (``lmvm=``)
LMVM_TYPES = {"bfgs": "lmvmbfgs", "dbfgs": "lmvmdbfgs", "dfp": "lmvmdfp", "ddfp": "lmvmddfp",
              "dqn": "lmvmdqn", "sr1": "lmvmsr1", "broyden": "lmvmbroyden",
              "badbroyden": "lmvmbadbroyden", "symbroyden": "lmvmsymbroyden",
              "symbadbroyden": "lmvmsymbadbroyden", "diagbroyden": "lmvmdiagbroyden"}
# the option naming the LMVM matrix type of each quasi-Newton TAO type
_LMVM_OPTION = {"lmvm": "tao_lmvm_mat_type", "blmvm": "tao_blmvm_mat_type", "bqnls": "tao_bqnls_mat_type",
                "bqnkls": "tao_bqnk_mat_type", "bqnktr": "tao_bqnk_mat_type", "bqnktl": "tao_bqnk_mat_type"}
# Newton types whose PC would default to one a shell Hessian cannot serve
_NEWTON_PC = {"nls": "tao_nls_pc_type", "ntr": "tao_ntr_pc_type", "ntl": "tao_ntl_pc_type"}
_LEAST_SQUARES = ("brgn", "pounders")
_TRUST_REGION = ("ntr", "ntl", "bntr", "bntl", "bqnktr", "bqnktl", "tron", "pounders")

_REASONS = {
    3: "CONVERGED_GATOL: the gradient norm fell below gatol",
    4: "CONVERGED_GRTOL: the gradient norm relative to |f| fell below grtol",
    5: "CONVERGED_GTTOL: the gradient norm relative to the first one fell below gttol",
    6: "CONVERGED_STEPTOL: the step (or trust radius) fell below steptol",
    7: "CONVERGED_MINF: the objective fell below fmin",
    8: "CONVERGED_USER: stopped by a user test",
    0: "ITERATING: still iterating",
    -2: "DIVERGED_MAXITS: the iteration limit was reached",
    -4: "DIVERGED_NAN: a NaN or Inf appeared",
    -5: "DIVERGED_MAXFCN: the limit of objective evaluations was reached",
    -6: "DIVERGED_LS_FAILURE: the line search failed to find a decrease",
    -7: "DIVERGED_TR_REDUCTION: the trust region could not be reduced further",
    -8: "DIVERGED_USER: stopped by a user test",
}


def tao_reason(code: int) -> str:
    """A TaoConvergedReason code in words."""
    return _REASONS.get(int(code), f"TAO converged reason {int(code)}")


def tao_types() -> list[str]:
    """The TAO types this PETSc offers."""
    return sorted({v for k, v in vars(PETSc().TAO.Type).items() if not k.startswith("_") and isinstance(v, str)})


@dataclass
class TaoResult:
    """How a :meth:`TaoSolver.solve` ended."""

    reason: int
    words: str
    iterations: int  # total, over resumes
    loss: float
    gradient_norm: float

    @property
    def converged(self) -> bool:
        """True for a CONVERGED_* reason (an iteration limit is not convergence)."""
        return self.reason > 0


class TaoSolver:
    """A PETSc TAO solver minimising an :class:`Objective` over a model's parameters.

    See the module docstring for the options and the types. ``bounds=(lower, upper)``
    (floats, None for unbounded, or flat tensors of all parameters) go to the
    bound-constrained types. ``checkpoint`` is a file that :meth:`save` writes every
    ``checkpoint_every`` iterations (rank 0); :meth:`load` resumes from it.
    ``callback(solver)`` runs on every rank after each iteration (the iterate is
    ``solver.tao.getSolution()``; the model may hold a line-search trial point).
    """

    def __init__(self, params, objective: Objective | Callable[[], torch.Tensor], *, tao_type: str = "lmvm",
                 lmvm: str | None = None, comm=None, options: Mapping[str, Any] | None = None,
                 options_prefix: str | None = None, bounds: tuple | None = None, max_it: int = 100,
                 progress: bool = True, checkpoint: str | os.PathLike | None = None,
                 checkpoint_every: int = 0, callback: Callable[["TaoSolver"], None] | None = None):
        if callable(objective) and not isinstance(objective, Objective):
            objective = Objective(objective)
        self.pvec = as_param_vec(params, comm)
        self.evaluator = Evaluator(objective, self.pvec)
        self.objective = objective
        self.opts = ScopedOptions(options_prefix, options)
        self.tao_type = self._check_type(self.opts.get("tao_type") or tao_type)
        self.max_it = int(max_it)
        self.progress, self.checkpoint, self.checkpoint_every = progress, checkpoint, int(checkpoint_every)
        self.callback = callback
        self.history = History()
        self.iterations = 0
        self.guard = CallbackGuard(self.pvec.comm)
        if self.tao_type in _LEAST_SQUARES and not objective.has_residual:
            raise ConfigurationError(
                f"TAO type {self.tao_type!r} solves least-squares problems: give Objective(residual=...)")
        self._scoped = self.opts.with_defaults(self._defaults(lmvm))
        if (self.tao_type == "brgn" and objective.jacobian == "shell"
                and self._scoped.get("tao_brgn_regularization_type") == "lm"):
            raise ConfigurationError(
                "BRGN's Levenberg-Marquardt damping needs the Jacobian's column norms, which a "
                "shell Jacobian cannot give: use Objective(residual=..., jacobian='dense') or "
                "another regularization (l2prox)")
        self._bounds = bounds
        self._good = torch.empty_like(self.pvec.full)
        self.tao = self._build()

    # -- construction --------------------------------------------------------------------

    @staticmethod
    def _check_type(name: str) -> str:
        if not isinstance(name, str) or name not in tao_types():
            raise ConfigurationError(f"unknown TAO type {name!r}; this PETSc offers: {', '.join(tao_types())}")
        if name in ("shell", "python"):
            raise ConfigurationError(f"TAO type {name!r} needs a user implementation; pnode cannot drive it")
        return name

    def _defaults(self, lmvm: str | None) -> dict[str, Any]:
        defaults: dict[str, Any] = {"tao_type": self.tao_type}
        if lmvm is not None:
            if lmvm not in LMVM_TYPES:
                raise ConfigurationError(f"unknown LMVM matrix {lmvm!r}; choose one of {', '.join(LMVM_TYPES)}")
            if self.tao_type not in _LMVM_OPTION:
                raise ConfigurationError(
                    f"lmvm= selects the quasi-Newton matrix of {', '.join(_LMVM_OPTION)}; TAO type "
                    f"{self.tao_type!r} has none (use its own options, e.g. -tao_bnk_pc_lmvm_mat_type)")
            defaults[_LMVM_OPTION[self.tao_type]] = LMVM_TYPES[lmvm]
        if self.tao_type in _NEWTON_PC:
            defaults[_NEWTON_PC[self.tao_type]] = "none"
        return defaults

    def _build(self):
        """A TAO with its callbacks, set from the options (and set up, so that the options
        its parts read then are counted as read)."""
        P = PETSc()
        pv, guard = self.pvec, self.guard
        tao = P.TAO().create(pv.comm)
        tao.setOptionsPrefix(self._scoped.prefix)  # before the type: its parts take prefixes from it
        tao.setType(self.tao_type)
        self._x = pv.duplicate()
        pv.pull(self._x)
        tao.setSolution(self._x)
        self._objects = [self._x]
        n = pv.counts[pv.mpi.Get_rank()]
        if self.tao_type in _LEAST_SQUARES:
            self._least_squares(tao, n)
        else:
            self._objective(tao, n)
        if self._bounds is not None:
            tao.setVariableBounds(self._bound_vecs(self._bounds))
        # BRGN iterates through its subsolver, which calls the monitors; petsc4py keeps a
        # callback with the wrapper object it was set on, so the wrapper must live as long
        # as the solver (collected, its monitor silently vanished on some ranks only)
        self._monitored = tao.getBRGNSubsolver() if self.tao_type == "brgn" else tao
        self._monitored.setMonitor(guard.wrap(self._monitor))
        self._scoped.apply(_TAO(tao))
        return tao

    def _objective(self, tao, n: int) -> None:
        """The loss, its gradient and a Hessian shell (products by double backward)."""
        ev, pv, guard = self.evaluator, self.pvec, self.guard
        tao.setObjective(guard.wrap(lambda tao_, X: ev.value(X)))
        gradient = pv.duplicate()
        tao.setObjectiveGradient(guard.wrap(lambda tao_, X, G: ev.value_gradient(X, G)), gradient)
        products = _Products(ev.hessian_product)
        hessian = shell_mat(products, n, n, pv.comm, guard)

        def linearise(tao_, X, H, Pm):
            products.reset()
            ev.linearise_gradient(X)
        tao.setHessian(guard.wrap(linearise), hessian, hessian)
        self._objects += [gradient, hessian]

    def _least_squares(self, tao, n: int) -> None:
        P, ev, pv, guard = PETSc(), self.evaluator, self.pvec, self.guard
        m = ev.residual_rows()
        rows = P.Vec().createMPI((m, None), comm=pv.comm)
        tao.setResidual(guard.wrap(lambda tao_, X, F: ev.residual(X, F)), rows)
        if self.objective.jacobian == "shell":
            jac = shell_mat(_Products(ev.jacobian_product, ev.jacobian_transpose_product), m, (n, pv.numel),
                            pv.comm, guard)
            fill = lambda tao_, X, J, Pm: ev.linearise_residual(X)  # noqa: E731
        else:
            jac = P.Mat().createDense(((m, None), (n, pv.numel)), comm=pv.comm)
            jac.setUp()
            start = rows.getOwnershipRange()[0]

            def fill(tao_, X, J, Pm):
                ev.linearise_residual(X)
                values = host_rows(ev.dense_jacobian())
                J.setValues(range(start, start + m), range(pv.numel), values.reshape(-1))
                J.assemble()
        tao.setJacobianResidual(guard.wrap(fill), jac, jac)
        self._objects += [rows, jac]

    def _bound_vecs(self, bounds):
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise ConfigurationError("bounds must be a pair (lower, upper)")
        vecs = []
        for value, infinite in zip(bounds, (-math.inf, math.inf)):
            vec = self.pvec.duplicate()
            local = self.pvec.local_of(vec)
            if value is None or isinstance(value, (int, float)):
                local.fill_(infinite if value is None else float(value))
            else:
                flat = torch.as_tensor(value, dtype=local.dtype).reshape(-1)
                if flat.numel() != self.pvec.numel:
                    raise ConfigurationError(
                        f"a bound tensor must hold one value per parameter entry ({self.pvec.numel}), "
                        f"got {flat.numel()}")
                local.copy_(flat[self.pvec.start:self.pvec.stop])
            vec.stateIncrease()
            vecs.append(vec)
        self._objects += vecs
        return tuple(vecs)

    # -- solving -------------------------------------------------------------------------

    def _monitor(self, tao) -> None:
        its, f, gnorm, _, _, _ = tao.getSolutionStatus()
        if its == 0 and len(self.history):
            return  # the first point of a resumed solve is the last one recorded
        radius = tao.getCurrentTrustRegionRadius() if self.tao_type in _TRUST_REGION else math.nan
        self.history.append(self._start + its, f, gnorm, radius, self.evaluator.gradients)
        self.pvec.to_full(tao.getSolution(), self._good)
        if its > 0:
            self.iterations = self._start + its
            self._bar.update(1, loss=f, grad=gnorm)
            if self.checkpoint is not None and self.checkpoint_every > 0 and its % self.checkpoint_every == 0:
                self.save(self.checkpoint)
            if self.callback is not None:
                self.callback(self)

    def solve(self, max_it: int | None = None) -> TaoResult:
        """Run TAO from the model's current parameters for at most ``max_it`` iterations in
        all (counting those before a resume; ``-<prefix>tao_max_it`` wins); the model then
        holds the solution."""
        given = self._scoped.get("tao_max_it")
        total = int(given) if given is not None else int(self.max_it if max_it is None else max_it)
        remaining = total - self.iterations
        tao, pv = self.tao, self.pvec
        if remaining <= 0:
            return self._result(-2)
        pv.pull(self._x)
        pv.buffer.pack_values(self._good)
        tao.setMaximumIterations(remaining)
        self._monitored.setMaximumIterations(remaining)  # BRGN's subsolver took its limit at set-up
        if self.tao_type in _TRUST_REGION and math.isfinite(self.history.last("radius")):
            tao.setInitialTrustRegionRadius(self.history.last("radius"))
        self._start = self.iterations
        self._bar = Progress(remaining, f"TAO {self.tao_type}", pv.mpi, self.progress)
        try:
            with self._scoped.applied():
                self.guard.run(tao.solve, lambda: {"step": self.iterations})
        except BaseException:
            # PETSc left the vectors of the failed evaluation locked: start a new TAO
            pv.buffer.assign(self._good)
            self._destroy_tao()
            self.tao = self._build()
            raise
        finally:
            self._bar.close()
        pv.push(self._x)
        reason = int(tao.getConvergedReason())
        if self.checkpoint is not None and self.checkpoint_every > 0:
            self.save(self.checkpoint)
        return self._result(reason)

    def _result(self, reason: int) -> TaoResult:
        return TaoResult(reason, tao_reason(reason), self.iterations, self.history.last("loss"),
                         self.history.last("gradient_norm"))

    # -- state ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The iterate (flat, CPU), the iteration count and the history."""
        flat = self.pvec.buffer.pack_values(torch.empty_like(self.pvec.full))
        return {"solver": "tao", "tao_type": self.tao_type, "x": flat.cpu(), "iterations": self.iterations,
                "history": self.history.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the model takes its iterate."""
        restore_iterate(state, "tao", "a TaoSolver", self.pvec)
        self.iterations = int(state["iterations"])
        self.history.load_state_dict(state["history"])

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` (rank 0, atomically)."""
        save_state(self.state_dict(), path, self.pvec.mpi)

    def load(self, path: str | os.PathLike) -> None:
        """Resume from a file written by :meth:`save`."""
        self.load_state_dict(load_state(path))

    def _destroy_tao(self) -> None:
        self.tao.destroy()
        for obj in self._objects:
            obj.destroy()
        self._objects = []

    def destroy(self) -> None:
        """Free the TAO object and its matrices and vectors."""
        self._destroy_tao()


@contextmanager
def _lmvm_matrix_options(tao) -> Iterator[None]:
    """PETSc 3.26 gives the matrix of TAO ``lmvm`` the prefix ``tao_lmvm_`` whatever the
    TAO's prefix is: copy this solver's ``<prefix>tao_lmvm_mat_*`` options there while it
    reads them (options already set without a prefix stay as they are)."""
    db, prefix = PETSc().Options(), tao.getOptionsPrefix() or ""
    inserted = []
    if tao.getType() == "lmvm" and prefix:
        for key, value in db.getAll().items():
            if key.startswith(prefix + "tao_lmvm_mat_"):
                bare = key[len(prefix):]
                if not db.hasName(bare):
                    db.setValue(bare, value)
                    inserted.append(bare)
    try:
        yield
    finally:
        for bare in inserted:
            if db.used(bare):
                db.getString(prefix + bare)  # PETSc read it: the prefixed option counts as read
            db.delValue(bare)


class _TAO:
    """A TAO as :meth:`ScopedOptions.apply` sees it: ``setFromOptions`` also sets it up,
    so that the options its parts read at set-up (the KSP of the Newton types) are read
    while the dict's options are in the database."""

    def __init__(self, tao=None):
        self.tao = tao

    def create(self, comm):
        return PETSc().TAO().create(comm)

    def setOptionsPrefix(self, prefix: str) -> None:
        # set again after the type, TAO would give its KSP the bare prefix (not prefix + tao_ntr_)
        if self.tao.getOptionsPrefix() != prefix:
            self.tao.setOptionsPrefix(prefix)

    def setFromOptions(self) -> None:
        with _lmvm_matrix_options(self.tao):
            self.tao.setFromOptions()
            self.tao.setUp()

    def getType(self) -> str:
        return self.tao.getType()

    def getComm(self):
        return self.tao.getComm()


class _Products:
    """Shell context: ``mult`` / ``multTranspose`` from ``(X, Y)`` functions, and
    ``MatShift`` (Newton-type perturbations ``H + a I``, reset by :meth:`reset`)."""

    def __init__(self, mult: Callable, mult_transpose: Callable | None = None):
        self._mult, self._mult_t = mult, mult_transpose
        self.diagonal_shift = 0.0

    def reset(self) -> None:
        self.diagonal_shift = 0.0

    def shift(self, mat, a: float) -> None:
        self.diagonal_shift += float(a)

    def mult(self, mat, X, Y) -> None:
        self._mult(X, Y)
        if self.diagonal_shift:
            Y.axpy(self.diagonal_shift, X)

    def multTranspose(self, mat, X, Y) -> None:
        if self._mult_t is None:
            raise ConfigurationError("this shell matrix has no transposed product")
        self._mult_t(X, Y)


def save_state(state: Mapping[str, Any], path: str | os.PathLike, comm=None) -> None:
    """``torch.save(state)`` to ``path`` on rank 0 of ``comm`` (write then rename)."""
    if is_root(comm):
        tmp = f"{os.fspath(path)}.tmp"
        torch.save(dict(state), tmp)
        os.replace(tmp, path)
    if comm is not None:
        comm.Barrier()


def restore_iterate(state: Mapping[str, Any], solver: str, owner: str, pvec, *, what: str | None = None,
                    consistent: bool = True) -> None:
    """Check that ``state`` was written by ``solver`` for ``pvec``'s parameters (and, with
    ``consistent``, any further condition of the caller's), then give the model its iterate
    ``state["x"]``; otherwise raise a :class:`ConfigurationError` naming ``owner``."""
    x = state.get("x")
    if state.get("solver") != solver or not isinstance(x, torch.Tensor) or x.numel() != pvec.numel or not consistent:
        raise ConfigurationError(
            f"this state is not {owner}'s for {what or f'{pvec.numel} parameters'} "
            f"(solver {state.get('solver')!r}, {getattr(x, 'numel', lambda: None)()} values)")
    pvec.buffer.assign(x.to(pvec.full))


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """A state written by :func:`save_state` (``torch.load(weights_only=True)``)."""
    if not os.path.exists(path):
        raise ConfigurationError(f"no checkpoint file at {os.fspath(path)!r}")
    return torch.load(path, weights_only=True)


def minimize(params, closure: Callable[[], torch.Tensor], *, max_it: int = 100, **kwargs) -> TaoResult:
    """Minimise ``closure()`` over ``params`` with a :class:`TaoSolver` (keyword arguments as
    there); the model holds the solution."""
    solver = TaoSolver(params, Objective(closure), max_it=max_it, **kwargs)
    try:
        return solver.solve()
    finally:
        solver.destroy()
