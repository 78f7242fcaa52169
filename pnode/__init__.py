"""pnode: neural ODEs on PETSc time integrators with exact discrete-adjoint gradients."""
from .checkpoint import Checkpoint
from .errors import BuildMismatchError, ConfigurationError, ConvergenceError, PnodeError
from .odeint import NeuralODE, odeint, odeint_adjoint
from .options import ScopedOptions
from .vec import as_tensor, as_vec, check_build, init

__all__ = [
    "Checkpoint", "BuildMismatchError", "ConfigurationError", "ConvergenceError", "PnodeError",
    "NeuralODE", "odeint", "odeint_adjoint", "ScopedOptions", "as_tensor", "as_vec",
    "check_build", "init",
]
__version__ = "0.1.0"
