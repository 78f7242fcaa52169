"""Jobs of two ranks where one rank fails alone end in seconds with its traceback
(launched with mpiexec from the serial suite: before the fix they waited forever)."""
import subprocess
import sys
import textwrap

import pytest

_SCRIPTS = {
    # a rank that raises outside any pnode call while the other waits in the reduction
    "uncaught": """
        import torch, pnode
        from mpi4py import MPI
        from pnode.distributed import GradientReducer
        f = torch.nn.Linear(2, 2).double()
        reducer = GradientReducer(f.parameters())
        if MPI.COMM_WORLD.Get_rank() == 1:
            raise ValueError("rank one broke")
        reducer.reduce()
    """,
    # a rank whose right-hand side raises inside a solve on both ranks' TS
    "callback": """
        import torch, pnode
        from mpi4py import MPI
        rank = MPI.COMM_WORLD.Get_rank()
        def f(t, y):
            if rank == 1 and float(t) > 0.3:
                raise ValueError("rank one broke")
            return -y
        pnode.odeint(f, torch.ones(3, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64),
                     method="rk4", step_size=0.1, comm=MPI.COMM_WORLD)
    """,
    # a rank whose residual raises inside Levenberg-Marquardt (CG, Nystrom preconditioner)
    "levenberg-marquardt": """
        import torch, pnode
        from mpi4py import MPI
        from pnode.solvers import LevenbergMarquardt, Objective
        rank = MPI.COMM_WORLD.Get_rank()
        g = torch.Generator().manual_seed(0)
        A = torch.randn(30, 10, generator=g, dtype=torch.float64)[rank::2]
        b = torch.randn(30, generator=g, dtype=torch.float64)[rank::2]
        x = torch.zeros(10, dtype=torch.float64, requires_grad=True)
        calls = [0]
        def residual():
            calls[0] += 1
            if rank == 1 and calls[0] == 4:
                raise ValueError("rank one broke")
            return A @ x - b
        LevenbergMarquardt([x], Objective(residual=residual), linear_solver="cg", nystrom_rank=4, nystrom_every=1,
                           progress=False, comm=MPI.COMM_WORLD).solve(max_it=6)
    """,
}


@pytest.mark.parametrize("case", sorted(_SCRIPTS))
def test_one_failing_rank_ends_the_job_with_its_traceback(case, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(_SCRIPTS[case]))
    proc = subprocess.run(["mpiexec", "-n", "2", sys.executable, str(script)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert "ValueError: rank one broke" in proc.stderr
    assert "rank 1" in proc.stderr


_CAUGHT_ON_ONE_RANK = """
    import torch, pnode
    from mpi4py import MPI
    from pnode.pinn import GalerkinProblem, PeriodicFeatures
    rank = MPI.COMM_WORLD.Get_rank()
    state = {"fail": True}
    def rhs(t, x, u, du, d2u):
        if rank == 1 and state["fail"]:
            raise ValueError("rank one broke")
        return -du.reshape(-1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(PeriodicFeatures(1.0), torch.nn.Linear(2, 1)).double()
    points = (torch.arange(8, dtype=torch.float64) / 8)[rank::2]
    problem = GalerkinProblem(net, rhs, points, derivatives=1, regularization=1e-8, comm=MPI.COMM_WORLD)
    t = torch.tensor([0.0, 0.1], dtype=torch.float64)
    try:
        pnode.odeint(problem, problem.flat(), t, method="rk4", step_size=0.05)
    except Exception as exc:
        print(f"rank {rank} caught {type(exc).__name__}: {exc}", flush=True)
    state["fail"] = False
    out = pnode.odeint(problem, problem.flat(), t, method="rk4", step_size=0.05)
    print(f"rank {rank} then solved: {bool(torch.isfinite(out).all())}", flush=True)
"""


def test_a_galerkin_failure_caught_on_one_rank_reaches_every_rank(tmp_path):
    """A neural-Galerkin right-hand side that raises on one rank only, in a loop that
    catches and skips: every rank gets an error from the same evaluation (the failing
    rank its own), and the next solve runs on both (before: rank 0 waited forever)."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(_CAUGHT_ON_ONE_RANK))
    proc = subprocess.run(["mpiexec", "-n", "2", sys.executable, str(script)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "rank 1 caught ValueError: rank one broke" in proc.stdout
    assert "rank 0 caught PnodeError: 1 other rank(s) failed" in proc.stdout
    assert "rank 0 then solved: True" in proc.stdout and "rank 1 then solved: True" in proc.stdout
