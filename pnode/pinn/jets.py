"""Second-order jets of a multilayer-perceptron field, batched over points, and the
residual's Jacobian rows from one backward pass.

For a network ``nn.Sequential`` of ``nn.Linear`` layers and elementwise ``nn.Tanh`` /
``nn.Sigmoid`` activations, :class:`MLPJets` carries through every layer the value and
the derivatives in the input that a residual reads (Taylor mode: a stream per derivative,
each a ``(width, N)`` block of all points), so that a second-order PDE residual costs a
few matrix products instead of ``vmap`` over nested ``jacrev``/``jacfwd``. A residual
written for one point reads the jets through the operators of
:mod:`pnode.pinn.operators`, which accept a :class:`Jet` in place of a field.
:func:`needed_streams` finds which derivatives a residual reads.

The Jacobian rows in the parameters come from one batched backward pass per residual
component: each point's residual depends on that point only, so the gradient of the sum
of the rows with respect to a layer's pre-activation streams holds every point's own
gradient, and the point's row for the layer's weight is the sum over the streams of the
outer products of that gradient with the layer's input streams (the per-sample gradient
of a linear layer). The rows are written transposed, ``(numel, rows)``, which is the
memory order of ``J^T J``'s BLAS ``syrk`` as well.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
from torch.func import jacrev, vmap

from pnode.errors import ConfigurationError


class JetError(ConfigurationError):
    """A residual asked a :class:`Jet` for what it does not hold (the field at another
    point, a third derivative)."""


class Jet:
    """A field's value, gradient and Hessian at one point, standing in for the field in a
    residual. ``jet(x)`` is the value (``x`` must be the collocation point itself); the
    operators of :mod:`pnode.pinn.operators` return jets of the derivatives. Entries that
    were not carried are NaN."""

    __slots__ = ("value", "grad", "hess", "point")

    def __init__(self, value: torch.Tensor, grad: torch.Tensor | None, hess: torch.Tensor | None,
                 point: torch.Tensor):
        self.value, self.grad, self.hess, self.point = value, grad, hess, point

    def at(self, x: torch.Tensor) -> None:
        """Refuse any point but the collocation point."""
        if x is not self.point:
            raise JetError("a jet holds the field at its collocation point only; a residual that evaluates "
                           "the field elsewhere needs CollocationProblem(..., jets=False)")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.at(x)
        return self.value

    def need(self, order: int) -> None:
        """Refuse a derivative of ``order`` beyond what the jet holds."""
        held = 0 if self.grad is None else 1 if self.hess is None else 2
        if order > held:
            raise JetError(f"the jets hold derivatives up to second order; the residual asks for one of "
                           f"order {order} of a field known to order {held}: use CollocationProblem(..., jets=False)")

    def derivative(self) -> "Jet":
        """The jet of the gradient field (one order less)."""
        self.need(1)
        return Jet(self.grad, self.hess, None, self.point)

    def partial(self, axis: int) -> "Jet":
        """The jet of ``d/dx_axis`` of the field."""
        self.need(1)
        return Jet(self.grad[..., axis], None if self.hess is None else self.hess[..., axis, :], None, self.point)


def _tanh(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y = torch.tanh(z)
    s1 = 1 - y * y
    return y, s1, -2 * y * s1


def _sigmoid(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y = torch.sigmoid(z)
    s1 = y * (1 - y)
    return y, s1, s1 * (1 - 2 * y)


ACTIVATIONS: dict[type, Callable] = {torch.nn.Tanh: _tanh, torch.nn.Sigmoid: _sigmoid}


def unsupported(model: torch.nn.Module, names: Sequence[str]) -> str | None:
    """Why :class:`MLPJets` cannot carry ``model`` (None when it can)."""
    if not isinstance(model, torch.nn.Sequential) or len(model) == 0:
        return f"the model is a {type(model).__name__}, not an nn.Sequential"
    for index, layer in enumerate(model):
        if not isinstance(layer, torch.nn.Linear) and type(layer) not in ACTIVATIONS:
            return f"layer {index} is a {type(layer).__name__} (jets know Linear, Tanh and Sigmoid)"
    if not isinstance(model[-1], torch.nn.Linear):
        return "the last layer is not Linear"
    if list(names) != [n for n, _ in model.named_parameters()]:
        return "some of the network's parameters are frozen"
    return None


class Streams:
    """The derivatives carried: the value, first derivatives along ``first`` and second
    derivatives of the ``pairs`` ``(i, j)``, ``i <= j``, in a point of dimension ``d``."""

    def __init__(self, d: int, first: Sequence[int], pairs: Sequence[tuple[int, int]]):
        self.d = d
        self.pairs = sorted({(min(i, j), max(i, j)) for i, j in pairs})
        self.first = sorted(set(first) | {i for p in self.pairs for i in p})
        position = {a: 1 + k for k, a in enumerate(self.first)}
        self.left = [position[i] for i, _ in self.pairs]
        self.right = [position[j] for _, j in self.pairs]
        self.count = 1 + len(self.first) + len(self.pairs)

    @classmethod
    def full(cls, d: int) -> "Streams":
        return cls(d, range(d), [(i, j) for i in range(d) for j in range(i, d)])

    def __repr__(self) -> str:
        return f"Streams(first={self.first}, pairs={self.pairs})"


class MLPJets:
    """Jets of ``transform(x, model(x))`` at a batch of points (``streams`` of them), for a
    model that :func:`unsupported` accepts; ``transform`` (or None) maps one point and the
    network's output there to the field."""

    def __init__(self, model: torch.nn.Sequential, transform: Callable | None, streams: Streams):
        self.layers: list[tuple[str, object]] = []
        for index, layer in enumerate(model):
            if isinstance(layer, torch.nn.Linear):
                self.layers.append(("linear", (f"{index}.weight", f"{index}.bias" if layer.bias is not None else None)))
            else:
                self.layers.append(("activation", ACTIVATIONS[type(layer)]))
        self.transform, self.streams = transform, streams

    def network(self, params: Mapping[str, torch.Tensor], x: torch.Tensor, track: bool = False):
        """The network's output streams ``(S, k, N)``; with ``track`` also, per linear
        layer, its input streams and its pre-activation streams (tracking gradients)."""
        st = self.streams
        n, f = x.shape[0], len(st.first)
        streams = torch.zeros(st.count, x.shape[1], n, dtype=x.dtype)
        streams[0] = x.T
        for k, axis in enumerate(st.first):
            streams[1 + k, axis] = 1
        inputs, outputs = [], []
        for kind, spec in self.layers:
            if kind == "linear":
                weight, bias = spec
                z = torch.matmul(params[weight], streams)
                if bias is not None:
                    z[0] += params[bias][:, None]
                if track:
                    if not z.requires_grad:
                        z.requires_grad_(True)
                    inputs.append(streams.detach())
                    outputs.append(z)
                streams = z
            else:
                y, s1, s2 = spec(streams[0])
                parts = [y[None], s1[None] * streams[1:1 + f]]
                if st.pairs:
                    parts.append(s1[None] * streams[1 + f:] + s2[None] * streams[st.left] * streams[st.right])
                streams = torch.cat(parts)
        return (streams, inputs, outputs) if track else streams

    def field(self, x: torch.Tensor, out: torch.Tensor):
        """The field's jets ``(value, grad, hess)`` batched over the points, shapes of one
        point's field (scalar: ``()``, ``(d,)``, ``(d, d)``; NaN where not carried), from
        the network's output streams (through the transform by the chain rule)."""
        st, f = self.streams, len(self.streams.first)
        value, first, second = out[0].T, out[1:1 + f].permute(2, 0, 1), out[1 + f:].permute(2, 0, 1)
        if hasattr(self.transform, "coefficient_jets"):
            value, first, second = self._through_affine(x, value, first, second)
        elif self.transform is not None:
            value, first, second = self._through_transform(x, value, first, second)
        if value.ndim == 2 and value.shape[1] == 1:
            value, first, second = value[:, 0], first[..., 0], second[..., 0]
        shape = value.shape
        grad = value.new_full(shape + (st.d,), math.nan)
        hess = value.new_full(shape + (st.d, st.d), math.nan)
        for k, axis in enumerate(st.first):
            grad[..., axis] = first[:, k]
        for k, (i, j) in enumerate(st.pairs):
            hess[..., i, j] = second[:, k]
            if i != j:
                hess[..., j, i] = second[:, k]
        return value, grad, hess

    def _through_affine(self, x, value, first, second):
        """The same as :meth:`_through_transform` for a
        :class:`pnode.pinn.transforms.AffineTransform` ``a(x) + b(x) * N``, by the product rule
        with the derivatives of ``a`` and ``b`` at the points (computed once per point set)."""
        st = self.streams
        left, right = [i - 1 for i in st.left], [j - 1 for j in st.right]
        shift, scale = self.transform.coefficient_jets(x)
        if scale is None:
            u, du, d2u = value, first, second
        else:
            bv, bf, bs = self._carried(scale)
            u, du = bv * value, bf * value[:, None] + bv[:, None] * first
            d2u = (bs * value[:, None] + bf[:, left] * first[:, right] + bf[:, right] * first[:, left]
                   + bv[:, None] * second)
        if shift is not None:
            av, af, as_ = self._carried(shift)
            u, du, d2u = u + av, du + af, d2u + as_
        return u, du, d2u

    def _carried(self, jets):
        """A coefficient's value ``(N, m)`` and its carried first ``(N, F, m)`` and second
        ``(N, P, m)`` derivatives from its full jets."""
        st, (v, g, h) = self.streams, jets
        first = g[..., st.first].permute(0, 2, 1)
        rows, cols = [i for i, _ in st.pairs], [j for _, j in st.pairs]
        return v, first, h[:, :, rows, cols].permute(0, 2, 1)

    def _through_transform(self, x, value, first, second):
        """``u = transform(x, N)``'s value ``(N, c)``, carried first ``(N, F, c)`` and second
        ``(N, P, c)`` derivatives from the network's (``(N, k)``, ``(N, F, k)``, ``(N, P, k)``):
        the chain rule with the transform's partial derivatives in ``x`` and ``N`` by batched
        double backward (each point's transform depends on that point only)."""
        st, n = self.streams, x.shape[0]
        position = {a: k for k, a in enumerate(st.first)}
        recording = torch.is_grad_enabled()
        with torch.enable_grad():
            xs = x.detach().requires_grad_(True)
            o = value if value.requires_grad else value.detach().requires_grad_(True)
            u = vmap(self.transform)(xs, o).reshape(n, -1)
            firsts, seconds = [], []
            for c in range(u.shape[1]):
                tx, to = _partials(u[:, c], (xs, o))
                firsts.append([tx[:, a] + (to * first[:, k]).sum(-1) for k, a in enumerate(st.first)])
                if not st.pairs:
                    continue
                sx = {a: _partials(tx[:, a], (xs, o)) for a in {i for p in st.pairs for i in p}}
                soo = [_partials(to[:, m], (o,))[0] for m in range(o.shape[1])]
                column = []
                for k, (i, j) in enumerate(st.pairs):
                    ni, nj = first[:, position[i]], first[:, position[j]]
                    h = sx[i][0][:, j] + (sx[i][1] * nj).sum(-1) + (sx[j][1] * ni).sum(-1) + (to * second[:, k]).sum(-1)
                    for m in range(o.shape[1]):
                        h = h + ni[:, m] * (soo[m] * nj).sum(-1)
                    column.append(h)
                seconds.append(column)
        out = (u, _stack(firsts, u, len(st.first)), _stack(seconds, u, len(st.pairs)))
        return out if recording else tuple(t.detach() for t in out)

    def rows(self, params, coeffs, residual: Callable, x, data) -> torch.Tensor:
        """``(N, c)`` rows of ``residual`` at ``x``."""
        return jet_rows(residual, data)(*self.field(x, self.network(params, x)), x, coeffs,
                                         *(() if data is None else (data,)))

    def jacobian_into(self, out: torch.Tensor, names: Sequence[str], params, coeffs, residual: Callable,
                      x, data) -> None:
        """The transposed Jacobian rows of ``residual`` at ``x`` (unscaled) into ``out``
        ``(numel, N * c)``: the network's parameters in ``names`` order, then the
        coefficients."""
        extra = () if data is None else (data,)
        with torch.enable_grad():
            streams, inputs, outputs = self.network(params, x, track=True)
            fields = self.field(x, streams)
            rows = jet_rows(residual, data)(*fields, x, coeffs, *extra)
            n, c = rows.shape
            wide = out.view(out.shape[0], n, c)
            linear = [spec for kind, spec in self.layers if kind == "linear"]
            for j in range(c):
                signals = torch.autograd.grad(rows[:, j].sum(), outputs, retain_graph=j < c - 1)
                blocks = {}
                for (weight, bias), a, g in zip(linear, inputs, signals):
                    blocks[weight] = (g, a)
                    if bias is not None:
                        blocks[bias] = (g, None)
                offset = 0
                for name in names:
                    g, a = blocks[name]
                    if a is None:
                        wide[offset:offset + g.shape[1], :, j] = g[0]
                        offset += g.shape[1]
                        continue
                    size = g.shape[1] * a.shape[1]
                    dst = wide[offset:offset + size, :, j].view(g.shape[1], a.shape[1], n)
                    torch.mul(g[0][:, None, :], a[0][None, :, :], out=dst)
                    for s in range(1, g.shape[0]):
                        dst.addcmul_(g[s][:, None, :], a[s][None, :, :])
                    offset += size
        if coeffs:
            detached = [f.detach() for f in fields]
            jc = vmap(jacrev(_one_point(residual, data), argnums=4), in_dims=_dims(data))(*detached, x, dict(coeffs),
                                                                                       *extra)
            for key in coeffs:
                block = jc[key].reshape(n * c, -1)
                out[offset:offset + block.shape[1]] = block.T
                offset += block.shape[1]


