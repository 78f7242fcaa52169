"""pnode.pinn.operators against analytic derivatives (float64, to 1e-12)."""
import math

import torch

from pnode.pinn import operators as ops

DT = torch.float64


def f(x):
    return torch.sin(x[0]) * torch.exp(x[1]) * x[2] ** 2


def grad_f(x):
    s, c, e = torch.sin(x[0]), torch.cos(x[0]), torch.exp(x[1])
    return torch.stack([c * e * x[2] ** 2, s * e * x[2] ** 2, 2 * s * e * x[2]])


def hess_f(x):
    s, c, e, z = torch.sin(x[0]), torch.cos(x[0]), torch.exp(x[1]), x[2]
    return torch.tensor([[-s * e * z ** 2, c * e * z ** 2, 2 * c * e * z],
                         [c * e * z ** 2, s * e * z ** 2, 2 * s * e * z],
                         [2 * c * e * z, 2 * s * e * z, 2 * s * e]], dtype=DT)


def points(n=16):
    return torch.rand(n, 3, dtype=DT, generator=torch.Generator().manual_seed(4)) * 2 - 1


def test_directional_derivatives_match_the_analytic_ones():
    v = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    for x in points(4):
        value, first, second = ops.directional(f, x, v)
        assert abs(float(value - f(x))) < 1e-14
        assert abs(float(first - grad_f(x) @ v)) < 1e-12
        assert abs(float(second - v @ hess_f(x) @ v)) < 1e-12


def test_gradient_hessian_laplacian_match_the_analytic_ones():
    X = points()
    g = ops.batched(ops.gradient(f))(X)
    H = ops.batched(ops.hessian(f))(X)
    lap = ops.batched(ops.laplacian(f))(X)
    lap_space = ops.batched(ops.laplacian(f, slice(0, 2)))(X)
    for i, x in enumerate(X):
        assert torch.allclose(g[i], grad_f(x), rtol=0, atol=1e-12)
        assert torch.allclose(H[i], hess_f(x), rtol=0, atol=1e-12)
        assert abs(float(lap[i] - hess_f(x).trace())) < 1e-12
        assert abs(float(lap_space[i] - hess_f(x)[:2, :2].trace())) < 1e-12


def test_time_derivative_is_the_last_partial_and_divergence_the_trace():
    X = points()
    dt = ops.batched(ops.time_derivative(f))(X)
    dx0 = ops.batched(ops.time_derivative(f, axis=0))(X)
    div = ops.batched(ops.divergence(grad_f))(X)
    for i, x in enumerate(X):
        assert abs(float(dt[i] - grad_f(x)[2])) < 1e-12
        assert abs(float(dx0[i] - grad_f(x)[0])) < 1e-12
        assert abs(float(div[i] - hess_f(x).trace())) < 1e-12


def test_derivatives_in_one_pass_and_vector_jacobian():
    X = points()
    u, g, H = ops.batched(lambda x: ops.derivatives(f, x))(X)
    u1, g1 = ops.batched(lambda x: ops.derivatives(f, x, order=1))(X)
    J = ops.batched(ops.jacobian(grad_f))(X)
    for i, x in enumerate(X):
        assert abs(float(u[i] - f(x))) < 1e-15 and abs(float(u1[i] - f(x))) < 1e-15
        assert torch.allclose(g[i], grad_f(x), atol=1e-12, rtol=0) and torch.allclose(g1[i], grad_f(x), atol=1e-12)
        assert torch.allclose(H[i], hess_f(x), atol=1e-12, rtol=0)
        assert torch.allclose(J[i], hess_f(x), atol=1e-12, rtol=0)


def test_operators_of_a_network_match_nested_autograd_and_carry_parameter_gradients():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(DT)
    X = points(10)[:, :2].clone().requires_grad_(True)
    field = lambda x: net(x).reshape(())  # noqa: E731
    lap = ops.batched(ops.laplacian(field))(X.detach())
    u = net(X).sum()
    (g,) = torch.autograd.grad(u, X, create_graph=True)
    ref = sum(torch.autograd.grad(g[:, i].sum(), X, create_graph=True)[0][:, i] for i in range(2))
    assert torch.allclose(lap, ref, rtol=0, atol=1e-12)
    # the batched operator is differentiable in the network's parameters like the reference
    w = net[0].weight
    (d_ops,) = torch.autograd.grad(lap.sum(), w)
    (d_ref,) = torch.autograd.grad(ref.sum(), w)
    assert torch.allclose(d_ops, d_ref, rtol=0, atol=1e-12)
    assert math.isfinite(float(d_ops.norm())) and float(d_ops.norm()) > 0
