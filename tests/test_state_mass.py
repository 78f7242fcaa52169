"""Implicit methods with a state-dependent mass M(u) y' = g(t, y): the trajectory and the
discrete adjoint (beuler, the implicit midpoint rule) against the same scheme solved by
torch Newton and differentiated by autograd at the converged steps; cn refused."""
import pytest
import torch

import pnode
from helpers import rel_error

DT = torch.float64
STEP, STEPS = 0.1, 3
NEWTON = {"snes_rtol": 1e-13, "snes_atol": 1e-14, "snes_linesearch_type": "basic"}


class Mass:
    """``M(u) = diag(1 + u^2) + 0.3 u u^T``: symmetric positive definite, state-dependent."""

    depends_on_state = True

    def matrix(self, t, u):
        u = u.reshape(-1)
        return torch.diag(1 + u ** 2) + 0.3 * torch.outer(u, u)

    def product(self, t, u, v, transpose=False):
        return self.matrix(t, u) @ v.reshape(-1)


class Rhs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(1.3, dtype=DT))

    def forward(self, t, u):
        return -self.k * u + torch.sin(u).roll(1)


def reference_step(func, mass, y, theta):
    """One theta-method step ``M(s) (s - y) / (theta h) = g(s)``, ``y_new = y + (s - y) / theta``,
    Newton in torch; the returned value carries the exact derivative in ``y`` and ``k``
    (one Newton correction from the converged stage, on the graph)."""
    def residual(s):
        return mass.product(0.0, s, (s - y) / (theta * STEP)) - func(0.0, s)

    s = y.detach().clone()
    for _ in range(30):
        s = s - torch.linalg.solve(torch.autograd.functional.jacobian(residual, s), residual(s).detach())
        s = s.detach()
    jac = torch.autograd.functional.jacobian(residual, s)
    s = s - torch.linalg.solve(jac, residual(s))
    return y + (s - y) / theta


@pytest.mark.parametrize("method,theta", [("beuler", 1.0), ("theta", 0.5)])
@pytest.mark.parametrize("jacobian", ["dense", "matrix-free"])
def test_state_dependent_mass_adjoint_equals_autograd_through_the_scheme(method, theta, jacobian):
    func, mass = Rhs(), Mass()
    y0 = torch.tensor([0.5, -0.3, 0.8], dtype=DT, requires_grad=True)
    w = torch.tensor([1.0, 2.0, -1.0], dtype=DT)
    t = torch.tensor([0.0, STEP * STEPS], dtype=DT)
    y_T = pnode.odeint_adjoint(func, y0, t, method=method, step_size=STEP, options=NEWTON, mass=mass,
                               jacobian=jacobian)[-1]
    (y_T @ w).backward()
    grads = (y0.grad.clone(), func.k.grad.clone())
    y0.grad = func.k.grad = None
    y = y0
    for _ in range(STEPS):
        y = reference_step(func, mass, y, theta)
    (y @ w).backward()
    assert rel_error(y_T.detach(), y.detach()) < 1e-13
    assert rel_error(grads[0], y0.grad) < 1e-12
    assert rel_error(grads[1], func.k.grad) < 1e-12


def test_endpoint_theta_form_is_refused_with_a_state_dependent_mass():
    y0 = torch.tensor([0.5, -0.3, 0.8], dtype=DT)
    t = torch.tensor([0.0, 0.2], dtype=DT)
    with pytest.raises(pnode.ConfigurationError, match="endpoint.*method='theta'"):
        pnode.odeint(Rhs(), y0, t, method="cn", step_size=STEP, mass=Mass())
    with pytest.raises(pnode.ConfigurationError, match="state-dependent mass"):
        pnode.odeint(Rhs(), y0[None].repeat(2, 1), t, method="beuler", step_size=STEP, mass=Mass(),
                     jacobian="blocks")


@pytest.mark.parametrize("jacobian", ["dense", "matrix-free"])
def test_forward_only_solve_with_a_state_dependent_mass_is_exact(jacobian):
    """A forward-only solve keeps no trajectory and records no stages' ``u'`` (its own
    Newton Jacobians take PETSc's current ``u'``); its result is still the scheme's."""
    func, mass = Rhs(), Mass()
    y0 = torch.tensor([0.5, -0.3, 0.8], dtype=DT)
    t = torch.tensor([0.0, STEP * STEPS], dtype=DT)
    y_T = pnode.odeint(func, y0, t, method="beuler", step_size=STEP, options=NEWTON, mass=mass,
                       jacobian=jacobian)[-1]
    with torch.no_grad():
        y = y0
        for _ in range(STEPS):
            y = reference_step(func, mass, y, 1.0)
    assert rel_error(y_T, y) < 1e-13
