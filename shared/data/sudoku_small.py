"""Small Sudoku datasets (4x4, 6x6 or 9x9) generated here, for tests and a quick CPU training demo.

Tokens: 0 pad, 1 blank, 2..n+1 digits 1..n; vocab n+2, seq_len n*n; one puzzle identifier
(`<blank>`, 0); one puzzle per group; every cell supervised (labels = solution + 1). Every puzzle has a unique
solution and is minimal, or, given `blanks`, has exactly that many blank cells; no puzzle appears twice, so none is
in both splits.
"""

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import SetBuilder, check_output, write_dataset
from hrm_shared.core.progress import progress
from hrm_shared.puzzles.sudoku_solver import random_puzzle

BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
# Distinct minimal puzzles by size, counted by enumerating every clue set of the 288 4x4 grids
# (25,728 with 4 clues, 58,368 with 5, 1,536 with 6); the larger sizes have far more than anyone asks for.
MINIMAL_PUZZLES = {4: 85_632}
TRIES_PER_PUZZLE = 20  # draws allowed per wanted puzzle before giving up on finding enough distinct ones


def distinct_puzzles(rng: np.random.Generator, size: int, wanted: int,
                     blanks: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `wanted` distinct random puzzles with their solutions, each [size, size] uint8 (0 blank): minimal ones,
    or ones with exactly `blanks` blank cells."""
    seen: set[bytes] = set()
    for _ in range(TRIES_PER_PUZZLE * wanted):
        puzzle, solution = random_puzzle(rng, BOXES[size], blanks)
        if blanks is not None and np.count_nonzero(puzzle == 0) != blanks:
            continue
        if puzzle.tobytes() not in seen:
            seen.add(puzzle.tobytes())
            yield puzzle, solution
            if len(seen) == wanted:
                return
    kind = "minimal" if blanks is None else f"{blanks}-blank"
    raise HRMError(f"found only {len(seen)} distinct {kind} {size}x{size} puzzles in {TRIES_PER_PUZZLE * wanted} "
                   f"draws; ask for fewer --train/--test puzzles" + ("" if blanks is None else " or fewer --blanks"))


def build_small_sudoku(out: Path, size: int, n_train: int, n_test: int, seed: int, force: bool = False,
                       blanks: int | None = None) -> dict:
    """Write `n_train` + `n_test` distinct `size` x `size` puzzles (minimal, or with `blanks` blank cells each) as a
    dataset in `out`; return a summary.

    Inputs and labels are [N, size*size] uint8 (see the module doc). The summary gives the puzzle
    counts, the mean number of blanks and the seconds taken.
    """
    if size not in BOXES:
        raise HRMError(f"--size must be one of {', '.join(map(str, BOXES))}, got {size}")
    if n_train < 1 or n_test < 1:
        raise HRMError(f"--train and --test must be at least 1, got {n_train} and {n_test}")
    if seed < 0:
        raise HRMError(f"--seed must be a non-negative integer, got {seed}")
    if blanks is not None and not 1 <= blanks < size * size:
        raise HRMError(f"--blanks must be between 1 and {size * size - 1} for {size}x{size} Sudoku, got {blanks}")
    wanted = n_train + n_test
    limit = MINIMAL_PUZZLES.get(size)
    if blanks is None and limit is not None and wanted > limit:
        raise HRMError(f"{size}x{size} Sudoku has only {limit:,} distinct minimal puzzles, but --train + --test "
                       f"asks for {wanted:,}; ask for fewer (drawing close to the limit is slow)")
    check_output(Path(out), force)
    begin = time.time()
    rng = np.random.default_rng(seed)
    puzzles = list(progress(distinct_puzzles(rng, size, wanted, blanks), label=f"Generating {size}x{size} Sudoku",
                            length=wanted))
    splits = {}
    for split, chosen in (("train", puzzles[:n_train]), ("test", puzzles[n_train:])):
        builder = SetBuilder()
        for puzzle, solution in chosen:
            builder.add_group([(0, puzzle.reshape(1, -1) + 1, solution.reshape(1, -1) + 1)])
        splits[split] = {"all": builder.build()}
    write_dataset(out, splits, vocab_size=size + 2, seq_len=size * size, identifiers=["<blank>"], force=force,
                  kind="sudoku")
    return {
        "out": str(out), "size": size, "train_puzzles": n_train, "test_puzzles": n_test,
        "mean_blanks": round(float(np.mean([np.sum(p == 0) for p, _ in puzzles])), 2),
        "seconds": round(time.time() - begin, 2),
    }
