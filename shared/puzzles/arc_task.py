"""One ARC task file, read and checked: `{"train": [{"input", "output"}...], "test": [...]}` with an optional
top-level "name" (shared/DESIGN.md section 6). The builder (data/arc.py), the scorer and the report read tasks here."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.puzzles.arc_augment import GRID_SIZE, NUM_COLORS

Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class ArcTask:
    """One task file: demo pairs (`train`) and test pairs, each pair (input, output) uint8 grids."""

    name: str
    path: Path
    train: list[Pair]
    test: list[Pair]
    evaluation: bool


def parse_grid(raw: Any, where: str) -> np.ndarray:
    """The grid uint8 [h, w] of `raw` (a list of rows of colours 0..9, at most 30x30); HRMError naming `where` and
    what is wrong."""
    try:
        grid = np.array(raw)
    except ValueError:
        raise HRMError(f"{where}: rows have different lengths; each grid must be a rectangle") from None
    if grid.ndim != 2 or grid.size == 0:
        raise HRMError(f"{where}: a grid must be a non-empty list of rows (2-D), got shape {grid.shape}")
    if grid.shape[0] > GRID_SIZE or grid.shape[1] > GRID_SIZE:
        raise HRMError(f"{where}: grid is {grid.shape[0]}x{grid.shape[1]}, ARC grids are at most "
                       f"{GRID_SIZE}x{GRID_SIZE}")
    # numpy reads true as 1 in a row that also holds integers: the cells are checked as JSON gave them
    if grid.dtype.kind not in "iu" or grid.min() < 0 or grid.max() >= NUM_COLORS or any(
            type(v) is bool for row in raw for v in row):
        bad = next(v for row in raw for v in row if not (type(v) is int and 0 <= v < NUM_COLORS))
        raise HRMError(f"{where}: cell value {bad!r} is not a colour (integers 0..{NUM_COLORS - 1})")
    return grid.astype(np.uint8)


def _parse_pairs(raw: object, where: str) -> list[Pair]:
    if not isinstance(raw, list):
        raise HRMError(f"{where}: expected a list of {{\"input\", \"output\"}} pairs")
    pairs = []
    for i, pair in enumerate(raw):
        if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
            raise HRMError(f"{where} pair {i}: expected an object with \"input\" and \"output\" grids")
        pairs.append((parse_grid(pair["input"], f"{where} pair {i} input"),
                      parse_grid(pair["output"], f"{where} pair {i} output")))
    return pairs


def read_arc_task(path: Path, evaluation: bool = False, complete: bool = False) -> ArcTask:
    """Read and check one task file; its name is the top-level "name" key if present, else the file stem.
    `complete` (a task to build a dataset from) also requires non-empty "train" and "test" lists."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise HRMError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); fix or remove it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HRMError(f"cannot read {path} ({e})") from None
    if not isinstance(data, dict):
        raise HRMError(f"{path}: expected an object with \"train\" and \"test\" lists of pairs")
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str) or not name:
        raise HRMError(f"{path}: \"name\" must be a non-empty string")
    for key in ("train", "test") if complete else ():
        if key not in data:
            raise HRMError(f"{path}: the task has no \"{key}\" key; a task holds \"train\" (demonstration) and "
                           f"\"test\" lists of {{\"input\", \"output\"}} pairs")
    train = _parse_pairs(data.get("train", []), f"{path}: train")
    test = _parse_pairs(data.get("test", []), f"{path}: test")
    for key, pairs in (("train", train), ("test", test)) if complete else ():
        if not pairs:
            raise HRMError(f"{path}: \"{key}\" holds no pairs; a task to learn needs at least one demonstration "
                           f"and one test pair")
    if not train and not test:
        raise HRMError(f"{path}: the task has no pairs under \"train\" or \"test\"")
    return ArcTask(name, Path(path), train, test, evaluation)
