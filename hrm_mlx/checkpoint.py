"""Checkpoint directories in MLX (shared/DESIGN.md section 7): a model <-> canonical safetensors plus
config.json."""

import dataclasses
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

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
from hrm_mlx.device import place
from hrm_mlx.model import build_model


def save_checkpoint(directory: Path, model: nn.Module, config: CheckpointConfig,
                    identifiers: list[str] | None = None) -> None:
    """Write `model` (every parameter, frozen ones included, under its canonical name, in its own dtype: float32
    master weights) and `config` (backend set to "mlx") to `directory` atomically, replacing a checkpoint there."""
    if config.model != model.config:
        raise HRMError("internal: save_checkpoint got a config whose model differs from the model's own config")
    tensors = dict(tree_flatten(model.inner.parameters()))
    mx.eval(tensors)
    with checkpoint_directory(Path(directory)) as tmp:
        try:
            mx.save_safetensors(str(tmp / MODEL_FILE), tensors)
        except RuntimeError as e:  # how MLX reports a failed write (a full disk): made the OSError it is
            raise OSError(str(e)) from None
        write_checkpoint_config(tmp, dataclasses.replace(config, backend="mlx"))
        if identifiers is not None:
            write_identifiers(tmp, identifiers)


def load_checkpoint(directory: Path, device: str | None = None, verify: bool = True
                    ) -> tuple[nn.Module, CheckpointConfig]:
    """Build the model of config.model's family and load `directory`'s tensors strictly (float32 in the model; bfloat16
    tensors widen exactly); H_init, L_init and the puzzle table stay frozen. `device`: see `place`. Any missing,
    unexpected, misshapen, wrongly typed or non-finite tensor is an HRMError that names it; so is, with `verify`, a file
    that differs from its checksum (core/checksums.py; a checkpoint written before checksums loads unverified), and a
    damaged identifiers.json."""
    directory = Path(directory)
    config = read_checkpoint_config(directory)
    path = directory / MODEL_FILE
    try:
        tensors = mx.load(str(path), format="safetensors")
    except (RuntimeError, ValueError, OSError) as e:
        raise HRMError(f"{path} is not a readable safetensors file ({e}); write the checkpoint again") from None
    check_stored(config.model, {k: (str(v.dtype).removeprefix("mlx.core."), tuple(v.shape))
                                for k, v in tensors.items()}, str(path))
    check_finite({k: bool(mx.isfinite(v).all()) for k, v in tensors.items()}, str(path))
    if verify:  # after the checks that name what is wrong; this one finds what they cannot see
        verify_file(directory, MODEL_FILE)
    check_identifiers(directory, config, verify)
    model = build_model(config.model)
    model.inner.load_weights([(k, v.astype(mx.float32)) for k, v in tensors.items()], strict=True)
    mx.eval(model.parameters())
    return place(model, device), config

