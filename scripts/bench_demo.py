"""Accuracy against training minutes of `hrm demo` (issue 15, item 11: a real puzzle in the demo).

Runs the demo exactly as `hrm demo --size S --model M` does (the same data, preset and seed), evaluating on the
held-out puzzles `--evals` times during training, and records each evaluation's step, training seconds (time in
steps, evaluations left out) and token and exact accuracy. Prints one table, writes the JSON and a PNG of exact
accuracy against minutes:

    .venv/bin/python scripts/bench_demo.py --size 9 --model hrm --model trm

or draws finished demos (`hrm demo --out DIR --eval-interval N`) with --from DIR.
"""

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrm_shared.app.bench import write_json  # noqa: E402  (after the path set-up)
from hrm_shared.app.demo import SIZES, run_demo  # noqa: E402
from hrm_shared.app.plot import new_figure, save_figure  # noqa: E402
from hrm_shared.app.run import CONFIG_FILE, METRICS_FILE, read_metrics  # noqa: E402
from hrm_shared.core.config import preset  # noqa: E402
from hrm_shared.core.registry import family_named  # noqa: E402
from hrm_shared.core.schedule import run_plan  # noqa: E402


def curve(out: Path, backend: str, family: str, size: int, seed: int, evals: int) -> dict:
    """Run the demo of `family` and `size` in `out`; its preset, steps and test evaluations."""
    name = family_named(family).demo_presets[size]
    _, train = preset(name)
    steps = run_plan(train.epochs, train.eval_interval, SIZES[size].train_puzzles, 1.0,
                     train.global_batch_size).last_step
    result = run_demo(out, backend, seed, family=family, size=size, eval_interval=max(1, steps // evals))
    return {**read_curve(out), "seconds_in_all": result["seconds"]}


def read_curve(out: Path) -> dict:
    """The model family, preset, steps and test evaluations of the demo run in `out`/run (as `hrm demo --out OUT`
    leaves it; its seconds in all are unknown here, so None)."""
    config = json.loads((out / "run" / CONFIG_FILE).read_text())
    tests = [r for r in read_metrics(out / "run" / METRICS_FILE) if r["split"] == "test"]
    if not tests:
        raise SystemExit(f"{out}/run has no held-out evaluation: is it a finished `hrm demo --out {out}`?")
    points = [{"step": r["step"], "train_minutes": round(r["train_seconds"] / 60, 2), "accuracy": r["accuracy"],
               "exact_accuracy": r["exact_accuracy"]} for r in tests]
    return {"model": config["family"], "preset": config["preset"], "steps": tests[-1]["step"], "seconds_in_all": None,
            "test_examples": tests[-1]["count"], "points": points}


def table(runs: list[dict]) -> str:
    """Every evaluation of every run as text."""
    header = ["model", "preset", "step", "train min", "token acc", "exact"]
    rows = [[r["model"], r["preset"], f"{p['step']:,}", f"{p['train_minutes']:.1f}", f"{p['accuracy']:.4f}",
             f"{p['exact_accuracy']:.4f}"] for r in runs for p in r["points"]]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in (header, *rows))


def plot(runs: list[dict], size: int, path: Path) -> None:
    """Exact accuracy against training minutes, one line per run (nothing when matplotlib is missing)."""
    made = new_figure(figsize=(6, 4))
    if made is None:
        return
    figure, axis = made
    for r in runs:
        axis.plot([p["train_minutes"] for p in r["points"]], [p["exact_accuracy"] for p in r["points"]], "o-",
                  label=f"{r['model'].upper()} ({r['preset']})")
    axis.set(xlabel="training minutes (2-core CPU, torch)", ylabel="held-out exact accuracy", ylim=(0, 1),
             title=f"hrm demo --size {size}")
    axis.legend()
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=9, choices=sorted(SIZES), help="The demo's Sudoku size.")
    parser.add_argument("--model", action="append", choices=("hrm", "trm"), default=None,
                        help="Model families, repeatable  [default: hrm].")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evals", type=int, default=8, help="Evaluations during each run.")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-demo"), help="Data and runs go here.")
    parser.add_argument("--from", dest="done", type=Path, action="append", default=[],
                        help="Also draw a finished `hrm demo --out DIR --eval-interval N`, repeatable.")
    parser.add_argument("--json", type=Path, default=None,
                        help="[default: scripts/results/demo<size>_cpu.json, and a .png beside it]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the training's progress, as `hrm demo` prints it
    path = args.json or ROOT / "scripts" / "results" / f"demo{args.size}_cpu.json"
    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    runs = [read_curve(done) for done in args.done]
    runs += [curve(args.out / family, args.backend, family, args.size, args.seed, args.evals)
             for family in args.model or ([] if runs else ["hrm"])]
    machine["load_average_at_end"] = os.getloadavg()
    print(table(runs))
    write_json({"machine": machine, "size": args.size, "backend": args.backend, "runs": runs}, path)
    plot(runs, args.size, path.with_suffix(".png"))
    print(f"JSON written to {path}")


if __name__ == "__main__":
    main()
