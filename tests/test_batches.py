"""pnode.solvers hybrid mode: the mini-batch grows when progress stalls, up to the data set."""
import pytest
import torch

from pnode.errors import ConfigurationError
from pnode.solvers import RMTR, BatchGrowth, HybridBatches
from solver_cases import resnet_regression


def test_the_batch_grows_after_patience_steps_without_enough_decrease():
    rule = BatchGrowth(10, 45, factor=2, patience=2, tol=0.1)
    grew = [rule.record(x) for x in (1.0, 0.8, 0.75, 0.74, 0.5, 0.49, 0.49, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2)]
    # 0.75 and 0.74 are within 10% of 0.8: grow to 20; the record restarts (0.5 is the first)
    assert rule.sizes == [10, 10, 10, 10, 20, 20, 20, 40, 40, 40, 40, 45, 45, 45]
    assert grew == [False, False, False, True, False, False, True, False, False, False, True, False, False]
    assert rule.full and not rule.record(0.2)  # at the whole data set it stays
    with pytest.raises(ConfigurationError, match="initial <= total"):
        BatchGrowth(0, 10)
    with pytest.raises(ConfigurationError, match="factor > 1"):
        BatchGrowth(2, 10, factor=1.0)


def test_batches_cover_the_data_and_the_full_batch_is_one_closure():
    rule = BatchGrowth(4, 10, patience=1, tol=0.0)
    batches = HybridBatches(10, rule, seed=3)
    seen = torch.cat([batches.next()[0] for _ in range(2)])
    assert len(set(seen.tolist())) == 8  # one pass draws without repetition
    rule.size = 10
    c1 = batches.closure(lambda model, idx: idx.sum().to(torch.float64))
    c2 = batches.closure(lambda model, idx: idx.sum().to(torch.float64))
    assert c1 is c2 and float(c1(None)) == sum(range(10)) / 10
    with pytest.raises(ConfigurationError, match="data set has 9"):
        HybridBatches(9, rule)


def test_rmtr_in_the_hybrid_mode_reaches_the_full_batch_and_decreases_the_loss():
    H, _ = resnet_regression(None, levels=2)
    from solver_cases import regression_data
    x, y = regression_data(48)
    rule = BatchGrowth(8, 48, factor=2, patience=1, tol=0.05)
    batches = HybridBatches(48, rule, seed=0)
    opt = RMTR(H)

    def loss_sum(model, idx):
        return 0.5 * ((model(x[idx]) - y[idx]) ** 2).sum()
    full = lambda model: loss_sum(model, torch.arange(48)) / 48  # noqa: E731
    first = float(full(H.models[-1]).detach())
    for _ in range(12):
        rule.record(opt.step(batches.closure(loss_sum)))
    assert rule.full and 48 in rule.sizes
    assert float(full(H.models[-1]).detach()) < 0.5 * first
    opt.destroy()
    H.destroy()
