"""Checkpoint directories (shared/DESIGN.md section 7): layout, config.json, and the fit between a checkpoint and a
dataset.

```
<ckpt>/config.json              {"format", "backend", "family", "model", "train", "dataset"}
<ckpt>/model.safetensors        canonical names (shared/core/names.py), float32 master weights
<ckpt>/train_state.safetensors  what exact resume needs (training checkpoints only)
<ckpt>/identifiers.json         puzzle names by identifier, when the puzzle table is trained
```
The tensors are read and written by each backend's checkpoint.py; this module is numpy-free metadata.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ContextManager

from hrm_shared.core.atomic import check_replaceable, replace_directory
from hrm_shared.core.config import ModelConfig, TrainConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import canonical_shapes
from hrm_shared.core.registry import DEFAULT_FAMILY, family_of, model_config_from_dict

FORMAT = "hrm-checkpoint-1"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.safetensors"
IDENTIFIERS_FILE = "identifiers.json"
CHECKPOINT_FILES = (CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE, IDENTIFIERS_FILE)
# Dataset fields the model's shapes depend on.
DATA_FIELDS = ("vocab_size", "seq_len", "num_puzzle_identifiers")
# Stored tensor dtypes; bfloat16 is how the reference keeps H_init/L_init, and widens to float32 exactly.
STORED_DTYPES = ("float32", "bfloat16")


@dataclass
class CheckpointConfig:
    """config.json: the model family and config, the training config, the dataset they were built for, the writing
    backend."""

    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: dict = field(default_factory=dict)  # path, fingerprint and DATA_FIELDS of the dataset build
    backend: str = ""

    def to_dict(self) -> dict:
        return {"format": FORMAT, "backend": self.backend, "family": family_of(self.model).name,
                "model": self.model.to_dict(), "train": self.train.to_dict(), "dataset": self.dataset}

    @classmethod
    def from_dict(cls, d: dict) -> "CheckpointConfig":
        """The config a `to_dict` wrote; "family" names the model config's class (HRM when absent, as in
        checkpoints written before there was a second family)."""
        return cls(model=model_config_from_dict(d.get("family", DEFAULT_FAMILY), d["model"]),
                   train=TrainConfig.from_dict(d.get("train", {})), dataset=d.get("dataset", {}),
                   backend=d.get("backend", ""))


def write_checkpoint_config(directory: Path, config: CheckpointConfig) -> None:
    """Write `<directory>/config.json` with sorted keys."""
    (Path(directory) / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def read_checkpoint_config(directory: Path) -> CheckpointConfig:
    """Read `<directory>/config.json`; a missing directory or file is an error that says what a checkpoint is."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise HRMError(f"checkpoint directory {directory} does not exist")
    if not path.is_file() or not (directory / MODEL_FILE).is_file():
        raise HRMError(f"{directory} is not a checkpoint: it needs {CONFIG_FILE} and {MODEL_FILE} "
                       f"(write one with `hrm init` or `hrm train`)")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise HRMError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if d.get("format") != FORMAT or "model" not in d:
        raise HRMError(f"{path} is not an hrm checkpoint config (format {d.get('format')!r}, expected {FORMAT!r})")
    return CheckpointConfig.from_dict(d)


def check_stored(model: ModelConfig, tensors: dict[str, tuple[str, tuple[int, ...]]], where: str,
                 config_name: str = CONFIG_FILE) -> None:
    """Refuse stored tensors {name: (dtype name, shape)} unless they are exactly `model`'s canonical tensors in a
    STORED_DTYPES dtype; the error names the first missing, unexpected, misshapen or wrongly typed tensor."""
    shapes = canonical_shapes(model)
    mismatch = f"the tensors belong to a different model config than {config_name} describes"
    missing = [name for name in shapes if name not in tensors]
    extra = sorted(set(tensors) - set(shapes))
    if missing:
        raise HRMError(f"{where}: tensor {missing[0]!r} is missing ({len(missing)} missing); {mismatch}")
    if extra:
        raise HRMError(f"{where}: unexpected tensor {extra[0]!r} ({len(extra)} unexpected); {mismatch}")
    for name, shape in shapes.items():
        dtype, stored = tensors[name]
        if tuple(stored) != shape:
            raise HRMError(f"{where}: tensor {name!r} has shape {tuple(stored)} but {config_name} needs {shape}; "
                           f"{mismatch}")
        if dtype not in STORED_DTYPES:
            raise HRMError(f"{where}: tensor {name!r} is stored as {dtype}; checkpoints hold "
                           f"{' or '.join(STORED_DTYPES)} tensors (re-save it from a float32 model)")


def write_identifiers(directory: Path, identifiers: list[str]) -> None:
    """Write `<directory>/identifiers.json`: puzzle names by identifier."""
    (Path(directory) / IDENTIFIERS_FILE).write_text(json.dumps(identifiers))


def check_fits_dataset(model: ModelConfig, metadata, where: str) -> None:
    """Refuse a model whose vocabulary, sequence length or puzzle table does not fit a dataset's metadata."""
    for name in DATA_FIELDS:
        have, need = getattr(model, name), getattr(metadata, name)
        if have != need:
            raise HRMError(f"the checkpoint has {name}={have} but the dataset {where} has {name}={need}; "
                           f"use a checkpoint trained on this dataset (or a dataset built the same way)")


def dataset_record(root: Path) -> dict:
    """config.json's `dataset`: path, fingerprint and DATA_FIELDS (from the train split) of a dataset directory."""
    from hrm_shared.core.format import fingerprint, read_metadata

    metadata = read_metadata(Path(root), "train")
    return {"path": str(root), "fingerprint": fingerprint(Path(root)),
            **{name: getattr(metadata, name) for name in DATA_FIELDS}}


def check_checkpoint_output(directory: Path, force: bool) -> None:
    """Refuse a `directory` that holds files, unless `force` and every file is one a checkpoint holds."""
    check_replaceable(directory, force, set(CHECKPOINT_FILES), "checkpoint")


def checkpoint_directory(directory: Path, force: bool = True) -> ContextManager[Path]:
    """A temporary directory beside `directory` that replaces it when the block succeeds; on error it is unchanged."""
    return replace_directory(directory, force, set(CHECKPOINT_FILES), "checkpoint")

