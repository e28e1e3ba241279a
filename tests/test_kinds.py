"""Recognising a puzzle kind from (vocab_size, seq_len): Sudoku, mazes, ARC, the 4x4 tie-break and unknown shapes."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from helpers import invoke
from hrm_shared.app.bench import preset_data
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split, read_metadata
from hrm_shared.data.maze_generate import generate_maze_dataset
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.puzzles import maze
from hrm_shared.puzzles.kinds import (
    ARC,
    KINDS,
    SUDOKU_BOXES,
    PuzzleKind,
    dataset_kind,
    dataset_shape,
    is_arc,
    kind_named,
    recognise,
)


@pytest.mark.parametrize("n, box", [(4, (2, 2)), (6, (2, 3)), (9, (3, 3))])
def test_sudoku_sizes(n, box):
    kind = recognise(n + 2, n * n)
    assert kind == PuzzleKind("sudoku", n, n + 2, box)
    assert kind.seq_len == n * n and kind.box == SUDOKU_BOXES[n]


def test_maze_30x30_and_other_sides():
    assert recognise(6, 900) == PuzzleKind("maze", 30, 6)
    assert recognise(6, 36).name == "maze", "a 6x6 Sudoku has vocab 8, so vocab 6 with 36 cells is a maze"
    assert recognise(6, 81).side == 9


def test_arc():
    kind = recognise(12, 900)
    assert kind == ARC
    assert (kind.name, kind.side, kind.vocab_size, kind.seq_len, kind.box) == ("arc", 30, 12, 900, None)


def test_4x4_sudoku_and_maze_told_apart_by_a_label_row(tmp_path):
    build_small_sudoku(tmp_path / "s4", size=4, n_train=3, n_test=3, seed=0)
    generate_maze_dataset(tmp_path / "m4", 2, 2, size=4, min_path=2, seed=0, workers=1)
    for root, name in (("s4", "sudoku"), ("m4", "maze")):
        metadata = read_metadata(tmp_path / root, "test")
        assert (metadata.vocab_size, metadata.seq_len) == (6, 16)
        _, sets = load_split(tmp_path / root, "test")
        for label in np.asarray(sets["all"].labels):
            assert recognise(metadata.vocab_size, metadata.seq_len, label=label).name == name
    assert recognise(6, 16).name == "sudoku", "without a hint a 4x4 shape is Sudoku"


def test_4x4_label_needs_exactly_one_start_and_one_goal():
    label = np.full(16, maze.OPEN)
    label[[0, 15]] = maze.START, maze.GOAL
    assert recognise(6, 16, label=label).name == "maze"
    label[5] = maze.GOAL
    assert recognise(6, 16, label=label).name == "sudoku"


def test_4x4_told_apart_by_what_the_user_typed(tmp_path):
    path = tmp_path / "maze.txt"
    path.write_text("S  #\n #  \n    \n#  G\n")
    assert recognise(6, 16, typed=str(path)) == PuzzleKind("maze", 4, 6)
    assert recognise(6, 16, typed="1..4....3..2....") == PuzzleKind("sudoku", 4, 6, (2, 2))
    assert recognise(6, 16, typed=str(tmp_path / "missing.txt")).name == "sudoku"
    assert recognise(11, 81, typed=str(path)).name == "sudoku", "only a shared shape looks at the hint"


@pytest.mark.parametrize("vocab_size, seq_len", [(7, 16), (11, 80), (12, 899), (13, 900), (18, 256), (6, 15),
                                                 (6, 0)])
def test_unknown_shape_names_vocab_size_and_seq_len(vocab_size, seq_len):
    with pytest.raises(HRMError, match=f"vocab_size {vocab_size} and seq_len {seq_len}"):
        recognise(vocab_size, seq_len)


def test_among_and_the_message_of_the_caller():
    message = "no {vocab_size}/{seq_len}"
    with pytest.raises(HRMError, match="^no 12/900$"):
        recognise(12, 900, among=("sudoku", "maze"), unknown=message)
    assert recognise(6, 16, label=np.array([maze.START, maze.GOAL] + [maze.OPEN] * 14),
                     among=("sudoku",)).name == "sudoku"


def test_is_arc(tmp_path):
    build_small_sudoku(tmp_path / "s9", size=9, n_train=2, n_test=2, seed=0)
    metadata = read_metadata(tmp_path / "s9", "test")
    assert not is_arc(metadata)
    assert not is_arc(dataclasses.replace(metadata, vocab_size=12, seq_len=900)), "its dataset.json says sudoku"
    legacy = dataclasses.replace(metadata, kind=None)
    assert is_arc(dataclasses.replace(legacy, vocab_size=12, seq_len=900))
    assert not is_arc(dataclasses.replace(legacy, vocab_size=12, seq_len=899))


def _set_kind(root: Path, kind: str | None) -> None:
    """Write `kind` into both splits' dataset.json (None: drop it, as in a dataset built before kinds were stored)."""
    for split in ("train", "test"):
        path = root / split / "dataset.json"
        record = json.loads(path.read_text())
        record.pop("kind", None)
        path.write_text(json.dumps(record if kind is None else {**record, "kind": kind}))


