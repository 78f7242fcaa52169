"""pnode.solvers: training solvers on the shared communicator (PETSc TAO, trust regions, RMTR)."""
from .gauss_newton import LevenbergMarquardt
from .monitor import History
from .objective import NonFiniteObjectiveError, Objective
from .tao import LMVM_TYPES, TaoResult, TaoSolver, minimize, tao_reason, tao_types
from .trust_region import SR1Subproblem, TrustRegion, TrustRegionSettings

__all__ = ["History", "LevenbergMarquardt", "NonFiniteObjectiveError", "Objective", "LMVM_TYPES", "TaoResult", "TaoSolver",
           "minimize", "tao_reason", "tao_types", "SR1Subproblem", "TrustRegion", "TrustRegionSettings"]
