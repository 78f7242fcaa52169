"""Time marching: one network per time slab, each slab's initial condition built in from the
slabs before it.

On slabs ``[t_k, t_{k+1}]`` of ``times`` the field is

    u(x, t) = u_k(x) + (t - t_k) N_k(x, t),    u_k(x) = u_0(x) + sum_{j<k} (t_{j+1} - t_j) N_j(x, t_{j+1})

so it equals the initial condition ``u_0`` at ``t = 0`` and is continuous in time for any
networks ``N_k``. Slab ``k`` is a :class:`pnode.pinn.CollocationProblem` on
:meth:`TimeMarching.domain` with :meth:`TimeMarching.transform` as its output transform;
once trained, :meth:`TimeMarching.finish` freezes its network and the next slab starts
from it. Each slab is a small least-squares problem (a few hundred parameters), so
Gauss-Newton converges on it in tens of iterations, and the slabs are solved in the order
of time, as causality asks: training on a later time never starts before the earlier
ones are fitted.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.func import vmap

from pnode.errors import ConfigurationError

from .domains import Box, SpaceTime


class TimeMarching:
    """The field of networks over the slabs of ``times`` from ``initial`` (a function of one
    spatial point ``(d - 1,)``, returning a scalar); points are ``(x, t)``, time last."""

    def __init__(self, initial: Callable[[torch.Tensor], torch.Tensor], times: Sequence[float]):
        times = [float(t) for t in times]
        if len(times) < 2 or any(b <= a for a, b in zip(times, times[1:])):
            raise ConfigurationError(f"time marching needs increasing slab times, got {times}")
        if not callable(initial):
            raise ConfigurationError("the initial condition must be callable on one spatial point")
        self.initial, self.times = initial, times
        self.models: list[torch.nn.Module] = []

    @property
    def slabs(self) -> int:
        return len(self.times) - 1

    @property
    def done(self) -> int:
        """The number of finished (frozen) slabs: the next slab to train."""
        return len(self.models)

    def _check_next(self) -> int:
        if self.done >= self.slabs:
            raise ConfigurationError(f"all {self.slabs} slabs are finished")
        return self.done

    def domain(self, space: Box) -> SpaceTime:
        """``space x [t_k, t_{k+1}]`` of the next slab."""
        k = self._check_next()
        return SpaceTime(space, self.times[k], self.times[k + 1])

    def start(self, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """``u_k``: the field at ``t_k`` as a function of one spatial point (``k <= done``)."""
        if not 0 <= k <= self.done:
            raise ConfigurationError(f"slab {k} does not start from finished slabs ({self.done} done)")
        models, times = self.models[:k], self.times

        def u(xs: torch.Tensor) -> torch.Tensor:
            value = self.initial(xs)
            for j, model in enumerate(models):
                end = torch.cat([xs, xs.new_full((1,), times[j + 1])])
                value = value + (times[j + 1] - times[j]) * model(end).reshape(())
            return value
        return u

    def transform(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The output transform ``(x, out) -> u_k(x) + (t - t_k) out`` of the next slab."""
        k = self._check_next()
        start, t0 = self.start(k), self.times[k]
        return lambda x, out: start(x[:-1]) + (x[-1] - t0) * out

    def finish(self, model: torch.nn.Module) -> None:
        """Freeze ``model`` as the next slab's network."""
        self._check_next()
        for p in model.parameters():
            p.requires_grad_(False)
        self.models.append(model)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """The field at ``points`` ``(N, d)`` (no graph) with times in the finished slabs."""
        t = points[:, -1].contiguous()
        if self.done == 0 or bool((t < self.times[0]).any() or (t > self.times[self.done]).any()):
            raise ConfigurationError(f"points must have times in the finished slabs "
                                     f"[{self.times[0]}, {self.times[self.done]}]")
        bounds = torch.tensor(self.times[1:self.done], dtype=t.dtype, device=t.device)
        slab = torch.bucketize(t, bounds)  # t on an interior boundary: the earlier slab (continuous)
        out = torch.empty(points.shape[0], dtype=points.dtype, device=points.device)
        with torch.no_grad():
            for k in range(self.done):
                rows = slab == k
                if bool(rows.any()):
                    start, t0, model = self.start(k), self.times[k], self.models[k]
                    out[rows] = vmap(lambda x: start(x[:-1]) + (x[-1] - t0) * model(x).reshape(()))(points[rows])
        return out

    def state_dict(self) -> dict[str, Any]:
        """The slab times and the finished networks' weights."""
        return {"times": list(self.times), "models": [m.state_dict() for m in self.models]}

    def load_state_dict(self, state: dict[str, Any], network: Callable[[int], torch.nn.Module]) -> None:
        """Restore the finished slabs; ``network(k)`` builds slab ``k``'s network."""
        if [float(t) for t in state["times"]] != self.times:
            raise ConfigurationError(f"this marching state has the slab times {state['times']}, not {self.times}")
        self.models = []
        for k, weights in enumerate(state["models"]):
            model = network(k)
            model.load_state_dict(weights)
            self.finish(model)

