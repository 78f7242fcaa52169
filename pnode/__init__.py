"""pnode: neural ODEs on PETSc time integrators with exact discrete-adjoint gradients."""
from .checkpoint import Checkpoint
from .errors import BuildMismatchError, ConfigurationError, ConvergenceError, PnodeError, PnodeWarning
from .matop import MatOperator, TensorProducts, linear_apply, shell_mat
from .newton import Newton
from .odeint import NeuralODE, odeint, odeint_adjoint
from .options import ScopedOptions
from .params import ParamBuffer, ParamVec
from .startup import check_build, init
from .vec import as_tensor, as_vec

__all__ = [
    "Checkpoint", "BuildMismatchError", "ConfigurationError", "ConvergenceError", "PnodeError",
    "PnodeWarning", "MatOperator", "Newton", "TensorProducts", "linear_apply", "shell_mat", "NeuralODE",
    "odeint", "odeint_adjoint", "ScopedOptions", "ParamBuffer", "ParamVec", "as_tensor", "as_vec",
    "check_build", "init",
]
__version__ = "0.1.0"
