"""`hrm solve` and the Python API's `solve`: one puzzle typed by a person -> a one-row batch; the model's answer ->
text, a validity check and the answer in the puzzle's own notation (Solution).

A Sudoku checkpoint takes a string of n*n digits with '.' or '0' for blanks, or the path of a text file holding one
(whitespace and line breaks are ignored); a maze checkpoint takes the maze's text (one row of `# SG` characters per
line) or the path of a text file holding it; an ARC checkpoint takes a grid (a list of rows of colours 0..9), its
JSON text, or the path of a JSON file holding it (puzzles/typed.py reads Sudoku and maze input). The kind is the
one the checkpoint's dataset named, else kinds.py recognises it from the checkpoint's vocab_size and
seq_len; a 4x4 Sudoku and a 4x4 maze share vocab 6 and seq_len 16, so for such a checkpoint an existing file or a
text (several lines) holding an S means a maze. What looks like a path (a path separator, or a file suffix of
typed.py PATH_SUFFIXES) but names no file is refused as a missing file, not read as a puzzle string.
"""

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_shared.core.config import HRMConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.iterator import IGNORE_LABEL_ID
from hrm_shared.puzzles import maze
from hrm_shared.puzzles.arc_augment import crop_prediction, encode_grids
from hrm_shared.puzzles.arc_task import parse_grid
from hrm_shared.puzzles.kinds import KINDS, kind_named, recognise
from hrm_shared.puzzles.render import SUDOKU_BOXES, arc_digits, sudoku_text
from hrm_shared.puzzles.show import side_by_side
from hrm_shared.puzzles.sudoku_solver import is_valid_solution
from hrm_shared.puzzles.typed import looks_like_path, names_file, read_text

UNSOLVABLE = ("hrm solve knows Sudoku (4x4, 6x6, 9x9), maze and ARC checkpoints; this one has vocab_size "
              "{vocab_size} and seq_len {seq_len}")
# A puzzle as the API takes it: a Sudoku string, a maze's text, a path, or an ARC grid (rows of colours).
PuzzleInput = str | os.PathLike | Sequence[Sequence[int]]
# An answer in the puzzle's own notation: Sudoku and maze text, or an ARC grid.
Answer = str | list[list[int]]

@dataclass
class Puzzle:
    """What `hrm solve` was given: `kind` 'sudoku', 'maze' or 'arc', `inputs` [seq_len] int32 dataset tokens."""

    kind: str
    inputs: np.ndarray

    def batch(self, identifier: int = 0) -> dict[str, np.ndarray]:
        """A one-row batch as the iterators make it: inputs [1, seq_len], labels -100 [1, seq_len], puzzle
        `identifier` [1] (0: the blank puzzle, no trained embedding)."""
        inputs = self.inputs.reshape(1, -1).astype(np.int32)
        return {"inputs": inputs, "labels": np.full_like(inputs, IGNORE_LABEL_ID),
                "puzzle_identifiers": np.full(1, identifier, dtype=np.int32)}


def read_puzzle(config: HRMConfig, puzzle: PuzzleInput, trained_on: str | None = None) -> Puzzle:
    """Parse `puzzle` for a checkpoint with `config`, trained on puzzles of kind `trained_on` (its config's dataset
    kind; None: unknown, then told from the shape as the module doc says) with that kind's reader (kinds.py): a
    Sudoku string or file, a maze text or file; or an ARC grid, its JSON text or file. HRMError for a kind this
    version does not know or cannot solve, a missing file, a bad cell, a wrong length, and when it cannot be solved:
    a Sudoku whose givens clash or allow no solution, a maze without an S->G path."""
    readers = {name: kind.read_input for name, kind in KINDS.items() if kind.read_input is not None}
    if trained_on is not None:
        kind_named(trained_on, "this checkpoint's dataset")
    solvable = (*readers, "arc")
    among = (trained_on,) if trained_on in solvable else solvable
    typed = os.fspath(puzzle) if isinstance(puzzle, (str, os.PathLike)) else None
    shape = recognise(config.vocab_size, config.seq_len, typed=typed, among=among, unknown=UNSOLVABLE)
    if typed is not None and "\n" not in typed and looks_like_path(typed) and not names_file(typed):
        raise HRMError(f"no such file: {typed}")
    if shape.name == "arc":
        grid = read_arc_grid(puzzle)
        return Puzzle("arc", encode_grids(grid[None], np.zeros((1, 2), dtype=np.int64)).reshape(-1).astype(np.int32))
    if typed is None:
        raise HRMError(f"this checkpoint solves {shape.name} puzzles: give the puzzle as a string or a file path, "
                       f"not a {type(puzzle).__name__}")
    return Puzzle(shape.name, readers[shape.name](typed, shape))


