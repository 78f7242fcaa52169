"""Learn the unknown reaction term of a viscous Burgers equation on a distributed grid.

    u_t + (u^2 / 2)_x = nu u_xx + R(u),   x in [0, 1) periodic,   R(u) = 1.5 u (1 - u^2)

Known physics, discretised on the coarse grid (a periodic PETSc DMDA, second-order
central differences): the advection (explicit) and the diffusion (implicit: the stiff
part; at the defaults its largest eigenvalue times the step is 4 nu dt / h^2 = 4.9, beyond
the explicit midpoint rule's limit of 2). Unknown:
the reaction ``R``, a pointwise MLP ``1-16-16-1`` applied to each rank's ghosted patch.
Burgers rather than plain reaction-diffusion so that the explicit part also couples
neighbours (its ghost exchange is differentiated too); the unknown term is pointwise so
that it can be compared with the true ``R`` on a grid of u values.

Data: a reference solve of the same equation on an 8 times finer grid (fourth-order
differences, scipy BDF at rtol 1e-9) from ``--batch`` random smooth initial conditions,
injected into the coarse grid every ``--t-obs``. Training (``[0, --t-train]``): every
window of ``--window`` observation intervals, from every training snapshot, is one
degree of freedom of the DMDA, so all windows are integrated together by
``pnode.odeint_adjoint`` with IMEX ARKIMEX ARS122 (fixed steps, one matrix-free Krylov
solve per step for the diffusion, discrete adjoint); Adam with a cosine learning rate.

    python examples/burgers_closure.py --out out/burgers
    mpiexec -n 2 python examples/burgers_closure.py --out out/burgers_n2
    python examples/burgers_closure.py --out out/burgers --resume --iters 600
    python examples/burgers_closure.py --quick --out out/burgers_quick

Prints the learned term's error against ``R`` on 201 u values spanning the central 98%
(1st to 99th percentile) of the training values, and the relative L2 error of a rollout
from ``u(0)`` over the training times and over the held-out times ``(--t-train, --t-end]``,
next to two baselines: the known physics alone (R = 0) and the coarse model with the true
``R`` (the discretisation floor). The metrics do not depend on the number of ranks (to
rounding). Rank 0 prints, shows a progress bar and saves in --out: ``burgers_closure.png``
(space-time truth, rollout and error; learned vs true term) and ``checkpoint.pt``
(``--resume`` continues from it; with a larger ``--iters`` the cosine schedule is
stretched to the new count).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from functools import lru_cache

import numpy as np
import torch
from mpi4py import MPI
from tqdm import tqdm

import pnode
from pnode.distributed import DMDAProblem, create_dmda, interior, laplacian

DT = torch.float64


def true_reaction(u):
    """The term the network has to find (numpy or torch)."""
    return 1.5 * u * (1 - u ** 2)


@dataclasses.dataclass(frozen=True)
class Config:
    """Problem and training settings (the command line's defaults)."""

    n: int = 64              # coarse grid points
    refine: int = 8          # reference grid = refine * n points
    nu: float = 0.03
    batch: int = 4           # initial conditions (DMDA degrees of freedom)
    t_train: float = 1.0
    t_end: float = 2.0
    t_obs: float = 0.05      # observation spacing
    window: int = 1          # observation intervals per training window
    step: float = 0.01       # ARKIMEX step
    iters: int = 300
    lr: float = 0.02         # Adam, cosine decay to lr / 20
    seed: int = 0
    save_every: int = 50


#: the printed metrics (relative errors are L2 norms over all points, times and initial conditions)
METRICS = ("loss", "initial_term_rel", "term_rel", "term_max", "rollout_train_rel", "rollout_heldout_rel",
           "no_reaction_rollout_heldout_rel", "true_reaction_rollout_heldout_rel")

QUICK = dict(n=32, refine=4, batch=2, t_train=0.3, t_end=0.6, t_obs=0.1, step=0.02, iters=6)


class Reaction(torch.nn.Module):
    """``R_theta(u)``, pointwise; the last layer starts at zero (``R_theta = 0``)."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.Tanh(), torch.nn.Linear(hidden, 1)).double()
        torch.nn.init.zeros_(self.net[-1].weight)
        torch.nn.init.zeros_(self.net[-1].bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.net(u[..., None])[..., 0]


class Explicit(torch.nn.Module):
    """Advection ``-(u^2/2)_x`` (central, conservative) plus the reaction, on a ghosted patch."""

    def __init__(self, h: float, reaction):
        super().__init__()
        self.h, self.reaction = h, reaction

    def forward(self, t, patch: torch.Tensor) -> torch.Tensor:
        flux = 0.5 * patch ** 2
        return -(flux[2:] - flux[:-2]) / (2 * self.h) + self.reaction(interior(patch, 1, 1))


class Diffusion(torch.nn.Module):
    """``nu u_xx`` on a ghosted patch: the implicit part."""

    def __init__(self, h: float, nu: float):
        super().__init__()
        self.h, self.nu = h, nu

    def forward(self, t, patch: torch.Tensor) -> torch.Tensor:
        return self.nu * laplacian(patch, self.h, 1, 1)


def initial_conditions(cfg: Config, x: np.ndarray) -> np.ndarray:
    """``(len(x), batch)`` random three-mode Fourier fields of amplitude ~1."""
    rng = np.random.default_rng(cfg.seed)
    cols = []
    for _ in range(cfg.batch):
        a = rng.normal(size=3) * np.array([0.6, 0.3, 0.2])
        phase = rng.uniform(0, 2 * np.pi, 3)
        cols.append(sum(a[k] * np.sin(2 * np.pi * (k + 1) * x + phase[k]) for k in range(3)))
    return np.stack(cols, axis=1)


@lru_cache(maxsize=4)
def reference(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(observation times, truth ``(times, n, batch)``): a fourth-order finite-difference
    solve on ``refine * n`` points by scipy's BDF, injected into the coarse grid."""
    import scipy.sparse as sp
    from scipy.integrate import solve_ivp

    m = cfg.refine * cfg.n
    h = 1.0 / m
    x = np.arange(m) * h
    shift = lambda v, k: np.roll(v, -k)
    d1 = lambda v: (8 * (shift(v, 1) - shift(v, -1)) - (shift(v, 2) - shift(v, -2))) / (12 * h)
    d2 = lambda v: (16 * (shift(v, 1) + shift(v, -1)) - (shift(v, 2) + shift(v, -2)) - 30 * v) / (12 * h * h)
    rhs = lambda t, u: -d1(0.5 * u * u) + cfg.nu * d2(u) + true_reaction(u)
    offsets = [-2, -1, 0, 1, 2, 2 - m, 1 - m, m - 1, m - 2]
    sparsity = sp.diags([np.ones(m - abs(k)) for k in offsets], offsets, shape=(m, m))
    times = np.arange(round(cfg.t_end / cfg.t_obs) + 1) * cfg.t_obs
    u0 = initial_conditions(cfg, x)
    truth = np.stack([solve_ivp(rhs, (0.0, times[-1]), u0[:, b], method="BDF", t_eval=times, rtol=1e-9,
                                atol=1e-11, jac_sparsity=sparsity).y.T for b in range(cfg.batch)], axis=-1)
    return times, truth[:, ::cfg.refine]


class Model:
    """The coarse IMEX model on a DMDA of ``comm``: explicit and implicit DMDAProblems."""

    def __init__(self, cfg: Config, comm, reaction, dof: int):
        self.cfg = cfg
        h = 1.0 / cfg.n
        self.da = create_dmda([cfg.n], dof=dof, comm=comm)
        self.explicit = DMDAProblem(self.da, Explicit(h, reaction))
        self.implicit = DMDAProblem(self.da, Diffusion(h, cfg.nu))

    def solve(self, y0: torch.Tensor, t: torch.Tensor, grad: bool) -> torch.Tensor:
        """ARKIMEX ARS122 (explicit midpoint + one implicit midpoint stage per step) with fixed
        steps; one matrix-free Krylov solve per stage (the implicit part is linear)."""
        solver = pnode.odeint_adjoint if grad else pnode.odeint
        return solver(self.explicit, y0, t, method="arkimex", implicit=self.implicit, step_size=self.cfg.step,
                      jacobian="matrix-free", options={"ts_arkimex_type": "ars122", "snes_type": "ksponly"})

    def destroy(self) -> None:
        self.explicit.destroy()
        self.implicit.destroy()
        self.da.destroy()


def term_error(reaction, u: torch.Tensor) -> tuple[float, float]:
    """(max |R_theta - R|, relative L2 error) on the u values ``u``."""
    with torch.no_grad():
        err = reaction(u) - true_reaction(u)
    return float(err.abs().max()), float(err.norm() / true_reaction(u).norm())


def rollout(model: Model, truth: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """The model's solution from ``truth[0]`` at ``times``, gathered on every rank."""
    with torch.no_grad():
        return model.explicit.gather(model.solve(model.explicit.scatter(truth[0]), times, grad=False))


def relative_error(pred: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    """Relative L2 error of ``pred`` over the times selected by ``mask``."""
    return float((pred - truth)[mask].norm() / truth[mask].norm())


def windows(truth: torch.Tensor, length: int) -> torch.Tensor:
    """Every ``length + 1`` consecutive snapshots of ``truth`` ``(times, n, batch)``, stacked
    along the last axis: ``(length + 1, n, starts * batch)``."""
    starts = range(truth.shape[0] - length)
    return torch.stack([truth[s:s + length + 1] for s in starts], dim=2).flatten(2)


class Trainer:
    """Adam (cosine learning rate) on the squared error of short windows that start at every
    training snapshot, all integrated together (one DMDA degree of freedom each);
    resumable from a checkpoint."""

    def __init__(self, cfg: Config, comm, times: torch.Tensor, truth: torch.Tensor, ckpt: str | None):
        self.cfg, self.comm, self.ckpt = cfg, comm, ckpt
        self.train = times <= cfg.t_train + 1e-12
        torch.manual_seed(cfg.seed)
        self.reaction = Reaction()
        self.opt = torch.optim.Adam(self.reaction.parameters(), lr=cfg.lr)
        seen = truth[self.train]
        lo, hi = np.quantile(seen.numpy(), [0.01, 0.99])
        self.u_grid = torch.linspace(float(lo), float(hi), 201, dtype=DT)
        self.start = 0
        self.history = {"initial_term_rel": term_error(self.reaction, self.u_grid)[1], "loss": []}
        self.data = windows(seen, cfg.window)
        self.times, self.n_global = times[:cfg.window + 1], self.data[1:].numel()

    def resume(self) -> None:
        """Load the checkpoint (rank 0 reads, every rank gets its content), if there is one."""
        root = self.comm.Get_rank() == 0
        state = torch.load(self.ckpt, weights_only=True) if root and os.path.exists(self.ckpt) else None
        state = self.comm.bcast(state, root=0)
        if state is not None:
            self.reaction.load_state_dict(state["reaction"])
            self.opt.load_state_dict(state["optimizer"])
            self.start, self.history = state["iteration"], state["history"]

    def save(self, iteration: int) -> None:
        os.makedirs(os.path.dirname(self.ckpt), exist_ok=True)
        torch.save({"reaction": self.reaction.state_dict(), "optimizer": self.opt.state_dict(),
                    "iteration": iteration, "history": self.history, "config": dataclasses.asdict(self.cfg)},
                   self.ckpt)

    def loss(self, model: "Model", grad: bool) -> float:
        """The mean squared error over all windows (summed over the ranks); with ``grad``
        also its gradient in the reaction's ``.grad`` (the same on every rank: the adjoint
        sums the parameter gradient over the ranks)."""
        out = model.solve(model.explicit.scatter(self.data[0]), self.times, grad=grad)
        local = ((out[1:] - model.explicit.scatter(self.data[1:])) ** 2).sum() / self.n_global
        if grad:
            local.backward()
        return self.comm.allreduce(float(local.detach()), op=MPI.SUM)

    def fit(self, model: "Model", progress: bool) -> None:
        """Iterations ``start .. cfg.iters``; rank 0 saves the checkpoint every
        ``cfg.save_every`` iterations and at the end."""
        cfg = self.cfg
        bar = tqdm(range(self.start, cfg.iters), initial=self.start, total=cfg.iters, disable=not progress,
                   desc="burgers", unit="it")
        for it in bar:
            low = cfg.lr / 20
            for group in self.opt.param_groups:
                group["lr"] = low + 0.5 * (cfg.lr - low) * (1 + math.cos(math.pi * it / cfg.iters))
            self.opt.zero_grad()
            self.history["loss"].append(self.loss(model, grad=True))
            self.opt.step()
            bar.set_postfix(loss=f"{self.history['loss'][-1]:.3e}", refresh=False)
            if self.ckpt is not None and self.comm.Get_rank() == 0 and \
                    ((it + 1) % cfg.save_every == 0 or it + 1 == cfg.iters):
                self.save(it + 1)


def evaluate(cfg: Config, comm, trainer: Trainer, times: torch.Tensor, truth: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Metrics of the trained term and rollouts (same on every rank), and the learned rollout."""
    train, held_out = trainer.train, ~trainer.train
    term_max, term_rel = term_error(trainer.reaction, trainer.u_grid)
    metrics = {"initial_term_rel": trainer.history["initial_term_rel"], "term_rel": term_rel, "term_max": term_max}
    pred = None
    for name, term in (("", trainer.reaction), ("no_reaction_", torch.zeros_like), ("true_reaction_", true_reaction)):
        model = Model(cfg, comm, term, cfg.batch)
        try:
            sol = rollout(model, truth, times)
        finally:
            model.destroy()
        if pred is None:
            pred = sol
            metrics["rollout_train_rel"] = relative_error(sol, truth, train)
        metrics[f"{name}rollout_heldout_rel"] = relative_error(sol, truth, held_out)
    return metrics, pred


def run(cfg: Config, comm=MPI.COMM_WORLD, out: str | None = None, resume: bool = False) -> dict:
    """Train on ``comm``; returns the metrics (the same on every rank and for any number of
    ranks). With ``out``, rank 0 shows a progress bar and saves the checkpoint and the
    figure there; ``resume`` continues from the checkpoint."""
    root = comm.Get_rank() == 0
    times_np, truth_np = comm.bcast(reference(cfg) if root else None, root=0)
    times, truth = torch.from_numpy(times_np), torch.from_numpy(np.ascontiguousarray(truth_np))
    trainer = Trainer(cfg, comm, times, truth, os.path.join(out, "checkpoint.pt") if out else None)
    if resume and out:
        trainer.resume()
    model = Model(cfg, comm, trainer.reaction, trainer.data.shape[-1])
    tic = time.perf_counter()
    try:
        trainer.fit(model, progress=bool(out) and root)
        with torch.no_grad():
            loss = trainer.loss(model, grad=False)
    finally:
        model.destroy()
    seconds = time.perf_counter() - tic
    metrics, pred = evaluate(cfg, comm, trainer, times, truth)
    metrics.update(loss=loss, seconds=seconds)
    if out and root:
        plot(os.path.join(out, "burgers_closure.png"), cfg, times_np, truth.numpy(), pred.numpy(), trainer.reaction,
             trainer.u_grid, truth[trainer.train].numpy())
    return metrics


def plot(path: str, cfg: Config, times: np.ndarray, truth: np.ndarray, pred: np.ndarray, reaction,
         u_grid: torch.Tensor, seen: np.ndarray) -> None:
    """Space-time truth, prediction and error of the initial condition with the widest
    range; learned vs true R over the distribution of the training values ``seen``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = int(np.argmax(np.ptp(truth, axis=(0, 1))))
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.2))
    extent = [0.0, 1.0, times[0], times[-1]]
    lim = float(np.abs(truth[..., b]).max())
    err = pred[..., b] - truth[..., b]
    for a, field, title, scale in ((ax[0], truth[..., b], "reference (fine grid, injected)", lim),
                                   (ax[1], pred[..., b], "learned model, rollout from u(0)", lim),
                                   (ax[2], err, "rollout - reference", float(np.abs(err).max()))):
        im = a.imshow(field, origin="lower", aspect="auto", extent=extent, cmap="RdBu_r", vmin=-scale, vmax=scale)
        a.axhline(cfg.t_train, color="k", ls="--", lw=1)
        a.set(title=title, xlabel="x", ylabel="t")
        fig.colorbar(im, ax=a)
    with torch.no_grad():
        learned = reaction(u_grid).numpy()
    u = u_grid.numpy()
    ax[3].hist(seen.ravel(), bins=60, range=(u[0], u[-1]), color="0.85", density=True, label="training u values")
    ax[3].set(ylabel="density of training values", xlabel="u", title="reaction term, 1st-99th percentile of u")
    right = ax[3].twinx()
    right.plot(u, true_reaction(u), "k-", label="true R(u)")
    right.plot(u, learned, "r--", label="learned R(u)")
    right.set(ylabel="R")
    right.legend(loc="lower right")
    fig.suptitle(f"viscous Burgers + learned reaction, initial condition {b} of {truth.shape[-1]} "
                 f"(dashed line: end of the training window, t={cfg.t_train})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _config(args: argparse.Namespace) -> Config:
    base = dataclasses.replace(Config(), **QUICK) if args.quick else Config()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    return dataclasses.replace(base, **given)


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Config):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                       help=f"default {f.default}")
    p.add_argument("--quick", action="store_true", help="a small problem and a few iterations (tests)")
    p.add_argument("--out", default="out/burgers")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    args, petsc_args = p.parse_known_args(argv[1:])
    pnode.init([argv[0]] + petsc_args)
    torch.set_num_threads(1)
    cfg = _config(args)
    comm = MPI.COMM_WORLD
    metrics = run(cfg, comm, out=args.out, resume=args.resume)
    if comm.Get_rank() == 0:
        print(f"ranks {comm.Get_size()}, grid {cfg.n} x {cfg.batch} initial conditions, {cfg.iters} iterations "
              f"({metrics['seconds']:.1f} s)")
        for key in METRICS:
            print(f"  {key:34s} {metrics[key]:.12e}")
        print(f"figure: {os.path.join(args.out, 'burgers_closure.png')}; "
              f"checkpoint: {os.path.join(args.out, 'checkpoint.pt')}")
    return metrics


if __name__ == "__main__":
    main(sys.argv)
