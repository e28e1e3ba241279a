"""The first hour on real hardware, in one command of at most 9 minutes (scripts/gpu_check.sh: torch on an NVIDIA GPU;
scripts/mac_check.sh: MLX on Apple silicon's GPU). In order:

1. the device tests (`pytest -m cuda`, `pytest -m metal`);
2. `hrm bench` on the sudoku and arc presets, bfloat16 and compiled, each at the largest batch up to 768 that the
   memory model (shared/app/memory.py) says fits;
3. a 5-minute training run (`hrm train --max-minutes 5`, fewer minutes if the stages before took long) on a
   Sudoku-Extreme-equivalent 1k build (`hrm data sudoku-extreme`, 1000 + 200 puzzles, 100 augmentations; built once
   into data/device-check/), with the test accuracy evaluated about six times: its curve.
4. on an NVIDIA GPU, MLX there too (its CUDA build shares Metal's rules: no float64 on the GPU, compiled graphs,
   `mx.fast` kernels): the MLX tests marked for the GPU (`pytest -m metal`), `hrm bench --backend mlx --device gpu`
   on the sudoku preset and a compiled 2-minute training run (the torch run then takes 3). MLX comes from
   $HRM_MLX_PYTHON, the set-up's virtualenv when its MLX has a GPU, or a separate virtualenv, .venv-mlx-cuda,
   made here with `mlx[cuda12]` or `mlx[cuda13]` (as torch's CUDA) beside this checkout: that build's CUDA
   libraries can conflict with torch's. Where none can be had (no network, say), the stage says why.

It writes scripts/results/<device>.json and prints one table: steps/s, MFU, peak memory (measured by the benchmark and
predicted by the memory model) and accuracy, a row per backend and stage. `--cpu-smoke` runs the same stages on the
CPU at toy sizes (the tiny presets, eager torch, a 30-puzzle build, 6 seconds of training; MLX's stage with this
Python's MLX on the CPU), to check the script without the hardware.

    python scripts/device_check.py {cuda,metal} [--cpu-smoke] [--out FILE] [--work DIR]
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrm_shared.app.bench import Spec, bench_config  # noqa: E402  (after the path set-up, so a checkout runs it)
from hrm_shared.app.flops import peak_flops, train_step_flops  # noqa: E402
from hrm_shared.app.memory import Runtime, max_batch, predict_peak  # noqa: E402
from hrm_shared.app.run import read_run_config  # noqa: E402
from hrm_shared.core.config import ModelConfig, TrainConfig, apply_overrides, preset  # noqa: E402

TOTAL_SECONDS = 9 * 60
TRAIN_MINUTES = 5.0
MLX_TRAIN_MINUTES = 2.0  # of TRAIN_MINUTES, when MLX also trains on the NVIDIA GPU
MLX_VENV = ROOT / ".venv-mlx-cuda"
FINISH_SECONDS = 30  # after the training budget: the last evaluation, the checkpoint, this script's table
MAX_BATCH = 768


@dataclass
class Plan:
    """What a check runs: the backend and device, the pytest marker, the bench presets and options, the data build
    and the training run."""

    backend: str
    device: str
    marker: str
    bench_presets: tuple[str, ...] = ("sudoku", "arc")
    bench_options: list[str] = field(default_factory=lambda: ["--compile", "--steps", "5", "--seconds", "10",
                                                               "--warmup", "2", "--no-eval", "--cycles", "none"])
    bench_batch: int | None = None  # None: the largest up to MAX_BATCH that the memory model fits
    puzzles: tuple[int, int, int] = (1000, 200, 100)  # train and test puzzles, augmentations
    train_presets: tuple[str, ...] = ("sudoku", "sudoku-laptop")  # the first that fits
    train_overrides: list[str] = field(default_factory=list)
    train_minutes: float = TRAIN_MINUTES
    evaluations: int = 6  # about this many points on the accuracy curve, from the bench's steps/s ...
    eval_interval: int | None = None  # ... unless this many steps is given
    train_options: list[str] = field(default_factory=list)
    python: str = sys.executable  # the interpreter that runs the stages


def plan(kind: str, cpu_smoke: bool) -> Plan:
    """The stages for `kind` ("cuda": torch, "metal": MLX) on its GPU, or their toy version on the CPU."""
    backend, device, marker = {"cuda": ("torch", "cuda", "cuda"), "metal": ("mlx", "gpu", "metal")}[kind]
    if not cpu_smoke:
        return Plan(backend, device, marker)
    toy = ["hidden_size=32", "puzzle_emb_ndim=32", "global_batch_size=8", "halt_max_steps=3"]
    return Plan(backend, "cpu", marker, bench_presets=("tiny", "trm-tiny"),
                bench_options=["--no-compile" if backend == "torch" else "--compile", "--steps", "2", "--warmup", "1",
                               "--no-eval", "--cycles", "none", "--set", "seq_len=16"],
                bench_batch=4, puzzles=(30, 10, 2), train_presets=("tiny",), train_overrides=toy, train_minutes=0.1,
                eval_interval=5)


def mlx_plan(cpu_smoke: bool, python: str) -> Plan:
    """MLX's stage beside torch's on an NVIDIA GPU (run by `python`), or its toy version on the CPU."""
    if cpu_smoke:
        toy = plan("metal", True)
        return Plan("mlx", "cpu", "metal", bench_presets=toy.bench_presets[:1], bench_options=toy.bench_options,
                    bench_batch=toy.bench_batch, puzzles=toy.puzzles, train_presets=toy.train_presets,
                    train_overrides=toy.train_overrides, train_minutes=toy.train_minutes,
                    eval_interval=toy.eval_interval, train_options=["--compile"], python=python)
    return Plan("mlx", "gpu", "metal", bench_presets=("sudoku",), train_minutes=MLX_TRAIN_MINUTES,
                train_options=["--compile"], python=python)


class Clock:
    """Seconds left of the check's TOTAL_SECONDS."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def left(self) -> float:
        return TOTAL_SECONDS - (time.monotonic() - self.start)


