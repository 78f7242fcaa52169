"""pnode.solvers hierarchies: residual networks coarsened in depth (and neural ODEs in TS
step counts), their transfer maps."""
import pytest
import torch

from pnode.errors import ConfigurationError
from pnode.solvers import (DepthHierarchy, EulerNeuralODE, ResidualNetwork, StepCountHierarchy, mlp_resnet,
                           residual_levels)
from solver_cases import DT, flat_params


def blocks_of(model, flat):
    """The flat parameter vector of ``model`` cut into (stem, [blocks], head)."""
    sizes = [sum(p.numel() for p in part.parameters()) for part in (model.stem, *model.blocks, model.head)]
    parts = list(torch.split(flat, sizes))
    return parts[0], parts[1:-1], parts[-1]


def test_prolongation_copies_shared_layers_and_interpolates_new_blocks():
    models = mlp_resnet(2, 3, 1, coarse_blocks=3, levels=3)
    H = DepthHierarchy(models)
    assert [len(m.blocks) for m in models] == [3, 5, 9]
    assert [m.step for m in models] == [0.5, 0.25, 0.125]  # T / (L - 1)
    for level in (1, 2):
        coarse, fine = models[level - 1], models[level]
        xc = torch.randn(H.pvecs[level - 1].numel, dtype=DT)
        xf = H.matrix(level) @ xc
        cs, cb, ch = blocks_of(coarse, xc)
        fs, fb, fh = blocks_of(fine, xf)
        assert torch.equal(fs, cs) and torch.equal(fh, ch)
        for k, block in enumerate(fb):
            expected = cb[k // 2] if k % 2 == 0 else 0.5 * (cb[k // 2] + cb[k // 2 + 1])
            assert torch.allclose(block, expected, rtol=0, atol=1e-15)
        # injection: fine block 2k and the shared layers, so injection after prolongation is the identity
        R = H.matrix(level, "restriction")
        rs, rb, rh = blocks_of(coarse, R @ xf)
        assert torch.equal(rs, fs) and torch.equal(rh, fh) and all(torch.equal(b, fb[2 * k]) for k, b in enumerate(rb))
        assert torch.allclose(R @ H.matrix(level), torch.eye(xc.numel(), dtype=DT), atol=0)
        assert torch.linalg.matrix_norm(H.matrix(level), 2) <= H.prolongation_norm(level) * (1 + 1e-12)
    H.destroy()


def test_full_weighting_is_a_scaled_transpose_of_prolongation():
    models = mlp_resnet(2, 3, 1, coarse_blocks=3, levels=3)
    H = DepthHierarchy(models, restriction="full_weighting")
    for level in (1, 2):
        P, R = H.matrix(level), H.matrix(level, "restriction")
        scale = R.sum(1) / P.T.sum(1)  # one positive factor per coarse row
        assert torch.all(scale > 0)
        assert torch.allclose(R, scale[:, None] * P.T, rtol=0, atol=1e-15)
        # interior blocks: 1/4, 1/2, 1/4 of fine blocks 2k-1, 2k, 2k+1; constants are kept
        assert torch.allclose(R @ torch.ones(P.shape[0], dtype=DT), torch.ones(P.shape[1], dtype=DT), atol=1e-15)
        assert sorted(set(R[R > 0].tolist())) == [0.25, 1 / 3, 0.5, 2 / 3, 1.0]
    # the distributed product equals the dense map
    fine, coarse = H.pvecs[2], H.pvecs[1]
    X, Y = fine.duplicate(), coarse.duplicate()
    xf = torch.randn(fine.numel, dtype=DT)
    fine.local_of(X).copy_(xf)
    X.stateIncrease()
    H.restrict(2, X, Y)
    assert torch.allclose(coarse.to_full(Y), H.matrix(2, "restriction") @ xf, atol=1e-14)
    H.restrict_gradient(2, X, Y)
    assert torch.allclose(coarse.to_full(Y), H.matrix(2).T @ xf, atol=1e-14)
    H.destroy()


def test_a_prolongated_coarse_network_approximates_the_coarse_network():
    """Forward Euler with half the step and interpolated weights: the fine network built
    from a coarse one computes nearly the same function (first order in the step)."""
    torch.manual_seed(5)
    models = mlp_resnet(2, 4, 1, coarse_blocks=5, levels=2, horizon=1.0)
    H = DepthHierarchy(models)
    coarse, fine = models
    fine_flat = H.matrix(1) @ flat_params(coarse)
    H.pvecs[1].buffer.assign(fine_flat)
    x = torch.randn(32, 2, dtype=DT)
    with torch.no_grad():
        gap = (fine(x) - coarse(x)).norm() / coarse(x).norm()
    assert gap < 0.05
    H.destroy()


def test_prolong_models_sets_each_finer_level_to_the_prolongation_of_the_one_below():
    torch.manual_seed(2)
    models = mlp_resnet(2, 3, 1, coarse_blocks=3, levels=3)
    H = DepthHierarchy(models)
    x0, x1, x2 = (flat_params(m).clone() for m in models)
    H.prolong_models(1)
    assert torch.equal(flat_params(models[0]), x0) and torch.equal(flat_params(models[1]), x1)
    assert torch.allclose(flat_params(models[2]), H.matrix(2) @ x1, rtol=0, atol=1e-15)
    assert not torch.allclose(flat_params(models[2]), x2)
    H.prolong_models()
    assert torch.equal(flat_params(models[0]), x0)
    assert torch.allclose(flat_params(models[1]), H.matrix(1) @ x0, rtol=0, atol=1e-15)
    assert torch.allclose(flat_params(models[2]), H.matrix(2) @ H.matrix(1) @ x0, rtol=0, atol=1e-15)
    # the finest weights are smooth in depth: injection gives the coarsest level back
    R = H.matrix(1, "restriction") @ H.matrix(2, "restriction")
    assert torch.equal(R @ flat_params(models[2]), x0)
    for bad in (-1, 2):
        with pytest.raises(ConfigurationError, match="start must lie in"):
            H.prolong_models(bad)
    H.destroy()


def test_convolutional_residual_networks_form_a_hierarchy():
    def block():
        return torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1), torch.nn.Tanh()).to(DT)
    stem, head = torch.nn.Conv2d(1, 2, 3, padding=1).to(DT), torch.nn.Sequential(torch.nn.Flatten(),
                                                                                  torch.nn.Linear(32, 3)).to(DT)
    models = residual_levels(stem, block, head, coarse_blocks=2, levels=3)
    H = DepthHierarchy(models)
    P = H.matrix(2) @ H.matrix(1)
    assert P.shape == (H.pvecs[2].numel, H.pvecs[0].numel)
    assert models[2](torch.randn(2, 1, 4, 4, dtype=DT)).shape == (2, 3)
    H.destroy()


