"""PETSc start-up and what this build can hold: ``init(argv)``, ``PETSc()``, ``check_build()``."""
from __future__ import annotations

import sys

import numpy as np
import torch

from .blas import blas_threads, limit_threads
from .errors import BuildMismatchError

_TORCH_OF_NUMPY = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}

_started = False  # whether init() has run (PETSc started, its BLAS threads set)


def PETSc():
    """The petsc4py.PETSc module, initialised on first use (see :func:`init`)."""
    if not _started:
        init()
    return sys.modules["petsc4py.PETSc"]


def init(argv: list[str] | None = None) -> None:
    """Initialise PETSc, passing ``argv`` (e.g. ``sys.argv``; ``argv[0]`` is the program) to
    its options database.

    Call it before any other pnode function for ``-prefix_ts_type ...`` flags to apply.
    Later calls (or a PETSc already initialised by the user) change nothing, except that
    the first call sets the threads of PETSc's BLAS (one per process by default, see
    :mod:`pnode.blas`). On several MPI ranks it also makes an uncaught exception on one
    rank end the whole job with its traceback (see :func:`pnode.comm.abort_on_uncaught`).
    """
    global _started
    if _started:
        return
    if "petsc4py.PETSc" not in sys.modules:
        import petsc4py

        petsc4py.init(["pnode"] + [str(a) for a in (argv or [])[1:]])
    from petsc4py import PETSc as P

    limit_threads(P.Options())
    _started = True
    from .comm import abort_on_uncaught

    abort_on_uncaught()


def petsc_dtype() -> torch.dtype:
    """The torch dtype matching PETSc's scalar type; raises for complex PETSc."""
    scalar = np.dtype(PETSc().ScalarType)
    if scalar.kind == "c":
        raise BuildMismatchError(
            f"this PETSc is built with complex scalars ({scalar}); pnode needs a real PETSc "
            "(configure without --with-scalar-type=complex)")
    if scalar not in _TORCH_OF_NUMPY:
        raise BuildMismatchError(f"PETSc scalar type {scalar} has no torch counterpart")
    return _TORCH_OF_NUMPY[scalar]


def petsc_has_cuda() -> bool:
    """Whether this PETSc was built with CUDA."""
    return bool(PETSc().Sys.hasExternalPackage("cuda"))


def check_build(verbose: bool = True) -> dict:
    """Check that PETSc, petsc4py, mpi4py and torch work together; print a summary."""
    from mpi4py import MPI

    from .vec import as_vec

    P = PETSc()
    x = torch.arange(4, dtype=petsc_dtype())
    v = as_vec(x)
    v.setValue(0, 42.0)
    v.assemble()
    zero_copy = bool(x[0] == 42.0)
    v.destroy()
    info = {"petsc": ".".join(map(str, P.Sys.getVersion())), "scalar": str(petsc_dtype()),
            "cuda": petsc_has_cuda(), "mpi_size": MPI.COMM_WORLD.Get_size(),
            "torch": torch.__version__, "blas_threads": blas_threads(), "zero_copy": zero_copy}
    if not zero_copy:
        raise BuildMismatchError("a Vec created from a tensor does not share its memory")
    if verbose and MPI.COMM_WORLD.Get_rank() == 0:
        print("pnode build check: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    return info
