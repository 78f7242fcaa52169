"""K iterations of a named algorithm as a torch module with learnable per-iteration
parameters: :class:`Unrolled`.

The data term is ``0.5 ||A x - y||^2`` with ``A`` an :class:`Operator` (a torch matrix or
a PETSc Mat split over the ranks) and the regulariser enters through a prox
(:mod:`.prox`). Algorithms (:data:`ALGORITHMS`):

* ``"pgd"`` / ``"ista"``: ``x <- prox(x - tau_k A^T(A x - y), tau_k lam_k)``
* ``"fista"``: the same at the extrapolated point, with Nesterov's momentum
* ``"admm"``: ``x <- argmin 0.5||Ax - y||^2 + rho_k/2 ||x - z + u||^2`` (``cg_iterations``
  conjugate-gradient steps, unrolled), ``z <- prox(x + u, lam_k / rho_k)``, ``u <- u + x - z``
* ``"chambolle-pock"``: the primal-dual iteration on ``f(Ax) + lam g(x)`` with
  ``f = 0.5||. - y||^2``: ``p <- (p + sigma_k (A xbar - y)) / (1 + sigma_k)``,
  ``x <- prox(x - tau_k A^T p, tau_k lam_k)``, ``xbar <- 2 x_new - x``

Every per-iteration scalar is an :class:`IterationParameter`: one value for all iterations
(``tied=True``) or one per iteration, learnable or fixed.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from pnode.errors import ConfigurationError

from .operators import Operator, as_operator
from .prox import Prox, as_prox


class IterationParameter(torch.nn.Module):
    """A scalar per iteration (``tied=False``) or one shared value (``tied=True``)."""

    def __init__(self, init: float, iterations: int, tied: bool = False, learn: bool = True,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        if not math.isfinite(init):
            raise ConfigurationError(f"an iteration parameter needs a finite initial value, got {init}")
        value = torch.full((1 if tied else iterations,), float(init), dtype=dtype)
        self.tied = tied
        if learn:
            self.value = torch.nn.Parameter(value)
        else:
            self.register_buffer("value", value)

    def forward(self, k: int) -> torch.Tensor:
        return self.value[0 if self.tied else k]


def per_layer_parameters(net: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The learned parameters of ``net`` whose first dimension indexes the layers: the
    untied :class:`IterationParameter` values and the matrices ``net.layer_matrices()``
    names (every other parameter is shared by the layers)."""
    stacks = [m.value for m in net.modules()
              if isinstance(m, IterationParameter) and not m.tied and isinstance(m.value, torch.nn.Parameter)]
    return stacks + list(getattr(net, "layer_matrices", lambda: [])())


def keep_layer_gradient(net: torch.nn.Module, layer: int) -> None:
    """Zero the gradients of ``net`` except layer ``layer``'s (0-based): its row of each
    per-layer stack (:func:`per_layer_parameters`); the shared parameters belong to the
    first layer. The "new layer only" phase of the LISTA papers' layer-wise schedule."""
    stacks = {id(p) for p in per_layer_parameters(net)}
    for p in net.parameters():
        if p.grad is None:
            continue
        if id(p) in stacks:
            row = p.grad[layer].clone()
            p.grad.zero_()
            p.grad[layer] = row
        elif layer > 0:
            p.grad.zero_()


class Algorithm:
    """One iteration of an unrolled algorithm: ``start`` makes the state, ``step`` advances
    it, ``output`` reads the estimate; ``parameters`` names its scalars and their initial
    values given ``L = ||A||^2`` and the regularisation weight."""

    needs_transpose = True

    @staticmethod
    def parameters(L: float, weight: float) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def start(self, op: Operator, y: torch.Tensor, x0: torch.Tensor) -> dict:
        return {"x": x0}

    def output(self, state: dict) -> torch.Tensor:
        return state["x"]


class ProximalGradient(Algorithm):
    """ISTA / proximal gradient."""

    @staticmethod
    def parameters(L: float, weight: float) -> dict[str, float]:
        return {"step": 1.0 / L, "weight": weight}

    def step(self, op, y, state, prox, p):
        x = state["x"]
        return {"x": prox(x - p["step"] * op.adjoint(op(x) - y), p["step"] * p["weight"])}


class FISTA(ProximalGradient):
    """Proximal gradient at Nesterov's extrapolated point."""

    def start(self, op, y, x0):
        return {"x": x0, "z": x0, "t": 1.0}

    def step(self, op, y, state, prox, p):
        z, t = state["z"], state["t"]
        x = prox(z - p["step"] * op.adjoint(op(z) - y), p["step"] * p["weight"])
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        return {"x": x, "z": x + ((t - 1.0) / t_next) * (x - state["x"]), "t": t_next}


class ADMM(Algorithm):
    """ADMM on ``x = z`` with the x-update by unrolled CG."""

    def __init__(self, cg_iterations: int = 10):
        if cg_iterations < 1:
            raise ConfigurationError(f"ADMM needs cg_iterations >= 1, got {cg_iterations}")
        self.cg_iterations = cg_iterations

    @staticmethod
    def parameters(L: float, weight: float) -> dict[str, float]:
        return {"penalty": L, "weight": weight}

    def start(self, op, y, x0):
        return {"x": x0, "z": x0, "u": torch.zeros_like(x0), "Aty": op.adjoint(y)}

    def step(self, op, y, state, prox, p):
        rho = p["penalty"]
        rhs = state["Aty"] + rho * (state["z"] - state["u"])
        x = conjugate_gradient(lambda v: op.gram(v) + rho * v, rhs, state["z"] - state["u"],
                               self.cg_iterations, op.dot)
        z = prox(x + state["u"], p["weight"] / rho)
        return {"x": x, "z": z, "u": state["u"] + x - z, "Aty": state["Aty"]}

    def output(self, state):
        return state["z"]


