"""One example of a dataset as text for `hrm data show` and `hrm demo`: its input and label, side by side.

The kind of puzzle is recognised from the metadata and a label row by kinds.py: ARC as coloured terminal blocks
(and a PNG on request), Sudoku as boxed text, mazes as `# SGo` text.
"""

import re
from pathlib import Path

import numpy as np

from hrm_shared.puzzles import maze
from hrm_shared.puzzles.arc_augment import GRID_SIZE, PAD_TOKEN, crop_prediction
from hrm_shared.core.format import load_split, read_identifiers
from hrm_shared.puzzles.kinds import recognise
from hrm_shared.puzzles.render import arc_ansi, arc_digits, arc_png, sudoku_text
from hrm_shared.core.errors import HRMError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GAP = "    "
_MAX_WIDTH = 100  # wider pictures go one under the other


def arc_grid(tokens: np.ndarray) -> np.ndarray:
    """The colour grid uint8 [h, w] in an encoded ARC sequence [900], wherever translation put it: the sequence is
    shifted so the grid's top-left corner (first non-pad row and column) is at (0, 0), then cropped."""
    canvas = np.asarray(tokens).reshape(GRID_SIZE, GRID_SIZE)
    rows, cols = np.nonzero(canvas != PAD_TOKEN)
    if not len(rows):
        return np.zeros((0, 0), dtype=np.uint8)
    shifted = np.zeros_like(canvas)
    shifted[:GRID_SIZE - rows.min(), :GRID_SIZE - cols.min()] = canvas[rows.min():, cols.min():]
    return crop_prediction(shifted)


def side_by_side(blocks: list[tuple[str, str]]) -> str:
    """Blocks (title, multi-line text) next to each other when they fit in about 100 columns, else one under the
    other; widths ignore ANSI colour codes."""
    lines = [[title] + body.split("\n") for title, body in blocks]
    widths = [max(len(_ANSI.sub("", line)) for line in block) for block in lines]
    if sum(widths) + len(_GAP) * (len(blocks) - 1) > _MAX_WIDTH:
        return "\n\n".join("\n".join(block) for block in lines)
    height = max(map(len, lines))
    rows = []
    for i in range(height):
        cells = [block[i] if i < len(block) else "" for block in lines]
        padded = [cell + " " * (width - len(_ANSI.sub("", cell))) for cell, width in zip(cells, widths)]
        rows.append(_GAP.join(padded).rstrip())
    return "\n".join(rows)


def _locate(sets: dict, index: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(input, label, puzzle identifier, total examples) of example `index` counted across the sets in order."""
    starts = np.cumsum([0] + [s.num_examples for s in sets.values()])
    if not 0 <= index < starts[-1]:
        raise HRMError(f"--index {index} is out of range: this split holds {starts[-1]} examples "
                       f"(0..{starts[-1] - 1})")
    which = int(np.searchsorted(starts, index, side="right")) - 1
    s, row = list(sets.values())[which], index - int(starts[which])
    puzzle = int(np.searchsorted(s.puzzle_indices, row, side="right")) - 1
    return np.asarray(s.inputs[row]), np.asarray(s.labels[row]), int(s.puzzle_identifiers[puzzle]), int(starts[-1])


def render_example(root: Path, split: str, index: int, png: Path | None = None, colour: bool = True) -> str:
    """Example `index` of `<root>/<split>` as text: a title line (example, count, puzzle name) and the input and
    label pictures with titles; ARC grids as coloured blocks, or digits without `colour`. For ARC, also writes both
    grids to `png` when given."""
    metadata, sets = load_split(Path(root), split)
    inputs, label, identifier, total = _locate(sets, index)
    names = read_identifiers(Path(root))
    name = names[identifier] if 0 <= identifier < len(names) else f"#{identifier}"
    kind = recognise(metadata.vocab_size, metadata.seq_len, label=label)
    if png is not None and kind.name != "arc":
        raise HRMError(f"--png draws ARC grids only; {root} holds {kind.name} puzzles")
    if kind.name == "arc":
        grids = [arc_grid(inputs), arc_grid(label)]
        draw = arc_ansi if colour else arc_digits
        blocks = [(f"{title} {g.shape[0]}x{g.shape[1]}", draw(g) if g.size else "(empty)")
                  for title, g in zip(("input", "label"), grids)]
        if png is not None:
            arc_png(grids, png)
    elif kind.name == "sudoku":
        blocks = [("input", sudoku_text(inputs, kind.box)), ("label", sudoku_text(label, kind.box))]
    else:
        blocks = [("input", maze.maze_to_text(inputs)), ("label", maze.maze_to_text(label))]
    title = f"{root} {split} example {index} of {total}: {kind.name}, puzzle {name}"
    return title + "\n" + side_by_side(blocks) + ("" if png is None else f"\nPNG written to {png}")
