"""Inference-time scaling (`hrm scaling`, shared/app/scaling.py) in both backends: each point of the one-pass curve
against a separate evaluation of exactly M segments, the ARC votes per M against votes from those evaluations, and
the command's errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from backends import adapter, tiny_weights
from helpers import invoke
from hrm_shared.app.scaling import SegmentCurve, parse_steps
from hrm_shared.core.checkpoint import CheckpointConfig, dataset_record
from hrm_shared.core.config import HRMConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import read_identifiers, read_metadata
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.puzzles.arc_vote import ArcVote, ArcVoter


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sudoku") / "ds"
    build_small_sudoku(root, 4, 8, 21, seed=2)
    return root


def write_checkpoint(adapter, directory: Path, data: Path, **changes) -> tuple[Path, object]:
    """A tiny HRM checkpoint for `data` (halt_max_steps 3, random Q head; `changes` to its config) and the model it
    holds."""
    m = read_metadata(data, "test")
    config = HRMConfig(vocab_size=m.vocab_size, seq_len=m.seq_len, num_puzzle_identifiers=m.num_puzzle_identifiers,
                       hidden_size=32, num_heads=1, expansion=2.0, H_layers=1, L_layers=1, halt_max_steps=3,
                       puzzle_emb_ndim=32, forward_dtype="float32", **changes)
    model = adapter.build(config, tiny_weights(config, seed=4))
    adapter.package.checkpoint.save_checkpoint(directory, model, CheckpointConfig(model=config,
                                                                                  dataset=dataset_record(data)))
    return directory, model


def test_each_point_is_an_evaluation_of_exactly_m_segments(backend, sudoku, tmp_path):
    directory, model = write_checkpoint(backend, tmp_path / "ckpt", sudoku)
    steps = [1, 2, 3, 5]
    kept = {M: backend.package.evaluate.evaluate(model, sudoku, 8, keep_outputs=True, segments=M) for M in steps}
    # Relabel so that each M gets some examples right: example i is labelled with the answer after M = steps[i % 4].
    labels = np.stack([kept[steps[i % 4]][1]["predictions"][i] for i in range(21)])
    data = tmp_path / "relabelled"
    shutil.copytree(sudoku, data)
    np.save(data / "test" / "all__labels.npy", labels.astype(np.load(sudoku / "test" / "all__labels.npy").dtype))
    r = invoke("scaling", "--backend", backend.name, directory, data, "--steps", "5,1,2,3", "--batch-size", 6,
               "--json", tmp_path / "s.json", "--no-verify")  # the labels changed since the build, on purpose
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "s.json").read_text())
    assert [p["segments"] for p in result["points"]] == steps and result["count"] == 21
    for point in result["points"]:
        metrics, _ = backend.package.evaluate.evaluate(model, data, 8, segments=point["segments"])
        assert point["exact_accuracy"] == pytest.approx(metrics["exact_accuracy"], abs=1e-12), point
        assert point["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9), point
        assert point["exact_accuracy"] >= 0.25
        assert f"M={point['segments']}  exact_accuracy {point['exact_accuracy']:.4f}" in r.output
    assert result["metrics"]["steps"] == 5 and result["trained_halt_max_steps"] == 3
    assert 1 <= result["adaptive"]["mean_segments"] <= 5 and "at most 5" in result["halting"]
    assert (tmp_path / "s.png").is_file() or "matplotlib is not installed" in r.output


def test_arc_votes_per_m_are_those_of_separate_evaluations(arc_build, tmp_path):
    torch_adapter = adapter("torch")
    _, ds, _ = arc_build
    directory, model = write_checkpoint(torch_adapter, tmp_path / "ckpt", ds, H_cycles=1, L_cycles=1)  # seq 900: cheap
    evaluate = torch_adapter.package.evaluate.evaluate
    names = read_identifiers(ds)
    curve = SegmentCurve([1, 3], ArcVote.read(ds))
    evaluate(model, ds, 32, on_batch=curve.add, segments=3, trajectory=True)
    for M, voter in zip(curve.steps, (vote.voter for vote in curve.votes)):
        separate = ArcVoter(names)
        evaluate(model, ds, 32, on_batch=separate.add, segments=M)
        assert voter.rows == separate.rows > 0 and voter.empty == separate.empty
        assert voter.votes.keys() == separate.votes.keys()
        for key, candidates in separate.votes.items():
            assert voter.votes[key].keys() == candidates.keys(), (M, key)
            for grid, (count, q_sum) in candidates.items():
                assert voter.votes[key][grid][0] == count and voter.votes[key][grid][1] == pytest.approx(q_sum)
    r = invoke("scaling", "--backend", "torch", directory, ds, "--steps", "1,2", "--batch-size", 32, "--json",
               tmp_path / "s.json")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "s.json").read_text())
    assert {"pass@1", "pass@2", "pass@10"} <= set(result["points"][0]) and "pass@2" in result["adaptive"]
    r = invoke("evaluate", "--backend", "torch", directory, ds, "--halt-max-steps", 2, "--halt", "--batch-size", 32,
               "--json", tmp_path / "e.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "e.json").read_text())["adaptive"] == pytest.approx(result["adaptive"])


def test_steps_and_segments_are_checked(sudoku, tmp_path):
    assert parse_steps("16, 1,4,4") == [1, 4, 16]
    for bad, message in (("0,2", "at least 1"), ("1,x", "whole numbers"), ("", "at least 1")):
        with pytest.raises(HRMError, match=message):
            parse_steps(bad)
    assert invoke("init", tmp_path / "ckpt", "--preset", "tiny", "--data", sudoku, "--set", "hidden_size=32",
                  "--set", "num_heads=1").exit_code == 0
    r = invoke("scaling", tmp_path / "ckpt", sudoku, "--steps", "0,1")
    assert r.exit_code == 1 and r.output.startswith("Error:") and "at least 1" in r.output
    r = invoke("evaluate", tmp_path / "ckpt", sudoku, "--halt-max-steps", 0)
    assert r.exit_code == 2 and "--halt-max-steps" in r.output
