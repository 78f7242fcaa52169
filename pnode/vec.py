"""Zero-copy bridge between torch tensors and PETSc Vecs (DLPack), with build checks.

A state lives in one buffer that is both a torch tensor and a PETSc Vec. On the CPU the
Vec wraps the tensor's memory; on a GPU (PETSc built with CUDA) it is a CUDA Vec on the
tensor's device memory. Writing through either view is seen by the other.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from .blas import blas_threads, limit_threads
from .errors import BuildMismatchError, ConfigurationError

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
    :mod:`pnode.blas`).
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


def check_tensor(x: torch.Tensor, name: str = "tensor") -> None:
    """Raise a clear error if ``x`` cannot share memory with a PETSc Vec of this build."""
    if not isinstance(x, torch.Tensor):
        raise ConfigurationError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    want = petsc_dtype()
    if x.dtype != want:
        if x.dtype in (torch.float32, torch.float64):
            raise BuildMismatchError(
                f"{name} has dtype {x.dtype} but PETSc's scalars are {want} "
                f"({'single' if want == torch.float32 else 'double'} precision); cast the tensor "
                f"with .to({want}) or use a PETSc built with --with-precision="
                f"{'single' if x.dtype == torch.float32 else 'double'}")
        raise BuildMismatchError(f"{name} has dtype {x.dtype}; PETSc holds real {want} scalars")
    if x.is_cuda and not petsc_has_cuda():
        raise BuildMismatchError(
            f"{name} is on {x.device} but this PETSc has no CUDA; build PETSc with --with-cuda "
            "or move the tensor to the CPU")
    if x.device.type not in ("cpu", "cuda"):
        raise BuildMismatchError(f"{name} is on {x.device}; pnode supports CPU and CUDA tensors")


def as_vec(x: torch.Tensor, comm=None):
    """A PETSc Vec sharing ``x``'s memory (flattened; no copy).

    ``x`` must be contiguous: a non-contiguous tensor has no single buffer to share, so it
    raises (call ``.contiguous()`` yourself: that copies once). With ``comm`` of several
    ranks, each rank passes its local part and the Vec is distributed.
    """
    check_tensor(x)
    if not x.is_contiguous():
        raise ConfigurationError(
            "as_vec needs a contiguous tensor to share its memory; call .contiguous() (one copy)")
    flat = x.view(-1)
    P = PETSc()
    comm = as_petsc_comm(comm)
    if x.is_cuda:
        return P.Vec().createWithDLPack(flat, comm=comm)
    return P.Vec().createWithArray(flat.detach().numpy(), comm=comm)


def as_tensor(vec, shape=None, mode: str = "rw") -> torch.Tensor:
    """A tensor view of ``vec``'s local values (no copy), reshaped to ``shape``.

    ``mode="r"`` works on vectors PETSc has locked for reading (callback inputs). A CUDA
    Vec gives a CUDA tensor on the same memory.
    """
    t = torch.from_dlpack(vec.toDLPack(mode))
    return t if shape is None else t.view(shape)


class ViewCache:
    """Flat tensor views of the Vecs PETSc passes to callbacks, made once per Vec.

    Making a view costs ~3-5 us (DLPack), several times per stage of a small model. A TS
    allocates its work vectors when it is set up and keeps them, so within one TSSolve or
    TSAdjointSolve a Vec handle always names the same memory: call :meth:`clear` before
    each solve. Only host Vecs are cached (a CUDA Vec's data may move between host and
    device copies); a caller that writes through a cached view bumps the Vec's state.
    """

    def __init__(self):
        self._views: dict[int, torch.Tensor] = {}

    def get(self, vec, mode: str = "rw", shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The view of ``vec``, flat or of ``shape`` (``mode="r"`` for vectors locked for
        reading). Shaped views are cached too: reshaping is a torch op, and each torch op
        between two of the adjoint's engine calls slows the next call down (~10 us for the
        first op there, ~3 us for each further one, small model: the caches go cold)."""
        key = vec.handle if shape is None else (vec.handle, shape)
        view = self._views.get(key)
        if view is None:
            view = as_tensor(vec, shape, mode)
            if view.device.type == "cpu":
                self._views[key] = view
        return view

    def clear(self) -> None:
        self._views.clear()


def as_petsc_comm(comm):
    """Accept None (COMM_SELF), a petsc4py Comm or an mpi4py communicator."""
    P = PETSc()
    if comm is None:
        return P.COMM_SELF
    if isinstance(comm, P.Comm):
        return comm
    try:
        return P.Comm(comm)
    except Exception as exc:  # pragma: no cover - message only
        raise ConfigurationError(f"comm must be an mpi4py or petsc4py communicator, got {comm!r}") from exc


def as_mpi_comm(comm):
    """The mpi4py communicator for None (COMM_SELF), a petsc4py Comm or an mpi4py comm."""
    from mpi4py import MPI

    if comm is None:
        return MPI.COMM_SELF
    if isinstance(comm, MPI.Comm):
        return comm
    return as_petsc_comm(comm).tompi4py()


def check_build(verbose: bool = True) -> dict:
    """Check that PETSc, petsc4py, mpi4py and torch work together; print a summary."""
    from mpi4py import MPI

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
