"""pnode.solvers: training solvers on the shared communicator (PETSc TAO, trust regions, RMTR)."""
from .batches import BatchGrowth, HybridBatches
from .gauss_newton import LevenbergMarquardt
from .hierarchy import (DepthHierarchy, EulerNeuralODE, Hierarchy, ResidualNetwork, StepCountHierarchy, mlp_resnet,
                        residual_levels)
from .monitor import History
from .nystrom import NystromPreconditioner
from .objective import NonFiniteObjectiveError, Objective
from .rmtr import RMTR, RMTRSettings
from .tao import LMVM_TYPES, TaoResult, TaoSolver, minimize, tao_reason, tao_types
from .trust_region import SR1Subproblem, TrustRegion, TrustRegionCore, TrustRegionSettings

__all__ = ["BatchGrowth", "HybridBatches", "LevenbergMarquardt", "DepthHierarchy", "EulerNeuralODE", "Hierarchy",
           "ResidualNetwork", "StepCountHierarchy", "mlp_resnet", "residual_levels", "History", "NystromPreconditioner",
           "NonFiniteObjectiveError", "Objective", "RMTR", "RMTRSettings", "LMVM_TYPES", "TaoResult", "TaoSolver",
           "minimize", "tao_reason", "tao_types", "SR1Subproblem", "TrustRegion", "TrustRegionCore",
           "TrustRegionSettings"]
