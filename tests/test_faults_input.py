"""Faulty input reaches the user as a one-line `Error: ...` (exit status 1) that names the problem and its fix, never
a traceback: corrupted datasets before training and evaluation, ARC task names shaped like augmentation names, a
checkpoint meeting a dataset of another kind or build, and puzzles without a solution for `hrm solve`."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from backends import adapter, tiny_config
from helpers import TINY, invoke, make_dataset, write_arc_tasks
from hrm_shared.core.checkpoint import read_checkpoint_config
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import check_dataset, validate_dataset
from hrm_shared.core.init import init_weights
from hrm_shared.data.arc import build_arc_dataset
from hrm_shared.data.maze_generate import generate_maze_dataset
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.puzzles.arc_vote import read_test_tasks

SMALL_MODEL = ["--preset", "tiny", "--set", "hidden_size=32", "--set", "num_heads=1"]


def assert_one_line_error(result, *needles: str) -> None:
    """`result` (a CLI run) failed with status 1 and printed one `Error: ...` line holding every needle."""
    assert isinstance(result.exception, SystemExit), (result.output, result.exception)  # no traceback
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert all(needle in result.output for needle in needles), (needles, result.output)


def init(checkpoint: Path, data: Path) -> Path:
    """An untrained small checkpoint for `data` (`hrm init`)."""
    r = invoke("init", checkpoint, "--data", data, *SMALL_MODEL)
    assert r.exit_code == 0, r.output
    return checkpoint


def empty_test_split(root: Path) -> None:
    """Rewrite `root`'s test split as one set of no examples (index arrays that say so)."""
    seq_len = json.loads((root / "test" / "dataset.json").read_text())["seq_len"]
    for name in ("inputs", "labels"):
        np.save(root / "test" / f"all__{name}.npy", np.zeros((0, seq_len), np.uint8))
    for name, size in (("puzzle_identifiers", 0), ("puzzle_indices", 1), ("group_indices", 1)):
        np.save(root / "test" / f"all__{name}.npy", np.zeros(size, np.int32))


def _resave(root: Path, name: str, change) -> None:
    path = root / "train" / f"all__{name}.npy"
    np.save(path, change(np.load(path)))


def _set_id(a: np.ndarray) -> np.ndarray:
    a[0] = 999
    return a


# Item 7: each corruption, and words the error must hold (the file and what is wrong with it).
CORRUPTIONS = {
    "ids out of range": (lambda r: _resave(r, "puzzle_identifiers", _set_id),
                         ["train/all__*.npy", "puzzle_identifiers reach 999", "num_puzzle_identifiers is 73"]),
    "row counts differ": (lambda r: _resave(r, "labels", lambda a: a[:-3]),
                          ["train/all__*.npy", "inputs has 72 rows but labels has 69"]),
    "seq_len differs": (lambda r: _resave(r, "inputs", lambda a: a[:, :5]),
                        ["train/all__*.npy", "shape (72, 5), expected [N, 8]"]),
    "identifiers.json missing": (lambda r: (r / "identifiers.json").unlink(), ["identifiers.json is missing"]),
    "identifiers.json garbled": (lambda r: (r / "identifiers.json").write_text("[\"<blank>\", p1"),
                                 ["identifiers.json is not valid JSON"]),
    "identifiers.json not names": (lambda r: (r / "identifiers.json").write_text("{\"a\": 1}"),
                                   ["identifiers.json must hold a list of puzzle names"]),
    "test split empty": (empty_test_split, ["test holds no examples", "non-empty test split"]),
    "0-byte .npy": (lambda r: (r / "train" / "all__labels.npy").write_bytes(b""),
                    ["train/all__labels.npy is empty (0 bytes)"]),
    "dataset.json garbled": (lambda r: (r / "train" / "dataset.json").write_text("[1, 2]"),
                             ["train/dataset.json holds a list, not an object"]),
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, Path]:
    """(make_dataset's dataset, an untrained checkpoint for it)."""
    root = tmp_path_factory.mktemp("clean")
    data = make_dataset(root / "ds")
    return data, init(root / "ckpt", data)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_train_and_evaluate_refuse_a_corrupted_dataset(clean, tmp_path, corruption):
    data, checkpoint = clean
    corrupt, needles = CORRUPTIONS[corruption]
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    corrupt(bad)
    r = invoke("train", "--data", bad, *TINY, "--max-steps", "1", "--out", tmp_path / "run")
    assert_one_line_error(r, *needles, f"hrm data validate {bad}")
    assert not (tmp_path / "run").exists(), "nothing is written for a refused dataset"
    assert_one_line_error(invoke("evaluate", checkpoint, bad), *needles)
    r = invoke("data", "validate", bad)
    assert r.exit_code == 1 and "Aborted" not in r.output and all(n in r.output for n in needles), r.output


