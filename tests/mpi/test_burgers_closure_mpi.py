"""Under mpiexec -n 2: the Burgers example's training on all ranks equals one rank, and learns."""
import dataclasses
import sys
from pathlib import Path

from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))
import burgers_closure as bc  # noqa: E402


def test_training_on_all_ranks_equals_one_rank_and_learns_the_term():
    cfg = dataclasses.replace(bc.Config(), **bc.QUICK)
    world = bc.run(cfg, MPI.COMM_WORLD)
    one = bc.run(cfg, MPI.COMM_SELF)
    for key in bc.METRICS:
        assert abs(world[key] - one[key]) <= 1e-10 * abs(one[key]), key
    assert world["term_rel"] < 0.8 * world["initial_term_rel"]
    assert world["rollout_heldout_rel"] < 0.8 * world["no_reaction_rollout_heldout_rel"]
