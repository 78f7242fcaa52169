"""One call that trains a collocation problem through a schedule of optimisers.

``train(problem, [("adam", 2000, {"lr": 1e-3}), ("lm", 500)], checkpoint="run.pt")`` runs
the stages in order, each from where the last stopped, with one :class:`History` over
all of them (a tqdm bar per stage on rank 0). The optimisers are

- ``"adam"``, ``"lbfgs"`` (torch's; L-BFGS one iteration per step, strong Wolfe line
  search), the ranks' gradients summed by :class:`pnode.dataparallel.GradientReducer`;
- ``"lm"``: :class:`pnode.solvers.LevenbergMarquardt` on the residual vector with its
  assembled Jacobian rows (``"linear_solver": "cg"`` for the matrix-free normal
  equations);
- ``"tao:<type>"``: :class:`pnode.solvers.TaoSolver` of that TAO type (``tao:lmvm``,
  ``tao:bqnls``, ``tao:brgn``, ...), the stage's options passed as TAO options
  (``lmvm=`` picks the quasi-Newton matrix).

A stage ``("resample", n, {"term": 0, "candidates": 20 * n, "k": 1, "c": 1, "mode": "add"})``
is no optimiser: it draws ``n`` points of term ``term`` from uniform candidates in the
domain by :func:`pnode.pinn.resample_by_residual` and adds them to the term's points
(``"mode": "replace"``: they replace them); every rank draws the same.

With ``checkpoint``, the state (stage, optimiser state, parameters, history) is written
every ``checkpoint_every`` iterations and after each stage, and a later call with the
same schedule continues from it. A non-finite loss stops training with the parameters of
the last good iterate (saved when there is a checkpoint) and raises
:class:`pnode.solvers.NonFiniteObjectiveError`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from pnode.dataparallel import GradientReducer
from pnode.errors import ConfigurationError
from pnode.solvers import History, LevenbergMarquardt, NonFiniteObjectiveError, TaoSolver, tao_types
from pnode.solvers.monitor import Progress
from pnode.solvers.tao import load_state, save_state

from .problem import CollocationProblem
from .sampling import resample_by_residual

OPTIMISERS = ("adam", "lbfgs", "lm", "tao:<type>")
RESAMPLE = "resample"


class StopTraining(Exception):
    """Raised by a :func:`train` callback (on every rank at the same iteration) to stop
    training there: the state is saved and ``train`` returns normally."""


@dataclass
class Stage:
    """One optimiser run for ``iterations`` iterations with its ``options``."""

    optimiser: str
    iterations: int
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        name = self.optimiser
        if not isinstance(name, str) or not (name in OPTIMISERS[:3] or name == RESAMPLE or name.startswith("tao:")):
            raise ConfigurationError(f"unknown optimiser {name!r}; choose one of {', '.join(OPTIMISERS)} "
                                     f"(or {RESAMPLE!r})")
        if name.startswith("tao:") and name[4:] not in tao_types():
            raise ConfigurationError(f"unknown TAO type {name[4:]!r} in {name!r}; this PETSc offers: "
                                     f"{', '.join(tao_types())}")
        if int(self.iterations) < 0:
            raise ConfigurationError(f"stage {name!r}: iterations must be >= 0, got {self.iterations}")
        self.iterations = int(self.iterations)


def as_stage(spec) -> Stage:
    """A :class:`Stage` from itself or ``(optimiser, iterations[, options])``."""
    if isinstance(spec, Stage):
        return spec
    if isinstance(spec, (tuple, list)) and len(spec) in (2, 3):
        return Stage(spec[0], spec[1], dict(spec[2]) if len(spec) == 3 else {})
    raise ConfigurationError(f"a schedule entry is a Stage or (optimiser, iterations[, options]), got {spec!r}")


@dataclass
class TrainResult:
    """What :func:`train` did: the history over all stages and each stage's outcome."""

    history: History
    stages: list[dict[str, Any]]
    stopped: bool = False  # by a callback's StopTraining (resume from the checkpoint)

    @property
    def loss(self) -> float:
        return self.history.last("loss")


