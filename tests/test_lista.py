"""The LISTA family: ALISTA's analytic weight (PETSc CG) against the dense closed form and
its constraints, the networks' starting points against ISTA and against a trained ALISTA
(``from_alista``), ALISTA on a PETSc Mat against the tensor network, and the trainer (loss
goes down; a resumed run equals an unbroken one)."""
import pytest
import torch

from pnode import ConfigurationError
from pnode.solvers.unrolling import (ALISTA, LISTA, LISTACP, LISTACPSS, TiLISTA, Trainer, Unrolled,
                                     analytic_weight, bernoulli_gaussian, gaussian_dictionary,
                                     SupportSelection, measurements, mutual_coherence, nmse_db, support_schedule)
from unrolling_cases import aij, sparse_problem


def test_analytic_weight_is_the_constrained_minimiser():
    A, _, _ = sparse_problem(20, 40)
    W = analytic_weight(A)
    assert torch.allclose(torch.diagonal(W.T @ A), torch.ones(40, dtype=torch.float64), atol=1e-10)
    G = A @ A.T
    ref = torch.linalg.solve(G, A)
    ref = ref / (ref * A).sum(0, keepdim=True)
    assert torch.allclose(W, ref, rtol=1e-8, atol=1e-10)
    assert float((W.T @ A).norm()) < float((A.T @ A).norm())  # lower Frobenius coherence
    assert mutual_coherence(W, A) < 1.0
    mat = analytic_weight(aij(A))
    assert torch.allclose(torch.from_numpy(mat.getDenseArray().copy()), W, rtol=1e-8, atol=1e-10)


def test_networks_start_as_ista():
    A, _, y = sparse_problem()
    ista = Unrolled(A, "ista", 4, weight=0.1, learn=False)
    ref = ista(y)
    for net in (LISTA(A, 4), LISTA(A, 4, tied=False), LISTACP(A, 4), TiLISTA(A, 4)):
        assert torch.allclose(net(y), ref, rtol=1e-10, atol=1e-12), type(net).__name__
    assert LISTA(A, 4).W1.shape == (1, 40, 20) and LISTACP(A, 4).W.shape == (4, 20, 40)
    cpss = LISTACPSS(A, 4)
    assert [m.fraction for m in cpss.proxes] == support_schedule(4)


def trained_like(alista: ALISTA) -> ALISTA:
    """``alista`` with steps and thresholds moved off their start, one value per layer."""
    with torch.no_grad():
        alista.gamma.value.mul_(torch.linspace(0.7, 1.3, alista.gamma.value.numel(), dtype=torch.float64))
        alista.theta.value.mul_(torch.linspace(1.5, 0.4, alista.layers, dtype=torch.float64))
    return alista


def test_networks_start_as_the_alista_they_come_from():
    A, _, y = sparse_problem()
    W = analytic_weight(A)
    ss, plain, tied = (trained_like(ALISTA(A, W, 4, **kw)) for kw in
                       ({}, {"support_selection": False}, {"support_selection": False, "tied_step": True}))
    assert tied.gamma.value.numel() == 1 and plain.gamma.value.numel() == 4
    cases = [(LISTACPSS, ss), (LISTACP, ss), (TiLISTA, ss), (LISTACP, plain), (TiLISTA, plain), (LISTACP, tied),
             (LISTA, tied)]
    for kind, alista in cases:
        net = kind.from_alista(alista)
        assert type(net) is kind
        assert torch.allclose(net(y), alista(y), rtol=1e-10, atol=1e-12), (kind.__name__, alista)
        assert not torch.allclose(net(y), Unrolled(A, "ista", 4, weight=0.1, learn=False)(y))
    assert isinstance(LISTACP.from_alista(ss).proxes[0], SupportSelection)
    with pytest.raises(ConfigurationError, match="tied_step=True"):
        LISTA.from_alista(plain)
    with pytest.raises(ConfigurationError, match="tied_step=True"):
        LISTA.from_alista(ss)
    with pytest.raises(ConfigurationError, match="with support selection"):
        LISTACPSS.from_alista(plain)
    for kind in (LISTA, LISTACP, LISTACPSS, TiLISTA):
        with pytest.raises(ConfigurationError, match="needs an ALISTA"):
            kind.from_alista(LISTACP(A, 4))


