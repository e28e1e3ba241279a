"""The ARC vote (shared/puzzles/arc_vote.py) on hand-built predictions, on a tiny build, and through `hrm evaluate`."""

import importlib
import json

import numpy as np
import pytest

from backends import tiny_weights
from helpers import dataset_rows, invoke, make_dataset
from hrm_shared.core.config import HRMConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import read_identifiers
from hrm_shared.puzzles.arc_augment import (
    EOS_TOKEN,
    GRID_SIZE,
    IDENTITY_MAPPING,
    aug_name,
    augment_grid,
    crop_prediction,
    encode_grids,
)
from hrm_shared.puzzles.arc_score import score_file
from hrm_shared.puzzles.arc_vote import (
    ATTEMPTS,
    EMPTY_ANSWER,
    ArcTestTask,
    ArcVoter,
    arc_score,
    crop_shapes,
    pass_at,
    read_test_tasks,
    submission,
    truth_ranks,
)

TASK = "t1"


def tokens(grid: np.ndarray) -> np.ndarray:
    """A grid uint8 [h, w] encoded at (0, 0) as the model would answer it: [900] int32."""
    return encode_grids(np.asarray(grid, dtype=np.uint8)[None], [(0, 0)]).reshape(-1).astype(np.int32)


def outputs(identifiers, grids, q_logits=None) -> dict[str, np.ndarray]:
    """An evaluation batch: each grid encoded as a prediction, q logits 0 unless given."""
    q = np.zeros(len(grids)) if q_logits is None else np.asarray(q_logits, dtype=np.float32)
    return {"puzzle_identifiers": np.asarray(identifiers, dtype=np.int32),
            "predictions": np.stack([tokens(g) for g in grids]), "q_halt_logits": q}


def random_mapping(rng) -> np.ndarray:
    return np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)


def grid(seed: int, shape=(3, 4)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, shape).astype(np.uint8)


def test_batch_crop_matches_crop_prediction():
    rng = np.random.default_rng(0)
    predictions = rng.integers(2, 12, (300, GRID_SIZE, GRID_SIZE))
    for p in predictions:
        h, w = rng.integers(0, 31, 2)
        p[h:, rng.integers(0, 31):] = rng.integers(0, 2)
        p[rng.integers(0, 31):, w:] = EOS_TOKEN
    predictions[0, 0, 0] = 0  # no colour at the origin: empty
    shapes = crop_shapes(predictions.reshape(300, -1))
    assert shapes[0].tolist() == [0, 0]
    assert [tuple(s) for s in shapes.tolist()] == [crop_prediction(p).shape for p in predictions]


def test_every_augmentation_is_undone_before_voting():
    rng = np.random.default_rng(1)
    truth = grid(0, (3, 5))
    views = [(k, random_mapping(rng)) for k in range(8) for _ in range(2)]
    voter = ArcVoter(["<blank>"] + [aug_name(TASK, k, m) for k, m in views])
    voter.add(outputs(range(1, len(views) + 1), [augment_grid(truth, k, m) for k, m in views]))
    ranked = voter.ranked(TASK, 0)
    assert len(ranked) == 1 and ranked[0].votes == 16 and np.array_equal(ranked[0].grid, truth)