def command(*args: str, timeout: float, python: str = sys.executable) -> tuple[int, str]:
    """Run `args` (the first one "hrm" runs this checkout's CLI with `python`) -> (exit status, its output); status
    124 with the output so far when it passes `timeout` seconds."""
    argv = [python, "-c", "from hrm_shared.app.cli import main; main()", *args[1:]] if args[0] == "hrm" \
        else list(args)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(timeout, 1))
    except subprocess.TimeoutExpired as e:
        parts = (x.decode(errors="replace") if isinstance(x, bytes) else x or "" for x in (e.stdout, e.stderr))
        return 124, "".join(parts) + f"\n(stopped after {timeout:.0f} s)"
    return done.returncode, done.stdout + done.stderr


def _tail(output: str, lines: int = 5) -> str:
    return "\n".join(output.strip().splitlines()[-lines:])


def device_tests(p: Plan, clock: Clock) -> dict:
    """`pytest -m <marker>` over tests/ -> {"status", "summary"}: passed, failed, skipped or no tests."""
    status, output = command(p.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", p.marker,
                             "tests", timeout=min(150, clock.left() / 3))
    summary = _tail(output, 1)
    if status == 5:  # pytest: no test was collected
        return {"status": "no tests", "summary": summary}
    return {"status": "passed" if status == 0 else "failed", "summary": summary if status in (0, 1) else
            _tail(output)}


def usable(p: Plan) -> int | None:
    """The device's usable memory in bytes, read in a child process (the parent keeps no GPU context open)."""
    code = ("import json; from hrm_shared.app.backend import import_backend; from hrm_shared.app.memory import "
            f"usable_memory; u = usable_memory(import_backend({p.backend!r}), {p.device!r}); "
            "print(json.dumps(u and u[0]))")
    status, output = command(p.python, "-c", code, timeout=120)
    return json.loads(output.strip().splitlines()[-1]) if status == 0 else None


def bench_batch(p: Plan, preset_name: str, memory: int | None) -> int:
    """The plan's batch, or the largest up to MAX_BATCH that the memory model fits in `memory` bytes (MAX_BATCH when
    the memory is unknown)."""
    if p.bench_batch is not None:
        return p.bench_batch
    if memory is None:
        return MAX_BATCH
    model, train, _ = bench_config(Spec(p.backend, preset_name, p.device), on_cpu=False)
    return min(MAX_BATCH, max_batch(model, train, Runtime(p.backend, p.device), memory))


def predicted_peak(p: Plan, spec: Spec, allocator: bool) -> int:
    """The memory model's peak of a bench measurement in bytes, without the process's overhead when the bench read
    an `allocator` counter (which sees tensors only)."""
    model, train, _ = bench_config(spec, on_cpu=p.device == "cpu")
    estimate = predict_peak(model, train, Runtime(p.backend, p.device))
    return estimate.peak - (estimate.overhead if allocator else 0)


