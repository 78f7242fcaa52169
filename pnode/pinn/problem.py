"""Collocation problems: a network, residual terms at points, and the weighted residual
vector that the optimisers of :mod:`pnode.solvers` minimise.

A :class:`Term` is a residual written for **one point**: ``residual(u, x, c)`` (or
``residual(u, x, c, y)`` with data ``y`` per point) where ``u`` is the network as a field
of one point (``(d,) -> scalar``, or ``(k,)`` for ``k`` outputs), ``x`` the point and
``c`` the dict of unknown coefficients; it returns a scalar or a fixed-length vector and
uses the operators of :mod:`pnode.pinn.operators` for derivatives. The term's rows are
``sqrt(weight / N) * residual`` over its ``N`` points, so that the loss
``0.5 ||r||^2 = 0.5 sum_terms weight * mean(residual^2)`` does not depend on how the
points are split.

:class:`CollocationProblem` keeps this rank's share of every term's points (the points
are split over the ranks of ``comm``), evaluates the rows with ``vmap`` over the points
(:meth:`CollocationProblem.residual`, differentiable in the parameters) and assembles the
Jacobian rows with ``vmap`` over ``jacrev`` in the parameters
(:meth:`CollocationProblem.jacobian_rows`). ``transform(x, out)`` maps the network's
output at a point to the field (hard initial / boundary conditions, e.g.
``-sin(pi x) + t (1 - x^2) out``). Coefficients are trainable tensors (inverse problems);
they are optimised with the network's parameters.

With ``jets="auto"`` (the default), a term whose network is an ``nn.Sequential`` of
``nn.Linear`` and ``nn.Tanh`` / ``nn.Sigmoid`` layers is evaluated by
:class:`pnode.pinn.jets.MLPJets` instead: the derivatives it reads (found once, at a few
points) carried through the layers for all points at once, and its Jacobian rows from one
batched backward pass (3x faster on the Burgers case), checked once against the generic
path at those points; ``jets=False`` keeps the generic path, ``jets=True`` requires the
jets (a named error says why a term cannot have them). :attr:`CollocationProblem.jets`
says which terms have them.
"""
from __future__ import annotations

import inspect
from typing import Callable, Mapping, Sequence

import torch
from torch.func import functional_call, jacrev, vjp, vmap

from pnode.comm import shard, world
from pnode.errors import ConfigurationError

from .domains import Box
from .jets import JetError, MLPJets, Streams, needed_streams, unsupported


class Term:
    """One residual term: ``residual`` at ``points`` (``(N, d)``), weighted by ``weight``."""

    def __init__(self, name: str, points: torch.Tensor, residual: Callable, weight: float = 1.0,
                 data: torch.Tensor | None = None):
        if not callable(residual):
            raise ConfigurationError(f"term {name!r}: residual must be callable")
        if not isinstance(points, torch.Tensor) or points.ndim != 2 or points.shape[0] == 0:
            shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
            raise ConfigurationError(f"term {name!r}: points must be a non-empty (N, d) tensor, got {shape}")
        if data is not None and (not isinstance(data, torch.Tensor) or data.shape[0] != points.shape[0]):
            shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
            raise ConfigurationError(
                f"term {name!r}: data must have one row per point ({points.shape[0]}), got {shape}")
        if not (float(weight) > 0):
            raise ConfigurationError(f"term {name!r}: weight must be positive, got {weight}")
        n_args = len(inspect.signature(residual).parameters)
        if n_args != (4 if data is not None else 3):
            raise ConfigurationError(
                f"term {name!r}: residual must take (u, x, coefficients{', data' if data is not None else ''}), "
                f"it takes {n_args} argument(s)")
        self.name, self.points, self.residual = name, points, residual
        self.weight, self.data = float(weight), data