class _Torch:
    """Adam or L-BFGS (torch.optim) with the ranks' gradients summed."""

    def __init__(self, problem: CollocationProblem, stage: Stage, progress: bool):
        self.problem, self.stage = problem, stage
        self.params = problem.parameters()
        self.reducer = GradientReducer(self.params, problem.mpi)
        opts = dict(stage.options)
        if stage.optimiser == "adam":
            self.opt = torch.optim.Adam(self.params, lr=opts.pop("lr", 1e-3), **opts)
        else:
            opts.setdefault("line_search_fn", "strong_wolfe")
            opts.setdefault("max_eval", 25)  # torch's default, max_iter * 5 / 4, would leave one evaluation
            self.opt = torch.optim.LBFGS(self.params, lr=opts.pop("lr", 1.0), max_iter=1, **opts)
        self.iterations = 0
        self.progress = progress
        self.good = self._flat()

    def _flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def _restore(self, flat: torch.Tensor) -> None:
        _assign(self.problem, flat)

    def _closure(self):
        self.opt.zero_grad()
        with self.reducer.guard():
            loss = self.problem.loss()
            loss.backward()
        total = self.reducer.reduce(loss.detach())
        self.gradient_norm = float(torch.sqrt(sum((p.grad ** 2).sum() for p in self.params if p.grad is not None)))
        if not (math.isfinite(total) and math.isfinite(self.gradient_norm)):
            raise NonFiniteObjectiveError(
                f"{self.stage.optimiser}: the loss or gradient is not finite (loss {total}) at iteration "
                f"{self.iterations + 1}; the parameters are the last good iterate's", collective=True)
        self.good, self.loss = self._flat(), total  # the last point evaluated with a finite loss
        return torch.tensor(total, dtype=loss.dtype)

    def run(self, after: Callable[[float, float], None]) -> str:
        bar = Progress(self.stage.iterations - self.iterations, self.stage.optimiser, self.problem.mpi, self.progress)
        try:
            while self.iterations < self.stage.iterations:
                try:
                    self.opt.step(self._closure)
                except NonFiniteObjectiveError:
                    self._restore(self.good)
                    raise
                self.iterations += 1
                bar.update(1, loss=self.loss)
                after(self.loss, self.gradient_norm)
        finally:
            bar.close()
        return "ITERATIONS: the stage's iterations were done"

    def state_dict(self) -> dict[str, Any]:
        return {"x": self._flat().cpu(), "iterations": self.iterations, "optim": self.opt.state_dict()}

    def load_state_dict(self, state) -> None:
        self._restore(state["x"].to(self.params[0]))
        self.iterations = int(state["iterations"])
        self.opt.load_state_dict(state["optim"])

    def destroy(self) -> None:
        pass


class _Solver:
    """A :class:`LevenbergMarquardt` or :class:`TaoSolver` stage on the problem's residual."""

    def __init__(self, problem: CollocationProblem, stage: Stage, progress: bool):
        self.problem, self.stage = problem, stage
        opts = dict(stage.options)
        self._after: Callable[[float, float], None] | None = None
        if stage.optimiser == "lm":
            jacobian = "shell" if opts.get("linear_solver") == "cg" else "dense"
            self.solver = LevenbergMarquardt(problem.parameters(), problem.objective(jacobian), comm=problem.mpi,
                                             progress=progress, callback=self._each, **opts)
        else:
            kwargs = {k: opts.pop(k) for k in ("lmvm", "bounds", "options_prefix") if k in opts}
            jacobian = opts.pop("jacobian", "dense")
            self.solver = TaoSolver(problem.parameters(), problem.objective(jacobian), tao_type=stage.optimiser[4:],
                                    comm=problem.mpi, options=opts, progress=progress, callback=self._each,
                                    **kwargs)

    def _each(self, solver) -> None:
        if self._after is not None:
            self._after(solver.history.last("loss"), solver.history.last("gradient_norm"))

    @property
    def iterations(self) -> int:
        return self.solver.iterations

    def run(self, after: Callable[[float, float], None]) -> str:
        self._after = after
        return self.solver.solve(max_it=self.stage.iterations).words

    def state_dict(self) -> dict[str, Any]:
        if isinstance(self.solver, TaoSolver):
            # the iterate is TAO's solution (the model may hold a line-search trial point)
            state = self.solver.state_dict()
            state["x"] = self.solver.pvec.to_full(self.solver.tao.getSolution()).clone().cpu()
            return state
        return self.solver.state_dict()

    def load_state_dict(self, state) -> None:
        self.solver.load_state_dict(state)

    def destroy(self) -> None:
        self.solver.destroy()


def _runner(problem: CollocationProblem, stage: Stage, progress: bool):
    return (_Torch if stage.optimiser in ("adam", "lbfgs") else _Solver)(problem, stage, progress)


