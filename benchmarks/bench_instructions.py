"""Instructions per pnode gradient, counted by valgrind's callgrind: this checkout vs another.

    python benchmarks/bench_instructions.py [--case small|large] [--steps S]
                                            [--checkpoint all|solution|budget]
                                            [--gradients N] [--against DIR]

Instruction counts do not drift with the machine's load, unlike seconds, so they compare
two versions of pnode on a shared machine. Each version runs in two processes under
callgrind, one making no gradient and one making ``--gradients`` (both after one warm-up
gradient); the difference divided by N is the count per gradient, with start-up and
imports cancelled out. ``--against DIR`` measures the pnode importable from DIR (a git
worktree of an older commit, say) the same way and prints the ratio. The models are
``bench_torchdiffeq.py``'s.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_gradients(case: str, steps: int | None, checkpoint: str, gradients: int) -> None:
    """One warm-up gradient, then ``gradients`` more (the measured work)."""
    import torch

    from bench_torchdiffeq import problem, solver

    f, y0, t, params = problem(case, steps=steps)
    run = solver(f"pnode-{checkpoint}", f, y0, t)
    for _ in range(1 + gradients):
        torch.autograd.grad(run()[-1].pow(2).sum(), params)


def instructions(pythonpath: Path, args: argparse.Namespace, gradients: int) -> int:
    """Total instructions callgrind counts for one child process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
               str(HERE / "bench_instructions.py"), "--child", str(gradients), "--case", args.case,
               "--checkpoint", args.checkpoint] + (["--steps", str(args.steps)] if args.steps else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), str(HERE)]),
               "OMP_NUM_THREADS": "1"}
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        m = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
        if m is None:
            raise RuntimeError(f"no summary line in {out}")
        return int(m.group(1))


def per_gradient(pythonpath: Path, args: argparse.Namespace) -> float:
    """Instructions per gradient of the pnode under ``pythonpath``."""
    return (instructions(pythonpath, args, args.gradients) - instructions(pythonpath, args, 0)) / args.gradients


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="small", choices=["small", "large"])
    p.add_argument("--steps", type=int, default=None, help="rk4 steps (default: the case's own)")
    p.add_argument("--checkpoint", default="all", choices=["all", "solution", "budget"])
    p.add_argument("--gradients", type=int, default=10)
    p.add_argument("--against", type=Path, default=None, help="another checkout's root")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        run_gradients(args.case, args.steps, args.checkpoint, args.child)
        return
    label = f"{args.case} (steps {args.steps or 'default'}), Checkpoint {args.checkpoint}"
    here = per_gradient(HERE.parent, args)
    print(f"{label}: {here / 1e6:.2f} M instructions per gradient (this checkout)")
    if args.against is not None:
        other = per_gradient(args.against.resolve(), args)
        print(f"{label}: {other / 1e6:.2f} M instructions per gradient ({args.against}); "
              f"ratio this/other {here / other:.3f}")


if __name__ == "__main__":
    main()
