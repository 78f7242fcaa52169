"""Checkpoint policies give identical gradients; budgets bound the stored states."""
import pytest
import torch

import pnode
from models import CubicMLP
from pnode.revolve import OnlineSchedule, binomial_cost, binomial_split


def _grads(ck, method="rk4", device=torch.device("cpu"), **kw):
    torch.manual_seed(1)
    f = CubicMLP().to(device)
    y0 = torch.randn(6, 2, dtype=torch.float64).to(device).requires_grad_(True)
    t = torch.linspace(0, 1, 4, dtype=torch.float64, device=device)
    out = pnode.odeint_adjoint(f, y0, t, method=method, checkpoint=ck, **kw)
    return torch.autograd.grad((out ** 2).sum() + out[1].sum(), [y0, *f.parameters()])


@pytest.mark.parametrize("kw", [dict(method="rk4", step_size=1 / 60),
                                dict(method="dopri5", rtol=1e-5, atol=1e-7)])
@pytest.mark.parametrize("ck", ["solution", pnode.Checkpoint(budget=1), pnode.Checkpoint(budget=4),
                                pnode.Checkpoint(budget=4, disk=True)])
def test_policies_agree_with_store_all(ck, kw, device):
    ref = _grads("all", device=device, **kw)
    got = _grads(ck, device=device, **kw)
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def _budget_stats(budget: int) -> dict:
    """NeuralODE.stats after one gradient with ``Checkpoint(budget=budget)``, 60 rk4 steps."""
    torch.manual_seed(1)
    f = CubicMLP()
    y0 = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    ode = pnode.NeuralODE(f, method="rk4", step_size=1 / 60, checkpoint=pnode.Checkpoint(budget=budget))
    ode(y0, torch.linspace(0, 1, 4, dtype=torch.float64)).pow(2).sum().backward()
    return ode.stats


@pytest.mark.parametrize("budget", [1, 2, 3, 5, 8, 60])
def test_budget_bounds_states_and_recomputation(budget):
    stats = _budget_stats(budget)
    n = stats["steps"]
    assert n == 60
    assert stats["checkpoint_states"] <= budget
    # the reverse sweep replays each step once to record it, plus the re-advances
    readvanced = stats["recomputed_steps"] - n
    if budget == 1:
        assert readvanced == n * (n - 1) // 2
    elif budget >= n:  # the forward solve kept every state: nothing to re-advance
        assert readvanced == 0
    else:
        # checkpoints placed during the forward solve beat reversing from the initial state
        # with the offline optimum, which would first re-advance through all the steps
        assert readvanced < _optimal_readvances(n, budget)


def _optimal_readvances(steps: int, slots: int) -> int:
    """Brute-force fewest forward steps to reverse ``steps`` steps from a stored initial
    state with ``slots`` stored states (recording steps not counted)."""
    table = {}
    for s in range(1, slots + 1):
        for n in range(1, steps + 1):
            if n == 1:
                table[n, s] = 0
            elif s == 1:
                table[n, s] = n * (n - 1) // 2
            else:
                table[n, s] = min(m + table[n - m, s - 1] + table[m, s] for m in range(1, n))
    return table[steps, slots]


@pytest.mark.parametrize("slots", [2, 3, 4, 5])
def test_binomial_schedule_is_optimal(slots):
    for steps in range(2, 41):
        best = _optimal_readvances(steps, slots)
        assert binomial_cost(steps, slots) == best
        m = binomial_split(steps, slots - 1)
        assert 1 <= m < steps
        assert m + _optimal_readvances(steps - m, slots - 1) + _optimal_readvances(m, slots) == best


def test_online_schedule_keeps_at_most_budget_states():
    for budget in (1, 2, 3, 6):
        schedule = OnlineSchedule(budget)
        kept = [0]
        for step in range(1, 500):
            evicted = schedule.place(step)
            if evicted is None:
                continue
            if evicted >= 0:
                kept.remove(evicted)
            kept.append(step)
            assert sorted(kept) == schedule.steps and len(kept) <= budget and kept[0] == 0
        # the stored states spread over the whole run, not just its start
        assert budget == 1 or kept[-1] == 499