def test_levels_that_do_not_match_are_refused():
    coarse, fine = mlp_resnet(2, 3, 1, coarse_blocks=3, levels=2)
    wrong_depth = mlp_resnet(2, 3, 1, coarse_blocks=6, levels=1)[0]
    with pytest.raises(ConfigurationError, match="level 1 has 6 blocks; a level above one of 3 blocks needs 5"):
        DepthHierarchy([coarse, wrong_depth])
    wider = mlp_resnet(2, 4, 1, coarse_blocks=5, levels=1)[0]
    with pytest.raises(ConfigurationError, match="block 0 of level 1 has parameters"):
        DepthHierarchy([coarse, wider])
    longer = mlp_resnet(2, 3, 1, coarse_blocks=5, levels=1, horizon=2.0)[0]
    with pytest.raises(ConfigurationError, match="horizon"):
        DepthHierarchy([coarse, longer])
    other_head = ResidualNetwork(fine.stem, list(fine.blocks), torch.nn.Linear(3, 2).to(DT))
    with pytest.raises(ConfigurationError, match="stem and head of level 1"):
        DepthHierarchy([coarse, other_head])
    with pytest.raises(ConfigurationError, match="not an instance of ResidualNetwork"):
        DepthHierarchy([coarse, torch.nn.Linear(2, 1)])
    with pytest.raises(ConfigurationError, match="at least two levels"):
        DepthHierarchy([coarse])
    with pytest.raises(ConfigurationError, match="restriction must be"):
        DepthHierarchy([coarse, fine], restriction="average")
    H = DepthHierarchy([coarse, fine])
    with pytest.raises(ConfigurationError, match="level 0 has no coarser level"):
        H.prolongation_norm(0)
    H.destroy()


def test_a_neural_ode_with_per_step_weights_is_the_residual_recursion_through_the_ts():
    torch.manual_seed(4)
    coarse, fine = mlp_resnet(2, 4, 1, coarse_blocks=3, levels=2, horizon=1.5, network=EulerNeuralODE)
    x = torch.rand(10, 2, dtype=DT)
    # the TS's forward Euler and TSAdjoint against the recursion by autograd
    out, ref = fine(x), ResidualNetwork.forward(fine, x)
    assert torch.allclose(out, ref, rtol=1e-13, atol=1e-15)
    params = list(fine.parameters())
    got = torch.autograd.grad((out ** 2).sum(), params)
    want = torch.autograd.grad((ref ** 2).sum(), params)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-12, atol=1e-15)
    H = StepCountHierarchy([coarse, fine])
    # DepthHierarchy's maps: fine step 2k takes coarse step k's weights, step 2k+1 their mean
    P = H.matrix(1)
    _, cb, _ = blocks_of(coarse, flat_params(coarse))
    _, fb, _ = blocks_of(fine, P @ flat_params(coarse))
    assert torch.equal(fb[2], cb[1]) and torch.allclose(fb[3], 0.5 * (cb[1] + cb[2]), rtol=0, atol=1e-15)
    H.destroy()
    with pytest.raises(ConfigurationError, match="not an instance of EulerNeuralODE"):
        StepCountHierarchy(mlp_resnet(2, 4, 1, coarse_blocks=3, levels=2))
