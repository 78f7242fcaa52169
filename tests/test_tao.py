"""pnode.solvers.TaoSolver: torch models minimised by PETSc TAO (real PETSc, real torch)."""
import math

import pytest
import torch

import pnode
from pnode.errors import BuildMismatchError, ConfigurationError
from pnode.solvers import NonFiniteObjectiveError, Objective, TaoSolver, minimize, tao_reason
from pnode.startup import PETSc
from solver_cases import DT, flat_params, mlp, regression_data, sharded_regression


def quadratic(n=6, seed=3):
    """f(x) = 0.5 (x - x*)^T A (x - x*) with A SPD and x* = A^{-1} b: the gradient of
    0.5 x^T A x - b^T x, written so that f(x*) = 0. Near x* a decrease of f is then
    resolved in float64 (with the constant -0.5 b^T x* it is not: at |grad| ~ 1e-9 the
    decrease, ~1e-19, is below the rounding of f ~ -0.2, and the line search fails or not
    by chance)."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.randn(n, n, generator=g, dtype=DT)
    A = Q @ Q.T + n * torch.eye(n, dtype=DT)
    b = torch.randn(n, generator=g, dtype=DT)
    xstar = torch.linalg.solve(A, b)
    x = torch.zeros(n, dtype=DT, requires_grad=True)
    return x, (lambda: 0.5 * (x - xstar) @ (A @ (x - xstar))), xstar


def lmvm_type_of(tao, tmp_path) -> str:
    """The LMVM matrix type TAO reports in its view (TaoGetLMVMMatrix serves BQNK types only)."""
    path = str(tmp_path / "view.txt")
    viewer = PETSc().Viewer().createASCII(path)
    tao.view(viewer)
    viewer.destroy()
    lines = open(path).read().split("LMVM Matrix:")[1].splitlines()
    return next(ln.split("type:")[1].strip() for ln in lines if "type:" in ln)


@pytest.mark.parametrize("tao_type", ["lmvm", "bqnls"])
@pytest.mark.parametrize("lmvm,mat", [("bfgs", "lmvmbfgs"), ("sr1", "lmvmsr1"), ("symbroyden", "lmvmsymbroyden")])
def test_lmvm_matrix_is_selectable_and_finds_the_minimiser(tao_type, lmvm, mat, tmp_path):
    x, f, xstar = quadratic()
    solver = TaoSolver([x], Objective(f), tao_type=tao_type, lmvm=lmvm, progress=False,
                       options={"tao_gatol": 1e-9, "tao_grtol": 0.0})
    result = solver.solve(max_it=200)
    if tao_type == "bqnls":
        assert solver.tao.getLMVMMat().getType() == mat
    else:
        assert lmvm_type_of(solver.tao, tmp_path) == mat
    assert result.converged and result.words.startswith("CONVERGED_GATOL")
    assert torch.allclose(x.detach(), xstar, rtol=0, atol=1e-9)
    solver.destroy()


def test_hessian_products_by_double_backward_equal_the_assembled_hessian():
    x, y = regression_data(12)
    net = mlp(width=3)
    solver = TaoSolver(net, Objective(lambda: 0.5 * ((net(x) - y) ** 2).sum()), tao_type="ntr", progress=False)
    ev, pv = solver.evaluator, solver.pvec
    flat0 = flat_params(net)

    def f_flat(theta):
        params = dict(zip([n for n, _ in net.named_parameters()], pv.buffer.unpack(theta)))
        out = torch.func.functional_call(net, params, (x,))
        return 0.5 * ((out - y) ** 2).sum()
    H = torch.autograd.functional.hessian(f_flat, flat0)
    ev.linearise_gradient(pv.pull())
    V, Y = pv.duplicate(), pv.duplicate()
    v = torch.randn(pv.numel, dtype=DT)
    pv.local_of(V).copy_(v)
    ev.value(V)  # moves the model elsewhere: the product must record the graph again
    ev.hessian_product(V, Y)
    assert torch.allclose(pv.local_of(Y), H @ v, rtol=1e-12, atol=1e-12)
    solver.destroy()


def rosenbrock():
    x = torch.tensor([-1.2, 1.0], dtype=DT, requires_grad=True)
    return x, lambda: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


@pytest.mark.parametrize("tao_type,ksp", [("ntr", "stcg"), ("ntr", "gltr"), ("nls", "stcg"), ("bntr", "nash")])
def test_newton_types_with_hessian_shells_converge_on_rosenbrock(tao_type, ksp):
    x, f = rosenbrock()
    prefix = "ros_"
    key = {"ntr": "tao_ntr_ksp_type", "nls": "tao_nls_ksp_type", "bntr": "tao_bnk_ksp_type"}[tao_type]
    solver = TaoSolver([x], f, tao_type=tao_type, options={key: ksp, "tao_gatol": 1e-10}, options_prefix=prefix,
                       progress=False)
    result = solver.solve(max_it=100)
    assert solver.tao.getKSP().getType() == ksp
    assert result.converged, result.words
    assert torch.allclose(x.detach(), torch.ones(2, dtype=DT), atol=1e-8)
    assert result.iterations < 60  # Newton, not a first-order crawl
    if tao_type in ("ntr", "bntr"):
        assert all(r > 0 for r in solver.history["radius"][1:])
    solver.destroy()


def decay_fit(jacobian):
    """A zero-residual least-squares problem: y = a exp(-k t) + c."""
    t = torch.linspace(0, 2, 25, dtype=DT)
    data = 1.5 * torch.exp(-0.7 * t) + 0.25
    theta = torch.tensor([1.0, 1.0, 0.0], dtype=DT, requires_grad=True)

    def residual():
        return theta[0] * torch.exp(-theta[1] * t) + theta[2] - data
    return theta, Objective(residual=residual, jacobian=jacobian), residual


@pytest.mark.parametrize("jacobian", ["shell", "dense"])
def test_jacobian_products_equal_autograd_jacobian(jacobian):
    theta, obj, residual = decay_fit(jacobian)
    solver = TaoSolver([theta], obj, tao_type="brgn", progress=False)
    ev, pv = solver.evaluator, solver.pvec
    J = torch.autograd.functional.jacobian(lambda th: th[0] * torch.exp(-th[1] * torch.linspace(0, 2, 25, dtype=DT))
                                           + th[2], theta.detach())
    ev.linearise_residual(pv.pull())
    V, Y = pv.duplicate(), PETSc().Vec().createSeq(25)
    v = torch.tensor([0.3, -1.1, 2.0], dtype=DT)
    pv.local_of(V).copy_(v)
    ev.jacobian_product(V, Y)
    assert torch.allclose(pnode.as_tensor(Y), J @ v, rtol=1e-13, atol=1e-13)
    w = torch.randn(25, dtype=DT)
    pnode.as_tensor(Y).copy_(w)
    ev.jacobian_transpose_product(Y, V)
    assert torch.allclose(pv.local_of(V), J.T @ w, rtol=1e-13, atol=1e-13)
    if jacobian == "dense":
        assert torch.allclose(ev.dense_jacobian(), J, rtol=1e-14, atol=1e-14)
    solver.destroy()


@pytest.mark.parametrize("jacobian,regularization", [("shell", "l2prox"), ("dense", "l2prox"), ("dense", "lm")])
def test_gauss_newton_fits_a_zero_residual_problem_to_rounding(jacobian, regularization):
    theta, obj, _ = decay_fit(jacobian)
    solver = TaoSolver([theta], obj, tao_type="brgn", progress=False,
                       options={"tao_brgn_regularization_type": regularization, "tao_brgn_regularizer_weight": 1e-10,
                                "tao_gatol": 1e-14, "tao_grtol": 0.0, "tao_gttol": 0.0})
    solver.solve(max_it=60)
    assert torch.allclose(theta.detach(), torch.tensor([1.5, 0.7, 0.25], dtype=DT), atol=1e-9)
    assert len(solver.history) > 1 and solver.history["loss"][-1] < 1e-18
    solver.destroy()


def test_bound_constrained_type_respects_bounds():
    x = torch.zeros(3, dtype=DT, requires_grad=True)
    target = torch.tensor([2.0, -3.0, 0.25], dtype=DT)
    solver = TaoSolver([x], lambda: ((x - target) ** 2).sum(), tao_type="blmvm", bounds=(-1.0, 1.0), progress=False)
    solver.solve(max_it=50)
    assert torch.allclose(x.detach(), target.clamp(-1, 1), atol=1e-10)
    solver.destroy()


def test_command_line_wins_over_arguments_and_options_reach_the_ksp():
    x, f = rosenbrock()
    db = PETSc().Options()
    db.setValue("cli_tao_type", "ntr")
    try:
        solver = TaoSolver([x], f, tao_type="lmvm", options_prefix="cli_",
                           options={"tao_ntr_ksp_type": "nash", "tao_max_it": 7}, progress=False)
        assert solver.tao.getType() == "ntr" and solver.tao_type == "ntr"
        assert solver.tao.getKSP().getType() == "nash"
        result = solver.solve(max_it=500)
        assert result.iterations == 7 and result.reason == -2
        solver.destroy()
    finally:
        db.delValue("cli_tao_type")


def test_history_records_each_iteration_and_losses_decrease():
    net, closure, _ = sharded_regression(None)
    solver = TaoSolver(net, closure, tao_type="lmvm", progress=False)
    result = solver.solve(max_it=15)
    h = solver.history
    assert len(h) == result.iterations + 1 == 16
    assert h["iteration"] == [float(i) for i in range(16)]
    assert all(b <= a for a, b in zip(h["loss"], h["loss"][1:]))
    assert result.loss == h["loss"][-1] and abs(result.loss - float(closure().detach())) < 1e-15
    assert math.isnan(h["radius"][0])  # a line-search type has no radius
    solver.destroy()


def test_resume_continues_iterations_history_and_iterate(tmp_path):
    path = tmp_path / "tao.pt"
    net, closure, _ = sharded_regression(None)
    first = TaoSolver(net, closure, tao_type="ntr", progress=False, checkpoint=path, checkpoint_every=2)
    first.solve(max_it=6)
    saved = flat_params(net)
    first.destroy()
    net2, closure2, _ = sharded_regression(None)
    second = TaoSolver(net2, closure2, tao_type="ntr", progress=False)
    second.load(path)
    assert torch.equal(flat_params(net2), saved)
    assert second.iterations == 6 and len(second.history) == 7
    result = second.solve(max_it=10)
    assert result.iterations == 10 and len(second.history) == 11
    assert second.history["iteration"] == [float(i) for i in range(11)]
    assert second.history["loss"][-1] < second.history["loss"][6]
    with pytest.raises(ConfigurationError, match="not a TaoSolver"):
        TaoSolver(torch.nn.Linear(3, 3).to(DT), lambda: torch.zeros((), dtype=DT), progress=False).load(path)
    second.destroy()


def test_non_finite_loss_raises_and_keeps_the_last_good_iterate():
    net, closure, _ = sharded_regression(None)
    calls = {"n": 0}

    def breaking():
        calls["n"] += 1
        loss = closure()
        return loss * float("nan") if calls["n"] > 6 else loss
    solver = TaoSolver(net, breaking, tao_type="lmvm", progress=False)
    with pytest.raises(NonFiniteObjectiveError, match="loss is not finite"):
        solver.solve(max_it=50)
    assert len(solver.history) >= 2
    assert float(closure().detach()) == solver.history["loss"][-1]  # the model holds the last accepted iterate
    solver.destroy()


def test_non_finite_gradient_is_named():
    x = torch.tensor([1.0], dtype=DT, requires_grad=True)
    solver = TaoSolver([x], lambda: torch.sqrt(x.abs() * 0).sum() + x.sum(), progress=False)
    with pytest.raises(NonFiniteObjectiveError, match="gradient is not finite"):
        solver.solve(max_it=3)
    assert float(x.detach()) == 1.0
    solver.destroy()


def test_bad_inputs_give_clear_errors():
    x = torch.zeros(2, dtype=DT, requires_grad=True)
    with pytest.raises(ConfigurationError, match="unknown TAO type 'lbfgs'"):
        TaoSolver([x], lambda: x.sum(), tao_type="lbfgs")
    with pytest.raises(ConfigurationError, match="scalar torch tensor"):
        TaoSolver([x], lambda: x * 2, progress=False).solve()
    with pytest.raises(BuildMismatchError, match="float32"):
        TaoSolver([torch.zeros(2, requires_grad=True)], lambda: x.sum())
    with pytest.raises(ConfigurationError, match="least-squares"):
        TaoSolver([x], lambda: x.sum(), tao_type="brgn")
    with pytest.raises(ConfigurationError, match="quasi-Newton matrix"):
        TaoSolver([x], lambda: x.sum(), tao_type="ntr", lmvm="sr1")
    with pytest.raises(ConfigurationError, match="unknown LMVM"):
        TaoSolver([x], lambda: x.sum(), lmvm="lbfgs")
    with pytest.raises(ConfigurationError, match="exactly one"):
        Objective()
    theta, shell, _ = decay_fit("shell")
    with pytest.raises(ConfigurationError, match="column norms"):
        TaoSolver([theta], shell, tao_type="brgn", options={"tao_brgn_regularization_type": "lm"})

    z = torch.ones(2, dtype=DT, requires_grad=True)

    def torch_style():
        loss = (z ** 2).sum()
        loss.backward()
        return loss
    solver = TaoSolver([z], torch_style, tao_type="ntr", progress=False)
    with pytest.raises(ConfigurationError, match="without calling"):
        solver.solve(max_it=3)
    solver.destroy()


def test_torch_style_closure_works_for_first_order_types():
    x = torch.tensor([3.0, -2.0], dtype=DT, requires_grad=True)

    def torch_style():
        loss = ((x - 1) ** 2).sum()
        loss.backward()
        return loss
    result = minimize([x], torch_style, tao_type="lmvm", progress=False, max_it=30)
    assert result.converged and torch.allclose(x.detach(), torch.ones(2, dtype=DT), atol=1e-7)
    assert tao_reason(-6).startswith("DIVERGED_LS_FAILURE")


def test_neural_ode_trained_by_tao_through_the_discrete_adjoint():
    torch.manual_seed(0)
    A_true = torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=DT)
    t = torch.linspace(0, 2, 9, dtype=DT)
    y0 = torch.tensor([1.0, 0.5], dtype=DT)
    with torch.no_grad():
        data = pnode.odeint(lambda s, y: A_true @ y, y0, t, method="rk4", step_size=0.05)
    func = torch.nn.Linear(2, 2, bias=False).to(DT)
    torch.nn.init.zeros_(func.weight)

    def closure():
        pred = pnode.odeint_adjoint(lambda s, y: func(y), y0, t, method="rk4", step_size=0.05,
                                    adjoint_params=list(func.parameters()))
        return 0.5 * ((pred - data) ** 2).sum()
    solver = TaoSolver(func, closure, tao_type="lmvm", progress=False, options={"tao_gatol": 1e-11})
    result = solver.solve(max_it=100)
    assert result.converged, result.words
    assert torch.allclose(func.weight.detach(), A_true, atol=1e-8)
    solver.destroy()