def test_failed_budget_solve_raises_and_removes_its_files(tmp_path):
    # y' = y^2 from 1 blows up at t = 1: the forward solve fails after storing checkpoints
    y0 = torch.ones(1, dtype=torch.float64, requires_grad=True)
    with pytest.raises(pnode.ConvergenceError, match="non-finite"):
        pnode.odeint_adjoint(lambda t, y: y ** 2, y0, torch.tensor([0.0, 2.0], dtype=torch.float64),
                             method="rk4", step_size=0.01,
                             checkpoint=pnode.Checkpoint(budget=3, disk=True, directory=str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_bad_budgets_rejected():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(pnode.ConfigurationError, match="budget"):
            pnode.Checkpoint(budget=bad)
    with pytest.raises(pnode.ConfigurationError, match="disk"):
        pnode.Checkpoint("all", disk=True)
    with pytest.raises(pnode.ConfigurationError, match="mode"):
        pnode.Checkpoint("revolve")


def test_trajectory_is_kept_in_memory_not_in_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = CubicMLP()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    for ck in ("all", "solution", pnode.Checkpoint(budget=2)):
        out = pnode.odeint_adjoint(f, y0, t, method="rk4", step_size=0.1, checkpoint=ck)
        assert list(tmp_path.iterdir()) == []  # a basic trajectory would have written TS-data-*
        out.sum().backward()
        assert list(tmp_path.iterdir()) == []


class CountingMLP(CubicMLP):
    """CubicMLP that counts its evaluations."""

    calls = 0

    def forward(self, t, y):
        self.calls += 1
        return super().forward(t, y)


@pytest.mark.parametrize("method, kw", [("rk4", dict(step_size=0.05)), ("dopri5", dict(rtol=1e-6))])
@pytest.mark.parametrize("ck", ["all", "solution"])
def test_backward_pass_reuses_stage_graphs(method, kw, ck):
    f = CountingMLP()
    y0 = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    ode = pnode.NeuralODE(f, method=method, checkpoint=ck, **kw)
    out = ode(y0, t)
    steps, forward_calls = len(ode.step_times) - 1, f.calls
    torch.autograd.grad((out ** 2).sum(), [y0, *f.parameters()])
    backward_calls = f.calls - forward_calls
    assert len(ode.step_times) - 1 == steps  # recomputed steps are not recorded as new ones
    if ck == "all":
        # graphs recorded in the forward pass: at most a step's first stage is re-evaluated
        # (FSAL tableaus hand it over from the previous step's last stage)
        assert backward_calls <= (steps if method == "dopri5" else 0)
    else:
        # solutions only: each step's stages are evaluated once more, their graphs reused
        # by the VJPs (a re-evaluation per stage would double this)
        assert forward_calls / 2 < backward_calls <= forward_calls + 7 * (len(t) - 1)


def test_graph_memory_caps_recorded_graphs():
    f = CountingMLP()
    y0 = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    results = {}
    for cap in (None, 0, 20_000):
        ode = pnode.NeuralODE(f, method="rk4", step_size=0.05,
                              checkpoint=pnode.Checkpoint("all", graph_memory=cap))
        out = ode(y0, t)
        kept, entry = ode.stats["stage_graphs"], ode.stats["stage_graph_bytes"]
        start = f.calls
        grads = torch.autograd.grad((out ** 2).sum(), [y0, *f.parameters()])
        results[cap] = (kept, f.calls - start, grads)
        if cap is not None:
            assert entry > 0 and kept * entry <= cap
    stages = 4 * 20
    assert results[None][:2] == (stages, 0)  # the default cap holds this small problem
    assert results[0][:2] == (0, stages)  # no graphs: every stage re-evaluated
    kept, evals, _ = results[20_000]
    assert 0 < kept < stages and evals == stages - kept
    for cap in (0, 20_000):
        for a, b in zip(results[cap][2], results[None][2]):
            assert torch.equal(a, b)


def test_bad_graph_memory_rejected():
    for bad in (-1, 1.5, True):
        with pytest.raises(pnode.ConfigurationError, match="graph_memory"):
            pnode.Checkpoint("all", graph_memory=bad)
    with pytest.raises(pnode.ConfigurationError, match="all"):
        pnode.Checkpoint("solution", graph_memory=10)
