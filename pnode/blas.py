"""The threads of PETSc's BLAS: one per process unless asked otherwise.

PETSc hands long vector operations (``VecAXPY``, ``VecDot``, ``VecScale``, ...) to BLAS.
A threaded BLAS (Debian's OpenBLAS is built with pthreads) splits those above ~10^4
entries over every core, and its waiting threads spin in ``sched_yield``. The operations
are memory-bound, so the threads buy nothing: one process of the large benchmark model
spent 1.9 s of kernel time per 2.2 s backward pass spinning on the second core, for no
gain in time (docs/benchmarks.md, "BLAS threads"), and under ``mpiexec`` the ranks are
the parallelism. So pnode sets PETSc's BLAS to one thread when it starts PETSc, unless
``-blas_num_threads N`` (PETSc's own option) asks for ``N`` or one of the BLAS thread
variables (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, ...) is set.

PETSc's ``PetscBLASSetNumThreads`` only acts when PETSc's configure identified the BLAS
(a build against Debian's generic ``-lblas`` does not), so the control is looked up in
the libraries libpetsc itself loaded. Only PETSc's BLAS changes: numpy's and torch's
bundled BLAS libraries are other libraries, and torch's threads stay
``torch.set_num_threads``'s business.
"""
from __future__ import annotations

import ctypes
import os

# (set, get, C type of the count) of the BLAS libraries that have them; BLIS counts in
# its 64-bit dim_t
_CONTROLS = (("openblas_set_num_threads", "openblas_get_num_threads", ctypes.c_int),
             ("bli_thread_set_num_threads", "bli_thread_get_num_threads", ctypes.c_int64),
             ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads", ctypes.c_int))
_ENV = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "BLIS_NUM_THREADS",
        "MKL_NUM_THREADS")


def _controls() -> tuple | None:
    """The (set, get) functions of the BLAS libpetsc loaded, typed, or None (not found,
    or no Linux process map to search)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if len(line.split()) >= 6}
    except OSError:
        return None
    petsc = next((p for p in paths if os.path.basename(p).startswith("libpetsc.")), None)
    if petsc is None:
        return None
    try:
        lib = ctypes.CDLL(petsc, mode=os.RTLD_NOLOAD)
    except OSError:
        return None
    for set_name, get_name, count in _CONTROLS:
        # a library handle's symbol lookup also searches the libraries it depends on
        if hasattr(lib, set_name) and hasattr(lib, get_name):
            setter, getter = getattr(lib, set_name), getattr(lib, get_name)
            setter.argtypes, setter.restype, getter.argtypes, getter.restype = [count], None, [], count
            return setter, getter
    return None


def limit_threads(options) -> None:
    """Set PETSc's BLAS threads from ``-blas_num_threads`` (``options``: PETSc's options
    database), else to 1 unless a BLAS thread variable is set in the environment."""
    if options.hasName("blas_num_threads"):
        wanted = options.getInt("blas_num_threads")
    elif any(name in os.environ for name in _ENV):
        return
    else:
        wanted = 1
    set_blas_threads(wanted)


def set_blas_threads(n: int) -> bool:
    """Make PETSc's BLAS use ``n`` threads; False where its BLAS has no known control."""
    controls = _controls()
    if controls is None:
        return False
    controls[0](max(int(n), 1))
    return True


def blas_threads() -> int | None:
    """The number of threads PETSc's BLAS uses (None: a BLAS without a known control)."""
    controls = _controls()
    return None if controls is None else int(controls[1]())
