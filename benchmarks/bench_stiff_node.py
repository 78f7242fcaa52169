"""Stiff neural-ODE gradient: pnode (discrete adjoint of ARKIMEX) against diffrax.

    python benchmarks/bench_stiff_node.py [--repeats 3] [--diffrax-batch] [--no-diffrax]

Problem: a state of 16 samples x 32 values, ``y' = -K y + MLP(y)`` with
``K = diag(logspace(0, 4, 32))`` (stiffness ratio 1e4) and ``MLP`` 32-64-32 (tanh), ``t`` in
[0, 1], rtol 1e-6, atol 1e-8, loss ``sum(y(1)^2)``, gradient with respect to the MLP's 4,192
parameters. The weights and ``y0`` are drawn in numpy from a fixed seed and loaded into
both sides, so both solve the same equations (their tight references agree, printed).

pnode: ``pnode.NeuralODE(..., method="arkimex")``, backward by TSAdjoint, Jacobian
``"blocks"`` (one 32 x 32 block per sample), the default Newton (:mod:`pnode.newton`); the
whole right-hand side implicit, or IMEX (``implicit=-K y``, the MLP explicit). diffrax
(optional, the ``stiff-bench`` extra): ``Kvaerno5``/``Kvaerno3`` on the whole right-hand
side, ``KenCarp5``/``KenCarp4`` IMEX with the same split, each per sample under
``jax.vmap`` (``--diffrax-batch`` adds ``Kvaerno5`` on the batch as one 512-value state,
slow), ``PIDController``, gradients by its default ``RecursiveCheckpointAdjoint``
(backpropagation through the solver), jit-compiled first (compile seconds reported apart).

Each configuration's gradient is compared with its own side's reference (pnode ARKIMEX 5,
diffrax Kvaerno5 per sample, both at rtol 1e-9, atol 1e-11): relative 2-norm error.
Seconds per gradient (forward + backward): median of ``--repeats`` after a warm-up,
configurations round-robin in one process, float64, one thread; also the process's CPU
seconds (``time.process_time``), which a loaded machine inflates less than wall time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import pnode
from diffrax_setup import compiled, load_diffrax

B, M, H = 16, 32, 64
T, RTOL, ATOL = 1.0, 1e-6, 1e-8
REF_RTOL, REF_ATOL = 1e-9, 1e-11
DT = torch.float64


def problem(seed: int = 0) -> dict:
    """The weights (torch.nn.Linear layout), ``y0`` and ``K`` in numpy."""
    rng = np.random.default_rng(seed)
    return {"W1": rng.normal(0, M ** -0.5, (H, M)), "b1": rng.normal(0, 0.1, H),
            "W2": rng.normal(0, H ** -0.5, (M, H)), "b2": rng.normal(0, 0.1, M),
            "y0": rng.normal(0, 1, (B, M)), "K": np.logspace(0, 4, M)}


class MLP(torch.nn.Module):
    def __init__(self, p: dict):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(M, H, dtype=DT), torch.nn.Linear(H, M, dtype=DT)
        with torch.no_grad():
            for layer, w, b in ((self.l1, "W1", "b1"), (self.l2, "W2", "b2")):
                layer.weight.copy_(torch.from_numpy(p[w]))
                layer.bias.copy_(torch.from_numpy(p[b]))

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(y)))


class Decay(torch.nn.Module):
    def __init__(self, K: np.ndarray):
        super().__init__()
        self.K = torch.from_numpy(K)

    def forward(self, t, y):
        return -self.K * y


class Whole(torch.nn.Module):
    """``-K y + MLP(y)`` as one (implicit) right-hand side."""

    def __init__(self, decay: Decay, mlp: MLP):
        super().__init__()
        self.decay, self.mlp = decay, mlp

    def forward(self, t, y):
        return self.decay(t, y) + self.mlp(t, y)


def flat(grads) -> np.ndarray:
    return np.concatenate([np.asarray(g).reshape(-1) for g in grads])


class PnodeCase:
    def __init__(self, label: str, p: dict, tableau: str, imex: bool, rtol=RTOL, atol=ATOL, **kw):
        self.label = label
        self.mlp, decay = MLP(p), Decay(p["K"])
        opts = {"ts_arkimex_type": tableau}
        if imex:
            self.ode = pnode.NeuralODE(self.mlp, implicit=decay, method="arkimex", rtol=rtol, atol=atol,
                                       options=opts, jacobian="blocks", **kw)
        else:
            self.ode = pnode.NeuralODE(Whole(decay, self.mlp), method="arkimex", rtol=rtol, atol=atol,
                                       options=opts, jacobian="blocks", **kw)
        self.y0, self.t = torch.from_numpy(p["y0"]), torch.tensor([0.0, T], dtype=DT)

    def gradient(self) -> tuple[float, np.ndarray]:
        loss = self.ode(self.y0, self.t)[-1].square().sum()
        grads = torch.autograd.grad(loss, list(self.mlp.parameters()))
        return float(loss.detach()), flat(g.numpy() for g in grads)

    def counts(self) -> str:
        st = self.ode.stats
        return (f"{st['steps']} (+{st['rejected']}) | {st['newton_iterations']} | "
                f"{st['jacobian_evaluations']}")


class DiffraxCase:
    def __init__(self, label: str, p: dict, solver: str, mode: str, jx, rtol=RTOL, atol=ATOL,
                 max_steps: int = 16384):
        jax, jnp, dfx = jx
        self.label, self.jax = label, jax
        K = jnp.asarray(p["K"])
        self.params = tuple(jnp.asarray(p[k]) for k in ("W1", "b1", "W2", "b2"))
        y0 = jnp.asarray(p["y0"])

        def mlp(q, y):
            W1, b1, W2, b2 = q
            return jnp.tanh(y @ W1.T + b1) @ W2.T + b2

        if mode == "imex":
            terms = dfx.MultiTerm(dfx.ODETerm(lambda t, y, q: mlp(q, y)), dfx.ODETerm(lambda t, y, q: -K * y))
        else:
            terms = dfx.ODETerm(lambda t, y, q: -K * y + mlp(q, y))
        method, control = getattr(dfx, solver)(), dfx.PIDController(rtol=rtol, atol=atol)

        def solve(q, y):
            sol = dfx.diffeqsolve(terms, method, 0.0, T, None, y, args=q, stepsize_controller=control,
                                  saveat=dfx.SaveAt(t1=True), max_steps=max_steps)
            return sol.ys[-1], sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"]

        def loss(q):
            if mode == "batch":
                y, acc, rej = solve(q, y0)
            else:
                y, acc, rej = jax.vmap(lambda yb: solve(q, yb))(y0)
            return jnp.sum(y ** 2), (acc, rej)

        self.fn, self.compile_s = compiled(jax, jax.value_and_grad(loss, has_aux=True), self.params)

    def gradient(self) -> tuple[float, np.ndarray]:
        (loss, self.steps), grads = self.fn(self.params)
        grads = self.jax.block_until_ready(grads)
        return float(loss), flat(grads)

    def counts(self) -> str:
        acc, rej = (np.atleast_1d(np.asarray(s)) for s in self.steps)
        if acc.size == 1:
            return f"{acc[0]} (+{rej[0]}) | - | {acc[0] + rej[0]}"
        return (f"{acc.min()}-{acc.max()} per sample (+{rej.min()}-{rej.max()}) | - | "
                f"{(acc + rej).max()} x {acc.size}")


def rel(g: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(g - ref) / np.linalg.norm(ref))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--diffrax-batch", action="store_true", help="add Kvaerno5 on the batch as one state")
    ap.add_argument("--no-diffrax", action="store_true")
    ap.add_argument("--only", nargs="+", metavar="TEXT", help="only the configurations of these labels (as printed)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = problem(args.seed)
    jx = None if args.no_diffrax else load_diffrax()

    def wanted(label: str) -> bool:
        return not args.only or label in args.only

    refs = {"pnode": PnodeCase("reference", p, "5", False, REF_RTOL, REF_ATOL).gradient()}
    print("pnode reference done", flush=True)
    group = []
    for tab, imex in (("5", False), ("4", False), ("3", False), ("5", True), ("4", True)):
        label = f"pnode ARKIMEX {tab}{', IMEX' if imex else ''}"
        if wanted(label):
            group.append(PnodeCase(label, p, tab, imex))
    if jx is not None:
        ref = DiffraxCase("reference", p, "Kvaerno5", "vmap", jx, REF_RTOL, REF_ATOL, max_steps=65536)
        refs["diffrax"] = ref.gradient()
        print("diffrax reference done", flush=True)
        configs = [("Kvaerno5", "vmap"), ("Kvaerno3", "vmap"), ("KenCarp5", "imex"), ("KenCarp4", "imex")]
        if args.diffrax_batch:
            configs.append(("Kvaerno5", "batch"))
        for solver, mode in configs:
            label = (f"diffrax {solver}, {'IMEX, ' if mode == 'imex' else ''}"
                     f"{'batch as one state' if mode == 'batch' else 'per sample (vmap)'}")
            if wanted(label):
                group.append(DiffraxCase(label, p, solver, mode, jx))
    side = {c.label: "diffrax" if isinstance(c, DiffraxCase) else "pnode" for c in group}
    results, failed = {}, []
    for c in list(group):  # warm-up
        tic = time.perf_counter()
        try:
            results[c.label] = c.gradient()
        except Exception as exc:  # diffrax past max_steps: reported, left out
            print(f"{c.label}: failed ({str(exc).strip().splitlines()[-1][:160]})", flush=True)
            failed.append(c.label)
            group.remove(c)
            continue
        print(f"{c.label}: first gradient {time.perf_counter() - tic:.2f} s"
              + (f" (compiled before in {c.compile_s:.1f} s)" if isinstance(c, DiffraxCase) else ""), flush=True)
    times: dict[str, list[float]] = {c.label: [] for c in group}
    cpu: dict[str, list[float]] = {c.label: [] for c in group}
    for _ in range(args.repeats):
        for c in group:
            tic, cpu0 = time.perf_counter(), time.process_time()
            c.gradient()
            times[c.label].append(time.perf_counter() - tic)
            cpu[c.label].append(time.process_time() - cpu0)
    median = {label: statistics.median(v) for label, v in times.items()}
    best = min((c.label for c in group if side[c.label] == "diffrax"), key=median.get, default=None)
    print(f"\nstiff neural ODE: state {B} x {M}, MLP {M}-{H}-{M}, t in [0, {T:g}], rtol {RTOL:g}, "
          f"atol {ATOL:g}; median of {args.repeats} gradients")
    for name, (loss, g) in refs.items():
        print(f"reference {name}: loss {loss:.12g}")
    if "diffrax" in refs:
        print(f"references pnode vs diffrax: gradient relative difference {rel(refs['pnode'][1], refs['diffrax'][1]):.1e}")
    print(f"\n| configuration | s / gradient | / {best or 'diffrax best'} | CPU s | steps (+rejected) "
          "| Newton its | Jacobians | loss | gradient error |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in group:
        loss, g = results[c.label]
        ratio = f"{median[c.label] / median[best]:.2f}" if best else "-"
        print(f"| {c.label} | {median[c.label]:.3f} | {ratio} | {statistics.median(cpu[c.label]):.3f} "
              f"| {c.counts()} | {loss:.10g} | {rel(g, refs[side[c.label]][1]):.1e} |")
    for label in failed:
        print(f"| {label} | failed | - | - | - | - | - | - | - |")
    print("diffrax Jacobians: one per attempted step (VeryChord), per sample under vmap; diffrax does not "
          "count Newton iterations")


if __name__ == "__main__":
    main()
