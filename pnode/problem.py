"""What is solved: an explicit ODE ``y' = f(t, y)`` over a torch state of any shape."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .errors import ConfigurationError


class ExplicitProblem:
    """``y' = func(t, y)`` with ``y`` of ``shape``; ``sign=-1`` integrates a decreasing grid.

    PETSc steps forward in its own time ``s``; for a decreasing user grid ``s = -t`` and
    the right-hand side becomes ``-func(-s, y)``, which keeps the discrete adjoint exact.
    """

    def __init__(self, func: Callable, shape: Sequence[int], dtype: torch.dtype,
                 device: torch.device, params: Sequence[torch.Tensor], sign: float = 1.0):
        self.func = func
        self.shape = tuple(shape)
        self.numel = int(torch.Size(self.shape).numel())
        self.dtype, self.device = dtype, device
        self.params = tuple(params)
        self.sign = float(sign)
        self._t = torch.zeros((), dtype=dtype, device=device)

    def user_time(self, s: float) -> torch.Tensor:
        """The user's time tensor for PETSc time ``s`` (one reused 0-d buffer)."""
        self._t.fill_(self.sign * s)
        return self._t

    def rhs(self, s: float, y: torch.Tensor) -> torch.Tensor:
        """Right-hand side in PETSc time; checks what ``func`` returns."""
        out = self.func(self.user_time(s), y)
        if not isinstance(out, torch.Tensor) or out.shape != y.shape or out.dtype != y.dtype \
                or out.device != y.device:
            raise ConfigurationError(_describe_bad_output(out, y))
        return out if self.sign > 0 else -out


def _describe_bad_output(out, y: torch.Tensor) -> str:
    if not isinstance(out, torch.Tensor):
        return f"func must return a torch.Tensor, got {type(out).__name__}"
    return (f"func returned shape {tuple(out.shape)}, dtype {out.dtype}, device {out.device}; "
            f"the state has shape {tuple(y.shape)}, dtype {y.dtype}, device {y.device}")
