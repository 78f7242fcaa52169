"""What the PINN examples share: their common options and the start of a run."""
from __future__ import annotations

import argparse
import os

import torch

import pnode
from pnode.comm import is_root, world


def parser(doc: str, out: str, **defaults) -> argparse.ArgumentParser:
    """The options every PINN example has (``defaults`` override their defaults)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=out)
    p.add_argument("--adam", type=int, default=defaults.get("adam", 500), help="Adam warm-up iterations")
    p.add_argument("--iterations", type=int, default=defaults.get("iterations", 500))
    p.add_argument("--points", type=int, default=defaults.get("points", 2000))
    p.add_argument("--width", type=int, default=defaults.get("width", 20))
    p.add_argument("--depth", type=int, default=defaults.get("depth", 3))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-jets", action="store_true",
                   help="evaluate the residual by vmap/jacrev, not by the MLP jets (pnode.pinn.jets)")
    return p


def start(p: argparse.ArgumentParser, argv=None):
    """Parse (unknown options go to PETSc), start pnode, make --out; returns
    ``(args, comm, checkpoint path)`` with the checkpoint removed unless ``--resume``."""
    args, petsc_args = p.parse_known_args(argv)
    pnode.init(petsc_args)
    comm = world()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    checkpoint = os.path.join(args.out, "checkpoint.pt")
    if not args.resume and is_root(comm) and os.path.exists(checkpoint):
        os.remove(checkpoint)
    comm.Barrier()
    return args, comm, checkpoint


def pyplot():
    """matplotlib's pyplot without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def field_figure(x, t, ref, u, ref_title: str):
    """A figure of four panels: the reference and the PINN's field over ``(t, x)``, the
    log10 error between them, and a fourth axis left to the caller; returns ``(fig, ax)``."""
    import numpy as np

    fig, ax = pyplot().subplots(1, 4, figsize=(17, 3.6))
    for a, data, title in ((ax[0], ref, ref_title), (ax[1], u, "PINN")):
        im = a.pcolormesh(t, x, data.T, cmap="RdBu_r", shading="auto")
        a.set(title=title, xlabel="t", ylabel="x")
        fig.colorbar(im, ax=a)
    im = ax[2].pcolormesh(t, x, np.log10(np.abs(u - ref).T + 1e-16), cmap="viridis", shading="auto")
    ax[2].set(title="log10 |error|", xlabel="t", ylabel="x")
    fig.colorbar(im, ax=ax[2])
    return fig, ax


def save_figure(fig, path: str) -> None:
    """Lay out, save and close ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def finish(fig, path: str, ax_loss, result) -> None:
    """Plot the loss history on ``ax_loss``, save ``fig`` to ``path``, print the stages."""
    ax_loss.semilogy(result.history["loss"])
    ax_loss.set(title="loss", xlabel="iteration")
    save_figure(fig, path)
    print(f"stages: {[(s['optimiser'], s['iterations'], s['words']) for s in result.stages]}")


def time_limit(minutes: float, comm, each=None):
    """A :func:`pnode.pinn.train` callback raising ``StopTraining`` on every rank at the
    first iteration after ``minutes`` of wall time (``each(name, iteration, loss)`` first)."""
    import time

    from pnode.comm import allreduce
    from pnode.pinn import StopTraining

    tic = time.perf_counter()

    def callback(name, iteration, loss):
        if each is not None:
            each(name, iteration, loss)
        if allreduce(time.perf_counter() - tic > 60.0 * minutes, "or", comm):
            raise StopTraining
    return callback
