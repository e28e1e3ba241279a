"""ARC grid augmentations and their inverses, augmented-puzzle names, and the 30x30 sequence encoding.

Shared by the ARC builder (shared/data/arc.py) and the evaluation's voting, which undoes each view's augmentation.
Grids are 2-D uint8 arrays of colours 0..9. Sequence tokens: 0 pad, 1 end-of-grid marker, 2..11 colours 0..9.
"""

import re

import numpy as np

GRID_SIZE = 30
SEQ_LEN = GRID_SIZE * GRID_SIZE
VOCAB_SIZE = 12
PAD_TOKEN = 0
EOS_TOKEN = 1
COLOR_OFFSET = 2
NUM_COLORS = 10
NUM_DIHEDRAL = 8
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
IDENTITY_MAPPING = np.arange(NUM_COLORS, dtype=np.uint8)

_AUG_NAME = re.compile(r"^(.*)_t([0-7])_(\d{10})$")


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Dihedral transform `k` of the last two axes of `grid` [..., h, w]: 0 id, 1 rot90, 2 rot180, 3 rot270,
    4 fliplr, 5 flipud, 6 transpose, 7 anti-transpose (as np.rot90 / np.fliplr / np.flipud on a 2-D grid).
    Returns a view; [..., w, h] for k in 1, 3, 6, 7."""
    if k == 0:
        return grid
    if k == 1:
        return grid[..., ::-1].swapaxes(-1, -2)
    if k == 2:
        return grid[..., ::-1, ::-1]
    if k == 3:
        return grid.swapaxes(-1, -2)[..., ::-1]
    if k == 4:
        return grid[..., ::-1]
    if k == 5:
        return grid[..., ::-1, :]
    if k == 6:
        return grid.swapaxes(-1, -2)
    if k == 7:
        return grid[..., ::-1, ::-1].swapaxes(-1, -2)
    raise ValueError(f"dihedral id must be in 0..7, got {k}")


def inverse_dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Undo `dihedral(., k)`: `inverse_dihedral(dihedral(g, k), k) == g`."""
    return dihedral(grid, DIHEDRAL_INVERSE[k])


def augment_grid(grid: np.ndarray, k: int, mapping: np.ndarray) -> np.ndarray:
    """Recolour a grid by `mapping` [10] (new colour of each colour), then apply dihedral `k`: uint8 [h', w']."""
    return dihedral(np.asarray(mapping, dtype=np.uint8)[grid], k)


def unaugment_grid(grid: np.ndarray, k: int, mapping: np.ndarray) -> np.ndarray:
    """Undo `augment_grid(., k, mapping)`: the dihedral inverse first, then the inverse colour map; uint8."""
    inverse = np.argsort(np.asarray(mapping)).astype(np.uint8)
    return inverse[inverse_dihedral(np.asarray(grid), k)]


def aug_name(task: str, k: int, mapping: np.ndarray) -> str:
    """Puzzle name of task `task` under augmentation (k, mapping): `<task>_t<k>_<10 digits>`, or `task` itself
    for the identity (k = 0, identity mapping)."""
    mapping = np.asarray(mapping)
    if k == 0 and np.array_equal(mapping, IDENTITY_MAPPING):
        return task
    return f"{task}_t{k}_{''.join(map(str, mapping.tolist()))}"


def parse_aug_name(name: str) -> tuple[str, int, np.ndarray]:
    """Inverse of `aug_name`: (task, k, mapping uint8 [10]); a name without a valid suffix is an original task."""
    match = _AUG_NAME.match(name)
    if match:
        mapping = np.array([int(c) for c in match.group(3)], dtype=np.uint8)
        if mapping[0] == 0 and np.array_equal(np.sort(mapping), IDENTITY_MAPPING):
            return match.group(1), int(match.group(2)), mapping
    return name, 0, IDENTITY_MAPPING.copy()


def random_offsets(extents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random top-left offsets (row, col) int64 [..., 2] for boxes of `extents` (rows, cols) [..., 2], uniform over
    the positions where the box fits in 30x30."""
    return rng.integers(0, GRID_SIZE - np.asarray(extents) + 1)


def encode_grids(grids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Encode same-shape grids [m, h, w] (colours), grid i with its top-left at offsets[i] = (row, col): uint8
    [m, 30, 30] of tokens 2..11, with end markers (1) on the row just under each grid and the column just right of
    it where those lie inside 30x30, pad (0) elsewhere."""
    m, h, w = grids.shape
    offsets = np.asarray(offsets, dtype=np.int64).reshape(m, 2)
    if np.any(offsets < 0) or np.any(offsets + (h, w) > GRID_SIZE):
        raise ValueError(f"{h}x{w} grids at offsets {offsets.tolist()} do not fit in {GRID_SIZE}x{GRID_SIZE}")
    # Each grid with its marker row and column is an (h+1, w+1) patch. On a canvas one cell taller and wider
    # than 30x30 every patch fits whole, so all of them go in with one flat scatter; the extra row/column is cut.
    patch = np.zeros((m, h + 1, w + 1), dtype=np.uint8)
    patch[:, :h, :w] = grids + COLOR_OFFSET
    patch[:, h, :w] = EOS_TOKEN
    patch[:, :h, w] = EOS_TOKEN
    size = GRID_SIZE + 1
    canvas = np.zeros((m, size, size), dtype=np.uint8)
    starts = np.arange(m) * size * size + offsets[:, 0] * size + offsets[:, 1]
    cells = (np.arange(h + 1)[:, None] * size + np.arange(w + 1)).reshape(-1)
    canvas.reshape(-1)[(starts[:, None] + cells).reshape(-1)] = patch.reshape(-1)
    return canvas[:, :GRID_SIZE, :GRID_SIZE]


def encode_pair(inp: np.ndarray, out: np.ndarray, offset: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Encode an (input, output) pair of grids at the same offset: (inputs [900] uint8, labels [900] uint8)."""
    offsets = np.array([offset])
    encoded = [encode_grids(np.asarray(g, dtype=np.uint8)[None], offsets).reshape(SEQ_LEN) for g in (inp, out)]
    return encoded[0], encoded[1]


def crop_prediction(tokens: np.ndarray) -> np.ndarray:
    """The grid in a predicted sequence [900] (or [30, 30]): the largest rectangle anchored at the top-left whose
    cells are all colour tokens, as the reference scorer finds it; uint8 [h, w], [0, 0] when (0, 0) is no colour."""
    grid = np.asarray(tokens).reshape(GRID_SIZE, GRID_SIZE)
    is_colour = (grid >= COLOR_OFFSET) & (grid < COLOR_OFFSET + NUM_COLORS)
    # Colour run from column 0 in each row, narrowed by every row above: the widest rectangle of each height.
    runs = np.where(is_colour.all(axis=1), GRID_SIZE, np.argmin(is_colour, axis=1))
    widths = np.minimum.accumulate(runs)
    areas = widths * np.arange(1, GRID_SIZE + 1)
    rows = int(np.argmax(areas)) + 1
    if areas[rows - 1] == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    return (grid[:rows, :widths[rows - 1]] - COLOR_OFFSET).astype(np.uint8)
