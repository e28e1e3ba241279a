import json
import struct
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

from hrm_shared.app.cli import main
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split
from hrm_shared.data.arc import build_arc_dataset
from hrm_shared.data.maze_generate import generate_maze_dataset
from hrm_shared.data.sudoku_small import build_small_sudoku
from hrm_shared.puzzles.arc_augment import encode_pair
from hrm_shared.puzzles.maze import maze_to_text
from hrm_shared.puzzles.render import ARC_PALETTE, LINE, arc_ansi, arc_grid, arc_png, sudoku_text
from hrm_shared.puzzles.show import render_example


def read_png(path):
    """(width, height, RGB pixels [H, W, 3]) of an 8-bit RGB PNG, checking its chunk CRCs."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour_type) == (8, 2)
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (1 + 3 * width)
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all()
    return width, height, rows[:, 1:].reshape(height, width, 3)


def test_png_size_and_pixels(tmp_path):
    a = np.arange(6).reshape(2, 3)
    b = np.full((4, 1), 9)
    cell = 5
    arc_png([a, b], tmp_path / "sub" / "x.png", cell=cell)
    width, height, pixels = read_png(tmp_path / "sub" / "x.png")
    grid_w = lambda w: w * (cell + 1) + 1  # noqa: E731
    assert width == grid_w(3) + grid_w(1) + 3 * cell
    assert height == grid_w(4) + 2 * cell
    # Centre of a's cell (1, 2), drawn from the top-left corner of the first grid at (cell, cell).
    y, x = cell + 1 * (cell + 1) + 1 + cell // 2, cell + 2 * (cell + 1) + 1 + cell // 2
    assert (pixels[y, x] == ARC_PALETTE[a[1, 2]]).all()
    assert (pixels[cell + (cell + 1), cell + 1] == LINE).all(), "a line between rows 0 and 1"
    bx = cell + grid_w(3) + cell + 1 + cell // 2
    assert (pixels[cell + 3 * (cell + 1) + 1, bx] == ARC_PALETTE[9]).all()


def test_png_of_an_empty_prediction(tmp_path):
    arc_png([np.zeros((0, 0), np.uint8)], tmp_path / "e.png", cell=4)
    width, height, _ = read_png(tmp_path / "e.png")
    assert (width, height) == (4 + 2 + 8, 4 + 2 + 8)
    with pytest.raises(ValueError):
        arc_png([np.array([[10]])], tmp_path / "bad.png")


def test_ansi_has_one_coloured_block_per_cell():
    grid = np.array([[0, 1, 2], [7, 8, 9]])
    text = arc_ansi(grid)
    lines = text.split("\n")
    assert len(lines) == 2 and all(line.endswith("\x1b[0m") for line in lines)
    assert text.count("\x1b[48;2;") == 6
    assert lines[0].startswith("\x1b[48;2;0;0;0m  \x1b[48;2;0;116;217m  ")
    assert "\x1b[48;2;135;12;37m  " in lines[1]


def test_sudoku_text_9x9():
    digits = np.array([(r * 3 + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)])
    tokens = digits + 1
    tokens[[0, 10, 80]] = 1
    text = sudoku_text(tokens)
    lines = text.split("\n")
    assert len(lines) == 13 and lines[0] == lines[4] == lines[8] == lines[12] == "+-------+-------+-------+"
    assert lines[1] == "| . 2 3 | 4 5 6 | 7 8 9 |"
    assert lines[2] == "| 4 . 6 | 7 8 9 | 1 2 3 |"
    assert lines[11] == "| 9 1 2 | 3 4 5 | 6 7 . |"
    assert sudoku_text(tokens.reshape(9, 9)) == text


def test_sudoku_text_small_boards():
    six = sudoku_text(np.arange(36) % 7 + 1)
    assert six.split("\n")[0] == "+-------+-------+" and len(six.split("\n")) == 6 + 4
    four = sudoku_text(np.array([2, 3, 4, 5] * 4))
    assert four.split("\n")[1] == "| 1 2 | 3 4 |" and len(four.split("\n")) == 4 + 3
    assert sudoku_text(np.ones(36, int), box=(3, 2)).split("\n")[0] == "+-----+-----+-----+"
    with pytest.raises(ValueError):
        sudoku_text(np.ones(36, int), box=(4, 4))
    with pytest.raises(ValueError):
        sudoku_text(np.ones(50, int))


# ---- render_example and `hrm data show` ------------------------------------------------------------------------

def show(*args):
    return CliRunner().invoke(main, ["data", "show", *map(str, args)])


def test_render_example_sudoku(tmp_path):
    build_small_sudoku(tmp_path / "s6", size=6, n_train=4, n_test=3, seed=0)
    _, sets = load_split(tmp_path / "s6", "test")
    text = render_example(tmp_path / "s6", "test", 2)
    lines = text.split("\n")
    assert "test example 2 of 3" in lines[0] and "sudoku" in lines[0] and "<blank>" in lines[0]
    assert lines[1].split() == ["input", "label"]
    board, solution = sudoku_text(sets["all"].inputs[2], (2, 3)), sudoku_text(sets["all"].labels[2], (2, 3))
    assert lines[2:] == [f"{a}    {b}" for a, b in zip(board.split("\n"), solution.split("\n"))]
    result = show(tmp_path / "s6", "--index", 2)
    assert result.exit_code == 0 and result.output == text + "\n"


def test_render_example_maze_including_4x4_which_shares_sudoku_shapes(tmp_path):
    for size, min_path in ((4, 2), (10, 12)):
        root = tmp_path / f"m{size}"
        generate_maze_dataset(root, 2, 2, size=size, min_path=min_path, seed=0, workers=1)
        _, sets = load_split(root, "train")
        text = render_example(root, "train", 1)
        assert "maze" in text.split("\n")[0]
        question, answer = maze_to_text(sets["all"].inputs[1]), maze_to_text(sets["all"].labels[1])
        rows = text.split("\n")[2:]
        assert len(rows) == size
        for row, q, a in zip(rows, question.split("\n"), answer.split("\n")):
            assert row == f"{q:<{max(5, size)}}    {a}".rstrip()
    sudoku4 = tmp_path / "s4"
    build_small_sudoku(sudoku4, size=4, n_train=3, n_test=3, seed=0)
    assert "sudoku" in render_example(sudoku4, "train", 0).split("\n")[0]


def _arc_task(rng, shapes):
    return [{"input": rng.integers(0, 10, a).tolist(), "output": rng.integers(0, 10, b).tolist()} for a, b in shapes]


def test_render_example_arc_with_png(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("training", "evaluation"):
        (tmp_path / "raw" / sub).mkdir(parents=True)
    (tmp_path / "raw" / "training" / "t.json").write_text(
        json.dumps({"train": _arc_task(rng, [((3, 4), (5, 2))]), "test": _arc_task(rng, [((2, 2), (2, 2))])}))
    test_pairs = _arc_task(rng, [((4, 3), (2, 5))])
    (tmp_path / "raw" / "evaluation" / "e.json").write_text(
        json.dumps({"name": "evalname", "train": _arc_task(rng, [((6, 6), (6, 6))]), "test": test_pairs}))
    root = tmp_path / "arc"
    build_arc_dataset([tmp_path / "raw"], root, num_aug=2, seed=0)
    text = render_example(root, "test", 0, tmp_path / "p.png")
    lines = text.split("\n")
    assert "test example 0 of 3" in lines[0] and "puzzle evalname" in lines[0]
    assert "input 4x3" in lines[1] and "label 2x5" in lines[1]
    assert text.count("\x1b[48;2;") == 4 * 3 + 2 * 5
    first_row = [ARC_PALETTE[c] for c in test_pairs[0]["input"][0]]
    assert lines[2].startswith("".join(f"\x1b[48;2;{r};{g};{b}m  " for r, g, b in first_row))
    width, height, _ = read_png(tmp_path / "p.png")
    assert (width, height) == (3 * 17 + 1 + 5 * 17 + 1 + 3 * 16, 4 * 17 + 1 + 2 * 16)
    # Train examples sit at random offsets; the picture still shows whole grids.
    for index in range(4):
        assert "(empty)" not in render_example(root, "train", index)
    result = show(root, "--split", "train", "--index", 99)
    assert result.exit_code == 1 and "holds 9 examples" in result.output
    assert show(root, "--png", tmp_path / "q.png").exit_code == 0 and (tmp_path / "q.png").is_file()
    # Through a pipe (the test runner's output is one) the grids are digits, as they are with --no-colour.
    piped = show(root)
    assert piped.exit_code == 0 and "\x1b[" not in piped.output
    assert " ".join(str(c) for c in test_pairs[0]["input"][0]) in piped.output
    assert show(root, "--no-colour").output == piped.output


def test_arc_grid_finds_a_translated_grid():
    grid = np.arange(12, dtype=np.uint8).reshape(3, 4) % 10
    for offset in ((0, 0), (5, 7), (27, 26)):
        assert np.array_equal(arc_grid(encode_pair(grid, grid, offset)[0]), grid)
    assert arc_grid(np.zeros(900, np.uint8)).shape == (0, 0)


def test_render_example_errors(tmp_path):
    build_small_sudoku(tmp_path / "s", size=4, n_train=2, n_test=2, seed=0)
    with pytest.raises(HRMError, match="holds 2 examples"):
        render_example(tmp_path / "s", "test", 2)
    with pytest.raises(HRMError, match="ARC grids only"):
        render_example(tmp_path / "s", "test", 0, tmp_path / "x.png")
    result = show(tmp_path / "missing")
    assert result.exit_code == 1 and "does not exist" in result.output
