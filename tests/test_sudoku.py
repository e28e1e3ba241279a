import numpy as np
import pytest

from helpers import SUDOKU_BASE, sudoku_puzzle, write_sudoku_csv
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split, validate_dataset
from hrm_shared.data.sudoku import build_sudoku_dataset, is_valid_solution, read_sudoku_csv, shuffle_sudoku


@pytest.fixture
def csv_dir(tmp_path):
    rng = np.random.default_rng(0)
    write_sudoku_csv(tmp_path / "train.csv", [(*sudoku_puzzle(rng), r) for r in range(20)])
    write_sudoku_csv(tmp_path / "test.csv", [(*sudoku_puzzle(rng), 5) for _ in range(6)])
    return tmp_path


def test_augmentation_keeps_validity_and_consistency():
    rng = np.random.default_rng(1)
    for _ in range(200):
        board, solution = sudoku_puzzle(rng)
        b, s = shuffle_sudoku(rng, board, solution)
        assert is_valid_solution(s)
        assert (b == 0).sum() == (board == 0).sum()
        assert np.all(b[b > 0] == s[b > 0])


def test_augmentations_are_varied():
    rng = np.random.default_rng(2)
    outs = {shuffle_sudoku(rng, SUDOKU_BASE, SUDOKU_BASE)[1].tobytes() for _ in range(50)}
    assert len(outs) == 50


def test_build_counts_and_tokens(csv_dir, tmp_path):
    summary = build_sudoku_dataset(csv_dir, tmp_path / "ds", subsample_size=10, min_difficulty=5, num_aug=3, seed=0)
    assert summary["train_puzzles"] == 10 and summary["train_examples"] == 40 and summary["test_examples"] == 6
    meta, sets = load_split(tmp_path / "ds", "train")
    s = sets["all"]
    assert (meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers, meta.total_groups) == (11, 81, 1, 10)
    assert list(s.group_indices[:3]) == [0, 4, 8] and s.inputs.min() >= 1 and s.labels.min() >= 2
    for label in s.labels:
        assert is_valid_solution(label.reshape(9, 9) - 1)
    assert validate_dataset(tmp_path / "ds") == []
    ratings = read_sudoku_csv(csv_dir / "train.csv", min_difficulty=5).ratings
    assert ratings.min() == 5 and len(ratings) == 15


def test_subsample_is_seeded(csv_dir, tmp_path):
    build_sudoku_dataset(csv_dir, tmp_path / "a", subsample_size=5, seed=1)
    build_sudoku_dataset(csv_dir, tmp_path / "b", subsample_size=5, seed=1)
    build_sudoku_dataset(csv_dir, tmp_path / "c", subsample_size=5, seed=2)

    def load(d):
        return np.array(load_split(tmp_path / d, "train")[1]["all"].inputs)

    assert np.array_equal(load("a"), load("b")) and not np.array_equal(load("a"), load("c"))


@pytest.mark.parametrize("line, message", [
    ("test,123,456,1", "train.csv:3: question and answer must have 81 characters"),
    ("test,abc", "train.csv:3: expected 4 fields"),
    ("test," + "x" * 81 + "," + "1" * 81 + ",1", "train.csv:3: question may hold only"),
    ("test," + "." * 81 + "," + "1" * 81 + ",1", "train.csv:3: the answer breaks a row"),
    ("test," + "." * 81 + "," + "".join(map(str, SUDOKU_BASE.reshape(-1))) + ",hard",
     "rating 'hard' is not an integer"),
])
def test_malformed_rows_name_their_line(csv_dir, line, message):
    path = csv_dir / "train.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [line] + lines[2:]) + "\n")
    with pytest.raises(HRMError, match=message):
        read_sudoku_csv(path)


def test_wrong_header_and_missing_file(csv_dir):
    (csv_dir / "test.csv").write_text("question,answer\n")
    with pytest.raises(HRMError, match="header is"):
        read_sudoku_csv(csv_dir / "test.csv")
    with pytest.raises(HRMError, match="does not exist"):
        read_sudoku_csv(csv_dir / "nope.csv")


def test_contradicting_answer(csv_dir):
    q = "".join(map(str, SUDOKU_BASE.reshape(-1)))
    bad = q[:-1] + ("1" if q[-1] != "1" else "2")
    (csv_dir / "test.csv").write_text(f"source,question,answer,rating\nx,{bad},{q},0\n")
    with pytest.raises(HRMError, match="test.csv:2: the answer contradicts"):
        read_sudoku_csv(csv_dir / "test.csv")


def test_verify_refuses_a_puzzle_with_several_solutions(csv_dir, tmp_path):
    q = "".join(map(str, SUDOKU_BASE.reshape(-1)))
    board = SUDOKU_BASE.copy()
    board[1:] = 0  # only the first row given: many completions
    question = "".join("." if d == 0 else str(d) for d in board.reshape(-1))
    write_sudoku_csv(csv_dir / "train.csv", [(*sudoku_puzzle(np.random.default_rng(0), blanks=0), 1)])
    (csv_dir / "test.csv").write_text(f"source,question,answer,rating\nx,{q},{q},0\nx,{question},{q},0\n")
    assert build_sudoku_dataset(csv_dir, tmp_path / "ok", verify=False)["test_examples"] == 2
    with pytest.raises(HRMError, match="test.csv:3: the question has several solutions"):
        build_sudoku_dataset(csv_dir, tmp_path / "ds", verify=True)
    assert not (tmp_path / "ds").exists()
