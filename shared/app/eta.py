"""How long a training run will take on this device: an estimate before its first step, from the step's FLOPs
(shared/app/flops.py) and the device's speed, then the measured time per step of its first steps. `hrm train` prints
both, and a warning naming a preset that fits when the run would take more than a day here.

The device's speed before any step ran: on the CPU, numpy's float32 matrix product measured for a moment, times
CPU_EFFICIENCY (what a training step reached of it on the 2-core development machine: torch 0.9 for the
27M-parameter model and 0.5 for the 132k one of `demo`, MLX's Linux CPU build about 0.07); on an NVIDIA GPU of
flops.PEAK_BF16_FLOPS, its peak times CUDA_MFU; elsewhere (Metal, MPS, an unknown GPU) unknown until steps are
measured. A rough figure, to tell minutes from days: the measured one replaces it.
"""

import time
from collections.abc import Callable

import numpy as np

from hrm_shared.app.flops import peak_flops, train_step_flops
from hrm_shared.core.config import ModelConfig, TrainConfig, preset
from hrm_shared.core.format import DatasetMetadata
from hrm_shared.core.progress import duration, pace
from hrm_shared.core.schedule import RunPlan, run_plan
from hrm_shared.puzzles.kinds import KINDS

DAY_SECONDS = 86400.0
CPU_EFFICIENCY = {"torch": 0.9, "mlx": 0.07}
CUDA_MFU = 0.25  # assumed model FLOP utilisation before a step is measured
PROBE_SIZE = 1024  # the side of the probe's matrices (smaller ones run far below the BLAS's speed)
MEASURED_STEPS = 2  # steps after the first read (which includes compiling) that the measured figure averages


def cpu_matmul_flops(seconds: float = 0.1) -> float:
    """FLOP/s of numpy's float32 matrix product of PROBE_SIZE-square matrices on this CPU, measured for about
    `seconds` (at least one product after a warm-up)."""
    a = np.random.default_rng(0).standard_normal((PROBE_SIZE, PROBE_SIZE), dtype=np.float32)
    a @ a
    products, began = 0, time.perf_counter()
    while products == 0 or time.perf_counter() - began < seconds:
        a @ a
        products += 1
    return 2 * PROBE_SIZE**3 * products / (time.perf_counter() - began)


def device_flops(backend: str, device: str, device_name: str) -> float | None:
    """The FLOP/s a training step of `backend` is assumed to reach on `device` (named `device_name`, as the
    backend's bench.device_name gives it) before one is measured; None where unknown (see the module doc)."""
    if device == "cpu":
        return cpu_matmul_flops() * CPU_EFFICIENCY.get(backend, 1.0)
    if device.startswith("cuda") and (peak := peak_flops(device_name)) is not None:
        return peak * CUDA_MFU
    return None


def step_seconds(model: ModelConfig, train: TrainConfig, flops: float, processes: int = 1) -> float:
    """Estimated seconds of one training step of `model` and `train` in `processes` processes at `flops` FLOP/s
    each (the global batch split among them)."""
    return train_step_flops(model, max(1, train.global_batch_size // processes)) / flops


def train_plan(train: TrainConfig, metadata: DatasetMetadata, eval_every: int | None = None) -> RunPlan:
    """The plan (core/schedule.py run_plan) of a run of `train` on a dataset whose train split has `metadata`,
    evaluating every `eval_every` steps when given."""
    return run_plan(train.epochs, train.eval_interval, metadata.total_groups, metadata.mean_puzzle_examples,
                    train.global_batch_size, eval_every)


def run_length(train: TrainConfig, metadata: DatasetMetadata) -> int:
    """Optimizer steps of a whole run of `train` on a dataset whose train split has `metadata`: its plan's last
    step."""
    return train_plan(train, metadata).last_step


def fitting_preset(kind: str | None, model: ModelConfig, metadata: DatasetMetadata, flops: float, processes: int,
                   seconds: float = DAY_SECONDS) -> tuple[str, float] | None:
    """(name, estimated seconds of its whole run) of the largest preset for puzzles of `kind` (its record's presets
    in puzzles/kinds.py; none for an unknown kind) whose run on this dataset (`model`'s data fields, the train
    split's `metadata`) takes under `seconds` at `flops`; None when none does."""
    presets = KINDS[kind].presets if kind is not None and kind in KINDS else ()
    for name in presets:
        candidate, train = preset(name)
        candidate = candidate.replace(vocab_size=model.vocab_size, seq_len=model.seq_len,
                                      num_puzzle_identifiers=model.num_puzzle_identifiers)
        total = run_length(train, metadata) * step_seconds(candidate, train, flops, processes)
        if total < seconds:
            return name, total
    return None


def day_warning(total_seconds: float, suggestion: tuple[str, float] | None) -> str:
    """The line printed when a run would take `total_seconds` (more than a day) here, naming the preset of
    fitting_preset (`suggestion`) or, without one, what else to do."""
    advice = (f"--preset {suggestion[0]} would take about {duration(suggestion[1])}" if suggestion
              else "no preset for this dataset takes under a day here: use an NVIDIA GPU")
    return (f"warning: this run would take about {duration(total_seconds)} here; {advice}, or stop it with "
            f"--max-minutes and continue with --resume")


def estimate_line(seconds_per_step: float, steps: int, device: str) -> str:
    """The line printed before the first step: the estimated time per step and for the `steps` to go."""
    return (f"estimated {pace(seconds_per_step)} on {device} (from the FLOPs): about "
            f"{duration(seconds_per_step * steps)} for {steps:,} steps")


def run_estimate(flops: float | None, model: ModelConfig, train: TrainConfig, kind: str | None,
                 metadata: DatasetMetadata, steps: int, processes: int, device: str) -> tuple[list[str], float | None]:
    """(the lines printed before the first step, the estimated seconds per step) of `steps` steps of `model` and
    `train` on `device` at `flops` FLOP/s (device_flops; None: unknown, no line), with the day warning naming a
    preset for puzzles of `kind` that fits (`metadata`: the train split's) when they take more than a day."""
    if flops is None:
        return [], None
    per_step = step_seconds(model, train, flops, processes)
    lines = [estimate_line(per_step, steps, device)]
    if per_step * steps > DAY_SECONDS:
        lines.append(day_warning(per_step * steps, fitting_preset(kind, model, metadata, flops, processes)))
    return lines, per_step


class Pace:
    """The time per step measured over the first steps of an invocation, from the first read (whose steps include
    compiling) to the first read at least MEASURED_STEPS steps later; one line to print when it is known.
    `warning(seconds_left, seconds_per_step)` gives the day warning, unless one was printed (`warned`)."""

    def __init__(self, target: int, warned: bool, warning: Callable[[float, float], str]) -> None:
        self.target, self.warned, self.warning = target, warned, warning
        self.first: tuple[int, float] | None = None
        self.done = False

    def read(self, step: int, train_seconds: float) -> str | None:
        """After the steps up to `step` were read, `train_seconds` into the invocation: the measured line (with
        the day warning when the rest of the run takes more than a day and none was printed), once; else None."""
        if self.done:
            return None
        if self.first is None:
            self.first = step, train_seconds
            return None
        if step - self.first[0] < MEASURED_STEPS:
            return None
        self.done = True
        per_step = (train_seconds - self.first[1]) / (step - self.first[0])
        left = per_step * (self.target - step)
        text = f"measured {pace(per_step)}: about {duration(left)} for the {self.target - step:,} steps left"
        if left > DAY_SECONDS and not self.warned:
            text += "\n" + self.warning(left, per_step)
        return text
