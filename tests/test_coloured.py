"""The coloured (sparse) Jacobian of DMDA problems (jacobian="coloured", pnode.colouring):
entries against autograd, gradients against the other kinds, preconditioned Krylov solves,
bad inputs. Multi-rank counterparts: tests/mpi/test_coloured_mpi.py."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from mpi4py import MPI

import pnode
from coloured_cases import (DT, coloured_and_autograd, dmda_problem, global_field, gradient_case,
                            stiff_diffusion)
from helpers import rel_error
from pnode.colouring import lattice, stencil_offsets
from pnode.distributed import DMDAProblem, create_dmda, laplacian

SELF = MPI.COMM_SELF


@pytest.mark.parametrize("dim, stencil, m", [(1, "star", 3), (1, "box", 5), (2, "star", 5), (2, "box", 9)])
def test_lattice_colours_are_the_fewest_possible(dim, stencil, m):
    width = 2 if (dim, stencil) == (1, "box") else 1
    offsets = stencil_offsets(dim, width, stencil)
    got, q = lattice(offsets)
    assert got == m == len(offsets)  # one colour per stencil point: the lower bound
    # no two points of one colour share a stencil point, over a grid larger than the reach
    grid = np.indices((11,) * dim).reshape(dim, -1).T
    colour = (grid[:, -1] + (q * grid[:, 0] if dim > 1 else 0)) % got
    reach = {tuple(a - b) for a in offsets for b in offsets}
    for c in range(got):
        pts = grid[colour == c]
        diffs = {tuple(d) for d in (pts[:, None] - pts[None]).reshape(-1, dim)} - {(0,) * dim}
        assert not diffs & reach


@pytest.mark.parametrize("dof", [1, 2])
@pytest.mark.parametrize("boundary", ["periodic", "ghosted"])
def test_coloured_jacobian_equals_autograd(dof, boundary):
    prob = dmda_problem(dof, SELF, boundary=boundary)
    got, count, want = coloured_and_autograd(prob)
    assert count == 5 * dof  # star stencil of width 1: five colours per species
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    assert (want != 0).sum() >= 4 * len(want)  # rows reach their neighbours


def test_coloured_jacobian_equals_autograd_on_1d_box():
    """A 1-D periodic box stencil of width 1 (three colours) with a 3-point convolution."""
    conv = torch.nn.Conv1d(1, 1, 3).double()
    prob = dmda_problem(1, SELF, dim=1, stencil="box", func=lambda t, p: torch.tanh(conv(p[None, None])[0, 0]))
    got, count, want = coloured_and_autograd(prob)
    assert count == 3
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()


@pytest.mark.parametrize("method, kw", [("beuler", dict(step_size=0.025)),
                                        ("theta", dict(step_size=0.025)),
                                        ("arkimex", dict(rtol=1e-6, atol=1e-8, options={"ts_arkimex_type": "3"}))])
def test_gradients_equal_the_other_kinds(method, kw):
    """Through TSAdjoint, the coloured kind's loss and gradients equal the matrix-free and
    dense kinds' (all solve their linear systems to 1e-12)."""
    results = {j: gradient_case(SELF, j, method, **kw) for j in ("coloured", "matrix-free", "dense")}
    loss, gu0, gp, stats = results["coloured"]
    assert stats["jacobian"] == "coloured"
    for other in ("matrix-free", "dense"):
        ref_loss, ref_gu0, ref_gp, ref_stats = results[other]
        assert stats["steps"] == ref_stats["steps"]
        assert abs(loss - ref_loss) < 1e-10 * abs(ref_loss)
        assert rel_error(gu0, ref_gu0) < 1e-9
        assert max(rel_error(a, b) for a, b in zip(gp, ref_gp)) < 1e-9


def test_eisenstat_walker_forward_keeps_the_adjoint_exact():
    """``snes_ksp_ew`` loosens the forward GMRES solves (a quarter of the iterations here),
    and PETSc would apply it to the adjoint's transposed solves too, from the last Newton
    solve's state (gradients 2e-4 off): pnode switches it off for the adjoint, so the
    gradients equal those without it, and back on, so the next forward solve uses it."""
    ref = gradient_case(SELF, "coloured", "beuler", step_size=0.025)
    prob = dmda_problem(2, SELF, boundary="ghosted")
    try:
        y0 = prob.scatter(global_field(prob)).requires_grad_(True)
        ode = pnode.NeuralODE(prob, method="beuler", jacobian="coloured", step_size=0.025,
                              options={"snes_ksp_ew": True})
        krylov = []
        for _ in range(2):
            out = ode(y0, torch.tensor([0.0, 0.05, 0.1], dtype=DT))
            krylov.append(ode.stats["krylov_iterations"])
            local = (out ** 2).sum() + out[-1, ..., 0].sum()
            grads = torch.autograd.grad(local, [y0] + list(prob.parameters()))
    finally:
        prob.destroy()
        prob.da.destroy()
    assert krylov[0] == krylov[1] < 0.5 * ref[3]["krylov_iterations"]
    assert abs(float(local.detach()) - ref[0]) < 1e-10 * abs(ref[0])
    assert rel_error(grads[0], ref[1]) < 1e-9
    assert max(rel_error(a, b) for a, b in zip(grads[1:], ref[2])) < 1e-9


