"""Budgeted checkpointing: at most K stored states, binomial (revolve-class) schedule.

PETSc's own revolve/CAMS schedules need external packages that PETSc's pip and Debian
builds lack, so pnode drives the schedule itself over PETSc solves:

1. a forward sweep (the user's step-size control) records the accepted step times and
   the outputs, and stores nothing but the initial state;
2. the reverse sweep follows Griewank's binomial schedule over the recorded steps: it
   re-advances from stored states with the *recorded* step sizes (no adaptivity, so
   every recomputation replays the same steps) and reverses one step at a time with
   a one-step TSSolve + TSAdjointSolve.

The number of steps is only known after step 1, which is what lets the same schedule
serve fixed and adaptive steps; the price is one extra forward sweep. At any time at
most ``budget`` states are stored (the initial state included), plus the stages of the
one step being reversed.
"""
from __future__ import annotations

import os
import tempfile
from math import comb

import numpy as np
import torch

from .checkpoint import Checkpoint
from .integrator import Integrator


def binomial_split(steps: int, free: int) -> int:
    """Offset of the next checkpoint for reversing ``steps`` steps with ``free`` slots.

    With ``r`` the least number of repetitions such that C(free + r, free) >= steps, the
    left part gets C(free + r - 1, free) steps (reversible with ``free`` slots and r - 1
    repetitions) and the right part at most C(free - 1 + r, free - 1) (one slot fewer).
    """
    r = 0
    while comb(free + r, free) < steps:
        r += 1
    return max(1, min(comb(free + r - 1, free), steps - 1))


class _Store:
    """Checkpointed states, in memory or in files; counts the peak number held."""

    def __init__(self, disk: bool, directory: str | None):
        self.disk = disk
        self._dir = tempfile.TemporaryDirectory(prefix="pnode-ckpt-", dir=directory) if disk else None
        self.states: dict[int, torch.Tensor | str] = {}
        self.peak = 0

    def put(self, step: int, x: torch.Tensor) -> None:
        if self.disk:
            path = os.path.join(self._dir.name, f"{step}.npy")
            np.save(path, x.detach().cpu().numpy())
            self.states[step] = path
        else:
            self.states[step] = x.detach().clone()
        self.peak = max(self.peak, len(self.states))

    def get(self, step: int, like: torch.Tensor) -> torch.Tensor:
        val = self.states[step]
        if isinstance(val, str):
            return torch.from_numpy(np.load(val)).to(device=like.device)
        return val

    def drop(self, step: int) -> None:
        val = self.states.pop(step)
        if isinstance(val, str):
            os.remove(val)

    def close(self) -> None:
        self.states.clear()
        if self._dir is not None:
            self._dir.cleanup()


class BudgetedAdjoint:
    """Forward sweep and binomial reverse sweep for ``Checkpoint(budget=K)``."""

    def __init__(self, sweep: Integrator, checkpoint: Checkpoint):
        self.sweep = sweep
        self.checkpoint = checkpoint
        self.replayer = sweep.sibling(adjoint=False, replay=True)
        self.leaf = sweep.sibling(adjoint=True, replay=True, solution_only=False)
        self.forward_steps = 0
        self.peak_states = 0

    @property
    def pbuf(self):
        return self.leaf.pbuf

    def forward(self, y0: torch.Tensor, t_out: np.ndarray, out: torch.Tensor) -> None:
        self.sweep.forward(y0, t_out, out)
        self.times = np.asarray(self.sweep.step_times, dtype=np.float64)
        self.out_steps = list(self.sweep.out_steps)
        self.y0 = y0.detach().reshape(-1).clone()

    def adjoint(self, grads_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = self.leaf
        g = grads_out.reshape(len(self.out_steps), -1)
        self._jumps = {s: k for k, s in enumerate(self.out_steps)}
        self._g = g
        leaf.lam.copy_(g[-1])
        leaf.mu.zero_()
        leaf.set_cost_gradients()
        store = _Store(self.checkpoint.disk, self.checkpoint.directory)
        self.forward_steps = 0
        try:
            store.put(0, self.y0)
            self._reverse(store, 0, len(self.times) - 1, self.checkpoint.budget - 1)
            self.peak_states = store.peak
        finally:
            store.close()
        leaf.reduce_param_gradients()
        return leaf.lam, leaf.mu

    def _advance(self, x: torch.Tensor, a: int, b: int) -> torch.Tensor:
        if a == b:
            return x
        self.forward_steps += b - a
        return self.replayer.replay(x, self.times[a:b + 1])

    def _reverse(self, store: _Store, a: int, b: int, free: int) -> None:
        """Reverse steps a..b-1 (adjoint at b on entry, at a on exit); state a is stored."""
        while b - a > 1 and free > 0:
            m = a + binomial_split(b - a, free)
            store.put(m, self._advance(store.get(a, self.y0), a, m))
            self._reverse(store, m, b, free - 1)
            store.drop(m)
            b = m
        for i in range(b - 1, a - 1, -1):
            x = self._advance(store.get(a, self.y0), a, i)
            self._reverse_step(x, i)

    def _reverse_step(self, x: torch.Tensor, i: int) -> None:
        leaf = self.leaf
        self.forward_steps += 1
        leaf.replay(x, self.times[i:i + 2])
        leaf.adjoint_steps(1)
        k = self._jumps.get(i)
        if k is not None:
            leaf.lam.add_(self._g[k])
            leaf.L.stateIncrease()
