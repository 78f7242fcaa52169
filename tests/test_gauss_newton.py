"""pnode.solvers.LevenbergMarquardt: damped Gauss-Newton on PETSc (Cholesky or CG)."""
import math

import pytest
import torch

from pnode.errors import ConfigurationError
from pnode.solvers import LevenbergMarquardt, NonFiniteObjectiveError, Objective
from solver_cases import DT, flat_params, sharded_regression


def linear_least_squares(m=20, n=5, seed=2):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=DT)
    b = torch.randn(m, generator=g, dtype=DT)
    x = torch.zeros(n, dtype=DT, requires_grad=True)
    return x, A, b, torch.linalg.lstsq(A, b[:, None]).solution[:, 0]


@pytest.mark.parametrize("linear_solver", ["cholesky", "cg"])
def test_linear_least_squares_is_solved_in_a_few_steps(linear_solver):
    x, A, b, xstar = linear_least_squares()
    obj = Objective(residual=lambda: A @ x - b)
    opt = LevenbergMarquardt([x], obj, linear_solver=linear_solver, damping=1e-12, progress=False, gatol=1e-10)
    result = opt.solve(max_it=10)
    assert result.converged and result.iterations <= 3, result
    assert torch.allclose(x.detach(), xstar, rtol=0, atol=1e-10)
    assert opt.last["accepted"] == 1.0 and abs(opt.last["rho"] - 1.0) < 1e-6
    opt.destroy()


def test_assembled_rows_by_the_objective_are_used_and_checked():
    x, A, b, xstar = linear_least_squares()
    calls = []

    def rows():
        calls.append(1)
        return A.clone()
    opt = LevenbergMarquardt([x], Objective(residual=lambda: A @ x - b, jacobian_rows=rows), damping=1e-12,
                             progress=False)
    opt.solve(max_it=2)
    assert calls and torch.allclose(x.detach(), xstar, atol=1e-10, rtol=0)
    opt.destroy()
    bad = LevenbergMarquardt([x], Objective(residual=lambda: A @ x - b, jacobian_rows=lambda: A[:, :2]),
                             progress=False)
    with pytest.raises(ConfigurationError, match=r"\(20, 5\) tensor"):
        bad.step()
    bad.destroy()


def test_cholesky_and_cg_take_the_same_steps_and_the_loss_decreases():
    runs = []
    for solver in ("cholesky", "cg"):
        net, _, residual = sharded_regression(None)
        opt = LevenbergMarquardt(net, Objective(residual=residual), linear_solver=solver, progress=False,
                                 options={"ksp_rtol": 1e-14, "ksp_max_it": 500} if solver == "cg" else None)
        opt.solve(max_it=6)
        runs.append((flat_params(net), torch.tensor(opt.history["loss"])))
        opt.destroy()
    (t1, l1), (t2, l2) = runs
    assert torch.all(l1[1:] <= l1[:-1]) and l1[-1] < 0.2 * l1[0]
    assert torch.allclose(l1, l2, rtol=1e-8, atol=0) and torch.allclose(t1, t2, rtol=0, atol=1e-7)


def test_resume_gives_the_iterates_of_an_uninterrupted_run(tmp_path):
    net, _, residual = sharded_regression(None)
    opt = LevenbergMarquardt(net, Objective(residual=residual), progress=False)
    opt.solve(max_it=8)
    ref = flat_params(net)
    opt.destroy()
    net, _, residual = sharded_regression(None)
    path = tmp_path / "lm.pt"
    opt = LevenbergMarquardt(net, Objective(residual=residual), progress=False, checkpoint=path, checkpoint_every=2)
    opt.solve(max_it=4)
    opt.destroy()
    net, _, residual = sharded_regression(None)
    opt = LevenbergMarquardt(net, Objective(residual=residual), progress=False)
    opt.load(path)
    assert opt.iterations == 4 and len(opt.history) == 4
    opt.solve(max_it=8)
    assert torch.allclose(flat_params(net), ref, rtol=0, atol=1e-13)
    opt.destroy()


