"""The LISTA family for sparse recovery ``y = A x + noise``, ``x`` sparse.

Every network has :attr:`layers` layers and is called ``net(y, layers=None, every=False)``
(the first ``layers`` layers only: layer-wise training; ``every=True``: the estimate
after each layer). ``A`` is a torch matrix or a PETSc Mat (:func:`.operators.as_operator`).

* :class:`LISTA` (Gregor & LeCun): ``x <- eta(W1 y + S x, theta_k)``, ``W1, S`` learned
  (tied over the layers by default, ``tied=False`` one pair per layer).
* :class:`LISTACP` (Chen et al., coupled weights): ``x <- eta(x + W_k^T (y - A x), theta_k)``
  with ``W_k`` learned; :class:`LISTACPSS` adds support selection.
* :class:`TiLISTA`: one learned ``W``, a learned step ``gamma_k`` per layer.
* :class:`ALISTA` (Liu et al.): ``W`` computed from ``A`` alone
  (:func:`.coherence.analytic_weight`), only ``gamma_k, theta_k`` (2K scalars) learned;
  with support selection by default. Its ``W`` may be a PETSc Mat laid out like ``A``,
  so ALISTA runs on an operator split over ranks.

Each network with learned matrices can start as a trained ALISTA (``from_alista``): the
same outputs, then trained further (the warm start of the benchmarks).

Networks with learned matrices hold them as torch tensors, so they need ``A`` whole on
each rank (a tensor, or a Mat on one rank).
"""
from __future__ import annotations

import torch

from pnode.errors import ConfigurationError

from .operators import Operator, as_operator
from .prox import SoftThreshold, SupportSelection
from .unrolled import IterationParameter


def support_schedule(layers: int, step: float = 0.012, maximum: float = 0.13) -> list[float]:
    """The fraction of entries trusted per layer: ``min(step * (k + 1), maximum)``
    (LISTA-CPSS's 1.2% more per layer, up to 13%, for 10% sparse signals)."""
    return [min(step * (k + 1), maximum) for k in range(layers)]


def dense_matrix(op: Operator) -> torch.Tensor:
    """The whole ``(m, n)`` matrix of an operator held on one rank."""
    if op.comm is not None and op.comm.Get_size() > 1:
        raise ConfigurationError(
            "learned weight matrices are torch tensors held whole on each rank; this operator is "
            "split over several ranks (use ALISTA, or an Unrolled network, on a distributed operator)")
    if hasattr(op, "matrix"):
        return op.matrix
    with torch.no_grad():
        return op.forward(torch.eye(op.shape[1], dtype=op.dtype)).T.contiguous()


def alista_parts(alista: "ALISTA") -> tuple[Operator, torch.Tensor, torch.Tensor, torch.Tensor, list[float] | None]:
    """A trained ALISTA's operator, its ``W`` whole, its steps and thresholds (one per
    layer, detached) and its support fractions (None without support selection): what
    the ``from_alista`` constructors start a network with learned matrices from."""
    support = alista_support(alista)
    gamma = alista.gamma.value.detach()
    gamma = gamma.expand(alista.layers) if alista.gamma.tied else gamma
    return alista.op, dense_matrix(alista.W), gamma.clone(), alista.theta.value.detach().clone(), support


def alista_support(alista: "ALISTA") -> list[float] | None:
    """The support fractions of an ALISTA's layers (None without support selection)."""
    if not isinstance(alista, ALISTA):
        raise ConfigurationError(f"from_alista needs an ALISTA network, got {type(alista).__name__}")
    return [p.fraction for p in alista.proxes] if isinstance(alista.proxes[0], SupportSelection) else None


