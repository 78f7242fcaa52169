"""Budgeted checkpointing: at most K stored states, binomial (revolve-class) schedules.

PETSc's own revolve/CAMS schedules need external packages that PETSc's pip and Debian
builds lack, so pnode drives the schedule itself over PETSc solves, in two phases:

1. the forward solve (the user's step-size control, fixed or adaptive: the number of
   steps is not known in advance) places checkpoints *online* (:class:`OnlineSchedule`,
   the dynamic algorithm of Wang, Moin and Iaccarino, SIAM J. Sci. Comput. 31, 2009) and
   records the accepted step times;
2. the reverse sweep goes back segment by segment between the stored states, each by
   Griewank's offline binomial schedule with the slots freed so far: it re-advances from
   stored states with the *recorded* step sizes (no adaptivity, so every recomputation
   replays the same steps) and reverses one step at a time with a one-step TSSolve +
   TSAdjointSolve.

At any time at most ``budget`` states are stored (the initial state included), plus the
stages of the one step being reversed. Counted forward steps (forward solve included;
`benchmarks/bench_schedule.py`, `docs/benchmarks.md`): 0-24% more than the offline
optimum, which would need the number of steps in advance, and up to 37% fewer than
recording the step times first and then reversing from the initial state by that optimum.
"""
from __future__ import annotations

import os
import tempfile
from math import comb

import numpy as np
import torch

from .sweep import AdjointSweep


def binomial_cost(steps: int, slots: int) -> int:
    """Fewest forward steps that reverse ``steps`` steps from a stored initial state with
    ``slots`` stored states (the initial one included), not counting the recording step
    each reversed step needs: ``r * steps - C(slots + r, slots + 1)`` with ``r`` the least
    repetition number such that ``C(slots + r, slots) >= steps`` (Griewank and Walther,
    ACM TOMS 26, 2000)."""
    r = 0
    while comb(slots + r, slots) < steps:
        r += 1
    return r * steps - comb(slots + r, slots + 1)


