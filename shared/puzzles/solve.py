"""`hrm solve`: one puzzle typed by a person -> a one-row batch; the model's answer -> text and a validity check.

A Sudoku checkpoint takes a string of n*n digits with '.' or '0' for blanks, or the path of a text file holding one
(whitespace and line breaks are ignored); a maze checkpoint takes the path of a text file with one row of `# SG`
characters per line (puzzles/typed.py reads both). The kind is the one the checkpoint's dataset named, else kinds.py
recognises it from the checkpoint's vocab_size and seq_len; a 4x4 Sudoku and a 4x4 maze share vocab 6 and seq_len
16, so for such a checkpoint an existing file means a maze.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_shared.core.config import HRMConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.iterator import IGNORE_LABEL_ID
from hrm_shared.puzzles import maze
from hrm_shared.puzzles.kinds import KINDS, kind_named, recognise
from hrm_shared.puzzles.render import SUDOKU_BOXES, sudoku_text
from hrm_shared.puzzles.show import side_by_side
from hrm_shared.puzzles.sudoku_solver import is_valid_solution
from hrm_shared.puzzles.typed import looks_like_path

UNSOLVABLE = ("hrm solve knows Sudoku (4x4, 6x6, 9x9) and maze checkpoints; this one has vocab_size {vocab_size} "
              "and seq_len {seq_len}")


@dataclass
class Puzzle:
    """What `hrm solve` was given: `kind` 'sudoku' or 'maze', `inputs` [seq_len] int32 dataset tokens."""

    kind: str
    inputs: np.ndarray

    def batch(self) -> dict[str, np.ndarray]:
        """A one-row batch as the iterators make it: inputs [1, seq_len], labels -100 [1, seq_len], identifier 0."""
        inputs = self.inputs.reshape(1, -1).astype(np.int32)
        return {"inputs": inputs, "labels": np.full_like(inputs, IGNORE_LABEL_ID),
                "puzzle_identifiers": np.zeros(1, dtype=np.int32)}


def read_puzzle(config: HRMConfig, puzzle: str, trained_on: str | None = None) -> Puzzle:
    """Parse `puzzle` for a checkpoint with `config`, trained on puzzles of kind `trained_on` (its config's dataset
    kind; None: unknown, then told from the shape as the module doc says) with that kind's reader (kinds.py): a
    Sudoku string or file, or a maze file path. HRMError for a kind this version does not know or cannot solve, a
    missing file, a bad cell, a wrong length, and when it cannot be solved: a Sudoku whose givens clash or allow no
    solution, a maze without an S->G path."""
    readers = {name: kind.read_input for name, kind in KINDS.items() if kind.read_input is not None}
    if trained_on is not None:
        kind_named(trained_on, "this checkpoint's dataset")
    among = (trained_on,) if trained_on in readers else tuple(readers)
    shape = recognise(config.vocab_size, config.seq_len, typed=puzzle, among=among, unknown=UNSOLVABLE)
    if looks_like_path(puzzle) and not Path(puzzle).is_file():
        raise HRMError(f"no such file: {puzzle}")
    return Puzzle(shape.name, readers[shape.name](puzzle, shape))


def _marked_board(puzzle: Puzzle, tokens: np.ndarray, changed: np.ndarray) -> str:
    """The board of `tokens` [seq_len] as text with '*' after each cell where `changed` [seq_len] is true: Sudoku
    in its boxed layout (the space after the digit), a maze with a mark column after every cell."""
    n = math.isqrt(tokens.size)
    if puzzle.kind == "maze":
        rows = maze.maze_to_text(tokens).split("\n")
        return "\n".join("".join(ch + ("*" if changed[r * n + c] else " ") for c, ch in enumerate(row))
                         for r, row in enumerate(rows))
    box_rows, box_cols = SUDOKU_BOXES[n]
    lines = [list(line) for line in sudoku_text(tokens, (box_rows, box_cols)).split("\n")]
    for cell in np.flatnonzero(changed).tolist():
        r, c = divmod(cell, n)
        # Line r + 1 + r // box_rows (rules above each band); column 2, then 2 per cell and 2 more per stack.
        lines[r + 1 + r // box_rows][2 + 2 * c + 2 * (c // box_cols) + 1] = "*"
    return "\n".join("".join(line) for line in lines)


def show_steps(puzzle: Puzzle, predictions: np.ndarray, q_halt: np.ndarray) -> str:
    """Each segment's answer to `puzzle`: predictions [M, seq_len] tokens and q_halt logits [M], as many boards side
    by side as fit in about 100 columns, '*' after each cell that changed since the previous segment (the first
    segment: since the input)."""
    predictions = np.asarray(predictions).reshape(len(predictions), -1)
    previous, blocks = puzzle.inputs, []
    for m, tokens in enumerate(predictions):
        blocks.append((f"{m + 1}: q_halt {q_halt[m]:+.1f}", _marked_board(puzzle, tokens, tokens != previous)))
        previous = tokens
    width = max(len(line) for _, board in blocks for line in board.split("\n")) + 4  # with side_by_side's gap
    per_line = max(1, 104 // width)
    lines = [side_by_side(blocks[i:i + per_line]) for i in range(0, len(blocks), per_line)]
    return ("\n\n".join(lines) + "\nsegment m: q_halt logit; * after a cell: it changed since the previous segment "
            "(segment 1: since the input)")


def show_answer(puzzle: Puzzle, prediction: np.ndarray) -> tuple[str, bool]:
    """(the input and the answer side by side plus a verdict line, whether the answer is valid) for the model's
    predicted tokens [seq_len]. Sudoku: a complete valid grid keeping the givens; maze: a shortest S->G path."""
    prediction = np.asarray(prediction).reshape(-1)
    if puzzle.kind == "maze":
        blocks = [("input", maze.maze_to_text(puzzle.inputs)), ("model's answer", maze.maze_to_text(prediction))]
        valid = maze.is_optimal_path(puzzle.inputs, prediction)
        verdict = "a shortest path from S to G" if valid else "not a shortest path from S to G"
    else:
        n = math.isqrt(puzzle.inputs.size)
        box = SUDOKU_BOXES[n]
        blocks = [("input", sudoku_text(puzzle.inputs, box)), ("model's answer", sudoku_text(prediction, box))]
        givens = puzzle.inputs > 1
        digits = np.where(prediction > 1, prediction - 1, 0).reshape(n, n)  # [n, n], 0 where not a digit
        if not np.all(digits):
            valid, verdict = False, "incomplete: some cells hold no digit"
        elif np.any(prediction[givens] != puzzle.inputs[givens]):
            valid, verdict = False, "changes a given digit"
        else:
            valid = is_valid_solution(digits, box)
            verdict = "a valid solution" if valid else "breaks a row, column or box rule"
    return side_by_side(blocks) + f"\nanswer: {'valid' if valid else 'invalid'} ({verdict})", valid
