"""The training data order of the reference: one shuffled pass over eval_interval epochs at a time (issue 15.2).

Per-epoch passes drop the last partial batch of every epoch (with 1,000 groups at batch 768, 232 groups an epoch);
a pass of eval_interval epochs drops at most one partial batch per pass, and lets a split smaller than one global
batch train.
"""

import json

import numpy as np
import pytest

from helpers import TINY, make_dataset, run, sudoku_puzzle, write_sudoku_csv
from hrm_shared.app.run import read_train_state, write_train_state
from hrm_shared.core.checksums import CHECKSUMS_FILE
from hrm_shared.core.format import load_split
from hrm_shared.core.iterator import TrainIterator
from hrm_shared.data.sudoku import build_sudoku_dataset


def _groups_of(batches: list[dict], root) -> np.ndarray:
    """The group of every row of `batches` (make_dataset's tokens name the puzzle; puzzles map to groups)."""
    _, sets = load_split(root, "train")
    s = sets["all"]
    puzzle_of_id = {int(pid): p for p, pid in enumerate(s.puzzle_identifiers)}
    ids = np.concatenate([b["puzzle_identifiers"] for b in batches])
    return np.searchsorted(s.group_indices, [puzzle_of_id[int(i)] for i in ids], side="right") - 1


def test_a_pass_of_several_epochs_drops_at_most_one_partial_batch(tmp_path):
    # 12 groups x 2 examples = 24 examples an epoch; 5 epochs a pass = 120 examples = 7 batches of 16 (8 dropped),
    # where per-epoch passes would give 5 (one batch and 8 dropped examples an epoch).
    root = make_dataset(tmp_path / "d", groups=12)
    it = TrainIterator(root, 16, seed=0, epochs_per_pass=5)
    batches = [next(it) for _ in range(7)]
    assert it.passes == 1
    counts = np.bincount(_groups_of(batches, root), minlength=12) // 2  # a group's puzzle gives both examples
    assert counts.sum() == 56 and np.all((counts >= 4) & (counts <= 5))
    next(it)
    assert it.passes == 2


def test_a_split_smaller_than_one_batch_trains(tmp_path):
    # 2 groups x 2 examples = 4 examples an epoch against a batch of 8: a pass of 5 epochs fills two batches.
    root = make_dataset(tmp_path / "d", groups=2)
    it = TrainIterator(root, 8, seed=0, epochs_per_pass=5)
    first = [next(it), next(it)]
    assert it.passes == 1 and sorted(np.bincount(_groups_of(first, root))) == [8, 8]
    next(it)
    assert it.passes == 2


@pytest.mark.parametrize("eval_interval", [1, 4])
def test_training_draws_one_pass_per_eval_interval(tmp_path, eval_interval):
    # The tiny split (12 groups, 24 examples an epoch) at batch 8 with 8 epochs: the saved data position shows how
    # many epochs the loop's passes cover.
    data = make_dataset(tmp_path / "data", groups=12)
    out = tmp_path / "run"
    r = run("train", "--backend", "torch", "--data", data, *TINY, "--set", "epochs=8", "--set",
            f"eval_interval={eval_interval}", "--out", out, "--max-steps", 4, "--eval-interval", 0)
    assert r.exit_code == 0, r.output

    _, info = read_train_state(out / "last")
    assert info["iterator"]["epochs_per_pass"] == eval_interval
    assert info["iterator"]["passes"] == (2 if eval_interval == 1 else 1)  # 3 batches an epoch, 4 steps


def test_a_split_smaller_than_one_batch_trains_end_to_end(tmp_path):
    data = make_dataset(tmp_path / "data", groups=2)  # 4 examples an epoch, batch 8
    out = tmp_path / "run"
    r = run("train", "--backend", "torch", "--data", data, *TINY, "--set", "epochs=20", "--set", "eval_interval=10",
            "--out", out)
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records if r["split"] == "train") == 10  # 20 epochs x 4 examples / 8