def bench(p: Plan, work: Path, memory: int | None, clock: Clock) -> list[dict]:
    """One `hrm bench` per preset -> its records, each with the memory model's predicted_peak_bytes (or an error)."""
    records = []
    for preset_name in p.bench_presets:
        batch = bench_batch(p, preset_name, memory)
        overrides = [p.bench_options[i + 1] for i, o in enumerate(p.bench_options) if o == "--set"]
        out = work / f"bench-{preset_name}.json"
        status, output = command("hrm", "bench", "--backend", p.backend, "--device", p.device, "--preset", preset_name,
                                 "--batch", str(batch), *p.bench_options, "--json", str(out), "--force",
                                 timeout=min(120, clock.left() / 3), python=p.python)
        if status != 0:
            records.append({"preset": preset_name, "batch": batch, "error": _tail(output)})
            continue
        [record] = json.loads(out.read_text())["records"]
        spec = Spec(p.backend, preset_name, p.device, record["batch"], overrides)
        allocator = record["state_memory_bytes"] is not None
        records.append({**record, "predicted_peak_bytes": predicted_peak(p, spec, allocator)})
    return records


def build_data(p: Plan, work: Path, clock: Clock) -> tuple[Path | None, str | None]:
    """The Sudoku-Extreme-equivalent build (made once, reused) -> (its directory, None), or (None, the error)."""
    train, test, augmentations = p.puzzles
    dataset = work / f"sudoku-extreme-{train}-aug-{augmentations}"
    if (dataset / "test" / "dataset.json").is_file():
        return dataset, None
    csv = work / f"sudoku-extreme-{train}-csv"
    for args in (("hrm", "data", "sudoku-extreme", "--out", str(csv), "--train", str(train), "--test", str(test),
                  "--force"),
                 ("hrm", "data", "sudoku", "--csv-dir", str(csv), "--out", str(dataset), "--num-aug",
                  str(augmentations), "--force")):
        status, output = command(*args, timeout=min(180, clock.left() / 3))
        if status != 0:
            return None, _tail(output)
    return dataset, None


def sudoku_config(name: str, overrides: list[str]) -> tuple[ModelConfig, TrainConfig]:
    """Preset `name` with `overrides` on the Sudoku build's shapes (vocabulary 11, 81 cells, one puzzle id)."""
    model, train = apply_overrides(*preset(name), overrides)
    return model.replace(vocab_size=11, seq_len=81, num_puzzle_identifiers=1), train


def training(p: Plan, dataset: Path, run_dir: Path, memory: int | None, steps_per_s: float | None, device_name: str,
             clock: Clock, reserve: float = 0.0) -> dict:
    """A --max-minutes run of the first train preset that fits in `memory` (evaluated about p.evaluations times at
    `steps_per_s`), leaving `reserve` seconds of the clock to later stages -> preset, minutes, eval_interval, batch,
    steps_per_s, mfu, predicted_peak_bytes, the curve [{step, accuracy, exact_accuracy}] and the last accuracies; or
    an error."""
    minutes = max(0.05, min(p.train_minutes, (clock.left() - FINISH_SECONDS - reserve) / 60))
    runtime = Runtime(p.backend, p.device)
    fits = [name for name in p.train_presets
            if memory is None or predict_peak(*sudoku_config(name, p.train_overrides), runtime).peak <= memory]
    name = fits[0] if fits else p.train_presets[-1]  # the smallest when none fits
    every = p.eval_interval or (max(1, round(steps_per_s * 60 * minutes / p.evaluations)) if steps_per_s else 100)
    overrides = [arg for o in p.train_overrides for arg in ("--set", o)]
    status, output = command("hrm", "train", "--backend", p.backend, "--device", p.device, "--data", str(dataset),
                             "--preset", name, *overrides, *p.train_options, "--out", str(run_dir), "--max-minutes",
                             f"{minutes:.3f}", "--eval-interval", str(every), timeout=60 * minutes + 120,
                             python=p.python)
    result = {"preset": name, "minutes": round(minutes, 3), "eval_interval": every}
    if status != 0:
        return {**result, "error": _tail(output)}
    config, _ = read_run_config(run_dir)
    speed = re.search(r"speed\s+([\d.]+) steps/s", output)
    steps_per_s = float(speed.group(1)) if speed else None
    peak = peak_flops(device_name) if p.device != "cpu" and config.model.forward_dtype == "bfloat16" else None
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [{k: r[k] for k in ("step", "accuracy", "exact_accuracy")} for r in records if r["split"] == "test"]
    batch = config.train.global_batch_size
    result.update(batch=batch, steps_per_s=steps_per_s,
                  mfu=train_step_flops(config.model, batch) * steps_per_s / peak if peak and steps_per_s else None,
                  predicted_peak_bytes=predict_peak(config.model, config.train, runtime).peak, curve=curve,
                  accuracy=curve[-1]["accuracy"] if curve else None,
                  exact_accuracy=curve[-1]["exact_accuracy"] if curve else None)
    return result


