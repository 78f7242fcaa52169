"""pnode.solvers.TrustRegion: L-SR1 (MATLMVMSR1) with a Krylov trust-region subproblem."""
import math
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from helpers import documented_defaults
from pnode.errors import ConfigurationError
from pnode.params import ParamVec
from pnode.solvers import NonFiniteObjectiveError, SR1Subproblem, TrustRegion, TrustRegionSettings
from solver_cases import DT, flat_params, sharded_regression


def test_documented_defaults_equal_the_code():
    table = documented_defaults(Path(__file__).parents[1] / "docs" / "solvers.md", "## Trust region")
    documented = {name: float(value) for name, value in table.items()}
    code = TrustRegionSettings()
    assert set(documented) == {f.name for f in fields(code)}
    assert all(documented[f.name] == getattr(code, f.name) for f in fields(code))
    assert (code.delta0, code.gamma1, code.gamma2, code.eta1, code.eta2, code.rho_tol) == (1, 0.25, 2.5, 0.05, 0.9, 0.005)


def test_lsr1_satisfies_the_secant_equation_on_its_stored_pairs():
    g = torch.Generator().manual_seed(4)
    n = 7
    Q = torch.randn(n, n, generator=g, dtype=DT)
    A = Q @ Q.T - 3 * torch.eye(n, dtype=DT)  # indefinite: SR1's case
    x = torch.zeros(n, dtype=DT)
    pv = ParamVec([x], None)
    sub = SR1Subproblem(pv, memory=4)
    X, G, out = pv.duplicate(), pv.duplicate(), pv.duplicate()
    points = [torch.randn(n, generator=g, dtype=DT) for _ in range(4)]
    for p in points:
        pv.local_of(X).copy_(p)
        pv.local_of(G).copy_(A @ p)
        X.stateIncrease()
        G.stateIncrease()
        sub.update(X, G)
    for a, b in zip(points, points[1:]):
        s = b - a
        pv.local_of(X).copy_(s)
        X.stateIncrease()
        sub.product(X, out)
        assert torch.allclose(pv.local_of(out), A @ s, rtol=1e-12, atol=1e-12)
    sub.destroy()


def nonconvex_problem():
    net, closure, _ = sharded_regression(None)
    return net, closure


@pytest.mark.parametrize("ksp_type", ["stcg", "gltr", "nash"])
def test_steps_never_exceed_the_radius_and_the_loss_never_rises(ksp_type):
    net, closure = nonconvex_problem()
    opt = TrustRegion(net, ksp_type=ksp_type, settings=TrustRegionSettings(delta0=0.05))
    losses, accepted = [float(closure().detach())], 0
    for _ in range(25):
        radius = opt.radius
        losses.append(opt.step(closure))
        assert opt.last["step_norm"] <= radius * (1 + 1e-14)
        accepted += opt.last["accepted"]
    assert opt.sub.ksp.getType() == ksp_type
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert accepted >= 10 and losses[-1] < 0.5 * losses[0]
    opt.destroy()


def test_a_rejected_step_leaves_the_iterate_unchanged():
    x = torch.full((4,), 3.0, dtype=DT, requires_grad=True)

    def closure():
        return (x ** 4).sum()
    opt = TrustRegion([x], settings=TrustRegionSettings(delta0=100.0))
    before = x.detach().clone()
    opt.step(closure)  # B = I: the step -g is cut at radius 100, far past the valley
    assert not opt.last["accepted"] and opt.last["rho"] < 0.005
    assert torch.equal(x.detach(), before)
    assert opt.radius == 25.0  # gamma1 * 100
    assert float(closure().detach()) == opt.history["loss"][-1] == opt.history["loss"][0]
    opt.destroy()


def test_converges_on_a_strictly_convex_quadratic():
    g = torch.Generator().manual_seed(2)
    Q = torch.randn(6, 6, generator=g, dtype=DT)
    A, b = Q @ Q.T + 6 * torch.eye(6, dtype=DT), torch.randn(6, generator=g, dtype=DT)
    x = torch.zeros(6, dtype=DT, requires_grad=True)

    def closure():
        return 0.5 * x @ (A @ x) - b @ x
    opt = TrustRegion([x], memory=6)
    for _ in range(40):
        opt.step(closure)
        if opt.history["gradient_norm"][-1] < 1e-10:
            break
    assert torch.allclose(x.detach(), torch.linalg.solve(A, b), atol=1e-9)
    assert opt.evaluator.gradients == opt.iterations + 1  # one evaluation per iteration
    opt.destroy()


def test_resume_replays_the_sr1_pairs_and_continues_identically():
    net, closure = nonconvex_problem()
    straight = TrustRegion(net, settings=TrustRegionSettings(delta0=0.1), memory=3)
    for _ in range(12):
        straight.step(closure)
    ref = flat_params(net)
    net2, closure2 = nonconvex_problem()
    first = TrustRegion(net2, settings=TrustRegionSettings(delta0=0.1), memory=3)
    for _ in range(6):
        first.step(closure2)
    state = first.state_dict()
    net3, closure3 = nonconvex_problem()
    second = TrustRegion(net3, memory=3)
    second.load_state_dict(state)
    for _ in range(6):
        second.step(closure3)
    assert second.iterations == 12 and len(second.history) == 13
    assert torch.allclose(flat_params(net3), ref, rtol=0, atol=1e-13)
    for opt in (straight, first, second):
        opt.destroy()


def test_non_finite_trial_is_rejected_and_non_finite_iterate_raises():
    x = torch.tensor([1.0, 2.0], dtype=DT, requires_grad=True)

    def closure():
        return torch.where(x.sum() < 2.5, torch.tensor(math.inf, dtype=DT), (x ** 2).sum())
    opt = TrustRegion([x], settings=TrustRegionSettings(delta0=10.0))
    opt.step(closure)
    assert not opt.last["accepted"] and torch.equal(x.detach(), torch.tensor([1.0, 2.0], dtype=DT))
    with torch.no_grad():
        x.fill_(0.0)
    with pytest.raises(NonFiniteObjectiveError):
        opt.step(lambda: closure() * 1.0)  # a new closure is evaluated at the (moved) iterate
    opt.destroy()


def test_torch_style_closure_and_bad_inputs():
    x = torch.tensor([2.0, -1.0], dtype=DT, requires_grad=True)

    def torch_style():
        loss = ((x - 0.5) ** 2).sum()
        loss.backward()
        return loss
    opt = TrustRegion([x])
    for _ in range(15):
        opt.step(torch_style)
    assert torch.allclose(x.detach(), torch.full((2,), 0.5, dtype=DT), atol=1e-8)
    opt.destroy()
    with pytest.raises(ConfigurationError, match="stcg"):
        TrustRegion([x], ksp_type="cg")
    with pytest.raises(ConfigurationError, match="gamma1"):
        TrustRegionSettings(gamma1=1.5)
    with pytest.raises(ConfigurationError, match="settings must be"):
        TrustRegion([x], settings={"delta0": 1.0})
    with pytest.raises(ConfigurationError, match="scalar"):
        TrustRegion([x]).step(lambda: x * 1)
    with pytest.raises(ConfigurationError, match="not a TrustRegion"):
        TrustRegion([x]).load_state_dict({"solver": "tao"})
