import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)  # small models: threads cost more than they give


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Every device the suite can run on: the CPU, and a GPU where torch sees one and PETSc
    was built with CUDA (skipped otherwise)."""
    if request.param == "cuda":
        import pnode

        if not torch.cuda.is_available():
            pytest.skip("no GPU")
        if not pnode.vec.petsc_has_cuda():
            pytest.skip("PETSc built without CUDA")
    return torch.device(request.param)
