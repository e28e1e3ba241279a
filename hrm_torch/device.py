"""Where PyTorch runs: the default device, placing a model, and the one edge where a numpy batch becomes tensors."""

import numpy as np
import torch
from torch import nn

from hrm_shared.core.errors import HRMError

Batch = dict[str, torch.Tensor]


def default_device() -> str:
    """"cuda" when a CUDA GPU is visible, else "cpu" (MPS only when asked for: it has no float64 for the loss)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def place(model: nn.Module, device: str | None) -> nn.Module:
    """`model` moved to `device` (default: default_device()); HRMError naming the device when torch cannot."""
    device = default_device() if device is None else device
    try:
        return model.to(device)
    except (RuntimeError, AssertionError) as e:
        raise HRMError(f"cannot place the model on device {device!r} ({e}); choose cpu, cuda or mps") from None


def compute_device(model: nn.Module, device: str | None = None) -> torch.device:
    """The device `model`'s work runs on: `device`, or where the model's tensors are when None."""
    return next(model.buffers()).device if device is None else torch.device(device)


def to_backend(batch: dict[str, np.ndarray], device: torch.device | str | None = None) -> Batch:
    """The numpy batch (int32 arrays) as tensors on `device` (default: the CPU): the one place a batch crosses
    into torch."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device or "cpu") for k, v in batch.items()}
