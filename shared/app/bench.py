"""Training and evaluation benchmark (`hrm bench`, scripts/bench_train.py), the same for both backends.

Each measurement runs in a fresh Python process (`python -m hrm_shared.app.bench SPEC OUT`), so compile caches,
allocator pools and the process's peak resident memory start clean. The worker builds a preset's model on synthetic
random batches of the preset's data shape, warms up (compilation), times training steps (their median), times `predict`
over halt_max_steps segments, and reads the peak memory: the backend's allocator counter where it has one (torch
CUDA, MLX), else the process's peak resident set (VmHWM on Linux, ru_maxrss on macOS) minus its value after the
imports.
"""

import dataclasses
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from hrm_shared.app.flops import eval_flops, peak_flops, train_step_flops
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.atomic import write_file
from hrm_shared.core.config import ModelConfig, TrainConfig, apply_overrides, preset
from hrm_shared.core.contract import BACKENDS, installed
from hrm_shared.core.errors import HRMError
from hrm_shared.core.registry import FAMILIES
from hrm_shared.puzzles.kinds import kind_named

ACCELERATOR_BATCH = 768
CPU_BATCH = {"tiny": 64, "trm-tiny": 64}  # other presets: 4 on the CPU (a few seconds a step with torch)
CPU_SKIP_SEQ_LEN = 900  # seq 900 on the CPU takes minutes a step: only when its preset is asked for by name
EVAL_REPEATS = 3  # timed evaluation calls, within spec.seconds
CYCLES = ((2, 2), (2, 4), (4, 4), (4, 8))
RSS_METHOD = ("the peak resident set of a fresh process (Linux: VmHWM of /proc/self/status; macOS: ru_maxrss) minus "
              "its value after the imports (resident memory: weights, optimizer state, activations, allocator caches)")


@dataclass
class Spec:
    """One measurement: a backend and preset on a device (None: the backend's default)."""

    backend: str
    preset: str
    device: str | None = None
    batch: int | None = None  # None: ACCELERATOR_BATCH, or CPU_BATCH on the CPU
    overrides: list[str] = field(default_factory=list)
    steps: int = 20  # at most this many timed steps ...
    seconds: float = 60.0  # ... stopping once they took this long (at least one); eval is skipped beyond it
    warmup: int | None = None  # None: 3 on an accelerator (compilation), 1 on the CPU
    compile: bool | None = None  # None: the backend's default (torch.compile on CUDA only, mx.compile always)
    evaluate: bool = True
    named: bool = True  # the preset was asked for by name (runs seq 900 on the CPU)
    seed: int = 0


def installed_backends() -> list[str]:
    """The backends whose framework is installed (core/contract.py), found without importing them."""
    return [name for name in BACKENDS if installed(name)]


def preset_data(name: str) -> tuple[int, int, int]:
    """(vocab_size, seq_len, num_puzzle_identifiers) of the synthetic data for preset `name`: the bench shape
    (puzzles/kinds.py) of the kind its family's registry entry gives it; HRMError naming the benchmarked presets when
    no family benchmarks it."""
    kinds = {preset: kind for family in FAMILIES.values() for preset, kind in family.bench_presets.items()}
    if name not in kinds:
        raise HRMError(f"no benchmark for preset {name!r}; choose among {', '.join(kinds)}")
    return kind_named(kinds[name], f"preset {name!r}'s benchmark").bench_shape


def bench_config(spec: Spec, on_cpu: bool) -> tuple[ModelConfig, TrainConfig, list[str]]:
    """The preset's configs with its data shape, the batch and `spec.overrides` -> (model, train, notes). On the
    CPU the forward dtype defaults to float32: most CPUs have no bfloat16 matmul and emulate it, an order of
    magnitude slower."""
    vocab_size, seq_len, ids = preset_data(spec.preset)
    model, train = preset(spec.preset)
    model = model.replace(vocab_size=vocab_size, seq_len=seq_len, num_puzzle_identifiers=ids)
    notes = []
    if on_cpu and model.forward_dtype != "float32" and not any(o.startswith("forward_dtype=") for o in spec.overrides):
        model = model.replace(forward_dtype="float32")
        notes.append("float32 on the CPU (--set forward_dtype=bfloat16 to measure the preset's bfloat16)")
    model, train = apply_overrides(model, train, spec.overrides)
    batch = spec.batch or (CPU_BATCH.get(spec.preset, 4) if on_cpu else ACCELERATOR_BATCH)
    return model, train.replace(global_batch_size=batch), notes