class ChambollePock(Algorithm):
    """The primal-dual iteration with the dual prox of ``0.5||. - y||^2`` in closed form."""

    @staticmethod
    def parameters(L: float, weight: float) -> dict[str, float]:
        s = 0.99 / math.sqrt(L)
        return {"sigma": s, "tau": s, "weight": weight}

    def start(self, op, y, x0):
        return {"x": x0, "xbar": x0, "p": torch.zeros_like(y)}

    def step(self, op, y, state, prox, p):
        sigma, tau = p["sigma"], p["tau"]
        dual = (state["p"] + sigma * (op(state["xbar"]) - y)) / (1.0 + sigma)
        x = prox(state["x"] - tau * op.adjoint(dual), tau * p["weight"])
        return {"x": x, "xbar": 2.0 * x - state["x"], "p": dual}


def conjugate_gradient(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, x: torch.Tensor,
                       iterations: int, dot: Callable) -> torch.Tensor:
    """``iterations`` CG steps on ``apply(x) = b`` (symmetric positive definite), per
    signal of the batch; differentiable by unrolling (a zero residual stops nothing but
    divides by a floor)."""
    r = b - apply(x)
    d = r
    rr = dot(r, r)
    for _ in range(iterations):
        Ad = apply(d)
        alpha = rr / dot(d, Ad).clamp_min(1e-300)
        x = x + alpha * d
        r = r - alpha * Ad
        rr_next = dot(r, r)
        d = r + (rr_next / rr.clamp_min(1e-300)) * d
        rr = rr_next
    return x


ALGORITHMS: dict[str, Callable[..., Algorithm]] = {
    "pgd": ProximalGradient, "ista": ProximalGradient, "fista": FISTA, "admm": ADMM,
    "chambolle-pock": ChambollePock,
}


class Unrolled(torch.nn.Module):
    """``iterations`` steps of ``algorithm`` on ``0.5||A x - y||^2 + weight * g(x)``.

    ``A``: torch matrix, petsc4py Mat or :class:`Operator`. ``prox``: a :class:`Prox` or a
    name (``"soft"``, ``"box"``, ``"l2ball"``). The scalars of the algorithm (step, weight,
    penalty, sigma/tau) start at the classical values (``1/L`` steps with ``L = ||A||^2``
    by power iteration, unless ``lipschitz=`` is given) and are learned unless
    ``learn=False``; ``tied=True`` shares one value over the iterations. ``model(y)``
    returns the estimate after the last iteration, ``model(y, every=True)`` the list after
    each iteration.
    """

    def __init__(self, A, algorithm: str = "ista", iterations: int = 10, prox: Prox | str = "soft",
                 weight: float = 0.1, tied: bool = False, learn: bool = True,
                 lipschitz: float | None = None, cg_iterations: int = 10):
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise ConfigurationError(f"unknown algorithm {algorithm!r}; choose one of {sorted(ALGORITHMS)}")
        if iterations < 1:
            raise ConfigurationError(f"an unrolled network needs iterations >= 1, got {iterations}")
        self.op = as_operator(A)
        self.algorithm = ALGORITHMS[algorithm](cg_iterations) if algorithm == "admm" else ALGORITHMS[algorithm]()
        if self.algorithm.needs_transpose and not self.op.has_transpose:
            raise ConfigurationError(f"{algorithm} needs the transpose A^T of the operator, which it does not have")
        self.iterations = iterations
        self.prox = as_prox(prox)
        L = self.op.lipschitz() if lipschitz is None else float(lipschitz)
        self.scalars = torch.nn.ModuleDict({
            name: IterationParameter(init, iterations, tied, learn, self.op.dtype)
            for name, init in self.algorithm.parameters(L, weight).items()})

    @property
    def layers(self) -> int:
        return self.iterations

    def forward(self, y: torch.Tensor, x0: torch.Tensor | None = None, every: bool = False,
                layers: int | None = None):
        """The estimate after ``layers`` iterations (default all; fewer for layer-wise
        training), or the list after each with ``every=True``."""
        self.op.check_measurements(y)
        layers = self.iterations if layers is None else layers
        if not 1 <= layers <= self.iterations:
            raise ConfigurationError(f"layers must lie in [1, {self.iterations}], got {layers}")
        lead = y.shape[:-1]
        if x0 is None:
            x0 = y.new_zeros(*lead, self.op.n_local)
        else:
            self.op.check_signal(x0, "the initial guess x0")
        state = self.algorithm.start(self.op, y, x0)
        outputs = []
        for k in range(layers):
            p = {name: param(k) for name, param in self.scalars.items()}
            state = self.algorithm.step(self.op, y, state, self.prox, p)
            if every:
                outputs.append(self.algorithm.output(state))
        return outputs if every else self.algorithm.output(state)
