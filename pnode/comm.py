"""Communicators: conversion, ownership, collective decisions, reductions, aborting.

Every pnode object takes ``comm=`` as an mpi4py or petsc4py communicator. This module
turns either into the other, splits work over ranks (:func:`shard`), decides checks
collectively (:func:`collective_checks`: one small allgather, so that a problem found on
one rank raises on every rank instead of leaving the others in the next collective),
reduces torch tensors over ranks (staging through host memory for CUDA tensors: with
:mod:`pnode.vec`, the only place that knows where memory lives) and ends the job on a
fault no rank can recover from (:func:`abort_on_error`).
"""
from __future__ import annotations

import hashlib
import sys
import time
import traceback
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

from .errors import ConfigurationError, PnodeError
from .startup import PETSc


def as_petsc_comm(comm):
    """A petsc4py Comm for None (COMM_SELF), a petsc4py Comm or an mpi4py communicator."""
    P = PETSc()
    if comm is None:
        return P.COMM_SELF
    if isinstance(comm, P.Comm):
        return comm
    try:
        return P.Comm(comm)
    except Exception as exc:
        raise ConfigurationError(f"comm must be an mpi4py or petsc4py communicator, got {comm!r}") from exc


def as_mpi_comm(comm):
    """The mpi4py communicator for None (COMM_SELF), a petsc4py Comm or an mpi4py comm."""
    from mpi4py import MPI

    if comm is None:
        return MPI.COMM_SELF
    if isinstance(comm, MPI.Comm):
        return comm
    return as_petsc_comm(comm).tompi4py()


def world(comm=None):
    """``comm`` as mpi4py, COMM_WORLD when None (the default of distributed objects)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD if comm is None else as_mpi_comm(comm)


def is_root(comm=None) -> bool:
    """Whether this process is rank 0 of ``comm`` (default COMM_WORLD): the one that prints and saves."""
    return world(comm).Get_rank() == 0


def shard(n: int, comm=None) -> slice:
    """The contiguous slice of ``range(n)`` this rank owns on ``comm`` (default COMM_WORLD).

    Blocks are balanced as PETSc splits ownership: the first ``n % size`` ranks hold one
    item more. Every item belongs to exactly one rank.
    """
    if n < 0:
        raise ConfigurationError(f"cannot shard a batch of {n} items")
    c = world(comm)
    counts = shard_counts(n, c.Get_size())
    start = sum(counts[:c.Get_rank()])
    return slice(start, start + counts[c.Get_rank()])


def shard_counts(n: int, size: int) -> list[int]:
    """How many of ``n`` items each of ``size`` ranks owns (PETSc's balanced split)."""
    base, extra = divmod(int(n), int(size))
    return [base + (r < extra) for r in range(size)]


def abort_on_error(comm, exc: BaseException) -> None:
    """Print ``exc`` (with this rank's number and traceback) and abort every rank of ``comm``.

    A failure inside a callback of a TS on several ranks would leave the other ranks
    waiting in the next collective; aborting ends the whole job with the message.
    """
    c = as_mpi_comm(comm)
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    _report_and_abort(c, f"pnode: rank {c.Get_rank()} of {c.Get_size()} failed, aborting all ranks:\n"
                      + "".join(lines))


def _report_and_abort(c, text: str) -> None:
    """Write ``text`` to stderr in one piece, give the MPI launcher a moment to forward it
    (an abort can otherwise cut the message after its first line), and abort ``c``."""
    sys.stderr.write(text)
    sys.stderr.flush()
    time.sleep(0.2)
    c.Abort(1)


def abort_on_uncaught() -> None:
    """On several ranks of COMM_WORLD, make an uncaught exception abort every rank (with its
    traceback) instead of leaving the others waiting for the failed one (as
    ``python -m mpi4py`` does). Installed by :func:`pnode.init`; a no-op on one rank."""
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_size() == 1 or getattr(sys.excepthook, "_pnode", False):
        return
    previous = sys.excepthook

    def hook(kind, exc, tb):
        if previous is not sys.__excepthook__:
            previous(kind, exc, tb)
            text = ""
        else:
            text = "".join(traceback.format_exception(kind, exc, tb))
        _report_and_abort(MPI.COMM_WORLD, text + f"pnode: uncaught {kind.__name__} on rank "
                          f"{MPI.COMM_WORLD.Get_rank()}, aborting all ranks\n")

    hook._pnode = True
    sys.excepthook = hook


def digest(*parts) -> str:
    """A short fingerprint of ``parts`` (arrays by their bytes), for comparing across ranks."""
    h = hashlib.sha1()
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else repr(p).encode())
    return h.hexdigest()[:16]


class Checks:
    """What one rank contributes to a collective decision (see :func:`collective_checks`)."""

    def __init__(self):
        self.same: dict[str, str] = {}
        self.flags: dict[str, bool] = {}

    def agree(self, name: str, *value) -> None:
        """Require ``value`` to be equal on every rank (compared by :func:`digest`)."""
        self.same[name] = digest(*value)

    def all_or_none(self, name: str, flag: bool) -> None:
        """Require ``flag`` to be the same on every rank (e.g. "rebuild the solver")."""
        self.flags[name] = bool(flag)