def test_the_builders_write_the_kind_and_a_dataset_without_it_is_recognised_as_before(tmp_path):
    build_small_sudoku(tmp_path / "s4", size=4, n_train=3, n_test=3, seed=0)
    generate_maze_dataset(tmp_path / "m4", 2, 2, size=4, min_path=2, seed=0, workers=1)
    for root, name in (("s4", "sudoku"), ("m4", "maze")):
        assert json.loads((tmp_path / root / "test" / "dataset.json").read_text())["kind"] == name
        assert dataset_kind(tmp_path / root) == name
        _set_kind(tmp_path / root, None)
        assert read_metadata(tmp_path / root, "test").kind is None
        assert dataset_kind(tmp_path / root) == name, "the 4x4 shape told apart by a label row, as before"


def test_the_named_kind_decides_and_must_fit_the_shape(tmp_path):
    build_small_sudoku(tmp_path / "s4", size=4, n_train=3, n_test=3, seed=0)
    metadata = read_metadata(tmp_path / "s4", "test")
    label = np.array([maze.START, maze.GOAL] + [maze.OPEN] * 14)
    assert dataset_shape(metadata, label).name == "sudoku", "dataset.json names the kind: no guessing from a label"
    assert dataset_shape(dataclasses.replace(metadata, kind="maze")) == PuzzleKind("maze", 4, 6)
    with pytest.raises(HRMError, match="no arc puzzle has vocab_size 6 and seq_len 16"):
        dataset_shape(dataclasses.replace(metadata, kind="arc"), where="here")
    with pytest.raises(HRMError, match="^here holds puzzles of kind 'chess'.*knows sudoku, maze, arc"):
        dataset_shape(dataclasses.replace(metadata, kind="chess"), where="here")


def test_every_kind_record_is_complete():
    assert set(KINDS) == {"sudoku", "maze", "arc"} and kind_named("maze") is KINDS["maze"]
    assert preset_data("trm-maze") == (6, 900, 1) and preset_data("arc") == (12, 900, 1000)
    for kind in KINDS.values():
        vocab_size, seq_len, _ = kind.bench_shape
        assert kind.fits(vocab_size, seq_len).name == kind.name
        assert kind.style in ("sudoku", "maze", "arc") and kind.presets


def test_an_unknown_kind_is_refused_by_show_solve_and_report(tmp_path):
    pytest.importorskip("torch")
    root = tmp_path / "s4"
    build_small_sudoku(root, size=4, n_train=8, n_test=4, seed=0)
    checkpoint = tmp_path / "ckpt"
    done = invoke("init", checkpoint, "--backend", "torch", "--preset", "tiny", "--data", root, "--set",
                  "hidden_size=32", "--set", "num_heads=1", "--set", "puzzle_emb_ndim=32")
    assert done.exit_code == 0, done.output
    _, sets = load_split(root, "test")
    labels = np.asarray(sets["all"].labels)
    outputs = tmp_path / "outputs.npz"
    np.savez(outputs, predictions=labels, labels=labels, q_halt_logits=np.zeros(len(labels), np.float32),
             puzzle_identifiers=np.zeros(len(labels), np.int32))
    assert invoke("report", outputs, "--data", root).exit_code == 0
    _set_kind(root, "chess")
    config = checkpoint / "config.json"
    record = json.loads(config.read_text())
    config.write_text(json.dumps({**record, "dataset": {**record["dataset"], "kind": "chess"}}))
    for args in (("data", "show", root), ("solve", checkpoint, "1..4" * 4), ("report", outputs, "--data", root)):
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.count("\n") == 1 and "kind 'chess'" in result.output, (args, result.output)
        assert result.output.startswith("Error: ") and "knows sudoku, maze, arc" in result.output
