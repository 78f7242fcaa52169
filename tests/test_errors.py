"""Every misuse or failure raises a pnode error that names its cause."""
import gc
import resource

import pytest
import torch

import pnode
from models import CubicMLP

T = torch.linspace(0, 1, 3, dtype=torch.float64)


def _y0(n=2):
    return torch.ones(n, dtype=torch.float64)


def test_non_finite_y0():
    with pytest.raises(pnode.ConfigurationError, match="y0 contains non-finite"):
        pnode.odeint_adjoint(lambda t, y: y, torch.tensor([1.0, float("nan")], dtype=torch.float64), T)


def test_non_finite_parameter():
    f = CubicMLP()
    with torch.no_grad():
        f.net[2].bias[0] = float("inf")
    with pytest.raises(pnode.ConfigurationError, match="parameter 3 .* non-finite"):
        pnode.odeint_adjoint(f, _y0(), T)


@pytest.mark.parametrize("t, match", [
    (torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64), "strictly"),
    (torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64), "strictly"),
    (torch.tensor([0, 1, 2]), "floating-point"),
    (torch.tensor([[0.0, 1.0]], dtype=torch.float64), "1-D"),
    (torch.tensor([0.0], dtype=torch.float64), "at least two"),
    ([0.0, 1.0], "torch.Tensor"),
])
def test_bad_time_grids(t, match):
    with pytest.raises(pnode.ConfigurationError, match=match):
        pnode.odeint(lambda t, y: y, _y0(), t)


def test_unknown_method_lists_known_ones():
    with pytest.raises(pnode.ConfigurationError, match="unknown method 'rk45'.*dopri5"):
        pnode.odeint(lambda t, y: y, _y0(), T, method="rk45")


@pytest.mark.parametrize("func, match", [
    (lambda t, y: y[:1], r"shape \(1,\)"),
    (lambda t, y: y.float(), "torch.float32"),
    (lambda t, y: 3.0, "must return a torch.Tensor"),
])
def test_func_returning_the_wrong_thing(func, match):
    with pytest.raises(pnode.ConfigurationError, match=match):
        pnode.odeint_adjoint(func, _y0(), T, method="rk4", step_size=0.1)


def test_float32_state_with_double_petsc():
    with pytest.raises(pnode.BuildMismatchError, match="float32"):
        pnode.odeint(lambda t, y: y, _y0().float(), T)


def test_non_finite_state_mid_solve_names_time_and_step():
    with pytest.raises(pnode.ConvergenceError, match=r"non-finite.*t=1\.0\d*, step 10\d"):
        pnode.odeint(lambda t, y: y ** 2, torch.ones(1, dtype=torch.float64),
                     torch.tensor([0.0, 2.0], dtype=torch.float64), method="rk4", step_size=0.01)


def test_step_size_collapse():
    with pytest.raises(pnode.ConvergenceError, match="STEP_REJECTED"):
        pnode.odeint(lambda t, y: -1e7 * (y - torch.cos(t)), torch.ones(1, dtype=torch.float64),
                     torch.tensor([0.0, 1.0], dtype=torch.float64), method="dopri5",
                     options={"ts_max_step_rejections": 1})


def test_exception_in_func_propagates_with_its_type():
    def bad(t, y):
        raise KeyError("user bug")

    with pytest.raises(KeyError, match="user bug"):
        pnode.odeint(bad, _y0(), T)


def test_bad_step_size_and_tolerances():
    with pytest.raises(pnode.ConfigurationError, match="step_size"):
        pnode.odeint(lambda t, y: y, _y0(), T, step_size=-0.1)
    with pytest.raises(pnode.ConfigurationError, match="rtol"):
        pnode.odeint(lambda t, y: y, _y0(), T, rtol=0.0)


@pytest.mark.parametrize("ck", ["all", "solution", pnode.Checkpoint(budget=2)])
def test_second_backward_through_one_solve_says_why(ck):
    f = CubicMLP()
    y0 = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    loss = pnode.odeint_adjoint(f, y0, T, method="rk4", step_size=0.1, checkpoint=ck).pow(2).sum()
    first = torch.autograd.grad(loss, y0, retain_graph=True)[0]
    assert torch.isfinite(first).all()
    with pytest.raises(pnode.PnodeError, match="differentiated once"):
        torch.autograd.grad(loss, y0)


def _resident_kib() -> int:
    """Current resident size (Linux /proc), else the peak; after a garbage collection."""
    gc.collect()
    try:
        with open("/proc/self/status") as fh:
            return int(next(ln.split()[1] for ln in fh if ln.startswith("VmRSS:")))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_repeated_calls_keep_memory_flat():
    f = CubicMLP()
    y0 = torch.randn(20, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 0.2, 3, dtype=torch.float64)

    def call():
        out = pnode.odeint_adjoint(f, y0, t, method="rk4", step_size=0.05)
        out.pow(2).sum().backward()
        pnode.odeint_adjoint(f, y0, t, method="rk4", step_size=0.05)  # graph dropped unused

    for _ in range(300):  # warm-up: caches and allocator pools settle (measured: ~5 MiB, flat after)
        call()
    before = _resident_kib()
    for _ in range(250):  # 500 odeint_adjoint calls, half of them never differentiated
        call()
    grown_kib = _resident_kib() - before
    # an undifferentiated solve once leaked its measured stage graph (~17 KiB a call, 8 MiB here)
    assert grown_kib < 1024, f"resident memory grew by {grown_kib} KiB over 500 calls"
