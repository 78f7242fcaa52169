"""Zero-copy bridge between torch tensors and PETSc Vecs (DLPack): the CPU/CUDA seam.

A state lives in one buffer that is both a torch tensor and a PETSc Vec. On the CPU the
Vec wraps the tensor's memory; on a GPU (PETSc built with CUDA) it is a CUDA Vec on the
tensor's device memory. Writing through either view is seen by the other. Modules above
this one never ask where memory lives: host arrays for PETSc calls that take them
(:func:`host_array`), a Vec lent a tensor's memory for one call (:func:`lent`) and
finiteness checks without a device synchronisation per step (:class:`FiniteWatch`) are
here; MPI staging is in :mod:`pnode.comm`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from .errors import BuildMismatchError, ConfigurationError
from .startup import PETSc, petsc_dtype, petsc_has_cuda

__all__ = ["PETSc", "petsc_dtype", "petsc_has_cuda", "check_tensor", "as_vec", "as_tensor",
           "ViewCache", "host_array", "lent", "FiniteWatch"]


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
    from .comm import as_petsc_comm

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


def host_array(x: torch.Tensor, what: str = "this operation") -> np.ndarray:
    """A numpy view of a CPU tensor's memory, for PETSc calls that take host arrays
    (assembled matrices); a CUDA tensor raises a ConfigurationError naming ``what``."""
    if x.device.type != "cpu":
        raise ConfigurationError(f"{what} needs a CPU tensor, got one on {x.device}")
    return x.detach().numpy()


@contextmanager
def lent(vec, x: torch.Tensor) -> Iterator:
    """A Vec on ``x``'s memory (contiguous) for the duration of the block: ``vec`` itself
    with the tensor's array placed in it on the CPU (VecPlaceArray), a DLPack Vec of the
    same communicator on a GPU."""
    if x.device.type != "cpu":
        tmp = as_vec(x, vec.getComm())
        try:
            yield tmp
        finally:
            tmp.destroy()
        return
    vec.placeArray(x.detach().reshape(-1).numpy())
    try:
        yield vec
    finally:
        vec.resetArray()


class FiniteWatch:
    """Checks that states stay finite, without a device synchronisation per step on a GPU.

    On the CPU :meth:`check` answers at once (a finite sum means finite entries: one
    reduction; only a sum that is not finite is checked entrywise). On a GPU it folds the
    verdict into a device flag and answers False only when asked to :meth:`settle` (at
    output times), so a failure is then located to an interval of steps.
    """

    def __init__(self):
        self._flag: torch.Tensor | None = None

    def check(self, u: torch.Tensor) -> bool:
        """False if ``u`` has a NaN or Inf (on a GPU: deferred, always True here)."""
        if u.device.type == "cpu":
            return abs(float(u.sum())) < np.inf or bool(torch.isfinite(u).all())
        ok = torch.isfinite(u).all()
        self._flag = ok if self._flag is None else self._flag.logical_and_(ok)
        return True

    def settle(self) -> bool:
        """False if a state checked since the last call was not finite (one sync on a GPU)."""
        flag, self._flag = self._flag, None
        return True if flag is None else bool(flag)


class ViewCache:
    """Flat tensor views of the Vecs PETSc passes to callbacks, made once per Vec.

    Making a view costs ~3-5 us (DLPack), several times per stage of a small model. A TS
    allocates its work vectors when it is set up and keeps them, so within one TSSolve or
    TSAdjointSolve a Vec handle always names the same memory: call :meth:`clear` before
    each solve. Only host Vecs are cached (a CUDA Vec's data may move between host and
    device copies); a caller that writes through a cached view bumps the Vec's state.
    """

    def __init__(self):
        self._views: dict = {}

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
