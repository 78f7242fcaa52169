"""Training unrolled networks on generated data: :class:`Trainer`.

Adam on the network's parameters, end-to-end or layer-wise (the progressive schedule of
the LISTA papers: the first ``t`` layers are trained for ``t = 1 .. K``, each stage at
the learning rates ``lr * decay`` for ``decay`` in ``decays``; with ``new_layer_first``,
as in Chen et al.'s reference code, the first rate of stage ``t`` trains only layer
``t``'s parameters, the next rates fine-tune all). Every step draws a fresh
batch from ``sample(batch, generator)``; the loss is the squared error summed over the
signal and averaged over the batch. The shared plumbing of :mod:`pnode.solvers` records
it: a :class:`~pnode.solvers.History` row per step, a tqdm bar (:class:`Progress`) and
checkpoints written by rank 0 (write then rename) holding the network, Adam's state, the
step, the history and the generator, so :meth:`Trainer.fit` resumes where it stopped.

On several ranks (``comm``) each rank holds its part of every signal; the ranks' losses
add up and :class:`pnode.distributed.GradientReducer` sums the replicated parameters'
gradients, so training is the same as on one rank.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import torch

from pnode.dataparallel import GradientReducer
from pnode.errors import ConfigurationError

from ..monitor import History, Progress
from ..tao import load_state, save_state
from .unrolled import keep_layer_gradient

Sampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


class Trainer:
    """Adam on ``net`` (called ``net(y, layers=t)``) with batches from ``sample``;
    ``new_layer_first=True`` (layer-wise only): the first rate of each stage trains the
    new layer alone (:func:`.unrolled.keep_layer_gradient`)."""

    def __init__(self, net: torch.nn.Module, sample: Sampler, *, steps: int = 100, batch: int = 128,
                 lr: float = 1e-3, decays: Sequence[float] = (1.0, 0.2, 0.02), layerwise: bool = True,
                 checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 100,
                 progress: bool = True, comm=None, seed: int = 0, new_layer_first: bool = False):
        if steps < 1 or batch < 1:
            raise ConfigurationError(f"steps and batch must be >= 1, got {steps} and {batch}")
        self.net, self.sample = net, sample
        self.steps, self.batch, self.lr, self.decays = steps, batch, lr, tuple(decays)
        self.layers = getattr(net, "layers", None) or getattr(net, "iterations", None)
        if self.layers is None:
            raise ConfigurationError("the network must say how many layers it has (.layers or .iterations)")
        self.stages = list(range(1, self.layers + 1)) if layerwise else [self.layers]
        self.new_layer_first = new_layer_first and layerwise
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.progress, self.comm = progress, comm
        self.generator = torch.Generator().manual_seed(seed)
        self.history = History()
        self.step = 0
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.reducer = GradientReducer(self.params, comm) if comm is not None and comm.Get_size() > 1 else None
        self._optimizer: torch.optim.Optimizer | None = None
        self._phase = -1
        self._saved_optimizer = None

    @property
    def total_steps(self) -> int:
        return len(self.stages) * len(self.decays) * self.steps

    def _phase_of(self, step: int) -> tuple[int, int]:
        phase = step // self.steps
        return phase, self.stages[phase // len(self.decays)]

    def _optimizer_for(self, phase: int) -> torch.optim.Optimizer:
        if phase != self._phase:
            self._optimizer = torch.optim.Adam(self.params, lr=self.lr * self.decays[phase % len(self.decays)])
            if self._saved_optimizer is not None and self._saved_optimizer[0] == phase:
                self._optimizer.load_state_dict(self._saved_optimizer[1])
            self._saved_optimizer = None
            self._phase = phase
        return self._optimizer

    def loss(self, x: torch.Tensor, y: torch.Tensor, layers: int) -> torch.Tensor:
        """This rank's share of the batch loss with the first ``layers`` layers."""
        return ((self.net(y, layers=layers) - x) ** 2).sum(-1).mean()

    def fit(self, until: int | None = None) -> History:
        """Train to step ``until`` (default :attr:`total_steps`), continuing from the
        checkpoint file if it exists."""
        if self.checkpoint is not None and os.path.exists(self.checkpoint):
            self.load(self.checkpoint)
        until = self.total_steps if until is None else min(int(until), self.total_steps)
        bar = Progress(self.total_steps, "training", self.comm, self.progress, initial=self.step)
        try:
            while self.step < until:
                phase, layers = self._phase_of(self.step)
                optimizer = self._optimizer_for(phase)
                x, y = self.sample(self.batch, self.generator)
                optimizer.zero_grad()
                if self.reducer is None:
                    loss = self.loss(x, y, layers)
                    loss.backward()
                    value = float(loss.detach())
                else:
                    with self.reducer.guard():
                        loss = self.loss(x, y, layers)
                        loss.backward()
                    value = self.reducer.reduce(loss.detach())
                if self.new_layer_first and phase % len(self.decays) == 0:
                    keep_layer_gradient(self.net, layers - 1)
                grad_norm = float(torch.sqrt(sum((p.grad ** 2).sum() for p in self.params if p.grad is not None)))
                optimizer.step()
                self.step += 1
                self.history.append(self.step, value, grad_norm)
                bar.update(loss=value, layers=layers)
                if self.checkpoint is not None and (self.step % self.checkpoint_every == 0
                                                    or self.step == until):
                    self.save(self.checkpoint)
        finally:
            bar.close()
        return self.history

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "step": self.step, "history": self.history.state_dict(),
                "generator": self.generator.get_state(), "phase": self._phase,
                "optimizer": self._optimizer.state_dict() if self._optimizer is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.step = int(state["step"])
        self.history.load_state_dict(state["history"])
        self.generator.set_state(state["generator"])
        self._phase = -1
        self._saved_optimizer = (int(state["phase"]), state["optimizer"]) if state["optimizer"] else None

    def save(self, path: str | os.PathLike) -> None:
        save_state(self.state_dict(), path, self.comm)

    def load(self, path: str | os.PathLike) -> None:
        self.load_state_dict(load_state(path))