def synthetic_batch(rng: np.random.Generator, config: ModelConfig, batch: int) -> dict[str, np.ndarray]:
    """Random inputs, labels [batch, seq_len] int32 (every token supervised) and puzzle_identifiers [batch] int32."""
    shape = (batch, config.seq_len)
    return {"inputs": rng.integers(1, config.vocab_size, shape).astype(np.int32),
            "labels": rng.integers(1, config.vocab_size, shape).astype(np.int32),
            "puzzle_identifiers": rng.integers(0, config.num_puzzle_identifiers, batch).astype(np.int32)}


def _max_rss() -> int:
    """The process's peak resident set in bytes: on Linux VmHWM of /proc/self/status, this process's own (its
    ru_maxrss starts at the resident set of the parent it was spawned from, which exec carries over); elsewhere
    ru_maxrss (bytes on macOS). VmHWM may read a few pages below an earlier reading: the kernel updates it lazily."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    if found is None:
        raise HRMError("/proc/self/status has no VmHWM line; the peak resident set cannot be read here")
    return int(found.group(1)) * 1024


def measure(spec: Spec) -> dict:
    """Run one measurement in this process -> a record: the set-up (backend, device, preset, batch, seq_len,
    forward_dtype, compile, H_cycles, L_cycles), the training figures (median step_seconds over timed_steps after
    warmup_steps, steps_per_s, tokens_per_s = batch * seq_len * steps_per_s, flops_per_step, mfu against peak_flops,
    null on the CPU or an unknown GPU), peak_memory_bytes with its peak_memory_method and state_memory_bytes (held
    between steps; null without an allocator counter), eval_examples_per_s and eval_mfu, skipped (a reason or
    null) and notes. Or {"out_of_memory", "batch", "record"} when the device ran out of memory.

    Call it in a fresh process (run_isolated): without an allocator counter the peak memory is the process's."""
    from hrm_shared.app.backend import import_backend

    package = import_backend(spec.backend)
    hook = package.bench
    rss_baseline = _max_rss()
    device = hook.resolve_device(spec.device)
    on_cpu = device == "cpu"
    config, train, notes = bench_config(spec, on_cpu)
    B = train.global_batch_size
    record = {"backend": spec.backend, "framework_version": metadata.version(spec.backend), "device": device,
              "device_name": hook.device_name(device), "preset": spec.preset, "batch": B,
              "seq_len": config.seq_len, "forward_dtype": config.forward_dtype, "compile": spec.compile,
              "H_cycles": config.H_cycles, "L_cycles": config.L_cycles, "warmup_steps": 0, "timed_steps": 0,
              "step_seconds": None, "steps_per_s": None, "tokens_per_s": None,
              "flops_per_step": train_step_flops(config, B), "peak_flops": None, "mfu": None,
              "peak_memory_bytes": None, "state_memory_bytes": None, "peak_memory_method": None,
              "eval_examples_per_s": None, "eval_mfu": None, "skipped": None, "notes": notes}
    if on_cpu and config.seq_len >= CPU_SKIP_SEQ_LEN and not spec.named:
        record["skipped"] = (f"seq_len {config.seq_len} on the CPU takes minutes a step; "
                             f"ask for it with --preset {spec.preset}")
        return record
    try:
        _train_and_eval(package, spec, device, config, train, record, rss_baseline)
    except Exception as e:
        if not hook.is_out_of_memory(e):
            raise
        return {"out_of_memory": (str(e).splitlines() or [type(e).__name__])[0], "batch": B, "record": record}
    return record


