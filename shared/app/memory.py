"""The memory a training run needs (`hrm train --dry-run`, and the warning before a run): the predicted peak of one
process in bytes, part by part, the memory its device can give, and the largest global batch that fits.

With B rows per process, T = P + seq_len positions, hidden H, SwiGLU width I, N trainable parameters and a forward
dtype of s bytes (parameters are float32 masters, cast at each use):

    parameters    4N               float32 masters (and the small buffers H_init, L_init)
    gradients     4N               one per parameter, alive when the backward ends
    optimizer     8N               AdamATan2's m and v, float32 (torch also keeps its update direction: 12N)
    ema           4N               the shadow, with train.ema
    puzzle_table  4 ids ndim       a float32 buffer trained by SignSGD (no moments)
    carry         B T H 2s x 2     z_H, z_L of the carry a step takes and of the one it returns
    activations   what the differentiated part saves for the backward, and the backward's transient

The differentiated part is HRM's one-step gradient, one L and one H update (L_layers + H_layers blocks) whatever the
cycles, and TRM's whole last recursion, L_cycles + 1 calls of its network of L_layers blocks (shared/TRM.md section
2); with grad="bptt" every update of the segment. What one block saves, counted per row from the autograd graph of
hrm_torch/layers.py (the two pre-norm sums are float32: RMSNorm's statistics run in float32):

    attention block   s (8 T H + 4 T I) + 4 (2 T H)
    mlp_t block       s (2 T H + 4 J H + 4 T I) + 4 (2 T H)      J: the token mixer's width over the T positions

MLX (on the CPU, and assumed on Metal: an upper bound there) differentiates attention unfused, so each attention block
also keeps heads x T x T probabilities of (4 + s) bytes, and its mlp_t block 3 J H elements more. Without float32
forward the backward also keeps the bfloat16 copy of the weights each differentiated block call uses. The backward's
transient adds one block; in MLX, which runs the compiled step as one graph, HRM's Q-target segment adds one more (it
runs while the activations are held). torch's allocator holds about 20% beyond what it saves (SLACK, measured on the
CPU; kept on CUDA as the caching allocator's margin; torch.compile's partitioner saves less than eager, so there the
figure is an upper bound). Evaluation (no gradient) is counted when it peaks higher. tests/test_memory.py checks
the predictions against `hrm bench`'s measured peaks on the CPU.
"""

import os
from dataclasses import dataclass
from types import ModuleType

from hrm_shared.core.config import ModelConfig, TrainConfig
from hrm_shared.core.distributed import torchrun_world
from hrm_shared.core.init import count_parameters
from hrm_shared.core.registry import family_of

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
# Memory a CPU process holds beyond its tensors (allocator arenas, thread pools, kernel workspaces): the intercept of
# `hrm bench`'s peak resident set against the batch, torch on the CPU.
CPU_OVERHEAD_BYTES = 24 * 2**20
# Bytes held per byte of the counted activations, by backend (fitted to `hrm bench` on the CPU).
SLACK = {"torch": 1.2, "mlx": 1.0}


@dataclass(frozen=True)
class Runtime:
    """Where a run executes: a backend ("torch", "mlx") and its device ("cpu", "cuda", "cuda:N", "mps", "gpu")."""

    backend: str
    device: str

    @property
    def unfused_attention(self) -> bool:
        """Whether training keeps the attention probabilities (MLX's attention gradient, torch's MPS math kernel)."""
        return self.backend == "mlx" or self.device == "mps"

    @property
    def eval_batch_factor(self) -> int:
        """Evaluation rows per training row: the torch Trainer evaluates 4x the batch on CUDA (no activations)."""
        return 4 if self.backend == "torch" and self.device.startswith("cuda") else 1

    @property
    def overhead_bytes(self) -> int:
        """Memory beyond the tensors, counted where the process's resident set is the device's usage (the CPU)."""
        return CPU_OVERHEAD_BYTES if self.device == "cpu" else 0


def _positions(config: ModelConfig) -> int:
    return config.puzzle_emb_len + config.seq_len


def block_parameters(config: ModelConfig) -> int:
    """Parameters of one block: attention (or TRM's mlp_t) and the SwiGLU."""
    H, I = config.hidden_size, config.intermediate_size
    mixer = 3 * config.token_mixer_size * _positions(config) if getattr(config, "mlp_t", False) else 4 * H * H
    return mixer + 3 * I * H