def binomial_split(steps: int, free: int) -> int:
    """Offset of the next checkpoint for reversing ``steps`` steps with ``free`` slots
    besides the stored initial state: the ``m`` that minimises ``m + cost(m, free + 1) +
    cost(steps - m, free)`` (advance ``m`` steps, reverse the right part with one slot
    fewer, then the left part). The cost is convex in ``m`` (piecewise linear with
    increasing slopes), so a bisection on its differences finds the minimum."""
    slots = free + 1

    def total(m: int) -> int:
        return m + binomial_cost(m, slots) + binomial_cost(steps - m, slots - 1)

    lo, hi = 1, steps - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if total(mid + 1) >= total(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


class OnlineSchedule:
    """Where to keep at most ``budget`` states while stepping forward, steps unknown ahead.

    Every checkpoint has a level (the initial state an infinite one). A new step is stored
    at level 0 while a slot is free; then in place of the latest *dispensable* checkpoint
    (one with a higher-level checkpoint after it); with none, in place of the latest
    checkpoint, one level above it. Levels grow like the repetition number of the binomial
    schedule, so the states spread over the steps taken so far much as an offline schedule
    would place them (measured: 0-24% more forward steps than the optimum, see the module
    docstring).
    """

    def __init__(self, budget: int):
        self.budget = budget
        self.steps: list[int] = [0]
        self.levels: list[float] = [float("inf")]

    def place(self, step: int) -> int | None:
        """Store ``step``? Returns the stored step it replaces (or -1 for a free slot),
        None when it is not stored (a budget of one keeps the initial state only)."""
        if len(self.steps) < self.budget:
            self.steps.append(step)
            self.levels.append(0)
            return -1
        if self.budget == 1:
            return None
        levels, top = self.levels, -1.0
        for j in range(len(levels) - 1, 0, -1):
            if levels[j] < top:
                evicted = self.steps.pop(j)
                del levels[j]
                self.steps.append(step)
                levels.append(0)
                return evicted
            top = max(top, levels[j])
        evicted = self.steps[-1]
        self.steps[-1] = step
        levels[-1] += 1
        return evicted


class BudgetStore:
    """At most ``budget`` checkpointed states, in memory or in files, placed online by an
    :class:`OnlineSchedule` as a forward solve offers its accepted steps; counts the peak
    number held. In memory, a dropped state's buffer is reused by the next one (no
    allocation per step). On disk the states live in a private folder (``directory``: its
    parent) that :meth:`close` removes."""

    def __init__(self, budget: int, disk: bool, directory: str | None, device: torch.device):
        self.budget, self.disk, self.device = budget, disk, device
        self.schedule = OnlineSchedule(budget)
        self._dir = tempfile.TemporaryDirectory(prefix="pnode-ckpt-", dir=directory) if disk else None
        self.states: dict[int, torch.Tensor | str] = {}
        self._spare: list[torch.Tensor] = []
        self.peak = 0

    def offer(self, step: int, x: torch.Tensor, last: bool) -> None:
        """A forward solve's accepted step ``step`` with state ``x``: keep it or not."""
        evicted = None if step == 0 or last else self.schedule.place(step)
        if evicted is None:
            return
        if evicted >= 0:
            self.drop(evicted)
        self.put(step, x)

    def put(self, step: int, x: torch.Tensor) -> None:
        if self.disk:
            path = os.path.join(self._dir.name, f"{step}.pt")
            torch.save(x.detach().clone(), path)
            self.states[step] = path
        elif self._spare:
            self.states[step] = self._spare.pop().copy_(x)
        else:
            self.states[step] = x.detach().clone()
        self.peak = max(self.peak, len(self.states))

    def get(self, step: int) -> torch.Tensor:
        val = self.states[step]
        if isinstance(val, str):
            return torch.load(val, weights_only=True, map_location=self.device)
        return val

    def drop(self, step: int) -> None:
        val = self.states.pop(step)
        if isinstance(val, str):
            os.remove(val)
        else:
            self._spare.append(val)

    def close(self) -> None:
        self.states.clear()
        self._spare.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def reverse_with_budget(pool, store: BudgetStore, origin: float, times: np.ndarray,
                        out_steps: list[int], grads_out: torch.Tensor, budget: int):
    """The backward pass of a budgeted forward solve: the segments between stored states
    from the last one back, each by a binomial schedule with the slots freed so far.
    Returns ((dL/dy0, dL/dparams), the most states held, the steps taken again)."""
    replayer = pool.lease(None, replay=True)
    leaf = pool.lease("stages", replay=True)
    try:
        reversal = _Reversal(replayer, leaf, store, origin, times, out_steps, grads_out)
        grads = reversal.run(budget)
    finally:
        pool.give_back(replayer)
        pool.give_back(leaf)
    return grads, store.peak, reversal.forward_steps


class _Reversal:
    """One budgeted backward pass over a replaying integrator and a recording one."""

    def __init__(self, replayer, leaf, store: BudgetStore, origin: float, times: np.ndarray,
                 out_steps: list[int], grads_out: torch.Tensor):
        self.replayer, self.store, self.origin, self.times = replayer, store, origin, times
        self.leaf = leaf
        self.sweep = AdjointSweep.of(leaf)
        self.g = grads_out.reshape(len(out_steps), -1)
        self.jumps = {s: k for k, s in enumerate(out_steps)}
        self.forward_steps = 0

    def run(self, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
        store = self.store
        self.sweep.start(self.g[-1])
        marks = sorted(store.states) + [len(self.times) - 1]
        for j in range(len(marks) - 2, -1, -1):
            self._reverse(marks[j], marks[j + 1], budget - len(store.states))
            store.drop(marks[j])
        return self.sweep.finish()

    def _advance(self, x: torch.Tensor, a: int, b: int) -> torch.Tensor:
        if a == b:
            return x
        self.forward_steps += b - a
        return self.replayer.replay(x, self.origin, self.times[a:b + 1])

    def _reverse(self, a: int, b: int, free: int) -> None:
        """Reverse steps a..b-1 (adjoint at b on entry, at a on exit); state a is stored."""
        store = self.store
        while b - a > 1 and free > 0:
            m = a + binomial_split(b - a, free)
            store.put(m, self._advance(store.get(a), a, m))
            self._reverse(m, b, free - 1)
            store.drop(m)
            b = m
        for i in range(b - 1, a - 1, -1):
            x = self._advance(store.get(a), a, i)
            self._reverse_step(x, i)

    def _reverse_step(self, x: torch.Tensor, i: int) -> None:
        self.forward_steps += 1
        self.leaf.replay(x, self.origin, self.times[i:i + 2])
        self.sweep.reverse(1, (i, i + 1), (self.times[i], self.times[i + 1]))
        k = self.jumps.get(i)
        if k is not None:
            self.sweep.jump(self.g[k])
