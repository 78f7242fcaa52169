"""Serial counterparts of tests/mpi: DMDA states (explicit, implicit, IMEX) against pure torch,
reducer, abort on error."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from mpi4py import MPI

import pnode
from distributed_cases import (IMPLICIT_CASES, STEP, T, Closure1D, Closure2D, data_parallel_case, grid,
                               implicit_case, implicit_models, initial_field, pad)
from helpers import rel_error
from models import CubicMLP
from pnode.distributed import DMDAProblem, GradientReducer, create_dmda, is_root, shard
from reference import rk_solve
from reference_implicit import ark_solve, theta_solve

SELF = MPI.COMM_SELF


@pytest.mark.parametrize("dim", [1, 2])
def test_dmda_problem_equals_backprop_through_padded_torch(dim):
    sizes = [24] if dim == 1 else [10, 8]
    model = Closure1D(1.0 / sizes[0]) if dim == 1 else Closure2D(1.0 / sizes[0])
    da = create_dmda(sizes, boundary="periodic" if dim == 1 else "ghosted", comm=SELF)
    prob = DMDAProblem(da, model)
    assert prob.ghosted_shape == tuple(n + 2 for n in reversed(sizes))
    u0 = initial_field(sizes)
    y0 = prob.scatter(u0).requires_grad_(True)
    out = pnode.odeint_adjoint(prob, y0, T, method="rk4", step_size=STEP)
    loss = (out ** 2).sum()
    g = torch.autograd.grad(loss, [y0] + list(model.parameters()))
    r0 = u0.clone().requires_grad_(True)
    steps = torch.arange(0, round(float(T[-1]) / STEP) + 1, dtype=torch.float64) * STEP
    ref = rk_solve(lambda t, u: model(t, pad(u, dim == 1)), r0, steps.numpy(), T.numpy(), "rk4")
    gr = torch.autograd.grad((ref ** 2).sum(), [r0] + list(model.parameters()))
    assert rel_error(out.detach(), ref.detach()) < 1e-13
    assert max(rel_error(a, b) for a, b in zip(g, gr)) < 1e-12
    prob.destroy()
    da.destroy()


def test_dmda_problem_names_bad_shapes():
    da = create_dmda([8], comm=SELF)
    prob = DMDAProblem(da, lambda t, patch: patch)
    with pytest.raises(pnode.ConfigurationError, match="owned values, shape"):
        prob(torch.zeros(()), torch.zeros(8, dtype=torch.float64))
    with pytest.raises(pnode.ConfigurationError, match="owned shape"):
        prob(torch.zeros(()), torch.zeros(9, dtype=torch.float64))
    with pytest.raises(pnode.ConfigurationError, match="stencil must be"):
        create_dmda([8], stencil="cross", comm=SELF)
    with pytest.raises(pnode.ConfigurationError, match="full stencil width"):
        DMDAProblem(pnode.vec.PETSc().DMDA().create([8], stencil_width=1, comm=pnode.vec.PETSc().COMM_SELF),
                    lambda t, p: p)
    prob.destroy()
    da.destroy()


def test_shard_reducer_and_root_on_one_rank():
    assert shard(7, SELF) == slice(0, 7) and is_root(SELF)
    loss, grads = data_parallel_case(SELF)
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    (w ** 2).sum().backward()
    assert GradientReducer([w], SELF).reduce(2.5) == 2.5
    assert torch.equal(w.grad, 2 * torch.ones(3, dtype=torch.float64))
    # one rank holds the whole batch: the reduced loss and gradients are autograd's through
    # the same rk4 steps
    torch.manual_seed(2)
    model, y0 = CubicMLP(), torch.randn(6, 2, dtype=torch.float64)
    ref = rk_solve(model, y0, np.linspace(0.0, float(T[-1]), round(float(T[-1]) / STEP) + 1), T.numpy(), "rk4")
    ref_loss = (ref ** 2).sum() / 6
    assert rel_error(loss, float(ref_loss.detach())) < 1e-12
    assert rel_error(grads, list(torch.autograd.grad(ref_loss, list(model.parameters())))) < 1e-10


_FAILING = textwrap.dedent("""
    import torch
    from mpi4py import MPI
    import pnode
    from pnode.distributed import DMDAProblem, create_dmda

    def func(t, patch):
        if MPI.COMM_WORLD.Get_rank() == 1 and float(t) > 0.05:
            raise ValueError("closure blew up on rank 1")
        return patch[1:-1] - patch[1:-1] ** 3

    da = create_dmda([16])
    prob = DMDAProblem(da, func)
    y0 = prob.scatter(torch.linspace(0, 1, 16, dtype=torch.float64))
    pnode.odeint(prob, y0, torch.linspace(0, 1, 3, dtype=torch.float64), method="rk4", step_size=0.01)
""")


def test_error_on_one_rank_aborts_all_ranks(tmp_path: Path):
    script = tmp_path / "fail.py"
    script.write_text(_FAILING)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_"))}
    proc = subprocess.run(["mpiexec", "-n", "2", sys.executable, str(script)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=Path(__file__).parents[1])
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rank 1 of 2 failed" in text and "closure blew up on rank 1" in text


def _reference_implicit(name: str, u0: torch.Tensor):
    """Autograd through the pure-torch implicit scheme of IMPLICIT_CASES[name] on padded fields."""
    dim, method, _ = IMPLICIT_CASES[name]
    model, diffusion = implicit_models(name)
    periodic = dim == 1
    full = lambda m: (lambda t, u: m(t, pad(u, periodic)))
    steps = np.linspace(0.0, float(T[-1]), round(float(T[-1]) / STEP) + 1)
    if method == "cn":
        out = theta_solve(full(model), u0, steps, T.numpy(), 0.5, True)
        return out, list(model.parameters())
    out = ark_solve(full(diffusion), full(model), u0, steps, T.numpy(), "l2")
    return out, list(model.parameters()) + list(diffusion.parameters())


@pytest.mark.parametrize("jacobian", ["matrix-free", "dense", "coloured"])
@pytest.mark.parametrize("name", list(IMPLICIT_CASES))
def test_implicit_dmda_problem_equals_backprop_through_torch_scheme(name, jacobian):
    loss, gu0, gp, stats = implicit_case(name, SELF, jacobian=jacobian)
    assert stats["jacobian"] == jacobian
    dim = IMPLICIT_CASES[name][0]
    r0 = initial_field(grid(dim)).requires_grad_(True)
    ref, params = _reference_implicit(name, r0)
    weights = torch.linspace(0.5, 1.5, len(T), dtype=torch.float64).view((-1,) + (1,) * dim)
    ref_loss = (weights * ref ** 2).sum() + ref[-1].sum()
    ref_grads = torch.autograd.grad(ref_loss, [r0] + params)
    assert abs(loss - ref_loss.item()) < 1e-10 * abs(ref_loss.item())
    assert rel_error(gu0, ref_grads[0]) < 1e-10
    assert max(rel_error(a, b) for a, b in zip(gp, ref_grads[1:])) < 1e-10