def differentiated_blocks(config: ModelConfig) -> int:
    """Block calls the backward runs through (the family's, core/registry.py): HRM's one-step gradient (one L and one
    H update, flat in the cycles), TRM's last recursion (L_cycles + 1 calls of the network); with grad="bptt" every
    block call of the segment."""
    return family_of(config).block_calls(config)[1]


def block_activation_bytes(config: ModelConfig, runtime: Runtime) -> int:
    """Bytes one differentiated block call keeps for the backward, per row (see the module docstring)."""
    T, H, I = _positions(config), config.hidden_size, config.intermediate_size
    s = DTYPE_BYTES[config.forward_dtype]
    norms = 4 * 2 * T * H
    if getattr(config, "mlp_t", False):
        J = config.token_mixer_size
        saved = s * (2 * T * H + 4 * J * H + 4 * T * I) + norms
        return saved + (3 * s * J * H if runtime.backend == "mlx" else 0)
    saved = s * (8 * T * H + 4 * T * I) + norms
    return saved + ((4 + s) * config.num_heads * T * T if runtime.unfused_attention else 0)


def activation_bytes(config: ModelConfig, rows: int, runtime: Runtime) -> int:
    """Peak bytes of a training step's activations for `rows` rows: the differentiated block calls' saved tensors,
    the transient blocks (the backward's; MLX's HRM Q-target segment), the heads (their input, the logits and the
    loss's float64 terms), and the bfloat16 weight copies of each differentiated call, times the backend's SLACK."""
    T, H, V = _positions(config), config.hidden_size, config.vocab_size
    s = DTYPE_BYTES[config.forward_dtype]
    calls = differentiated_blocks(config)
    q_target = runtime.backend == "mlx" and family_of(config).q_target and config.halt_max_steps > 1
    heads = 2 * s * T * H + config.seq_len * V * (s + 8 * 8)
    per_row = (calls + 1 + q_target) * block_activation_bytes(config, runtime) + heads
    weight_casts = 0 if s == 4 else 2 * calls * block_parameters(config)
    return int(SLACK[runtime.backend] * (rows * per_row + weight_casts))


def eval_bytes(config: ModelConfig, rows: int, runtime: Runtime) -> int:
    """Bytes evaluation holds beyond the weights for `rows` rows: the carry and one block's intermediates."""
    T, H, I = _positions(config), config.hidden_size, config.intermediate_size
    s = DTYPE_BYTES[config.forward_dtype]
    block = s * (8 * T * H + 3 * T * I) + 4 * 2 * T * H
    if runtime.unfused_attention:
        block += (4 + s) * config.num_heads * T * T
    return rows * (2 * s * T * H + block)


@dataclass
class Estimate:
    """A predicted peak for `rows` rows per process: bytes per part, and the runtime's overhead."""

    rows: int
    parts: dict[str, int]
    overhead: int

    @property
    def peak(self) -> int:
        return sum(self.parts.values()) + self.overhead


def predict_peak(config: ModelConfig, train: TrainConfig, runtime: Runtime, rows: int | None = None) -> Estimate:
    """The peak memory of one process training `config` with `train` on `runtime` with `rows` rows (default: the
    whole global batch) -> Estimate; evaluation's peak (with the EMA's raw copy) stands in for the activations when
    it is higher."""
    rows = train.global_batch_size if rows is None else rows
    N = count_parameters(config)
    s, T, H = DTYPE_BYTES[config.forward_dtype], _positions(config), config.hidden_size
    training = activation_bytes(config, rows, runtime)
    evaluation = eval_bytes(config, rows * runtime.eval_batch_factor, runtime) + (4 * N if train.ema else 0)
    parts = {"parameters": 4 * N + 4 * 2 * H,
             "gradients": 4 * N,
             "optimizer": (12 if runtime.backend == "torch" else 8) * N,
             "ema": 4 * N if train.ema else 0,
             "puzzle_table": 4 * config.num_puzzle_identifiers * config.puzzle_emb_ndim,
             "carry": rows * (2 * 2 * s * T * H + 2 * 4 * config.seq_len),
             "activations": max(training, evaluation)}
    return Estimate(rows, parts, runtime.overhead_bytes)


def max_batch(config: ModelConfig, train: TrainConfig, runtime: Runtime, usable: int, world: int = 1) -> int:
    """The largest global batch, a multiple of the `world` processes, whose per-process peak fits in `usable` bytes;
    0 when not even one row per process does."""
    def fits(rows: int) -> bool:
        return predict_peak(config, train, runtime, rows).peak <= usable

    if not fits(1):
        return 0
    low, high = 1, 2
    while fits(high):
        low, high = high, 2 * high
    while high - low > 1:  # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low * world


