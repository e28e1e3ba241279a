import numpy as np
import pytest

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split, read_identifiers, validate_dataset
from hrm_shared.data.sudoku_small import BOXES, build_small_sudoku
from hrm_shared.puzzles.sudoku_solver import is_valid_solution, solve


@pytest.mark.parametrize("size", [4, 6])
def test_small_dataset_holds_distinct_unique_puzzles(tmp_path, size):
    summary = build_small_sudoku(tmp_path / "d", size=size, n_train=20, n_test=10, seed=0)
    assert summary["train_puzzles"] == 20 and summary["test_puzzles"] == 10
    assert validate_dataset(tmp_path / "d") == []
    assert read_identifiers(tmp_path / "d") == ["<blank>"]
    box = BOXES[size]
    contents = {}
    for split, count in (("train", 20), ("test", 10)):
        metadata, sets = load_split(tmp_path / "d", split)
        assert (metadata.vocab_size, metadata.seq_len, metadata.total_groups) == (size + 2, size * size, count)
        s = sets["all"]
        assert s.inputs.shape == (count, size * size) and s.num_puzzles == count and s.num_groups == count
        assert np.all(s.puzzle_identifiers == 0)
        inputs, labels = np.asarray(s.inputs), np.asarray(s.labels)
        assert inputs.min() >= 1 and inputs.max() <= size + 1 and labels.min() >= 2 and labels.max() <= size + 1
        for x, y in zip(inputs, labels):
            puzzle, solution = (x - 1).reshape(size, size), (y - 1).reshape(size, size)
            assert is_valid_solution(solution, box)
            given = puzzle > 0
            assert np.all(puzzle[given] == solution[given]) and not np.all(given)
            result = solve(puzzle, box)
            assert len(result.solutions) == 1 and np.array_equal(result.solutions[0], solution)
            for cell in np.flatnonzero(given):  # minimal: every clue is needed
                weaker = puzzle.copy().reshape(-1)
                weaker[cell] = 0
                assert len(solve(weaker.reshape(size, size), box).solutions) == 2
        contents[split] = {x.tobytes() for x in inputs}
        assert len(contents[split]) == count
    assert not contents["train"] & contents["test"]


def test_same_seed_same_dataset(tmp_path):
    for name in ("a", "b"):
        build_small_sudoku(tmp_path / name, size=4, n_train=5, n_test=5, seed=2)
    for split in ("train", "test"):
        a, b = load_split(tmp_path / "a", split)[1]["all"], load_split(tmp_path / "b", split)[1]["all"]
        assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.labels, b.labels)


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=5), "--size"),
    (dict(size=4, n_test=0), "at least 1"),
    (dict(size=4, seed=-1), "--seed"),
    (dict(size=4, n_train=85_000, n_test=1_000), "only 85,632 distinct minimal puzzles"),
])
def test_bad_requests_are_reported(tmp_path, kwargs, message):
    kwargs = dict(n_train=2, n_test=2, seed=0) | kwargs
    with pytest.raises(HRMError, match=message):
        build_small_sudoku(tmp_path / "d", **kwargs)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("size, blanks", [(9, 45), (9, 50), (4, 9)])
def test_puzzles_with_a_fixed_number_of_blanks_have_unique_solutions(tmp_path, size, blanks):
    build_small_sudoku(tmp_path / "d", size=size, n_train=12, n_test=4, seed=1, blanks=blanks)
    box = BOXES[size]
    for split in ("train", "test"):
        s = load_split(tmp_path / "d", split)[1]["all"]
        for x, y in zip(np.asarray(s.inputs), np.asarray(s.labels)):
            puzzle, solution = (x - 1).reshape(size, size), (y - 1).reshape(size, size)
            assert np.count_nonzero(puzzle == 0) == blanks
            result = solve(puzzle, box)
            assert len(result.solutions) == 1 and np.array_equal(result.solutions[0], solution)


@pytest.mark.parametrize("blanks, message", [(0, "between 1 and 80"), (81, "between 1 and 80"),
                                             (70, "distinct 70-blank 9x9 puzzles")])
def test_impossible_blanks_are_reported(tmp_path, blanks, message):
    with pytest.raises(HRMError, match=message):  # no 9x9 puzzle with 11 clues has a unique solution
        build_small_sudoku(tmp_path / "d", size=9, n_train=1, n_test=1, seed=0, blanks=blanks)