def test_non_finite_trial_points_are_rejected_and_a_non_finite_start_raises():
    x = torch.tensor([0.5], dtype=DT, requires_grad=True)
    # r = log(x / 0.01): the Gauss-Newton step from 0.5 is -1.96, where log is NaN
    opt = LevenbergMarquardt([x], Objective(residual=lambda: torch.log(x / 0.01)), damping=1e-12, progress=False)
    loss0 = 0.5 * math.log(50) ** 2
    opt.step()
    assert opt.last["accepted"] == 0.0 and opt.damping == 2e-12
    assert float(x.detach()) == 0.5 and abs(opt.loss - loss0) < 1e-14
    result = opt.solve(max_it=200)  # the damping grows until a step is accepted, then converges
    assert abs(float(x.detach()) - 0.01) < 1e-10 and result.loss < 1e-20
    opt.destroy()
    y = torch.tensor([-1.0], dtype=DT, requires_grad=True)
    opt = LevenbergMarquardt([y], Objective(residual=lambda: torch.log(y)), progress=False)
    with pytest.raises(NonFiniteObjectiveError, match="not finite"):
        opt.step()
    opt.destroy()


def test_bad_configurations_are_named():
    x = torch.zeros(2, dtype=DT, requires_grad=True)
    with pytest.raises(ConfigurationError, match="residual"):
        LevenbergMarquardt([x], Objective(lambda: (x ** 2).sum()))
    with pytest.raises(ConfigurationError, match="linear_solver"):
        LevenbergMarquardt([x], Objective(residual=lambda: x), linear_solver="qr")


def test_a_cg_solve_stopped_by_its_iteration_cap_still_gives_the_step():
    """Two CG iterations do not solve the 5 x 5 normal equations, but they lower the model:
    the truncated steps are taken (not rejected as failed solves) and reach the minimiser."""
    x, A, b, xstar = linear_least_squares()
    opt = LevenbergMarquardt([x], Objective(residual=lambda: A @ x - b), linear_solver="cg", damping=1e-12,
                             progress=False, options={"ksp_max_it": 2})
    for _ in range(5):
        opt.step()
        assert opt.ksp.getIterationNumber() == 2 and opt.last["accepted"] == 1.0
    loss = torch.tensor(opt.history["loss"])
    assert torch.all(loss[1:] < loss[:-1])
    opt.solve(max_it=60)
    assert torch.allclose(x.detach(), xstar, rtol=0, atol=1e-8)
    opt.destroy()


