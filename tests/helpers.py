"""Shared test helpers: relative errors and central finite differences."""
from __future__ import annotations

from typing import Callable, Iterable

import torch


def rel_error(got, ref) -> float:
    """The worst ``|got - ref| / |ref|`` (norms) over pairs of tensors, or of one pair of
    tensors or numbers."""
    if not isinstance(got, (list, tuple)):
        got, ref = [got], [ref]
    pairs = [(torch.as_tensor(a).detach(), torch.as_tensor(b).detach()) for a, b in zip(got, ref)]
    return max(float((a - b).norm() / b.norm().clamp_min(1e-300)) for a, b in pairs)


def central_difference(loss: Callable[[], torch.Tensor | float], tensor: torch.Tensor, index,
                       eps: float) -> float:
    """``(loss(x + eps e_i) - loss(x - eps e_i)) / (2 eps)`` for entry ``index`` of
    ``tensor``, changed in place (under no_grad) and restored."""
    with torch.no_grad():
        tensor[index] += eps
        up = float(loss())
        tensor[index] -= 2 * eps
        down = float(loss())
        tensor[index] += eps
    return (up - down) / (2 * eps)


def assert_matches_central_differences(loss: Callable[[], torch.Tensor | float], tensor: torch.Tensor,
                                       grad: torch.Tensor, indices: Iterable, eps: float,
                                       rtol: float) -> None:
    """Each ``grad[index]`` equals the central difference of ``loss`` to ``rtol * max(1, |fd|)``."""
    for index in indices:
        fd = central_difference(loss, tensor, index, eps)
        assert abs(fd - float(grad[index])) <= rtol * max(1.0, abs(fd)), (index, fd, float(grad[index]))


def documented_defaults(path, heading: str) -> dict[str, str]:
    """``name -> default`` from the rows ``| `name` | default | ...`` of the table in the
    section of a markdown file that starts with ``heading`` (up to the next ``## ``)."""
    import re
    from pathlib import Path

    text = Path(path).read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| ([^ |]+) \|", section, re.M))
