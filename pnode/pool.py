"""Integrators of one :class:`pnode.integrator.Setup`, lent to one differentiable call at a time.

A call that will be differentiated keeps what its backward pass needs (PETSc's
trajectory, the stage graphs) inside the integrator that solved it, so that integrator
is lent to the call until its backward pass has run or its output is dropped. Another
call made meanwhile (a second batch, an evaluation rollout under ``no_grad``) gets
another integrator, and a training loop that alternates forward and backward keeps
reusing one. An integrator whose solve failed is destroyed on return (PETSc's state
after an error, such as vectors left locked, cannot be trusted) and a fresh one is built
next time.
"""
from __future__ import annotations

from .integrator import Integrator, Setup


class IntegratorPool:
    """Free integrators by kind (trajectory, replay); lends them out and takes them back."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self._free: dict[tuple, list[Integrator]] = {}
        self.lent = 0
        self.closed = False

    def lease(self, trajectory: str | None = None, replay: bool = False) -> Integrator:
        """An integrator of this kind that no other call holds (made if none is free)."""
        free = self._free.get((trajectory, replay))
        integ = free.pop() if free else self.setup.integrator(trajectory, replay)
        self.lent += 1
        return integ

    def give_back(self, integ: Integrator) -> None:
        """Return a lent integrator: kept for reuse, or destroyed if it failed or the pool
        is closed."""
        self.lent -= 1
        if integ.tape is not None:
            integ.tape.clear()
        if integ.broken or self.closed:
            integ.destroy()
        else:
            self._free.setdefault((integ.trajectory, integ.replaying), []).append(integ)

    def close(self) -> None:
        """Destroy the free integrators now, the lent ones when they come back."""
        self.closed = True
        for free in self._free.values():
            for integ in free:
                integ.destroy()
        self._free.clear()
