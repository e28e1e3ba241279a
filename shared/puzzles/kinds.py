"""The puzzle-kind registry (Sudoku, Maze, ARC): one record per kind with all a command needs to know about it, and
the one place that tells the kind of a dataset or checkpoint.

- Sudoku: an n x n board, n in SUDOKU_BOXES (4, 6, 9 with boxes 2x2, 2x3, 3x3): seq_len n*n, vocab n+2 (0 pad,
  1 blank, 2.. the digits 1..n).
- Maze: a square grid of any side: seq_len side*side, vocab 6 (0 pad, 1..5 `# SGo`; shared/puzzles/maze.py).
- ARC: the 30x30 canvas: seq_len 900, vocab 12 (shared/puzzles/arc_augment.py).

A dataset's dataset.json names its kind (the builders in shared/data write it); one written before it did is
recognised from its vocabulary size and sequence length. Only a 4x4 Sudoku and a 4x4 maze share a shape (vocab 6,
seq_len 16). Such a shape is a maze when a label row of it holds exactly one S and one G, or when what the user
typed for a puzzle is the path of an existing file; else it is a Sudoku. A kind name this registry does not hold is
refused (kind_named) by the commands that draw, read or choose for a kind: show, solve, report, presets, bench.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import DatasetMetadata, fingerprint, load_split
from hrm_shared.puzzles import arc_augment, maze
from hrm_shared.puzzles.render import SUDOKU_BOXES, SYMBOLS, arc_ansi, arc_digits, arc_grid, arc_png, sudoku_text
from hrm_shared.puzzles.typed import names_file, read_maze_input, read_sudoku

UNKNOWN_SHAPE = ("cannot tell what puzzles a dataset with vocab_size {vocab_size} and seq_len {seq_len} holds; "
                 "`hrm data show` knows ARC, Sudoku (4x4, 6x6, 9x9) and mazes")


@dataclass(frozen=True)
class PuzzleKind:
    """One puzzle kind and the shape it needs: `name` 'sudoku', 'maze' or 'arc'; `side` of its square grid (n of an
    n x n Sudoku, the maze's side, 30 for ARC's canvas); `vocab_size` of its tokens; `box` (rows, columns) of one
    Sudoku box, None for the other kinds. Its sequences are int tokens [side * side], row-major."""

    name: str
    side: int
    vocab_size: int
    box: tuple[int, int] | None = None

    @property
    def seq_len(self) -> int:
        """Tokens per sequence: side * side."""
        return self.side * self.side


ARC = PuzzleKind("arc", arc_augment.GRID_SIZE, arc_augment.VOCAB_SIZE)


@dataclass(frozen=True)
class Kind:
    """The registry's record of one puzzle kind.

    `fits(vocab_size, seq_len)`: its PuzzleKind of that shape, None when the shape is not one of its puzzles.
    `picture(tokens [seq_len], shape, colour)`: (a size note, '' for none; the text picture) for `hrm data show`.
    `png(sequences [seq_len] each, path)`: writes them as a PNG; None when the kind has no PNG.
    `read_input(typed, shape)`: what a person typed for `hrm solve` -> tokens [seq_len] int32; None: not solvable.
    `style`: how the report page draws its grids (app/report_page.py: 'sudoku', 'maze' or 'arc'); `cells`: the
    report's character of each token (boards; ARC grids are drawn from their colours).
    `presets`: the presets `hrm train` chooses from, largest first; `choose_preset(seq_len, device)` picks one for a
    resolved device (HRMError where none is made for it).
    `bench_shape`: (vocab_size, seq_len, num_puzzle_identifiers) of the synthetic batches `hrm bench` times for the
    presets that each family's registry entry benchmarks on this kind (core/registry.py bench_presets).
    `voted`: its test examples are augmented views voted per task and scored at pass@k (puzzles/arc_vote.py).
    """

    name: str
    fits: Callable[[int, int], PuzzleKind | None]
    picture: Callable[[np.ndarray, PuzzleKind, bool], tuple[str, str]]
    png: Callable[[list[np.ndarray], Path], None] | None
    read_input: Callable[[str, PuzzleKind], np.ndarray] | None
    style: str
    cells: str
    presets: tuple[str, ...]
    choose_preset: Callable[[int, str], str]
    bench_shape: tuple[int, int, int]
    voted: bool = False

    def shape(self, vocab_size: int, seq_len: int, where: str) -> PuzzleKind:
        """Its PuzzleKind of this shape; HRMError naming `where` when its puzzles never have it."""
        if (found := self.fits(vocab_size, seq_len)) is None:
            raise HRMError(f"{where} says it holds {self.name} puzzles, but no {self.name} puzzle has vocab_size "
                           f"{vocab_size} and seq_len {seq_len}; rebuild it with `hrm data ...`")
        return found


def _square_side(seq_len: int) -> int | None:
    side = math.isqrt(max(seq_len, 0))
    return side if seq_len >= 1 and side * side == seq_len else None


def _sudoku_fits(vocab_size: int, seq_len: int) -> PuzzleKind | None:
    side = _square_side(seq_len)
    if side in SUDOKU_BOXES and vocab_size == side + 2:
        return PuzzleKind("sudoku", side, vocab_size, SUDOKU_BOXES[side])
    return None


def _maze_fits(vocab_size: int, seq_len: int) -> PuzzleKind | None:
    side = _square_side(seq_len)
    return PuzzleKind("maze", side, vocab_size) if side and vocab_size == maze.VOCAB_SIZE else None


def _arc_fits(vocab_size: int, seq_len: int) -> PuzzleKind | None:
    return ARC if (vocab_size, seq_len) == (ARC.vocab_size, ARC.seq_len) else None


def _sudoku_picture(tokens: np.ndarray, shape: PuzzleKind, colour: bool) -> tuple[str, str]:
    return "", sudoku_text(tokens, shape.box)


def _maze_picture(tokens: np.ndarray, shape: PuzzleKind, colour: bool) -> tuple[str, str]:
    return "", maze.maze_to_text(tokens)


def _arc_picture(tokens: np.ndarray, shape: PuzzleKind, colour: bool) -> tuple[str, str]:
    grid = arc_grid(tokens)
    draw = arc_ansi if colour else arc_digits
    return f"{grid.shape[0]}x{grid.shape[1]}", draw(grid) if grid.size else "(empty)"


def _arc_png(sequences: list[np.ndarray], path: Path) -> None:
    arc_png([arc_grid(tokens) for tokens in sequences], path)


def _read_sudoku(typed: str, shape: PuzzleKind) -> np.ndarray:
    return read_sudoku(typed, shape.box or SUDOKU_BOXES[shape.side])


def _read_maze(typed: str, shape: PuzzleKind) -> np.ndarray:
    return read_maze_input(typed, shape.side)


def _sudoku_preset(seq_len: int, device: str) -> str:
    if device.startswith("cuda"):
        return "sudoku"
    if seq_len < 81:
        return "demo"
    return "trm-demo-9" if device == "cpu" else "sudoku-laptop"


def _maze_preset(seq_len: int, device: str) -> str:
    if device.startswith("cuda"):
        return "maze"
    raise HRMError("no --preset given and no maze preset is made for this device: --preset maze is the "
                   "reference's recipe for an NVIDIA GPU, --preset tiny trains on a CPU; choose one")


def _arc_preset(seq_len: int, device: str) -> str:
    return "arc" if device.startswith("cuda") else "arc-laptop"


# Per kind: the presets from the largest: the reference's recipe (for an NVIDIA GPU), the one that fits a 16 GB Mac,
# the small one that trains on a CPU. ARC's many puzzle ids in its bench shape exercise the sparse puzzle-embedding
# update.
KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("sudoku", _sudoku_fits, _sudoku_picture, None, _read_sudoku, "sudoku", ".." + SYMBOLS,
         ("sudoku", "sudoku-laptop", "demo"), _sudoku_preset, (11, 81, 1)),
    Kind("maze", _maze_fits, _maze_picture, None, _read_maze, "maze", "?" + maze.CHARSET, ("maze", "tiny"),
         _maze_preset, (6, 900, 1)),
    Kind("arc", _arc_fits, _arc_picture, _arc_png, None, "arc", "", ("arc", "arc-laptop", "tiny"), _arc_preset,
         (12, 900, 1000), voted=True),
)}
KIND_NAMES = tuple(KINDS)


def kind_named(name: str, where: str = "this dataset") -> Kind:
    """The record of kind `name`; HRMError naming `where` (what said it) and the known kinds when there is none."""
    if name not in KINDS:
        raise HRMError(f"{where} holds puzzles of kind {name!r}, which this version does not know (it knows "
                       f"{', '.join(KINDS)}); rebuild it with `hrm data ...` or upgrade hrm")
    return KINDS[name]


def _fitting(vocab_size: int, seq_len: int) -> list[PuzzleKind]:
    """Every kind with this shape, in KINDS order: none, one, or a 4x4 Sudoku and a 4x4 maze."""
    return [found for kind in KINDS.values() if (found := kind.fits(vocab_size, seq_len)) is not None]


def _says_maze(label: np.ndarray | None, typed: str | None) -> bool:
    """Whether a label row holds exactly one S and one G, or `typed` is the path of an existing file or a text of
    several lines holding an S."""
    if label is not None and np.sum(label == maze.START) == 1 and np.sum(label == maze.GOAL) == 1:
        return True
    return typed is not None and (("\n" in typed and "S" in typed) or names_file(typed))


def recognise(vocab_size: int, seq_len: int, label: np.ndarray | None = None, typed: str | None = None,
              among: tuple[str, ...] = KIND_NAMES, unknown: str = UNKNOWN_SHAPE) -> PuzzleKind:
    """The kind, among the names `among`, of sequences of `seq_len` tokens in 0..vocab_size-1.

    Where a 4x4 Sudoku and a 4x4 maze both fit, it is the maze when `label` (one label row, int tokens [seq_len])
    holds exactly one S and one G or when `typed` (what the user typed for a puzzle) is the path of an existing
    file or a text of several lines holding an S, else the Sudoku. Raises HRMError with `unknown` formatted with
    vocab_size and seq_len when no kind among `among` fits.
    """
    kinds = [kind for kind in _fitting(vocab_size, seq_len) if kind.name in among]
    if not kinds:
        raise HRMError(unknown.format(vocab_size=vocab_size, seq_len=seq_len))
    if len(kinds) == 1:
        return kinds[0]
    sudoku, maze_kind = kinds
    return maze_kind if _says_maze(label, typed) else sudoku


def dataset_shape(metadata: DatasetMetadata, label: np.ndarray | None = None,
                  where: str = "this dataset") -> PuzzleKind:
    """The PuzzleKind of a dataset split with `metadata`: the kind its dataset.json names (HRMError naming `where`
    for a kind this registry does not hold, or a shape that kind never has), else recognised from its shape and
    `label` (one label row [seq_len]) as `recognise` does."""
    if metadata.kind is None:
        return recognise(metadata.vocab_size, metadata.seq_len, label=label)
    return kind_named(metadata.kind, where).shape(metadata.vocab_size, metadata.seq_len, where)


def is_arc(metadata: DatasetMetadata) -> bool:
    """Whether a dataset split with this metadata holds ARC grids: its dataset.json says so, or (a dataset without a
    kind) its shape is ARC's (vocab 12, seq_len 900)."""
    if metadata.kind is not None:
        return metadata.kind == ARC.name
    return ARC in _fitting(metadata.vocab_size, metadata.seq_len)


