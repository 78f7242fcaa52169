"""A NeuralODE used the way training loops use it, faults inside func, bad options and
time grids: no crash, no hang, no silent wrong answer (each case failed before its fix)."""
from __future__ import annotations

import math

import pytest
import torch

import pnode
from helpers import rel_error
from models import CubicMLP

DT = torch.float64
T = torch.linspace(0, 1, 5, dtype=DT)
POLICIES = ["all", "solution", pnode.Checkpoint(budget=3)]


def _grads(out, f, y0):
    return torch.autograd.grad((out ** 2).sum(), [y0, *f.parameters()])


def _fresh(f, y0, t, ck):
    y = y0.detach().clone().requires_grad_(True)
    return _grads(pnode.odeint_adjoint(f, y, t, method="rk4", step_size=0.05, checkpoint=ck), f, y)


@pytest.mark.parametrize("ck", POLICIES)
@pytest.mark.parametrize("second_with_grad", [True, False])
def test_a_second_call_before_the_first_backward_leaves_it_intact(ck, second_with_grad):
    f = CubicMLP()
    ode = pnode.NeuralODE(f, method="rk4", step_size=0.05, checkpoint=ck)
    ya = torch.randn(6, 2, dtype=DT, requires_grad=True)
    yb = torch.randn(6, 2, dtype=DT, requires_grad=second_with_grad)
    out_a = ode(ya, T)
    with torch.set_grad_enabled(second_with_grad):
        ode(yb, torch.linspace(0, 2, 9, dtype=DT))  # an evaluation rollout on another grid
    got = _grads(out_a, f, ya)
    assert rel_error(got, _fresh(f, ya, T, ck)) < 1e-13


def test_evaluation_rollout_under_no_grad_between_forward_and_backward():
    # the reproducer: a segmentation fault before each call owned its trajectory
    ode = pnode.NeuralODE(lambda t, y: -y, method="rk4", step_size=0.05)
    y = torch.ones(2, dtype=DT, requires_grad=True)
    out = ode(y, torch.linspace(0, 1, 5, dtype=DT))
    with torch.no_grad():
        ode(torch.ones(2, dtype=DT), torch.linspace(0, 2, 9, dtype=DT))
    out.sum().backward()
    # d/dy0 sum_k y(t_k) = sum_k exp(-t_k) for y' = -y, to rk4's error at h = 0.05
    assert torch.allclose(y.grad, torch.exp(-torch.linspace(0, 1, 5, dtype=DT)).sum().expand(2), atol=1e-7)


@pytest.mark.parametrize("ck", POLICIES)
def test_one_backward_through_two_forward_calls(ck):
    f = CubicMLP()
    ode = pnode.NeuralODE(f, method="rk4", step_size=0.05, checkpoint=ck)
    ya, yb = (torch.randn(4, 2, dtype=DT, requires_grad=True) for _ in range(2))
    loss = (ode(ya, T) ** 2).sum() + (ode(yb, T) ** 2).sum()
    got = torch.autograd.grad(loss, [ya, yb, *f.parameters()])
    ga, gb = _fresh(f, ya, T, ck), _fresh(f, yb, T, ck)
    ref = [ga[0], gb[0]] + [a + b for a, b in zip(ga[1:], gb[1:])]
    assert rel_error(got, ref) < 1e-13


@pytest.mark.parametrize("fault", [ValueError("bad batch"), KeyboardInterrupt(), "nonfinite"])
def test_a_fault_in_func_leaves_the_module_usable(fault):
    f = CubicMLP()
    state = {"fail": True}

    def func(t, y):
        if state["fail"] and float(t) > 0.4:
            if fault == "nonfinite":
                return y * float("nan")
            raise fault
        return f(t, y)

    ode = pnode.NeuralODE(func, method="rk4", step_size=0.05, adjoint_params=list(f.parameters()))
    y0 = torch.randn(3, 2, dtype=DT, requires_grad=True)
    expected = pnode.ConvergenceError if fault == "nonfinite" else type(fault)
    with pytest.raises(expected):
        ode(y0, T)
    state["fail"] = False
    got = _grads(ode(y0, T), f, y0)
    assert rel_error(got, _fresh(f, y0, T, "all")) < 1e-13