@contextmanager
def collective_checks(comm) -> Iterator[Checks]:
    """Run argument checks on every rank of ``comm`` and decide together.

    A :class:`PnodeError` raised inside the block on any rank, or a value registered with
    :meth:`Checks.agree` / :meth:`Checks.all_or_none` that differs between ranks, raises on
    every rank: the failing rank its own error, the others a :class:`ConfigurationError`
    naming the rank and its message. One allgather of a few bytes; nothing on one rank.
    """
    checks = Checks()
    mpi = as_mpi_comm(comm) if comm is not None else None
    if mpi is None or mpi.Get_size() == 1:
        yield checks
        return
    error: PnodeError | None = None
    try:
        yield checks
    except PnodeError as exc:
        error = exc
    everyone = mpi.allgather((None if error is None else str(error), checks.same, checks.flags))
    problems = [f"rank {r}: {msg}" for r, (msg, _, _) in enumerate(everyone) if msg]
    for name in checks.same:
        values = [same.get(name) for _, same, _ in everyone]
        if len(set(values)) > 1:
            problems.append(f"{name} differ between the ranks (every rank must pass the same)")
    for name in checks.flags:
        values = [flags.get(name) for _, _, flags in everyone]
        if len(set(values)) > 1:
            on = [r for r, v in enumerate(values) if v]
            problems.append(f"{name} on rank(s) {on} only (it must happen on every rank or none)")
    if error is not None:
        raise error
    if problems:
        raise ConfigurationError("a collective check failed: " + "; ".join(problems))


def allreduce(value, op: str, comm):
    """``value`` (a Python number or bool) reduced over ``comm`` with ``op`` in
    ``"sum" | "max" | "min" | "or" | "and"``; the value itself on one rank."""
    mpi = as_mpi_comm(comm)
    if mpi.Get_size() == 1:
        return value
    from mpi4py import MPI

    ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "or": MPI.LOR, "and": MPI.LAND}
    return mpi.allreduce(value, op=ops[op])


def allreduce_sum_(x: torch.Tensor, comm) -> torch.Tensor:
    """Sum ``x`` over the ranks of ``comm`` in place (host staging for CUDA tensors)."""
    from mpi4py import MPI

    mpi = as_mpi_comm(comm)
    if mpi.Get_size() == 1:
        return x
    if x.device.type == "cpu" and x.is_contiguous():
        mpi.Allreduce(MPI.IN_PLACE, x.detach().numpy(), op=MPI.SUM)
        return x
    host = x.detach().cpu().contiguous()
    mpi.Allreduce(MPI.IN_PLACE, host.numpy(), op=MPI.SUM)
    x.copy_(host)
    return x


class _SumOverRanks(torch.autograd.Function):
    """``x`` summed over the ranks; the backward sums the incoming gradients the same way
    (every rank's loss depends on the sum, and the total loss is the ranks' sum)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, comm) -> torch.Tensor:
        ctx.comm = comm
        return allreduce_sum_(x.detach().clone().contiguous(), comm)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _SumOverRanks.apply(grad, ctx.comm), None


def sum_over_ranks(x: torch.Tensor, comm) -> torch.Tensor:
    """``x`` summed over the ranks of ``comm``, differentiable (any number of times): the
    gradient of a total loss that is the sum of the ranks' losses. ``x`` itself on one rank."""
    if as_mpi_comm(comm).Get_size() == 1:
        return x
    return _SumOverRanks.apply(x, comm)


def reduce_scatter_sum(full: torch.Tensor, counts: Sequence[int], out: torch.Tensor, comm) -> None:
    """``out`` = this rank's block (``counts[rank]`` entries) of the sum over ranks of the
    flat ``full`` (one MPI_Reduce_scatter; host staging for CUDA tensors)."""
    mpi = as_mpi_comm(comm)
    if mpi.Get_size() == 1:
        out.copy_(full.reshape(-1))
        return
    send = full.detach().reshape(-1).cpu().contiguous()
    recv = torch.empty(int(counts[mpi.Get_rank()]), dtype=full.dtype)
    mpi.Reduce_scatter(send.numpy(), recv.numpy(), recvcounts=list(map(int, counts)))
    out.copy_(recv)


def allgather_blocks(local: torch.Tensor, counts: Sequence[int], out: torch.Tensor, comm) -> None:
    """``out`` (flat) = every rank's ``local`` block in rank order (one MPI_Allgatherv)."""
    mpi = as_mpi_comm(comm)
    if mpi.Get_size() == 1:
        out.reshape(-1).copy_(local.reshape(-1))
        return
    send = local.detach().reshape(-1).cpu().contiguous()
    recv = torch.empty(int(sum(counts)), dtype=local.dtype)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
    mpi.Allgatherv(send.numpy(), [recv.numpy(), (list(map(int, counts)), offsets)])
    out.reshape(-1).copy_(recv)
