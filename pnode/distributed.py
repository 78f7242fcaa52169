"""The public face of pnode's parallelism: communicator helpers, data-parallel gradient
reduction, DMDA-distributed states and their stencils (each in its own module:
:mod:`pnode.comm`, :mod:`pnode.dataparallel`, :mod:`pnode.dmda`, :mod:`pnode.stencils`)."""
from .comm import abort_on_error, as_mpi_comm, as_petsc_comm, is_root, shard
from .dataparallel import GradientReducer, RankFailedError
from .dmda import DMDAProblem, create_dmda
from .stencils import interior, laplacian

__all__ = ["abort_on_error", "as_mpi_comm", "as_petsc_comm", "is_root", "shard", "GradientReducer",
           "RankFailedError", "DMDAProblem", "create_dmda", "interior", "laplacian"]
