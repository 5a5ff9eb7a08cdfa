import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Two cores: keep torch from oversubscribing when pytest and onnxruntime share them.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def detector_space():
    from search_spaces import get_space

    return get_space("cpu_detector", num_classes=3, input_size=64)
