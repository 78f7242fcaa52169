"""MatOperator on a batch: one MatMatMult / MatTransposeMatMult with a dense block equals
one MatMult per vector, for AIJ and dense Mats; shells keep the per-vector products."""
import pytest
import torch

from pnode import MatOperator, TensorProducts, shell_mat
from pnode.startup import PETSc


def matrices(dense: torch.Tensor):
    P = PETSc()
    m, n = dense.shape
    aij = P.Mat().createAIJ((m, n), comm=P.COMM_SELF)
    aij.setUp()
    for i in range(m):
        aij.setValues(i, range(n), dense[i].numpy())
    aij.assemble()
    full = P.Mat().createDense((m, n), comm=P.COMM_SELF)
    full.setUp()
    full.getDenseArray()[:] = dense.numpy()
    full.assemble()
    return {"aij": aij, "dense": full}


@pytest.mark.parametrize("kind", ["aij", "dense"])
def test_block_products_equal_vector_products(kind):
    dense = torch.randn(7, 5, dtype=torch.float64)
    mat = matrices(dense)[kind]
    blocked, single = MatOperator(mat), MatOperator(mat, batched=False)
    assert blocked.batched and not single.batched
    x, y = torch.randn(4, 3, 5, dtype=torch.float64), torch.randn(6, 7, dtype=torch.float64)
    assert torch.allclose(blocked(x), x @ dense.T, rtol=1e-14, atol=1e-14)
    assert torch.allclose(blocked(x), single(x), rtol=1e-15, atol=1e-15)
    assert torch.allclose(blocked(y, transpose=True), y @ dense, rtol=1e-14, atol=1e-14)
    assert torch.allclose(blocked(y, transpose=True), single(y, transpose=True), rtol=1e-15, atol=1e-15)


def test_block_product_gradient_is_the_transposed_block_product():
    dense = torch.randn(6, 4, dtype=torch.float64)
    op = MatOperator(matrices(dense)["aij"])
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64)
    (op(x) * w).sum().backward()
    assert torch.allclose(x.grad, w @ dense, rtol=1e-14, atol=1e-14)


def test_shell_keeps_vector_products_and_reports_a_missing_transpose():
    dense = torch.randn(3, 4, dtype=torch.float64)
    shell = shell_mat(TensorProducts(lambda v: dense @ v), 3, 4)
    op = MatOperator(shell, transpose_available=False)
    assert not op.batched
    x = torch.randn(2, 4, dtype=torch.float64)
    assert torch.allclose(op(x), x @ dense.T, rtol=1e-14)
    with pytest.raises(Exception, match="no transpose"):
        op(torch.randn(2, 3, dtype=torch.float64), transpose=True)