def test_gram_is_the_symmetric_normal_matrix():
    """``gram(J)`` (NumPy's syrk on the CPU) equals ``J^T J`` to rounding and is exactly
    symmetric, also for rows that are not contiguous."""
    from pnode.solvers.gauss_newton import gram

    J = torch.randn(300, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for rows in (J, J[::2], J.T.contiguous().T):
        got, want = gram(rows), rows.T @ rows
        assert torch.equal(got, got.T)
        assert (got - want).abs().max() <= 1e-12 * want.abs().max()


def _ill_conditioned(m=60, n=40, seed=3):
    """``A x = b`` with 12 singular values from 1 to 1e-3 (log-spaced) and 28 between
    0.9e-3 and 1e-3: a fast-decaying head and a flat tail, as Gauss-Newton matrices of
    networks have; plain CG converges slowly, CG preconditioned on the head fast."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=DT))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    s = torch.cat([torch.logspace(0, -3, 12, dtype=DT), torch.linspace(1e-3, 0.9e-3, n - 12, dtype=DT)])
    A = U @ torch.diag(s) @ V.T
    b = torch.randn(m, generator=g, dtype=DT)
    return A, b


def test_nystrom_preconditioner_of_a_low_rank_matrix_is_exact():
    """For ``A`` of rank 6 < r = 10 the sketch recovers ``A`` to rounding and
    ``P^{-1} (A + mu I) = mu I`` (the algebra of the module docstring)."""
    from pnode.params import ParamVec
    from pnode.solvers import NystromPreconditioner

    g = torch.Generator().manual_seed(0)
    G = torch.randn(30, 6, generator=g, dtype=DT)
    A, mu = G @ G.T, 1e-3
    pvec = ParamVec([torch.zeros(30, dtype=DT)])
    pre = NystromPreconditioner(pvec, rank=10)

    def product(X, Y):
        pvec.local_of(Y).copy_(A @ pvec.local_of(X, "r"))
        Y.stateIncrease()
    pre.sketch(product, draw=0)
    U, lam = pre.U, pre.eigenvalues
    assert torch.all(lam[:-1] >= lam[1:]) and float(lam[6:].abs().max()) < 1e-10 * float(lam[0])
    assert float((U @ torch.diag(lam) @ U.T - A).abs().max()) < 1e-10 * float(A.abs().max())
    pre.shift = mu
    v = torch.randn(30, generator=g, dtype=DT)
    X, Y = pvec.duplicate(), pvec.duplicate()
    pvec.local_of(X).copy_(A @ v + mu * v)
    pre.apply(None, X, Y)
    assert torch.allclose(pvec.local_of(Y, "r"), mu * v, rtol=0, atol=1e-10 * float(v.abs().max()) * mu)
    for vec in (X, Y):
        vec.destroy()


def _lm(x, A, b, **kw):
    return LevenbergMarquardt([x], Objective(residual=lambda: A @ x - b), linear_solver="cg", damping=1e-10,
                              progress=False, **kw)


def test_nystrom_preconditioned_cg_takes_longer_strides_and_reaches_the_minimiser():
    """Five CG iterations a step on an ill-conditioned problem: with a rank-20 Nystrom
    preconditioner each step lowers the loss far more than without one, and the iterates
    reach the least-squares solution."""
    A, b = _ill_conditioned()
    losses = {}
    for rank in (0, 20):
        x = torch.zeros(A.shape[1], dtype=DT, requires_grad=True)
        opt = _lm(x, A, b, options={"ksp_max_it": 5}, nystrom_rank=rank, nystrom_every=3)
        opt.solve(max_it=6)
        losses[rank] = opt.history["loss"][-1]
        opt.destroy()
    best = 0.5 * float((A @ torch.linalg.lstsq(A, b[:, None]).solution[:, 0] - b).square().sum())
    assert losses[20] - best < 1e-3 * (losses[0] - best)
    assert losses[20] - best < 1e-8


def test_nystrom_factors_are_kept_in_the_checkpoint(tmp_path):
    A, b = _ill_conditioned()
    kw = dict(options={"ksp_max_it": 3}, nystrom_rank=8, nystrom_every=4)
    x = torch.zeros(A.shape[1], dtype=DT, requires_grad=True)
    opt = _lm(x, A, b, **kw)
    opt.solve(max_it=7)
    ref = x.detach().clone()
    opt.destroy()
    x = torch.zeros(A.shape[1], dtype=DT, requires_grad=True)
    opt = _lm(x, A, b, checkpoint=tmp_path / "lm.pt", checkpoint_every=5, **kw)
    opt.solve(max_it=5)
    opt.destroy()
    x = torch.zeros(A.shape[1], dtype=DT, requires_grad=True)
    opt = _lm(x, A, b, **kw)
    opt.load(tmp_path / "lm.pt")
    opt.solve(max_it=7)
    assert torch.allclose(x.detach(), ref, rtol=0, atol=1e-13)
    opt.destroy()


def test_nystrom_needs_cg_and_a_positive_rank():
    x = torch.zeros(2, dtype=DT, requires_grad=True)
    with pytest.raises(ConfigurationError, match="linear_solver='cg'"):
        LevenbergMarquardt([x], Objective(residual=lambda: x), nystrom_rank=4)
    with pytest.raises(ConfigurationError, match="nystrom_every"):
        LevenbergMarquardt([x], Objective(residual=lambda: x), linear_solver="cg", nystrom_rank=4,
                           nystrom_every=0)
    with pytest.raises(ConfigurationError, match="Nystrom rank"):
        LevenbergMarquardt([x], Objective(residual=lambda: x), linear_solver="cg", nystrom_rank=-1)
