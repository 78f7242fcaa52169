"""Neural-Galerkin time marching: the parameters of a network follow the Dirac-Frenkel
condition, integrated by PETSc TS like any pnode right-hand side.

The solution of ``u_t = f(t, x, u, u_x, u_xx)`` is sought as ``u(x, t) = U(x; theta(t))``
with ``theta`` a flat parameter vector, and ``theta`` solves the ODE

    M(theta) theta' = F(t, theta),  M = mean_x grad_theta U grad_theta U^T,
                                    F = mean_x grad_theta U f(t, x, U, U_x, U_xx)

over fixed sample points ``x``. :class:`GalerkinProblem` is that right-hand side as a
torch module, ``theta' = solve(M, F)`` (Tikhonov-regularised or pseudo-inverse), so
``pnode.odeint`` / ``pnode.odeint_adjoint`` / ``NeuralODE`` march ``theta`` with any
explicit TS method and the discrete adjoint differentiates a loss on ``U(., theta(T))``
with respect to ``theta(0)`` and the parameters of ``f`` (PDE coefficients).
:meth:`GalerkinProblem.implicit_form` gives the same equations as
``G = M(theta) theta' - F(t, theta) = 0`` for PETSc's implicit methods: a force module
and a state-dependent mass (:class:`GalerkinMass`).

Per-sample Jacobians ``grad_theta U`` and the spatial derivatives come from
``torch.func`` (``vmap`` of ``jacrev``/``jacfwd``) and stay differentiable, so the
adjoint's vector-Jacobian products differentiate through them.

Ranks: the sample points are split over ``comm``; each rank sums its samples' shares
of ``M`` and ``F`` and one Allreduce per evaluation adds them (in the backward pass one
Allreduce adds the ranks' shares of the gradient). ``theta`` is replicated and every
rank runs the same TS on its own process (the reduced ``M`` and ``F`` are equal on
every rank, so the steps are too).
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Mapping

import torch
from torch.func import functional_call, jacfwd, jacrev, vmap

from pnode.comm import allreduce_sum_, as_mpi_comm, shard
from pnode.errors import ConfigurationError, PnodeError
from pnode.params import ParamBuffer

SOLVES = ("tikhonov", "pinv")
FIT_SOLVERS = ("lm", "brgn")


def _local_points(points: torch.Tensor, mpi) -> tuple[int, torch.Tensor]:
    """The number of sample points and this rank's share of them, ``(n, d)``, detached."""
    points = points.reshape(-1, 1) if points.ndim == 1 else points
    if points.ndim != 2 or points.shape[0] == 0:
        raise ConfigurationError(f"points must be (N, d) with N > 0, got shape {tuple(points.shape)}")
    return int(points.shape[0]), points[shard(int(points.shape[0]), mpi)].detach()