def available_ram() -> tuple[int, str] | None:
    """(bytes of RAM available now, how they were read) from os.sysconf; the physical total where the system does
    not count available pages (macOS); None where neither can be read."""
    for name, what in (("SC_AVPHYS_PAGES", "available RAM"), ("SC_PHYS_PAGES", "physical RAM")):
        try:
            return os.sysconf(name) * os.sysconf("SC_PAGE_SIZE"), f"{what} (os.sysconf {name})"
        except (ValueError, OSError):
            continue
    return None


def usable_memory(package: ModuleType, device: str) -> tuple[int, str] | None:
    """(bytes the device can give a run, how they were read) for backend `package` on `device`: the accelerator's
    figure from the backend (CUDA's free memory, Metal's recommended working set), the available RAM on the CPU;
    None when it cannot be read."""
    found = package.bench.usable_memory(device)
    return available_ram() if found is None and device == "cpu" else found


def launched_world() -> int:
    """The processes a launcher started (torchrun's WORLD_SIZE, an MPI world of mlx.launch); 1 for one process."""
    world = torchrun_world()
    if world is not None:
        return world[1]
    return int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1")))


def memory_record(package: ModuleType, config: ModelConfig, train: TrainConfig, device: str | None,
                  world: int | None = None) -> dict:
    """The dry-run's figures for training `config` with `train` on backend `package`'s `device` (None: its default)
    in `world` processes (None: as launched): backend, device, global_batch_size, processes, rows_per_process,
    forward_dtype, peak_memory_bytes and its parts (bytes, with the overhead), usable_memory_bytes and
    usable_memory_method, fits and max_batch (the last four null when the usable memory cannot be read)."""
    world = launched_world() if world is None else world
    runtime = Runtime(package.__name__.removeprefix("hrm_"), package.bench.resolve_device(device))
    rows = train.global_batch_size // world
    estimate = predict_peak(config, train, runtime, rows)
    usable = usable_memory(package, runtime.device)
    record = {"backend": runtime.backend, "device": runtime.device, "global_batch_size": train.global_batch_size,
              "processes": world, "rows_per_process": rows, "forward_dtype": config.forward_dtype,
              "peak_memory_bytes": estimate.peak, "parts": {**estimate.parts, "overhead": estimate.overhead},
              "usable_memory_bytes": None, "usable_memory_method": None, "fits": None, "max_batch": None}
    if usable is not None:
        record.update(usable_memory_bytes=usable[0], usable_memory_method=usable[1], fits=estimate.peak <= usable[0],
                      max_batch=max_batch(config, train, runtime, usable[0], world))
    return record


def _gib(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB"


def format_report(record: dict) -> str:
    """memory_record's figures as the lines `hrm train --dry-run` prints."""
    lines = [f"Predicted peak memory: {_gib(record['peak_memory_bytes'])} per process ({record['backend']} on "
             f"{record['device']}, {record['rows_per_process']:,} rows of global batch "
             f"{record['global_batch_size']:,}, {record['forward_dtype']})"]
    lines += [f"  {name:<13} {_gib(value)}" for name, value in record["parts"].items() if value]
    if record["usable_memory_bytes"] is None:
        lines.append("Usable memory: unknown on this device")
    else:
        lines.append(f"Usable memory: {_gib(record['usable_memory_bytes'])} ({record['usable_memory_method']})")
        lines.append(f"Fits: {'yes' if record['fits'] else 'no'}; the largest global batch that fits: "
                     f"{record['max_batch']:,}")
    return "\n".join(lines)


def check_trainable(record: dict) -> None:
    """Refuse, before anything is allocated, a run of which memory_record says not even one row per process fits
    (a model too large for the device): HRMError with the prediction. A batch too large only warns (`warning`)."""
    from hrm_shared.core.errors import HRMError

    if record["max_batch"] == 0:
        raise HRMError(f"the model cannot train on {record['device']}: {warning(record)[len('Warning: '):]}; "
                       f"choose a smaller model")


def warning(record: dict) -> str:
    """The line `hrm train` prints before a run memory_record says will not fit."""
    advice = (f"--set global_batch_size={record['max_batch']} fits" if record["max_batch"]
              else "not even one row per process fits")
    return (f"Warning: the predicted peak memory, {_gib(record['peak_memory_bytes'])} per process, exceeds the "
            f"{_gib(record['usable_memory_bytes'])} this device can give ({record['usable_memory_method']}); "
            f"{advice} (hrm train --dry-run shows the parts)")
