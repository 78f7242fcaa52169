"""Algorithm-unrolling networks on PETSc operators (``pnode.solvers.unrolling``).

Unrolled iterations with learnable per-iteration parameters (:class:`Unrolled`), the
LISTA family, interchangeable proximal pieces, imaging operators on DMDAs, a learned
patch prior with ghost exchange, a deep-equilibrium mode on PETSc SNES, and a trainer on
the shared History/Progress plumbing. See docs/unrolling.md.
"""
from .coherence import analytic_weight, mutual_coherence
from .equilibrium import Equilibrium, ProximalStep
from .imaging import (gather_images, gaussian_blur, gaussian_kernel, laplacian_matrix, owned_part,
                      piecewise_smooth_image, ray_sum, stencil_matrix)
from .lista import ALISTA, LISTA, LISTACP, LISTACPSS, TiLISTA, support_schedule
from .metrics import nmse_db, psnr
from .operators import Operator, PetscOperator, TensorOperator, as_operator
from .prior import PatchPrior
from .prox import L2Ball, Box, Learned, Prox, SoftThreshold, SupportSelection, as_prox, soft_threshold
from .sparse import bernoulli_gaussian, gaussian_dictionary, measurements
from .training import Trainer
from .unrolled import (ALGORITHMS, IterationParameter, Unrolled, conjugate_gradient, keep_layer_gradient,
                       per_layer_parameters)

__all__ = [
    "analytic_weight", "mutual_coherence", "Equilibrium", "ProximalStep", "gaussian_blur",
    "gather_images", "gaussian_kernel", "laplacian_matrix", "owned_part", "piecewise_smooth_image", "ray_sum", "stencil_matrix", "ALISTA", "LISTA", "LISTACP", "LISTACPSS", "TiLISTA",
    "support_schedule", "nmse_db", "psnr", "Operator", "PetscOperator", "TensorOperator",
    "as_operator", "PatchPrior", "L2Ball", "Box", "Learned", "Prox", "SoftThreshold",
    "SupportSelection", "as_prox", "soft_threshold", "bernoulli_gaussian", "gaussian_dictionary", "measurements", "Trainer", "ALGORITHMS",
    "IterationParameter", "Unrolled", "conjugate_gradient", "keep_layer_gradient", "per_layer_parameters",
]
