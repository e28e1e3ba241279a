"""Model and training configs (shared/DESIGN.md sections 2 and 5), their presets and `key=value` overrides."""

import dataclasses
import json
import math
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from hrm_shared.core.atomic import write_file
from hrm_shared.core.errors import HRMError

# Upper bounds (ours). Every integer fits int32, the dtype of the puzzle indices and a seed every framework takes. A
# model runs each of its nested loops (layers per stack, H_cycles, L_cycles, halt_max_steps) at most MAX_DEPTH times,
# far beyond the papers' 1 to 16, so that a slip such as H_cycles=10**20 is refused instead of running forever.
MAX_INT = 2**31 - 1
MAX_DEPTH = 256
MAX_EXPANSION = 64.0  # the SwiGLU width over hidden_size; the reference's is 4


@dataclass(frozen=True)
class Range:
    """The values a numeric config field may take: `low` to `high` (None: unbounded above), each end included
    unless open."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low or (value == self.low and not self.low_open)
        below = self.high is None or value < self.high or (value == self.high and not self.high_open)
        return above and below

    def __str__(self) -> str:
        low = str(self.low) if isinstance(self.low, int) else f"{self.low:g}"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        high = str(self.high) if isinstance(self.high, int) else f"{self.high:g}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


# The JSON type of each field type, for stored configs (a Literal's choices are strings).
_JSON_TYPES = {int: ((int,), "an integer"), float: ((int, float), "a number"), bool: ((bool,), "true or false"),
               str: ((str,), "a string")}


class _ConfigBase:
    """from_dict / to_dict / JSON, type and range checking shared by both configs."""

    RANGES: ClassVar[dict[str, Range]] = {}  # every numeric field's allowed values, checked in __post_init__
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field]]  # each subclass is a dataclass

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a dict, ignoring (with a warning) keys this config does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            warnings.warn(f"{cls.__name__}: ignoring unknown keys {', '.join(unknown)}", stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, d: object, where: str, defaults: dict | None = None):
        """Build from a stored config (a section of a config.json), as strictly as tensors are loaded: every field
        must be there with its JSON type (`defaults` stand in for fields that older versions did not write), and no
        other key. HRMError naming `where` and the first missing, mistyped or unknown field."""
        if not isinstance(d, dict):
            raise HRMError(f"{where} is {type(d).__name__}, not a JSON object")
        d = {**(defaults or {}), **d}
        if unknown := sorted(set(d) - {f.name for f in dataclasses.fields(cls)}):
            raise HRMError(f"{where} has the unknown key {unknown[0]!r} ({len(unknown)} unknown)")
        hints = typing.get_type_hints(cls)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d]
        if missing:
            raise HRMError(f"{where} lacks {', '.join(missing)}")
        for f in dataclasses.fields(cls):
            hint = str if typing.get_origin(hints[f.name]) is Literal else hints[f.name]
            types, kind = _JSON_TYPES[hint]
            if type(d[f.name]) not in types:
                raise HRMError(f"{where}: {f.name}={d[f.name]!r} must be {kind}")
        try:
            return cls.from_dict(d)
        except HRMError as e:
            raise HRMError(f"{where}: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        write_file(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

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
            value = _coerce(type(self).__name__, f.name, getattr(self, f.name), hints[f.name])
            setattr(self, f.name, value)
            if isinstance(value, float) and not math.isfinite(value):
                raise HRMError(f"{f.name}={value!r} must be a finite number")
            if f.name in self.RANGES and value not in self.RANGES[f.name]:
                raise HRMError(f"{f.name}={value!r} must be {self.RANGES[f.name]}")


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
        try:
            return float(value)
        except OverflowError:
            raise HRMError(f"{name}={value!r} is too large for a float") from None
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
    # "one_step": the papers' gradient (HRM: the last L and H updates; TRM: the last recursion). "bptt": backprop
    # through every cycle of the segment, the ablation the one-step gradient replaces (memory grows with cycles).
    grad: Literal["one_step", "bptt"] = "one_step"

    RANGES: ClassVar[dict[str, Range]] = {
        "vocab_size": Range(0, MAX_INT), "seq_len": Range(0, MAX_INT), "num_puzzle_identifiers": Range(1, MAX_INT),
        "hidden_size": Range(1, MAX_INT), "num_heads": Range(1, MAX_INT),
        "expansion": Range(0, MAX_EXPANSION, low_open=True), "L_layers": Range(1, MAX_DEPTH),
        "H_cycles": Range(1, MAX_DEPTH), "L_cycles": Range(1, MAX_DEPTH), "halt_max_steps": Range(1, MAX_DEPTH),
        "halt_exploration_prob": Range(0, 1), "puzzle_emb_ndim": Range(0, MAX_INT),
        "rope_theta": Range(0, low_open=True), "rms_norm_eps": Range(0, low_open=True)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_size % self.num_heads or self.head_dim % 2:
            raise HRMError(f"hidden_size={self.hidden_size} must split into num_heads={self.num_heads} "
                           f"heads of an even size")
        if self.intermediate_size < 1:
            raise HRMError(f"expansion={self.expansion} leaves hidden_size={self.hidden_size} no SwiGLU width; "
                           f"raise expansion")

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

    RANGES: ClassVar[dict[str, Range]] = {**ModelConfig.RANGES, "H_layers": Range(1, MAX_DEPTH)}

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
    # TRM adds "none" (no position encoding, for the mlp_t token mixer); HRM's field keeps refusing it.
    pos_encodings: Literal["rope", "learned", "none"] = "rope"  # type: ignore[assignment]
    puzzle_emb_len: int = 16
    mlp_t: bool = False
    no_ACT_continue: bool = True  # halt on q_halt > 0 alone, no Q-continue target

    RANGES: ClassVar[dict[str, Range]] = {**ModelConfig.RANGES, "puzzle_emb_len": Range(0, MAX_INT)}

    def __post_init__(self) -> None:
        super().__post_init__()
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

    RANGES: ClassVar[dict[str, Range]] = {
        "global_batch_size": Range(1, MAX_INT), "epochs": Range(1, MAX_INT), "eval_interval": Range(1, MAX_INT),
        "lr": Range(0), "lr_min_ratio": Range(0, 1), "lr_warmup_steps": Range(0, MAX_INT),
        "beta1": Range(0, 1, high_open=True), "beta2": Range(0, 1, high_open=True), "weight_decay": Range(0),
        "puzzle_emb_lr": Range(0), "puzzle_emb_weight_decay": Range(0),
        "ema_rate": Range(0, 1, low_open=True, high_open=True), "seed": Range(0, MAX_INT)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs % self.eval_interval:
            raise HRMError(f"eval_interval={self.eval_interval} must divide epochs={self.epochs}")


_SUDOKU_1K = dict(epochs=20000, eval_interval=2000, lr=1e-4, puzzle_emb_lr=1e-4, weight_decay=1.0,
                  puzzle_emb_weight_decay=1.0)
_TRM_1K = dict(epochs=50000, eval_interval=5000, lr=1e-4, puzzle_emb_lr=1e-4, weight_decay=1.0,
               puzzle_emb_weight_decay=1.0, ema=True)
_TRM_ARC = dict(epochs=100000, eval_interval=10000, lr=1e-4, puzzle_emb_lr=1e-2, weight_decay=0.1,
                puzzle_emb_weight_decay=0.1, ema=True)

PRESETS: dict[str, tuple[type[ModelConfig], dict, dict]] = {
    "sudoku": (HRMConfig, {}, _SUDOKU_1K),
    # The laptop presets (ours) fit a 16 GB Mac (Metal's working set about 10.7 GiB) with the memory model's 30%
    # tolerance to spare: predicted peaks, shared/app/memory.py, at most 75% of it. Sudoku at batch 256 (6.2 GiB;
    # batch 768 needs 17.6), lr following the batch down (square-root scaling from 1e-4 at 768).
    "sudoku-laptop": (HRMConfig, {}, {**_SUDOKU_1K, "global_batch_size": 256, "lr": 6e-5, "puzzle_emb_lr": 6e-5}),
    "maze": (HRMConfig, {}, _SUDOKU_1K),
    # ARC (reference recipe): ARC-AGI-1 + ConceptARC or ARC-AGI-2 data with 1000 augmentations; the recipes differ
    # only in the data they are trained on.
    "arc": (HRMConfig, {}, dict(epochs=100000, eval_interval=10000)),
    "arc-agi-1": (HRMConfig, {}, dict(epochs=100000, eval_interval=10000)),
    "arc-agi-2": (HRMConfig, {}, dict(epochs=100000, eval_interval=10000)),
    # ARC on a laptop (ours), on a --num-aug 300 build: batch 12 (7.9 GiB; batch 32 needs 19.4), lr scaled as above.
    "arc-laptop": (HRMConfig, {}, dict(global_batch_size=12, lr=1.25e-5, epochs=2000, eval_interval=200,
                                       lr_warmup_steps=2000)),
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
    # `hrm demo --size 4 --model hrm`: the tiny model's size on 10,000 minimal 4x4 puzzles, 2,812 steps with a cosine
    # decay (about four minutes on two CPU cores). From the search in scripts/results/hrm4_search_cpu.json: 2 segments
    # in training (as demo-9), and learned positions with 4 heads (with rope the worst seed had 12% exact at step 1,000
    # where learned positions had 79%); softmax cross-entropy.
    "demo": (
        HRMConfig,
        dict(hidden_size=64, num_heads=4, expansion=2.0, H_layers=1, L_layers=1, halt_max_steps=2,
             puzzle_emb_ndim=64, pos_encodings="learned", loss_type="softmax_cross_entropy", forward_dtype="float32"),
        dict(global_batch_size=64, epochs=18, eval_interval=18, lr=3e-3, lr_warmup_steps=200, lr_min_ratio=0.1,
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
    # `hrm demo --size 9`: 9x9 puzzles with 45 blanks and one puzzle identifier (so no puzzle embedding). TRM's
    # token-mixing MLP (mlp_t) learns Sudoku's rows, columns and boxes in ten minutes on two CPU cores
    # (scripts/bench_demo.py). HRM (demo-9) is the paper's model at 137k parameters: attention, learned positions.
    # Its recipe comes from the search in scripts/results/hrm9_search_cpu.json: with 8 segments per puzzle in training
    # HRM stays on the copy-the-givens plateau for thousands of steps (a batch holds 1/8 fresh puzzles); with 2 it
    # leaves it within a few hundred, faster at lr 3e-3 than 1e-3; 4 heads, softmax cross-entropy. No EMA: over a few
    # thousand steps a 0.999 average lags the weights. 24 epochs (7,500 steps) fill about an hour on two idle CPU cores.
    "demo-9": (
        HRMConfig,
        dict(hidden_size=64, num_heads=4, expansion=2.0, H_layers=1, L_layers=1, halt_max_steps=2, puzzle_emb_ndim=0,
             pos_encodings="learned", loss_type="softmax_cross_entropy", forward_dtype="float32"),
        dict(global_batch_size=64, epochs=24, eval_interval=1, lr=3e-3, lr_warmup_steps=300, lr_min_ratio=0.1,
             weight_decay=0.1),
    ),
    "trm-demo-9": (
        TRMConfig,
        dict(hidden_size=64, num_heads=2, expansion=2.0, L_layers=1, H_cycles=2, L_cycles=2, halt_max_steps=8,
             puzzle_emb_ndim=0, puzzle_emb_len=0, pos_encodings="none", mlp_t=True, forward_dtype="float32"),
        dict(global_batch_size=64, epochs=8, eval_interval=1, lr=3e-3, lr_warmup_steps=100, lr_min_ratio=0.1,
             weight_decay=0.1),
    ),
}

# Baselines (the paper's): the direct-prediction Transformer of the same size as the HRM preset it is named after.
# One cycle of each level and one segment is one pass through L_level then H_level, L_layers + H_layers post-norm
# blocks with the same parameters: no recurrence, no ACT, nothing cut from the gradient. It differs from a plain
# Transformer only by the fixed H_init and L_init vectors added as the two injections, and its Q head is trained by
# the q_halt loss though it never halts anything. The BPTT ablation is `--set grad=bptt` on any preset.
_DIRECT = dict(H_cycles=1, L_cycles=1, halt_max_steps=1)
PRESETS.update({f"{name}-direct": (HRMConfig, {**PRESETS[name][1], **_DIRECT}, PRESETS[name][2])
                for name in ("sudoku", "demo")})


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
