"""PETSc's BLAS threads: one per process unless -blas_num_threads or the environment asks."""
import os
import subprocess
import sys

import pytest

from pnode.blas import _ENV, blas_threads, limit_threads, set_blas_threads
from pnode.vec import PETSc

PETSc()  # loads libpetsc and its BLAS
pytestmark = pytest.mark.skipif(blas_threads() is None,
                                reason="PETSc's BLAS has no thread control (OpenBLAS, BLIS, MKL)")


@pytest.fixture
def options():
    """PETSc's global options, without -blas_num_threads and with one BLAS thread after."""
    db = PETSc().Options()
    yield db
    db.delValue("blas_num_threads")
    set_blas_threads(1)


def test_option_sets_the_threads(options):
    options.setValue("blas_num_threads", 2)
    set_blas_threads(1)
    limit_threads(options)
    assert blas_threads() == 2


def test_default_is_one_thread(options, monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    set_blas_threads(2)
    limit_threads(options)
    assert blas_threads() == 1


def test_environment_is_left_alone(options, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    set_blas_threads(2)
    limit_threads(options)
    assert blas_threads() == 2


def test_pnode_start_sets_one_thread():
    """A fresh process whose PETSc (started by the user) has 2 BLAS threads: pnode's first
    use of PETSc limits them to one."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV}
    code = ("from petsc4py import PETSc; import pnode, pnode.blas as b; b.set_blas_threads(2); "
            "before = b.blas_threads(); pnode.check_build(verbose=False); print(before, b.blas_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert list(map(int, out.stdout.split())) == [2, 1]
