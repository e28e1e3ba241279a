"""What a person types for `hrm solve` or the Python API's `solve`, read into dataset tokens: a Sudoku string (or a
text file holding one) and a maze's text (or a text file holding it), each checked to be solvable
(puzzles/kinds.py hands each kind its reader).

What looks like a path (a path separator, or a file suffix of PATH_SUFFIXES) but names no file is refused as a
missing file, not read as a puzzle string.
"""

import os
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.puzzles import maze
from hrm_shared.puzzles.sudoku_solver import parse_puzzle, solve

MAZE_INPUT_CHARS = "# SG"
PATH_SUFFIXES = (".txt", ".json", ".csv", ".npy", ".sdk", ".maze")


def read_sudoku(typed: str, box: tuple[int, int]) -> np.ndarray:
    """The tokens [n*n] int32 (1 blank, 2.. the digits) of an n x n Sudoku with boxes `box`, typed as a string or
    the path of a text file holding one (whitespace and line breaks ignored). HRMError for a bad cell, a wrong length,
    givens that clash or allow no solution."""
    text = read_text(Path(typed), "a Sudoku puzzle").split() if names_file(typed) else [typed.strip()]
    grid = parse_puzzle(check_sudoku_text("".join(text), box), box)  # [n, n], 0 blank
    if clash := _sudoku_clash(grid, box):
        raise HRMError(f"the puzzle has no solution: {clash}; correct the givens")
    if not solve(grid, box, max_solutions=1).solutions:
        raise HRMError("the puzzle has no solution: no given repeats in a row, column or box, yet the blanks "
                       "cannot be filled; correct the givens")
    return grid.reshape(-1).astype(np.int32) + 1


def read_maze_input(typed: str, size: int) -> np.ndarray:
    """The tokens [size*size] int32 of the maze `typed`: its text (several lines) or the path of a text file holding
    it (read_maze); HRMError when no path leads from S to G."""
    text = "\n" in typed
    tokens = maze_tokens(typed, "the maze", size) if text else read_maze(Path(typed), size)
    if maze.solve_maze(tokens)[1] < 0:
        where = "the maze" if text else typed
        raise HRMError(f"{where}: no path leads from S to G (walls cut them apart); give a maze with a path")
    return tokens


def looks_like_path(puzzle: str) -> bool:
    """Whether what was typed for a puzzle is meant as a file: it holds a path separator or ends in a file suffix
    (PATH_SUFFIXES)."""
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return any(sep in puzzle for sep in separators) or puzzle.lower().endswith(PATH_SUFFIXES)


def names_file(typed: str) -> bool:
    """Whether `typed` is the path of an existing file; False for text that cannot be a path (a name too long)."""
    try:
        return Path(typed).is_file()
    except (OSError, ValueError):
        return False


def check_sudoku_text(text: str, box: tuple[int, int]) -> str:
    """`text` when it is an n x n Sudoku (n = box rows * cols) as one character per cell, row-major: the digits 1..n,
    '.' or '0' for a blank. HRMError naming the first bad cell (1-based, with its row and column), else the wrong
    length."""
    n = box[0] * box[1]
    allowed = set(".0123456789"[:n + 2])
    if (bad := next((i for i, c in enumerate(text) if c not in allowed), None)) is not None:
        where = f" (row {bad // n + 1}, column {bad % n + 1})" if bad < n * n else ""
        raise HRMError(f"cell {bad + 1}{where} is {text[bad]!r}: a {n}x{n} Sudoku puzzle may hold only the digits "
                       f"1..{n} and '.' or 0 for a blank")
    if len(text) != n * n:
        raise HRMError(f"a {n}x{n} Sudoku puzzle has {n * n} cells, got {len(text)}: it needs {n * n} characters, "
                       f"one per cell ('.' or 0 for a blank)")
    return text


def read_text(path: Path, what: str) -> str:
    """The text of file `path`; HRMError when it is not text (`what` says what it should hold)."""
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise HRMError(f"{path} is not a text file; give {what}") from None


def _sudoku_clash(grid: np.ndarray, box: tuple[int, int]) -> str | None:
    """The first given digit of `grid` [n, n] (0 blank) repeated in a row, column or box (1-based, row-major), in
    words, or None."""
    br, bc = box
    n = br * bc
    boxes = grid.reshape(n // br, br, n // bc, bc).transpose(0, 2, 1, 3).reshape(n, n)
    for unit, cells in (("row", grid), ("column", grid.T), ("box", boxes)):
        for i, line in enumerate(cells):
            digits, counts = np.unique(line[line > 0], return_counts=True)
            if np.any(counts > 1):
                return f"digit {digits[counts > 1][0]} appears {counts[counts > 1][0]} times in {unit} {i + 1}"
    return None


def read_maze(path: Path, size: int) -> np.ndarray:
    """Tokens [size*size] int32 of a maze text file: `size` lines of `size` characters over `# SG`, one S, one G."""
    if not path.is_file():
        raise HRMError(f"this checkpoint solves {size}x{size} mazes: give the path of a text file with {size} "
                       f"lines of {size} characters over '{MAZE_INPUT_CHARS}'; {str(path)!r} is not a file")
    return maze_tokens(read_text(path, f"a maze of {size} lines over '{MAZE_INPUT_CHARS}'"), str(path), size)


def maze_tokens(text: str, where: str, size: int) -> np.ndarray:
    """Tokens [size*size] int32 of a maze's `text` (read from `where`, for errors): `size` lines of `size`
    characters over `# SG`, one S, one G."""
    rows = text.replace("\r\n", "\n").split("\n")
    while rows and not rows[-1]:
        rows.pop()
    bad = sorted(set("".join(rows)) - set(MAZE_INPUT_CHARS))
    if bad:
        raise HRMError(f"{where} holds {''.join(bad)!r}; a maze may hold only '{MAZE_INPUT_CHARS}' "
                       f"(wall, open, start, goal)")
    if len(rows) != size or any(len(row) != size for row in rows):
        raise HRMError(f"{where} is {len(rows)} lines of lengths {sorted({len(r) for r in rows})}; this checkpoint "
                       f"needs {size} lines of {size} characters")
    text = "".join(rows)
    if text.count("S") != 1 or text.count("G") != 1:
        raise HRMError(f"{where} needs exactly one S (start) and one G (goal), got {text.count('S')} and "
                       f"{text.count('G')}")
    return maze.text_to_tokens(text).astype(np.int32)