def _mlx_gpu(python: str, cpu_smoke: bool) -> str | None:
    """None when `python` has MLX with a GPU (with `cpu_smoke`: MLX at all), else why not."""
    code = "import mlx.core as mx; print(mx.is_available(mx.gpu))"
    status, output = command(python, "-c", code, timeout=60)
    if status != 0:
        return f"{python} has no MLX ({_tail(output, 1)})"
    return None if cpu_smoke or output.strip().endswith("True") else f"{python}'s MLX has no GPU"


def _cuda_major() -> str | None:
    """The CUDA major version of this Python's torch ("12", "13"), or None."""
    status, output = command(sys.executable, "-c", "import torch; print(torch.version.cuda or '')", timeout=60)
    version = output.strip().splitlines()[-1] if status == 0 and output.strip() else ""
    return version.split(".")[0] or None


def mlx_python(cpu_smoke: bool, clock: Clock) -> tuple[str | None, str]:
    """(a Python whose MLX runs on the GPU, how it was found), or (None, why there is none): $HRM_MLX_PYTHON, this
    Python, or MLX_VENV (made and filled with MLX's CUDA build for torch's CUDA version when it lacks one). With
    `cpu_smoke` this Python's MLX on the CPU, nothing installed."""
    candidates = [os.environ.get("HRM_MLX_PYTHON"), sys.executable, str(MLX_VENV / "bin" / "python")]
    reasons = []
    for python in filter(None, dict.fromkeys(candidates)):
        if Path(python).exists() or python == sys.executable:
            if (reason := _mlx_gpu(python, cpu_smoke)) is None:
                return python, "found"
            reasons.append(reason)
    if cpu_smoke:
        return None, "; ".join(reasons)
    major = _cuda_major()
    if major is None:
        return None, "; ".join([*reasons, "torch names no CUDA version to choose mlx[cuda12] or mlx[cuda13] by"])
    venv = MLX_VENV / "bin" / "python"
    for args in ((sys.executable, "-m", "venv", str(MLX_VENV)),
                 (str(venv), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", str(ROOT),
                  "pytest", f"mlx[cuda{major}]")):
        status, output = command(*args, timeout=min(300, clock.left() / 3))
        if status != 0:
            return None, f"could not install mlx[cuda{major}] into {MLX_VENV}: {_tail(output, 2)}"
    reason = _mlx_gpu(str(venv), cpu_smoke)
    return (str(venv), f"installed mlx[cuda{major}]") if reason is None else (None, reason)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def _number(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _rows(stages: dict, prefix: str) -> list[list[str]]:
    """The table's rows of one backend's `stages` (bench records and training run), their stage names after
    `prefix`."""
    rows = []
    for r in stages["bench"]:
        rows.append([f"{prefix}bench", r["preset"], str(r["batch"]), _number(r.get("steps_per_s"), ".3g"),
                     _number(r.get("mfu"), ".1%"), _gib(r.get("peak_memory_bytes")),
                     _gib(r.get("predicted_peak_bytes")), "error" if "error" in r else "-"])
    t = stages["training"]
    accuracy = "error" if "error" in t else f"{_number(t.get('accuracy'), '.4f')} (exact " \
                                            f"{_number(t.get('exact_accuracy'), '.4f')})"
    rows.append([f"{prefix}train {t.get('minutes', 0):.2g} min", t.get("preset", "-"), str(t.get("batch", "-")),
                 _number(t.get("steps_per_s"), ".3g"), _number(t.get("mfu"), ".1%"), "-",
                 _gib(t.get("predicted_peak_bytes")), accuracy])
    return rows


def table(result: dict) -> str:
    """The check's one table: a row per bench record and one for the training run, then MLX's beside them on an
    NVIDIA GPU."""
    rows = [["stage", "preset", "batch", "steps/s", "MFU", "peak GiB", "predicted GiB", "accuracy"],
            *_rows(result, "")]
    mlx = result.get("mlx")
    if mlx is not None and "skipped" not in mlx:
        rows += _rows(mlx, "mlx ")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    tests = result["device_tests"]
    head = [f"{result['device_name']} ({result['backend']} on {result['device']}): device tests "
            f"{tests['status']}: {tests['summary']}"]
    if mlx is not None:
        head.append(f"MLX: skipped ({mlx['skipped']})" if "skipped" in mlx else
                    f"MLX ({mlx['python']}, on {mlx['device']}): device tests {mlx['device_tests']['status']}: "
                    f"{mlx['device_tests']['summary']}")
    return "\n".join([*head, *lines])


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def device_stages(p: Plan, work: Path, clock: Clock) -> dict:
    """The device's usable memory, the bench records and the device's name (the first measured record's)."""
    work.mkdir(parents=True, exist_ok=True)
    memory = usable(p)
    records = bench(p, work, memory, clock)
    measured = [r for r in records if "error" not in r]
    return {"usable_memory_bytes": memory, "bench": records,
            "device_name": measured[0]["device_name"] if measured else p.device}


def train_stage(p: Plan, stages: dict, dataset: Path | None, error: str | None, run_dir: Path, clock: Clock,
                reserve: float = 0.0) -> dict:
    """training() on the data build, at the pace of the first bench preset's record in `stages` (device_stages),
    in a fresh `run_dir`; the build's error when it failed."""
    if dataset is None:
        return {"error": f"the data build failed: {error}"}
    shutil.rmtree(run_dir, ignore_errors=True)  # the previous check's run
    first = next((r for r in stages["bench"] if "error" not in r and r["preset"] == p.bench_presets[0]), None)
    return training(p, dataset, run_dir, stages["usable_memory_bytes"], first["steps_per_s"] if first else None,
                    stages["device_name"], clock, reserve)


def check(kind: str, cpu_smoke: bool, out: Path | None, work: Path) -> tuple[dict, Path]:
    """Run every stage -> (the result written to `out`, default scripts/results/<device>.json; that path)."""
    clock, p = Clock(), plan(kind, cpu_smoke)
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def timed(stage: str, run, *args):
        """run(*args), its seconds kept under `stage` and its start and end printed (stderr)."""
        print(f"{stage}: started", file=sys.stderr, flush=True)
        began = time.monotonic()
        value = run(*args)
        seconds[stage] = round(time.monotonic() - began, 1)
        print(f"{stage}: done in {seconds[stage]:.0f} s", file=sys.stderr, flush=True)
        return value

    # The data build and MLX's set-up run on the CPU's cores (and the network) while the device tests and the bench
    # keep the device busy.
    with ThreadPoolExecutor(2) as pool:
        data = pool.submit(timed, "data", build_data, p, work, clock)
        found = pool.submit(timed, "mlx_setup", mlx_python, cpu_smoke, clock) if kind == "cuda" else None
        result = {"kind": kind, "cpu_smoke": cpu_smoke, "backend": p.backend, "device": p.device,
                  "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                              "cpu_count": os.cpu_count(), "python": platform.python_version()},
                  "device_tests": timed("device_tests", device_tests, p, clock)}
        result.update(timed("bench", device_stages, p, work, clock))
        dataset, error = data.result()
        python, note = found.result() if found is not None else (None, "")
    mlx = None
    if found is not None and python is None:
        result["mlx"] = {"skipped": note}
    elif python is not None:
        mlx = mlx_plan(cpu_smoke, python)
        if not cpu_smoke:
            p.train_minutes = TRAIN_MINUTES - MLX_TRAIN_MINUTES
        result["mlx"] = {"python": python, "found": note, "backend": mlx.backend, "device": mlx.device,
                         "device_tests": timed("mlx_device_tests", device_tests, mlx, clock),
                         **timed("mlx_bench", device_stages, mlx, work / "mlx", clock)}
    reserve = 60 * mlx.train_minutes + 30 if mlx is not None else 0.0
    result["training"] = timed("training", train_stage, p, result, dataset, error, work / "run", clock, reserve)
    if mlx is not None:
        result["mlx"]["training"] = timed("mlx_training", train_stage, mlx, result["mlx"], dataset, error,
                                          work / "run-mlx", clock)
    result["stage_seconds"] = seconds
    result["seconds"] = round(TOTAL_SECONDS - clock.left(), 1)
    out = out or ROOT / "scripts" / "results" / f"{_slug(result['device_name'])}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result, out


def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 1 when a stage failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["cuda", "metal"])
    parser.add_argument("--cpu-smoke", action="store_true", help="the same stages on the CPU at toy sizes")
    parser.add_argument("--out", type=Path, default=None, help="results file [default: scripts/results/<device>.json]")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "device-check",
                        help="folder for the data build (kept), the bench records and the training run")
    args = parser.parse_args(argv)
    result, out = check(args.kind, args.cpu_smoke, args.out, args.work)
    print(table(result))
    print(f"Wrote {out} ({result['seconds']:.0f} s)")
    stages = [result, *([result["mlx"]] if "device_tests" in result.get("mlx", {}) else [])]
    failed = any(s["device_tests"]["status"] == "failed" or "error" in s["training"]
                 or any("error" in r for r in s["bench"]) for s in stages)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
