"""Sparse recovery, the standard LISTA setup: NMSE (dB) per layer of ISTA, FISTA, ALISTA,
LISTA-CPSS, LISTA-CP, LISTA and TiLISTA.

A is 250 x 500 Gaussian with unit-norm columns, x Bernoulli-Gaussian (p = 0.1), 16
layers, 1000 test vectors, noiseless and at SNR 40 dB. Every network is trained by
pnode.solvers.unrolling.Trainer on a fresh batch per step, at the rates lr, lr/5, lr/50:

* ALISTA (32 scalars): layer-wise, --steps per rate and stage, batches of 128, lr 1e-2.
* LISTA-CPSS, LISTA-CP, LISTA (tied), TiLISTA (learned matrices), from their analytic
  starts (ISTA: W = A/L, S = I - A^T A/L, thresholds lambda/L): --schedule-matrix
  layerwise (--steps-matrix per rate and stage; --new-layer-first: the first rate trains
  the new layer alone) or end-to-end (--steps-matrix per rate),
  batches of --batch-matrix, lr --lr-matrix.
* LISTA-CPSS from ALISTA (method cpss-alista): W_k = gamma_k W and the thresholds of the
  trained ALISTA, then --steps-cpss end-to-end steps at lr 1e-5 and 2e-6.
* TiLISTA with support selection (tilista-ss: the tied LISTA-CPSS of Liu et al.'s ALISTA
  paper), trained like the networks with learned matrices.
* ALISTA without support selection (alista-plain, trained like ALISTA, or end to end with
  --schedule-plain end-to-end) and the networks without support selection started from
  it (cp-alista, tilista-alista: LISTACP.from_alista, TiLISTA.from_alista); then
  --steps-cpss end-to-end steps at lr 1e-5 and 2e-6, as LISTA-CPSS from ALISTA.
* ALISTA with one step for every layer and no support selection (alista-tied, end to
  end) and the tied LISTA started from it (lista-alista: LISTA.from_alista, W1 = gamma
  W^T, S = I - gamma W^T A), fine-tuned the same way.

--methods picks the methods; their curves are merged into nmse_<case>.json in --out
(with the settings each was trained with), so methods can be trained in separate runs.
Every training run is checkpointed in --out and resumes; --until stops each training at
that step (run again without it to continue). --dtype float32 trains and evaluates in
single precision (A is drawn in float64 and rounded). Prints a table and the training
times; writes nmse_<case>.json and nmse_<case>.png.

    python benchmarks/bench_sparse_recovery.py --out out/sparse --methods ista,fista,alista,cpss-alista
    python benchmarks/bench_sparse_recovery.py --out out/sparse --methods cpss,tilista --dtype float32 \
        --schedule-matrix end-to-end --steps-matrix 500
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import time

import torch

from pnode.solvers.unrolling import (ALISTA, LISTA, LISTACP, LISTACPSS, TiLISTA, Trainer, Unrolled,
                                     analytic_weight, bernoulli_gaussian, gaussian_dictionary, measurements,
                                     nmse_db, support_schedule)

M, N, LAYERS, P_NONZERO = 250, 500, 16, 0.1
METHODS = ("ista", "fista", "alista", "cpss-alista", "cpss", "cp", "lista", "tilista", "tilista-ss", "alista-plain",
           "cp-alista", "tilista-alista", "alista-tied", "lista-alista")
LABELS = {"ista": "ISTA", "fista": "FISTA", "alista": "ALISTA", "cpss-alista": "LISTA-CPSS (from ALISTA)",
          "cpss": "LISTA-CPSS", "cp": "LISTA-CP", "lista": "LISTA (tied)", "tilista": "TiLISTA",
          "tilista-ss": "TiLISTA (support sel.)", "alista-plain": "ALISTA (no support sel.)",
          "cp-alista": "LISTA-CP (from ALISTA)", "tilista-alista": "TiLISTA (from ALISTA)",
          "alista-tied": "ALISTA (one step, no support sel.)", "lista-alista": "LISTA (tied, from ALISTA)"}
MATRIX_NETS = {"cpss": lambda A: LISTACPSS(A, LAYERS), "cp": lambda A: LISTACP(A, LAYERS),
               "lista": lambda A: LISTA(A, LAYERS, tied=True), "tilista": lambda A: TiLISTA(A, LAYERS),
               "tilista-ss": lambda A: TiLISTA(A, LAYERS, support=support_schedule(LAYERS))}
SEEDS = {"alista": 10, "cpss-alista": 11, "cp": 12, "lista": 12, "cpss": 13, "tilista": 14, "alista-plain": 15,
         "cp-alista": 16, "tilista-alista": 17, "tilista-ss": 19, "alista-tied": 20, "lista-alista": 21}
FROM_PLAIN = {"cp-alista": LISTACP, "tilista-alista": TiLISTA}  # started from alista-plain
WARM = dict(batch=128, lr=1e-5, decays=(1.0, 0.2))  # the fine-tuning of the networks started from ALISTA


def sampler(A, snr):
    def sample(batch, generator):
        x = bernoulli_gaussian(batch, N, P_NONZERO, generator, dtype=A.dtype)
        return x, measurements(A, x, snr, generator)
    return sample


def per_layer(net, y, x):
    with torch.no_grad():
        return [nmse_db(out, x) for out in net(y, every=True)]


def train(method, net, sample, args, case, until=None, tag="", **kwargs):
    """Train (resuming from the checkpoint ``<method><tag>_<case>.pt`` in --out); the
    training seconds so far."""
    path = os.path.join(args.out, f"{method}{tag}_{case}.pt")
    trainer = Trainer(net, sample, checkpoint=path, checkpoint_every=50, seed=SEEDS[method],
                      progress=not args.quiet, **kwargs)
    trainer.fit(until)
    return trainer.history.last("seconds", 0.0), trainer.step


def trained_alista(A, sample, args, case, record, method="alista"):
    """ALISTA (``alista``), without support selection (``alista-plain``: layer-wise or, by
    --schedule-plain, end to end; ``alista-tied``: one step for every layer, end to end)."""
    t0 = time.perf_counter()
    W = analytic_weight(A)
    record["ALISTA W (KSP) s"] = time.perf_counter() - t0
    alista = ALISTA(A, W, LAYERS, support_selection=method == "alista", tied_step=method == "alista-tied")
    settings = dict(steps=args.steps, batch=128, lr=1e-2)
    schedule = "layerwise" if method == "alista" else "end-to-end" if method == "alista-tied" else args.schedule_plain
    tag = "-end-to-end" if method == "alista-plain" and schedule == "end-to-end" else ""
    seconds, steps = train(method, alista, sample, args, case, layerwise=schedule == "layerwise", tag=tag,
                           **settings)
    return alista, seconds, steps, dict(schedule=schedule, **settings)


def warm_started(method, net, start, sample, args, case, results):
    """Fine-tune ``net``, started from the trained ALISTA ``start``, and record it."""
    first = per_layer(net, start[0], start[1])
    seconds, steps = train(method, net, sample, args, case, until=args.until, layerwise=False,
                           steps=args.steps_cpss, **WARM)
    results[method] = {"curve": per_layer(net, start[0], start[1]), "start": first, "seconds": seconds,
                       "trained_steps": steps, "dtype": args.dtype, "steps": args.steps_cpss,
                       "schedule": f"end-to-end from the trained {start[2]} (seconds: its own)", **WARM}


def run_case(snr, args, methods):
    case = "noiseless" if snr is None else f"snr{int(snr)}"
    dtype = getattr(torch, args.dtype)
    A = gaussian_dictionary(M, N, torch.Generator().manual_seed(0)).to(dtype)
    test = torch.Generator().manual_seed(1)
    x_test = bernoulli_gaussian(1000, N, P_NONZERO, test).to(dtype)
    y_test = measurements(A.double(), x_test.double(), snr, test).to(dtype)
    sample = sampler(A, snr)
    results, extra = {}, {}
    for method in ("ista", "fista"):
        if method in methods:
            net = Unrolled(A, method, LAYERS, weight=args.weight, learn=False)
            results[method] = {"curve": per_layer(net, y_test, x_test), "dtype": args.dtype,
                               "lambda": args.weight}
    groups = (("alista", {"cpss-alista": LISTACPSS}), ("alista-plain", FROM_PLAIN),
              ("alista-tied", {"lista-alista": LISTA}))
    for base, children in groups:
        if base not in methods and not set(children) & set(methods):
            continue
        alista, seconds, steps, settings = trained_alista(A, sample, args, case, extra, base)
        results[base] = {"curve": per_layer(alista, y_test, x_test), "seconds": seconds, "trained_steps": steps,
                         "dtype": args.dtype, **settings}
        for method, kind in children.items():
            if method in methods:
                warm_started(method, kind.from_alista(alista), (y_test, x_test, LABELS[base]), sample, args, case,
                             results)
    for method, make in MATRIX_NETS.items():
        if method in methods:
            net = make(A)
            settings = dict(steps=args.steps_matrix, batch=args.batch_matrix, lr=args.lr_matrix)
            layerwise = args.schedule_matrix == "layerwise"
            first = layerwise and args.new_layer_first
            seconds, steps = train(method, net, sample, args, case, until=args.until, layerwise=layerwise,
                                   new_layer_first=first, **settings)
            results[method] = {"curve": per_layer(net, y_test, x_test), "seconds": seconds, "trained_steps": steps,
                               "schedule": args.schedule_matrix + (" (new layer first)" if first else ""),
                               "dtype": args.dtype, **settings}
    return case, results, extra


def merge(path, results, extra):
    """The stored results of ``path`` updated with this run's (under a lock on the file,
    so runs of other methods may merge at the same time)."""
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        stored = json.loads(text) if text else {"methods": {}}
        stored["methods"].update(results)
        stored.update(extra)
        f.seek(0)
        f.truncate()
        json.dump(stored, f, indent=1)
    return stored


def plot(case, methods, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        if method in methods:
            values = methods[method]["curve"]
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=LABELS[method])
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
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--steps", type=int, default=50, help="ALISTA's steps per learning rate (and stage)")
    parser.add_argument("--schedule-plain", choices=("layerwise", "end-to-end"), default="layerwise",
                        help="the schedule of ALISTA without support selection (alista-plain)")
    parser.add_argument("--steps-cpss", type=int, default=50,
                        help="end-to-end steps per learning rate (two rates) of the networks started from ALISTA")
    parser.add_argument("--steps-matrix", type=int, default=10,
                        help="steps per learning rate (and stage, if layer-wise) of the networks with matrices")
    parser.add_argument("--schedule-matrix", choices=("layerwise", "end-to-end"), default="layerwise")
    parser.add_argument("--new-layer-first", action="store_true",
                        help="layer-wise: the first rate of each stage trains the new layer alone (Chen et al.)")
    parser.add_argument("--batch-matrix", type=int, default=64)
    parser.add_argument("--lr-matrix", type=float, default=5e-4)
    parser.add_argument("--until", type=int, default=None,
                        help="stop each matrix network's training at this step (resumes on the next run)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--weight", type=float, default=0.1, help="lambda of ISTA/FISTA")
    parser.add_argument("--snr", default="none,40", help="comma-separated cases: none or an SNR in dB")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    for item in args.snr.split(","):
        snr = None if item == "none" else float(item)
        case, results, extra = run_case(snr, args, methods)
        stored = merge(os.path.join(args.out, f"nmse_{case}.json"), results, extra)
        plot(case, stored["methods"], args.out)
        print(f"\n{case}: NMSE (dB) at layers 1, 4, 8, 12, 16; training seconds (steps)")
        for method in METHODS:
            if method in stored["methods"]:
                entry = stored["methods"][method]
                values = " ".join(f"{entry['curve'][k]:8.2f}" for k in (0, 3, 7, 11, 15))
                spent = f"   {entry['seconds']:7.1f} s ({entry['trained_steps']} steps)" if "seconds" in entry else ""
                print(f"  {LABELS[method]:25s} {values}{spent}")
        if "ALISTA W (KSP) s" in stored:
            print(f"  ALISTA's W by KSP: {stored['ALISTA W (KSP) s']:.2f} s")


if __name__ == "__main__":
    main()
