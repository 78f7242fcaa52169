"""Under mpiexec -n 2 (and -n 1): an adaptive implicit DMDA solve with kept Jacobians and the
WRMS Newton test (collective norms and refresh decisions) equals the same solve on one rank."""
import torch
from mpi4py import MPI

import pnode
from distributed_cases import T, grid, implicit_models, initial_field
from helpers import rel_error
from pnode.distributed import DMDAProblem, create_dmda

WORLD = MPI.COMM_WORLD


def _adaptive_implicit(comm):
    """The stiff 1-D diffusion-closure case with adaptive ARKIMEX 3, forward only."""
    model, _ = implicit_models("cn-1d")
    da = create_dmda(grid(1), boundary="periodic", comm=comm)
    prob = DMDAProblem(da, model)
    try:
        ode = pnode.NeuralODE(prob, method="arkimex", rtol=1e-6, atol=1e-8, options={"ts_arkimex_type": "3"})
        with torch.no_grad():
            out = ode(prob.scatter(initial_field(grid(1))), T)
        return prob.gather(out[-1]), ode.stats
    finally:
        prob.destroy()
        da.destroy()


def test_adaptive_newton_with_reuse_equals_one_rank():
    out, stats = _adaptive_implicit(WORLD)
    ref, ref_stats = _adaptive_implicit(MPI.COMM_SELF)
    assert stats["newton_test"] == ref_stats["newton_test"] == "wrms"
    assert stats["jacobian_evaluations"] < stats["newton_iterations"]
    assert (stats["steps"], stats["newton_iterations"]) == (ref_stats["steps"], ref_stats["newton_iterations"])
    assert rel_error(out, ref) < 1e-10
