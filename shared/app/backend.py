"""Choosing a backend package (hrm_torch or hrm_mlx) without importing either framework up front, and loading it.

The loader, import_backend, lives in core/backend.py (so that convert/ loads a backend without reaching app/); the
commands take it, with the backend names, from here beside the choice.
"""

import platform
import sys

from hrm_shared.core.backend import import_backend
from hrm_shared.core.contract import BACKENDS, installed

__all__ = ["BACKENDS", "default_backend", "import_backend"]


def default_backend() -> str:
    """mlx on macOS arm64 when it is installed, else torch when installed, else mlx."""
    if sys.platform == "darwin" and platform.machine() == "arm64" and installed("mlx"):
        return "mlx"
    return "torch" if installed("torch") else "mlx"
