"""Evaluation and `hrm evaluate` / `hrm solve` in each backend: metrics, saved outputs, cross-backend agreement."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from backends import tiny_weights
from helpers import invoke, make_dataset
from hrm_shared.core.checkpoint import CheckpointConfig, dataset_record
from hrm_shared.core.config import HRMConfig
from hrm_shared.core.format import SetBuilder, load_split, read_metadata, write_dataset
from hrm_shared.data.maze_generate import generate_maze_dataset
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.puzzles import maze
from hrm_shared.puzzles.render import sudoku_text
from hrm_shared.puzzles.solve import Puzzle, show_answer

IGNORE = -100


def modules(adapter):
    """(checkpoint module, evaluate module) of an adapter's backend."""
    return tuple(importlib.import_module(f"hrm_{adapter.name}.{m}") for m in ("checkpoint", "evaluate"))


def write_checkpoint(adapter, directory: Path, data: Path) -> Path:
    """A tiny float32 checkpoint for dataset `data`, written by `adapter`'s backend, with a random Q head and puzzle
    table (tests/backends.py tiny_weights) so the halting logits differ between examples."""
    metadata = read_metadata(data, "test")
    config = HRMConfig(vocab_size=metadata.vocab_size, seq_len=metadata.seq_len,
                       num_puzzle_identifiers=metadata.num_puzzle_identifiers, hidden_size=32, num_heads=1,
                       expansion=2.0, H_layers=1, L_layers=1, halt_max_steps=3, puzzle_emb_ndim=32,
                       forward_dtype="float32")
    checkpoint, _ = modules(adapter)
    checkpoint.save_checkpoint(directory, adapter.build(config, tiny_weights(config)),
                               CheckpointConfig(model=config, dataset=dataset_record(data)))
    return directory


def evaluate(adapter, directory: Path, data: Path, batch_size: int = 16):
    checkpoint, evaluation = modules(adapter)
    model, _ = checkpoint.load_checkpoint(directory, "cpu")
    return evaluation.evaluate(model, data, batch_size, keep_outputs=True)


def dataset_labels(root: Path) -> np.ndarray:
    """The test split's labels [N, seq_len] as stored (0 = ignored)."""
    _, sets = load_split(root, "test")
    return np.concatenate([np.asarray(s.labels) for s in sets.values()])


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory) -> Path:
    """4x4 Sudoku: 37 test puzzles, so batches of 16 leave a padded last batch."""
    root = tmp_path_factory.mktemp("sudoku") / "ds"
    build_small_sudoku(root, 4, 8, 37, seed=0)
    return root


@pytest.fixture(scope="module")
def mazes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("maze") / "ds"
    generate_maze_dataset(root, 2, 2, size=8, min_path=6, seed=0, workers=1)
    return root


def relabel(source: Path, out: Path, labels: np.ndarray) -> Path:
    """`source`'s test inputs with new labels [N, seq_len] (0 = ignored), one puzzle per example, as dataset `out`."""
    metadata, sets = load_split(source, "test")
    inputs = np.concatenate([np.asarray(s.inputs) for s in sets.values()])
    builder = SetBuilder()
    for i in range(len(inputs)):
        builder.add_group([(0, inputs[i:i + 1], labels[i:i + 1].astype(np.uint8))])
    split = {"all": builder.build()}
    write_dataset(out, {"train": split, "test": split}, vocab_size=metadata.vocab_size, seq_len=metadata.seq_len,
                  identifiers=["<blank>"])
    return out


def test_metrics_agree_with_saved_outputs(backend, sudoku, tmp_path):
    directory = write_checkpoint(backend, tmp_path / "ckpt", sudoku)
    _, first = evaluate(backend, directory, sudoku)
    # Relabel so that the metrics are not trivial: every other example's label is the model's own answer (some
    # cells ignored), and one example has no supervised cell at all (it must not count).
    labels = dataset_labels(sudoku).astype(np.int32)
    labels[::2] = first["predictions"][::2]
    labels[0, :5] = 0
    labels[3] = 0
    metrics, outputs = evaluate(backend, directory, relabel(sudoku, tmp_path / "relabelled", labels))
    assert {k: v.shape for k, v in outputs.items()} == {"predictions": (37, 16), "labels": (37, 16),
                                                      "q_halt_logits": (37,), "puzzle_identifiers": (37,)}
    assert outputs["predictions"].dtype == np.int32 and outputs["q_halt_logits"].dtype == np.float32
    assert np.array_equal(outputs["predictions"], first["predictions"])  # same inputs, same answers, same order
    assert np.array_equal(outputs["labels"], np.where(labels == 0, IGNORE, labels))
    supervised = outputs["labels"] != IGNORE
    rows = supervised.any(1)
    correct = (outputs["predictions"] == outputs["labels"]) & supervised
    exact = correct.sum(1) == supervised.sum(1)
    assert metrics["count"] == 36 == rows.sum()
    assert metrics["exact_accuracy"] == pytest.approx(exact[rows].mean()) and exact[rows].mean() >= 0.5
    assert metrics["accuracy"] == pytest.approx((correct.sum(1)[rows] / supervised.sum(1)[rows]).mean())
    assert metrics["q_halt_accuracy"] == pytest.approx(((outputs["q_halt_logits"] >= 0) == exact)[rows].mean())
    assert metrics["steps"] == 3


