"""pnode.pinn.jets: second-order jets of an MLP field and the per-point Jacobian rows,
against the generic vmap/jacrev path of the same residuals (float64, to rounding)."""
import math

import pytest
import torch

from pnode.errors import ConfigurationError
from pnode.pinn import (AffineTransform, CollocationProblem, Interval, Rectangle, SpaceTime, Term, cases,
                        gauss_legendre, operators as ops, runge_kutta_term)
from pnode.pinn.jets import MLPJets, Streams, needed_streams
from pinn_cases import DT, mlp

SPACE_TIME = SpaceTime(Interval(-1.0, 1.0), 0.0, 1.0)
SQUARE = Rectangle(0.0, 1.0, 0.0, 1.0)


def burgers(**kw):
    return cases.burgers_problem(cases.mlp(6, 2, seed=1), 40, **kw)


def poisson_sigmoid(**kw):
    """-lap u = f with a soft boundary term, a sigmoid network and no transform."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 7), torch.nn.Sigmoid(), torch.nn.Linear(7, 5), torch.nn.Tanh(),
                              torch.nn.Linear(5, 1)).to(DT)
    pde = Term("pde", SQUARE.sample(30, "sobol", seed=3),
               lambda u, x, c: -ops.laplacian(u)(x) - torch.sin(math.pi * x[0]) * x[1])
    edge = Term("edge", SQUARE.boundary(12, seed=4), lambda u, x, c: u(x), weight=5.0)
    return CollocationProblem(net, [pde, edge], SQUARE, **kw)


def vector_field(**kw):
    """A field R^2 -> R^2 with a vector transform and a residual of two components that
    reads a divergence, a Jacobian entry, a time derivative and a mixed second derivative."""
    def residual(u, x, c):
        v, jac, hess = u(x), ops.jacobian(u)(x), ops.hessian(u)(x)
        return torch.stack([ops.divergence(u)(x) + v[0] * jac[1, 0],
                            ops.time_derivative(u)(x)[1] - hess[0, 0, 1] + hess[1, 0, 0] * v[1]])
    transform = lambda x, out: torch.stack([x[1] * out[0] + torch.cos(x[0]), out[1] * out[0] + x[0] * x[1]])  # noqa: E731
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 5), torch.nn.Tanh(),
                              torch.nn.Linear(5, 2)).to(DT)
    return CollocationProblem(net, [Term("pde", SPACE_TIME.sample(25, "sobol", seed=5), residual)], SPACE_TIME,
                              transform=transform, **kw)


def inverse(**kw):
    """Burgers with an unknown viscosity and a data term."""
    x = SPACE_TIME.sample(15, "sobol", seed=6)
    terms = [Term("pde", SPACE_TIME.sample(30, "sobol", seed=7), cases.burgers_residual),
             Term("data", x, lambda u, x, c, y: u(x) - y[0], data=torch.sin(x[:, :1]) * x[:, 1:], weight=3.0)]
    return CollocationProblem(cases.mlp(6, 2, seed=3), terms, SPACE_TIME, transform=cases.hard_conditions,
                              coefficients={"nu": torch.tensor(0.02, dtype=DT)}, **kw)


def burgers_plain_transform(**kw):
    """Burgers with its hard conditions as a plain function (not an AffineTransform)."""
    problem = burgers(jets=False)
    plain = lambda x, out: cases.hard_conditions(x, out)  # noqa: E731
    return CollocationProblem(problem.model, problem.terms, SPACE_TIME, transform=plain, **kw)


def runge_kutta(**kw):
    """A 3-stage discrete-time Runge-Kutta term: 4 outputs per point, derivatives along x."""
    def operator(u, x, c):
        v, v_x, v_xx = ops.directional(u, x, torch.ones_like(x))
        return -v * v_x + 0.1 * v_xx
    domain = Interval(-1.0, 1.0)
    x = domain.sample(20, "uniform", seed=10)
    torch.manual_seed(4)
    net = torch.nn.Sequential(torch.nn.Linear(1, 6), torch.nn.Tanh(), torch.nn.Linear(6, 4)).to(DT)
    term = runge_kutta_term("rk", x, -torch.sin(math.pi * x), operator, gauss_legendre(3), 0.3)
    return CollocationProblem(net, [term], domain, transform=AffineTransform(scale=lambda x: 1 - x[0] ** 2), **kw)


@pytest.mark.parametrize("make", [burgers, burgers_plain_transform, poisson_sigmoid, vector_field, inverse,
                                  runge_kutta])
def test_jets_give_the_generic_residual_jacobian_and_gradient(make):
    jets, generic = make(jets=True), make(jets=False)
    assert all(jets.jets) and not any(generic.jets)
    r, r_ref = jets.residual(), generic.residual()
    scale = float(r_ref.detach().abs().max())
    assert torch.allclose(r, r_ref, rtol=0, atol=1e-13 * scale)
    J, J_ref = jets.jacobian_rows(), generic.jacobian_rows()
    assert J.shape == J_ref.shape
    assert torch.allclose(J, J_ref, rtol=0, atol=1e-13 * float(J_ref.abs().max()))
    w = torch.randn(r.shape, dtype=DT, generator=torch.Generator().manual_seed(0))
    g = torch.autograd.grad(r, jets.parameters(), grad_outputs=w)
    g_ref = torch.autograd.grad(r_ref, generic.parameters(), grad_outputs=w)
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-12 * float(J_ref.abs().max()))
    assert torch.allclose(jets.term_residual(0), generic.term_residual(0), rtol=0, atol=1e-13 * scale)


def test_auto_takes_the_jets_for_mlp_networks():
    assert burgers().jets == [True] and poisson_sigmoid().jets == [True, True] and runge_kutta().jets == [True]


def test_an_affine_transform_is_the_function_it_describes():
    t = AffineTransform(lambda x: x[0] ** 2, lambda x: torch.stack([x[1], 2 * x[0]]))
    x, out = torch.tensor([0.3, -0.5], dtype=DT), torch.tensor([1.5, 4.0], dtype=DT)
    assert torch.allclose(t(x, out), torch.tensor([0.09 - 0.75, 0.09 + 2.4], dtype=DT), rtol=0, atol=1e-15)
    assert torch.equal(AffineTransform()(x, out), out)
    with pytest.raises(ConfigurationError, match="scale must be callable"):
        AffineTransform(scale=2.0)


def streams_of(problem, index=0):
    term = problem.terms[index]
    x = term.points[:8].to(DT)
    full = MLPJets(problem.model, problem.transform, Streams.full(x.shape[1]))
    return needed_streams(full, problem._detached(), problem._coeffs(), term.residual, x, None)


def test_only_the_derivatives_a_residual_reads_are_carried():
    st = streams_of(burgers())  # u_t + u u_x - nu u_xx
    assert (st.first, st.pairs, st.count) == ([0, 1], [(0, 0)], 4)
    st = streams_of(poisson_sigmoid())  # the Laplacian
    assert (st.first, st.pairs) == ([0, 1], [(0, 0), (1, 1)])
    st = streams_of(poisson_sigmoid(), 1)  # the value alone
    assert (st.first, st.pairs, st.count) == ([], [], 1)
    st = streams_of(vector_field())
    assert (st.first, st.pairs) == ([0, 1], [(0, 0), (0, 1)])


def test_residuals_the_jets_cannot_hold_fall_back_or_raise():
    elsewhere = lambda u, x, c: u(0.5 * x) - ops.time_derivative(u)(x)  # noqa: E731
    third = lambda u, x, c: ops.hessian(ops.gradient(u))(x)[0, 0, 0] + u(x)  # noqa: E731
    points = SPACE_TIME.sample(12, "sobol", seed=8)
    for residual, words in ((elsewhere, "collocation point"), (third, "second order")):
        auto = CollocationProblem(cases.mlp(4, 1), [Term("pde", points, residual)], SPACE_TIME)
        generic = CollocationProblem(cases.mlp(4, 1), [Term("pde", points, residual)], SPACE_TIME, jets=False)
        assert auto.jets == [False]
        assert torch.equal(auto.jacobian_rows(), generic.jacobian_rows())
        with pytest.raises(ConfigurationError, match=words):
            CollocationProblem(cases.mlp(4, 1), [Term("pde", points, residual)], SPACE_TIME, jets=True)
    good = Term("pde", points, cases.burgers_residual)
    relu = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)).to(DT)
    with pytest.raises(ConfigurationError, match="layer 1 is a ReLU"):
        CollocationProblem(relu, [good], SPACE_TIME, jets=True)
    assert CollocationProblem(relu, [good], SPACE_TIME).jets == [False]
    with pytest.raises(ConfigurationError, match="jets must be"):
        CollocationProblem(mlp(2), [good], SPACE_TIME, jets="yes")


def test_jets_follow_new_points():
    problem, generic = burgers(), burgers(jets=False)
    new = SPACE_TIME.sample(17, "halton", seed=9)
    for p in (problem, generic):
        p.set_points(0, new)
    assert problem.jacobian_rows().shape == (17, sum(q.numel() for q in problem.parameters()))
    assert torch.allclose(problem.jacobian_rows(), generic.jacobian_rows(), rtol=0, atol=1e-13)