class PeriodicFeatures(torch.nn.Module):
    """``x -> [cos(2 pi k x_j / L), sin(2 pi k x_j / L)]`` for ``k = 1..modes``: a network
    built on these features is exactly periodic with period ``L`` in every coordinate."""

    def __init__(self, period: float, modes: int = 1):
        super().__init__()
        if not period > 0 or modes < 1:
            raise ConfigurationError(f"need period > 0 and modes >= 1, got {period!r}, {modes!r}")
        self.period, self.modes = float(period), int(modes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = torch.arange(1, self.modes + 1, dtype=x.dtype, device=x.device)
        phase = (2 * math.pi / self.period) * x.unsqueeze(-1) * k
        return torch.cat([phase.cos(), phase.sin()], dim=-1).flatten(-2)


class _SumOverRanks(torch.autograd.Function):
    """Forward: the sum over the ranks of this rank's tensor. Backward: the incoming
    gradient as it is (the gradient of a replicated loss with respect to one rank's
    share), through :class:`_Replicated`, which completes the sum over ranks on the way
    back. The two are each other's backward, so the backward pass is differentiable again
    (the matrix-free Newton Jacobian of the implicit form differentiates it)."""

    @staticmethod
    def forward(ctx, local, comm):
        ctx.comm = comm
        try:
            return allreduce_sum_(local.detach().clone(), comm)
        except RuntimeError as exc:
            if "atching rule" not in str(exc) and "vmap" not in str(exc):
                raise
            raise ConfigurationError(
                "a GalerkinProblem on several ranks cannot use batched VJPs (the dense Newton "
                "Jacobian, jacobian='dense' or the 'auto' choice for a small state): they cannot "
                "carry its Allreduce; pass jacobian='matrix-free' to implicit methods") from None

    @staticmethod
    def backward(ctx, grad):
        return _Replicated.apply(ctx.comm, grad)[0], None


class _Replicated(torch.autograd.Function):
    """Forward: the tensors as they are (replicated on every rank). Backward: each
    rank's share of their gradients summed over the ranks (one Allreduce, through
    :class:`_SumOverRanks`, so differentiable again)."""

    @staticmethod
    def forward(ctx, comm, *tensors):
        ctx.comm = comm
        ctx.shapes = [(t.shape, t.dtype, t.device) for t in tensors]
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        parts = [torch.zeros(s, dtype=d, device=v) if g is None else g.reshape(s)
                 for g, (s, d, v) in zip(grads, ctx.shapes)]
        flat = _SumOverRanks.apply(torch.cat([p.reshape(-1) for p in parts]), ctx.comm)
        out, off = [], 0
        for p in parts:
            out.append(flat[off:off + p.numel()].view_as(p))
            off += p.numel()
        return (None, *out)


class GalerkinProblem(torch.nn.Module):
    """``theta' = solve(M(theta), F(t, theta))``: the neural-Galerkin right-hand side.

    ``net`` maps points ``(n, d)`` to values ``(n, 1)`` or ``(n,)``; its parameters give
    the layout of ``theta`` (:meth:`flat`) and are never changed by marching (``theta``
    is the state; only :meth:`fit` writes them). ``rhs(t, x, u, du, d2u)`` is the PDE's
    right-hand side on a batch of points: ``x`` ``(n, d)``, ``u`` ``(n,)``, ``du`` and
    ``d2u`` ``(n, d)`` (first and unmixed second derivatives; ``derivatives`` says how
    many ``rhs`` needs: 0, 1 or 2, the others are None; with ``derivatives=3`` it is
    called as ``rhs(t, x, u, du, d2u, d3u)`` with the unmixed third derivatives ``d3u``
    ``(n, d)`` too, for dispersive terms such as KdV's ``u_xxx``). A ``rhs`` that is an
    ``nn.Module`` is registered: its parameters (PDE coefficients) get gradients from
    ``odeint_adjoint``. ``points`` ``(N, d)`` (or ``(N,)`` in 1-D) are the fixed sample
    points, split over ``comm``'s ranks (default: one process); :meth:`with_points` gives
    the same problem on other points (resampling between solves).

    The solve: ``solve="tikhonov"`` takes ``(M + eps I) theta' = F`` with
    ``eps = regularization * trace(M) / P`` (``P`` parameters; a relative shift, so the
    scale of ``U`` does not matter); ``solve="pinv"`` takes the pseudo-inverse of ``M``
    with eigenvalues below ``cutoff * lambda_max`` discarded (its derivative treats the
    kept rank as fixed). With ``regularization=0`` a numerically singular ``M``
    (``lambda_min <= P * eps_machine * lambda_max``) raises :class:`ConfigurationError`.
    """

    def __init__(self, net: torch.nn.Module, rhs: Callable, points: torch.Tensor, *,
                 solve: str = "tikhonov", regularization: float = 0.0, cutoff: float = 1e-12,
                 derivatives: int = 2, comm=None):
        super().__init__()
        if not isinstance(net, torch.nn.Module):
            raise ConfigurationError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if not callable(rhs):
            raise ConfigurationError(f"rhs must be callable as rhs(t, x, u, du, d2u), got {type(rhs).__name__}")
        if solve not in SOLVES:
            raise ConfigurationError(f"solve must be one of {SOLVES}, got {solve!r}")
        if not (regularization >= 0 and math.isfinite(regularization)) or not 0 < cutoff < 1:
            raise ConfigurationError(
                f"need regularization >= 0 and 0 < cutoff < 1, got {regularization!r}, {cutoff!r}")
        if derivatives not in (0, 1, 2, 3):
            raise ConfigurationError(f"derivatives must be 0, 1, 2 or 3, got {derivatives!r}")
        self._net = (net,)  # a template for functional calls, not a submodule (no adjoint parameters)
        named = [(n, p) for n, p in net.named_parameters()]
        self._names = [n for n, _ in named]
        self._layout = ParamBuffer([p for _, p in named])
        self.rhs = rhs
        self.solve, self.regularization, self.cutoff = solve, float(regularization), float(cutoff)
        self.derivatives = derivatives
        self.mpi = as_mpi_comm(comm)
        self.total, self.points = _local_points(points, self.mpi)
        self.evaluations = 0
        self._kept = None  # the last (M + eps I, F) of the implicit form, see _evaluated

    # -- the layout of theta ------------------------------------------------------------

    @property
    def net(self) -> torch.nn.Module:
        return self._net[0]

    @property
    def numel(self) -> int:
        """``P``, the number of entries of ``theta``."""
        return self._layout.numel

    def flat(self) -> torch.Tensor:
        """The network's current parameters as one flat ``theta`` (a detached copy)."""
        p0 = self._layout.params[0]
        return self._layout.pack_values(torch.empty(self.numel, dtype=p0.dtype, device=p0.device))

    def _params(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self._names, self._layout.unpack(theta)))

    def solution(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``U(x; theta)`` at points ``x`` ``(n, d)`` (or ``(n,)``): values ``(n,)``,
        differentiable in ``theta``."""
        x = x.reshape(-1, 1) if x.ndim == 1 else x
        return functional_call(self.net, self._params(theta), (x,)).reshape(x.shape[0])

    def with_points(self, points: torch.Tensor) -> "GalerkinProblem":
        """The same problem on other sample points ``(N, d)`` (every rank passes the same
        set; each keeps its share): a shallow copy sharing the network, ``rhs`` (its
        coefficients) and the settings, with its own points and evaluation count. Each
        copy is its own discrete problem, so an ``odeint_adjoint`` solve of one stays
        exact for its points after another copy marches on (resampling over time)."""
        other = copy.copy(self)
        other.total, other.points = _local_points(points, self.mpi)
        other.evaluations = 0
        return other

    # -- M and F ------------------------------------------------------------------------

    def _fields(self, theta: torch.Tensor):
        """This rank's per-sample ``grad_theta U`` ``(n, P)``, ``U``, ``U_x``, ``U_xx`` (and
        ``U_xxx`` with ``derivatives=3``)."""
        def value(xi, th):
            return functional_call(self.net, self._params(th), (xi.unsqueeze(0),)).reshape(())

        x = self.points
        jac = vmap(jacrev(value, argnums=1), in_dims=(0, None))(x, theta)
        u = self.solution(theta, x)
        du = d2u = None
        if self.derivatives >= 1:
            du = vmap(jacrev(value, argnums=0), in_dims=(0, None))(x, theta)
        if self.derivatives >= 2:
            d2u = vmap(jacfwd(jacrev(value, argnums=0), argnums=0), in_dims=(0, None))(x, theta)
            d2u = d2u.diagonal(dim1=-2, dim2=-1)
        if self.derivatives == 3:
            third = jacfwd(jacfwd(jacrev(value, argnums=0), argnums=0), argnums=0)
            return jac, u, du, d2u, torch.einsum("niii->ni", vmap(third, in_dims=(0, None))(x, theta))
        return jac, u, du, d2u

    def _coefficients(self) -> list[tuple[str, torch.Tensor]]:
        if not isinstance(self.rhs, torch.nn.Module):
            return []
        return [(n, p) for n, p in self.rhs.named_parameters() if p.requires_grad]

    def mass_and_force(self, t: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``M(theta)`` ``(P, P)`` and ``F(t, theta)`` ``(P,)``, means over all ranks'
        samples (one Allreduce), differentiable in ``theta`` and in ``rhs``'s parameters."""
        coeffs = self._coefficients()
        several = self.mpi.Get_size() > 1
        if several:
            theta, *values = _Replicated.apply(self.mpi, theta, *(p for _, p in coeffs))
            coeffs = [(n, v) for (n, _), v in zip(coeffs, values)]
        sums = self._collective_sums(t, theta, coeffs) if several else self._local_sums(t, theta, coeffs)
        sums = sums / self.total
        p = self.numel
        return sums[:p * p].view(p, p), sums[p * p:]

    def _local_sums(self, t: torch.Tensor, theta: torch.Tensor, coeffs) -> torch.Tensor:
        """This rank's ``[sum J^T J, sum J^T f]`` over its own samples, flattened."""
        jac, u, *spatial = self._fields(theta)
        if coeffs:
            f = functional_call(self.rhs, dict(coeffs), (t, self.points, u, *spatial))
        else:
            f = self.rhs(t, self.points, u, *spatial)
        if not isinstance(f, torch.Tensor) or f.numel() != u.numel():
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ConfigurationError(f"rhs must return one value per point ({u.numel()}), got {shape}")
        return torch.cat([(jac.T @ jac).reshape(-1), jac.T @ f.reshape(-1)])

    def _collective_sums(self, t: torch.Tensor, theta: torch.Tensor, coeffs) -> torch.Tensor:
        """The local sums added over the ranks in one Allreduce that also counts the ranks
        whose evaluation raised: such a rank raises its own exception, the others a
        :class:`PnodeError`, so no rank is left waiting for a failed one."""
        failure = None
        try:
            local = self._local_sums(t, theta, coeffs)
        except BaseException as exc:  # noqa: B902 - re-raised below, after the collective
            failure, local = exc, torch.zeros(self.numel * (self.numel + 1), dtype=theta.dtype)
        flag = torch.ones(1, dtype=local.dtype) if failure is not None else torch.zeros(1, dtype=local.dtype)
        sums = _SumOverRanks.apply(torch.cat([local, flag]), self.mpi)
        if failure is not None:
            raise failure
        if float(sums[-1].detach()) > 0:
            raise PnodeError(f"{int(sums[-1])} other rank(s) failed while evaluating M and F (their errors "
                             "are raised there)")
        return sums[:-1]

    def forward(self, t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``theta'`` at ``(t, theta)``."""
        self.evaluations += 1
        mass, force = self.mass_and_force(t, theta)
        return self.velocity(mass, force)

    def velocity(self, mass: torch.Tensor, force: torch.Tensor) -> torch.Tensor:
        """The regularised least-squares solution of ``mass @ v = force``."""
        if self.solve == "pinv":
            return torch.linalg.pinv(mass, rtol=self.cutoff, hermitian=True) @ force
        return torch.linalg.solve(self.regularised(mass), force)

    def regularised(self, mass: torch.Tensor) -> torch.Tensor:
        """``M + eps I`` with ``eps = regularization * trace(M) / P`` (differentiable); with
        ``regularization=0``, ``M`` itself after the singularity check."""
        if self.regularization == 0:
            self._check_regular(mass)
            return mass
        shift = self.regularization * torch.diagonal(mass).sum() / self.numel
        return mass + shift * torch.eye(self.numel, dtype=mass.dtype, device=mass.device)

    def _check_regular(self, mass: torch.Tensor) -> None:
        ev = torch.linalg.eigvalsh(mass.detach())
        top = float(ev[-1])
        if not float(ev[0]) > self.numel * torch.finfo(mass.dtype).eps * top:
            rank = int((ev > self.numel * torch.finfo(mass.dtype).eps * top).sum())
            raise ConfigurationError(
                f"the neural-Galerkin mass matrix M(theta) is singular (numerical rank {rank} of "
                f"{self.numel}; eigenvalues from {float(ev[0]):.3g} to {top:.3g}) and no "
                "regularisation was given: pass regularization= (Tikhonov) or solve='pinv'")

    # -- the implicit form ----------------------------------------------------------------

    def implicit_form(self) -> tuple["GalerkinForce", "GalerkinMass"]:
        """``(force, mass)`` for ``G = M(theta) theta' - F(t, theta) = 0`` by PETSc's
        implicit methods: ``pnode.odeint_adjoint(force, theta0, t, method="beuler",
        mass=mass)``. The mass is the Tikhonov-regularised ``M + eps I`` of the explicit
        solve (:meth:`regularised`), so both forms march the same ODE; ``solve="pinv"``
        has no implicit counterpart. One evaluation of ``M`` and ``F`` serves the residual's
        force and mass product at the same ``(t, theta)`` (one Allreduce on several ranks)."""
        if self.solve != "tikhonov":
            raise ConfigurationError(
                "the implicit form G = M(theta) theta' - F needs solve='tikhonov' (its mass is "
                f"M + eps I, or M with regularization=0); got solve={self.solve!r}")
        return GalerkinForce(self), GalerkinMass(self)

    def _evaluated(self, t: torch.Tensor | float, theta: torch.Tensor, need_force: bool):
        """``(M + eps I, F)`` at ``(t, theta)``, reused while ``theta`` is the same tensor
        with the same values (and the coefficients and ``t`` are unchanged): the implicit
        residual asks for ``F`` and then for ``M theta'`` at one point."""
        coeffs = tuple(p.detach().clone() for _, p in self._coefficients())
        key = (theta, torch.is_grad_enabled())
        kept = self._kept
        if (kept is not None and kept[0][0] is theta and kept[0][1] == key[1]
                and torch.equal(kept[1], theta.detach()) and len(kept[2]) == len(coeffs)
                and all(torch.equal(a, b) for a, b in zip(kept[2], coeffs))
                and (not need_force or kept[3] == float(t))):
            return kept[4], kept[5]
        t = torch.as_tensor(t, dtype=theta.dtype, device=theta.device)
        mass, force = self.mass_and_force(t, theta)
        mass = self.regularised(mass)
        self._kept = (key, theta.detach().clone(), coeffs, float(t), mass, force)
        return mass, force

    # -- the initial condition ----------------------------------------------------------

    def fit(self, u0: Callable[[torch.Tensor], torch.Tensor], *, max_it: int = 100, solver: str = "lm",
            options: Mapping | None = None, options_prefix: str = "galerkin_fit_", progress: bool = False):
        """Fit the network to ``u0`` at the sample points; returns ``(theta0, TaoResult)``.
        ``solver="lm"``: :class:`pnode.solvers.LevenbergMarquardt` (monotone: a ratio test,
        Nielsen's damping rule from ``1e-3``; ``J^T J`` of the residual rows, split over the
        ranks, summed by one Allreduce and factored by PETSc Cholesky; ``options`` reach its
        KSP). ``solver="brgn"``: TAO ``brgn`` with ``lm`` regularisation, weight ``1e-3``
        (its subsolver takes unit steps, uphill too: not monotone; ``options`` reach TAO).
        Either stops when the loss ``0.5 mean (U - u0)^2`` falls below ``1e-20`` or the
        gradient below ``1e-15``. The fit is nonconvex: from a random network it may stop
        in a local minimum or converge slowly near a degenerate one (redundant units), so
        start from a guess read off ``u0`` where one is at hand and check
        ``TaoResult.loss``. ``options`` go under ``options_prefix`` and win over these."""
        from pnode.solvers import LevenbergMarquardt, Objective, TaoSolver

        if solver not in FIT_SOLVERS:
            raise ConfigurationError(f"solver must be one of {FIT_SOLVERS}, got {solver!r}")
        target = u0(self.points).reshape(-1).detach()
        scale = 1.0 / math.sqrt(self.total)

        def residual():
            return (self.net(self.points).reshape(-1) - target) * scale

        objective = Objective(residual=residual, jacobian="dense")
        if solver == "lm":
            opt = LevenbergMarquardt(self.net, objective, comm=self.mpi, damping=1e-3, gatol=1e-15, fmin=1e-20,
                                     options=options, options_prefix=options_prefix, progress=progress)
        else:
            opts = {"tao_gatol": 1e-15, "tao_grtol": 0.0, "tao_gttol": 0.0, "tao_fmin": 1e-20,
                    "tao_brgn_regularization_type": "lm", "tao_brgn_regularizer_weight": 1e-3, **(options or {})}
            opt = TaoSolver(self.net, objective, tao_type="brgn", comm=self.mpi, options=opts,
                            options_prefix=options_prefix, progress=progress)
        try:
            result = opt.solve(max_it=max_it)
        finally:
            opt.destroy()
        return self.flat(), result


class GalerkinForce(torch.nn.Module):
    """``F(t, theta)``: the right-hand side of the implicit form (its parameters are the
    problem's PDE coefficients)."""

    def __init__(self, problem: GalerkinProblem):
        super().__init__()
        self.problem = problem

    def forward(self, t: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        self.problem.evaluations += 1
        return self.problem._evaluated(t, theta, True)[1]


class GalerkinMass:
    """The state-dependent mass ``M(theta) + eps I`` of the implicit form, in the protocol
    of :mod:`pnode.problem` (``product``, ``matrix``, ``depends_on_state``); symmetric."""

    depends_on_state = True

    def __init__(self, problem: GalerkinProblem):
        self.problem = problem

    def matrix(self, t: float, theta: torch.Tensor) -> torch.Tensor:
        """``M(theta) + eps I`` ``(P, P)``, differentiable in ``theta``."""
        return self.problem._evaluated(t, theta.reshape(-1), False)[0]

    def product(self, t: float, theta: torch.Tensor, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``(M(theta) + eps I) v`` (the matrix is symmetric: ``transpose`` changes nothing)."""
        return self.matrix(t, theta) @ v.reshape(-1)
