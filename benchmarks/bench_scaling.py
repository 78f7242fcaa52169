"""Strong scaling of a DMDA-distributed neural ODE: forward + adjoint on 1 vs N ranks.

1-D periodic diffusion (exact FD) + a pointwise MLP closure on 2^16 points, rk4 with
fixed steps; times one forward and one backward (TSAdjointSolve) after a warm-up, and
counts PETSc's point-to-point messages and bytes per rank (VecScatter events: the ghost
exchanges) per time step. Run: ``mpiexec -n 2 python benchmarks/bench_scaling.py``.
"""
from __future__ import annotations

import argparse
import time

import torch
from mpi4py import MPI

import pnode
from pnode.distributed import DMDAProblem, create_dmda, interior, is_root, laplacian


class Closure(torch.nn.Module):
    def __init__(self, h: float, nu: float = 1e-6):
        super().__init__()
        self.h, self.nu = h, nu
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()

    def forward(self, t, patch):
        u = interior(patch, 1, 1)
        return self.nu * laplacian(patch, self.h, 1, 1) + self.net(u[:, None])[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log2n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    P = pnode.vec.PETSc()
    P.Log.begin()
    comm = MPI.COMM_WORLD
    n = 2 ** args.log2n
    model = Closure(1.0 / n)
    da = create_dmda([n])
    prob = DMDAProblem(da, model)
    x = torch.arange(n, dtype=torch.float64) / n
    y0 = prob.scatter(torch.sin(2 * torch.pi * x)).requires_grad_(True)
    dt = 1e-3
    t = torch.tensor([0.0, args.steps * dt], dtype=torch.float64)
    node = pnode.NeuralODE(prob, method="rk4", step_size=dt)
    scatter = P.Log.Event("VecScatterBegin")

    def run() -> tuple[float, float]:
        comm.Barrier()
        t0 = time.perf_counter()
        out = node(y0, t)
        loss = (out[-1] ** 2).sum()
        comm.Barrier()
        t1 = time.perf_counter()
        loss.backward()
        comm.Barrier()
        return t1 - t0, time.perf_counter() - t1

    run()
    before = scatter.getPerfInfo()
    times = [run() for _ in range(args.repeat)]
    after = scatter.getPerfInfo()
    fwd, bwd = min(f for f, _ in times), min(b for _, b in times)
    per_step = args.repeat * args.steps
    msgs = (after["numMessages"] - before["numMessages"]) / per_step
    nbytes = (after["messageLength"] - before["messageLength"]) / per_step
    msgs, nbytes = comm.allreduce(msgs, op=MPI.MAX), comm.allreduce(nbytes, op=MPI.MAX)
    if is_root(comm):
        print(f"ranks={comm.Get_size()} n=2^{args.log2n} steps={args.steps} rk4 "
              f"forward={fwd:.3f}s backward={bwd:.3f}s total={fwd + bwd:.3f}s "
              f"messages/step/rank={msgs:.1f} bytes/step/rank={nbytes:.0f} "
              f"(forward+adjoint; plus one {sum(p.numel() for p in model.parameters())}-double "
              f"Allreduce per backward)")
    prob.destroy()
    da.destroy()


if __name__ == "__main__":
    main()
