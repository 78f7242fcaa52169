"""Train a deep residual network on scikit-learn's bundled digits with RMTR.

    python examples/rmtr_digits.py --out out/rmtr_digits [--cycles 120] [--resume] [-rmtr_l3_ksp_type gltr ...]
    mpiexec -n 2 python examples/rmtr_digits.py --out out/rmtr_digits

An MLP ResNet (a linear stem 64 -> width, residual blocks ``tanh(W x + b)`` with step
``T / (L - 1)``, a linear head to 10 classes) of ``(coarse_blocks - 1) 2^(levels - 1) + 1``
blocks (33 by default: 5, 9, 17, 33 over 4 levels; ``--conv-stem C`` puts a 3x3
convolution to ``C`` maps before the linear stem) is trained by the recursive multilevel
trust region (L-SR1 on every level) in the hybrid mode: the mini-batch starts at
``--batch`` samples and doubles when the loss stalls (``pnode.solvers.BatchGrowth``) up
to the whole training set. ``--seed`` splits the data into training, validation and test
sets (pixels standardised on the training set); the training data are sharded over the
ranks. Prints the training loss, train and validation accuracy and the effective
fine-level gradient evaluations while training, the test accuracy once at the end; saves
the curves (OUT/rmtr_digits.png) and a resumable checkpoint (OUT/checkpoint.pt: solver,
batch rule, cycle). Needs scikit-learn (``pip install -e '.[bench]'``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from mpi4py import MPI
from tqdm import tqdm

import pnode
from pnode.solvers import (RMTR, BatchGrowth, DepthHierarchy, HybridBatches, RMTRSettings, mlp_resnet,
                           residual_levels)

DT = torch.float64


def shifted(x: torch.Tensor) -> torch.Tensor:
    """The 8x8 images ``x`` (rows of 64 pixels) and their copies moved by one pixel up, down,
    left and right (the pixels moved in are blank): 5 times as many rows."""
    img = x.reshape(-1, 8, 8)
    out = [img]
    for dim in (1, 2):
        for step in (1, -1):
            moved = torch.roll(img, step, dims=dim)
            moved.select(dim, 0 if step == 1 else 7).zero_()
            out.append(moved)
    return torch.cat(out).reshape(-1, 64)


def digits_data(test_fraction: float = 0.2, val_fraction: float = 0.15, seed: int = 0, standardise: bool = True,
                augment: bool = False):
    """scikit-learn's 8x8 digits (1797 samples), pixels scaled to [0, 1], split by a seeded
    permutation into training, validation (``val_fraction`` of what the test set leaves) and
    test sets; ``augment`` adds the training images' one-pixel shifts (``shifted``) to the
    training set only; ``standardise`` shifts and scales each pixel by the (augmented)
    training set's mean and standard deviation (pixels constant on it are only shifted).
    Returns ``[(x, y) for train, validation, test]``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=DT) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(y)))
    n_val = int(round(val_fraction * (len(y) - n_test)))
    sets = [(x[i], y[i]) for i in (order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test])]
    if augment:
        sets[0] = shifted(sets[0][0]), sets[0][1].repeat(5)
    if standardise:
        mean, std = sets[0][0].mean(0), sets[0][0].std(0)
        scale = torch.where(std > 1e-8, std, torch.ones_like(std))
        sets = [((xs - mean) / scale, ys) for xs, ys in sets]
    return sets


def conv_stem_resnet(channels: int, width: int, coarse_blocks: int, levels: int, horizon: float) -> list:
    """The MLP ResNet's levels with a convolutional stem: the 8x8 image through a 3x3
    convolution to ``channels`` maps (tanh), then a linear map to ``width``; the residual
    blocks and the head as in :func:`pnode.solvers.mlp_resnet`. The stem is shared by the
    levels like the linear one."""
    stem = torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)), torch.nn.Conv2d(1, channels, 3, padding=1),
                               torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(64 * channels, width)).to(DT)

    def block():
        return torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh()).to(DT)
    return residual_levels(stem, block, torch.nn.Linear(width, 10).to(DT), coarse_blocks, levels, horizon)