def test_adjoint_ksp_rtol_sets_the_adjoint_solves_apart():
    """``adjoint_ksp_rtol`` (read by pnode, no unread-option warning): inexact forward
    Newton steps at ``ksp_rtol`` 1e-2 with the adjoint's solves at 1e-12 give the gradients
    of the tight solve (the forward's error stays within the Newton tolerance); without it
    the adjoint solves at 1e-2 too and the gradients are visibly off."""
    kw = dict(step_size=0.025)
    ref = gradient_case(SELF, "coloured", "beuler", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pnode.PnodeWarning)
        split = gradient_case(SELF, "coloured", "beuler", options={"ksp_rtol": 1e-2, "adjoint_ksp_rtol": 1e-12}, **kw)
    loose = gradient_case(SELF, "coloured", "beuler", options={"ksp_rtol": 1e-2}, **kw)
    assert split[3]["krylov_iterations"] < 0.5 * ref[3]["krylov_iterations"]
    assert abs(split[0] - ref[0]) < 1e-10 * abs(ref[0])
    assert rel_error(split[1], ref[1]) < 1e-8
    assert max(rel_error(a, b) for a, b in zip(split[2], ref[2])) < 1e-8
    assert rel_error(loose[1], ref[1]) > 1e-6


def test_preconditioned_krylov_beats_unpreconditioned_gmres():
    """Stiff diffusion (nu dt / h^2 = 400): on the coloured matrix, block Jacobi/ILU(0) needs
    under a quarter of the GMRES iterations of the matrix-free shell, GAMG under a fifteenth
    (measured: 1600, 297, 76), for the same states."""
    out, stats = stiff_diffusion(SELF, "coloured")
    ref, ref_stats = stiff_diffusion(SELF, "matrix-free")
    assert rel_error(out, ref) < 1e-9
    assert stats["newton_iterations"] == ref_stats["newton_iterations"]
    assert ref_stats["krylov_iterations"] > 4 * stats["krylov_iterations"]
    gamg, gamg_stats = stiff_diffusion(SELF, "coloured", {"pc_type": "gamg"})  # any PC, by options
    assert rel_error(gamg, ref) < 1e-9
    assert ref_stats["krylov_iterations"] > 15 * gamg_stats["krylov_iterations"]


def test_sub_solver_options_of_the_dict_reach_block_jacobi():
    """Block Jacobi sets its sub-solvers up at the first solve, after setFromOptions: options
    for them given in the dict are read there (ILU(2) blocks take fewer GMRES iterations than
    ILU(0), Jacobi blocks more; measured 140, 297, 1601), and a misspelt one still warns."""
    _, ilu0 = stiff_diffusion(SELF, "coloured")
    _, ilu2 = stiff_diffusion(SELF, "coloured", {"sub_pc_factor_levels": 2})
    with pytest.warns(pnode.PnodeWarning, match="sub_pc_factor_levelz"):
        _, jacobi = stiff_diffusion(SELF, "coloured", {"sub_pc_type": "jacobi", "sub_pc_factor_levelz": 1})
    assert ilu2["krylov_iterations"] < 0.7 * ilu0["krylov_iterations"]
    assert jacobi["krylov_iterations"] > 3 * ilu0["krylov_iterations"]


def test_auto_picks_coloured_for_dmda_problems():
    _, stats = stiff_diffusion(SELF, "auto", newton=pnode.Newton(reuse=True))
    assert stats["jacobian"] == "coloured"
    assert stats["jacobian_evaluations"] < stats["newton_iterations"]  # kept across Newton iterations


def test_func_reaching_past_its_stencil_raises():
    """A box (3x3) convolution on a star DMDA, and a patch mean, are not star-local."""
    conv = torch.nn.Conv2d(1, 1, 3).double()
    cases = [lambda t, p: conv(p[None, None])[0, 0],
             lambda t, p: laplacian(p, 0.1, 1, 2) + p.mean()]
    for func in cases:
        prob = dmda_problem(1, SELF, func=func)
        try:
            with pytest.raises(pnode.ConfigurationError, match="couple each point only"):
                pnode.odeint(prob, prob.scatter(global_field(prob)), torch.tensor([0.0, 0.1], dtype=DT),
                             method="beuler", step_size=0.1, jacobian="coloured")
        finally:
            prob.destroy()
            prob.da.destroy()


def test_coloured_needs_a_dmda_problem():
    with pytest.raises(pnode.ConfigurationError, match="needs the implicit part to be a pnode.distributed.DMDAProblem"):
        pnode.odeint(lambda t, y: -y, torch.ones(4, dtype=DT), torch.tensor([0.0, 0.1], dtype=DT),
                     method="beuler", step_size=0.1, jacobian="coloured")
    da = create_dmda([8], comm=SELF)
    prob = DMDAProblem(da, lambda t, p: p[1:-1])
    try:
        with pytest.raises(pnode.ConfigurationError, match="does not take jac="):
            pnode.odeint(prob, torch.ones(8, dtype=DT), torch.tensor([0.0, 0.1], dtype=DT), method="beuler",
                         step_size=0.1, jacobian="coloured", jac=lambda t, y: torch.eye(8, dtype=DT))
    finally:
        prob.destroy()
        da.destroy()