def test_count_wins_then_mean_q_then_first_seen():
    rng = np.random.default_rng(2)
    a, b, c, d = (grid(i) for i in range(4))
    views = [(0, IDENTITY_MAPPING)] + [(i % 8, random_mapping(rng)) for i in range(1, 9)]
    names = ["<blank>"] + [aug_name(TASK, k, m) for k, m in views]
    answers = [a, b, b, a, c, c, c, d, d]  # c: 3 votes; a, b and d: 2 each
    q = [-1.0, 2.0, 2.0, -1.0, -5.0, -5.0, -5.0, 2.0, 2.0]  # b and d tie on votes and mean q; b is seen first
    voter = ArcVoter(names)
    voter.add(outputs(range(1, 10), [augment_grid(g, k, m) for g, (k, m) in zip(answers, views)], q))
    ranked = voter.ranked(TASK, 0)
    assert [r.votes for r in ranked] == [3, 2, 2, 2]
    order = [next(i for i, g in enumerate((a, b, c, d)) if np.array_equal(g, r.grid)) for r in ranked]
    assert order == [2, 1, 3, 0]
    assert ranked[0].q == pytest.approx(1 / (1 + np.exp(5.0)))
    assert ranked[1].q == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_rows_of_one_puzzle_are_its_test_inputs_in_order_and_batches_do_not_matter():
    names = ["<blank>", "m", aug_name("m", 1, IDENTITY_MAPPING), "s"]
    first, second, other = grid(1, (2, 3)), grid(2, (4, 4)), grid(3, (1, 1))
    rows = ([1, first], [1, second], [2, np.rot90(first)], [2, np.rot90(second)], [3, other])
    whole, split = ArcVoter(names), ArcVoter(names)
    whole.add(outputs([r[0] for r in rows], [r[1] for r in rows]))
    for r in rows:
        split.add(outputs([r[0]], [r[1]]))
    for voter in (whole, split):
        assert set(voter.votes) == {("m", 0), ("m", 1), ("s", 0)}
        assert np.array_equal(voter.ranked("m", 0)[0].grid, first) and voter.ranked("m", 0)[0].votes == 2
        assert np.array_equal(voter.ranked("m", 1)[0].grid, second) and voter.ranked("m", 1)[0].votes == 2
    assert whole.votes == split.votes


def test_a_task_counts_only_when_all_its_test_inputs_are_solved():
    ranks = {"a": [1, 1], "b": [1, 2], "c": [None, 1], "d": [3], "e": [11]}
    score = pass_at(ranks, (1, 2, 10))
    assert score["tasks"] == 5 and score["test_inputs"] == 8
    assert score["pass@1"] == pytest.approx(1 / 5)
    assert score["pass@2"] == pytest.approx(2 / 5)
    assert score["pass@10"] == pytest.approx(3 / 5)
    assert score["fractional"]["pass@1"] == pytest.approx((1 + 0.5 + 0.5) / 5)
    assert score["fractional"]["pass@2"] == pytest.approx((1 + 1 + 0.5) / 5)


def test_empty_crops_do_not_vote_and_the_submission_is_padded():
    names = ["<blank>", "x", aug_name("x", 4, IDENTITY_MAPPING), "y"]
    empty = np.zeros(GRID_SIZE * GRID_SIZE, dtype=np.int32)
    only = grid(7, (2, 2))
    voter = ArcVoter(names)
    batch = outputs([1, 2, 3], [only, only, only])
    batch["predictions"][1] = empty
    batch["predictions"][2] = empty
    voter.add(batch)
    assert voter.rows == 3 and voter.empty == 2 and voter.ranked("y", 0) == []
    tasks = {n: ArcTestTask(n, [only], [only]) for n in ("x", "y")}
    result = submission(voter, tasks)
    assert result == {"x": [{"attempt_1": only.tolist(), "attempt_2": only.tolist()}],
                      "y": [{"attempt_1": EMPTY_ANSWER, "attempt_2": EMPTY_ANSWER}]}
    assert truth_ranks(voter, tasks["x"]) == [1] and truth_ranks(voter, tasks["y"]) == [None]


def test_unknown_identifier_is_an_error():
    with pytest.raises(HRMError, match="names no puzzle in identifiers.json"):
        ArcVoter(["<blank>", "a"]).add(outputs([5], [grid(0)]))


def test_test_tasks_come_back_from_a_build(arc_build):
    _, ds, tasks = arc_build
    found = read_test_tasks(ds)
    assert set(found) == {"multi", "single", "third"}
    for name, task in found.items():
        assert [g.tolist() for g in task.inputs] == [p["input"] for p in tasks[name]["test"]]
        assert [g.tolist() for g in task.outputs] == [p["output"] for p in tasks[name]["test"]]


