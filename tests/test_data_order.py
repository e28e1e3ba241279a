"""The training data order of the reference: one shuffled pass over eval_interval epochs at a time (issue 15.2).

Per-epoch passes drop the last partial batch of every epoch (with 1,000 groups at batch 768, 232 groups an epoch);
a pass of eval_interval epochs drops at most one partial batch per pass, and lets a split smaller than one global
batch train.
"""

import json

import numpy as np
import pytest

from helpers import TINY, make_dataset, run
from hrm_shared.core.format import load_split
from hrm_shared.core.iterator import TrainIterator


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
    from hrm_shared.app.run import read_train_state

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
