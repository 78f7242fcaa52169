"""Physics-informed models: collocation PINNs trained through :mod:`pnode.solvers`, and
neural-Galerkin marching of a network's parameters through PETSc TS."""
from . import operators
from .domains import Box, Interval, Rectangle, SpaceTime
from .exact import kdv_two_soliton
from .galerkin import GalerkinForce, GalerkinMass, GalerkinProblem, PeriodicFeatures
from .galerkin_resampling import ResampledMarch, march_resampled, seeded_sampler
from .marching import TimeMarching
from .operators import derivatives, divergence, gradient, hessian, laplacian, time_derivative
from .problem import CollocationProblem, Term
from .runge_kutta import Tableau, gauss_legendre, runge_kutta_term
from .sampling import SAMPLERS, resample_by_residual, sample_box
from .train import OPTIMISERS, Stage, StopTraining, TrainResult, train
from .transforms import AffineTransform

__all__ = ["operators", "Box", "Interval", "Rectangle", "SpaceTime", "kdv_two_soliton", "GalerkinProblem",
           "GalerkinForce", "GalerkinMass", "PeriodicFeatures", "ResampledMarch", "march_resampled", "seeded_sampler",
           "derivatives", "divergence", "gradient", "hessian", "laplacian", "time_derivative",
           "CollocationProblem", "Term", "Tableau", "gauss_legendre", "runge_kutta_term", "SAMPLERS",
           "resample_by_residual", "TimeMarching", "sample_box", "OPTIMISERS", "Stage", "StopTraining", "TrainResult",
           "train", "AffineTransform"]
