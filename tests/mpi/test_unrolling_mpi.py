"""Under mpiexec -n 2: unrolled networks on operators split over the ranks give what one
rank gives. A deblurring PGD with a learned patch prior (DMDA blur, ghost exchange),
trained a few steps, agrees with the one-rank run to 1e-10; ALISTA with support
selection on an AIJ split by rows, ADMM and Chambolle-Pock (reductions over the ranks), the
deep-equilibrium fixed point (SNES on the split Vec) with its implicit gradient,
and the ray-sum operator, too."""
import math

import torch
from mpi4py import MPI

from pnode.distributed import create_dmda
from pnode.comm import allreduce_sum_
from pnode.solvers.unrolling import (ALISTA, Box, Equilibrium, L2Ball, Learned, ProximalStep, PatchPrior, Trainer, Unrolled, analytic_weight,
                                     as_operator, gather_images, gaussian_blur, owned_part,
                                     piecewise_smooth_image, ray_sum)
from pnode.startup import PETSc
from unrolling_cases import aij, local_cols, local_rows, sparse_problem

WORLD = MPI.COMM_WORLD
N = 16


def deblurring(comm):
    da = create_dmda((N, N), stencil_width=2, boundary="ghosted", comm=comm)
    blur = gaussian_blur(da, 1.2)
    op = as_operator(blur)
    torch.manual_seed(0)
    prior = PatchPrior(da, channels=4, depth=2)
    net = Unrolled(op, "pgd", 4, prox=Learned(prior), weight=0.1, lipschitz=1.0)

    def sample(batch, generator):
        seed = int(torch.randint(0, 2 ** 31, (1,), generator=generator))
        imgs = torch.stack([piecewise_smooth_image(N, seed + b) for b in range(batch)])
        x = owned_part(da, imgs)
        noise = 0.01 * torch.randn(imgs.shape, generator=generator, dtype=torch.float64)
        return x, op(x) + owned_part(da, noise)

    trainer = Trainer(net, sample, steps=3, batch=2, lr=1e-3, decays=(1.0,), layerwise=False,
                      progress=False, comm=comm)
    trainer.fit()
    x, y = sample(2, torch.Generator().manual_seed(9))
    with torch.no_grad():
        out = net(y)
    return gather_images(da, out), torch.tensor(trainer.history["loss"])


def test_deblurring_on_two_ranks_equals_one_rank():
    out, losses = deblurring(WORLD)
    ref, ref_losses = deblurring(MPI.COMM_SELF)
    assert len(losses) == 3 and bool(torch.isfinite(out).all())
    assert torch.allclose(losses, ref_losses, rtol=1e-10, atol=0)
    assert float((out - ref).abs().max()) <= 1e-10 * max(1.0, float(ref.abs().max()))


def test_alista_with_support_selection_on_a_split_aij():
    A, x, y = sparse_problem(24, 48, batch=4, p=0.1)
    mat = aij(A, PETSc().COMM_WORLD)
    W_mat = analytic_weight(mat)
    W = analytic_weight(A)
    torch.manual_seed(1)
    dist, whole = ALISTA(mat, W_mat, 6), ALISTA(A, W, 6)
    with torch.no_grad():
        for net in (dist, whole):
            net.gamma.value.copy_(torch.linspace(0.8, 1.1, 6, dtype=torch.float64))
    rows = slice(*W_mat.getOwnershipRange())
    assert torch.allclose(torch.from_numpy(W_mat.getDenseArray().copy()), W[rows], rtol=1e-8, atol=1e-10)
    got = dist(local_rows(mat, y))
    ref = local_cols(mat, whole(y))
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-11)


def test_ray_sum_on_two_ranks_equals_one_rank():
    angles = [0.0, 0.7, math.pi / 2]
    img = piecewise_smooth_image(N, 4)
    out = []
    for comm in (WORLD, MPI.COMM_SELF):
        da = create_dmda((N, N), stencil_width=1, boundary="ghosted", comm=comm)
        op = as_operator(ray_sum(da, angles, detectors=20))
        proj = op(owned_part(da, img[None]))
        out.append(torch.cat(comm.allgather(proj.detach()), dim=-1))
    assert torch.allclose(out[0], out[1], rtol=1e-13, atol=1e-15)


def admm_and_primal_dual(comm):
    """Outputs and scalar gradients of ADMM (CG x-update: dots over the ranks) and
    Chambolle-Pock with an l2-ball prox (a norm over the ranks) on the blur."""
    da = create_dmda((N, N), stencil_width=2, boundary="ghosted", comm=comm)
    op = as_operator(gaussian_blur(da, 1.0))
    x = owned_part(da, piecewise_smooth_image(N, 5)[None])
    y = op(x)
    results = []
    for net in (Unrolled(op, "admm", 3, prox=Box(0, 1), cg_iterations=4, lipschitz=1.0),
                Unrolled(op, "chambolle-pock", 4, prox=L2Ball(5.0, comm=op.comm), lipschitz=1.0)):
        out = net(y)
        loss = ((out - x) ** 2).sum()  # this rank's share; the total is the ranks' sum
        grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)  # projections: no weight
        grad = torch.cat([g.reshape(-1) for g in grads if g is not None])
        results.append((gather_images(da, out), allreduce_sum_(grad, op.comm)))
    return results


def test_admm_and_chambolle_pock_on_two_ranks_equal_one_rank():
    for (out, grad), (ref, ref_grad) in zip(admm_and_primal_dual(WORLD), admm_and_primal_dual(MPI.COMM_SELF)):
        assert float((out - ref).abs().max()) <= 1e-12
        assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


def equilibrium(comm):
    """The fixed point and the implicit gradient of a LASSO step on a split AIJ."""
    A, x, y = sparse_problem(30, 40, batch=2, p=0.1)
    mat = aij(A, PETSc().COMM_WORLD if comm is WORLD else PETSc().COMM_SELF)
    step = ProximalStep(mat, "soft", weight=0.1, lipschitz=float(torch.linalg.matrix_norm(A, 2)) ** 2)
    deq = Equilibrium(step, solver="anderson", gradient="implicit", rtol=1e-13, atol=1e-13, max_it=1000)
    out = deq(local_rows(mat, y))
    loss = ((out - local_cols(mat, x)) ** 2).sum()  # this rank's share
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(step.parameters()))])
    return torch.cat(comm.allgather(out.detach()), dim=-1), allreduce_sum_(grad, step.op.comm)


def test_equilibrium_on_two_ranks_equals_one_rank():
    (out, grad), (ref, ref_grad) = equilibrium(WORLD), equilibrium(MPI.COMM_SELF)
    assert float((out - ref).abs().max()) <= 1e-10
    assert torch.allclose(grad, ref_grad, rtol=1e-7, atol=1e-12)
