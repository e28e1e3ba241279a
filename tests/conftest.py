"""The fixtures every test file can use: each backend's adapter (backends.py), and small datasets written by the
project's own builders into tmp directories (helpers.py)."""

import os
from pathlib import Path

import pytest

from backends import adapter
from helpers import make_dataset, write_arc_tasks
from hrm_shared.core.contract import BACKENDS
from hrm_shared.core.registry import FAMILIES
from hrm_shared.data.arc import build_arc_dataset

# torch's OpenMP threads spin between calls and starve MLX's CPU threads (10x slower tests on 2 cores) unless passive:
# set before any test imports torch (the modules above import neither framework).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each installed backend's adapter in turn."""
    return adapter(request.param)


@pytest.fixture
def both():
    """(torch adapter, mlx adapter); skips unless both backends are installed."""
    return adapter("torch"), adapter("mlx")


@pytest.fixture(params=sorted(FAMILIES))
def family(request) -> str:
    """Each registered model family's name in turn (its tiny config: backends.family_config)."""
    return request.param


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """make_dataset's default dataset."""
    return make_dataset(tmp_path / "ds")


@pytest.fixture(scope="module")
def arc_build(tmp_path_factory):
    """(raw task folder, dataset built from it with 4 augmentations per task, the tasks as written)."""
    root = tmp_path_factory.mktemp("arc")
    tasks = write_arc_tasks(root / "raw")
    build_arc_dataset([root / "raw"], root / "ds", num_aug=4, seed=1)
    return root / "raw", root / "ds", tasks
