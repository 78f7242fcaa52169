"""Algorithm-unrolling networks on PETSc operators."""
