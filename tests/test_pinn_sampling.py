"""pnode.pinn domains and samplers."""
import pytest
import torch

from pnode.errors import ConfigurationError
from pnode.pinn import SAMPLERS, Box, Interval, Rectangle, SpaceTime, resample_by_residual, sample_box


@pytest.mark.parametrize("method", SAMPLERS)
def test_samplers_fill_the_box_reproducibly(method):
    box = Box([-1.0, 0.0, 2.0], [1.0, 0.5, 3.0])
    X = box.sample(64, method, seed=3)
    assert X.dtype == torch.float64 and X.shape[1] == 3
    assert X.shape[0] == (64 if method != "grid" else 4 ** 3)
    assert bool(box.contains(X).all())
    assert torch.equal(X, box.sample(64, method, seed=3))
    # the points spread over the box: every half of every axis holds some
    for axis, (lo, hi) in enumerate(zip(box.lower, box.upper)):
        mid = 0.5 * (lo + hi)
        assert 0.2 < float((X[:, axis] < mid).double().mean()) < 0.8


def test_latin_hypercube_and_sobol_are_stratified():
    X = sample_box([0.0], [1.0], 16, "lhs", seed=0)
    assert sorted(torch.floor(X[:, 0] * 16).long().tolist()) == list(range(16))
    S = sample_box([0.0, 0.0], [1.0, 1.0], 16, "sobol", seed=0)
    assert all(int(((S[:, 0] >= k / 4) & (S[:, 0] < (k + 1) / 4)).sum()) == 4 for k in range(4))


def test_boundary_and_initial_points():
    rect = Rectangle(0.0, 2.0, 0.0, 1.0)
    B = rect.boundary(60, "uniform", seed=1)
    on_face = (B[:, 0] == 0) | (B[:, 0] == 2) | (B[:, 1] == 0) | (B[:, 1] == 1)
    assert bool(on_face.all()) and bool(rect.contains(B).all())
    assert abs(int(((B[:, 0] == 0) | (B[:, 0] == 2)).sum()) - 20) <= 2  # faces share by length
    st = SpaceTime(Interval(-1.0, 1.0), 0.0, 1.0)
    I = st.initial(10)
    assert bool((I[:, 1] == 0).all()) and I.shape == (10, 2)
    Bt = st.boundary(20)
    assert bool((Bt[:, 0].abs() == 1).all()) and float(Bt[:, 1].max()) > 0.5


def test_bad_boxes_and_samplers_are_named():
    with pytest.raises(ConfigurationError, match="unknown sampler"):
        sample_box([0.0], [1.0], 4, "random")
    with pytest.raises(ConfigurationError, match="lower < upper"):
        Box([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ConfigurationError, match=r"shape \(N, 2\)"):
        Rectangle(0, 1, 0, 1).contains(torch.zeros(3, 3, dtype=torch.float64))


def test_resampling_by_residual_favours_large_residuals():
    cand = sample_box([0.0], [1.0], 2000, "uniform", seed=0)
    picked = resample_by_residual(lambda X: torch.exp(20 * X[:, 0]), cand, 200, k=1.0, c=0.0, seed=1)
    assert picked.shape == (200, 1)
    assert float((picked[:, 0] > 0.8).double().mean()) > 0.9
    uniform = resample_by_residual(lambda X: torch.exp(20 * X[:, 0]), cand, 200, c=1e6, seed=1)
    assert float((uniform[:, 0] > 0.8).double().mean()) < 0.4
    with pytest.raises(ConfigurationError, match="not finite"):
        resample_by_residual(lambda X: X[:, 0] / 0.0, cand, 10)