class _BadBackward(torch.autograd.Function):
    """Identity whose backward raises (or gives NaN) from the second backward call on."""

    calls = 0
    fault: BaseException | str = "nan"

    @staticmethod
    def forward(ctx, y):
        return y.clone()

    @staticmethod
    def backward(ctx, g):
        _BadBackward.calls += 1
        if _BadBackward.calls < 2:
            return g
        if _BadBackward.fault == "nan":
            return g * float("nan")
        raise _BadBackward.fault


@pytest.mark.parametrize("fault", [ValueError("backward failed"), KeyboardInterrupt(), "nan"])
@pytest.mark.parametrize("ck", ["all", "solution"])
def test_faults_in_the_backward_pass_surface_as_themselves(fault, ck):
    _BadBackward.calls, _BadBackward.fault = 0, fault
    y0 = torch.ones(2, dtype=DT, requires_grad=True)
    out = pnode.odeint_adjoint(lambda t, y: -_BadBackward.apply(y), y0, T, method="rk4", step_size=0.05,
                               checkpoint=ck)
    if fault == "nan":
        with pytest.raises(pnode.ConvergenceError, match=r"adjoint .*non-finite.* from t=1 back to t=0.75"):
            out.sum().backward()
    else:
        with pytest.raises(type(fault)):
            out.sum().backward()


@pytest.mark.parametrize("ck", POLICIES)
def test_parameters_changed_in_place_before_backward_raise(ck):
    f = CubicMLP()
    y0 = torch.randn(3, 2, dtype=DT, requires_grad=True)
    out = pnode.odeint_adjoint(f, y0, T, method="rk4", step_size=0.05, checkpoint=ck)
    with torch.no_grad():
        f.net[0].weight.add_(0.1)  # an optimiser step taken before this loss's backward
    with pytest.raises(pnode.PnodeError, match="modified in place"):
        out.sum().backward()


def test_blow_up_with_adaptive_implicit_steps_stops_with_the_time():
    # y' = y^3 from 1: y = 1/sqrt(1 - 2t) blows up at t = 0.5; adaptive steps used to shrink
    # forever. Loose tolerances keep the test short: each decade of the remaining time costs
    # about ln(10) / rtol^(1/order) steps before the minimum step is reached.
    with pytest.raises(pnode.ConvergenceError, match=r"step size collapsed .*t=0\.4999.*step \d+"):
        pnode.odeint(lambda t, y: y ** 3, torch.ones(1, dtype=DT), torch.tensor([0.0, 2.0], dtype=DT),
                     method="arkimex", rtol=1e-4, atol=1e-6)


def test_fixed_steps_return_to_step_size_after_a_tiny_output_gap():
    t = torch.tensor([0.0, 1e-13, 1.0], dtype=DT)
    ode = pnode.NeuralODE(lambda t, y: -y, method="rk4", step_size=0.01)
    out = ode(torch.ones(1, dtype=DT), t)
    assert ode.stats["steps"] == 101
    assert abs(float(out[-1, 0]) - math.exp(-1)) < 1e-9


def test_ts_max_steps_is_honoured():
    with pytest.raises(pnode.ConvergenceError, match="ts_max_steps=3"):
        pnode.odeint(lambda t, y: -y, torch.ones(1, dtype=DT), T, method="rk4", step_size=0.01,
                     options={"ts_max_steps": 3})