@pytest.mark.parametrize("num_aug", [0, 1])
def test_the_official_sudoku_recipes_end_where_the_official_runs_end(tmp_path, num_aug):
    # 1,000 9x9 puzzles (one example each, one per group and epoch): TRM's 10 passes of 5,000 x 1,000 / 768 = 6,510
    # batches end at 65,100 (total_steps 65,104), HRM's 10 of 2,604 at 26,040 (26,041), each evaluating at its passes'
    # ends; the lr schedule still spans total_steps.
    rng = np.random.default_rng(0)
    write_sudoku_csv(tmp_path / "train.csv", [(*sudoku_puzzle(rng), 0) for _ in range(1000)])
    write_sudoku_csv(tmp_path / "test.csv", [(*sudoku_puzzle(rng), 0) for _ in range(8)])
    data = tmp_path / "data"
    build_sudoku_dataset(tmp_path, data, num_aug=num_aug)
    for name, per_pass, total in (("trm-sudoku", 6510, 65104), ("sudoku", 2604, 26041)):
        path = tmp_path / f"{name}.json"
        r = run("train", "--backend", "torch", "--data", data, "--preset", name, "--dry-run", "--json", path)
        assert r.exit_code == 0, r.output
        record = json.loads(path.read_text())
        assert record["last_step"] == record["steps"] == 10 * per_pass
        assert record["eval_steps"] == [per_pass * k for k in range(1, 11)]
        assert record["lr_schedule_steps"] == total
        assert f"{10 * per_pass:,} steps, 10 evaluations, the last at step {10 * per_pass:,}" in r.output


def _steps(out, split: str) -> list[int]:
    return [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def test_a_run_evaluates_at_its_pass_ends_and_ends_after_the_last_pass(tmp_path):
    # 10 one-example groups at batch 8, 6 epochs in passes of 2: 2 batches a pass (4 examples dropped), so 3 passes
    # end at step 6, where total_steps (the lr schedule's) is 6 x 10 / 8 = 7.
    data = make_dataset(tmp_path / "data", groups=10, puzzles_per_group=1, examples_per_puzzle=1)
    out = tmp_path / "run"
    r = run("train", "--backend", "torch", "--data", data, *TINY, "--set", "epochs=6", "--set", "eval_interval=2",
            "--out", out)
    assert r.exit_code == 0, r.output
    assert "6 steps, 3 evaluations, the last at step 6; the lr schedule spans 7 steps" in r.output
    assert _steps(out, "test") == [2, 4, 6] and max(_steps(out, "train")) == 6
    _, info = read_train_state(out / "last")
    assert info["plan"] == "passes" and info["iterator"]["passes"] == 3
    r = run("train", "--backend", "torch", "--data", data, *TINY, "--set", "epochs=6", "--set", "eval_interval=2",
            "--out", tmp_path / "steps", "--eval-interval", 5)  # steps between evaluations keep working
    assert r.exit_code == 0, r.output
    assert _steps(tmp_path / "steps", "test") == [5, 6]


def test_a_run_started_before_plans_were_recorded_resumes_to_total_steps(tmp_path):
    data = make_dataset(tmp_path / "data", groups=10, puzzles_per_group=1, examples_per_puzzle=1)
    out = tmp_path / "run"
    args = ("train", "--backend", "torch", *TINY, "--set", "epochs=6", "--set", "eval_interval=2")
    r = run(*args, "--data", data, "--out", out, "--max-steps", 3)
    assert r.exit_code == 0, r.output
    tensors, info = read_train_state(out / "last")
    del info["plan"]  # as checkpoints were written before plans, and before checksums
    write_train_state(out / "last", tensors, info)
    (out / "last" / CHECKSUMS_FILE).unlink()
    r = run("train", "--resume", out)
    assert r.exit_code == 0, r.output
    # First at the pass end (2) and the stop (3); then as before: every 7 x 2 // 6 = 2 steps and at total_steps.
    assert max(_steps(out, "train")) == 7 and _steps(out, "test") == [2, 3, 4, 6, 7]