def test_backends_agree_on_every_output(both, sudoku, tmp_path):
    torch_adapter, mlx_adapter = both
    directory = write_checkpoint(torch_adapter, tmp_path / "ckpt", sudoku)
    (m_torch, o_torch), (m_mlx, o_mlx) = (evaluate(a, directory, sudoku) for a in both)
    for name in ("predictions", "labels", "puzzle_identifiers"):
        assert np.array_equal(o_torch[name], o_mlx[name]), name
    assert np.abs(o_torch["q_halt_logits"] - o_mlx["q_halt_logits"]).max() <= 1e-4
    assert np.array_equal(o_torch["q_halt_logits"] >= 0, o_mlx["q_halt_logits"] >= 0)
    assert np.ptp(o_torch["q_halt_logits"]) > 0.1  # the Q head is random: the halting logits say something
    assert m_torch == pytest.approx(m_mlx, abs=1e-5)


def test_checkpoint_written_by_one_backend_evaluates_the_same_in_the_other(both, sudoku, tmp_path):
    torch_adapter, mlx_adapter = both
    by_torch = write_checkpoint(torch_adapter, tmp_path / "torch", sudoku)
    by_mlx = write_checkpoint(mlx_adapter, tmp_path / "mlx", sudoku)
    for adapter in both:
        _, ours = evaluate(adapter, by_torch, sudoku)
        _, theirs = evaluate(adapter, by_mlx, sudoku)
        for name in ours:
            assert np.array_equal(ours[name], theirs[name]), (adapter.name, name)


def test_cli_evaluate_writes_json_and_npz(backend, sudoku, tmp_path):
    directory = write_checkpoint(backend, tmp_path / "ckpt", sudoku)
    out = tmp_path / "out"
    r = invoke("evaluate", "--backend", backend.name, directory, sudoku, "--batch-size", 10, "--device", "cpu",
               "--json", out / "metrics.json", "--save-outputs", out / "outputs.npz")
    assert r.exit_code == 0, r.output
    assert "exact_accuracy" in r.output and "count" in r.output
    report = json.loads((out / "metrics.json").read_text())
    metrics, outputs = evaluate(backend, directory, sudoku)  # another batch size: the same numbers
    assert report["metrics"] == pytest.approx(metrics, abs=1e-6)
    assert (report["backend"], report["checkpoint"], report["data"]) == (backend.name, str(directory), str(sudoku))
    saved = np.load(out / "outputs.npz")
    assert sorted(saved.files) == sorted(outputs)
    for name in outputs:
        assert np.array_equal(saved[name], outputs[name]), name
    assert np.array_equal(saved["labels"], dataset_labels(sudoku))  # dataset order; 4x4 Sudoku supervises every cell


def test_puzzle_identifiers_follow_the_dataset(backend, tmp_path):
    data = make_dataset(tmp_path / "ds", groups=3, puzzles_per_group=2, examples_per_puzzle=3, seq_len=16)
    directory = write_checkpoint(backend, tmp_path / "ckpt", data)
    _, outputs = evaluate(backend, directory, data, batch_size=4)
    _, sets = load_split(data, "test")
    s = sets["all"]
    assert np.array_equal(outputs["puzzle_identifiers"], np.repeat(s.puzzle_identifiers, np.diff(s.puzzle_indices)))
    labels = np.asarray(s.labels).astype(np.int32)
    assert np.array_equal(outputs["labels"], np.where(labels == 0, IGNORE, labels))


