import csv

import numpy as np
import pytest

from hrm_shared.core.errors import HRMError
from hrm_shared.data.sudoku import read_sudoku_csv
from hrm_shared.data.sudoku_extreme import build_sudoku_extreme_csv, hard_puzzle, read_pool, symmetry_key
from hrm_shared.puzzles.sudoku_solver import format_puzzle, is_valid_solution, parse_puzzle, solve

INKALA = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."
FORUM = ["98.7..6..75..4......3..8.7.5....7.3...94.........2.1..3.......1.9...5.8...52....6",
         "98.7..6..75..4......3..8.7.8....9.5..3.2..1.....4....6.7...4.3....8..4......1...2",
         "98.7..6..7.5....9..43.....78..2....6..7.1..2......48..3..9...6.....5.3.......1..9",
         "98.7..6..5...9..7...7..4...4...327....65...9.......3.11...8.5...2.........54...8.",
         "98.7..6..7.5.......4..5....3..8..9......2..1......13.42...8..93.7....2....92...6."]


def random_symmetry(rng: np.random.Generator, grid: np.ndarray, box: tuple[int, int]) -> np.ndarray:
    """A random element of the Sudoku group applied to `grid` (transpose only for square boxes)."""
    br, bc = box
    n = br * bc
    digits = np.concatenate([[0], rng.permutation(np.arange(1, n + 1))]).astype(np.uint8)
    rows = np.concatenate([b * br + rng.permutation(br) for b in rng.permutation(bc)])
    cols = np.concatenate([s * bc + rng.permutation(bc) for s in rng.permutation(br)])
    out = digits[grid[rows][:, cols]]
    return out.T if br == bc and rng.random() < 0.5 else out


@pytest.mark.parametrize("text", [INKALA, FORUM[0]])
def test_symmetry_key_is_invariant_under_the_group(text):
    rng = np.random.default_rng(0)
    grid = parse_puzzle(text)
    key = symmetry_key(grid)
    for _ in range(10):
        assert symmetry_key(random_symmetry(rng, grid, (3, 3))) == key
    assert symmetry_key(grid.T) == key


def test_symmetry_key_is_invariant_for_6x6():
    rng = np.random.default_rng(1)
    grid = np.zeros((6, 6), dtype=np.uint8)
    grid[0, :4] = [1, 2, 3, 4]
    grid[3, 1] = 5
    grid[5, 5] = 1
    key = symmetry_key(grid, (2, 3))
    assert all(symmetry_key(random_symmetry(rng, grid, (2, 3)), (2, 3)) == key for _ in range(10))


def test_symmetry_key_separates_different_puzzles():
    keys = {symmetry_key(parse_puzzle(t)) for t in [INKALA, *FORUM]}
    assert len(keys) == 1 + len(FORUM)
    weaker = parse_puzzle(INKALA)
    weaker[0, 0] = 0
    assert symmetry_key(weaker) != symmetry_key(parse_puzzle(INKALA))


def test_hard_puzzle_is_unique_and_rated():
    puzzle, solution, rating = hard_puzzle(np.random.default_rng(2), steps=3)
    result = solve(puzzle)
    assert len(result.solutions) == 1 and np.array_equal(result.solutions[0], solution)
    assert is_valid_solution(solution) and result.guesses == rating
    assert np.all(puzzle[puzzle > 0] == solution[puzzle > 0])


def write_pool(tmp_path):
    path = tmp_path / "pool.txt"
    lines = ["# a comment", "", f"{FORUM[0]}  # trailing field", f"{FORUM[1]},17", FORUM[2], FORUM[3], FORUM[4],
             FORUM[0], "." * 81, INKALA + "\r"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_pool_skips_comments_and_trailing_fields(tmp_path):
    pool = read_pool([write_pool(tmp_path)])
    assert [text for _, text in pool] == [*FORUM, FORUM[0], "." * 81, INKALA]
    assert {source for source, _ in pool} == {"pool"}


def test_build_writes_rated_unique_puzzles_split_by_symmetry(tmp_path):
    pool = write_pool(tmp_path)
    # A high target makes the pool (much harder than unclimbed generated puzzles) be drawn to its end.
    summary = build_sudoku_extreme_csv(tmp_path / "out", n_train=8, n_test=4, pools=[pool], seed=3,
                                       target_rating=1000.0, climb_steps=0, workers=1)
    assert summary["train_puzzles"] == 8 and summary["test_puzzles"] == 4
    assert summary["pool_rated"] == 8 and summary["pool_bad"] == 1 and summary["duplicates_dropped"] == 1
    assert summary["pooled_train"] + summary["pooled_test"] == 6
    rows = {}
    for split in ("train", "test"):
        with open(tmp_path / "out" / f"{split}.csv", newline="") as f:
            rows[split] = list(csv.reader(f))
        assert rows[split][0] == ["source", "question", "answer", "rating"]
        assert len(rows[split]) - 1 == summary[f"{split}_puzzles"]
        ratings = []
        for source, question, answer, rating in rows[split][1:]:
            assert source in ("pool", "generated")
            result = solve(parse_puzzle(question))
            assert [format_puzzle(s) for s in result.solutions] == [answer] and result.guesses == int(rating)
            ratings.append(int(rating))
        assert summary[f"mean_rating_{split}"] == pytest.approx(np.mean(ratings), abs=0.01)
        # The lead's reader gives back the same puzzles.
        read = read_sudoku_csv(tmp_path / "out" / f"{split}.csv")
        assert [format_puzzle(b) for b in read.boards] == [r[1] for r in rows[split][1:]]
        assert read.ratings.tolist() == ratings
    questions = [r[1] for split in rows for r in rows[split][1:]]
    assert len(set(questions)) == len(questions)
    keys = {split: {symmetry_key(parse_puzzle(r[1])) for r in rows[split][1:]} for split in rows}
    assert not keys["train"] & keys["test"]


def test_build_is_deterministic_and_independent_of_workers(tmp_path):
    kwargs = dict(n_train=6, n_test=3, pools=[write_pool(tmp_path)], seed=4, target_rating=22.0, climb_steps=0)
    build_sudoku_extreme_csv(tmp_path / "a", workers=1, **kwargs)
    build_sudoku_extreme_csv(tmp_path / "b", workers=2, **kwargs)
    for split in ("train.csv", "test.csv"):
        assert (tmp_path / "a" / split).read_bytes() == (tmp_path / "b" / split).read_bytes()
    with pytest.raises(HRMError, match="--force"):
        build_sudoku_extreme_csv(tmp_path / "a", workers=1, **kwargs)


def test_bad_pool_files_are_named(tmp_path):
    with pytest.raises(HRMError, match="does not exist"):
        read_pool([tmp_path / "missing.txt"])
    bad = tmp_path / "bad.txt"
    bad.write_text(FORUM[0] + "\n" + FORUM[1][:80] + "\n")
    with pytest.raises(HRMError, match="bad.txt:2"):
        read_pool([bad])
    with pytest.raises(HRMError, match="at least 1"):
        build_sudoku_extreme_csv(tmp_path / "out", n_train=0, n_test=1, pools=[], seed=0)
    with pytest.raises(HRMError, match="--seed"):
        build_sudoku_extreme_csv(tmp_path / "out", n_train=1, n_test=1, pools=[], seed=-1)