def _train_and_eval(package, spec: Spec, device: str, config: ModelConfig, train: TrainConfig, record: dict,
                    rss_baseline: int) -> None:
    """Build, warm up, time the steps, read the memory and time predict, filling `record` in place."""
    hook, B = package.bench, train.global_batch_size
    rng = np.random.default_rng(spec.seed)
    batches = [synthetic_batch(rng, config, B) for _ in range(2)]
    model = package.train.new_model(config, spec.seed, spec.device)
    trainer = package.train.Trainer(model, train, spec.compile)

    def step(i: int) -> float:
        draws = draw_exploration(rng, B, config.halt_max_steps, config.halt_exploration_prob)
        hook.synchronize(device)
        start = time.perf_counter()
        trainer.step(batches[i % 2], draws, train.lr, train.puzzle_emb_lr)
        hook.synchronize(device)
        return time.perf_counter() - start

    on_cpu = device == "cpu"
    warmup = spec.warmup if spec.warmup is not None else (1 if on_cpu else 3)
    for i in range(warmup):
        step(i)
    held = hook.memory(device)
    hook.reset_peak_memory(device)
    times: list[float] = []
    while len(times) < spec.steps and (not times or sum(times) < spec.seconds):
        times.append(step(warmup + len(times)))
    counted = hook.memory(device)
    seconds = statistics.median(times)
    peak = peak_flops(record["device_name"]) if not on_cpu and config.forward_dtype == "bfloat16" else None
    record.update(warmup_steps=warmup, timed_steps=len(times), step_seconds=seconds, steps_per_s=1 / seconds,
                  tokens_per_s=B * config.seq_len / seconds, peak_flops=peak,
                  mfu=None if peak is None else record["flops_per_step"] / seconds / peak,
                  peak_memory_bytes=counted[1] if counted else max(0, _max_rss() - rss_baseline),
                  state_memory_bytes=held[0] if held else None,
                  peak_memory_method=counted[2] if counted else RSS_METHOD)
    if spec.evaluate:
        _eval_throughput(package, model, spec, device, config, batches[0], record)


def _eval_throughput(package, model, spec: Spec, device: str, config: ModelConfig, batch: dict[str, np.ndarray],
                     record: dict) -> None:
    """Set record's eval_examples_per_s (and eval_mfu) from predict over halt_max_steps segments on `batch`, the median
    of up to EVAL_REPEATS timed calls after one warm-up; skip it with a note when the FLOPs and the step time say it
    would take longer than spec.seconds."""
    B = len(batch["inputs"])
    flops = eval_flops(config, B)
    estimate = flops / record["flops_per_step"] * record["step_seconds"]
    if estimate > spec.seconds:
        record["notes"].append(f"eval skipped: about {estimate:.0f} s for {config.halt_max_steps} segments, over "
                               f"the {spec.seconds:g} s budget (--seconds)")
        return
    package.evaluate.predict_numpy(model, batch, spec.device)  # warm-up: compilation (MLX compiles evaluation)
    times: list[float] = []
    while len(times) < EVAL_REPEATS and sum(times) < spec.seconds:
        start = time.perf_counter()
        package.evaluate.predict_numpy(model, batch, spec.device)  # returns numpy: the work has finished
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = record["peak_flops"]
    record.update(eval_examples_per_s=B / seconds, eval_mfu=None if peak is None else flops / seconds / peak)


