"""One example of a dataset as text for `hrm data show` and `hrm demo`: its input and label, side by side.

The kind of puzzle comes from kinds.py (named in dataset.json, or recognised from the metadata and a label row),
and its record draws it: ARC as coloured terminal blocks (and a PNG on request), Sudoku as boxed text, mazes as
`# SGo` text.
"""

import re
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split, read_identifiers
from hrm_shared.puzzles.kinds import dataset_shape, kind_named

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GAP = "    "
_MAX_WIDTH = 100  # wider pictures go one under the other


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
    label pictures with titles, drawn by the kind's record; ARC grids as coloured blocks, or digits without
    `colour`. For a kind with a PNG (ARC), also writes both to `png` when given. HRMError for an unknown kind."""
    metadata, sets = load_split(Path(root), split)
    inputs, label, identifier, total = _locate(sets, index)
    names = read_identifiers(Path(root))
    name = names[identifier] if 0 <= identifier < len(names) else f"#{identifier}"
    shape = dataset_shape(metadata, label, str(root))
    kind = kind_named(shape.name)
    if png is not None and kind.png is None:
        raise HRMError(f"--png draws ARC grids only; {root} holds {kind.name} puzzles")
    blocks = []
    for title, tokens in (("input", inputs), ("label", label)):
        size, picture = kind.picture(tokens, shape, colour)
        blocks.append((f"{title} {size}".rstrip(), picture))
    if png is not None and kind.png is not None:
        kind.png([inputs, label], png)
    title = f"{root} {split} example {index} of {total}: {shape.name}, puzzle {name}"
    return title + "\n" + side_by_side(blocks) + ("" if png is None else f"\nPNG written to {png}")
