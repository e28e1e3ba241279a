"""Reasoning trajectories: evaluation past halt_max_steps, `hrm evaluate --save-trajectory`, the adaptive mode of
`--halt`, `hrm solve --steps` and the report's segment-by-segment cards, in both backends.

Independent computations: every segment recomputed from the inner network one call at a time (the carry reset
once, no ACT wrapper); the adaptive halting segment found by a plain loop over those logits; the trajectory file
against `--save-outputs` runs of exactly m segments and against the other backend on a converted checkpoint.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from backends import data_config, random_batch, tiny_weights
from helpers import dataset_rows, invoke
from hrm_shared.app.report import write_report
from hrm_shared.core.checkpoint import CheckpointConfig, dataset_record
from hrm_shared.core.format import load_split
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.puzzles.solve import Puzzle

CHROMIUM = "/usr/bin/chromium"
FILE_KEYS = {"predictions", "q_halt_logits", "q_continue_logits", "puzzle_identifiers"}


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory) -> Path:
    """4x4 Sudoku: 23 test puzzles, so batches of 10 leave a padded last batch."""
    root = tmp_path_factory.mktemp("sudoku") / "ds"
    build_small_sudoku(root, 4, 8, 23, seed=1)
    return root


def write_checkpoint(adapter, directory: Path, data: Path, family: str = "hrm", q_halt_bias: float = 0.0) -> Path:
    """A tiny checkpoint for `data` with a random Q head and puzzle table (its halting logits differ per example),
    `q_halt_bias` added to the q_halt logit."""
    config = data_config(data, family)
    weights = tiny_weights(config, seed=2)
    weights["q_head.bias"][0] = q_halt_bias
    adapter.package.checkpoint.save_checkpoint(directory, adapter.build(config, weights),
                                               CheckpointConfig(model=config, dataset=dataset_record(data)))
    return directory


def split_inputs(data: Path) -> np.ndarray:
    """The test split's inputs [N, seq_len] int32."""
    _, sets = load_split(data, "test")
    return np.asarray(sets["all"].inputs).astype(np.int32)


@pytest.mark.parametrize("family", ["hrm", "trm"])
def test_segments_past_halt_max_steps_continue_the_recurrence(backend, sudoku, family):
    config = data_config(sudoku, family)
    model = backend.build(config, tiny_weights(config, seed=2))
    batch = random_batch(np.random.default_rng(0), config, batch_size=5)
    ours = backend.package.evaluate.predict_numpy(model, batch, segments=7, trajectory=True, states=True)
    theirs = backend.segments(model, batch, 7)
    assert ours["segment_predictions"].shape == (5, 7, config.seq_len)
    assert ours["segment_predictions"].dtype == np.int32 and ours["segment_q_halt_logits"].dtype == np.float32
    assert np.array_equal(ours["segment_predictions"], theirs["predictions"])
    assert np.array_equal(ours["predictions"], theirs["predictions"][:, -1])
    for name in ("q_halt_logits", "q_continue_logits"):
        assert np.abs(ours[f"segment_{name}"] - theirs[name]).max() <= 1e-6, name
    for name in ("z_H", "z_L"):
        assert np.abs(ours[name] - theirs[name]).max() <= 1e-6, name
    assert len({tuple(row) for row in theirs["predictions"][0]}) > 1  # the answers move with the segments