@pytest.mark.parametrize("t0, span", [(1e12, 1.0), (1.7e9, 60.0), (-3e11, 2.0)])
def test_output_times_far_from_zero(t0, span):
    seen = []

    def func(t, y):
        seen.append(float(t))
        return -y / span

    t = torch.tensor([t0, t0 + span / 2, t0 + span], dtype=DT)
    out = pnode.odeint(func, torch.ones(1, dtype=DT), t, method="rk4", step_size=span / 100)
    # y(t0 + span) = exp(-1); rk4's error at 100 steps is ~1e-11 (the old code returned
    # exp(-0.1) at t0 = 1e12 and the state at 59.9 s for 60 s at Unix times)
    assert abs(float(out[-1, 0]) - math.exp(-1)) < 1e-10
    assert min(seen) == t0 and max(seen) == t0 + span  # func sees the user's times


def test_time_step_option_must_be_positive():
    for bad in (0, "nan", -1):
        with pytest.raises(pnode.ConfigurationError, match="ts_time_step"):
            pnode.odeint(lambda t, y: -y, torch.ones(1, dtype=DT), T, method="rk4",
                         options={"ts_time_step": bad})


def test_output_times_closer_than_float64_resolves_are_refused():
    t = torch.tensor([0.0, 1.0, 1.0 + 1e-14], dtype=DT)
    with pytest.raises(pnode.ConfigurationError, match="closer than"):
        pnode.odeint(lambda t, y: -y, torch.ones(1, dtype=DT), t)


@pytest.mark.parametrize("kw, match", [
    (dict(step_size="abc"), "step_size"), (dict(rtol="1e-6"), "rtol"), (dict(atol=None), "atol"),
    (dict(method="rk4", options={"ts_type": "euler"}), "conflicts with method"),
    (dict(method="rk4", options={"ts_rk_type": "5dp"}), "conflicts with method"),
    (dict(method=None, options={"ts_type": "nonsense"}), "unknown TS type 'nonsense'"),
    (dict(method=None, options={"ts_type": "rk", "ts_rk_type": "zzz"}), "unknown TSRK type 'zzz'"),
    (dict(options={"ts_adapt_type": "nonsense"}), r"ts_adapt_type='nonsense'; allowed: .*basic"),
    (dict(method="beuler", step_size=0.1, options={"snes_max_it": "abc"}), "snes_max_it='abc'"),
    (dict(method="beuler", step_size=0.1, options={"snes_max_it": None}), "snes_max_it needs a value"),
    (dict(options={"ts_adapt_type": None}), "ts_adapt_type needs a value"),
    (dict(options={"ts type": "rk"}), "not a PETSc option name"),
    (dict(options={"ts_python_type": "os.System"}), "Python type"),
    (dict(method="bdf"), None),
])
def test_bad_arguments_raise_configuration_errors(kw, match):
    call = lambda: pnode.odeint_adjoint(lambda t, y: -y, torch.ones(1, dtype=DT, requires_grad=True), T, **kw)
    if match is None:  # a forward-only type: odeint_adjoint names the types with an adjoint
        with pytest.raises(pnode.ConfigurationError, match="no discrete adjoint.*arkimex"):
            call()
        assert abs(float(pnode.odeint(lambda t, y: -y, torch.ones(1, dtype=DT), T, method="bdf")[-1, 0])
                   - math.exp(-1)) < 1e-4
        return
    with pytest.raises(pnode.ConfigurationError, match=match):
        call()


def test_options_petsc_never_reads_warn():
    with pytest.warns(pnode.PnodeWarning, match="ts_max_stepz"):  # misspelt: PETSc never reads it
        pnode.odeint(lambda t, y: -y, torch.ones(1, dtype=DT), T, method="rk4", step_size=0.1,
                     options={"ts_max_stepz": 3})


def test_checkpoint_directory_is_checked_when_made(tmp_path):
    with pytest.raises(pnode.ConfigurationError, match="does not exist"):
        pnode.Checkpoint(budget=4, disk=True, directory=str(tmp_path / "nonexistent"))


