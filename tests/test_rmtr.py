"""pnode.solvers.RMTR: recursive multilevel trust region over residual networks in depth."""
import math
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from helpers import assert_matches_central_differences, documented_defaults
from pnode.errors import ConfigurationError
from pnode.solvers import (RMTR, EulerNeuralODE, NonFiniteObjectiveError, ResidualNetwork, RMTRSettings,
                           StepCountHierarchy, TrustRegionSettings)
from solver_cases import DT, flat_params, resnet_regression


def test_documented_defaults_equal_the_code():
    table = documented_defaults(Path(__file__).parents[1] / "docs" / "solvers.md", "## RMTR")
    code = RMTRSettings()
    assert set(table) == {f.name for f in fields(code)}
    assert all(type(getattr(code, f.name))(table[f.name]) == getattr(code, f.name) for f in fields(code))
    assert (code.kappa_g, code.coarse_iterations) == (1 / 8, 2)  # UTOPIA's


def fine_gradient(model, closure, forward=None):
    """The loss's gradient by autograd, flat (independent of the Evaluator)."""
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(closure(model, forward), params)
    return torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize("restriction,network", [("injection", ResidualNetwork), ("full_weighting", ResidualNetwork),
                                                 ("injection", EulerNeuralODE)])
def test_the_coarse_models_gradient_at_its_start_is_the_restricted_fine_gradient(restriction, network):
    H, closure = resnet_regression(None, levels=2, restriction=restriction, network=network)
    opt = RMTR(H)
    opt.prepare(closure)
    start = opt.coarse_model(1)
    coarse, fine = H.models
    low = opt.cores[0]
    x0 = H.pvecs[0].to_full(low.x)
    # the iterate was restricted by the hierarchy's map, the coarse loss evaluated there
    assert torch.allclose(x0, H.matrix(1, "restriction") @ flat_params(fine), rtol=0, atol=1e-15)
    H.pvecs[0].buffer.assign(x0)
    assert start == pytest.approx(float(closure(coarse).detach()), rel=1e-14)
    # grad h(x0) = P^T grad f (autograd on the fine model's residual recursion, for the
    # neural ODE not through its TS and TSAdjoint; the dense P)
    restricted = H.matrix(1).T @ fine_gradient(fine, closure, ResidualNetwork.forward)
    model_gradient = H.pvecs[0].to_full(low.model_gradient())
    assert torch.allclose(model_gradient, restricted, rtol=1e-13, atol=1e-15)
    # and h(x) = f_c(x) + <v, x - x0> has that gradient (central differences at x0)
    shift = H.pvecs[0].to_full(low.shift)
    flat = x0.clone()

    def h():
        H.pvecs[0].buffer.assign(flat)
        return float(closure(coarse).detach()) + float(shift @ (flat - x0))
    assert_matches_central_differences(h, flat, restricted, range(0, x0.numel(), 7), eps=1e-6, rtol=1e-7)
    opt.destroy()
    H.destroy()