def train(problem: CollocationProblem, schedule: Sequence, *, progress: bool = True,
          checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 0,
          callback: Callable[[str, int, float], None] | None = None) -> TrainResult:
    """Train ``problem`` by the stages of ``schedule`` (see the module docstring).

    ``callback(optimiser, iteration, loss)`` runs on every rank after each iteration
    (``iteration`` counts over all stages); raising :class:`StopTraining` there stops. With ``checkpoint`` an existing file written
    for the same schedule is resumed."""
    if not isinstance(problem, CollocationProblem):
        raise ConfigurationError(f"train needs a pnode.pinn.CollocationProblem, got {type(problem).__name__}")
    stages = [as_stage(s) for s in schedule]
    if not stages:
        raise ConfigurationError("the schedule is empty")
    names = [[s.optimiser, s.iterations] for s in stages]
    history, done, first, resume = History(), [], 0, None
    if checkpoint is not None and os.path.exists(checkpoint):
        state = load_state(checkpoint)
        if state.get("schedule") != names:
            raise ConfigurationError(f"the checkpoint {os.fspath(checkpoint)!r} was written for the schedule "
                                     f"{state.get('schedule')} ([optimiser, iterations]), not {names}")
        history.load_state_dict(state["history"])
        done, first, resume = list(state["stages"]), int(state["stage"]), state["runner"]
        _assign(problem, state["x"])
        for i, points in enumerate(state["points"]):
            if problem.terms[i].data is None and not torch.equal(points, problem.terms[i].points.cpu()):
                problem.set_points(i, points.to(problem.terms[i].points))
    mpi = problem.mpi

    def save(stage_index: int, runner) -> None:
        if checkpoint is not None:
            x = torch.cat([p.detach().reshape(-1) for p in problem.parameters()]).cpu()
            save_state({"schedule": names, "stage": stage_index, "stages": done, "x": x,
                        "points": [term.points.cpu() for term in problem.terms],
                        "runner": None if runner is None else runner.state_dict(),
                        "history": history.state_dict()}, checkpoint, mpi)

    for index in range(first, len(stages)):
        stage = stages[index]
        if stage.optimiser == RESAMPLE:
            done.append({"optimiser": RESAMPLE, "iterations": 0, "words": _resample(problem, stage, index),
                         "loss": history.last("loss")})
            save(index + 1, None)
            continue
        runner = _runner(problem, stage, progress)
        if resume is not None:
            runner.load_state_dict(resume)
            resume = None

        def after(loss: float, gradient_norm: float) -> None:
            iteration = int(history.last("iteration", 0)) + 1
            history.append(iteration, loss, gradient_norm)
            if callback is not None:
                callback(stage.optimiser, iteration, loss)
            if checkpoint_every > 0 and iteration % checkpoint_every == 0:
                save(index, runner)
        stopped = False
        try:
            words = runner.run(after)
        except NonFiniteObjectiveError:
            save(index, runner)
            raise
        except StopTraining:
            stopped, words = True, "STOPPED: by the callback"
            save(index, runner)
        finally:
            if isinstance(runner, _Solver):
                runner.destroy()
        if stopped:
            return TrainResult(history, done + [{"optimiser": stage.optimiser, "iterations": runner.iterations,
                                                 "words": words, "loss": history.last("loss")}], stopped=True)
        done.append({"optimiser": stage.optimiser, "iterations": runner.iterations, "words": words,
                     "loss": history.last("loss")})
        save(index + 1, None)
    return TrainResult(history, done)


def _resample(problem: CollocationProblem, stage: Stage, index: int) -> str:
    opts = dict(stage.options)
    term = int(opts.get("term", 0))
    if not 0 <= term < len(problem.terms):
        raise ConfigurationError(f"resample: no term {term} (the problem has {len(problem.terms)})")
    n, mode = stage.iterations, opts.get("mode", "add")
    if mode not in ("add", "replace"):
        raise ConfigurationError(f"resample: mode must be 'add' or 'replace', got {mode!r}")
    candidates = problem.domain.sample(int(opts.get("candidates", 20 * n)), "uniform",
                                       seed=int(opts.get("seed", 7919 + index)), dtype=problem.dtype)
    picked = resample_by_residual(lambda X: problem.term_residual(term, X), candidates, n,
                                  k=float(opts.get("k", 1.0)), c=float(opts.get("c", 1.0)),
                                  seed=int(opts.get("seed", 7919 + index)))
    old = problem.terms[term].points
    problem.set_points(term, torch.cat([old, picked.to(old)]) if mode == "add" else picked.to(old))
    return f"RESAMPLED: term {problem.terms[term].name!r} has {problem.terms[term].points.shape[0]} points ({mode})"


def _assign(problem: CollocationProblem, flat: torch.Tensor) -> None:
    params = problem.parameters()
    if flat.numel() != sum(p.numel() for p in params):
        raise ConfigurationError(f"the checkpoint holds {flat.numel()} parameter values, the problem "
                                 f"{sum(p.numel() for p in params)}")
    with torch.no_grad():
        for p, v in zip(params, torch.split(flat.to(params[0]), [p.numel() for p in params])):
            p.copy_(v.view_as(p))
