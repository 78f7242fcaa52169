"""The Burgers closure example's command line: metrics, figure, checkpoint and resume."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
import burgers_closure as bc  # noqa: E402


def test_quick_run_saves_figure_and_checkpoint_and_resumes(tmp_path: Path, capsys):
    out = str(tmp_path)
    first = bc.main(["burgers_closure.py", "--quick", "--out", out])
    printed = capsys.readouterr().out
    assert f"{first['term_rel']:.12e}" in printed and f"{first['rollout_heldout_rel']:.12e}" in printed
    assert (tmp_path / "burgers_closure.png").stat().st_size > 10_000
    state = torch.load(tmp_path / "checkpoint.pt")
    assert state["iteration"] == bc.QUICK["iters"] and len(state["history"]["loss"]) == bc.QUICK["iters"]
    losses = state["history"]["loss"]
    assert first["term_rel"] < first["initial_term_rel"]

    again = bc.main(["burgers_closure.py", "--quick", "--out", out, "--resume"])  # nothing left to do
    assert again["term_rel"] == first["term_rel"] and again["loss"] == first["loss"]
    more = bc.main(["burgers_closure.py", "--quick", "--out", out, "--resume", "--iters", "10"])
    state = torch.load(tmp_path / "checkpoint.pt")
    assert state["iteration"] == 10 and state["history"]["loss"][:len(losses)] == losses
    assert more["loss"] < first["loss"]
