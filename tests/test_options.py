"""Scoped options: per-object prefixes, no leaks, command line wins."""
import torch

import pnode
from pnode.vec import PETSc


def _rk_type(ode):
    return ode._integ.ts.getRKType()


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