def test_perfect_and_outvoted_predictions_on_a_build(arc_build, tmp_path):
    raw, ds, tasks = arc_build
    labels, ids = dataset_rows(ds)
    names = read_identifiers(ds)
    perfect = ArcVoter(names)
    perfect.add({"puzzle_identifiers": ids, "predictions": labels, "q_halt_logits": np.zeros(len(ids))})
    test_tasks = read_test_tasks(ds)
    score = arc_score(perfect, test_tasks)
    assert score["pass@1"] == score["pass@2"] == 1.0 and score["tasks"] == 3 and score["test_inputs"] == 4
    # "multi" test input 1: every view but one answers the same wrong grid -> right answer second: pass@2 only.
    predictions = labels.copy()
    rows = [i for i, n in enumerate(ids.tolist()) if names[n].startswith("multi")][1::2]
    wrong = tokens(np.zeros((2, 2)))  # colour 0 in a square: the same grid once de-augmented in every view
    predictions[rows[1:]] = wrong
    voter = ArcVoter(names)
    voter.add({"puzzle_identifiers": ids, "predictions": predictions, "q_halt_logits": np.zeros(len(ids))})
    assert truth_ranks(voter, test_tasks["multi"]) == [1, 2]
    score = arc_score(voter, test_tasks)
    assert score["pass@1"] == pytest.approx(2 / 3) and score["pass@2"] == 1.0
    assert score["fractional"]["pass@1"] == pytest.approx((0.5 + 1 + 1) / 3)
    path = tmp_path / "submission.json"
    path.write_text(json.dumps(submission(voter, test_tasks)))
    scored = score_file(path, raw / "evaluation")
    assert scored["problems"] == [] and scored["pass@1"] == pytest.approx(2 / 3) and scored["pass@2"] == 1.0
    entry = json.loads(path.read_text())["multi"][1]
    assert entry["attempt_1"] == [[0, 0], [0, 0]] and entry["attempt_2"] == tasks["multi"]["test"][1]["output"]
    assert len(entry) == ATTEMPTS


def test_on_batch_sees_what_keep_outputs_keeps(backend, tmp_path):
    ds = make_dataset(tmp_path / "ds", groups=5, puzzles_per_group=2, examples_per_puzzle=2)  # 20 test rows
    config = HRMConfig(vocab_size=7, seq_len=8, num_puzzle_identifiers=21, hidden_size=32, num_heads=1,
                       expansion=2.0, H_layers=1, L_layers=1, halt_max_steps=2, puzzle_emb_ndim=32,
                       forward_dtype="float32")
    model = backend.build(config, tiny_weights(config))
    evaluation = importlib.import_module(f"hrm_{backend.name}.evaluate")
    seen = []
    _, kept = evaluation.evaluate(model, ds, 8, keep_outputs=True, on_batch=seen.append)
    assert [len(b["predictions"]) for b in seen] == [8, 8, 4]  # the last batch's padding is left out
    for key, value in kept.items():
        assert np.array_equal(np.concatenate([b[key] for b in seen]), value), key
    assert len(set(kept["puzzle_identifiers"].tolist())) == 10


def test_hrm_evaluate_scores_arc_and_writes_a_submission(arc_build, tmp_path):
    raw, ds, _ = arc_build
    ckpt = tmp_path / "ckpt"
    r = invoke("init", ckpt, "--backend", "torch", "--preset", "tiny", "--data", ds, "--set", "hidden_size=32",
               "--set", "num_heads=1", "--set", "puzzle_emb_ndim=32", "--set", "halt_max_steps=1")
    assert r.exit_code == 0, r.output
    r = invoke("evaluate", ckpt, ds, "--backend", "torch", "--device", "cpu", "--batch-size", "8",
               "--submission", tmp_path / "sub.json", "--json", tmp_path / "eval.json")
    assert r.exit_code == 0, r.output
    assert "ARC score over 3 tasks (4 test inputs" in r.output and "pass@2" in r.output
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["arc"]["tasks"] == 3 and record["arc"]["rows"] == 20
    sub = json.loads((tmp_path / "sub.json").read_text())
    assert set(sub) == {"multi", "single", "third"} and len(sub["multi"]) == 2
    scored = score_file(tmp_path / "sub.json", raw / "evaluation")
    assert scored["problems"] == []
    assert (scored["pass@1"], scored["pass@2"]) == (record["arc"]["pass@1"], record["arc"]["pass@2"])


def test_submission_is_refused_for_other_datasets(tmp_path):
    ds = make_dataset(tmp_path / "ds", seq_len=16, vocab_size=6)
    ckpt = tmp_path / "ckpt"
    assert invoke("init", ckpt, "--backend", "torch", "--preset", "tiny", "--data", ds, "--set", "hidden_size=32",
                  "--set", "num_heads=1").exit_code == 0
    r = invoke("evaluate", ckpt, ds, "--backend", "torch", "--submission", tmp_path / "sub.json")
    assert r.exit_code == 1 and r.output.startswith("Error: --submission is for ARC datasets"), r.output
    assert not (tmp_path / "sub.json").exists()