def read_arc_grid(puzzle: PuzzleInput) -> np.ndarray:
    """The ARC grid uint8 [h, w] of `puzzle`: a list of rows of colours 0..9, its JSON text, or the path of a JSON
    file holding it. HRMError naming what is wrong."""
    where, raw = "the ARC grid", puzzle
    if isinstance(puzzle, (str, os.PathLike)):
        text = os.fspath(puzzle)
        if names_file(text):
            where, text = text, read_text(Path(text), "an ARC grid as JSON (a list of rows of colours 0..9)")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            raise HRMError(f"{where} is not a JSON list of rows of colours 0..9 (such as [[0, 1], [2, 3]]); this "
                           f"checkpoint solves ARC grids") from None
    return parse_grid(raw, where)


def _marked_board(puzzle: Puzzle, tokens: np.ndarray, changed: np.ndarray) -> str:
    """The board of `tokens` [seq_len] as text with '*' after each cell where `changed` [seq_len] is true: Sudoku
    in its boxed layout (the space after the digit), a maze with a mark column after every cell."""
    n = math.isqrt(tokens.size)
    if puzzle.kind == "arc":  # the grid read off the canvas, unmarked: its cells do not line up with the canvas'
        return arc_digits(crop_prediction(tokens))
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
    predicted tokens [seq_len]. Sudoku: a complete valid grid keeping the givens; maze: a shortest S->G path; ARC: a
    non-empty grid at the canvas' top left (whether it is right, only the task's own answer tells)."""
    prediction = np.asarray(prediction).reshape(-1)
    if puzzle.kind == "arc":
        grid = crop_prediction(prediction)
        blocks = [("input", arc_digits(crop_prediction(puzzle.inputs))), ("model's answer", arc_digits(grid))]
        valid = grid.size > 0
        verdict = "a grid (ARC answers are checked against the task's own)" if valid else "no grid at the top left"
    elif puzzle.kind == "maze":
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


def notation(puzzle: Puzzle, tokens: np.ndarray) -> Answer:
    """Predicted tokens [seq_len] in the puzzle's own notation: a Sudoku as one character per cell, row-major, as
    its puzzle string is written (the digits, '.' where a cell holds none); a maze as its text (`# SGo` lines); an
    ARC answer as the grid at the canvas' top left, a list of rows of colours."""
    tokens = np.asarray(tokens).reshape(-1)
    if puzzle.kind == "arc":
        return crop_prediction(tokens).tolist()
    if puzzle.kind == "maze":
        return maze.maze_to_text(tokens)
    digits = np.array(list(".." + "123456789"))
    return "".join(digits[np.clip(tokens, 0, len(digits) - 1)].tolist())


@dataclass(frozen=True)
class Solution:
    """A model's answer to one puzzle, after `segments` segments.

    `answer`: the last segment's answer in the puzzle's notation (`notation`); `text`: the input and the answer side
    by side, the verdict and the last Q-halt logit, as `hrm solve` prints them; `valid`: whether the answer is
    valid (`show_answer`); `trajectory` and `q_halt`: the answer and the halting logit after each segment (length
    `segments`)."""

    answer: Answer
    text: str
    valid: bool
    segments: int
    trajectory: list[Answer]
    q_halt: list[float]


def solution(puzzle: Puzzle, predictions: np.ndarray, q_halt: np.ndarray) -> Solution:
    """The Solution from every segment's predicted tokens [M, seq_len] and Q-halt logits [M] of one puzzle."""
    predictions = np.asarray(predictions).reshape(len(predictions), -1)
    text, valid = show_answer(puzzle, predictions[-1])
    segments = len(predictions)
    text += (f"\nq_halt logit after {segments} segments: {float(q_halt[-1]):+.3f} (> 0: the model believes its "
             f"answer)")
    return Solution(answer=notation(puzzle, predictions[-1]), text=text, valid=valid, segments=segments,
                    trajectory=[notation(puzzle, tokens) for tokens in predictions],
                    q_halt=[float(q) for q in q_halt])
