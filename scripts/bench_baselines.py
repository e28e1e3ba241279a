"""The paper's baselines on the CPU, side by side in one run (issue: the paper's analyses as commands, item 4).

1. Memory: the peak of one training step of the `tiny` preset as H_cycles x L_cycles grows, with the one-step
   gradient and with BPTT (grad=bptt), in fresh processes (shared/app/bench.py cycles_memory).
2. Accuracy after the same training budget on the same small Sudoku build (`hrm data sudoku-small`): HRM with the
   one-step gradient (`demo`), the same HRM with BPTT (`demo --set grad=bptt`), and the direct-prediction
   Transformer of the same size (`demo-direct`: the same parameters in one pass, one segment). Each `hrm train` runs
   in its own process for the same number of steps (or minutes), its cosine schedule fitted to that budget, and is
   evaluated on the held-out puzzles at the end.

Prints the tables and writes scripts/results/baselines_cpu.json:

    .venv/bin/python scripts/bench_baselines.py [--steps 1000] [--size 4] [--memory-backend torch --memory-backend mlx]
"""

import argparse
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrm_shared.app.bench import Spec, cycles_memory, write_json  # noqa: E402  (after the path set-up)
from hrm_shared.app.run import METRICS_FILE, read_metrics  # noqa: E402
from hrm_shared.core.checkpoint import read_checkpoint_config  # noqa: E402
from hrm_shared.core.init import count_parameters  # noqa: E402

MODELS = (("HRM, one-step gradient", "demo", []), ("HRM, BPTT", "demo", ["grad=bptt"]),
          ("Transformer, direct prediction", "demo-direct", []))
CYCLES = ((1, 2), (2, 2), (2, 4), (4, 4), (4, 8))
BATCH = 64  # the demo preset's global batch
HRM_COMMAND = [sys.executable, "-c", "from hrm_shared.app.cli import main; main()"]


def hrm(args: list[str]) -> tuple[float, int]:
    """Run `hrm ARGS` in a fresh process -> (wall seconds, its peak resident memory in bytes). Exits on failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    start = time.perf_counter()
    process = subprocess.Popen([*HRM_COMMAND, *args], env=env)
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, not every child's so far
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"hrm {' '.join(args)} failed")
    return time.perf_counter() - start, usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def memory_sweeps(backends: list[str], log) -> list[dict]:
    """cycles_memory of `tiny` (batch 16, float32, CPU) per backend and gradient mode."""
    sweeps = []
    for backend in backends:
        for grad in ("one_step", "bptt"):
            spec = Spec(backend, "tiny", device="cpu", batch=16, overrides=[f"grad={grad}"], seconds=30)
            sweeps.append({"grad": grad, **cycles_memory(spec, CYCLES, log)})
    return sweeps


def train_models(out: Path, size: int, train: int, test: int, steps: int | None, minutes: float | None,
                 backend: str) -> list[dict]:
    """Build the data (once) and train, then evaluate, each of MODELS on it for the same budget."""
    data = out / f"sudoku-{size}x{size}"
    if not (data / "test" / "dataset.json").is_file():
        hrm(["data", "sudoku-small", "--size", str(size), "--train", str(train), "--test", str(test), "--out",
             str(data), "--seed", "0", "--force"])
    # Epochs covering the budget at one batch a step, so each cosine schedule ends where the run does.
    epochs = max(1, math.ceil((steps or 10 ** 6) * BATCH / train)) if minutes is None else 29
    results = []
    for name, preset_name, overrides in MODELS:
        run = out / f"{preset_name}{'-' + '-'.join(o.replace('=', '-') for o in overrides) if overrides else ''}"
        budget = ["--max-steps", str(steps)] if minutes is None else ["--max-minutes", str(minutes)]
        sets = [a for o in [*overrides, f"epochs={epochs}", f"eval_interval={epochs}"] for a in ("--set", o)]
        seconds, peak = hrm(["train", "--backend", backend, "--device", "cpu", "--data", str(data), "--preset",
                             preset_name, *sets, "--out", str(run), *budget, "--eval-interval", "0", "--seed", "0"])
        records = read_metrics(run / METRICS_FILE)
        test_record = [r for r in records if r["split"] == "test"][-1]
        config = read_checkpoint_config(run / "last").model
        results.append({"model": name, "preset": preset_name, "overrides": overrides, "run": str(run),
                        "parameters": count_parameters(config), "H_cycles": config.H_cycles,
                        "L_cycles": config.L_cycles, "halt_max_steps": config.halt_max_steps,
                        "steps": test_record["step"], "seconds": seconds, "peak_rss_bytes": peak,
                        "test_exact_accuracy": test_record["exact_accuracy"],
                        "test_accuracy": test_record["accuracy"], "test_examples": test_record["count"]})
    return results


def tables(result: dict) -> str:
    """The memory sweeps and the training comparison as text."""
    lines = []
    for sweep in result["memory"]:
        points = sweep["points"]
        mib = ["-" if p["peak_memory_bytes"] is None else f"{p['peak_memory_bytes'] / 2 ** 20:,.0f}" for p in points]
        lines += [f"Peak MiB of a training step by H_cycles x L_cycles: {sweep['backend']} {sweep['preset']} batch "
                  f"{sweep['batch']}, grad={sweep['grad']} (ratio last/first "
                  f"{sweep['peak_ratio'] or float('nan'):.2f})",
                  "  " + "  ".join(f"{p['H_cycles']}x{p['L_cycles']}: {m}" for p, m in zip(points, mib))]
    header = ["model", "params", "cycles", "M", "steps", "seconds", "peak MiB", "test exact", "test token"]
    rows = [[r["model"], f"{r['parameters']:,}", f"{r['H_cycles']}x{r['L_cycles']}", str(r["halt_max_steps"]),
             f"{r['steps']:,}", f"{r['seconds']:.0f}", f"{r['peak_rss_bytes'] / 2 ** 20:,.0f}",
             f"{r['test_exact_accuracy']:.4f}", f"{r['test_accuracy']:.4f}"] for r in result["training"]]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines += ["", f"Same budget on {result['data']}:"]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
              for row in (header, *rows)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/baselines"), help="Data and runs go here.")
    parser.add_argument("--size", type=int, default=4, choices=(4, 6, 9), help="Sudoku size.")
    parser.add_argument("--train", type=int, default=10000, help="Training puzzles.")
    parser.add_argument("--test", type=int, default=500, help="Held-out puzzles.")
    parser.add_argument("--steps", type=int, default=1000, help="Training steps per model.")
    parser.add_argument("--minutes", type=float, default=None, help="Minutes per model instead of --steps.")
    parser.add_argument("--backend", default="torch", help="Backend that trains.")
    parser.add_argument("--memory-backend", action="append", default=None,
                        help="Backends of the memory sweep (repeatable)  [default: torch].")
    parser.add_argument("--json", type=Path, default=ROOT / "scripts" / "results" / "baselines_cpu.json")
    args = parser.parse_args()
    result = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "load_average_at_start": list(os.getloadavg())},
              "memory": memory_sweeps(args.memory_backend or ["torch"], lambda line: print(line, flush=True))}
    result["data"] = f"{args.size}x{args.size} Sudoku, {args.train:,} train / {args.test:,} test puzzles"
    result["budget"] = f"{args.steps} steps" if args.minutes is None else f"{args.minutes} minutes"
    result["training"] = train_models(args.out, args.size, args.train, args.test,
                                      None if args.minutes else args.steps, args.minutes, args.backend)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    print(tables(result))
    write_json(result, args.json)
    print(f"JSON written to {args.json}")


if __name__ == "__main__":
    main()