def test_rmtr_trains_a_neural_ode_over_ts_step_counts():
    H, closure = resnet_regression(None, levels=2, network=EulerNeuralODE)
    assert isinstance(H, StepCountHierarchy) and [len(m.blocks) for m in H.models] == [3, 5]
    opt = RMTR(H)
    losses = [opt.prepare(closure)] + [opt.step(closure) for _ in range(5)]
    assert all(b <= a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.8 * losses[0], losses
    assert any(e["kind"] == "coarse correction" and e["accepted"] for e in opt.log)
    opt.destroy()
    H.destroy()


@pytest.mark.parametrize("cycle", ["V", "W"])
def test_steps_never_exceed_the_radius_and_the_loss_decreases(cycle):
    H, closure = resnet_regression(None, levels=3)
    opt = RMTR(H, rmtr=RMTRSettings(cycle=cycle), settings=TrustRegionSettings(delta0=0.5))
    losses = [opt.prepare(closure)]
    corrections, smoothed = 0, set()
    for _ in range(6):
        losses.append(opt.step(closure))
        for entry in opt.log:
            if "step_norm" in entry:
                assert entry["step_norm"] <= entry["radius"] * (1 + 1e-12), entry
            corrections += entry["kind"] == "coarse correction" and entry["accepted"]
            smoothed |= {entry["level"]} if entry["kind"] == "smoothing" else set()
    assert corrections >= 3  # the coarse levels contribute accepted steps
    assert smoothed == {0, 1, 2}
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 0.5 * losses[0]
    assert opt.history["loss"] == losses
    assert opt.gradient_evaluations < sum(ev.gradients for ev in opt.evaluators)  # coarse ones count less
    assert torch.allclose(flat_params(H.models[-1]), H.pvecs[-1].to_full(opt.fine.x), rtol=0, atol=0)
    opt.destroy()
    H.destroy()


def test_a_rejected_step_leaves_the_iterate_unchanged():
    H, closure = resnet_regression(None, levels=2)
    fine = H.models[-1]

    def steep(model):
        """A huge fine-level gradient: fine steps are cut at the (huge) radius and overshoot;
        the coarse model (its own loss plus that gradient's linear term) accepts a step
        whose prolongation the fine level then rejects."""
        return (1e6 if model is fine else 1.0) * closure(model)
    opt = RMTR(H, settings=TrustRegionSettings(delta0=1e3))
    before = flat_params(fine)
    loss = opt.prepare(steep)
    opt.step(steep)
    kinds = [(e["level"], e["kind"], e.get("accepted")) for e in opt.log]
    assert (0, "smoothing", True) in kinds and (1, "coarse correction", False) in kinds
    assert not any(accepted for level, _, accepted in kinds if level == 1)
    assert torch.equal(flat_params(fine), before)
    assert opt.history["loss"] == [loss, loss] and float(steep(fine).detach()) == loss
    assert opt.radius < 1e3
    opt.destroy()
    H.destroy()


def test_a_non_finite_loss_keeps_the_last_good_iterate():
    H, closure = resnet_regression(None, levels=2)
    fine = H.models[-1]
    opt = RMTR(H)
    opt.step(closure)
    good = flat_params(fine)
    with pytest.raises(NonFiniteObjectiveError, match="not finite"):
        opt.step(lambda model: closure(model) * math.nan)
    assert torch.equal(flat_params(fine), good)
    opt.step(closure)  # the solver goes on from the good iterate
    assert opt.history["loss"][-1] < opt.history["loss"][1]
    opt.destroy()
    H.destroy()


def test_resume_continues_identically():
    def run(cycles, state=None):
        H, closure = resnet_regression(None, levels=3)
        opt = RMTR(H, settings=TrustRegionSettings(delta0=0.5), memory=3)
        if state is not None:
            opt.load_state_dict(state)
        for _ in range(cycles):
            opt.step(closure)
        out = flat_params(H.models[-1]), opt.state_dict(), opt.gradient_evaluations
        opt.destroy()
        H.destroy()
        return out
    ref, _, ref_evals = run(6)
    _, state, _ = run(3)
    got, final, evals = run(3, state)
    assert final["cycles"] == 6 and len(final["history"]["loss"]) == 7
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)
    assert evals == ref_evals + 1  # the resumed solver evaluates its iterate once more


def test_bad_configurations_are_named():
    H, closure = resnet_regression(None, levels=2)
    with pytest.raises(ConfigurationError, match="Hierarchy"):
        RMTR(H.models)
    with pytest.raises(ConfigurationError, match="cycle"):
        RMTRSettings(cycle="F")
    with pytest.raises(ConfigurationError, match="kappa_g"):
        RMTRSettings(kappa_g=2.0)
    opt = RMTR(H)
    with pytest.raises(ConfigurationError, match="closure"):
        opt.step(None)
    with pytest.raises(ConfigurationError, match="not an RMTR's"):
        opt.load_state_dict({"solver": "trust_region"})
    opt.destroy()
    H.destroy()


def test_nested_iteration_trains_upwards_and_prolongates_each_level():
    H, closure = resnet_regression(None, levels=3)
    fine = H.models[-1]
    initial = float(closure(fine).detach())
    opt = RMTR(H)
    loss = opt.nested_iteration(closure, cycles=4)
    # the finest model holds P applied to level 1's trained iterate
    x1 = H.pvecs[1].to_full(opt.cores[1].x)
    assert torch.allclose(flat_params(fine), H.matrix(2) @ x1, rtol=0, atol=1e-15)
    assert loss == pytest.approx(float(closure(fine).detach()), rel=1e-14) and loss < 0.5 * initial
    # the coarse levels were trained, the finest level only evaluated at the result
    assert opt.evaluators[0].gradients > 4 and opt.evaluators[2].gradients == 1
    assert opt.gradient_evaluations == sum(ev.gradients * c for ev, c in zip(opt.evaluators, opt.costs))
    assert opt.history["gradients"] == [opt.gradient_evaluations]
    assert opt.step(closure) <= loss
    with pytest.raises(ConfigurationError, match="cycles >= 1"):
        opt.nested_iteration(closure, cycles=0)
    opt.destroy()
    H.destroy()