def _partials(y: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Each point's derivatives of ``y`` ``(N,)`` in ``inputs`` (zero where unused), with their graph."""
    if not y.requires_grad:
        return tuple(torch.zeros_like(t) for t in inputs)
    return torch.autograd.grad(y.sum(), inputs, create_graph=True, materialize_grads=True)


def _stack(columns: list[list[torch.Tensor]], like: torch.Tensor, count: int) -> torch.Tensor:
    """``(N, count, c)`` from ``c`` lists of ``count`` tensors ``(N,)`` (``like``: ``(N, c)``)."""
    if count == 0:
        return like.new_zeros(like.shape[0], 0, like.shape[1])
    return torch.stack([torch.stack(col, 1) for col in columns], 2)


def _one_point(residual: Callable, data: torch.Tensor | None) -> Callable:
    def one(value, grad, hess, x, coeffs, y=None):
        jet = Jet(value, grad, hess, x)
        r = residual(jet, x, coeffs) if data is None else residual(jet, x, coeffs, y)
        return torch.as_tensor(r).reshape(-1)
    return one


def _dims(data: torch.Tensor | None) -> tuple:
    return (0, 0, 0, 0, None) if data is None else (0, 0, 0, 0, None, 0)


def jet_rows(residual: Callable, data: torch.Tensor | None) -> Callable:
    """``(value, grad, hess, x, coeffs[, y]) -> (N, c)``: the rows of a per-point
    ``residual(u, x, c[, y])`` evaluated on jets, batched."""
    return vmap(_one_point(residual, data), in_dims=_dims(data))


def needed_streams(jets: MLPJets, params, coeffs, residual: Callable, x, data) -> Streams:
    """The derivatives ``residual`` reads, found at the points ``x`` by making one entry
    of the full jets NaN at a time (``jets`` carries them all)."""
    value, grad, hess = jets.field(x, jets.network(params, x))
    extra = () if data is None else (data,)
    rows = jet_rows(residual, data)
    st, first, pairs = jets.streams, [], []
    with torch.no_grad():
        for axis in st.first:
            g = grad.clone()
            g[..., axis] = math.nan
            if not torch.isfinite(rows(value, g, hess, x, coeffs, *extra)).all():
                first.append(axis)
        for i, j in st.pairs:
            h = hess.clone()
            h[..., i, j] = h[..., j, i] = math.nan
            if not torch.isfinite(rows(value, grad, h, x, coeffs, *extra)).all():
                pairs.append((i, j))
    return Streams(st.d, first, pairs)
