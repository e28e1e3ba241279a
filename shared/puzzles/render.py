"""Pictures of puzzles for people: Sudoku as boxed text, ARC grids (found in their encoded sequences) as coloured
terminal blocks or a PNG file.

numpy only: the PNG is written with zlib and struct. The maze text renderer lives in shared/puzzles/maze.py.
"""

import math
import struct
import zlib
from pathlib import Path

import numpy as np

from hrm_shared.core.atomic import write_file
from hrm_shared.puzzles.arc_augment import GRID_SIZE, PAD_TOKEN, crop_prediction

# The standard ARC colours 0..9: black, blue, red, green, yellow, grey, magenta, orange, sky, maroon.
ARC_PALETTE = np.array([
    (0x00, 0x00, 0x00), (0x00, 0x74, 0xD9), (0xFF, 0x41, 0x36), (0x2E, 0xCC, 0x40), (0xFF, 0xDC, 0x00),
    (0xAA, 0xAA, 0xAA), (0xF0, 0x12, 0xBE), (0xFF, 0x85, 0x1B), (0x7F, 0xDB, 0xFF), (0x87, 0x0C, 0x25),
], dtype=np.uint8)
BACKGROUND = np.array((0xFF, 0xFF, 0xFF), dtype=np.uint8)
LINE = np.array((0x55, 0x55, 0x55), dtype=np.uint8)
SYMBOLS = "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SUDOKU_BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # side n -> (rows, columns) of one box
_DEFAULT_BOXES = {**SUDOKU_BOXES, 16: (4, 4)}


def sudoku_text(tokens: np.ndarray, box: tuple[int, int] | None = None) -> str:
    """A Sudoku board as boxed text. `tokens` [n*n] (or [n, n]) use the dataset's tokens: 0 pad and 1 blank show
    as '.', 2.. the digits 1... `box` is (rows, columns) of one box; by default 2x2, 2x3, 3x3 or 4x4 by size."""
    tokens = np.asarray(tokens).reshape(-1)
    n = math.isqrt(len(tokens))
    if n * n != len(tokens) or n == 0:
        raise ValueError(f"a Sudoku board needs a square number of cells, got {len(tokens)}")
    box_rows, box_cols = box or _DEFAULT_BOXES.get(n, (0, 0))
    if not box_rows or n % box_rows or n % box_cols:
        raise ValueError(f"box {box} does not tile a {n}x{n} board; pass box=(rows, columns)")
    if tokens.min() < 0 or tokens.max() > n + 1:
        raise ValueError(f"tokens must be in 0..{n + 1} for a {n}x{n} board")
    cells = np.array(list("." + "." + SYMBOLS[:n]))[tokens].reshape(n, n)
    rule = "+" + "+".join("-" * (2 * box_cols + 1) for _ in range(n // box_cols)) + "+"
    lines = [rule]
    for r in range(n):
        stacks = (" ".join(cells[r, c:c + box_cols]) for c in range(0, n, box_cols))
        lines.append("| " + " | ".join(stacks) + " |")
        if (r + 1) % box_rows == 0:
            lines.append(rule)
    return "\n".join(lines)


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


def _check_grid(grid: np.ndarray) -> np.ndarray:
    grid = np.asarray(grid)
    if grid.ndim != 2:
        raise ValueError(f"an ARC grid must be 2-D, got shape {grid.shape}")
    if grid.size and (grid.min() < 0 or grid.max() >= len(ARC_PALETTE)):
        raise ValueError(f"ARC colours are 0..{len(ARC_PALETTE) - 1}, got values in [{grid.min()}, {grid.max()}]")
    return grid


def arc_ansi(grid: np.ndarray) -> str:
    """An ARC grid [h, w] (colours 0..9) as terminal text: two spaces per cell on a 24-bit ANSI background."""
    grid = _check_grid(grid)
    cells = [f"\x1b[48;2;{r};{g};{b}m  " for r, g, b in ARC_PALETTE.tolist()]
    return "\n".join("".join(cells[v] for v in row) + "\x1b[0m" for row in grid.tolist())


def arc_digits(grid: np.ndarray) -> str:
    """An ARC grid [h, w] (colours 0..9) as plain text, one digit per cell: for output that is not a terminal."""
    grid = _check_grid(grid)
    return "\n".join(" ".join(str(v) for v in row) for row in grid.tolist())


def _grid_pixels(grid: np.ndarray, cell: int) -> np.ndarray:
    """RGB uint8 [h*(cell+1)+1, w*(cell+1)+1, 3]: cells of `cell` pixels framed by one-pixel lines."""
    colours = ARC_PALETTE[grid] if grid.size else BACKGROUND[None, None]
    h, w = colours.shape[:2]
    ys, xs = np.arange(h * (cell + 1) + 1), np.arange(w * (cell + 1) + 1)
    rows, cols = np.clip((ys - 1) // (cell + 1), 0, h - 1), np.clip((xs - 1) // (cell + 1), 0, w - 1)
    pixels = colours[rows][:, cols]
    pixels[ys % (cell + 1) == 0] = LINE
    pixels[:, xs % (cell + 1) == 0] = LINE
    return pixels


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file (8-bit RGB, no interlace) holding the image `rgb` uint8 [H, W, 3]."""
    height, width = rgb.shape[:2]
    # Each scanline starts with filter type 0 (none).
    scanlines = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rgb.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 9))
            + chunk(b"IEND", b""))


def arc_png(grids: list[np.ndarray], path: Path, cell: int = 16) -> None:
    """Write ARC grids (each [h, w], colours 0..9) side by side, top-aligned, a cell's width apart, to a PNG file
    at `path`; each cell is `cell` pixels with a one-pixel line between cells. An empty grid shows as one blank cell."""
    if not grids:
        raise ValueError("arc_png needs at least one grid")
    if cell < 1:
        raise ValueError(f"cell must be at least 1 pixel, got {cell}")
    pictures = [_grid_pixels(_check_grid(g), cell) for g in grids]
    gap = cell
    height = max(p.shape[0] for p in pictures) + 2 * gap
    width = sum(p.shape[1] for p in pictures) + gap * (len(pictures) + 1)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    x = gap
    for picture in pictures:
        h, w = picture.shape[:2]
        canvas[gap:gap + h, x:x + w] = picture
        x += w + gap
    write_file(Path(path), png_bytes(canvas))