def test_the_check_before_training_reads_no_tokens(dataset):
    """check_dataset looks at headers and index arrays; the token scan is `hrm data validate`'s."""
    np.save(dataset / "train" / "all__labels.npy", np.full((72, 8), 9, np.uint8))
    check_dataset(dataset)
    assert any("outside the vocabulary" in p for p in validate_dataset(dataset))
    assert validate_dataset(dataset, tokens=False) == []


# Item 10: ARC task names shaped like augmentation names.

def test_arc_build_refuses_a_task_named_like_an_augmentation(tmp_path):
    raw = tmp_path / "raw"
    write_arc_tasks(raw)
    shutil.copy(raw / "evaluation" / "single.json", raw / "evaluation" / "multi_t1_0123456789.json")
    with pytest.raises(HRMError, match="multi_t1_0123456789.json: the task name 'multi_t1_0123456789' has the form "
                                       "of an augmentation of task 'multi'.*rename the task"):
        build_arc_dataset([raw], tmp_path / "ds", num_aug=1)
    r = invoke("data", "arc", "--dirs", raw, "--out", tmp_path / "ds", "--num-aug", "1")
    assert_one_line_error(r, "multi_t1_0123456789", "rename the task")
    assert not (tmp_path / "ds").exists()


def test_arc_build_refuses_such_a_name_key(tmp_path):
    raw = tmp_path / "raw"
    write_arc_tasks(raw)
    task = json.loads((raw / "evaluation" / "third.json").read_text())
    (raw / "evaluation" / "third.json").write_text(json.dumps({**task, "name": "single_t3_0987654321"}))
    with pytest.raises(HRMError, match="'single_t3_0987654321' has the form of an augmentation of task 'single'"):
        build_arc_dataset([raw], tmp_path / "ds", num_aug=1)


def test_scoring_refuses_a_dataset_whose_test_tasks_merge(arc_build, tmp_path):
    """A dataset built elsewhere with such a name: 3 test tasks would be scored as 2, so evaluation refuses it."""
    _, built, tasks = arc_build
    data = tmp_path / "ds"
    shutil.copytree(built, data)
    names = json.loads((data / "identifiers.json").read_text())
    names[names.index("single")] = "multi_t1_0123456789"
    (data / "identifiers.json").write_text(json.dumps(names))
    assert len(read_test_tasks(built)) == len(tasks) == 3
    with pytest.raises(HRMError, match="both read as task 'multi'"):
        read_test_tasks(data)
    assert_one_line_error(invoke("evaluate", init(tmp_path / "ckpt", data), data), "both read as task 'multi'",
                          "rebuild the dataset with the task renamed")


# Item 11: a checkpoint meets a dataset of another kind, another build, or an empty test split.

@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    """4x4 Sudoku builds (seeds 0 and 1), a 4x4 and a 6x6 maze set, and a checkpoint for the first Sudoku build."""
    root = tmp_path_factory.mktemp("small")
    build_small_sudoku(root / "sudoku", 4, 8, 6, seed=0)
    build_small_sudoku(root / "sudoku-other", 4, 8, 6, seed=1)
    generate_maze_dataset(root / "maze4", 2, 2, size=4, min_path=2, seed=0, workers=1)
    generate_maze_dataset(root / "maze6", 2, 2, size=6, min_path=4, seed=0, workers=1)
    found = {name: root / name for name in ("sudoku", "sudoku-other", "maze4", "maze6")}
    found["checkpoint"] = init(root / "ckpt", found["sudoku"])
    return found


def test_evaluate_refuses_a_dataset_of_another_kind(small):
    """A 4x4 Sudoku and a 4x4 maze share vocab_size, seq_len and puzzle ids: the recorded kind tells them apart."""
    assert read_checkpoint_config(small["checkpoint"]).dataset["kind"] == "sudoku"
    assert_one_line_error(invoke("evaluate", small["checkpoint"], small["maze4"]),
                          "was trained on sudoku puzzles but", "holds maze puzzles", "give a sudoku dataset")


