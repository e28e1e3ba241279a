"""Checkpoint directories (shared/DESIGN.md section 7): layout, config.json, and the fit between a checkpoint and a
dataset.

```
<ckpt>/config.json              {"format", "backend", "family", "model", "train", "dataset"}
<ckpt>/model.safetensors        canonical names (shared/core/names.py), float32 master weights
<ckpt>/train_state.safetensors  what exact resume needs (training checkpoints only)
<ckpt>/identifiers.json         puzzle names by identifier, when the puzzle table is trained
<ckpt>/checksums.json           sha256 of each file above but config.json (core/checksums.py), verified on load
```
The tensors are read and written by each backend's checkpoint.py; this module is numpy-free metadata.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hrm_shared.core.atomic import check_replaceable, replace_directory
from hrm_shared.core.checksums import CHECKSUMS_FILE, verify_checksums, write_checksums
from hrm_shared.core.config import ModelConfig, TrainConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import canonical_shapes
from hrm_shared.core.registry import DEFAULT_FAMILY, family_named, family_of

FORMAT = "hrm-checkpoint-1"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "train_state.safetensors"
IDENTIFIERS_FILE = "identifiers.json"
CHECKPOINT_FILES = (CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE, IDENTIFIERS_FILE, CHECKSUMS_FILE)
# The files checksums.json covers: config.json is left out, as it is read strictly field by field and edited by hand.
CHECKED_FILES = (MODEL_FILE, TRAIN_STATE_FILE, IDENTIFIERS_FILE)
VERIFY_FIX = "use another checkpoint, or pass --no-verify to load it anyway"
# Dataset fields the model's shapes depend on.
DATA_FIELDS = ("vocab_size", "seq_len", "num_puzzle_identifiers")
# Stored tensor dtypes; bfloat16 is how the reference keeps H_init/L_init, and widens to float32 exactly.
STORED_DTYPES = ("float32", "bfloat16")
# config.json's keys besides "format" and the optional "family".
SECTIONS = ("backend", "model", "train", "dataset")
KEYS = ("format", "family", *SECTIONS)
# The train fields that checkpoints written before there was a second model family (no "family" key) lack, with the
# values they were trained with.
LEGACY_TRAIN = {"ema": False, "ema_rate": 0.999}
# The model fields that checkpoints written before the gradient mode existed lack: they were trained one-step.
LEGACY_MODEL = {"grad": "one_step"}


@dataclass
class CheckpointConfig:
    """config.json: the model family and config, the training config, the dataset they were built for, the writing
    backend."""

    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: dict = field(default_factory=dict)  # path, fingerprint, DATA_FIELDS and kind of the dataset build
    backend: str = ""

    def to_dict(self) -> dict:
        return {"format": FORMAT, "backend": self.backend, "family": family_of(self.model).name,
                "model": self.model.to_dict(), "train": self.train.to_dict(), "dataset": self.dataset}

    @classmethod
    def from_dict(cls, d: dict, where: str = CONFIG_FILE, extra: tuple[str, ...] = ()) -> "CheckpointConfig":
        """The config a `to_dict` wrote, read as strictly as the tensors: every SECTIONS key, `model` and `train`
        with every field of their configs in its JSON type (ModelConfig.from_json), `dataset` an object, `backend` a
        string. "family" names the model config's class; HRM when absent, as in checkpoints written before there was
        a second family (which also lack LEGACY_TRAIN); LEGACY_MODEL fills in what older checkpoints lack. A key
        that is neither KEYS nor `extra` is refused. HRMError naming `where` and the first problem."""
        if not isinstance(d, dict):
            raise HRMError(f"{where} holds {type(d).__name__}, not a JSON object")
        if unknown := sorted(set(d) - {*KEYS, *extra}):
            raise HRMError(f"{where} has the unknown key {unknown[0]!r} ({len(unknown)} unknown)")
        if missing := [key for key in SECTIONS if key not in d]:
            raise HRMError(f"{where} lacks {', '.join(map(repr, missing))}")
        family = d.get("family", DEFAULT_FAMILY)
        for key, value, kind in (("family", family, str), ("backend", d["backend"], str),
                                 ("dataset", d["dataset"], dict)):
            if not isinstance(value, kind):
                raise HRMError(f"{where}: {key}={value!r} must be a JSON {'string' if kind is str else 'object'}")
        model = family_named(family).config.from_json(d["model"], f"{where}: model", LEGACY_MODEL)
        train = TrainConfig.from_json(d["train"], f"{where}: train", None if "family" in d else LEGACY_TRAIN)
        return cls(model=model, train=train, dataset=d["dataset"], backend=d["backend"])


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
    stored = d.get("format") if isinstance(d, dict) else None
    if stored != FORMAT:
        raise HRMError(f"{path} is not an hrm checkpoint config (format {stored!r}, expected {FORMAT!r})")
    try:
        return CheckpointConfig.from_dict(d, str(path))
    except HRMError as e:
        raise HRMError(f"{e}; write the checkpoint again (hrm writes every field of its config)") from None


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


def check_finite(finite: dict[str, bool], where: str) -> None:
    """Refuse stored tensors that hold a NaN or an infinity, given {name: whether all its values are finite}; the
    error names the first such tensor."""
    if bad := [name for name, ok in finite.items() if not ok]:
        raise HRMError(f"{where}: tensor {bad[0]!r} holds NaN or infinite values ({len(bad)} such tensors): the "
                       f"weights diverged; use an earlier checkpoint")


def write_identifiers(directory: Path, identifiers: list[str]) -> None:
    """Write `<directory>/identifiers.json`: puzzle names by identifier."""
    (Path(directory) / IDENTIFIERS_FILE).write_text(json.dumps(identifiers))


def read_identifiers(directory: Path) -> list[str] | None:
    """The puzzle names by identifier in `<directory>/identifiers.json` (as check_identifiers accepts it), or None
    for a checkpoint without one."""
    path = Path(directory) / IDENTIFIERS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def check_fits_dataset(model: ModelConfig, metadata, where: str) -> None:
    """Refuse a model whose vocabulary, sequence length or puzzle table does not fit a dataset's metadata."""
    for name in DATA_FIELDS:
        have, need = getattr(model, name), getattr(metadata, name)
        if have != need:
            raise HRMError(f"the checkpoint has {name}={have} but the dataset {where} has {name}={need}; "
                           f"use a checkpoint trained on this dataset (or a dataset built the same way)")


