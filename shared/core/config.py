"""Model and training configs (shared/DESIGN.md sections 2 and 5), their presets and `key=value` overrides."""

import dataclasses
import json
import math
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hrm_shared.core.errors import HRMError


class _ConfigBase:
    """from_dict / to_dict / JSON and type checking shared by both configs."""

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a dict, ignoring (with a warning) keys this config does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            warnings.warn(f"{cls.__name__}: ignoring unknown keys {', '.join(unknown)}", stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path):
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise HRMError(f"config file {path} does not exist") from None
        except json.JSONDecodeError as e:
            raise HRMError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            setattr(self, f.name, _coerce(type(self).__name__, f.name, value, hints[f.name]))


def _coerce(owner: str, name: str, value, hint):
    """`value` checked against the field's type; ints pass as floats, strings are parsed."""
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise HRMError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if isinstance(value, str) and hint is not str:
        value = _parse(name, value, hint)
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise HRMError(f"{name}={value!r} must be of type {hint.__name__} (in {owner})")


def _parse(name: str, text: str, hint):
    try:
        if hint is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return hint(text)
    except ValueError:
        raise HRMError(f"{name}={text!r} is not a valid {hint.__name__}") from None


@dataclass
class ModelConfig(_ConfigBase):
    """Fields every model family shares (names as the reference's). vocab_size, seq_len and num_puzzle_identifiers
    come from the data."""

    vocab_size: int = 0
    seq_len: int = 0
    num_puzzle_identifiers: int = 1
    hidden_size: int = 512
    num_heads: int = 8  # head_dim = hidden_size / num_heads = 64
    expansion: float = 4.0
    L_layers: int = 4
    H_cycles: int = 2
    L_cycles: int = 2
    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1
    puzzle_emb_ndim: int = 512  # 0 disables the puzzle embedding prefix
    pos_encodings: Literal["rope", "learned"] = "rope"
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    forward_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    loss_type: Literal["stablemax_cross_entropy", "softmax_cross_entropy"] = "stablemax_cross_entropy"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("hidden_size", "num_heads", "L_layers", "H_cycles", "L_cycles", "halt_max_steps"):
            if getattr(self, name) < 1:
                raise HRMError(f"{name}={getattr(self, name)} must be at least 1")
        if self.hidden_size % self.num_heads or self.head_dim % 2:
            raise HRMError(f"hidden_size={self.hidden_size} must split into num_heads={self.num_heads} "
                           f"heads of an even size")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise HRMError(f"halt_exploration_prob={self.halt_exploration_prob} must lie in [0, 1]")
        if self.puzzle_emb_ndim < 0 or self.expansion <= 0:
            raise HRMError("puzzle_emb_ndim must be >= 0 and expansion > 0")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def intermediate_size(self) -> int:
        """SwiGLU width: round(expansion * H * 2/3) rounded up to a multiple of 256."""
        return swiglu_width(self.expansion, self.hidden_size)


def swiglu_width(expansion: float, hidden_size: int) -> int:
    """SwiGLU's inner width for `hidden_size`: round(expansion * hidden_size * 2/3) rounded up to a multiple of 256."""
    return math.ceil(round(expansion * hidden_size * 2 / 3) / 256) * 256