def dataset_kind(root: Path, split: str = "train") -> str | None:
    """The kind name of the puzzles in `<root>/<split>`: the one its dataset.json names (as written, known or not),
    else recognised from its metadata and, for the shape a 4x4 Sudoku and a 4x4 maze share, its first label row
    (memory-mapped); None when no kind fits."""
    metadata, sets = load_split(Path(root), split)
    if metadata.kind is not None:
        return metadata.kind
    if not _fitting(metadata.vocab_size, metadata.seq_len):
        return None
    label = next((np.asarray(s.labels[0]) for s in sets.values() if len(s.labels)), None)
    return recognise(metadata.vocab_size, metadata.seq_len, label=label).name


def check_checkpoint_dataset(record: dict, root: Path, checkpoint: Path) -> str | None:
    """Compare the dataset a checkpoint was trained on (`record`: its config.json's `dataset`, core/checkpoint.py
    dataset_record) with dataset `root`, whose shapes fit the model: HRMError when both puzzle kinds are known and
    differ; a warning line when the fingerprints differ; None when they agree or the record holds neither."""
    kind = dataset_kind(root, "test")
    if record.get("kind") and kind and record["kind"] != kind:
        raise HRMError(f"{checkpoint} was trained on {record['kind']} puzzles but {root} holds {kind} puzzles (of "
                       f"the same shape); give a {record['kind']} dataset")
    if record.get("fingerprint") and record["fingerprint"] != (found := fingerprint(root)):
        return (f"{root} (fingerprint {found}) is not the dataset {checkpoint} was trained on "
                f"({record.get('path', '?')}, fingerprint {record['fingerprint']}); same shapes, other puzzles")
    return None


def default_preset(kind: str | None, seq_len: int, device: str) -> str:
    """The preset `hrm train` starts from without --preset, for a dataset of puzzle `kind` (None: unknown) with
    sequences of `seq_len` tokens, on `device` (a backend's resolved device: 'cuda', 'cuda:N', 'mps', 'gpu' or
    'cpu'): the kind's choose_preset (its reference recipe on an NVIDIA GPU; its laptop preset on a Mac's GPU; on
    the CPU the presets that learn in minutes there). HRMError where no preset is made for the case (an unknown
    kind; mazes off CUDA), naming what to pass."""
    if kind is None:
        raise HRMError("no --preset given and the puzzle kind of this dataset is unknown; choose one with --preset "
                       "NAME (tiny trains in minutes on a CPU; `hrm config --preset NAME` prints one)")
    return kind_named(kind).choose_preset(seq_len, device)

