"""`hrm demo`: build a 4x4 Sudoku set, train the `demo` preset (HRM) or `trm-demo` (TRM, the same size) on it,
evaluate on held-out puzzles, solve one.

Sized for a CPU: a few minutes on two cores with torch. The run directory is an ordinary training run, so
`hrm evaluate`, `hrm solve` and `hrm train --resume` work on it afterwards.
"""

import json
import shutil
import time
from pathlib import Path

import click
import numpy as np

from hrm_shared.app.backend import import_backend
from hrm_shared.core.format import load_split
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.core.errors import HRMError
from hrm_shared.app.run import CONFIG_FILE, METRICS_FILE, new_run
from hrm_shared.puzzles.solve import Puzzle, show_answer
from hrm_shared.app.train_loop import RunOptions, train

TRAIN_PUZZLES = 10_000  # distinct puzzles; with fewer the model memorises its training set
TEST_PUZZLES = 500
PRESETS = {"hrm": "demo", "trm": "trm-demo"}  # the model family -> its demo preset


def clear_previous(out: Path) -> None:
    """Remove `out`/data and `out`/run when they are what an earlier demo wrote; refuse anything else."""
    for path, marker in ((out / "data", "identifiers.json"), (out / "run", CONFIG_FILE)):
        if path.exists():
            if not (path / marker).is_file():
                raise HRMError(f"{path} exists but is not an earlier demo's; choose another --out")
            shutil.rmtree(path)


def run_demo(out: Path, backend: str, seed: int = 0, device: str | None = None, family: str = "hrm") -> dict:
    """Build, train the `family` ("hrm" or "trm") demo model, evaluate and solve in `out` (data/ and run/); print progress and a
    solved puzzle. Returns exact_accuracy (on the held-out puzzles), test_examples, seconds, backend and model."""
    begin = time.monotonic()
    out = Path(out)
    clear_previous(out)
    data, run = out / "data", out / "run"
    package = import_backend(backend)
    built = build_small_sudoku(data, 4, TRAIN_PUZZLES, TEST_PUZZLES, seed)
    click.echo(f"{built['train_puzzles']:,} train and {built['test_puzzles']:,} held-out 4x4 puzzles in {data}")
    config = new_run(run, PRESETS[family], data, [], seed, backend, {})
    click.echo(f"Training the {family.upper()} demo model ({PRESETS[family]}) with {backend} in {run}")
    train(package, run, config, RunOptions(eval_interval=0, device=device), resume=False)
    tested = _final_test(run)
    model, _ = package.checkpoint.load_checkpoint(run / "last", device)
    _, sets = load_split(data, "test")
    puzzle = Puzzle("sudoku", np.asarray(sets["all"].inputs[0], dtype=np.int32))
    answer = package.evaluate.predict_numpy(model, puzzle.batch())["predictions"][0]
    text, _ = show_answer(puzzle, answer)
    click.echo(f"A held-out puzzle and the model's answer:\n{text}")
    result = {"exact_accuracy": tested["exact_accuracy"], "test_examples": tested["count"],
              "seconds": round(time.monotonic() - begin, 1), "backend": backend, "model": family}
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
