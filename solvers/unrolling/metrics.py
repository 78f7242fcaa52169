"""Reconstruction quality: NMSE in dB and PSNR, over the whole signal on several ranks."""
from __future__ import annotations

import math

import torch

from pnode.comm import allreduce


def nmse_db(estimate: torch.Tensor, truth: torch.Tensor, comm=None) -> float:
    """``10 log10(sum ||x_hat - x||^2 / sum ||x||^2)`` over a batch (summed over the ranks)."""
    err = float(((estimate.detach() - truth) ** 2).sum())
    ref = float((truth ** 2).sum())
    if comm is not None:
        err, ref = allreduce(err, "sum", comm), allreduce(ref, "sum", comm)
    return 10.0 * math.log10(err / ref)


def psnr(estimate: torch.Tensor, truth: torch.Tensor, peak: float = 1.0, comm=None) -> float:
    """``10 log10(peak^2 / MSE)`` over every pixel of the batch (of every rank)."""
    err = float(((estimate.detach() - truth) ** 2).sum())
    count = truth.numel()
    if comm is not None:
        err, count = allreduce(err, "sum", comm), allreduce(count, "sum", comm)
    return 10.0 * math.log10(peak * peak * count / err)