def test_evaluate_warns_on_another_build_of_the_same_shape(small):
    r = invoke("evaluate", small["checkpoint"], small["sudoku-other"], "--batch-size", "4")
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("warning: ") and "is not the dataset" in r.stderr and "fingerprint" in r.stderr
    r = invoke("evaluate", small["checkpoint"], small["sudoku"], "--batch-size", "4")
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output


def test_evaluate_refuses_an_empty_test_split(small, tmp_path):
    data = tmp_path / "ds"
    shutil.copytree(small["sudoku"], data)
    empty_test_split(data)
    assert_one_line_error(invoke("evaluate", small["checkpoint"], data), "test holds no examples")


def write_reference_step(run: Path, pos_encodings: str) -> Path:
    """A reference run for a 4x4 Sudoku model (vocab 6, seq_len 16, one puzzle id, prefix 1): step_1 with the
    reference's prefixes and, for rope, the rotary caches some reference versions save; all_config.yaml."""
    import torch
    yaml = pytest.importorskip("yaml")

    config = tiny_config(vocab_size=6, seq_len=16, num_puzzle_identifiers=1, pos_encodings=pos_encodings)
    state = {f"_orig_mod.model.inner.{k}": torch.from_numpy(v) for k, v in init_weights(config, 0).items()}
    if pos_encodings == "rope":
        rows = config.seq_len + config.puzzle_emb_len
        state["_orig_mod.model.inner.rotary_emb.cos_cached"] = torch.ones(rows, config.head_dim)
        state["_orig_mod.model.inner.rotary_emb.sin_cached"] = torch.zeros(rows, config.head_dim)
    run.mkdir()
    torch.save(state, run / "step_1")
    arch = {k: getattr(config, k) for k in ("hidden_size", "num_heads", "expansion", "H_layers", "L_layers",
                                            "H_cycles", "L_cycles", "halt_max_steps", "halt_exploration_prob",
                                            "puzzle_emb_ndim", "pos_encodings", "forward_dtype")}
    arch["name"] = "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
    (run / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch, "data_path": "data/sudoku-4x4"}))
    return run / "step_1"


@pytest.mark.parametrize("pos_encodings, table", [("rope", "rotary_emb.cos_cached"),
                                                  ("learned", "embed_pos.embedding_weight")])
def test_official_import_refuses_a_dataset_of_another_sequence_length(small, tmp_path, pos_encodings, table):
    adapter("torch")  # the reference's step files are torch pickles
    step = write_reference_step(tmp_path / "run", pos_encodings)
    r = invoke("convert", "--from-official", step, "--data", small["maze6"], tmp_path / "ours")
    assert_one_line_error(r, f"{table} covers 17 positions, 16 after the puzzle prefix of 1", "seq_len=36",
                          "pass the dataset the checkpoint was trained on")
    assert not (tmp_path / "ours").exists()
    r = invoke("convert", "--from-official", step, "--data", small["sudoku"], tmp_path / "ours")
    assert r.exit_code == 0, r.output
    assert read_checkpoint_config(tmp_path / "ours").dataset["kind"] == "sudoku"


# Item 13: `hrm solve` with a puzzle that has no solution.

@pytest.mark.parametrize("puzzle, words", [
    ("1111111111111111", "digit 1 appears 4 times in row 1"),
    ("1...1...........", "digit 1 appears 2 times in column 1"),
    ("1....1..........", "digit 1 appears 2 times in box 1"),
    (".....123....4...", "no given repeats in a row, column or box, yet the blanks cannot be filled"),
])
def test_solve_refuses_a_sudoku_without_a_solution(small, puzzle, words):
    assert_one_line_error(invoke("solve", small["checkpoint"], puzzle), "the puzzle has no solution", words,
                          "correct the givens")


def test_solve_refuses_a_maze_without_a_path(small, tmp_path):
    checkpoint = init(tmp_path / "maze-ckpt", small["maze6"])
    walled = tmp_path / "walled.txt"
    walled.write_text("S #   \n  #   \n###   \n      \n     G\n      \n")
    assert_one_line_error(invoke("solve", checkpoint, walled), "no path leads from S to G",
                          "give a maze with a path")
