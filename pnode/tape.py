"""Stage graphs kept for the adjoint: each right-hand-side evaluation's autograd graph.

PETSc's adjoint of an explicit Runge-Kutta step asks, stage by stage, for ``(df/du)^T v``
and ``(df/dp)^T v`` at the stage values of the forward step. Rebuilding ``f``'s graph
there costs one more evaluation of ``f`` per stage. A :class:`StageTape` records the
graph when the stage is evaluated (in the forward solve, or when PETSc recomputes a step
in the backward pass) and hands it to the VJP, which then only runs the backward pass.

Graphs are matched by stage time and exact stage values, so a step that was rejected by
the error controller, or a stage PETSc does not differentiate, is never used; entries
recorded after a matched one are dropped, because the adjoint only moves backwards.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.autograd import Variable

# how many of the latest entries a lookup inspects before giving up (then the VJP
# re-evaluates f): a step's stages plus those of rejected attempts in between
_WINDOW = 64


def _private_engine() -> Callable | None:
    """autograd's engine entry ``run_backward`` if it exists here with the signature pnode
    calls it with (probed once on a tiny graph), else None."""
    run = getattr(getattr(Variable, "_execution_engine", None), "run_backward", None)
    if run is None:
        return None
    try:
        x = torch.ones(1, requires_grad=True)
        (g,) = run(((x * 2.0),), (torch.ones(1),), False, False, (x,), True, False)
    except (TypeError, RuntimeError, AttributeError):
        return None
    return run if g is not None and float(g) == 2.0 else None


_run_backward = _private_engine()


def use_engine(kind: str) -> str:
    """Choose how :func:`engine_vjp` calls autograd: ``"private"`` (the engine directly,
    when this torch has it) or ``"public"`` (``torch.autograd.grad``); returns the kind
    now in use. pnode picks ``"private"`` where the probe at import succeeds."""
    global _run_backward
    if kind not in ("private", "public"):
        raise ValueError(f"kind must be 'private' or 'public', got {kind!r}")
    _run_backward = _private_engine() if kind == "private" else None
    return "private" if _run_backward is not None else "public"


def engine_vjp(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], v: torch.Tensor,
               keep_graph: bool) -> tuple[torch.Tensor | None, ...]:
    """``v^T d out / d inputs`` (None for inputs ``out`` does not depend on, all None if it
    depends on none).

    Calls autograd's engine directly where it can: the same computation as
    ``torch.autograd.grad`` without its Python argument handling, which costs ~30 us per
    call (107 -> 77 us for the VJP of a 2-50-2 MLP on 20 samples and its 4 parameters,
    measured on this project's 2-core machine), a third of a small model's VJP. The
    engine's entry is private API: where it is missing or takes other arguments (probed
    at import), the public ``torch.autograd.grad`` serves (:func:`use_engine`).
    """
    if not out.requires_grad:
        return (None,) * len(inputs)
    if _run_backward is not None:
        return _run_backward((out,), (v,), keep_graph, False, inputs, True, False)
    return torch.autograd.grad((out,), inputs, (v,), retain_graph=keep_graph, allow_unused=True)


def _tolerance(t: float) -> float:
    """How far a recorded stage time may be from ``t`` and still match."""
    return 1e-12 * max(1.0, abs(t))


class StageTape:
    """Recorded ``(t, x, f(t, x))`` graphs of one integrator; ``recording`` switches it on.

    ``max_bytes`` caps the memory of the recorded graphs (None: no cap): the first graph's
    size is measured (the tensors autograd saves, less the parameters it only refers to)
    and recording pauses once the next graph would not fit, so later stages are
    re-evaluated by their VJPs. ``comm``: on several ranks a lookup succeeds only where it
    succeeds on every rank (one small Allreduce), because re-evaluating ``f`` may itself
    be collective (a ghost exchange) and must then happen everywhere. A right-hand side
    that refuses the saved-tensor hooks the measurement uses (``torch.func`` transforms
    inside it, as in neural-Galerkin problems) is not recorded under a cap
    (:attr:`unmeasurable`): its VJPs re-evaluate it.
    """

    def __init__(self, comm=None, max_bytes: int | None = None):
        self.entries: list[tuple[float, torch.Tensor, torch.Tensor]] = []
        self.recording = False
        self.max_bytes = max_bytes
        self.entry_bytes: int | None = None
        self.unmeasurable = False
        self._mpi = comm.tompi4py() if comm is not None and comm.getSize() > 1 else None

    def _full(self) -> bool:
        if self.max_bytes is not None and self.unmeasurable:
            return True
        if self.max_bytes is None or self.entry_bytes is None:
            return False
        return (len(self.entries) + 1) * self.entry_bytes > self.max_bytes

    def record(self, t: float, x: torch.Tensor, rhs: Callable) -> torch.Tensor:
        """Evaluate ``rhs(t, x)`` with a graph on a private copy of ``x`` (PETSc reuses the
        stage vector's memory) and keep it, unless the cap is reached; returns the value
        (detached)."""
        if self._full():
            return rhs(t, x)
        with torch.enable_grad():
            leaf = x.detach().clone().requires_grad_(True)
            if self.entry_bytes is None and self.max_bytes is not None:
                try:
                    out, saved = _with_saved_bytes(rhs, t, leaf)
                except RuntimeError as exc:
                    if "saved tensor hooks" not in str(exc):
                        raise
                    self.unmeasurable = True
                    return rhs(t, x)
                self.entry_bytes = saved + leaf.nbytes + out.nbytes
                if self._full():
                    return out.detach()
            else:
                out = rhs(t, leaf)
        self.entries.append((t, leaf, out))
        return out.detach()

    def vjp(self, t: float, x: torch.Tensor, inputs: tuple[torch.Tensor, ...],
            v: torch.Tensor) -> tuple[torch.Tensor | None, ...] | None:
        """``v^T d f / d (x, inputs)`` through the graph recorded at stage time ``t`` and
        state ``x`` (or None: no such graph); it and every entry recorded after it leave
        the tape.

        The latest entry at time ``t`` is tried first and compared with ``x`` after its
        backward pass, which keeps its graph so that an entry that does not match stays
        usable: there the comparison costs less than as the first torch op after PETSc's
        work (small case, 160 stages: 26.3 -> 25.6 ms per gradient). On several ranks,
        where a backward pass may be collective, or if the latest entry does not match,
        :meth:`take` looks the graph up first.
        """
        entries = self.entries
        if self._mpi is None and entries and abs(entries[-1][0] - t) <= _tolerance(t):
            _, leaf, out = entries[-1]
            grads = engine_vjp(out, (leaf,) + inputs, v, keep_graph=True)
            if torch.equal(leaf, x):
                entries.pop()
                return grads
        graph = self.take(t, x)
        return None if graph is None else engine_vjp(graph[1], (graph[0],) + inputs, v, keep_graph=False)

    def take(self, t: float, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The graph recorded at stage time ``t`` and state ``x`` (or None); it and every
        entry recorded after it leave the tape."""
        entries = self.entries
        tol = _tolerance(t)
        found = None
        for k in range(len(entries) - 1, max(len(entries) - _WINDOW, 0) - 1, -1):
            tk, leaf, _ = entries[k]
            if abs(tk - t) <= tol and torch.equal(leaf, x):
                found = k
                break
        if self._mpi is not None:
            from mpi4py import MPI

            if not self._mpi.allreduce(found is not None, op=MPI.LAND):
                return None
        if found is None:
            return None
        _, leaf, out = entries[found]
        del entries[found:]
        return leaf, out

    def clear(self) -> None:
        """Drop every graph (and stop recording)."""
        self.entries.clear()
        self.recording = False


def _with_saved_bytes(rhs: Callable, t: float, leaf: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``rhs(t, leaf)`` and the bytes of the tensors its graph saves, counting each storage
    once and leaving out leaves that require grad (the parameters and ``leaf``)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not (tensor.is_leaf and tensor.requires_grad):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        # a detached alias: a saved output packed as itself would refer to its own grad_fn,
        # a cycle through autograd's C++ graph that Python's collector cannot free (it
        # leaked the measured graph, ~17 KiB per solve of a small MLP)
        return tensor.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = rhs(t, leaf)
    return out, sum(storages.values())
