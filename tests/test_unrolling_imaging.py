"""Imaging operators and the patch prior on one rank: the DMDA blur equals a torch
convolution with zero padding (or wrap-around), the ray sum at angle 0 is the pixel rows'
sums, and the patch prior is the same convolutions with zero padding."""
import math

import torch

from pnode.distributed import create_dmda
from pnode.distributed import laplacian
from pnode.solvers.unrolling import (PatchPrior, as_operator, gaussian_blur, gaussian_kernel, laplacian_matrix,
                                     piecewise_smooth_image, ray_sum)
from pnode.startup import PETSc


def conv_reference(img, sigma, radius, periodic):
    g = torch.from_numpy(gaussian_kernel(sigma, radius))
    k = torch.outer(g, g)[None, None]
    x = img[None, None]
    if periodic:
        x = torch.nn.functional.pad(x, (radius,) * 4, mode="circular")
        return torch.nn.functional.conv2d(x, k)[0, 0]
    return torch.nn.functional.conv2d(x, k, padding=radius)[0, 0]


def test_gaussian_blur_is_the_convolution():
    img = piecewise_smooth_image(12)
    for boundary in ("ghosted", "periodic"):
        da = create_dmda((12, 12), stencil_width=2, boundary=boundary, comm=PETSc().COMM_SELF)
        op = as_operator(gaussian_blur(da, 1.0))
        got = op(img.reshape(1, -1)).view(12, 12)
        assert torch.allclose(got, conv_reference(img, 1.0, 2, boundary == "periodic"), rtol=1e-13, atol=1e-15)
        y = torch.randn(2, 144, dtype=torch.float64)
        xx = torch.randn(2, 144, dtype=torch.float64)
        assert torch.allclose(op.dot(op(xx), y), op.dot(xx, op.adjoint(y)), rtol=1e-12)


def test_ray_sum_integrates_a_gaussian_bump_along_every_ray():
    n, sigma = 64, 0.1
    da = create_dmda((n, n), stencil_width=1, boundary="ghosted", comm=PETSc().COMM_SELF)
    angles = [0.0, 0.4, math.pi / 4, math.pi / 2, 2.5]
    op = as_operator(ray_sum(da, angles, detectors=24))
    assert op.shape == (5 * 24, n * n)
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    Y, X = torch.meshgrid(c, c, indexing="ij")
    bump = torch.exp(-((X - 0.5) ** 2 + (Y - 0.5) ** 2) / (2 * sigma ** 2))
    proj = op(bump.reshape(1, -1)).view(5, 24)
    # a rotationally symmetric bump: the integral along a ray depends on its offset s only
    s = (torch.arange(24, dtype=torch.float64) + 0.5) / 24 * math.sqrt(2) - math.sqrt(0.5)
    exact = math.sqrt(2 * math.pi) * sigma * torch.exp(-s ** 2 / (2 * sigma ** 2))
    # bilinear sampling: an error of O((h / sigma)^2) of the peak
    assert float((proj - exact).abs().max()) < 5e-3 * float(exact.max())


def test_patch_prior_is_the_zero_padded_convolution():
    da = create_dmda((10, 9), stencil_width=2, boundary="ghosted", comm=PETSc().COMM_SELF)
    prior = PatchPrior(da, channels=4, depth=2)
    assert prior.owned_shape == (9, 10)
    v = torch.randn(3, 90, dtype=torch.float64)
    x = v.view(3, 1, 9, 10)
    conv1, conv2 = prior.net[0], prior.net[2]
    ref = conv2(torch.relu(conv1(torch.nn.functional.pad(x, (2,) * 4))))
    assert torch.allclose(prior(v), ref.reshape(3, 90), rtol=1e-13, atol=1e-14)


def test_laplacian_matrix_is_the_stencil_of_pnode_stencils():
    img = piecewise_smooth_image(11, 2)
    da = create_dmda((11, 11), stencil_width=1, boundary="ghosted", comm=PETSc().COMM_SELF)
    got = as_operator(laplacian_matrix(da))(img.reshape(1, -1)).view(11, 11)
    ref = -laplacian(torch.nn.functional.pad(img, (1, 1, 1, 1)), 1.0, 1, 2)
    assert torch.allclose(got, ref, rtol=1e-14, atol=1e-14)
