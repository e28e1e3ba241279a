"""Sudoku datasets from the official CSV format (shared/DESIGN.md section 6), with the reference's augmentation.

CSV: header `source,question,answer,rating`; question 81 characters with '.' for blanks, answer 81 digits.
Tokens: 0 pad, 1 blank, 2..10 digits 1..9; vocab 11, seq_len 81, one puzzle identifier.
"""

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import PuzzleSet, SetBuilder, write_dataset
from hrm_shared.core.progress import progress
from hrm_shared.puzzles.sudoku_solver import is_valid_solution, solve

CSV_HEADER = ["source", "question", "answer", "rating"]
VOCAB_SIZE = 11
SEQ_LEN = 81


@dataclass
class SudokuRows:
    """Puzzles of one CSV file: boards [N, 9, 9] uint8 (0 blank), solutions [N, 9, 9] uint8, ratings [N] int,
    and the CSV line of each row [N] for error messages."""

    boards: np.ndarray
    solutions: np.ndarray
    ratings: np.ndarray
    lines: np.ndarray
    path: Path

    def subset(self, keep: np.ndarray) -> "SudokuRows":
        return SudokuRows(self.boards[keep], self.solutions[keep], self.ratings[keep], self.lines[keep], self.path)


def read_sudoku_csv(path: Path, min_difficulty: int | None = None) -> SudokuRows:
    """Read an official Sudoku CSV, keeping rows rated at least `min_difficulty`; bad rows name their line."""
    path = Path(path)
    if not path.is_file():
        raise HRMError(f"{path} does not exist; --csv-dir must hold train.csv and test.csv")
    boards, solutions, ratings, lines = [], [], [], []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != CSV_HEADER:
            raise HRMError(f"{path}: header is {header!r}, expected {','.join(CSV_HEADER)}")
        for row in reader:
            line = reader.line_num
            if len(row) != 4:
                raise HRMError(f"{path}:{line}: expected 4 fields (source,question,answer,rating), got {len(row)}")
            _, question, answer, rating_text = row
            board, solution = _parse_row(path, line, question, answer)
            try:
                rating = int(rating_text)
            except ValueError:
                raise HRMError(f"{path}:{line}: rating {rating_text!r} is not an integer") from None
            if min_difficulty is None or rating >= min_difficulty:
                lines.append(line)
                boards.append(board)
                solutions.append(solution)
                ratings.append(rating)
    if not boards:
        raise HRMError(f"{path} has no puzzles" + ("" if min_difficulty is None else f" rated >= {min_difficulty}"))
    return SudokuRows(np.stack(boards), np.stack(solutions), np.array(ratings), np.array(lines), path)


def _parse_row(path: Path, line: int, question: str, answer: str) -> tuple[np.ndarray, np.ndarray]:
    if len(question) != 81 or len(answer) != 81:
        raise HRMError(f"{path}:{line}: question and answer must have 81 characters "
                       f"(got {len(question)} and {len(answer)})")
    if set(question) - set(".0123456789") or set(answer) - set("123456789"):
        raise HRMError(f"{path}:{line}: question may hold only '.' and digits, answer only digits 1-9")
    board = np.frombuffer(question.replace(".", "0").encode(), dtype=np.uint8).reshape(9, 9) - ord("0")
    solution = np.frombuffer(answer.encode(), dtype=np.uint8).reshape(9, 9) - ord("0")
    given = board > 0
    if np.any(board[given] != solution[given]):
        raise HRMError(f"{path}:{line}: the answer contradicts a given digit of the question")
    if not is_valid_solution(solution):
        raise HRMError(f"{path}:{line}: the answer breaks a row, column or box")
    return board, solution


def verify_unique(rows: SudokuRows) -> None:
    """Solve every question; one with no or several solutions is an error naming its CSV line (about 10 ms a row)."""
    label = f"Verifying {rows.path.name}"
    for board, line in progress(zip(rows.boards, rows.lines), label=label, length=len(rows.lines)):
        found = len(solve(board).solutions)
        if found != 1:
            raise HRMError(f"{rows.path}:{line}: the question has {'no' if found == 0 else 'several'} solutions; "
                           f"remove the row or build without --verify")


def shuffle_sudoku(rng: np.random.Generator, board: np.ndarray, solution: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One random validity-preserving transform applied to both [9, 9] grids.

    Digit permutation (0 stays blank), transpose with p 0.5, band and row-in-band shuffle, stack and
    column-in-stack shuffle: new cell (i, j) takes old cell (row_perm[i], col_perm[j]).
    """
    digit_map = np.pad(rng.permutation(np.arange(1, 10)), (1, 0)).astype(np.uint8)
    transpose = rng.random() < 0.5
    row_perm = np.concatenate([b * 3 + rng.permutation(3) for b in rng.permutation(3)])
    col_perm = np.concatenate([s * 3 + rng.permutation(3) for s in rng.permutation(3)])

    def apply(x: np.ndarray) -> np.ndarray:
        x = x.T if transpose else x
        return digit_map[x[row_perm][:, col_perm]]

    return apply(board), apply(solution)


def sudoku_set(rows: SudokuRows, num_aug: int, rng: np.random.Generator, label: str) -> PuzzleSet:
    """One group per puzzle: the puzzle itself then `num_aug` augmentations; tokens are digits + 1."""
    builder = SetBuilder()
    for board, solution in progress(zip(rows.boards, rows.solutions), label=label, length=len(rows.boards)):
        group = [(0, board[None], solution[None])]
        for _ in range(num_aug):
            b, s = shuffle_sudoku(rng, board, solution)
            group.append((0, b[None], s[None]))
        builder.add_group([(i, b.reshape(1, 81) + 1, s.reshape(1, 81) + 1) for i, b, s in group])
    return builder.build()


def build_sudoku_dataset(csv_dir: Path, out: Path, subsample_size: int | None = None,
                         min_difficulty: int | None = None, num_aug: int = 0, seed: int = 0,
                         force: bool = False, verify: bool = False) -> dict:
    """Build a dataset from `csv_dir/{train,test}.csv`: the train split subsampled (seeded) and augmented;
    `verify` solves every kept puzzle and refuses one without a unique solution.

    Returns a summary with the puzzle and example counts per split and the seconds taken.
    """
    begin = time.time()
    rng = np.random.default_rng(seed)
    train = read_sudoku_csv(Path(csv_dir) / "train.csv", min_difficulty)
    test = read_sudoku_csv(Path(csv_dir) / "test.csv", min_difficulty)
    if subsample_size is not None and subsample_size < len(train.boards):
        keep = rng.choice(len(train.boards), size=subsample_size, replace=False)
        train = train.subset(np.sort(keep))
    if verify:
        verify_unique(train)
        verify_unique(test)
    splits = {"train": {"all": sudoku_set(train, num_aug, rng, "Building train")},
              "test": {"all": sudoku_set(test, 0, rng, "Building test")}}
    write_dataset(out, splits, vocab_size=VOCAB_SIZE, seq_len=SEQ_LEN, identifiers=["<blank>"], force=force,
                  kind="sudoku")
    return {
        "out": str(out),
        "train_puzzles": len(train.boards), "train_examples": splits["train"]["all"].num_examples,
        "test_examples": splits["test"]["all"].num_examples,
        "mean_rating_train": float(train.ratings.mean()), "mean_rating_test": float(test.ratings.mean()),
        "seconds": round(time.time() - begin, 2),
    }
