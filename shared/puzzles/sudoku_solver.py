"""A bitmask Sudoku solver and puzzle generator in pure Python, generic over the box shape.

Grids are np.ndarray [n, n] uint8 with 0 for a blank and digits 1..n, n = rows * cols of a box:
box (2, 2) is 4x4 Sudoku, (2, 3) is 6x6, (3, 3) is 9x9.

The solver propagates naked singles and hidden singles to a fixed point, then branches on a cell
with the fewest candidates (first such cell in row-major order), trying its digits in increasing order.

Rating (ours): `SolveResult.guesses` counts the guesses made while searching the whole tree for up
to `max_solutions` solutions. At a branching cell every candidate tried except the last is a guess;
the last one needs no guess, because by then the others have been ruled out (a 2-candidate cell whose
both branches are explored costs one guess). A puzzle solved by singles alone rates 0. This plays the
role of the tdoku backtrack count that rates Sudoku-Extreme; tdoku also propagates box-line
interactions, so on the same puzzle our count tends to be higher. Like tdoku's, our count depends on
the branching order, so puzzles equivalent under the Sudoku symmetries can rate differently.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from operator import itemgetter
from typing import NamedTuple

import numpy as np

from hrm_shared.core.errors import HRMError


@dataclass
class SolveResult:
    """Solutions found ([n, n] uint8 each, at most `max_solutions`) and the guesses made to find them."""

    solutions: list[np.ndarray]
    guesses: int


class _Geometry(NamedTuple):
    """Lookup tables for one box shape; units are numbered rows, then columns, then boxes."""

    n: int
    full: int                                   # the candidate mask with all n digits
    peers: list[tuple[int, ...]]                # cells sharing a unit with each cell
    units: list[tuple[tuple[int, ...], Callable]]  # (cells, itemgetter of those cells)
    unit_masks: list[int]                       # per cell, the bit set of its 3 units
    cell_units: list[tuple[int, ...]]           # per cell, its row, column and box unit
    unit_of_bit: dict[int, int]                 # 1 << u -> u


@cache
def _geometry(box: tuple[int, int]) -> _Geometry:
    br, bc = box
    n = br * bc
    rows = [tuple(r * n + c for c in range(n)) for r in range(n)]
    cols = [tuple(r * n + c for r in range(n)) for c in range(n)]
    boxes = [tuple((r0 + i) * n + c0 + j for i in range(br) for j in range(bc))
             for r0 in range(0, n, br) for c0 in range(0, n, bc)]
    units = rows + cols + boxes
    peers = [tuple(sorted({p for u in units if cell in u for p in u} - {cell})) for cell in range(n * n)]
    cell_units = [tuple(k for k, u in enumerate(units) if cell in u) for cell in range(n * n)]
    unit_masks = [sum(1 << k for k in ks) for ks in cell_units]
    return _Geometry(n, (1 << n) - 1, peers, [(u, itemgetter(*u)) for u in units], unit_masks, cell_units,
                     {1 << k: k for k in range(len(units))})


def _check_grid(grid: np.ndarray, box: tuple[int, int]) -> np.ndarray:
    br, bc = box
    n = br * bc
    grid = np.asarray(grid)
    if grid.shape != (n, n):
        raise HRMError(f"a Sudoku grid with box {br}x{bc} must have shape ({n}, {n}), got {grid.shape}")
    if grid.size and (grid.min() < 0 or grid.max() > n):
        raise HRMError(f"a {n}x{n} Sudoku grid holds 0 (blank) and digits 1..{n}, got values up to {grid.max()}")
    return grid


def _initial(flat: list[int], geo: _Geometry) -> tuple[list[int], list[int]] | None:
    """Candidates of each cell given the clues of `flat` (0 blank) and the blanks left with one; None on a clash."""
    used = []
    for _, get in geo.units:
        m = 0
        for v in get(flat):
            if v:
                bit = 1 << (v - 1)
                if m & bit:
                    return None
                m |= bit
        used.append(m)
    cands, singles = [], []
    for cell, v in enumerate(flat):
        if v:
            cands.append(1 << (v - 1))
            continue
        a, b, c = geo.cell_units[cell]
        m = geo.full & ~(used[a] | used[b] | used[c])
        if not m:
            return None
        if not m & (m - 1):
            singles.append(cell)
        cands.append(m)
    return cands, singles


def _propagate(cands: list[int], queue: list[int], dirty: int, geo: _Geometry) -> bool:
    """Apply naked and hidden singles in place until nothing changes; False on a contradiction.

    `queue`: cells fixed to one digit not yet removed from their peers. `dirty`: bit set of the units
    that lost candidates since they were last scanned for hidden singles (the others cannot have any).
    """
    _, full, peers, units, unit_masks, _, unit_of_bit = geo
    while True:
        while queue:
            cell = queue.pop()
            bit = cands[cell]
            for p in peers[cell]:
                m = cands[p]
                if m & bit:
                    m ^= bit
                    if not m:
                        return False
                    cands[p] = m
                    dirty |= unit_masks[p]
                    if not m & (m - 1):
                        queue.append(p)
        scan, dirty = dirty, 0
        while scan:
            low = scan & -scan
            scan ^= low
            unit, get = units[unit_of_bit[low]]
            values = get(cands)
            once = twice = 0
            for m in values:
                twice |= once & m
                once |= m
            if once != full:
                return False
            hidden = once & ~twice
            if hidden:
                for cell, m in zip(unit, values):
                    h = m & hidden
                    if h and h != m:
                        if h & (h - 1):
                            return False
                        cands[cell] = h
                        queue.append(cell)
                        dirty |= unit_masks[cell]
                    elif h & (h - 1):
                        return False
        if not queue:
            return True


def _to_grid(cands: list[int], n: int) -> np.ndarray:
    return np.array([m.bit_length() for m in cands], dtype=np.uint8).reshape(n, n)


def _branch_cell(cands: list[int]) -> int:
    """A cell with the fewest candidates (>= 2), or -1 when every cell is fixed."""
    best, best_count = -1, 1 << 30
    for i, m in enumerate(cands):
        if m & (m - 1):
            c = m.bit_count()
            if c < best_count:
                best, best_count = i, c
                if c == 2:
                    break
    return best


def _solvable(cands: list[int], queue: list[int], dirty: int, geo: _Geometry) -> bool:
    """True when the candidates (changed in place) admit at least one solution."""
    if not _propagate(cands, queue, dirty, geo):
        return False
    cell = _branch_cell(cands)
    if cell < 0:
        return True
    m = cands[cell]
    while m:
        bit = m & -m
        m ^= bit
        child = cands.copy()
        child[cell] = bit
        if _solvable(child, [cell], geo.unit_masks[cell], geo):
            return True
    return False


def solve(grid: np.ndarray, box: tuple[int, int] = (3, 3), max_solutions: int = 2) -> SolveResult:
    """Search `grid` [n, n] (0 blank) for up to `max_solutions` solutions and count the guesses (module doc)."""
    geo = _geometry(tuple(box))
    flat = _check_grid(grid, box).reshape(-1).tolist()
    found: list[list[int]] = []
    guesses = 0

    def search(cands: list[int], queue: list[int], dirty: int) -> None:
        nonlocal guesses
        if not _propagate(cands, queue, dirty, geo):
            return
        cell = _branch_cell(cands)
        if cell < 0:
            found.append(cands)
            return
        m = cands[cell]
        while m and len(found) < max_solutions:
            bit = m & -m
            m ^= bit
            if m:
                guesses += 1
            child = cands.copy()
            child[cell] = bit
            search(child, [cell], geo.unit_masks[cell])

    start = _initial(flat, geo)
    if max_solutions > 0 and start is not None:
        search(*start, (1 << len(geo.units)) - 1)
    return SolveResult(solutions=[_to_grid(s, geo.n) for s in found], guesses=guesses)


def has_unique_solution(grid: np.ndarray, box: tuple[int, int] = (3, 3)) -> bool:
    """True when `grid` [n, n] has exactly one solution."""
    return len(solve(grid, box, max_solutions=2).solutions) == 1


def random_solution(rng: np.random.Generator, box: tuple[int, int] = (3, 3)) -> np.ndarray:
    """A random complete grid [n, n] uint8: search the empty grid trying digits in a random order."""
    geo = _geometry(tuple(box))

    def search(cands: list[int], queue: list[int], dirty: int) -> list[int] | None:
        if not _propagate(cands, queue, dirty, geo):
            return None
        cell = _branch_cell(cands)
        if cell < 0:
            return cands
        for d in rng.permutation(geo.n).tolist():
            if cands[cell] >> d & 1:
                child = cands.copy()
                child[cell] = 1 << d
                result = search(child, [cell], geo.unit_masks[cell])
                if result is not None:
                    return result
        return None

    cands = search([geo.full] * (geo.n * geo.n), [], (1 << len(geo.units)) - 1)
    assert cands is not None, "the empty grid always has a solution"
    return _to_grid(cands, geo.n)


def remove_clues(solution: np.ndarray, rng: np.random.Generator, box: tuple[int, int] = (3, 3),
                 start: np.ndarray | None = None, blanks: int | None = None) -> np.ndarray:
    """Blank the clues of `start` (default: the full `solution`) in random order while the solution stays unique.

    `start` [n, n] must have `solution` as its only solution. Returns a puzzle [n, n] uint8 with a unique
    solution: minimal (blanking any remaining clue would allow a second solution; more blanks never remove
    solutions, so one pass suffices), or, given `blanks`, one that stops once it has that many blank cells (fewer
    when the minimal puzzle reached on the way has fewer).
    """
    geo = _geometry(tuple(box))
    flat = np.array(solution if start is None else start, dtype=np.uint8).reshape(-1).tolist()
    empty = flat.count(0)
    for cell in rng.permutation(np.flatnonzero(flat)).tolist():
        if blanks is not None and empty >= blanks:
            break
        digit = flat[cell]
        flat[cell] = 0
        # The puzzle was unique, so a second solution would have to differ at `cell`: look for one there.
        initial = _initial(flat, geo)
        assert initial is not None, "digits kept from a solved grid never clash"
        cands, singles = initial
        m = cands[cell] & ~(1 << (digit - 1))
        cands[cell] = m
        if not m & (m - 1):
            singles.append(cell)
        if m and _solvable(cands, singles, (1 << len(geo.units)) - 1, geo):
            flat[cell] = digit
        else:
            empty += 1
    return np.array(flat, dtype=np.uint8).reshape(geo.n, geo.n)


def random_puzzle(rng: np.random.Generator, box: tuple[int, int] = (3, 3),
                  blanks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A random unique-solution puzzle and its solution, both [n, n] uint8: minimal, or with `blanks` blank cells
    (see `remove_clues`)."""
    solution = random_solution(rng, box)
    return remove_clues(solution, rng, box, blanks=blanks), solution


