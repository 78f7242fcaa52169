"""diffrax for the stiff benchmarks, when installed (the ``stiff-bench`` extra, CPU JAX).

JAX runs in float64 on one thread (``XLA_FLAGS`` is set before JAX is imported) and
compiled functions are timed apart from their compilation (:func:`compiled`).
"""
from __future__ import annotations

import os
import time

ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def load_diffrax():
    """``(jax, jax.numpy, diffrax)``, or None after printing a line saying why they are skipped."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {ONE_THREAD}".strip()
    try:
        import diffrax
        import jax
    except ImportError as exc:
        print(f"diffrax skipped: not importable ({exc}); install the stiff-bench extra: pip install -e '.[stiff-bench]'")
        return None
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax, jax.numpy, diffrax


def compiled(jax, fn, *args):
    """``(fn jitted, lowered and compiled for args, seconds to trace and compile)``."""
    tic = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - tic