def check_splits_agree(train, test, root: Path) -> None:
    """Refuse a dataset whose train and test metadata (DatasetMetadata) differ in a DATA_FIELDS value: a new
    run's model takes them from the train split and would not fit the test split."""
    for name in DATA_FIELDS:
        if getattr(train, name) != getattr(test, name):
            raise HRMError(f"the dataset {root} is inconsistent: {Path(root) / 'train' / 'dataset.json'} has "
                           f"{name}={getattr(train, name)} but {Path(root) / 'test' / 'dataset.json'} has "
                           f"{name}={getattr(test, name)}; rebuild the dataset")


def dataset_record(root: Path, kind: str | None = None) -> dict:
    """config.json's `dataset`: path, fingerprint and DATA_FIELDS (from the train split) of a dataset directory, and
    the puzzle `kind` ('sudoku', 'maze', 'arc'; puzzles/kinds.py dataset_kind) when known: a 4x4 Sudoku and a 4x4
    maze share every DATA_FIELDS value."""
    from hrm_shared.core.format import fingerprint, read_metadata

    metadata = read_metadata(Path(root), "train")
    record = {"path": str(root), "fingerprint": fingerprint(Path(root)),
              **{name: getattr(metadata, name) for name in DATA_FIELDS}}
    return record if kind is None else {**record, "kind": kind}


def check_checkpoint_output(directory: Path, force: bool) -> None:
    """Refuse a `directory` that holds files, unless `force` and every file is one a checkpoint holds."""
    check_replaceable(directory, force, set(CHECKPOINT_FILES), "checkpoint")


@contextmanager
def checkpoint_directory(directory: Path, force: bool = True) -> Iterator[Path]:
    """A temporary directory beside `directory` that replaces it when the block succeeds, with checksums.json of
    the CHECKED_FILES the block wrote; on error `directory` is unchanged."""
    with replace_directory(directory, force, set(CHECKPOINT_FILES), "checkpoint") as tmp:
        yield tmp
        write_checksums(tmp, [name for name in CHECKED_FILES if (tmp / name).is_file()])


def verify_file(directory: Path, name: str) -> bool:
    """Check `<directory>/<name>` against the checkpoint's checksums.json (core/checksums.py): HRMError when it
    changed since it was written; False for a checkpoint written before checksums existed."""
    return verify_checksums(directory, [name], VERIFY_FIX)


def check_identifiers(directory: Path, config: CheckpointConfig, verify: bool = True) -> None:
    """Refuse a checkpoint's identifiers.json (when it has one) unless it is a list of num_puzzle_identifiers
    puzzle names (strings), as written, and (with `verify`) matches its checksum."""
    path = Path(directory) / IDENTIFIERS_FILE
    if not path.is_file():
        return
    try:
        names = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        names = None
    count = config.model.num_puzzle_identifiers
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) != count:
        raise HRMError(f"{path} is not a list of the {count} puzzle names the model's puzzle table holds; "
                       f"use another checkpoint (or delete the file: it only names puzzles)")
    if verify:
        verify_file(directory, IDENTIFIERS_FILE)