def test_solve_sudoku_string(backend, sudoku, tmp_path):
    r = invoke("init", tmp_path / "ckpt", "--backend", backend.name, "--preset", "tiny", "--data", sudoku,
               "--set", "hidden_size=32", "--set", "num_heads=1", "--set", "puzzle_emb_ndim=32")
    assert r.exit_code == 0, r.output
    puzzle = "1..4....3..2...."
    r = invoke("solve", "--backend", backend.name, tmp_path / "ckpt", puzzle)
    assert r.exit_code == 0, r.output
    checkpoint, evaluation = modules(backend)
    model, _ = checkpoint.load_checkpoint(tmp_path / "ckpt", "cpu")
    given = Puzzle("sudoku", np.array([1 if c == "." else int(c) + 1 for c in puzzle], np.int32))
    answer = evaluation.predict_numpy(model, given.batch())["predictions"][0]
    assert r.output.startswith(show_answer(given, answer)[0])
    assert sudoku_text(given.inputs, (2, 2)).split("\n")[1] in r.output and "answer: " in r.output


def test_solve_maze_file(backend, mazes, tmp_path):
    r = invoke("init", tmp_path / "ckpt", "--backend", backend.name, "--preset", "tiny", "--data", mazes,
               "--set", "hidden_size=32", "--set", "num_heads=1", "--set", "puzzle_emb_ndim=32")
    assert r.exit_code == 0, r.output
    _, sets = load_split(mazes, "test")
    question = np.asarray(sets["all"].inputs[0])
    (tmp_path / "maze.txt").write_text(maze.maze_to_text(question) + "\n")
    r = invoke("solve", "--backend", backend.name, tmp_path / "ckpt", tmp_path / "maze.txt")
    assert r.exit_code == 0, r.output
    assert maze.maze_to_text(question).split("\n")[0] in r.output and "answer: invalid" in r.output


def test_show_answer_judges_sudoku_and_maze(sudoku, mazes):
    _, sets = load_split(sudoku, "test")
    given = Puzzle("sudoku", np.asarray(sets["all"].inputs[0]).astype(np.int32))
    solution = np.asarray(sets["all"].labels[0]).astype(np.int32)
    text, valid = show_answer(given, solution)
    assert valid and "answer: valid (a valid solution)" in text
    given_cell = int(np.argmax(given.inputs > 1))
    changed = solution.copy()
    changed[given_cell] = 2 + (solution[given_cell] - 1) % 4
    assert "changes a given digit" in show_answer(given, changed)[0]
    blank = solution.copy()
    blank[int(np.argmax(given.inputs == 1))] = 1
    assert "incomplete" in show_answer(given, blank)[0]
    _, sets = load_split(mazes, "test")
    question, answer = (np.asarray(a[0]).astype(np.int32) for a in (sets["all"].inputs, sets["all"].labels))
    assert show_answer(Puzzle("maze", question), answer)[1]
    assert not show_answer(Puzzle("maze", question), question)[1]


def test_errors_are_one_line(sudoku, mazes, tmp_path):
    ckpt = tmp_path / "ckpt"
    assert invoke("init", ckpt, "--preset", "tiny", "--data", sudoku, "--set", "hidden_size=32",
                  "--set", "num_heads=1").exit_code == 0
    maze_ckpt = tmp_path / "maze-ckpt"
    assert invoke("init", maze_ckpt, "--preset", "tiny", "--data", mazes, "--set", "hidden_size=32",
                  "--set", "num_heads=1").exit_code == 0
    bad_maze = tmp_path / "bad.txt"
    bad_maze.write_text("#" * 8 + "\n" + "#S    G#\n" * 6 + "#" * 7 + "\n")
    other = make_dataset(tmp_path / "other", seq_len=16)
    cases = [
        (("solve", ckpt, "1..4....3..2..."), "needs 16 characters"),
        (("solve", ckpt, "1..4....3..2...x"), "may hold only the digits 1..4"),
        (("solve", maze_ckpt, "1..4....3..2...."), "give the path of a text file with 8 lines"),
        (("solve", maze_ckpt, bad_maze), "needs 8 lines of 8 characters"),
        (("evaluate", ckpt, mazes), "seq_len=16 but the dataset"),
        (("evaluate", ckpt, other), "vocab_size=6 but the dataset"),
        (("evaluate", tmp_path / "missing", sudoku), "does not exist"),
    ]
    for args, message in cases:
        r = invoke(*args)
        assert r.exit_code == 1, (args, r.output)
        assert r.output.count("\n") == 1 and r.output.startswith("Error:") and message in r.output, (args, r.output)
