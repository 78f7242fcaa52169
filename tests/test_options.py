"""Scoped options: per-object prefixes, no leaks, command line wins."""
import gc

import torch

import pnode
from pnode.vec import PETSc


def _rk_type(ode):
    return ode.stats["ts_subtype"]


def _run(ode):
    y0 = torch.ones(3, dtype=torch.float64)
    ode(y0, torch.tensor([0.0, 0.1], dtype=torch.float64))
    return ode


def test_two_objects_keep_their_own_options():
    f = lambda t, y: -y
    a = _run(pnode.NeuralODE(f, method=None, options={"ts_type": "rk", "ts_rk_type": "5bs"},
                             options_prefix="alpha_"))
    b = _run(pnode.NeuralODE(f, method=None, options={"ts_type": "rk", "ts_rk_type": "3"},
                             options_prefix="beta_"))
    assert _rk_type(a) == "5bs" and _rk_type(b) == "3"
    db = PETSc().Options()
    assert not db.hasName("alpha_ts_rk_type") and not db.hasName("beta_ts_rk_type")


def test_same_prefix_does_not_inherit_a_previous_objects_dict():
    f = lambda t, y: -y
    _run(pnode.NeuralODE(f, method=None, options={"ts_type": "rk", "ts_rk_type": "5bs"},
                         options_prefix="shared_"))
    c = _run(pnode.NeuralODE(f, method="rk4", step_size=0.05, options_prefix="shared_"))
    assert _rk_type(c) == "4"


def test_command_line_value_wins_over_the_dict():
    db = PETSc().Options()
    db.setValue("cli_ts_rk_type", "2a")  # what pnode.init(sys.argv) puts there for -cli_ts_rk_type 2a
    try:
        ode = _run(pnode.NeuralODE(lambda t, y: -y, method="rk4", step_size=0.05, options_prefix="cli_"))
        assert _rk_type(ode) == "2a"
    finally:
        db.delValue("cli_ts_rk_type")


def test_forced_options_override_and_restore():
    db = PETSc().Options()
    db.setValue("f_ts_adapt_type", "basic")
    try:
        scoped = pnode.ScopedOptions("f_", {"ts_max_steps": 3})
        with scoped.applied(force={"ts_adapt_type": "none"}):
            assert db.getString("f_ts_adapt_type") == "none"
            assert db.getInt("f_ts_max_steps") == 3
        assert db.getString("f_ts_adapt_type") == "basic"
        assert not db.hasName("f_ts_max_steps")
    finally:
        db.delValue("f_ts_adapt_type")


def test_unnamed_objects_get_distinct_prefixes():
    a = pnode.NeuralODE(lambda t, y: y)
    b = pnode.NeuralODE(lambda t, y: y)
    assert a.options_prefix != b.options_prefix


_SCRIPT = """
import sys, torch, pnode
pnode.init(sys.argv)
f = torch.nn.Linear(2, 2).double()
y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
t = torch.linspace(0, 1, 3, dtype=torch.float64)
out = pnode.odeint_adjoint(lambda t, y: f(y), y0, t, method="rk4", step_size=0.25,
                           options_prefix="node_")
out.sum().backward()
"""


def test_command_line_flags_reach_petsc(tmp_path):
    """``pnode.init(sys.argv)``: -prefix_ts_* flags change the solve, -log_view profiles it."""
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), "-node_ts_monitor", "-node_ts_time_step", "0.1",
                           "-log_view"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "10 TS (node_) dt 0.1 time 1." in proc.stdout  # -node_ts_time_step won over step_size=0.25
    assert "PETSc Performance Summary" in proc.stdout
    assert any(line.startswith("TSAdjointStep") for line in proc.stdout.splitlines())


def test_get_reads_command_line_before_dict_and_aliases():
    scoped = pnode.ScopedOptions("getopt_", {"ts_time_step": 0.5, "ksp_type": "cg"})
    db = PETSc().Options()
    assert scoped.get("ts_time_step", "ts_dt") == "0.5" and scoped.get("pc_type") is None
    db.setValue("getopt_ts_dt", "0.25")  # an alias on the command line beats the dict
    try:
        assert scoped.get("ts_time_step", "ts_dt") == "0.25" and scoped.get("ksp_type") == "cg"
    finally:
        db.delValue("getopt_ts_dt")


def test_adaptivity_switched_off_in_the_dict_steps_between_outputs():
    # the initial step is a guess (1% of the span) only while TSAdapt may grow it
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    ode = pnode.NeuralODE(lambda t, y: -y, method="dopri5", options={"ts_adapt_type": "none"})
    ode(torch.ones(2, dtype=torch.float64), t)
    assert ode.stats["steps"] == 4


def test_unnamed_objects_reuse_the_prefixes_of_collected_ones():
    # PETSc keeps memory for every distinct prefix a TS reads its options under
    gc.collect()
    seen = {pnode.ScopedOptions().prefix for _ in range(200)}
    assert len(seen) <= 2
    alive = [pnode.ScopedOptions() for _ in range(3)]
    assert len({s.prefix for s in alive}) == 3
