"""Checkpoint directories in PyTorch (shared/DESIGN.md section 7): a model <-> canonical safetensors plus
config.json."""

import dataclasses
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hrm_shared.core.checkpoint import (
    MODEL_FILE,
    CheckpointConfig,
    check_finite,
    check_identifiers,
    check_stored,
    checkpoint_directory,
    read_checkpoint_config,
    verify_file,
    write_checkpoint_config,
    write_identifiers,
)
from hrm_shared.core.errors import HRMError
from hrm_torch.device import place
from hrm_torch.model import build_model


def save_checkpoint(directory: Path, model: nn.Module, config: CheckpointConfig,
                    identifiers: list[str] | None = None) -> None:
    """Write `model` (every persistent tensor under its canonical name, in its own dtype: float32 master weights)
    and `config` (backend set to "torch") to `directory` atomically, replacing a checkpoint there."""
    if config.model != model.config:
        raise HRMError("internal: save_checkpoint got a config whose model differs from the model's own config")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.inner.state_dict().items()}
    with checkpoint_directory(Path(directory)) as tmp:
        save_file(tensors, tmp / MODEL_FILE)
        write_checkpoint_config(tmp, dataclasses.replace(config, backend="torch"))
        if identifiers is not None:
            write_identifiers(tmp, identifiers)


def load_checkpoint(directory: Path, device: str | None = None, verify: bool = True
                    ) -> tuple[nn.Module, CheckpointConfig]:
    """Build the model of config.model's family and load `directory`'s tensors strictly (float32 in the model; bfloat16
    tensors widen exactly), on `device` (default: default_device()). Any missing, unexpected, misshapen, wrongly typed
    or non-finite tensor is an HRMError that names it; so is, with `verify`, a file that differs from its checksum
    (core/checksums.py; a checkpoint written before checksums loads unverified), and a damaged identifiers.json."""
    directory = Path(directory)
    config = read_checkpoint_config(directory)
    path = directory / MODEL_FILE
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise HRMError(f"{path} is not a readable safetensors file ({e}); write the checkpoint again") from None
    check_stored(config.model, {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in tensors.items()},
                 str(path))
    check_finite({k: bool(torch.isfinite(v).all()) for k, v in tensors.items()}, str(path))
    if verify:  # after the checks that name what is wrong; this one finds what they cannot see
        verify_file(directory, MODEL_FILE)
    check_identifiers(directory, config, verify)
    model = build_model(config.model)
    model.inner.load_state_dict(tensors, strict=True)
    return place(model, device), config

