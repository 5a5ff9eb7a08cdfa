import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Two cores: keep torch from oversubscribing when pytest and onnxruntime share them.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _scramble(module: torch.nn.Module, seed: int) -> None:
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                noise = torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var") else torch.randn(t.shape, generator=g) * 0.1
                t.copy_(noise if name.endswith(("running_var", "running_mean")) else t + noise)


@pytest.fixture(scope="session")
def scramble():
    """``scramble(module, seed)``, in place: seeded noise added to every weight, and
    seeded random BatchNorm statistics, so that an equality between two networks that
    should share them is not trivially true of a fresh draw."""
    return _scramble


@pytest.fixture
def bench_script(monkeypatch):
    """``bench_script(name)``: bench/NAME.py imported as a module. ``bench/`` stays on
    sys.path for the whole test, since some scripts spawn workers that import them too."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module


@pytest.fixture(scope="session")
def detector_space():
    from search_spaces import get_space

    return get_space("cpu_detector", num_classes=3, input_size=64)


@pytest.fixture(scope="session")
def tiny_data3(tmp_path_factory):
    """The generated dataset (16 train, 8 val, 64 px) in YOLO layout, cut to its first 3
    classes so that it matches the 3-class ``detector_space``; a DataConfig over it."""
    import yaml

    from evaluators.data import DataConfig
    from evaluators.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synth3")
    yaml_path = write_synthetic(root, n_train=16, n_val=8, image_size=64, seed=0)
    for label_file in root.glob("labels/*/*.txt"):
        lines = [ln for ln in label_file.read_text().splitlines() if ln and int(ln.split()[0]) < 3]
        label_file.write_text("".join(ln + "\n" for ln in lines))
    config = yaml.safe_load(yaml_path.read_text())
    config["names"] = {i: config["names"][i] for i in range(3)}
    yaml_path.write_text(yaml.safe_dump(config))
    return DataConfig(source=str(root), n_train=16, n_val=8)
