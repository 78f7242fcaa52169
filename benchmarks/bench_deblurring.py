"""Distributed deblurring: a 10-iteration unrolled proximal gradient with learned steps and
a learned patch prior against Tikhonov (conjugate gradients) and total variation
(Chambolle-Pock) at 10 and 200 iterations (PSNR).

Images: generated piecewise-smooth 128 x 128 (pnode.solvers.unrolling.piecewise_smooth_image),
blurred by a Gaussian (sigma 1.6 px, radius 3; a DMDA AIJ stencil, zero outside) plus
white noise. The learned network is trained on 48 x 48 images (the convolutions and
scalars do not depend on the size) and applied to 128 x 128 test images; Tikhonov
(``min 0.5||Ax - y||^2 + mu/2 ||grad x||^2``, CG on ``A^T A + mu L``) and TV
(``min 0.5||Ax - y||^2 + mu ||grad x||_{2,1}``, primal-dual) get the best ``mu`` of a grid
chosen on the test images themselves (in their favour). Runs on any number of
ranks (the DMDA splits the image; the prior exchanges ghosts). Training is checkpointed
in --out and resumes. Prints the table and writes deblurring.json and deblurring.png.

    python benchmarks/bench_deblurring.py --out out/deblur
    mpiexec -n 2 python benchmarks/bench_deblurring.py --out out/deblur2
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
from mpi4py import MPI

from pnode.comm import is_root
from pnode.distributed import create_dmda
from pnode.solvers.unrolling import (Learned, PatchPrior, Trainer, Unrolled, as_operator, conjugate_gradient,
                                     gather_images, gaussian_blur, laplacian_matrix, owned_part,
                                     piecewise_smooth_image, psnr, stencil_matrix)

SIGMA, RADIUS, DEPTH, CHANNELS = 1.6, 3, 3, 8


def setting(n, comm):
    da = create_dmda((n, n), stencil_width=RADIUS, boundary="ghosted", comm=comm)
    return da, as_operator(gaussian_blur(da, SIGMA, RADIUS))


def network(da, op, iterations):
    torch.manual_seed(0)
    return Unrolled(op, "pgd", iterations, prox=Learned(PatchPrior(da, CHANNELS, DEPTH)), weight=0.05,
                    lipschitz=1.0)


def data(da, op, n, seeds, noise, generator=None):
    images = torch.stack([piecewise_smooth_image(n, int(s)) for s in seeds])
    eps = torch.randn(images.shape, generator=generator, dtype=torch.float64)
    x = owned_part(da, images)
    return x, op(x) + noise * owned_part(da, eps)


def tikhonov(op, lap, y, mu, iterations):
    with torch.no_grad():
        rhs = op.adjoint(y)
        return conjugate_gradient(lambda v: op.gram(v) + mu * lap(v), rhs, torch.zeros_like(rhs), iterations,
                                  op.dot)


def gradient_ops(da):
    """Forward differences (zero outside the image) as two AIJ stencils."""
    dx = stencil_matrix(da, [[0.0, 0.0, 0.0], [0.0, -1.0, 1.0], [0.0, 0.0, 0.0]])
    dy = stencil_matrix(da, [[0.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 0.0]])
    return as_operator(dx), as_operator(dy)


def total_variation(op, grads, y, mu, iterations):
    """Chambolle-Pock on ``0.5||Ax - y||^2 + mu TV(x)`` (isotropic), ``K = [A; Dx; Dy]``,
    ``||K||^2 <= 1 + 8``, ``sigma = tau = 0.99 / 3``."""
    dx, dy = grads
    s = 0.99 / 3.0
    with torch.no_grad():
        x = op.adjoint(y)
        xbar, q = x, torch.zeros_like(y)
        px, py = torch.zeros_like(x), torch.zeros_like(x)
        for _ in range(iterations):
            q = (q + s * (op(xbar) - y)) / (1.0 + s)
            px, py = px + s * dx(xbar), py + s * dy(xbar)
            scale = torch.clamp(torch.sqrt(px * px + py * py) / mu, min=1.0)
            px, py = px / scale, py / scale
            x_new = x - s * (op.adjoint(q) + dx.adjoint(px) + dy.adjoint(py))
            xbar, x = 2.0 * x_new - x, x_new
        return x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/deblur")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--train-n", type=int, default=48)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300, help="training steps per learning rate (two rates)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--test", type=int, default=4, help="test images")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    if is_root(comm):
        os.makedirs(args.out, exist_ok=True)
    comm.Barrier()

    da_train, op_train = setting(args.train_n, comm)
    net = network(da_train, op_train, args.iterations)

    def sample(batch, generator):
        seeds = torch.randint(1000, 2 ** 30, (batch,), generator=generator)
        return data(da_train, op_train, args.train_n, seeds.tolist(), args.noise, generator)

    trainer = Trainer(net, sample, steps=args.steps, batch=args.batch, lr=args.lr, decays=(1.0, 0.2),
                      layerwise=False, checkpoint=os.path.join(args.out, "deblur.pt"), checkpoint_every=25,
                      progress=not args.quiet, comm=comm if comm.Get_size() > 1 else None)
    trainer.fit()
    train_seconds = trainer.history.last("seconds", 0.0)

    da, op = setting(args.n, comm)
    lap = as_operator(laplacian_matrix(da))
    test_net = network(da, op, args.iterations)
    test_net.load_state_dict(net.state_dict())
    x, y = data(da, op, args.n, range(args.test), args.noise, torch.Generator().manual_seed(123))
    results, images = {}, {"truth": x, "blurred": y}
    t0 = time.perf_counter()
    with torch.no_grad():
        images["learned"] = test_net(y)
    results[f"learned PGD, {args.iterations} it."] = psnr(images["learned"], x, comm=comm)
    learned_seconds = time.perf_counter() - t0
    results["blurred input"] = psnr(y, x, comm=comm)
    best = {}
    for mu in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1):
        for its in (args.iterations, 200):
            value = psnr(tikhonov(op, lap, y, mu, its), x, comm=comm)
            if value > best.get(its, (-1e9, None))[0]:
                best[its] = (value, mu)
    for its, (value, mu) in sorted(best.items()):
        results[f"Tikhonov CG, {its} it. (mu={mu:g})"] = value
        images[f"tikhonov{its}"] = tikhonov(op, lap, y, mu, its)
    grads = gradient_ops(da)
    best = {}
    for mu in (3e-3, 1e-2, 3e-2, 1e-1):
        for its in (args.iterations, 200):
            value = psnr(total_variation(op, grads, y, mu, its), x, comm=comm)
            if value > best.get(its, (-1e9, None))[0]:
                best[its] = (value, mu)
    for its, (value, mu) in sorted(best.items()):
        results[f"TV Chambolle-Pock, {its} it. (mu={mu:g})"] = value
    full = {name: gather_images(da, img) for name, img in images.items()}
    if is_root(comm):
        print(f"\n{args.n}x{args.n}, blur sigma {SIGMA}, noise {args.noise}, {comm.Get_size()} rank(s); "
              f"PSNR over {args.test} test images (pooled MSE)")
        for name, value in results.items():
            print(f"  {name:38s} {value:6.2f} dB")
        print(f"  training: {trainer.step} steps, {train_seconds:.0f} s; learned inference {learned_seconds:.2f} s")
        with open(os.path.join(args.out, "deblurring.json"), "w") as f:
            json.dump({"psnr": results, "train_seconds": train_seconds, "ranks": comm.Get_size()}, f, indent=1)
        plot(full, args)


def plot(full, args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["truth", "blurred", f"tikhonov{args.iterations}", "tikhonov200", "learned"]
    titles = ["truth", "blurred + noise", f"Tikhonov {args.iterations} it.", "Tikhonov 200 it.",
              f"learned {args.iterations} it."]
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
    for ax, name, title in zip(axes, names, titles):
        ax.imshow(full[name][0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "deblurring.png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
