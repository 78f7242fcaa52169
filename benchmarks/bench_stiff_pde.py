"""A stiff reaction-diffusion PDE at scale: pnode (ARKIMEX, coloured sparse Jacobian, a PETSc
preconditioner) against scipy's BDF given the Jacobian's sparsity, at equal accuracy.

    nice python benchmarks/bench_stiff_pde.py [--n 182] [--t-end 1.0] [--ranks 2] [--gradient-error]

Problem: the 2-D Brusselator with a learned reaction term on the periodic unit square,
``N x N`` points, 2 species (``2 N^2`` unknowns: 66,248 for ``N = 182``)::

    u' = alpha lap(u) + A + u^2 v - (B + 1) u + 0.1 R(u, v)_1
    v' = alpha lap(v) + B u - u^2 v            + 0.1 R(u, v)_2

``A = 1``, ``B = 3.4``, ``alpha = 0.01`` (the 5-point Laplacian's eigenvalues reach
``-8 alpha N^2 = -2650``: explicit steps would be below 1e-3), ``R`` a pointwise 2-16-2
tanh MLP (82 parameters, seed 0). pnode: a :class:`pnode.distributed.DMDAProblem` solved
fully implicitly by adaptive ARKIMEX 4 (``jacobian="coloured"``: ``dg/du`` assembled in an
AIJ matrix from 10 VJPs (5 colours x 2 species), GMRES with block Jacobi / ILU(k), ``k =
--ilu-levels``, 2 by default (``--asm-overlap m``: additive Schwarz with overlap ``m``, whose
blocks weaken less with the rank count); the forward Newton steps' GMRES stops at ``--ksp-rtol``, 1e-2
by default (inexact Newton), or by Eisenstat-Walker's rule with ``--ew``, its forcing term
capped at ``--ew-rtolmax``; the adjoint's at ``--adjoint-ksp-rtol``, 1e-6); scipy:
``solve_ivp(method="BDF", jac_sparsity=...)`` (its Jacobian by grouped finite differences,
sparse LU) on the same right-hand side in numpy (pnode's own default GMRES tolerance is
1e-12, forward and adjoint). Errors: relative max-norm of the state at
``t_end`` against pnode ARKIMEX 5 at ``rtol = 1e-9`` (the reference, GMRES to 1e-12), and scipy's BDF
error against it too, so both sides are measured alike. Then one gradient (forward +
TSAdjoint) of ``|y(T)|^2 / (2 N^2)`` with respect to ``u0`` and the MLP's parameters, and the same
pnode solve on ``--ranks`` MPI ranks (``mpiexec``; the 1-rank figure is the same command
with ``-n 1``; ``--repeats`` solves each, their medians). ``--gradient-error`` also compares the gradient, with the adjoint's GMRES at
``--adjoint-ksp-rtol`` and at ``1e-12``, with the gradient of ARKIMEX 5 at ``rtol = 1e-9`` (GMRES ``1e-12``).

diffrax's (and any dense) Newton matrix does not fit at this size: ``n^2`` float64 values,
``66,248^2 * 8`` bytes = 35 GB (65,536^2: 34 GB).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

A_RATE, B_RATE, ALPHA = 1.0, 3.4, 0.01
DT = torch.float64


def mlp() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).to(DT)


class Brusselator(torch.nn.Module):
    """The right-hand side on a ghosted DMDA patch ``(ny + 2, nx + 2, 2)``."""

    def __init__(self, n: int):
        super().__init__()
        self.h = 1.0 / n
        self.net = mlp()

    def forward(self, t: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        from pnode.distributed import interior, laplacian

        lap = torch.stack([laplacian(patch[..., k], self.h, 1, 2) for k in range(2)], -1)
        w = interior(patch, 1, 2)
        u, v = w[..., 0], w[..., 1]
        uuv = u * u * v
        kinetics = torch.stack([A_RATE + uuv - (B_RATE + 1) * u, B_RATE * u - uuv], -1)
        return ALPHA * lap + kinetics + 0.1 * self.net(w)


def initial_field(n: int) -> torch.Tensor:
    """A smooth periodic state near the equilibrium ``(A, B/A)``, shape ``(n, n, 2)``."""
    x = torch.arange(n, dtype=DT) / n
    Y, X = torch.meshgrid(x, x, indexing="ij")
    u = A_RATE + 0.5 * torch.sin(2 * np.pi * X) * torch.sin(4 * np.pi * Y)
    v = B_RATE / A_RATE + 0.5 * torch.cos(2 * np.pi * (X + Y))
    return torch.stack([u, v], -1)


def numpy_rhs(n: int, net: torch.nn.Sequential):
    """The same right-hand side on the whole flat state in numpy (for scipy)."""
    W1, b1 = (p.detach().numpy() for p in (net[0].weight, net[0].bias))
    W2, b2 = (p.detach().numpy() for p in (net[2].weight, net[2].bias))
    scale = ALPHA * n * n

    def rhs(t, y):
        w = y.reshape(n, n, 2)
        lap = (np.roll(w, 1, 0) + np.roll(w, -1, 0) + np.roll(w, 1, 1) + np.roll(w, -1, 1) - 4 * w) * scale
        u, v = w[..., 0], w[..., 1]
        uuv = u * u * v
        out = lap + 0.1 * (np.tanh(w @ W1.T + b1) @ W2.T + b2)
        out[..., 0] += A_RATE + uuv - (B_RATE + 1) * u
        out[..., 1] += B_RATE * u - uuv
        return out.reshape(-1)

    return rhs


def sparsity(n: int):
    """The 5-point periodic stencil, both species coupled at each point (scipy's ``jac_sparsity``)."""
    import scipy.sparse as sp

    eye = sp.identity(n, format="csr")
    ring = sp.csr_matrix(np.roll(np.eye(n), 1, 1) + np.roll(np.eye(n), -1, 1) + np.eye(n))
    grid = (sp.kron(ring, eye) + sp.kron(eye, ring)) != 0
    return sp.kron(grid, np.ones((2, 2)), format="csr")


class Clock:
    """Wall-clock and this process's CPU seconds since it was made (the machine is shared:
    under load the CPU time is the fairer figure for one process)."""

    def __init__(self):
        self.start = (time.perf_counter(), time.process_time())

    def wall(self) -> float:
        return time.perf_counter() - self.start[0]

    def cpu(self) -> float:
        return time.process_time() - self.start[1]


def pnode_solve(n: int, t_end: float, rtol: float, atol: float, tableau: str, comm=None, gradient: bool = False,
                options: dict | None = None) -> dict:
    """pnode's solve (and optionally one gradient) on ``comm``; the state at ``t_end`` is
    gathered on every rank."""
    import pnode
    from pnode.distributed import DMDAProblem, create_dmda

    func = Brusselator(n)
    da = create_dmda([n, n], boundary="periodic", dof=2, stencil="star", comm=comm)
    prob = DMDAProblem(da, func)
    opts = {"ts_arkimex_type": tableau, **(options or {})}
    ode = pnode.NeuralODE(prob, method="arkimex", rtol=rtol, atol=atol, jacobian="coloured", options=opts)
    t = torch.tensor([0.0, t_end], dtype=DT)
    try:
        y0 = prob.scatter(initial_field(n))
        clock = Clock()
        with torch.no_grad():
            out = ode(y0, t)
        result = {"forward_s": clock.wall(), "forward_cpu": clock.cpu(), "stats": dict(ode.stats),
                  "state": prob.gather(out[-1])}
        if gradient:
            params = [y0.requires_grad_(True), *func.parameters()]
            clock = Clock()
            out = ode(y0, t)
            local = (out[-1] ** 2).sum() / (2 * n * n)
            grads = torch.autograd.grad(local, params)
            result["gradient_s"], result["gradient_cpu"] = clock.wall(), clock.cpu()
            result["gradient"] = (prob.gather(grads[0]), torch.cat([g.reshape(-1) for g in grads[1:]]))
        return result
    finally:
        prob.destroy()
        da.destroy()


def scipy_solve(n: int, t_end: float, rtol: float, atol: float) -> dict:
    from scipy.integrate import solve_ivp

    rhs = numpy_rhs(n, mlp())
    clock = Clock()
    sol = solve_ivp(rhs, (0.0, t_end), initial_field(n).reshape(-1).numpy(), method="BDF", rtol=rtol, atol=atol,
                    jac_sparsity=sparsity(n))
    assert sol.success, sol.message
    return {"seconds": clock.wall(), "cpu": clock.cpu(), "steps": len(sol.t) - 1, "rhs": sol.nfev,
            "jacobians": sol.njev, "lu": sol.nlu, "state": torch.from_numpy(sol.y[:, -1].reshape(n, n, 2))}


def check_same_rhs(n: int) -> None:
    """scipy's numpy right-hand side equals pnode's torch one (periodic patch by wrapping)."""
    y0 = initial_field(n)
    patch = torch.nn.functional.pad(y0.movedim(-1, 0)[None], (1, 1, 1, 1), mode="circular")[0].movedim(0, -1)
    with torch.no_grad():
        want = Brusselator(n)(torch.zeros((), dtype=DT), patch).reshape(-1).numpy()
    got = numpy_rhs(n, mlp())(0.0, y0.reshape(-1).numpy())
    assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max(), "numpy and torch right-hand sides differ"


def error(state: torch.Tensor, ref: torch.Tensor) -> float:
    return float((state - ref).abs().max() / ref.abs().max())


def solver_options(args, ksp_rtol: float | None = None) -> dict:
    """pnode's linear-solver options of the benchmark's solve."""
    opts = {"ksp_rtol": args.ksp_rtol, "sub_pc_factor_levels": args.ilu_levels,
            "adjoint_ksp_rtol": args.adjoint_ksp_rtol if ksp_rtol is None else ksp_rtol}
    if args.asm_overlap:
        opts |= {"pc_type": "asm", "pc_asm_overlap": args.asm_overlap, "sub_pc_type": "ilu"}
    return {**opts, "snes_ksp_ew": True, "snes_ksp_ew_rtolmax": args.ew_rtolmax} if args.ew else opts


def solver_label(args) -> str:
    forward = f"EW (rtolmax {args.ew_rtolmax:g})" if args.ew else f"ksp_rtol {args.ksp_rtol:g}"
    pc = f"ASM (overlap {args.asm_overlap})" if args.asm_overlap else "bjacobi"
    return f"{pc}/ILU({args.ilu_levels}), forward {forward}"


def gradient_errors(n: int, args, measured: tuple, ref: tuple) -> list[tuple[str, float, float]]:
    """Relative 2-norm errors of the gradients ``(d/du0, d/dparameters)``: ``measured`` (the
    benchmark's solve, the adjoint's GMRES to ``--adjoint-ksp-rtol``) and the same with ``1e-12``,
    against ``ref`` (ARKIMEX 5 at ``rtol = 1e-9``, GMRES to ``1e-12``)."""
    tight = pnode_solve(n, args.t_end, args.rtol, args.atol, "4", gradient=True, options=solver_options(args, 1e-12))
    return [(f"ARKIMEX 4, rtol {args.rtol:g}, {solver_label(args)}, adjoint ksp_rtol {ksp:g}",
             *(float((g - r).norm() / r.norm()) for g, r in zip(got, ref)))
            for ksp, got in ((args.adjoint_ksp_rtol, measured), (1e-12, tight["gradient"]))]


def worker(args) -> None:
    """One pnode solve and gradient on COMM_WORLD (run under mpiexec by the main script)."""
    from mpi4py import MPI

    options = solver_options(args)
    pnode_solve(args.n, args.t_end / 100, args.rtol, args.atol, "4", MPI.COMM_WORLD, options=options)  # warm-up
    runs = [pnode_solve(args.n, args.t_end, args.rtol, args.atol, "4", MPI.COMM_WORLD, gradient=True, options=options)
            for _ in range(args.repeats)]
    if MPI.COMM_WORLD.Get_rank() == 0:
        keep = ("forward_s", "forward_cpu", "gradient_s", "gradient_cpu")
        print(json.dumps({k: statistics.median(r[k] for r in runs) for k in keep} | {"steps": runs[0]["stats"]["steps"]}))


def ranks_run(args, ranks: int) -> dict:
    cmd = ["mpiexec", "-n", str(ranks), sys.executable, __file__, "--worker", "--n", str(args.n),
           "--t-end", str(args.t_end), "--rtol", str(args.rtol), "--atol", str(args.atol), "--ksp-rtol",
           str(args.ksp_rtol), "--adjoint-ksp-rtol", str(args.adjoint_ksp_rtol), "--ilu-levels",
           str(args.ilu_levels), "--ew-rtolmax", str(args.ew_rtolmax), "--asm-overlap", str(args.asm_overlap),
           "--repeats", str(args.repeats)]
    cmd += ["--ew"] if args.ew else []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=182)
    parser.add_argument("--t-end", type=float, default=1.0)
    parser.add_argument("--rtol", type=float, default=1e-5, help="pnode's tolerance (rtol; atol = rtol / 100)")
    parser.add_argument("--atol", type=float, default=None)
    parser.add_argument("--scipy-rtol", type=float, default=1e-5)
    parser.add_argument("--ksp-rtol", type=float, default=1e-2, help="the forward Newton steps' GMRES tolerance")
    parser.add_argument("--adjoint-ksp-rtol", type=float, default=1e-6, help="the adjoint's GMRES tolerance")
    parser.add_argument("--ilu-levels", type=int, default=2, help="fill levels of block Jacobi's ILU blocks")
    parser.add_argument("--asm-overlap", type=int, default=0,
                        help="additive Schwarz with this overlap instead of block Jacobi (0: block Jacobi)")
    parser.add_argument("--ew", action="store_true",
                        help="forward Newton steps' GMRES by Eisenstat-Walker's rule (snes_ksp_ew), not --ksp-rtol")
    parser.add_argument("--ew-rtolmax", type=float, default=0.1,
                        help="with --ew: the largest forcing term (snes_ksp_ew_rtolmax; PETSc's default 0.9)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed solves (forward and gradient) per rank count under mpiexec; medians are reported")
    parser.add_argument("--gradient-error", action="store_true",
                        help="also measure the gradient's error against a tight reference (two more gradients)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.atol = args.atol if args.atol is not None else args.rtol / 100
    torch.set_num_threads(1)
    if args.worker:
        worker(args)
        return
    n, unknowns = args.n, 2 * args.n ** 2
    print(f"load average (1, 5, 15 min) at the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"2-D Brusselator + learned reaction: {n} x {n} x 2 = {unknowns} unknowns, t in [0, {args.t_end}]")
    print(f"a dense Newton matrix (diffrax) would need {unknowns ** 2 * 8 / 1e9:.0f} GB of float64 "
          f"(65,536^2: {65536 ** 2 * 8 / 1e9:.0f} GB); not run")
    check_same_rhs(n)
    ref = pnode_solve(n, args.t_end, 1e-9, 1e-11, "5", gradient=args.gradient_error)  # GMRES to 1e-12 (the default)
    print(f"reference: pnode ARKIMEX 5, rtol 1e-9, atol 1e-11: {ref['forward_s']:.1f} s, {ref['stats']['steps']} steps")
    sc = scipy_solve(n, args.t_end, args.scipy_rtol, args.scipy_rtol / 100)
    pn = pnode_solve(n, args.t_end, args.rtol, args.atol, "4", gradient=True, options=solver_options(args))
    rows = [("scipy BDF, jac_sparsity", args.scipy_rtol, sc["seconds"], sc["cpu"], error(sc["state"], ref["state"]),
             f"{sc['steps']} steps, {sc['rhs']} f, {sc['jacobians']} Jacobians, {sc['lu']} LU"),
            (f"pnode ARKIMEX 4, coloured, {solver_label(args)}", args.rtol,
             pn["forward_s"], pn["forward_cpu"], error(pn["state"], ref["state"]),
             f"{pn['stats']['steps']} steps (+{pn['stats']['rejected']} rejected), "
             f"{pn['stats']['newton_iterations']} Newton, {pn['stats']['krylov_iterations']} KSP, "
             f"{pn['stats']['jacobian_evaluations']} Jacobians")]
    print("\n| solver | rtol | forward s (wall) | CPU s | error | work |\n|---|---|---|---|---|---|")
    for name, tol, sec, cpu, err, work in rows:
        print(f"| {name} | {tol:g} | {sec:.2f} | {cpu:.2f} | {err:.2e} | {work} |")
    print(f"\nforward speed-up pnode / scipy BDF: {sc['seconds'] / pn['forward_s']:.1f}x wall, "
          f"{sc['cpu'] / pn['forward_cpu']:.1f}x CPU")
    print(f"one gradient (forward + TSAdjoint, {sum(p.numel() for p in mlp().parameters())} parameters + u0): "
          f"{pn['gradient_s']:.2f} s wall, {pn['gradient_cpu']:.2f} s CPU = {pn['gradient_cpu'] / sc['cpu']:.2f} "
          "scipy forward solves (scipy has no adjoint)")
    if args.gradient_error:
        print("\n| gradient of | rel. error, d/du0 | rel. error, d/dparameters |\n|---|---|---|")
        for name, du0, dparams in gradient_errors(n, args, pn["gradient"], ref["gradient"]):
            print(f"| {name} | {du0:.2e} | {dparams:.2e} |")
    if args.ranks > 1:
        one, many = ranks_run(args, 1), ranks_run(args, args.ranks)
        print(f"\npnode under mpiexec (wall s, median of {args.repeats}): -n 1 forward {one['forward_s']:.2f}, gradient {one['gradient_s']:.2f}; "
              f"-n {args.ranks} forward {many['forward_s']:.2f}, gradient {many['gradient_s']:.2f}; speed-up "
              f"{one['forward_s'] / many['forward_s']:.2f}x forward, {one['gradient_s'] / many['gradient_s']:.2f}x "
              f"gradient (CPU s of rank 0: -n 1 {one['forward_cpu']:.2f} + {one['gradient_cpu']:.2f}, "
              f"-n {args.ranks} {many['forward_cpu']:.2f} + {many['gradient_cpu']:.2f})")
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
