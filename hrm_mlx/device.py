"""Where MLX runs: the default device, placing a model, and the one edge where a numpy batch becomes arrays.

Arrays live in unified memory; the device is where the operations run (the stream), not where the arrays are.
"""

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from hrm_shared.core.errors import HRMError

Batch = dict[str, mx.array]
DEVICES = {"cpu": mx.cpu, "gpu": mx.gpu, "metal": mx.gpu}  # metal: the GPU of Apple silicon


def default_device() -> str:
    """The device MLX runs on now: "gpu" (Metal) on Apple silicon, else "cpu"."""
    return "gpu" if mx.default_device() == mx.gpu else "cpu"


def place(model: nn.Module, device: str | None) -> nn.Module:
    """`model`, with `device` ("cpu", "gpu" or "metal"; None keeps MLX's default) made MLX's default device.
    HRMError for an unknown device."""
    if device is not None:
        mx.set_default_device(compute_device(model, device))
    return model


def compute_device(model: nn.Module, device: str | None = None) -> mx.Device:
    """The device `model`'s work runs on: `device` ("cpu", "gpu" or "metal"), or MLX's default when None. HRMError
    for an unknown device, or the GPU where MLX has none."""
    if device is None:
        return mx.default_device()
    if device not in DEVICES:
        raise HRMError(f"unknown MLX device {device!r}; choose {' or '.join(DEVICES)}")
    if not mx.is_available(DEVICES[device]):
        raise HRMError(f"MLX has no GPU on this machine (--device {device}); use --device cpu, or the torch backend "
                       f"for an NVIDIA GPU")
    return DEVICES[device]


def to_backend(batch: dict[str, np.ndarray], device: str | None = None) -> Batch:
    """The numpy batch (int32 arrays) as MLX arrays: the one place a batch crosses into MLX. `device` is accepted
    for the contract and unused: in unified memory the stream, not the array, picks the device."""
    return {k: mx.array(v) for k, v in batch.items()}