def test_checkpoint_files_go_as_soon_as_no_backward_can_need_them(tmp_path):
    ck = pnode.Checkpoint(budget=3, disk=True, directory=str(tmp_path))
    f = CubicMLP()
    y0 = torch.randn(3, 2, dtype=DT, requires_grad=True)
    out = pnode.odeint_adjoint(f, y0, T, method="rk4", step_size=0.05, checkpoint=ck)
    assert len(list(tmp_path.iterdir())) == 1  # the call's private folder
    del out  # never differentiated
    assert list(tmp_path.iterdir()) == []
    ode = pnode.NeuralODE(f, method="rk4", step_size=0.05, checkpoint=ck)
    ode(y0, T).sum().backward()
    assert list(tmp_path.iterdir()) == []  # the module keeps none after its backward pass


def test_gradient_with_respect_to_output_times():
    # y' = -a y: L = y(t1) + 2 y(t2), y(t) = exp(-a (t - t0)); dL/dt_k analytic
    a = 0.7
    t = torch.tensor([0.2, 0.9, 1.5], dtype=DT, requires_grad=True)
    y0 = torch.ones(1, dtype=DT)
    out = pnode.odeint_adjoint(lambda s, y: -a * y, y0, t, method="dopri5", rtol=1e-12, atol=1e-14)
    (out[1, 0] + 2 * out[2, 0]).backward()
    e1, e2 = math.exp(-a * 0.7), math.exp(-a * 1.3)
    expected = torch.tensor([a * (e1 + 2 * e2), -a * e1, -2 * a * e2], dtype=DT)
    assert torch.allclose(t.grad, expected, rtol=1e-9)


def _resident_kib() -> int:
    import gc

    gc.collect()
    with open("/proc/self/status") as fh:
        return int(next(ln.split()[1] for ln in fh if ln.startswith("VmRSS:")))


def test_training_loop_stress():
    """200 iterations of what training scripts do with one NeuralODE: forward with grad, an
    evaluation under no_grad on another grid, sometimes two forwards before one backward,
    sometimes a fault caught by the caller; every gradient equals a fresh solve's, and the
    resident memory stays flat."""
    torch.manual_seed(3)
    f = CubicMLP(hidden=16)
    state = {"fail": False}

    def func(t, y):
        if state["fail"]:
            raise RuntimeError("bad batch")
        return f(t, y)

    ode = pnode.NeuralODE(func, method="rk4", step_size=0.1, adjoint_params=list(f.parameters()))
    t_eval = torch.linspace(0, 2, 11, dtype=DT)
    before = None
    for it in range(200):
        if it == 50:
            before = _resident_kib()
        ya = torch.randn(4, 2, dtype=DT, requires_grad=True)
        out = ode(ya, T)
        if it % 3 == 0:
            yb = torch.randn(4, 2, dtype=DT, requires_grad=True)
            loss = (out ** 2).sum() + (ode(yb, T) ** 2).sum()
        else:
            loss = (out ** 2).sum()
        with torch.no_grad():
            ode(torch.randn(4, 2, dtype=DT), t_eval)
        if it % 7 == 0:
            state["fail"] = True
            with pytest.raises(RuntimeError, match="bad batch"):
                ode(ya, T)
            state["fail"] = False
        inputs = [ya, yb, *f.parameters()] if it % 3 == 0 else [ya, *f.parameters()]
        got = torch.autograd.grad(loss, inputs)
        if it % 20 == 0:  # against fresh solves
            ref_loss = (pnode.odeint_adjoint(f, ya, T, method="rk4", step_size=0.1) ** 2).sum()
            if it % 3 == 0:
                ref_loss = ref_loss + (pnode.odeint_adjoint(f, yb, T, method="rk4", step_size=0.1) ** 2).sum()
            assert rel_error(got, torch.autograd.grad(ref_loss, inputs)) < 1e-13
    grown = _resident_kib() - before
    assert grown < 2048, f"resident memory grew by {grown} KiB over 150 iterations"
