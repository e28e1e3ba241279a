"""`hrm demo`: build a Sudoku set (9x9 puzzles with 45 blanks, or minimal 4x4 ones), train the size's TRM preset
(or HRM, the same size) on it, evaluate on held-out puzzles, solve one.

Sized for a CPU: minutes on two cores with torch (scripts/bench_demo.py measures the accuracy against the minutes).
The run directory is an ordinary training run, so `hrm evaluate`, `hrm solve` and `hrm train --resume` work on it
afterwards, and the dataset stays in `<out>/data`.
"""

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from hrm_shared.app import api
from hrm_shared.app.run import CONFIG_FILE, METRICS_FILE
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split
from hrm_shared.core.registry import family_named
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.puzzles.solve import Puzzle, notation


@dataclass(frozen=True)
class DemoSize:
    """What `hrm demo --size N` builds: distinct puzzles (with fewer the model memorises its training set) and their
    blank cells (None: minimal puzzles). Each family's registry entry names the preset it trains (demo_presets)."""

    train_puzzles: int
    test_puzzles: int
    blanks: int | None


SIZES = {4: DemoSize(10_000, 500, None), 9: DemoSize(20_000, 500, 45)}


def clear_previous(out: Path) -> None:
    """Remove `out`/data and `out`/run when they are what an earlier demo wrote; refuse anything else."""
    for path, marker in ((out / "data", "identifiers.json"), (out / "run", CONFIG_FILE)):
        if path.exists():
            if not (path / marker).is_file():
                raise HRMError(f"{path} exists but is not an earlier demo's; choose another --out")
            shutil.rmtree(path)


def run_demo(out: Path, backend: str, seed: int = 0, device: str | None = None, family: str = "trm", size: int = 9,
             eval_interval: int = 0) -> dict:
    """Build, train the `family` (a registered model family: "hrm", "trm") demo model for `size` x `size` Sudoku,
    evaluate and solve in `out` (data/ and run/), evaluating every `eval_interval` steps (0: at the end only); print
    progress and a solved puzzle. Returns exact_accuracy (on the held-out puzzles), test_examples, seconds, backend,
    model and size."""
    if size not in SIZES:
        raise HRMError(f"the demo's --size is one of {', '.join(map(str, SIZES))}, got {size}")
    demo = SIZES[size]
    presets = family_named(family).demo_presets
    if size not in presets:
        raise HRMError(f"the {family} family has no demo preset for --size {size}; choose one of "
                       f"{', '.join(map(str, presets))}")
    begin = time.monotonic()
    out = Path(out)
    clear_previous(out)
    data, run = out / "data", out / "run"
    built = build_small_sudoku(data, size, demo.train_puzzles, demo.test_puzzles, seed, blanks=demo.blanks)
    kind = "minimal" if demo.blanks is None else f"{demo.blanks}-blank"
    click.echo(f"{built['train_puzzles']:,} train and {built['test_puzzles']:,} held-out {kind} {size}x{size} puzzles "
               f"in {data}")
    name = presets[size]
    click.echo(f"Training the {family.upper()} demo model ({name}) with {backend} in {run}")
    api.train(backend, data, run, name, seed=seed, device=device, eval_every=eval_interval)
    tested = _final_test(run)
    _, sets = load_split(data, "test")
    tokens = np.asarray(sets["all"].inputs[0], dtype=np.int32)
    solved = api.solve(backend, api.load(backend, run, device), notation(Puzzle("sudoku", tokens), tokens))
    click.echo(f"A held-out puzzle and the model's answer:\n{solved.text}")
    result = {"exact_accuracy": tested["exact_accuracy"], "test_examples": tested["count"],
              "seconds": round(time.monotonic() - begin, 1), "backend": backend, "model": family, "size": size}
    click.echo(f"Exact accuracy on {result['test_examples']:,} held-out puzzles: {result['exact_accuracy']:.1%} "
               f"({result['seconds']:.0f} s in all)")
    return result


def _final_test(run: Path) -> dict:
    """The last evaluation record of `run`'s metrics.jsonl."""
    records = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    tests = [r for r in records if r["split"] == "test"]
    if not tests:
        raise HRMError(f"the demo run in {run} stopped before its evaluation; run `hrm demo` again")
    return tests[-1]