def test_alista_on_a_petsc_mat_equals_the_tensor_network():
    A, x, y = sparse_problem()
    W = analytic_weight(A)
    nets = [ALISTA(A, W, 5), ALISTA(aij(A), analytic_weight(aij(A)), 5)]
    assert sum(p.numel() for p in nets[0].parameters()) == 10  # 2K scalars
    nets[1].load_state_dict(nets[0].state_dict())
    assert torch.allclose(nets[0](y), nets[1](y), rtol=1e-10, atol=1e-12)
    g = [torch.autograd.grad(((n(y) - x) ** 2).sum(), list(n.parameters())) for n in nets]
    for a, b in zip(*g):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    with pytest.raises(ConfigurationError, match="A's shape"):
        ALISTA(A, W[:, :30], 5)


def sampler(A):
    def sample(batch, generator):
        x = bernoulli_gaussian(batch, A.shape[1], 0.1, generator)
        return x, measurements(A, x)
    return sample


def test_trainer_learns_and_resumes(tmp_path):
    A = gaussian_dictionary(15, 30, torch.Generator().manual_seed(1))
    x, _ = sampler(A)(200, torch.Generator().manual_seed(2))
    y = measurements(A, x)

    def trainer(**kwargs):
        net = ALISTA(A, analytic_weight(A), 3)
        return net, Trainer(net, sampler(A), steps=10, batch=32, lr=1e-2, progress=False, **kwargs)

    net, whole = trainer()
    before = nmse_db(net(y), x)
    history = whole.fit()
    assert len(history) == whole.total_steps == 3 * 3 * 10
    assert nmse_db(net(y), x) < before - 3.0
    path = tmp_path / "ckpt.pt"
    _, head = trainer(checkpoint=path, checkpoint_every=10)
    head.fit(until=40)  # stopped in the middle of stage 2
    assert torch.load(path, weights_only=True)["step"] == 40
    resumed, tail = trainer(checkpoint=path)
    tail.fit()
    assert tail.step == 90 and len(tail.history) == 90
    assert torch.equal(resumed.gamma.value, net.gamma.value) and torch.equal(resumed.theta.value, net.theta.value)
    assert tail.history["loss"] == whole.history["loss"]


def test_new_layer_first_trains_only_the_new_layer():
    A = gaussian_dictionary(15, 30, torch.Generator().manual_seed(1))
    for net in (LISTACP(A, 3), TiLISTA(A, 3), LISTA(A, 3, tied=True)):
        trainer = Trainer(net, sampler(A), steps=4, batch=16, lr=1e-2, progress=False, new_layer_first=True)
        trainer.fit(until=12)  # stage 1 done
        before = {name: p.detach().clone() for name, p in net.named_parameters()}
        trainer.fit(until=16)  # stage 2, first rate: layer 2 alone
        after = dict(net.named_parameters())
        for name, p in before.items():
            if p.shape[0] == 3:  # a per-layer stack: only row 1 moves
                assert torch.equal(after[name][[0, 2]], p[[0, 2]]), (type(net).__name__, name)
                assert not torch.equal(after[name][1], p[1]), (type(net).__name__, name)
            else:  # shared by the layers: frozen while the new layer trains
                assert torch.equal(after[name], p), (type(net).__name__, name)
        trainer.fit(until=20)  # stage 2, second rate: everything of layers 1-2 fine-tuned
        assert not torch.equal(net.theta.value[0], before["theta.value"][0])
        assert torch.equal(net.theta.value[2], before["theta.value"][2])


def test_networks_in_single_precision():
    A, x, y = sparse_problem()
    W = analytic_weight(A)
    for make in (lambda B: LISTA(B, 4), lambda B: LISTACPSS(B, 4), lambda B: TiLISTA(B, 4),
                 lambda B: ALISTA(B, W.float() if B.dtype == torch.float32 else W, 4)):
        double, single = make(A), make(A.float())
        assert all(p.dtype == torch.float32 for p in single.parameters())
        out = single(y.float())
        assert out.dtype == torch.float32
        assert torch.allclose(out.double(), double(y), rtol=1e-4, atol=1e-5)


def consumers_of(output: torch.Tensor, parameter: torch.Tensor) -> list[str]:
    """The autograd nodes whose gradient goes straight into ``parameter``."""
    seen, stack, names = set(), [output.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None and getattr(child, "variable", None) is parameter:
                names.append(type(node).__name__)
            stack.append(child)
    return names


def test_weight_stacks_are_split_once_per_forward():
    A, _, y = sparse_problem()
    for net, stack in ((LISTACPSS(A, 6), "W"), (LISTA(A, 6, tied=False), "S")):
        # one unbind per pass: the backward stacks the rows' gradients (indexing W[k] in
        # each layer added a full-size zero gradient per layer)
        assert consumers_of(net(y), getattr(net, stack)) == ["UnbindBackward0"]
