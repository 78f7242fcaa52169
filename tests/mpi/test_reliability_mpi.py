"""Under mpiexec -n 2: whatever one rank alone gets wrong raises on every rank (no hang)."""
import pytest
import torch
from mpi4py import MPI

import pnode
from pnode.distributed import GradientReducer, RankFailedError

COMM = MPI.COMM_WORLD
RANK = COMM.Get_rank()
DT = torch.float64
T = torch.linspace(0, 1, 3, dtype=DT)


def _decay(t, y):
    return -y


def test_non_finite_y0_on_one_rank_raises_on_all():
    y0 = torch.ones(3, dtype=DT)
    if RANK == 1:
        y0[0] = float("nan")
    with pytest.raises(pnode.ConfigurationError, match="non-finite|rank 1"):
        pnode.odeint(_decay, y0, T, method="rk4", step_size=0.1, comm=COMM)


def test_state_shape_change_on_one_rank_raises_on_all():
    ode = pnode.NeuralODE(_decay, method="rk4", step_size=0.1, comm=COMM)
    ode(torch.ones(3, dtype=DT), T)
    y0 = torch.ones(4 if RANK == 0 else 3, dtype=DT)
    with pytest.raises(pnode.ConfigurationError, match="rank\\(s\\) \\[0\\] only"):
        ode(y0, T)
    out = ode(torch.ones(3, dtype=DT), T)  # still usable
    assert torch.allclose(out[-1], torch.full((3,), torch.exp(torch.tensor(-1.0, dtype=DT)).item(), dtype=DT),
                          atol=1e-6)


@pytest.mark.parametrize("what", ["method", "times"])
def test_different_settings_per_rank_raise_on_all(what):
    method = "rk4" if what == "times" or RANK == 0 else "midpoint"
    t = T if what == "method" or RANK == 0 else torch.linspace(0, 2, 3, dtype=DT)
    with pytest.raises(pnode.ConfigurationError, match="differ between the ranks"):
        pnode.odeint(_decay, torch.ones(2, dtype=DT), t, method=method, step_size=0.1, comm=COMM)


def test_a_failing_rank_in_a_data_parallel_step_raises_on_all():
    f = torch.nn.Linear(2, 2).double()
    reducer = GradientReducer(f.parameters(), COMM)
    y0 = torch.randn(3, 2, dtype=DT)

    def step(fail: bool):
        with reducer.guard():
            func = (lambda t, y: f(y) * float("nan")) if fail else (lambda t, y: f(y))
            out = pnode.odeint_adjoint(func, y0, T, method="rk4", step_size=0.1,  # on COMM_SELF
                                       adjoint_params=list(f.parameters()))
            out.pow(2).sum().backward()
        return reducer.reduce()

    if RANK == 1:
        with pytest.raises(pnode.ConvergenceError, match="non-finite"):
            step(fail=True)
    else:
        with pytest.raises(RankFailedError, match="1 rank"):
            step(fail=False)
    f.zero_grad()
    step(fail=False)  # the next step works on every rank
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in f.parameters())
