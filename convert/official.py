"""Import of the official checkpoints (HRM: github.com/sapientinc/HRM; TRM: SamsungSAILMontreal/TinyRecursiveModels):
a `step_N` file (a torch.save'd state dict) and the `all_config.yaml` beside it become one of our checkpoint
directories (shared/DESIGN.md section 7, shared/TRM.md section 5).

The model family comes from the yaml's `arch.name` (core/registry.py), or, without one, from the level modules the
tensors hold (no `H_level` keys: TRM); the model's shapes from `arch`, the tensors (vocab_size, num_puzzle_identifiers)
and the dataset (seq_len); each is checked against the others, the dataset's seq_len against the position tables
(learned positions, or the rotary caches some reference versions save). Reading the pickle needs PyTorch.
"""

import dataclasses
import pickle
from pathlib import Path

import torch
import yaml

from hrm_shared.core.backend import import_backend
from hrm_shared.core.checkpoint import (
    CheckpointConfig,
    check_checkpoint_output,
    check_finite,
    check_stored,
    dataset_record,
)
from hrm_shared.core.config import ModelConfig, TrainConfig
from hrm_shared.core.contract import BACKENDS
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import check_dataset, read_identifiers, read_metadata
from hrm_shared.core.init import count_parameters
from hrm_shared.core.registry import FAMILIES, ModelFamily
from hrm_shared.puzzles.kinds import dataset_kind

REFERENCE_CONFIG = "all_config.yaml"
# torch.compile's wrapper, the loss head's `model`, the ACT wrapper's `inner`: stripped in this order.
PREFIXES = ("_orig_mod.", "model.", "inner.")
# Tensors some reference versions save beside the canonical ones; they are rebuilt, never loaded.
REFERENCE_ONLY = ("rotary_emb.cos_cached", "rotary_emb.sin_cached", "puzzle_emb.local_weights",
                  "puzzle_emb.local_ids")
# arch keys every official config has; the others are read when the family's config has such a field.
ARCH_REQUIRED = ("hidden_size", "num_heads", "expansion", "L_layers", "H_cycles", "L_cycles", "halt_max_steps",
                 "halt_exploration_prob", "puzzle_emb_ndim", "pos_encodings")
ARCH_IGNORED = ("name", "loss")  # the model class and the loss head (its loss_type is read)
DATA_KEYS = ("vocab_size", "seq_len", "num_puzzle_identifiers")  # from the tensors and the dataset, not the yaml
# Tensors with a row per position (puzzle prefix + seq_len): the one record of seq_len a checkpoint may hold.
POSITION_TABLES = ("embed_pos.embedding_weight", "rotary_emb.cos_cached", "rotary_emb.sin_cached")
# The official ARC checkpoints' puzzle rows follow the order of the build on the authors' machine (its file listing
# and global numpy stream), which a rebuild elsewhere does not reproduce: equal row counts do not prove equal rows.
PUZZLE_ORDER_WARNING = ("the puzzle rows are matched to this dataset's identifiers by position only; a rebuild of "
                        "the official data elsewhere orders them differently, and equal counts do not prove the rows "
                        "fit. Check: hrm evaluate the import on this dataset and compare pass@2 with the published "
                        "figure (near 0 means the rows belong to other puzzles)")


def reference_family(arch: dict, tensors: dict) -> ModelFamily:
    """The model family of an official checkpoint: the one whose reference_arch is `arch["name"]`, else the one whose
    levels are the `*_level` modules the tensors hold (no H_level: TRM); HRMError when none is."""
    for family in FAMILIES.values():
        if arch.get("name") == family.reference_arch:
            return family
    levels = {name.split(".")[0] for name in tensors if name.split(".")[0].endswith("_level")}
    for family in FAMILIES.values():
        if levels == set(family.levels):
            return family
    raise HRMError(f"the checkpoint's arch.name {arch.get('name')!r} names no known model family, and its levels "
                   f"({', '.join(sorted(levels)) or 'none'}) are no family's; known: "
                   f"{', '.join(f'{f.name} ({f.reference_arch})' for f in FAMILIES.values())}")


