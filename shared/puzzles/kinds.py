"""Puzzle kinds (Sudoku, Maze, ARC): what each needs, and the one place that recognises the kind of a dataset or
checkpoint from its vocabulary size and sequence length.

- Sudoku: an n x n board, n in SUDOKU_BOXES (4, 6, 9 with boxes 2x2, 2x3, 3x3): seq_len n*n, vocab n+2 (0 pad,
  1 blank, 2.. the digits 1..n).
- Maze: a square grid of any side: seq_len side*side, vocab 6 (0 pad, 1..5 `# SGo`; shared/puzzles/maze.py).
- ARC: the 30x30 canvas: seq_len 900, vocab 12 (shared/puzzles/arc_augment.py).

Only a 4x4 Sudoku and a 4x4 maze share a shape (vocab 6, seq_len 16). Such a shape is a maze when a label row of
it holds exactly one S and one G, or when what the user typed for a puzzle is the path of an existing file; else
it is a Sudoku.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import DatasetMetadata, fingerprint, load_split
from hrm_shared.puzzles import arc_augment, maze

SUDOKU_BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # side n -> (rows, columns) of one box
KIND_NAMES = ("sudoku", "maze", "arc")
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


def _fitting(vocab_size: int, seq_len: int) -> list[PuzzleKind]:
    """Every kind with this shape, in KIND_NAMES order: none, one, or a 4x4 Sudoku and a 4x4 maze."""
    side = math.isqrt(max(seq_len, 0))
    if seq_len < 1 or side * side != seq_len:
        return []
    kinds = []
    if side in SUDOKU_BOXES and vocab_size == side + 2:
        kinds.append(PuzzleKind("sudoku", side, vocab_size, SUDOKU_BOXES[side]))
    if vocab_size == maze.VOCAB_SIZE:
        kinds.append(PuzzleKind("maze", side, vocab_size))
    if (vocab_size, seq_len) == (ARC.vocab_size, ARC.seq_len):
        kinds.append(ARC)
    return kinds


def _says_maze(label: np.ndarray | None, typed: str | None) -> bool:
    """Whether a label row holds exactly one S and one G, or `typed` is the path of an existing file."""
    if label is not None and np.sum(label == maze.START) == 1 and np.sum(label == maze.GOAL) == 1:
        return True
    return typed is not None and Path(typed).is_file()


def recognise(vocab_size: int, seq_len: int, label: np.ndarray | None = None, typed: str | None = None,
              among: tuple[str, ...] = KIND_NAMES, unknown: str = UNKNOWN_SHAPE) -> PuzzleKind:
    """The kind, among the names `among`, of sequences of `seq_len` tokens in 0..vocab_size-1.

    Where a 4x4 Sudoku and a 4x4 maze both fit, it is the maze when `label` (one label row, int tokens [seq_len])
    holds exactly one S and one G or when `typed` (what the user typed for a puzzle) is the path of an existing
    file, else the Sudoku. Raises HRMError with `unknown` formatted with vocab_size and seq_len when no kind among
    `among` fits.
    """
    kinds = [kind for kind in _fitting(vocab_size, seq_len) if kind.name in among]
    if not kinds:
        raise HRMError(unknown.format(vocab_size=vocab_size, seq_len=seq_len))
    if len(kinds) == 1:
        return kinds[0]
    sudoku, maze_kind = kinds
    return maze_kind if _says_maze(label, typed) else sudoku


def is_arc(metadata: DatasetMetadata) -> bool:
    """Whether a dataset split with this metadata holds ARC grids (vocab 12, seq_len 900)."""
    return ARC in _fitting(metadata.vocab_size, metadata.seq_len)


def dataset_kind(root: Path, split: str = "train") -> str | None:
    """The kind name ('sudoku', 'maze', 'arc') of the puzzles in `<root>/<split>`, from its metadata and, for the
    shape a 4x4 Sudoku and a 4x4 maze share, its first label row (memory-mapped); None when no kind fits."""
    metadata, sets = load_split(Path(root), split)
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
