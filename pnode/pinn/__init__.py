"""Physics-informed models (collocation, TS-integrated, neural Galerkin)."""
from .galerkin import GalerkinProblem, PeriodicFeatures

__all__ = ["GalerkinProblem", "PeriodicFeatures"]
