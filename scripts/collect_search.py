"""Gather a recipe search's runs into one JSON (issue 23: every run kept, failures included).

Each run is an ordinary `hrm train` run directory; beside it, `NAME.cmd` holds the command that started it and an
optional `NAME.note` one line on what the run tried. For every run the JSON keeps the command, the model and
training configs, the held-out curve (step, training minutes, token and exact accuracy) and the training loss
every 100 steps, and the table printed lists each run's best held-out point:

    .venv/bin/python scripts/collect_search.py RUNS_DIR --json scripts/results/hrm9_search_cpu.json \
        --what "HRM on the 9x9 demo data"
"""

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrm_shared.app.bench import write_json  # noqa: E402  (after the path set-up)
from hrm_shared.app.run import CONFIG_FILE, METRICS_FILE, read_metrics  # noqa: E402


def read_run(directory: Path) -> dict:
    """One run: its command, note, configs, held-out curve and training loss every 100 steps."""
    config = json.loads((directory / CONFIG_FILE).read_text())
    records = read_metrics(directory / METRICS_FILE)
    tests = [{"step": r["step"], "train_minutes": round(r["train_seconds"] / 60, 2),
              "accuracy": round(r["accuracy"], 4),
              "exact_accuracy": r["exact_accuracy"], "segments": r.get("steps")}
             for r in records if r["split"] == "test"]
    train = [{"step": r["step"], "loss": round(r["loss"], 4)} for r in records
             if r["split"] == "train" and r["step"] % 100 == 0]
    last_step = max((r["step"] for r in records), default=0)
    return {"run": directory.name, "what": _beside(directory, ".note"), "command": _beside(directory, ".cmd"),
            "model": config["model"],
            "train": config["train"], "last_step": last_step, "points": tests, "train_loss": train}


def _beside(directory: Path, suffix: str) -> str | None:
    """The text of the file named like `directory` with `suffix` next to it, or None."""
    path = directory.parent / f"{directory.name}{suffix}"
    return path.read_text().strip() if path.is_file() else None


def table(runs: list[dict]) -> str:
    """Each run's best held-out point, one line per run."""
    header = ["run", "last step", "best step", "train min", "token acc", "exact", "what"]
    rows = []
    for r in runs:
        best = max(r["points"], key=lambda p: (p["exact_accuracy"], p["accuracy"]), default=None)
        cells = [f"{best['step']:,}", f"{best['train_minutes']:.1f}", f"{best['accuracy']:.4f}",
                 f"{best['exact_accuracy']:.3f}"] if best else ["-"] * 4
        rows.append([r["run"], f"{r['last_step']:,}", *cells, r["what"] or ""])
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))),
                                row[-1]]) for row in (header, *rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="Directory holding the run directories and their NAME.cmd files.")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--what", default="", help="One line on the search, stored in the JSON.")
    args = parser.parse_args()
    runs = [read_run(d) for d in sorted(args.runs.iterdir(), key=lambda d: d.stat().st_mtime)
            if (d / CONFIG_FILE).is_file()]
    print(table(runs))
    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    write_json({"what": args.what, "machine": machine, "runs": runs}, args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