class CollocationProblem:
    """The weighted residual vector of ``terms`` for ``model`` on ``domain``.

    ``model`` maps a batch ``(N, d)`` to ``(N, k)`` (and one point ``(d,)`` to ``(k,)``, as
    ``nn.Linear`` stacks do). ``coefficients``: name -> tensor (made trainable).
    ``comm``: the ranks sharing the points (default COMM_WORLD); every rank passes the same
    points and keeps its own share.
    """

    def __init__(self, model: torch.nn.Module, terms: Sequence[Term], domain: Box, *,
                 coefficients: Mapping[str, torch.Tensor] | None = None,
                 transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, comm=None,
                 jets: bool | str = "auto"):
        if not (jets is True or jets is False or (isinstance(jets, str) and jets == "auto")):
            raise ConfigurationError(f"jets must be 'auto', True or False, got {jets!r}")
        if not isinstance(domain, Box):
            raise ConfigurationError(f"domain must be a pnode.pinn domain, got {type(domain).__name__}")
        if not terms:
            raise ConfigurationError("a collocation problem needs at least one term")
        self.model, self.domain, self.transform = model, domain, transform
        self.mpi = world(comm)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.coefficients: dict[str, torch.Tensor] = {}
        for key, value in (coefficients or {}).items():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise ConfigurationError(f"coefficient {key!r} must be a floating-point tensor")
            self.coefficients[key] = value if value.requires_grad else value.detach().clone().requires_grad_(True)
        self.dtype = next(iter(model.parameters())).dtype
        self.terms = list(terms)
        self.local: list[tuple[torch.Tensor, torch.Tensor | None, float]] = []
        for term in self.terms:
            self._check_points(term)
            part = shard(term.points.shape[0], self.mpi)
            scale = (term.weight / term.points.shape[0]) ** 0.5
            data = None if term.data is None else term.data[part].to(self.dtype)
            self.local.append((term.points[part].to(self.dtype), data, scale))
        self._widths = self._check_dependence()
        self._jets = [self._choose_jets(term, jets) for term in self.terms]

    # -- checks --------------------------------------------------------------------------

    def _check_points(self, term: Term) -> None:
        self.domain.check_shape(term.points, f"the points of term {term.name!r}")
        outside = int((~self.domain.contains(term.points)).sum())
        if outside:
            raise ConfigurationError(f"term {term.name!r}: {outside} of {term.points.shape[0]} points lie "
                                     f"outside the domain {self.domain!r}")
        if not torch.isfinite(term.points).all():
            raise ConfigurationError(f"term {term.name!r}: the points are not all finite")

    def _check_dependence(self) -> list[int]:
        """On a few points of each term (the same on every rank): the residual is finite,
        the field depends on the point and the residual on the parameters. Returns each
        term's number of residual components per point."""
        params, widths = self._detached(), []
        for term in self.terms:
            x, data = self._check_points_of(term)
            rows = self._rows(params, self._coeffs(), term, x, data)
            widths.append(rows.shape[1])
            if not torch.isfinite(rows).all():
                raise ConfigurationError(f"term {term.name!r}: the residual is not finite at the points "
                                         f"{x[~torch.isfinite(rows.reshape(x.shape[0], -1)).all(1)].tolist()}")
            # J^T w for a random w is zero (almost surely) only when J is: one backward pass
            w = torch.randn(rows.shape, dtype=rows.dtype, generator=torch.Generator().manual_seed(0))
            _, pull = vjp(lambda p, c: self._rows(p, c, term, x, data), params, self._coeffs())
            jt_w = [g for part in pull(w) for g in part.values()]
            if not any(torch.any(g != 0) for g in jt_w):
                raise ConfigurationError(
                    f"term {term.name!r}: the residual does not depend on the network's parameters or the "
                    "coefficients (its Jacobian is zero at the sampled points)")
        x = self.terms[0].points[:8].to(self.dtype)
        field_grad = vmap(jacrev(self._field(params)))(x)
        if not torch.any(field_grad != 0):
            raise ConfigurationError("the network's output does not depend on its input (zero derivative in x "
                                     "at the sampled points): the residual's derivatives would all vanish")
        return widths

    def _check_points_of(self, term: Term) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Up to 8 of the term's points, spread over them (the same on every rank), and their data."""
        take = torch.linspace(0, term.points.shape[0] - 1, min(8, term.points.shape[0])).long()
        data = None if term.data is None else term.data[take].to(self.dtype)
        return term.points[take].to(self.dtype), data

    def _choose_jets(self, term: Term, mode) -> MLPJets | None:
        """The term's jets, or None for the generic path (``mode`` of ``jets=``)."""
        if mode is False:
            return None
        why = unsupported(self.model, self.names)
        if why is None:
            params, coeffs = self._detached(), self._coeffs()
            x, data = self._check_points_of(term)
            try:
                full = MLPJets(self.model, self.transform, Streams.full(x.shape[1]))
                jets = MLPJets(self.model, self.transform, needed_streams(full, params, coeffs, term.residual, x, data))
                why = self._jets_disagree(jets, term, params, coeffs, x, data)
            except JetError as err:
                why = str(err)
            if why is None:
                return jets
        if mode is True:
            raise ConfigurationError(f"term {term.name!r} cannot be evaluated by jets: {why}")
        return None

    def _jets_disagree(self, jets: MLPJets, term: Term, params, coeffs, x, data) -> str | None:
        """Why the jets' rows, their products with a random vector, or (when small) their
        Jacobian rows differ from the generic path's at ``x`` (None: they agree)."""
        tol = torch.finfo(self.dtype).eps ** 0.5
        p, c = ({k: v.clone().requires_grad_(True) for k, v in d.items()} for d in (params, coeffs))
        leaves = [*p.values(), *c.values()]
        rows = self._rows(p, c, term, x, data)
        mine = jets.rows(p, c, term.residual, x, data)
        w = torch.randn(rows.shape, dtype=self.dtype, generator=torch.Generator().manual_seed(1))
        products = [torch.autograd.grad(r, leaves, w, materialize_grads=True) for r in (mine, rows)]
        pairs = [("residual", mine, rows)] + [("gradient", a, b) for a, b in zip(*products)]
        numel = sum(v.numel() for v in leaves)
        if rows.numel() * numel <= 1 << 21:
            J = self._jacobian(params, term, x, data)
            JT = torch.empty(J.shape[1], J.shape[0], dtype=self.dtype)
            jets.jacobian_into(JT, self.names, params, coeffs, term.residual, x, data)
            pairs.append(("Jacobian", JT.T, J))
        for what, a, b in pairs:
            a, b = a.detach(), b.detach()
            if a.shape != b.shape or not torch.allclose(a, b, rtol=tol, atol=tol * float(b.abs().max())):
                return f"its {what} differs from the generic path's (a residual the jets cannot represent)"
        return None

    @property
    def jets(self) -> list[bool]:
        """Per term: whether it is evaluated by :class:`pnode.pinn.jets.MLPJets`."""
        return [j is not None for j in self._jets]

    # -- evaluation ----------------------------------------------------------------------

    def parameters(self) -> list[torch.Tensor]:
        """The trainable tensors: the network's, then the coefficients (the solvers' order)."""
        named = dict(self.model.named_parameters())
        return [named[n] for n in self.names] + list(self.coefficients.values())

    def _detached(self) -> dict[str, torch.Tensor]:
        named = dict(self.model.named_parameters())
        return {n: named[n].detach() for n in self.names}

    def _coeffs(self, detach: bool = True) -> dict[str, torch.Tensor]:
        return {k: (v.detach() if detach else v) for k, v in self.coefficients.items()}

    def _field(self, params: Mapping[str, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        def u(x: torch.Tensor) -> torch.Tensor:
            out = functional_call(self.model, dict(params), (x,))
            if self.transform is not None:
                out = self.transform(x, out)
            return out.reshape(()) if out.numel() == 1 else out
        return u

    def _point(self, term: Term) -> Callable:
        def one(params, coeffs, x, y=None):
            u = self._field(params)
            r = term.residual(u, x, coeffs) if term.data is None else term.residual(u, x, coeffs, y)
            return torch.as_tensor(r).reshape(-1)
        return one

    def _rows(self, params, coeffs, term: Term, x, data) -> torch.Tensor:
        fn = self._point(term)
        if data is None:
            return vmap(fn, in_dims=(None, None, 0))(params, coeffs, x)
        return vmap(fn, in_dims=(None, None, 0, 0))(params, coeffs, x, data)

    def _term_rows(self, index: int, params, coeffs, x, data) -> torch.Tensor:
        """Term ``index``'s ``(N, c)`` rows by its jets when it has them."""
        jets, term = self._jets[index], self.terms[index]
        if jets is None:
            return self._rows(params, coeffs, term, x, data)
        return jets.rows(params, coeffs, term.residual, x, data)

    def _jacobian(self, params, term: Term, x, data) -> torch.Tensor:
        """``(N * c, numel)`` rows of one term at ``x`` (unscaled), columns in
        :meth:`parameters` order."""
        fn = jacrev(self._point(term), argnums=(0, 1))
        dims = (None, None, 0) if data is None else (None, None, 0, 0)
        args = (params, self._coeffs(), x) if data is None else (params, self._coeffs(), x, data)
        jp, jc = vmap(fn, in_dims=dims)(*args)
        blocks = [jp[k] for k in self.names] + [jc[k] for k in self.coefficients]
        return torch.cat([b.reshape(b.shape[0] * b.shape[1], -1) for b in blocks], dim=1)

    def term_residual(self, index: int, points: torch.Tensor | None = None) -> torch.Tensor:
        """Term ``index``'s unweighted residual ``(N, c)`` at ``points`` (default: this rank's)."""
        term = self.terms[index]
        x = self.local[index][0] if points is None else points.to(self.dtype)
        data = self.local[index][1] if points is None else None
        if term.data is not None and data is None:
            raise ConfigurationError(f"term {term.name!r} has data: it is evaluated at its own points only")
        with torch.no_grad():
            return self._term_rows(index, self._detached(), self._coeffs(), x, data)

    def residual(self) -> torch.Tensor:
        """This rank's weighted residual rows (flat), differentiable in :meth:`parameters`."""
        named = dict(self.model.named_parameters())
        params = {n: named[n] for n in self.names}
        coeffs = self._coeffs(detach=False)
        return torch.cat([scale * self._term_rows(i, params, coeffs, x, data).reshape(-1)
                          for i, (x, data, scale) in enumerate(self.local)])

    def jacobian_rows(self) -> torch.Tensor:
        """This rank's assembled Jacobian of :meth:`residual`, ``(rows, numel)``: the
        transpose of a contiguous ``(numel, rows)`` tensor (the memory order in which the
        jets write it and ``J^T J``'s BLAS ``syrk`` reads it)."""
        params, coeffs = self._detached(), self._coeffs()
        counts = [x.shape[0] * width for (x, _, _), width in zip(self.local, self._widths)]
        numel = sum(p.numel() for p in self.parameters())
        JT = torch.empty(numel, sum(counts), dtype=self.dtype)
        start = 0
        for i, ((x, data, scale), count) in enumerate(zip(self.local, counts)):
            block = JT[:, start:start + count]
            if self._jets[i] is None:
                block.copy_(self._jacobian(params, self.terms[i], x, data).T)
            else:
                self._jets[i].jacobian_into(block, self.names, params, coeffs, self.terms[i].residual, x, data)
            block.mul_(scale)
            start += count
        return JT.T

    def loss(self) -> torch.Tensor:
        """This rank's share of ``0.5 ||r||^2`` (the ranks' shares add up)."""
        r = self.residual()
        return 0.5 * (r * r).sum()

    def objective(self, jacobian: str = "dense"):
        """The :class:`pnode.solvers.Objective` of this residual (assembled rows by ``vmap``)."""
        from pnode.solvers import Objective

        return Objective(residual=self.residual, jacobian=jacobian, jacobian_rows=self.jacobian_rows)

    def set_points(self, index: int, points: torch.Tensor) -> None:
        """Replace term ``index``'s points (every rank passes the same; e.g. after
        :func:`pnode.pinn.resample_by_residual`); the number of rows changes with them."""
        term = self.terms[index]
        if term.data is not None:
            raise ConfigurationError(f"term {term.name!r} has data at fixed points; it cannot be resampled")
        term.points = points
        self._check_points(term)
        part = shard(points.shape[0], self.mpi)
        self.local[index] = (points[part].to(self.dtype), None, (term.weight / points.shape[0]) ** 0.5)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """The field at ``points`` ``(N, d)`` (transform applied), no graph."""
        self.domain.check_shape(points)
        with torch.no_grad():
            return vmap(self._field(self._detached()))(points.to(self.dtype))