@dataclass
class HRMConfig(ModelConfig):
    """The Hierarchical Reasoning Model: two stacks, H_level (H_layers blocks) and L_level (L_layers blocks)."""

    H_layers: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.H_layers < 1:
            raise HRMError(f"H_layers={self.H_layers} must be at least 1")

    @property
    def puzzle_emb_len(self) -> int:
        """P: how many positions the puzzle embedding occupies in front of the sequence."""
        return -(-self.puzzle_emb_ndim // self.hidden_size)


@dataclass
class TRMConfig(ModelConfig):
    """The Tiny Recursive Model (shared/TRM.md section 1): one network `L_level` of L_layers blocks, recursed H_cycles
    times (each recursion: L_cycles latent updates, then one answer update), the last recursion with full gradient.

    `puzzle_emb_len` is P, the prefix length (0: HRM's ceil(puzzle_emb_ndim / hidden_size), stored as that value);
    `mlp_t` replaces attention by a token-mixing SwiGLU over the P + seq_len positions.
    """

    L_layers: int = 2
    H_cycles: int = 3
    L_cycles: int = 6
    pos_encodings: Literal["rope", "learned", "none"] = "rope"
    puzzle_emb_len: int = 16
    mlp_t: bool = False
    no_ACT_continue: bool = True  # halt on q_halt > 0 alone, no Q-continue target

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.puzzle_emb_len < 0:
            raise HRMError(f"puzzle_emb_len={self.puzzle_emb_len} must be >= 0")
        if self.puzzle_emb_ndim == 0 and self.puzzle_emb_len != 0:
            raise HRMError(f"puzzle_emb_len={self.puzzle_emb_len} needs a puzzle embedding; with puzzle_emb_ndim=0 "
                           f"set puzzle_emb_len=0")
        if self.puzzle_emb_len == 0 and self.puzzle_emb_ndim > 0:
            self.puzzle_emb_len = -(-self.puzzle_emb_ndim // self.hidden_size)
        if self.puzzle_emb_len * self.hidden_size < self.puzzle_emb_ndim:
            raise HRMError(f"puzzle_emb_len={self.puzzle_emb_len} positions of hidden_size={self.hidden_size} cannot "
                           f"hold puzzle_emb_ndim={self.puzzle_emb_ndim}")
        if not self.no_ACT_continue:
            raise HRMError("no_ACT_continue=False is not supported: the reference's branch for it is broken "
                           "(shared/TRM.md section 2); TRM halts on q_halt alone")

    @property
    def token_mixer_size(self) -> int:
        """mlp_t's width: the SwiGLU over the P + seq_len positions has this inner size."""
        return swiglu_width(self.expansion, self.puzzle_emb_len + self.seq_len)


@dataclass
class TrainConfig(_ConfigBase):
    """Optimisation and the training loop. Epochs and eval_interval are counted in epochs over the train groups."""

    global_batch_size: int = 768
    epochs: int = 100000
    eval_interval: int = 10000
    lr: float = 1e-4
    lr_min_ratio: float = 1.0  # 1.0: constant after warmup
    lr_warmup_steps: int = 2000
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    puzzle_emb_lr: float = 1e-2
    puzzle_emb_weight_decay: float = 0.1
    ema: bool = False  # evaluate and export an exponential moving average of the parameters (shared/TRM.md section 4)
    ema_rate: float = 0.999  # shadow = rate * shadow + (1 - rate) * parameter after each step
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("global_batch_size", "epochs", "eval_interval"):
            if getattr(self, name) < 1:
                raise HRMError(f"{name}={getattr(self, name)} must be at least 1")
        if self.epochs % self.eval_interval:
            raise HRMError(f"eval_interval={self.eval_interval} must divide epochs={self.epochs}")
        if not 0.0 < self.ema_rate < 1.0:
            raise HRMError(f"ema_rate={self.ema_rate} must lie in (0, 1)")


_SUDOKU_1K = dict(epochs=20000, eval_interval=2000, lr=1e-4, puzzle_emb_lr=1e-4, weight_decay=1.0,
                  puzzle_emb_weight_decay=1.0)
_TRM_1K = dict(epochs=50000, eval_interval=5000, lr=1e-4, puzzle_emb_lr=1e-4, weight_decay=1.0,
               puzzle_emb_weight_decay=1.0, ema=True)
_TRM_ARC = dict(epochs=100000, eval_interval=10000, lr=1e-4, puzzle_emb_lr=1e-2, weight_decay=0.1,
                puzzle_emb_weight_decay=0.1, ema=True)

PRESETS: dict[str, tuple[type[ModelConfig], dict, dict]] = {
    "sudoku": (HRMConfig, {}, _SUDOKU_1K),
    "maze": (HRMConfig, {}, _SUDOKU_1K),
    # ARC (reference recipe): ARC-AGI-1 + ConceptARC or ARC-AGI-2 data with 1000 augmentations; the recipes differ
    # only in the data they are trained on.
    "arc": (HRMConfig, {}, dict(epochs=100000, eval_interval=10000)),
    "arc-agi-1": (HRMConfig, {}, dict(epochs=100000, eval_interval=10000)),
    "arc-agi-2": (HRMConfig, {}, dict(epochs=100000, eval_interval=10000)),
    # ARC on a laptop (ours): build with --num-aug 300; batch 32 keeps the activations of the one-step gradient
    # within 16 GB of unified memory, and the lr follows the batch down (square-root scaling from 1e-4 at 768).
    "arc-laptop": (HRMConfig, {}, dict(global_batch_size=32, lr=2e-5, epochs=2000, eval_interval=200, lr_warmup_steps=2000)),
    "sudoku-full": (
        HRMConfig,
        dict(L_cycles=8, halt_max_steps=8, pos_encodings="learned", loss_type="softmax_cross_entropy"),
        dict(epochs=100, eval_interval=10, lr_min_ratio=0.1, global_batch_size=2304, lr=3e-4, puzzle_emb_lr=3e-4,
             weight_decay=0.1, puzzle_emb_weight_decay=0.1),
    ),
    # For tests and the CPU demo: a few seconds per hundred steps on two cores.
    "tiny": (
        HRMConfig,
        dict(hidden_size=64, num_heads=2, expansion=2.0, H_layers=1, L_layers=1, halt_max_steps=4,
             puzzle_emb_ndim=64, forward_dtype="float32"),
        dict(global_batch_size=64, epochs=200, eval_interval=50, lr=1e-3, lr_warmup_steps=100, weight_decay=0.1,
             puzzle_emb_lr=1e-2),
    ),
    # `hrm demo`: the tiny model on 10,000 4x4 puzzles, about 4,500 steps with a cosine decay.
    "demo": (
        HRMConfig,
        dict(hidden_size=64, num_heads=2, expansion=2.0, H_layers=1, L_layers=1, halt_max_steps=4,
             puzzle_emb_ndim=64, forward_dtype="float32"),
        dict(global_batch_size=64, epochs=29, eval_interval=29, lr=3e-3, lr_warmup_steps=200, lr_min_ratio=0.1,
             weight_decay=0.1, puzzle_emb_lr=1e-2),
    ),
    # TRM (shared/TRM.md section 4): the reference's recipes. Sudoku with the token-mixing MLP (5M) or attention (7M).
    "trm-sudoku": (TRMConfig, dict(mlp_t=True, pos_encodings="none"), _TRM_1K),
    "trm-sudoku-att": (TRMConfig, {}, _TRM_1K),
    "trm-maze": (TRMConfig, dict(L_cycles=4), _TRM_1K),
    "trm-arc-agi-1": (TRMConfig, dict(L_cycles=4), _TRM_ARC),
    "trm-arc-agi-2": (TRMConfig, dict(L_cycles=4), _TRM_ARC),
    # For tests and the CPU: the smallest config of shared/TRM.md section 6 (hidden 64, 2 recursions of 2 latent
    # updates), float32.
    "trm-tiny": (
        TRMConfig,
        dict(hidden_size=64, num_heads=2, H_cycles=2, L_cycles=2, halt_max_steps=4, puzzle_emb_ndim=64,
             puzzle_emb_len=2, forward_dtype="float32"),
        dict(global_batch_size=64, epochs=200, eval_interval=50, lr=1e-3, lr_warmup_steps=100, weight_decay=0.1,
             puzzle_emb_lr=1e-2, ema=True),
    ),
    # `hrm demo --model trm`: trm-tiny (the size of `demo`) with the demo's training recipe and EMA.
    "trm-demo": (
        TRMConfig,
        dict(hidden_size=64, num_heads=2, H_cycles=2, L_cycles=2, halt_max_steps=4, puzzle_emb_ndim=64,
             puzzle_emb_len=2, forward_dtype="float32"),
        dict(global_batch_size=64, epochs=29, eval_interval=29, lr=3e-3, lr_warmup_steps=200, lr_min_ratio=0.1,
             weight_decay=0.1, puzzle_emb_lr=1e-2, ema=True),
    ),
}


def preset(name: str) -> tuple[ModelConfig, TrainConfig]:
    """The (model, training) configs of a named preset; the model config's class is its family's."""
    if name not in PRESETS:
        raise HRMError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    config_class, model, train = PRESETS[name]
    return config_class(**model), TrainConfig(**train)


def apply_overrides(model: ModelConfig, train: TrainConfig, overrides: list[str]) -> tuple[ModelConfig, TrainConfig]:
    """Apply `key=value` strings (`key` a field of either config, optionally prefixed `model.` or `train.`)."""
    changes: dict[str, dict] = {"model": {}, "train": {}}
    fields = {"model": {f.name for f in dataclasses.fields(model)},
              "train": {f.name for f in dataclasses.fields(TrainConfig)}}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HRMError(f"override {item!r} is not of the form key=value")
        scope, dot, name = key.rpartition(".")
        scopes = [scope] if dot else [s for s in fields if name in fields[s]]
        if not scopes or scopes[0] not in fields or name not in fields[scopes[0]]:
            raise HRMError(f"unknown config key {key!r}; model keys: {', '.join(sorted(fields['model']))}; "
                           f"train keys: {', '.join(sorted(fields['train']))}")
        changes[scopes[0]][name] = value
    return model.replace(**changes["model"]), train.replace(**changes["train"])
