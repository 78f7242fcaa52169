"""Fit the classic spiral neural ODE with pnode (the project's demo).

True dynamics y' = (y**3) @ A; the model is f(t, y) = MLP(y**3) (2-50-2, tanh), trained
on batches of short trajectory windows through PETSc TS and its discrete adjoint.

    python examples/spiral.py --out out/spiral [--niters 4000] [--resume] [-node_ts_rk_type 5bs ...]

Adam with a cosine learning-rate decay; PETSc options after the script's own pass
through ``pnode.init`` (prefix ``node_``). Prints the loss, saves a figure (true vs
learned trajectory, phase portrait, learned field) and a resumable checkpoint (model,
optimiser, batch sampler, iteration) in --out. Under MPI only rank 0 prints
and saves.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
from mpi4py import MPI
from tqdm import tqdm

import pnode

A_TRUE = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)


class Cubic(torch.nn.Module):
    """f(t, y) = MLP(y**3)."""

    def __init__(self, hidden: int = 50):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, 2)).double()

    def forward(self, t, y):
        return self.net(y ** 3)


def make_data(n_points: int, t_end: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The true trajectory from y0 = (2, 0), solved by pnode's dopri5 at tight tolerance."""
    t = torch.linspace(0.0, t_end, n_points, dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    y = pnode.odeint(lambda t, y: (y ** 3) @ A_TRUE, y0, t, method="dopri5", rtol=1e-10, atol=1e-12)
    return t, y[:, 0, :]


def get_batch(t, y, batch: int, window: int, gen: torch.Generator):
    """Random windows: initial states (batch, 2), window times, targets (window, batch, 2)."""
    start = torch.randint(0, len(t) - window, (batch,), generator=gen)
    idx = start[None, :] + torch.arange(window)[:, None]
    return y[start], t[:window], y[idx]


def cosine_lr(lr: float, it: int, niters: int) -> float:
    """Cosine decay from ``lr`` to ``lr / 50`` over ``niters`` iterations."""
    low = lr / 50
    return low + 0.5 * (lr - low) * (1 + math.cos(math.pi * it / max(niters, 1)))


def plot(path: str, t, y_true, y_pred, model: Cubic) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    ax[0].plot(t, y_true[:, 0], "g-", t, y_true[:, 1], "b-", label="true")
    ax[0].plot(t, y_pred[:, 0], "g--", t, y_pred[:, 1], "b--")
    ax[0].set(title="trajectories (solid: true, dashed: learned)", xlabel="t", ylabel="y")
    ax[1].plot(y_true[:, 0], y_true[:, 1], "g-", label="true")
    ax[1].plot(y_pred[:, 0], y_pred[:, 1], "b--", label="learned")
    ax[1].set(title="phase portrait", xlabel="y1", ylabel="y2")
    ax[1].legend()
    g = np.linspace(-2, 2, 21)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    pts = torch.tensor(np.stack([xx, yy], -1).reshape(-1, 2), dtype=torch.float64)
    with torch.no_grad():
        v = model(0.0, pts).numpy().reshape(21, 21, 2)
    ax[2].streamplot(xx, yy, v[..., 0], v[..., 1], color="k")
    ax[2].set(title="learned vector field", xlabel="y1", ylabel="y2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> float:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--niters", type=int, default=4000)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--window", type=int, default=10)
    p.add_argument("--data-size", type=int, default=1000)
    p.add_argument("--method", default="rk4", help="rk4 (step = data spacing) or dopri5, ...")
    p.add_argument("--checkpoint", default="all", help="all | solution | budget=K")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/spiral")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    args, petsc_args = p.parse_known_args(argv[1:])
    pnode.init([argv[0]] + petsc_args)
    torch.set_num_threads(1)
    root = MPI.COMM_WORLD.Get_rank() == 0
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    t, y = make_data(args.data_size, 25.0)
    dt = float(t[1] - t[0])
    ck = (pnode.Checkpoint(budget=int(args.checkpoint.split("=")[1]))
          if args.checkpoint.startswith("budget=") else pnode.Checkpoint(args.checkpoint))
    model = Cubic()
    ode = pnode.NeuralODE(model, method=args.method, step_size=dt, checkpoint=ck, options_prefix="node_")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    start = 0
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    if args.resume and os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start = state["iteration"]

    starts = torch.arange(0, len(t) - args.window, args.window)
    windows = starts[None, :] + torch.arange(args.window)[:, None]

    def evaluate() -> tuple[float, float, torch.Tensor]:
        """Mean |error| over all windows (the training task) and over the whole trajectory."""
        with torch.no_grad():
            win = pnode.odeint(model, y[starts], t[:args.window], method=args.method, step_size=dt)
            pred = pnode.odeint(model, y[:1], t, method=args.method, step_size=dt)
        return float((win - y[windows]).abs().mean()), float((pred[:, 0] - y).abs().mean()), pred

    tic = time.perf_counter()
    bar = tqdm(range(start, args.niters), initial=start, total=args.niters, disable=not root,
               desc="spiral", unit="it")
    for it in bar:
        y0, tb, yb = get_batch(t, y, args.batch_size, args.window, gen)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(args.lr, it, args.niters)
        opt.zero_grad()
        loss = (ode(y0, tb) - yb).abs().mean()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if (it + 1) % args.eval_every == 0 or it + 1 == args.niters:
            win, full, _ = evaluate()
            if root:
                tqdm.write(f"iter {it + 1:5d}  batch {loss.item():.5f}  windows {win:.5f}  whole trajectory {full:.5f}")
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "generator": gen.get_state(), "iteration": it + 1}, ckpt_path)
    win, full, pred = evaluate()
    if root:
        fig = os.path.join(args.out, "spiral.png")
        plot(fig, t.numpy(), y.numpy(), pred[:, 0].numpy(), model)
        print(f"final mean |error|: {win:.5f} over {len(starts)} windows of {args.window} points, "
              f"{full:.5f} over the whole trajectory from y0, after {args.niters} iterations "
              f"({time.perf_counter() - tic:.1f} s); figure: {fig}; checkpoint: {ckpt_path}")
    return win


if __name__ == "__main__":
    main(sys.argv)
