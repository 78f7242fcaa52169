"""Unrolled iterations and proximal pieces: the classical algorithms (parameters not
learned) reach the LASSO solution (its optimality conditions), a PETSc Mat operator gives
the values and gradients of the same network on a torch matrix, and bad input raises."""
import pytest
import torch

from pnode import ConfigurationError, TensorProducts, shell_mat
from pnode.solvers.unrolling import (Box, L2Ball, Learned, SoftThreshold, SupportSelection, Unrolled,
                                     as_operator, conjugate_gradient)
from unrolling_cases import aij, lasso_kkt_violation, sparse_problem

LAM = 0.05


def test_prox_pieces():
    v = torch.tensor([[-2.0, -0.5, 0.1, 0.3, 3.0]], dtype=torch.float64)
    assert torch.allclose(SoftThreshold()(v, torch.tensor(0.4, dtype=torch.float64)),
                          torch.tensor([[-1.6, -0.1, 0.0, 0.0, 2.6]], dtype=torch.float64), rtol=0, atol=1e-15)
    # 40% of 5 entries: the two largest pass unchanged, the others are shrunk
    ss = SupportSelection(0.4)(v, torch.tensor(0.4, dtype=torch.float64))
    assert torch.allclose(ss, torch.tensor([[-2.0, -0.1, 0.0, 0.0, 3.0]], dtype=torch.float64))
    assert torch.equal(SupportSelection(0.0)(v, torch.tensor(0.4, dtype=torch.float64)), SoftThreshold()(v, torch.tensor(0.4, dtype=torch.float64)))
    assert torch.equal(Box(-1, 1)(v, None), v.clamp(-1, 1))
    ball = L2Ball(1.0)(v, None)
    assert abs(float(ball.norm()) - 1.0) < 1e-14 and torch.allclose(ball / ball.norm(), v / v.norm())
    assert torch.equal(L2Ball(10.0)(v, None), v)
    net = torch.nn.Linear(5, 5, dtype=torch.float64)
    assert torch.allclose(Learned(net)(v, torch.tensor(0.5, dtype=torch.float64)), v - 0.5 * net(v))
    with pytest.raises(ConfigurationError, match="keep the signal's shape"):
        Learned(torch.nn.Linear(5, 3, dtype=torch.float64))(v, torch.tensor(0.5, dtype=torch.float64))


@pytest.mark.parametrize("algorithm", ["ista", "fista", "admm", "chambolle-pock"])
def test_classical_algorithms_solve_the_lasso(algorithm):
    A, x, y = sparse_problem(30, 40)
    net = Unrolled(A, algorithm, 1000, weight=0.1, learn=False)
    assert not list(net.parameters())
    with torch.no_grad():
        xhat = net(y)
    assert lasso_kkt_violation(A, y, xhat, 0.1) < 1e-8


def test_conjugate_gradient_solves_spd_systems():
    A, _, _ = sparse_problem()
    op = as_operator(A)
    b = torch.randn(2, 40, dtype=torch.float64)
    x = conjugate_gradient(lambda v: op.gram(v) + 0.5 * v, b, torch.zeros_like(b), 40, op.dot)
    assert torch.allclose(x @ (A.T @ A + 0.5 * torch.eye(40, dtype=torch.float64)), b, atol=1e-10)


@pytest.mark.parametrize("algorithm", ["fista", "admm", "chambolle-pock"])
def test_petsc_operator_gives_the_tensor_network(algorithm):
    A, x, y = sparse_problem()
    nets = [Unrolled(M, algorithm, 6, weight=LAM, lipschitz=4.0) for M in (A, aij(A))]
    nets[1].load_state_dict(nets[0].state_dict())
    outs, grads = [], []
    for net in nets:
        loss = ((net(y) - x) ** 2).sum()
        grads.append(torch.autograd.grad(loss, list(net.parameters())))
        outs.append(net(y).detach())
    assert torch.allclose(outs[0], outs[1], rtol=1e-12, atol=1e-14)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)


def test_tied_and_untied_parameters_and_layers():
    A, _, y = sparse_problem()
    untied, tied = Unrolled(A, "ista", 5, lipschitz=4.0), Unrolled(A, "ista", 5, tied=True, lipschitz=4.0)
    assert [p.numel() for p in untied.parameters()] == [5, 5]
    assert [p.numel() for p in tied.parameters()] == [1, 1]
    assert torch.equal(untied(y, layers=2), untied(y, every=True)[1])
    assert torch.equal(tied(y), untied(y))  # the same classical start


def test_bad_input_raises():
    A, _, y = sparse_problem()
    net = Unrolled(A, "ista", 3, lipschitz=4.0)
    with pytest.raises(ConfigurationError, match="20 values .* last dimension"):
        net(torch.zeros(2, 21, dtype=torch.float64))
    with pytest.raises(ConfigurationError, match="initial guess x0 must have"):
        net(y, x0=torch.zeros(3, 39, dtype=torch.float64))
    bad = y.clone()
    bad[0, 1] = float("nan")
    with pytest.raises(ConfigurationError, match="non-finite"):
        net(bad)
    with pytest.raises(ConfigurationError, match="non-finite"):
        Unrolled(torch.full((3, 4), float("inf"), dtype=torch.float64), "ista", 2)
    with pytest.raises(ConfigurationError, match="unknown algorithm"):
        Unrolled(A, "gauss-seidel", 3)
    shell = shell_mat(TensorProducts(lambda v: A @ v), 20, 40)
    with pytest.raises(ConfigurationError, match="needs the transpose"):
        Unrolled(as_operator(shell, transpose_available=False), "fista", 3, lipschitz=4.0)
