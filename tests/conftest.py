import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)  # small models: threads cost more than they give


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
