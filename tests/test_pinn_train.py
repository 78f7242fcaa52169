"""pnode.pinn.train: schedules of optimisers on a collocation problem, resume, faults."""
import pytest
import torch

from pnode.errors import ConfigurationError
from pnode.pinn import CollocationProblem, Interval, Stage, StopTraining, Term, train, operators as ops
from pnode.solvers import NonFiniteObjectiveError
from pinn_cases import DT, flat, mlp, poisson1d, rel_l2_poisson1d


def test_gauss_newton_solves_the_1d_poisson_problem_to_high_accuracy():
    problem = poisson1d(n=64, width=16)
    result = train(problem, [("lm", 100)], progress=False)
    assert rel_l2_poisson1d(problem) < 1e-6, rel_l2_poisson1d(problem)
    assert result.stages[0]["optimiser"] == "lm" and len(result.history) == result.stages[0]["iterations"]


def test_lbfgs_line_search_has_its_evaluations():
    """One L-BFGS iteration per step must still search its line (torch's default max_eval
    for max_iter=1 would take every full step unchecked: 3e-2 here instead of 1e-5)."""
    problem = poisson1d(n=32)
    train(problem, [("lbfgs", 60)], progress=False)
    assert rel_l2_poisson1d(problem) < 1e-4, rel_l2_poisson1d(problem)


@pytest.mark.parametrize("schedule", [[("adam", 5, {"lr": 1e-2}), ("lm", 5)],
                                      [("lbfgs", 4), ("tao:lmvm", 4, {"lmvm": "bfgs"})],
                                      [("tao:brgn", 3)]])
def test_schedules_run_in_order_with_one_history(schedule):
    problem = poisson1d(n=16)
    loss0 = float(problem.loss().detach())
    result = train(problem, schedule, progress=False)
    its = result.history["iteration"]
    assert its == list(map(float, range(1, len(its) + 1)))
    assert [s["optimiser"] for s in result.stages] == [s[0] for s in schedule]
    assert result.loss < loss0


def test_resume_from_a_checkpoint_continues_the_schedule(tmp_path):
    schedule = [("adam", 6, {"lr": 1e-2}), ("lm", 6)]
    ref = poisson1d(n=16)
    train(ref, schedule, progress=False)
    path = tmp_path / "run.pt"
    seen = []

    def stop_after_9(name, iteration, loss):
        seen.append(iteration)
        if iteration == 9:
            raise StopTraining
    problem = poisson1d(n=16)
    stopped = train(problem, schedule, progress=False, checkpoint=path, checkpoint_every=4, callback=stop_after_9)
    assert stopped.stopped and seen == list(range(1, 10)) and stopped.stages[-1]["words"].startswith("STOPPED")
    fresh = poisson1d(n=16)
    result = train(fresh, schedule, progress=False, checkpoint=path, checkpoint_every=2)
    assert len(result.history) == 12 and [s["iterations"] for s in result.stages] == [6, 6]
    assert torch.allclose(flat(fresh), flat(ref), rtol=0, atol=1e-12)
    with pytest.raises(ConfigurationError, match="written for the schedule"):
        train(poisson1d(n=16), [("lm", 3)], progress=False, checkpoint=path)


def test_unknown_optimisers_are_named():
    with pytest.raises(ConfigurationError, match="unknown optimiser 'sgd'"):
        Stage("sgd", 3)
    with pytest.raises(ConfigurationError, match="unknown TAO type 'newton'"):
        train(poisson1d(n=8), [("tao:newton", 3)], progress=False)


def test_divergence_stops_with_the_last_good_parameters_saved(tmp_path):
    domain = Interval(0.0, 1.0)
    # sqrt(c) is NaN once Adam (lr 1) pushes the coefficient c below zero
    term = Term("pde", domain.sample(8), lambda u, x, c: torch.sqrt(c["c"]) * (ops.laplacian(u)(x) + 1.0))
    problem = CollocationProblem(mlp(), [term], domain, coefficients={"c": torch.tensor(1e-3, dtype=DT)})
    before = flat(problem)
    path = tmp_path / "nan.pt"
    with pytest.raises(NonFiniteObjectiveError, match="not finite"):
        train(problem, [("adam", 5, {"lr": 1.0})], progress=False, checkpoint=path)
    # the first step made c negative: the parameters are those before it
    assert torch.equal(flat(problem), before)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(saved["x"], flat(problem))


def test_a_resample_stage_adds_points_where_the_residual_is_large_and_resumes_with_them(tmp_path):
    problem = poisson1d(n=16)
    path = tmp_path / "rs.pt"
    schedule = [("lm", 3), ("resample", 8, {"candidates": 400, "c": 0.0}), ("lm", 2)]
    result = train(problem, schedule, progress=False, checkpoint=path)
    assert problem.terms[0].points.shape == (24, 1) and result.stages[1]["words"].startswith("RESAMPLED")
    assert problem.local[0][0].shape == (24, 1) and problem.residual().shape == (24,)
    fresh = poisson1d(n=16)
    train(fresh, schedule, progress=False, checkpoint=path)  # finished: only the state is loaded
    assert torch.equal(fresh.terms[0].points, problem.terms[0].points)
    assert torch.equal(flat(fresh), flat(problem))