def test_trajectory_file_holds_every_segment_in_dataset_order(backend, sudoku, tmp_path):
    directory = write_checkpoint(backend, tmp_path / "ckpt", sudoku)
    r = invoke("evaluate", "--backend", backend.name, directory, sudoku, "--batch-size", 10, "--halt-max-steps", 5,
               "--save-trajectory", tmp_path / "t.npz", "--save-outputs", tmp_path / "o.npz", "--json",
               tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    trajectory, outputs = np.load(tmp_path / "t.npz"), np.load(tmp_path / "o.npz")
    labels, ids = dataset_rows(sudoku)
    assert set(trajectory.files) == FILE_KEYS
    assert {k: trajectory[k].shape for k in FILE_KEYS} == {
        "predictions": (23, 5, 16), "q_halt_logits": (23, 5), "q_continue_logits": (23, 5), "puzzle_identifiers": (23,)}
    assert np.array_equal(trajectory["puzzle_identifiers"], ids)
    assert np.array_equal(trajectory["predictions"][:, -1], outputs["predictions"])
    assert np.array_equal(trajectory["q_halt_logits"][:, -1], outputs["q_halt_logits"])
    assert json.loads((tmp_path / "m.json").read_text())["segments"] == 5
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["steps"] == 5
    model, _ = backend.package.checkpoint.load_checkpoint(directory, "cpu")
    for m in (1, 2, 4):  # a run of exactly m segments answers what segment m of the trajectory holds
        _, kept = backend.package.evaluate.evaluate(model, sudoku, 7, keep_outputs=True, segments=m)
        assert np.array_equal(kept["predictions"], trajectory["predictions"][:, m - 1]), m
        assert np.allclose(kept["q_halt_logits"], trajectory["q_halt_logits"][:, m - 1], atol=1e-6), m
    by_hand = backend.segments(model, {"inputs": split_inputs(sudoku), "labels": labels,
                                                "puzzle_identifiers": ids}, 5)
    assert np.array_equal(by_hand["predictions"], trajectory["predictions"])


def test_backends_write_identical_trajectories(both, sudoku, tmp_path):
    torch_adapter, _ = both
    write_checkpoint(torch_adapter, tmp_path / "torch", sudoku)
    assert invoke("convert", tmp_path / "torch", tmp_path / "mlx", "--to", "mlx").exit_code == 0
    files = {}
    for name in ("torch", "mlx"):
        r = invoke("evaluate", "--backend", name, tmp_path / name, sudoku, "--halt-max-steps", 6, "--batch-size", 8,
                   "--save-trajectory", tmp_path / f"{name}.npz")
        assert r.exit_code == 0, r.output
        files[name] = np.load(tmp_path / f"{name}.npz")
    ours, theirs = files["torch"], files["mlx"]
    assert np.array_equal(ours["predictions"], theirs["predictions"])
    assert np.array_equal(ours["puzzle_identifiers"], theirs["puzzle_identifiers"])
    for name in ("q_halt_logits", "q_continue_logits"):
        assert np.abs(ours[name] - theirs[name]).max() <= 1e-4, name


@pytest.mark.parametrize("family", ["hrm", "trm"])
def test_adaptive_mode_stops_each_example_at_its_own_decision(backend, sudoku, tmp_path, family):
    labels, ids = dataset_rows(sudoku)
    batch, M = {"inputs": split_inputs(sudoku), "labels": labels, "puzzle_identifiers": ids}, 6

    def by_hand(bias: float):
        directory = write_checkpoint(backend, tmp_path / "ckpt", sudoku, family, bias)
        return directory, backend.segments(backend.package.checkpoint.load_checkpoint(directory, "cpu")[0],
                                           batch, M)

    _, unbiased = by_hand(0.0)
    # Centre q_halt at segment 2 on the rule's threshold, so that examples halt at different segments.
    margin = unbiased["q_halt_logits"][:, 1] - (0 if family == "trm" else unbiased["q_continue_logits"][:, 1])
    directory, steps = by_hand(-float(np.median(margin)))
    halts = []
    for q_halt, q_continue in zip(steps["q_halt_logits"], steps["q_continue_logits"]):
        for m in range(M):
            threshold = 0.0 if family == "trm" else q_continue[m]
            if q_halt[m] > threshold or m == M - 1:
                halts.append(m + 1)
                break
    halts = np.array(halts)
    assert len(set(halts.tolist())) > 1  # the random Q head halts examples at different segments
    answers = steps["predictions"][np.arange(len(halts)), halts - 1]
    # Relabel half the examples with their own adaptive answer so that the exact accuracy is not trivially 0.
    relabelled = tmp_path / "relabelled"
    shutil.copytree(sudoku, relabelled)
    truth = np.where(np.arange(len(labels))[:, None] % 2 == 0, answers, labels)
    np.save(relabelled / "test" / "all__labels.npy", truth.astype(np.load(sudoku / "test" / "all__labels.npy").dtype))
    # --no-verify: the relabelled labels no longer match the dataset's checksums, on purpose.
    r = invoke("evaluate", "--backend", backend.name, directory, relabelled, "--halt-max-steps", M, "--halt",
               "--batch-size", 8, "--json", tmp_path / "m.json", "--no-verify")
    assert r.exit_code == 0, r.output
    adaptive = json.loads((tmp_path / "m.json").read_text())["adaptive"]
    exact = (answers == truth).all(axis=1)
    assert adaptive["count"] == len(labels)
    assert adaptive["exact_accuracy"] == pytest.approx(exact.mean()) and exact.mean() >= 0.5
    assert adaptive["mean_segments"] == pytest.approx(halts.mean())
    rule = "q_halt > 0" if family == "trm" else "q_halt > q_continue"
    assert f"first segment with {rule}, at most {M}" in r.output and "mean_segments" in r.output


def test_solve_steps_marks_the_cells_each_segment_changed(backend, sudoku, tmp_path):
    directory = write_checkpoint(backend, tmp_path / "ckpt", sudoku)
    puzzle = "1..4....3..2...."
    r = invoke("solve", "--backend", backend.name, directory, puzzle, "--steps")
    assert r.exit_code == 0, r.output
    model, _ = backend.package.checkpoint.load_checkpoint(directory, "cpu")
    given = Puzzle("sudoku", np.array([1 if c == "." else int(c) + 1 for c in puzzle], np.int32))
    by_hand = backend.segments(model, given.batch(), 3)
    steps, q_halt = by_hand["predictions"][0], by_hand["q_halt_logits"][0]
    header, *board = r.output.split("\n")[:8]
    assert header.split() == [word for m in range(3) for word in (f"{m + 1}:", "q_halt", f"{q_halt[m]:+.1f}")]
    digits = ".." + "1234"  # tokens 0 (pad) and 1 (blank) show as '.'
    for m, tokens in enumerate(steps):
        previous = given.inputs if m == 0 else steps[m - 1]
        start = header.index(f"{m + 1}: q_halt")  # the board's first column
        for cell in range(16):
            row, c = divmod(cell, 4)
            line = board[1 + row + row // 2]  # a rule above each band of 2 rows
            column = start + 2 + 2 * c + 2 * (c // 2)  # "| ", 2 per cell, "| " between the stacks of 2
            assert line[column] == digits[tokens[cell]], (m, cell, line)
            assert (line[column + 1] == "*") == bool(tokens[cell] != previous[cell]), (m, cell, line)
    assert "answer: " in r.output


def test_report_shows_each_example_segment_by_segment(tmp_path, sudoku):
    rng = np.random.default_rng(0)
    labels, ids = dataset_rows(sudoku)
    steps = np.stack([labels, labels, labels], axis=1).astype(np.int32)  # [N, 3, 16]: converges at segment 3
    steps[:, 0, :4] = 1 + labels[:, :4] % 4
    steps[:, 1, 0] = 1 + labels[:, 0] % 4
    np.savez(tmp_path / "o.npz", predictions=steps[:, -1], labels=labels, q_halt_logits=np.zeros(len(ids), np.float32),
             puzzle_identifiers=ids)
    np.savez(tmp_path / "t.npz", predictions=steps, q_halt_logits=rng.normal(size=(len(ids), 3)).astype(np.float32),
             q_continue_logits=np.zeros((len(ids), 3), np.float32), puzzle_identifiers=ids)
    result = write_report(tmp_path / "o.npz", sudoku, tmp_path / "r.html", limit=3, trajectory=tmp_path / "t.npz")
    page = (tmp_path / "r.html").read_text()
    assert result["trajectory"] == "3 segments per example (t.npz)"
    assert page.count("segment by segment") == 3 and page.count("segment 1: 4 wrong") == 3
    assert page.count("segment 2: 1 wrong, 3 changed") == 3 and page.count("segment 3: 0 wrong, 1 changed") == 3
    assert 'data-wrong="1111000000000000"' in page and 'data-changed="0111000000000000"' in page
    np.savez(tmp_path / "short.npz", predictions=steps[:-1], q_halt_logits=np.zeros((len(ids) - 1, 3), np.float32),
             q_continue_logits=np.zeros((len(ids) - 1, 3), np.float32), puzzle_identifiers=ids[:-1])
    r = invoke("report", tmp_path / "o.npz", "--data", sudoku, "--trajectory", tmp_path / "short.npz")
    assert r.exit_code == 1 and "give the trajectory of the same evaluation" in r.output


def test_arc_report_shows_the_first_view_of_each_test_input(arc_build, tmp_path):
    _, ds, tasks = arc_build
    labels, ids = dataset_rows(ds)
    steps = np.stack([np.zeros_like(labels), labels], axis=1)  # nothing, then the right answer
    np.savez(tmp_path / "o.npz", predictions=labels, labels=labels, q_halt_logits=np.zeros(len(ids), np.float32),
             puzzle_identifiers=ids)
    np.savez(tmp_path / "t.npz", predictions=steps, q_halt_logits=np.zeros((len(ids), 2), np.float32),
             q_continue_logits=np.zeros((len(ids), 2), np.float32), puzzle_identifiers=ids)
    write_report(tmp_path / "o.npz", ds, tmp_path / "r.html", trajectory=tmp_path / "t.npz")
    page = (tmp_path / "r.html").read_text()
    test_inputs = sum(len(t["test"]) for t in tasks.values())
    assert page.count("its first view segment by segment") == test_inputs
    assert page.count("segment 1: no grid (empty crop)") == test_inputs
    drawn = re.findall(r'data-shape="(\d+x\d+)" data-cells="(\d*)"[^>]*></div><figcaption>segment 2: ', page)
    expected = [(f"{len(p['output'])}x{len(p['output'][0])}", "".join(str(v) for row in p["output"] for v in row))
                for t in tasks.values() for p in t["test"]]
    assert sorted(drawn) == sorted(expected)  # the right answer, de-augmented into the task's frame


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no {CHROMIUM}: `apt-get install chromium` to see the page "
                                                       f"in a headless browser")
def test_trajectory_in_a_headless_browser(tmp_path, sudoku):
    labels, ids = dataset_rows(sudoku)
    steps = np.stack([labels, labels], axis=1).astype(np.int32)
    steps[:, 0, :2] = 1 + labels[:, :2] % 4
    np.savez(tmp_path / "o.npz", predictions=labels, labels=labels, q_halt_logits=np.zeros(len(ids), np.float32),
             puzzle_identifiers=ids)
    np.savez(tmp_path / "t.npz", predictions=steps, q_halt_logits=np.zeros((len(ids), 2), np.float32),
             q_continue_logits=np.zeros((len(ids), 2), np.float32), puzzle_identifiers=ids)
    write_report(tmp_path / "o.npz", sudoku, tmp_path / "r.html", limit=1, trajectory=tmp_path / "t.npz")
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}",
                          "--dump-dom", (tmp_path / "r.html").as_uri()], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HOME": str(tmp_path)}).stdout
    assert dom.count('<table class="g sudoku">') == 5, dom[:2000]  # input, answer, prediction, 2 segments
    classes = [c.split() for c in re.findall(r'<td class="([^"]*)"', dom)]
    assert sum("x" in c for c in classes) >= 2 and sum("d" in c for c in classes) >= 2  # wrong, then changed