def penalty(model, weight_decay: float) -> torch.Tensor:
    """``weight_decay / 2 * ||theta||^2``."""
    return 0.5 * weight_decay * sum((p * p).sum() for p in model.parameters())


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def plot(path: str, history, sizes, solver_history) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].semilogy(solver_history["gradients"], solver_history["loss"])
    ax[0].set(xlabel="effective fine-level gradient evaluations", ylabel="loss on the step's batch", title="RMTR")
    ax[1].plot(history["cycle"], [100 * a for a in history["val"]], label="validation")
    ax[1].plot(history["cycle"], [100 * a for a in history["train"]], label="train")
    ax[1].set(xlabel="cycle", ylabel="accuracy (%)", title="accuracy")
    ax[1].legend()
    ax[2].plot(sizes)
    ax[2].set(xlabel="cycle", ylabel="mini-batch size", title="hybrid mode: batch growth")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="PETSc options go after the script's")
    p.add_argument("--cycles", type=int, default=120)
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--coarse-blocks", type=int, default=5)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=180, help="initial mini-batch (grows to the training set)")
    p.add_argument("--cycle", choices=("V", "W"), default="V")
    p.add_argument("--weight-decay", type=float, default=1e-3, help="L2 penalty weight_decay/2 ||theta||^2")
    p.add_argument("--out", default="out/rmtr_digits")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="the data split, the initial weights and the batches")
    p.add_argument("--val-fraction", type=float, default=0.15,
                   help="share of the non-test data held out for validation")
    p.add_argument("--no-standardise", dest="standardise", action="store_false",
                   help="keep pixels in [0, 1] instead of standardising them on the training set")
    p.add_argument("--conv-stem", type=int, default=0, metavar="C",
                   help="a 3x3 convolutional stem with C channels before the linear one (0: linear stem only)")
    p.add_argument("--shifts", dest="augment", action="store_true",
                   help="train also on the training images' one-pixel shifts (5x the training set)")
    args, petsc_args = p.parse_known_args(argv[1:])
    comm = MPI.COMM_WORLD
    pnode.init([argv[0]] + petsc_args)
    torch.set_num_threads(1)
    root = comm.Get_rank() == 0
    os.makedirs(args.out, exist_ok=True)

    (xtr, ytr), (xva, yva), (xte, yte) = digits_data(val_fraction=args.val_fraction, seed=args.seed,
                                                     standardise=args.standardise, augment=args.augment)
    torch.manual_seed(args.seed)
    if args.conv_stem:
        models = conv_stem_resnet(args.conv_stem, args.width, args.coarse_blocks, args.levels, horizon=2.0)
    else:
        models = mlp_resnet(64, args.width, 10, args.coarse_blocks, args.levels, horizon=2.0)
    fine = models[-1]
    hierarchy = DepthHierarchy(models, comm)
    opt = RMTR(hierarchy, rmtr=RMTRSettings(cycle=args.cycle))
    growth = BatchGrowth(min(args.batch, len(ytr)), len(ytr), factor=2, patience=3, tol=0.01)
    batches = HybridBatches(len(ytr), growth, comm, seed=args.seed)
    log = {"cycle": [], "loss": [], "gradients": [], "train": [], "val": []}
    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume and os.path.exists(ckpt):
        state = torch.load(ckpt, weights_only=True)
        if set(state["log"]) != set(log):
            raise SystemExit(f"{ckpt} was written by an earlier version of this example (its log has "
                             f"{sorted(state['log'])}, not {sorted(log)}); start without --resume")
        opt.load_state_dict(state["rmtr"])
        batches.load_state_dict(state["batches"])
        log = state["log"]

    def loss_sum(model, idx):
        return torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx], reduction="sum")

    last: list = [None, None]

    def regularised(closure):
        """``closure`` plus the L2 penalty (each rank adds its share), the same object for
        the same closure (so that RMTR reuses its evaluation at full batch)."""
        if closure is not last[0]:
            last[:] = [closure, lambda model: closure(model) + penalty(model, args.weight_decay) / comm.Get_size()]
        return last[1]

    tic = time.perf_counter()
    bar = tqdm(range(opt.cycles, args.cycles), initial=opt.cycles, total=args.cycles, disable=not root,
               desc="rmtr digits", unit="cycle")
    for cycle in bar:
        loss = opt.step(regularised(batches.closure(loss_sum)))
        batches.record(loss)
        bar.set_postfix(loss=f"{loss:.3e}", batch=growth.size, refresh=False)
        if (cycle + 1) % args.eval_every == 0 or cycle + 1 == args.cycles:
            train, val = accuracy(fine, xtr, ytr), accuracy(fine, xva, yva)
            for key, value in zip(log, (cycle + 1, loss, opt.gradient_evaluations, train, val)):
                log[key].append(value)
            if root:
                tqdm.write(f"cycle {cycle + 1:4d}  batch {growth.size:4d}  loss {loss:.4e}  "
                           f"gradients {opt.gradient_evaluations:7.1f}  train {100 * train:.1f}%  "
                           f"validation {100 * val:.1f}%")
            state = {"rmtr": opt.state_dict(), "batches": batches.state_dict(), "cycle": cycle + 1, "log": log}
            if root:
                torch.save(state, ckpt + ".tmp")
                os.replace(ckpt + ".tmp", ckpt)
    test = accuracy(fine, xte, yte)
    result = {"test_accuracy": test, "val_accuracy": accuracy(fine, xva, yva),
              "train_accuracy": accuracy(fine, xtr, ytr),
              "loss": opt.history["loss"][-1],
              "gradients": opt.gradient_evaluations, "blocks": len(fine.blocks), "cycles": opt.cycles}
    if root:
        fig = os.path.join(args.out, "rmtr_digits.png")
        plot(fig, log, growth.sizes, opt.history)
        print(f"{len(fine.blocks)} residual blocks over {args.levels} levels: test accuracy {100 * test:.2f}%, "
              f"validation {100 * result['val_accuracy']:.2f}%, train {100 * result['train_accuracy']:.2f}%, "
              f"loss {result['loss']:.4e}, "
              f"{opt.gradient_evaluations:.0f} effective gradient evaluations, "
              f"{time.perf_counter() - tic:.1f} s; figure {fig}; checkpoint {ckpt}")
    opt.destroy()
    hierarchy.destroy()
    return result


if __name__ == "__main__":
    main(sys.argv)
