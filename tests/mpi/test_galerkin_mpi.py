"""Under mpiexec -n 2: neural-Galerkin marching with the sample points split over the ranks
gives the trajectory and the adjoint gradients of one rank."""
import dataclasses

import pytest
import torch
from mpi4py import MPI

import pnode
from galerkin_cases import EVAL, SMALL, final_loss, ga

WORLD = MPI.COMM_WORLD


def run(comm):
    """theta at four output times (rk4), and the adjoint gradients of the final-time loss
    with respect to the speed and theta(0)."""
    problem = ga.build(SMALL, comm)
    theta0 = problem.flat()
    t = torch.linspace(0, SMALL.T, 4, dtype=torch.float64)
    path = pnode.odeint(problem, theta0, t, method="rk4", step_size=SMALL.T / SMALL.rk4_steps)
    theta0.requires_grad_()
    final_loss(problem, theta0, SMALL, pnode.odeint_adjoint).backward()
    return problem.points.shape[0], path, problem.rhs.speed.grad.clone(), theta0.grad.clone()


def test_split_samples_give_the_trajectory_and_gradients_of_one_rank():
    local, path, dspeed, dtheta = run(WORLD)
    _, ref_path, ref_dspeed, ref_dtheta = run(MPI.COMM_SELF)
    assert WORLD.allreduce(local) == SMALL.samples and local == SMALL.samples // WORLD.Get_size()
    # the ranks' partial sums add in another order than one rank's sum; the solve with
    # cond(M + eps I) ~ 1e6 (SMALL's shift) amplifies that rounding to ~1e-11 (measured)
    scale = float(ref_path.abs().max())
    assert float((path - ref_path).abs().max()) <= 1e-9 * scale
    assert abs(float(dspeed - ref_dspeed)) <= 1e-9 * abs(float(ref_dspeed))
    assert float((dtheta - ref_dtheta).norm()) <= 1e-9 * float(ref_dtheta.norm())


def test_dense_newton_jacobians_on_several_ranks_raise_on_every_rank():
    # each rank's TS is on COMM_SELF, so "auto" takes the dense Jacobian of batched VJPs
    problem = ga.build(SMALL, WORLD)
    theta0 = problem.flat().requires_grad_()
    with pytest.raises(pnode.ConfigurationError, match="batched VJPs.*jacobian='matrix-free'"):
        final_loss(problem, theta0, SMALL, pnode.odeint_adjoint, "cn")


IMPLICIT = dataclasses.replace(SMALL, regularization=1e-2, T=0.02)
NEWTON = {"snes_rtol": 1e-12, "snes_atol": 1e-13, "snes_linesearch_type": "basic"}


def implicit_run(comm):
    """theta(T) of the implicit mass form (midpoint rule, matrix-free Newton: its
    Jacobian-vector products differentiate the backward Allreduce) and the adjoint
    gradient of the final-time loss with respect to the speed."""
    problem = ga.build(IMPLICIT, comm)
    force, mass = problem.implicit_form()
    theta0 = problem.flat().requires_grad_()
    t = torch.tensor([0.0, IMPLICIT.T], dtype=torch.float64)
    theta = pnode.odeint_adjoint(force, theta0, t, method="theta", step_size=IMPLICIT.T / 2, mass=mass,
                                 options=NEWTON, jacobian="matrix-free")[-1]
    ((problem.solution(theta, EVAL) - ga.exact(EVAL, IMPLICIT.T, 0.9)) ** 2).mean().backward()
    return theta.detach(), problem.rhs.speed.grad.clone(), theta0.grad.clone()


def test_implicit_mass_form_on_split_samples_equals_one_rank():
    theta, dspeed, dtheta = implicit_run(WORLD)
    ref_theta, ref_dspeed, ref_dtheta = implicit_run(MPI.COMM_SELF)
    # Newton stops within its tolerance (1e-12 relative) on either side; GMRES's iterates
    # see the ranks' rounding (the partial sums add in another order)
    assert float((theta - ref_theta).abs().max()) <= 1e-9 * float(ref_theta.abs().max())
    assert abs(float(dspeed - ref_dspeed)) <= 1e-8 * abs(float(ref_dspeed))
    assert float((dtheta - ref_dtheta).norm()) <= 1e-8 * float(ref_dtheta.norm())


def test_initial_fit_with_residual_rows_split_equals_one_rank():
    fits = []
    for comm in (WORLD, MPI.COMM_SELF):
        problem = ga.build(ga.Config(), comm)
        theta0, result = problem.fit(ga.bump, max_it=8)
        fits.append((theta0, result.loss, len(problem.points)))
    (theta0, loss, local), (ref_theta0, ref_loss, _) = fits
    # J^T J and J^T r are summed over the ranks in another order than one rank's product:
    # the iterates part by rounding only (a random start, not the example's guess, so the
    # eight steps are far from the minimum and the comparison is not trivial)
    assert local == ga.Config().samples // WORLD.Get_size()
    assert abs(loss - ref_loss) <= 1e-9 * ref_loss
    assert float((theta0 - ref_theta0).abs().max()) <= 1e-9 * float(ref_theta0.abs().max())
