"""One error guard for every PETSc callback of a solver object.

PETSc calls pnode back (right-hand sides, Jacobians, shell matrices, monitors). An
exception raised there must not vanish into a PETSc error code: the guard keeps the
first one, lets PETSc unwind, and :meth:`CallbackGuard.run` raises it again with its own
type and traceback (the user's exception, ``KeyboardInterrupt`` from Ctrl-C, or pnode's
own error). On a communicator of several ranks an exception that only this rank raised
would leave the others waiting in the next collective, so the guard prints it and
aborts every rank, unless every rank raises it together (``collective`` errors).
"""
from __future__ import annotations

import functools
import traceback
from typing import Any, Callable

from .comm import abort_on_error
from .errors import ConvergenceError, PnodeError, petsc_error_words
from .startup import PETSc


class CallbackGuard:
    """Keeps the first exception raised by any guarded callback of one solver object."""

    def __init__(self, comm):
        self.comm = comm
        self.error: BaseException | None = None

    def wrap(self, fn: Callable) -> Callable:
        """``fn`` guarded: an exception is kept, then passed on to PETSc."""
        @functools.wraps(fn)
        def guarded(*args):
            try:
                return fn(*args)
            except BaseException as exc:
                if self.error is None:
                    self.error = exc
                raise
        return guarded

    def context(self, ctx: Any, *methods: str) -> Any:
        """Guard the named methods of a shell-matrix context (in place); returns ``ctx``."""
        for name in methods:
            setattr(ctx, name, self.wrap(getattr(ctx, name)))
        return ctx

    def run(self, call: Callable[[], Any], where: Callable[[], dict]) -> Any:
        """``call()`` (a PETSc solve); an exception a callback raised comes back as itself,
        a bare PETSc error as a :class:`ConvergenceError` with ``where()`` (time, step)."""
        self.error = None
        try:
            return call()
        except BaseException as exc:
            err, self.error = self.error, None
            cause = err if err is not None else exc
            collective = isinstance(cause, PnodeError) and getattr(cause, "collective", False)
            if self.comm.getSize() > 1 and not collective:
                abort_on_error(self.comm, cause)
            # the frames of the failed callbacks hold petsc4py wrappers of PETSc's work
            # objects (their arguments): dropping their locals now releases those references
            # before the solver is destroyed (kept, they made PETSc destroy the TS later,
            # from the garbage collector, after its vectors: a crash)
            traceback.clear_frames(exc.__traceback__)
            if err is not None and err is not exc:
                traceback.clear_frames(err.__traceback__)
                raise err.with_traceback(err.__traceback__) from None
            if isinstance(exc, PETSc().Error):
                raise ConvergenceError(
                    f"PETSc failed: {petsc_error_words(exc)}; try tighter tolerances, a smaller "
                    "step or an implicit method", **where()) from exc
            raise
