"""Choosing and importing a backend package (hrm_torch or hrm_mlx) without importing either framework up front."""

import importlib
import platform
import sys
from importlib.util import find_spec
from types import ModuleType

from hrm_shared.core.errors import HRMError

BACKENDS = ("torch", "mlx")
MODULES = ("model", "checkpoint", "evaluate", "train")
_FRAMEWORK = {"torch": "torch", "mlx": "mlx.core"}


def _installed(framework: str) -> bool:
    try:
        return find_spec(framework) is not None
    except ModuleNotFoundError:  # find_spec("mlx.core") raises when the parent package "mlx" is absent
        return False


def default_backend() -> str:
    """mlx on macOS arm64 when it is importable, else torch when importable, else mlx."""
    if sys.platform == "darwin" and platform.machine() == "arm64" and _installed("mlx.core"):
        return "mlx"
    return "torch" if _installed("torch") else "mlx"


def import_backend(name: str) -> ModuleType:
    """The backend package (hrm_torch or hrm_mlx) with its modules loaded as attributes (`model`, `checkpoint`,
    `evaluate`, `train`), after checking that its framework imports; HRMError when it does not."""
    if name not in BACKENDS:
        raise HRMError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    try:
        importlib.import_module(_FRAMEWORK[name])
    except ImportError:
        raise HRMError(f"the {name} backend is not installed: pip install 'hrm[{name}]'") from None
    for module in MODULES:
        importlib.import_module(f"hrm_{name}.{module}")  # binds it as an attribute of the package
    return importlib.import_module(f"hrm_{name}")
