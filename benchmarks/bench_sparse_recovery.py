"""Sparse recovery, the standard LISTA setup: NMSE (dB) per layer of ISTA, FISTA, LISTA,
LISTA-CP, LISTA-CPSS and ALISTA.

A is 250 x 500 Gaussian with unit-norm columns, x Bernoulli-Gaussian (p = 0.1), 16
layers, 1000 test vectors, noiseless and at SNR 40 dB. The learned networks are trained
layer-wise (pnode.solvers.unrolling.Trainer: stage t trains the first t layers at
lr, lr/5, lr/50 for --steps (ALISTA) or --steps-matrix (LISTA, LISTA-CP) steps each) on
fresh batches of 128; LISTA-CPSS starts from the trained ALISTA (W_k = gamma_k W, its
thresholds) and is then trained end to end (--steps-cpss at lr and lr/5).
Every training run is checkpointed in --out and resumes. Prints a table and the training
times; writes nmse_<case>.json and nmse_<case>.png.

    python benchmarks/bench_sparse_recovery.py --out out/sparse --steps 50 --steps-cpss 50 --steps-matrix 10
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from pnode.solvers.unrolling import (ALISTA, LISTA, LISTACP, LISTACPSS, Trainer, Unrolled, analytic_weight,
                                     bernoulli_gaussian, gaussian_dictionary, measurements, nmse_db)

M, N, LAYERS, P_NONZERO = 250, 500, 16, 0.1


def sampler(A, snr):
    def sample(batch, generator):
        x = bernoulli_gaussian(batch, N, P_NONZERO, generator)
        return x, measurements(A, x, snr, generator)
    return sample


def per_layer(net, y, x):
    with torch.no_grad():
        return [nmse_db(out, x) for out in net(y, every=True)]


def train(name, net, sample, out, case, **kwargs):
    path = os.path.join(out, f"{name}_{case}.pt")
    trainer = Trainer(net, sample, checkpoint=path, checkpoint_every=50, **kwargs)
    trainer.fit()
    return trainer.history.last("seconds", 0.0)


def run_case(snr, args):
    case = "noiseless" if snr is None else f"snr{int(snr)}"
    A = gaussian_dictionary(M, N, torch.Generator().manual_seed(0))
    test = torch.Generator().manual_seed(1)
    x_test = bernoulli_gaussian(1000, N, P_NONZERO, test)
    y_test = measurements(A, x_test, snr, test)
    sample = sampler(A, snr)
    curves, seconds = {}, {}
    for name, algorithm in (("ISTA", "ista"), ("FISTA", "fista")):
        curves[name] = per_layer(Unrolled(A, algorithm, LAYERS, weight=args.weight, learn=False), y_test, x_test)
    t0 = time.perf_counter()
    W = analytic_weight(A)
    seconds["ALISTA W (KSP)"] = time.perf_counter() - t0
    common = dict(steps=args.steps, batch=128, progress=not args.quiet)
    alista = ALISTA(A, W, LAYERS)
    seconds["ALISTA"] = train("alista", alista, sample, args.out, case, lr=1e-2, seed=10, **common)
    curves["ALISTA"] = per_layer(alista, y_test, x_test)
    cpss = LISTACPSS(A, LAYERS)
    with torch.no_grad():  # start from the trained ALISTA
        cpss.W.copy_(alista.gamma.value.view(-1, 1, 1) * W.unsqueeze(0))
        cpss.theta.value.copy_(alista.theta.value)
    seconds["LISTA-CPSS"] = train("cpss", cpss, sample, args.out, case, lr=1e-5, seed=11, layerwise=False,
                                  decays=(1.0, 0.2), **{**common, "steps": args.steps_cpss})
    curves["LISTA-CPSS"] = per_layer(cpss, y_test, x_test)
    for name, net in (("LISTA-CP", LISTACP(A, LAYERS)), ("LISTA", LISTA(A, LAYERS, tied=True))):
        seconds[name] = train(name.lower(), net, sample, args.out, case, lr=5e-4, seed=12,
                              **{**common, "steps": args.steps_matrix})
        curves[name] = per_layer(net, y_test, x_test)
    return case, curves, seconds


def plot(case, curves, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel("NMSE (dB)")
    ax.set_title(f"sparse recovery, 250 x 500, p = 0.1, {case}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"nmse_{case}.png"), dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/sparse")
    parser.add_argument("--steps", type=int, default=50, help="ALISTA's steps per learning rate and stage")
    parser.add_argument("--steps-cpss", type=int, default=50,
                        help="LISTA-CPSS's end-to-end steps per learning rate (two rates)")
    parser.add_argument("--steps-matrix", type=int, default=10,
                        help="LISTA's and LISTA-CP's steps per learning rate and stage")
    parser.add_argument("--weight", type=float, default=0.1, help="lambda of ISTA/FISTA")
    parser.add_argument("--snr", default="none,40", help="comma-separated cases: none or an SNR in dB")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    for item in args.snr.split(","):
        snr = None if item == "none" else float(item)
        case, curves, seconds = run_case(snr, args)
        with open(os.path.join(args.out, f"nmse_{case}.json"), "w") as f:
            json.dump({"curves": curves, "seconds": seconds}, f, indent=1)
        plot(case, curves, args.out)
        print(f"\n{case}: NMSE (dB) at layers 4, 8, 12, 16; training seconds")
        for name, values in curves.items():
            print(f"  {name:11s} " + " ".join(f"{values[k]:8.2f}" for k in (3, 7, 11, 15))
                  + (f"   {seconds[name]:7.1f} s" if name in seconds else ""))
        print(f"  ALISTA's W by KSP: {seconds['ALISTA W (KSP)']:.2f} s")


if __name__ == "__main__":
    main()