class _SparseNet(torch.nn.Module):
    """Layers ``x <- prox_k(update_k(x, y), theta_k)``; thresholds start at ``weight / L``.

    :attr:`stacks` names the learned matrices held as one tensor with a row per layer
    (one row when tied); a forward pass splits each once (``unbind``), so the backward
    pass stacks the rows' gradients instead of adding a full-size gradient per layer."""

    stacks: tuple[str, ...] = ()
    tied = True

    def __init__(self, A, layers: int, weight: float, support: list[float] | None):
        super().__init__()
        if layers < 1:
            raise ConfigurationError(f"a LISTA network needs layers >= 1, got {layers}")
        self.op = as_operator(A)
        self.layers = layers
        self.L = self.op.lipschitz()
        self.theta = IterationParameter(weight / self.L, layers, dtype=self.op.dtype)
        comm = self.op.comm
        self.proxes = torch.nn.ModuleList(
            [SupportSelection(f, comm) for f in support] if support is not None
            else [SoftThreshold() for _ in range(layers)])

    def update(self, k: int, x: torch.Tensor, y: torch.Tensor,
               rows: dict[str, tuple[torch.Tensor, ...]]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def layer_matrices(self) -> list[torch.nn.Parameter]:
        """The learned matrices with one row per layer (none when tied)."""
        return [] if self.tied else [getattr(self, name) for name in self.stacks]

    def forward(self, y: torch.Tensor, layers: int | None = None, every: bool = False):
        self.op.check_measurements(y)
        layers = self.layers if layers is None else layers
        if not 1 <= layers <= self.layers:
            raise ConfigurationError(f"layers must lie in [1, {self.layers}], got {layers}")
        x = y.new_zeros(*y.shape[:-1], self.op.n_local)
        outputs = []
        rows = {name: getattr(self, name).unbind(0) for name in self.stacks}
        for k in range(layers):
            x = self.proxes[k](self.update(k, x, y, rows), self.theta(k))
            outputs.append(x)
        return outputs if every else x


class LISTA(_SparseNet):
    """``x <- eta(W1 y + S x, theta_k)``, ``W1 = A^T / L``, ``S = I - A^T A / L`` at the start."""

    def __init__(self, A, layers: int = 16, weight: float = 0.1, tied: bool = True):
        super().__init__(A, layers, weight, None)
        matrix = dense_matrix(self.op)
        copies = 1 if tied else layers
        n = matrix.shape[1]
        self.tied = tied
        self.W1 = torch.nn.Parameter((matrix.T / self.L).repeat(copies, 1, 1))
        eye = torch.eye(n, dtype=matrix.dtype)
        self.S = torch.nn.Parameter((eye - matrix.T @ matrix / self.L).repeat(copies, 1, 1))

    stacks = ("W1", "S")

    @classmethod
    def from_alista(cls, alista: "ALISTA") -> "LISTA":
        """The tied LISTA that computes what ``alista`` does: ``W1 = gamma W^T``,
        ``S = I - gamma W^T A`` and its thresholds. ``alista`` needs one step for every
        layer (``tied_step=True``) and no support selection."""
        op, W, gamma, theta, support = alista_parts(alista)
        if support is not None or not alista.gamma.tied:
            raise ConfigurationError(
                "a tied LISTA starts from an ALISTA with one step for every layer (tied_step=True) and no "
                "support selection (support_selection=False)")
        net = cls(op, alista.layers)
        matrix = dense_matrix(op)
        with torch.no_grad():
            net.W1.copy_(gamma[0] * W.T)
            net.S.copy_(torch.eye(matrix.shape[1], dtype=matrix.dtype) - gamma[0] * W.T @ matrix)
            net.theta.value.copy_(theta)
        return net

    def update(self, k, x, y, rows):
        j = 0 if self.tied else k
        return y @ rows["W1"][j].T + x @ rows["S"][j].T


class LISTACP(_SparseNet):
    """``x <- eta(x + W_k^T (y - A x), theta_k)``, ``W_k = A / L`` at the start (ISTA);
    ``support=`` a list of per-layer fractions for support selection."""

    def __init__(self, A, layers: int = 16, weight: float = 0.1, tied: bool = False,
                 support: list[float] | None = None):
        super().__init__(A, layers, weight, support)
        matrix = dense_matrix(self.op)
        self.tied = tied
        self.W = torch.nn.Parameter((matrix / self.L).repeat(1 if tied else layers, 1, 1))

    stacks = ("W",)

    def update(self, k, x, y, rows):
        return x + (y - self.op(x)) @ rows["W"][0 if self.tied else k]

    @classmethod
    def from_alista(cls, alista: "ALISTA"):
        """The network (untied) that computes what ``alista`` does: ``W_k = gamma_k W``,
        its thresholds and its support selection, if any."""
        op, W, gamma, theta, support = alista_parts(alista)
        net = cls(op, alista.layers, support=support)
        with torch.no_grad():
            net.W.copy_(gamma.view(-1, 1, 1) * W.unsqueeze(0))
            net.theta.value.copy_(theta)
        return net


class LISTACPSS(LISTACP):
    """LISTA-CP with support selection (:func:`support_schedule` unless ``support=``)."""

    def __init__(self, A, layers: int = 16, weight: float = 0.1, tied: bool = False,
                 support: list[float] | None = None):
        super().__init__(A, layers, weight, tied, support if support is not None else support_schedule(layers))

    @classmethod
    def from_alista(cls, alista: "ALISTA") -> "LISTACPSS":
        """LISTA-CP's :meth:`LISTACP.from_alista`, from an ALISTA with support selection."""
        if alista_support(alista) is None:
            raise ConfigurationError("LISTA-CPSS starts from an ALISTA with support selection; "
                                     "use LISTACP.from_alista for one without")
        return super().from_alista(alista)


class TiLISTA(_SparseNet):
    """``x <- eta(x + gamma_k W^T (y - A x), theta_k)`` with one learned ``W`` (start ``A``)
    and learned steps ``gamma_k`` (start ``1/L``); support selection optional."""

    def __init__(self, A, layers: int = 16, weight: float = 0.1, support: list[float] | None = None):
        super().__init__(A, layers, weight, support)
        self.W = torch.nn.Parameter(dense_matrix(self.op).clone())
        self.gamma = IterationParameter(1.0 / self.L, layers, dtype=self.op.dtype)

    def update(self, k, x, y, rows):
        return x + self.gamma(k) * ((y - self.op(x)) @ self.W)

    @classmethod
    def from_alista(cls, alista: "ALISTA") -> "TiLISTA":
        """The TiLISTA that computes what ``alista`` does: its ``W``, steps, thresholds
        and support selection, if any."""
        op, W, gamma, theta, support = alista_parts(alista)
        net = cls(op, alista.layers, support=support)
        with torch.no_grad():
            net.W.copy_(W)
            net.gamma.value.copy_(gamma)
            net.theta.value.copy_(theta)
        return net


class ALISTA(_SparseNet):
    """``x <- eta(x - gamma_k W^T (A x - y), theta_k)`` with ``W`` fixed (a torch matrix,
    a PETSc Mat laid out like ``A`` or an Operator; :func:`.coherence.analytic_weight`),
    support selection by default; only ``gamma_k`` (start 1) and ``theta_k`` are learned.
    ``tied_step=True``: one step ``gamma`` for every layer (the start of a tied LISTA,
    :meth:`LISTA.from_alista`)."""

    def __init__(self, A, W, layers: int = 16, weight: float = 0.1, support: list[float] | None = None,
                 support_selection: bool = True, tied_step: bool = False):
        if support is None and support_selection:
            support = support_schedule(layers)
        super().__init__(A, layers, weight, support)
        self.W = as_operator(W)
        if self.W.shape != self.op.shape or self.W.m_local != self.op.m_local or self.W.n_local != self.op.n_local:
            raise ConfigurationError(
                f"ALISTA's W must have A's shape and layout: A is {self.op.shape} with local "
                f"({self.op.m_local}, {self.op.n_local}), W is {self.W.shape} with local "
                f"({self.W.m_local}, {self.W.n_local})")
        self.gamma = IterationParameter(1.0, layers, tied=tied_step, dtype=self.op.dtype)
        with torch.no_grad():  # thresholds on W's scale: the steps are ~1 instead of ~1/L
            self.theta.value.mul_(self.L)

    def update(self, k, x, y, rows):
        return x - self.gamma(k) * self.W.adjoint(self.op(x) - y)