def read_reference_config(path: Path) -> tuple[dict, TrainConfig]:
    """(the `arch` section, incl. its loss head; the TrainConfig from the top level) of the reference's
    all_config.yaml."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise HRMError(f"{path} is missing: the importer reads the reference's all_config.yaml from the directory "
                       f"of the step file") from None
    except yaml.YAMLError as e:
        raise HRMError(f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None
    arch = raw.get("arch") if isinstance(raw, dict) else None
    if not isinstance(arch, dict):
        raise HRMError(f"{path} has no `arch:` section; is it the all_config.yaml the reference wrote?")
    missing = [k for k in ARCH_REQUIRED if k not in arch]
    if missing:
        raise HRMError(f"{path}: arch lacks {', '.join(missing)}; is it the all_config.yaml the reference wrote?")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    train = {k: v for k, v in raw.items() if k in names and v is not None}
    if "epochs" in train and "eval_interval" not in train:
        train["eval_interval"] = train["epochs"]  # the reference's eval_interval=None: evaluate once, at the end
    try:
        return arch, TrainConfig(**train)
    except HRMError as e:
        raise HRMError(f"{path}: {e}") from None


def model_fields(arch: dict, family: ModelFamily) -> tuple[dict, list[str]]:
    """(the fields of `family`'s config that `arch` sets, loss_type from its loss head; the arch keys that are not
    fields of that config, sorted)."""
    names = {f.name for f in dataclasses.fields(family.config)} - set(DATA_KEYS)
    fields = {k: v for k, v in arch.items() if k in names and v is not None}
    loss = arch.get("loss")
    if isinstance(loss, dict) and loss.get("loss_type") is not None:
        fields["loss_type"] = loss["loss_type"]
    return fields, sorted(set(arch) - names - set(ARCH_IGNORED))


def read_reference_state(step_file: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(canonical name -> tensor in its stored dtype, the dropped reference-only tensors by their keys) of a
    reference `step_N` file; prefixes are stripped."""
    try:
        state = torch.load(step_file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HRMError(f"step file {step_file} does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise HRMError(f"{step_file} is not a torch.save'd state dict ({str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HRMError(f"{step_file} does not hold a state dict (name -> tensor); pass the reference's step_N file")
    tensors, dropped = {}, {}
    for key, value in state.items():
        name = key
        for prefix in PREFIXES:
            name = name.removeprefix(prefix)
        if name in REFERENCE_ONLY:
            dropped[key] = value
        elif name in tensors:
            raise HRMError(f"{step_file} holds {name!r} twice (with and without a prefix); pass one model's state")
        else:
            tensors[name] = value
    return tensors, dropped


def check_positions(model: ModelConfig, tensors: dict[str, torch.Tensor], step_file: Path, data_dir: Path) -> None:
    """Refuse a dataset whose sequences are not as long as the ones the checkpoint was trained on, where `tensors`
    (the step file's, by any key) hold a table of positions: rows = puzzle prefix + seq_len."""
    prefix = model.puzzle_emb_len
    for key, value in tensors.items():
        if key.endswith(POSITION_TABLES) and value.shape[0] != prefix + model.seq_len:
            raise HRMError(f"{step_file}: {key} covers {value.shape[0]} positions, {value.shape[0] - prefix} after "
                           f"the puzzle prefix of {prefix}, but the dataset {data_dir} has seq_len={model.seq_len}; "
                           f"pass the dataset the checkpoint was trained on")


def import_official(step_file: Path, data_dir: Path, dst: Path, backend: str = "torch", force: bool = False) -> dict:
    """Write checkpoint `dst` for `backend` from the reference's `step_file` (+ all_config.yaml beside it) and the
    dataset `data_dir` it was trained on (identifiers.json copied). Tensors are stored as float32 (bfloat16
    H_init/L_init widen exactly); tensors the reference keeps but we rebuild are dropped and listed. Returns a
    summary."""
    step_file, data_dir = Path(step_file), Path(data_dir)
    if backend not in BACKENDS:
        raise HRMError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    check_checkpoint_output(Path(dst), force)
    check_dataset(data_dir)
    arch, train = read_reference_config(step_file.parent / REFERENCE_CONFIG)
    tensors, dropped = read_reference_state(step_file)
    family = reference_family(arch, tensors)
    fields, ignored = model_fields(arch, family)
    metadata = read_metadata(data_dir, "train")
    if "embed_tokens.embedding_weight" not in tensors:
        raise HRMError(f"{step_file} has no token table (embed_tokens.embedding_weight); is it an HRM or TRM "
                       f"checkpoint?")
    vocab_size = tensors["embed_tokens.embedding_weight"].shape[0]
    if vocab_size != metadata.vocab_size:
        raise HRMError(f"{step_file} has a token table of {vocab_size} rows but the dataset {data_dir} has "
                       f"vocab_size={metadata.vocab_size}; pass the dataset the checkpoint was trained on")
    num_puzzles = metadata.num_puzzle_identifiers
    if "puzzle_emb.weights" in tensors and tensors["puzzle_emb.weights"].shape[0] != num_puzzles:
        raise HRMError(f"{step_file} has a puzzle table of {tensors['puzzle_emb.weights'].shape[0]} rows but the "
                       f"dataset {data_dir} has num_puzzle_identifiers={num_puzzles}; pass the dataset the "
                       f"checkpoint was trained on (same build, same augmentations)")
    try:
        model_config = family.config(vocab_size=vocab_size, seq_len=metadata.seq_len,
                                     num_puzzle_identifiers=num_puzzles, **fields)
    except HRMError as e:
        raise HRMError(f"{step_file.parent / REFERENCE_CONFIG}: {e}") from None
    check_positions(model_config, {**tensors, **dropped}, step_file, data_dir)
    check_stored(model_config, {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in tensors.items()},
                 str(step_file), REFERENCE_CONFIG)
    check_finite({k: bool(torch.isfinite(v).all()) for k, v in tensors.items()}, str(step_file))
    weights = {k: v.to(torch.float32).numpy() for k, v in tensors.items()}  # bfloat16 widens in torch, not numpy
    package = import_backend(backend)
    model = package.model.build_model(model_config)
    package.model.load_canonical(model, weights)
    record = dataset_record(data_dir, dataset_kind(data_dir))
    config = CheckpointConfig(model=model_config, train=train, dataset=record)
    package.checkpoint.save_checkpoint(Path(dst), model, config, read_identifiers(data_dir))
    summary = {"from": str(step_file), "to": f"{dst} ({backend})", "family": family.name,
               "parameters": f"{count_parameters(model_config):,}", "vocab_size": vocab_size,
               "seq_len": metadata.seq_len, "num_puzzle_identifiers": num_puzzles,
               "dropped": ", ".join(dropped) or "none", "ignored arch keys": ", ".join(ignored) or "none"}
    if num_puzzles > 1:
        summary["warning"] = PUZZLE_ORDER_WARNING
    return summary