def is_valid_solution(grid: np.ndarray, box: tuple[int, int] = (3, 3)) -> bool:
    """True when `grid` [n, n] is complete and every row, column and box holds the digits 1..n once."""
    br, bc = box
    n = br * bc
    grid = np.asarray(grid)
    if grid.shape != (n, n):
        raise HRMError(f"a Sudoku grid with box {br}x{bc} must have shape ({n}, {n}), got {grid.shape}")
    boxes = grid.reshape(n // br, br, n // bc, bc).transpose(0, 2, 1, 3).reshape(n, n)
    expected = np.broadcast_to(np.arange(1, n + 1), (n, n))
    return all(np.array_equal(np.sort(units, axis=1), expected) for units in (grid, grid.T, boxes))


def parse_puzzle(text: str, box: tuple[int, int] = (3, 3)) -> np.ndarray:
    """A puzzle [n, n] uint8 (n = box rows * cols, at most 9) from n*n digits, with '.' or '0' for blanks."""
    n = box[0] * box[1]
    text = text.strip()
    bad = sorted(set(text) - set("." + "0123456789"[:n + 1]))
    if bad:
        raise HRMError(f"a {n}x{n} Sudoku puzzle may hold only the digits 1..{n} and '.' (or 0) for blanks, "
                       f"got {''.join(bad)!r} in {text[:90]!r}")
    if len(text) != n * n:
        raise HRMError(f"a {n}x{n} Sudoku puzzle needs {n * n} characters (digits, '.' for blanks), "
                       f"got {len(text)}: {text[:90]!r}")
    return (np.frombuffer(text.replace(".", "0").encode(), dtype=np.uint8) - ord("0")).reshape(n, n)


def format_puzzle(grid: np.ndarray) -> str:
    """The row-major string of `grid` [n, n] with '.' for blanks (digits above 9 are not supported)."""
    return "".join(str(v) if v else "." for v in np.asarray(grid).reshape(-1).tolist())
