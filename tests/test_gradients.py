"""Discrete-adjoint gradients equal autograd through the same scheme and steps."""
import numpy as np
import pytest
import torch

import pnode
from pnode.tape import use_engine
from helpers import assert_matches_central_differences, rel_error as _rel
from models import ConvField, CubicMLP
from reference import TABLEAUS, rk_solve

METHODS = sorted(TABLEAUS)


def _loss(out):
    return (out ** 2).sum() + out[len(out) // 2].sin().sum()


def _grads(out, inputs):
    return torch.autograd.grad(_loss(out), inputs)


@pytest.mark.parametrize("method", METHODS)
def test_fixed_step_matches_autograd_reference(method, device):
    f = CubicMLP().to(device)
    y0 = torch.randn(20, 2, dtype=torch.float64, device=device, requires_grad=True)
    t = torch.linspace(0, 1, 5, dtype=torch.float64, device=device)
    inputs = [y0, *f.parameters()]
    out = pnode.odeint_adjoint(f, y0, t, method=method, step_size=0.025)
    ref = rk_solve(f, y0, np.linspace(0, 1, 41), t.cpu().numpy(), method)
    assert torch.allclose(out, ref, rtol=1e-13, atol=1e-13)
    assert _rel(_grads(out, inputs), _grads(ref, inputs)) < 1e-10


@pytest.mark.parametrize("method, rtol", [("heun", 1e-5), ("bosh3", 1e-6), ("dopri5", 1e-9)])
def test_adaptive_steps_are_replayed_exactly(method, rtol):
    f = CubicMLP()
    y0 = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.7, 1.2], dtype=torch.float64)
    ode = pnode.NeuralODE(f, method=method, rtol=rtol, atol=rtol * 1e-2)
    out = ode(y0, t)
    steps = ode.step_times
    assert len(t) + 3 < len(steps) < 400  # the controller took steps of its own
    inputs = [y0, *f.parameters()]
    ref = rk_solve(f, y0, steps, t.numpy(), method)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert _rel(_grads(out, inputs), _grads(ref, inputs)) < 1e-10


def test_loss_on_single_output_time_and_image_state():
    f = ConvField()
    y0 = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 0.5, 3, dtype=torch.float64)
    out = pnode.odeint_adjoint(f, y0, t, method="rk4", step_size=0.05)
    assert out.shape == (3, 2, 2, 5, 6)
    inputs = [y0, *f.parameters()]
    g = torch.autograd.grad(out[1].pow(2).sum(), inputs)
    ref = rk_solve(f, y0, np.linspace(0, 0.5, 11), t.numpy(), "rk4")
    gr = torch.autograd.grad(ref[1].pow(2).sum(), inputs)
    assert _rel(g, gr) < 1e-10


def test_decreasing_times():
    f = CubicMLP()
    y0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    out = pnode.odeint_adjoint(f, y0, t, method="rk4", step_size=0.05)
    inputs = [y0, *f.parameters()]
    ref = rk_solve(f, y0, np.linspace(1.0, 0.0, 21), t.numpy(), "rk4")
    assert torch.allclose(out, ref, rtol=1e-13, atol=1e-13)
    assert _rel(_grads(out, inputs), _grads(ref, inputs)) < 1e-10


def test_central_finite_differences():
    f = CubicMLP(hidden=8)
    y0 = torch.randn(3, 2, dtype=torch.float64)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    w = f.net[0].weight
    kw = dict(method="dopri5", step_size=0.05)
    out = pnode.odeint_adjoint(f, y0, t, **kw)
    (gw,) = torch.autograd.grad(_loss(out), [w])
    assert_matches_central_differences(lambda: _loss(pnode.odeint(f, y0, t, **kw)), w, gw,
                                       [(0, 0), (3, 1), (7, 0)], eps=1e-6, rtol=1e-7)


@pytest.mark.parametrize("engine", ["private", "public"])
def test_both_autograd_engine_paths_give_the_same_gradients(engine):
    """The VJPs call autograd's engine directly where this torch has that private entry,
    torch.autograd.grad otherwise: both give the same gradients, bit for bit."""
    f = CubicMLP()
    y0 = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    inputs = [y0, *f.parameters()]
    reference = _grads(pnode.odeint_adjoint(f, y0, t, method="rk4", step_size=0.05), inputs)
    try:
        assert use_engine(engine) == engine  # this torch (2.13) has the private entry
        got = _grads(pnode.odeint_adjoint(f, y0, t, method="rk4", step_size=0.05), inputs)
    finally:
        use_engine("private")
    assert all(torch.equal(a, b) for a, b in zip(got, reference))


def test_adjoint_params_and_plain_function():
    a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 0.9, 4, dtype=torch.float64)
    out = pnode.odeint_adjoint(lambda t, y: (y ** 3) @ a, y0, t, method="rk4", step_size=0.01,
                               adjoint_params=[a])
    g = torch.autograd.grad(out[-1].sum(), [y0, a])
    ref = rk_solve(lambda t, y: (y ** 3) @ a, y0, np.linspace(0, 0.9, 91), t.numpy(), "rk4")
    assert _rel(g, torch.autograd.grad(ref[-1].sum(), [y0, a])) < 1e-10


def test_options_database_method():
    f = CubicMLP()
    y0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    out = pnode.odeint_adjoint(f, y0, t, method=None, step_size=0.05,
                               options={"ts_type": "rk", "ts_rk_type": "3bs"})
    ref = rk_solve(f, y0, np.linspace(0, 1, 21), t.numpy(), "bosh3")
    inputs = [y0, *f.parameters()]
    assert _rel(_grads(out, inputs), _grads(ref, inputs)) < 1e-10


def test_odeint_builds_no_graph_and_matches():
    f = CubicMLP()
    y0 = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    out = pnode.odeint(f, y0, t, method="rk4", step_size=0.05)
    assert not out.requires_grad
    assert torch.equal(out, pnode.odeint_adjoint(f, y0, t, method="rk4", step_size=0.05).detach())


def test_function_without_parameters():
    y0 = torch.tensor([[1.0, 0.5], [0.2, -0.3]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    rhs = lambda t, y: torch.sin(y).flip(-1) * torch.cos(t)  # noqa: E731
    for ck in ("all", "solution", pnode.Checkpoint(budget=2)):
        out = pnode.odeint_adjoint(rhs, y0, t, method="rk4", step_size=0.1, checkpoint=ck)
        (g,) = torch.autograd.grad(out.pow(2).sum(), [y0])
        ref = rk_solve(rhs, y0, np.linspace(0, 1, 11), t.numpy(), "rk4")
        (gr,) = torch.autograd.grad(ref.pow(2).sum(), [y0])
        assert _rel([g], [gr]) < 1e-12