def run_isolated(spec: Spec) -> dict:
    """measure(spec) in a fresh Python process -> its record, or {"out_of_memory": message, "batch": N}.
    HRMError when the worker reports bad input or fails (its traceback is on stderr)."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "record.json"
        command = [sys.executable, "-m", "hrm_shared.app.bench", json.dumps(dataclasses.asdict(spec)), str(out)]
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL)
        if done.returncode != 0 or not out.exists():
            raise HRMError(f"the benchmark of {spec.backend} on {spec.preset} failed (exit status {done.returncode}; "
                           f"its error is printed above)")
        result = json.loads(out.read_text())
    if "error" in result:
        raise HRMError(result["error"])
    return result


def run_record(spec: Spec, log: Callable[[str], None]) -> dict:
    """run_isolated(spec), halving the batch while the device runs out of memory."""
    notes: list[str] = []
    while True:
        log(f"{spec.backend} {spec.preset} on {spec.device or 'the default device'}"
            + (f" batch {spec.batch}" if spec.batch else "")
            + (f" {' '.join(spec.overrides)}" if spec.overrides else ""))
        result = run_isolated(spec)
        if "out_of_memory" not in result:
            result["notes"] = notes + result["notes"]
            return result
        notes.append(f"batch {result['batch']} ran out of memory ({result['out_of_memory']})")
        if result["batch"] == 1:
            return {**result.pop("record"), "skipped": "out of memory at batch 1", "notes": notes}
        spec = dataclasses.replace(spec, batch=result["batch"] // 2)


def cycles_memory(spec: Spec, cycles: tuple[tuple[int, int], ...], log: Callable[[str], None]) -> dict:
    """Peak memory of one warm training step per (H_cycles, L_cycles): with the one-step gradient only the last
    L and H updates keep activations, so it should stay flat. Ratios are of the last point to the first."""
    points = []
    for H_cycles, L_cycles in cycles:
        overrides = [*spec.overrides, f"H_cycles={H_cycles}", f"L_cycles={L_cycles}"]
        r = run_record(dataclasses.replace(spec, overrides=overrides, steps=1, evaluate=False), log)
        points.append({"H_cycles": H_cycles, "L_cycles": L_cycles, "peak_memory_bytes": r["peak_memory_bytes"],
                       "state_memory_bytes": r["state_memory_bytes"], "step_seconds": r["step_seconds"],
                       "skipped": r["skipped"]})
    section = {k: r[k] for k in ("backend", "device", "device_name", "preset", "batch", "forward_dtype",
                                 "peak_memory_method")}
    section.update(points=points, peak_ratio=None, activation_ratio=None)
    first, last = points[0], points[-1]
    if first["peak_memory_bytes"] and last["peak_memory_bytes"]:
        section["peak_ratio"] = last["peak_memory_bytes"] / first["peak_memory_bytes"]
        if first["state_memory_bytes"] is not None and last["state_memory_bytes"] is not None:
            activations = [p["peak_memory_bytes"] - p["state_memory_bytes"] for p in (first, last)]
            if activations[0] > 0:
                section["activation_ratio"] = activations[1] / activations[0]
    return section


def run_benchmark(specs: list[Spec], cycles: tuple[tuple[int, int], ...], cycles_preset: str | None,
                  log: Callable[[str], None]) -> dict:
    """Every spec's record, then per backend the cycles sweep on `cycles_preset` (at the batch its record ran
    at) -> {"machine", "records", "cycles_memory"}."""
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "python": platform.python_version(),
               "load_average_at_start": list(os.getloadavg())}
    records = [run_record(spec, log) for spec in specs]
    sweeps = []
    for spec, record in zip(specs, records):
        if cycles and spec.preset == cycles_preset and record["skipped"] is None:
            sweeps.append(cycles_memory(dataclasses.replace(spec, batch=record["batch"]), cycles, log))
    machine["load_average_at_end"] = list(os.getloadavg())
    return {"machine": machine, "records": records, "cycles_memory": sweeps}


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2 ** 20:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Right-aligned columns under `header`."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in (header, *rows)]


def format_tables(result: dict) -> str:
    """run_benchmark's result as text: the records (notes and skips below them) and the cycles sweeps."""
    rows, notes = [], []
    for i, r in enumerate(result["records"], 1):
        rows.append([str(i), r["backend"], r["device"], r["preset"], str(r["batch"]), r["forward_dtype"],
                     _number(r["steps_per_s"], ".3g"), _number(r["tokens_per_s"], ",.0f"),
                     _mib(r["peak_memory_bytes"]), _number(r["mfu"], ".1%"), _number(r["eval_examples_per_s"], ".3g")])
        notes += [f"  [{i}] {n}" for n in ([r["skipped"]] if r["skipped"] else []) + r["notes"]]
    lines = _table(["#", "backend", "device", "preset", "batch", "dtype", "steps/s", "tokens/s", "peak MiB", "MFU",
                    "eval ex/s"], rows) + notes
    for sweep in result["cycles_memory"]:
        points = sweep["points"]
        lines += ["", f"Peak memory (MiB) by H_cycles x L_cycles: {sweep['backend']} {sweep['device']} "
                      f"{sweep['preset']} batch {sweep['batch']}"]
        lines += _table([f"{p['H_cycles']}x{p['L_cycles']}" for p in points] + ["peak ratio", "activation ratio"],
                        [[_mib(p["peak_memory_bytes"]) for p in points]
                         + [_number(sweep["peak_ratio"], ".2f"), _number(sweep["activation_ratio"], ".2f")]])
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    """Write run_benchmark's result to `path` (its folder made if missing)."""
    write_file(Path(path), json.dumps(result, indent=2) + "\n")


def _worker(argv: list[str]) -> None:
    """`python -m hrm_shared.app.bench SPEC_JSON OUT`: measure and write the record (or the error) to OUT."""
    spec, out = Spec(**json.loads(argv[0])), Path(argv[1])
    try:
        result = measure(spec)
    except HRMError as e:
        result = {"error": str(e)}
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    _worker(sys.argv[1:])
