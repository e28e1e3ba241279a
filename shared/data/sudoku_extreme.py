"""Build a Sudoku-Extreme-equivalent set (shared/DESIGN.md section 6, ours) as the official CSV files.

OUT/{train,test}.csv with header `source,question,answer,rating`: question 81 characters with '.'
for blanks, answer 81 digits, rating our guess count (see hrm_shared.puzzles.sudoku_solver). Puzzles come
from two streams: hard minimal puzzles generated here (source `generated`) and public collections
(source: the file's stem), each pooled puzzle checked for a unique solution. Each split draws from
the harder stream while its mean rating is below the target and from the easier one otherwise, so
both splits end near the target mean. A puzzle's side is a seeded hash of its symmetry key, so
puzzles equivalent under the Sudoku group never straddle the split; exact duplicates are dropped.
"""

import csv
import hashlib
import io
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import count, islice
from multiprocessing.pool import Pool
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import atomic_directory, check_output
from hrm_shared.core.progress import progress
from hrm_shared.puzzles.sudoku_solver import format_puzzle, parse_puzzle, random_puzzle, remove_clues, solve

CSV_HEADER = ["source", "question", "answer", "rating"]
GENERATED = "generated"
PILOT = 32  # puzzles per stream whose mean rating ranks the streams by hardness


@dataclass
class Candidate:
    """One rated puzzle: where it came from, question/answer strings, our rating and its symmetry key."""

    source: str
    question: str
    answer: str
    rating: int
    key: str


def symmetry_key(grid: np.ndarray, box: tuple[int, int] = (3, 3)) -> str:
    """A 16-hex-digit key of `grid` [n, n] (0 blank) that is equal for puzzles equivalent under the Sudoku group.

    The group: digit relabelling, band and stack permutations, row-in-band and column-in-stack
    permutations, and transposition when the box is square. The puzzle becomes a graph (clue cells
    joined to their row, column, box and digit; rows to bands, columns to stacks, boxes to both),
    on which the group acts by graph isomorphisms; the key hashes its Weisfeiler-Lehman colour
    refinement, an isomorphism invariant. Inequivalent puzzles rarely share a key.
    """
    br, bc = box
    n = br * bc
    square = br == bc
    colours: list[int] = []
    adj: list[list[int]] = []

    def nodes(colour: int, k: int) -> list[int]:
        colours.extend([colour] * k)
        adj.extend([] for _ in range(k))
        return list(range(len(colours) - k, len(colours)))

    def link(a: int, b: int) -> None:
        adj[a].append(b)
        adj[b].append(a)

    rows, cols = nodes(0, n), nodes(0 if square else 1, n)
    bands, stacks = nodes(2, bc), nodes(2 if square else 3, br)
    boxes, digits = nodes(4, n), nodes(5, n)
    for i in range(n):
        link(rows[i], bands[i // br])
        link(cols[i], stacks[i // bc])
        link(boxes[i], bands[i // br])
        link(boxes[i], stacks[i % br])
    flat = np.asarray(grid).reshape(-1).tolist()
    for cell, digit in enumerate(flat):
        if digit:
            (v,) = nodes(6, 1)
            r, c = divmod(cell, n)
            for other in (rows[r], cols[c], boxes[(r // br) * br + c // bc], digits[digit - 1]):
                link(v, other)
    history = []
    classes = len(set(colours))
    while True:
        signatures = [(colours[v], tuple(sorted(colours[u] for u in adj[v]))) for v in range(len(colours))]
        rank = {s: i for i, s in enumerate(sorted(set(signatures)))}
        colours = [rank[s] for s in signatures]
        history.append(sorted(signatures))
        if len(rank) == classes:
            break
        classes = len(rank)
    return hashlib.sha256(repr(history).encode()).hexdigest()[:16]


def hard_puzzle(rng: np.random.Generator, steps: int = 20, add: int = 4) -> tuple[np.ndarray, np.ndarray, int]:
    """A hard minimal 9x9 puzzle, its solution (both [9, 9] uint8) and its rating.

    Hill-climbs from a random minimal puzzle: each step restores `add` random clues of the solution,
    blanks clues again in random order while the solution stays unique, and keeps the result when its
    rating is not lower.
    """
    puzzle, solution = random_puzzle(rng)
    rating = solve(puzzle).guesses
    for _ in range(steps):
        start = puzzle.reshape(-1).copy()
        restore = rng.choice(np.flatnonzero(start == 0), add, replace=False)
        start[restore] = solution.reshape(-1)[restore]
        candidate = remove_clues(solution, rng, start=start.reshape(9, 9))
        candidate_rating = solve(candidate).guesses
        if candidate_rating >= rating:
            puzzle, rating = candidate, candidate_rating
    return puzzle, solution, rating


def read_pool(paths: list[Path]) -> list[tuple[str, str]]:
    """(file stem, 81-character puzzle) per puzzle line of `paths`; '#' lines, blank lines, trailing fields skipped."""
    pool = []
    for path in map(Path, paths):
        if not path.is_file():
            raise HRMError(f"pool file {path} does not exist; pass text files with one puzzle per line")
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                fields = line.replace(",", " ").split()
                if not fields or fields[0].startswith("#"):
                    continue
                text = fields[0]
                if len(text) != 81 or set(text) - set(".0123456789"):
                    raise HRMError(f"{path}:{number}: expected a puzzle of 81 digits and '.', got {text[:90]!r}")
                pool.append((path.stem, text))
    return pool


def _candidate(source: str, puzzle: np.ndarray, solution: np.ndarray, rating: int) -> Candidate:
    return Candidate(source, format_puzzle(puzzle), format_puzzle(solution), rating, symmetry_key(puzzle))


def _generated(task: tuple[int, int, int]) -> Candidate:
    seed, index, steps = task
    puzzle, solution, rating = hard_puzzle(np.random.default_rng([seed, index]), steps)
    return _candidate(GENERATED, puzzle, solution, rating)


def _pooled(task: tuple[str, str]) -> Candidate | None:
    source, text = task
    puzzle = parse_puzzle(text)
    result = solve(puzzle)
    if len(result.solutions) != 1:
        return None
    return _candidate(source, puzzle, result.solutions[0], result.guesses)


def _ordered(work: Callable, tasks: Iterator, processes: Pool | None, ahead: int) -> Iterator:
    """`work(task)` for each task, in task order; with `processes`, `ahead` tasks are kept in flight."""
    if processes is None:
        yield from map(work, tasks)
        return
    in_flight = deque(processes.apply_async(work, (t,)) for t in islice(tasks, ahead))
    while in_flight:
        result = in_flight.popleft().get()
        in_flight.extend(processes.apply_async(work, (t,)) for t in islice(tasks, 1))
        yield result


class _Stream:
    """Rated candidates of one source, in a fixed order, routed to their split by `side_of`."""

    def __init__(self, results: Iterator[Candidate | None], side_of: Callable[[str], str], seen: set[str]) -> None:
        self.results, self.side_of, self.seen = results, side_of, seen
        self.pending: dict[str, deque[Candidate]] = {"train": deque(), "test": deque()}
        self.ratings: list[int] = []
        self.rated = self.bad = self.duplicates = 0
        self.exhausted = False

    def _fetch(self) -> None:
        try:
            c = next(self.results)
        except StopIteration:
            self.exhausted = True
            return
        self.rated += 1
        if c is None:
            self.bad += 1
            return
        self.ratings.append(c.rating)
        if c.question in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(c.question)
            self.pending[self.side_of(c.key)].append(c)

    def mean_rating(self, first: int) -> float:
        """Mean rating of the stream's first `first` good puzzles (fewer if it has fewer); -inf if none."""
        while len(self.ratings) < first and not self.exhausted:
            self._fetch()
        return float(np.mean(self.ratings[:first])) if self.ratings else -np.inf

    def next(self, side: str) -> Candidate | None:
        """The next unused candidate for `side`, or None when the source is used up."""
        while not self.pending[side] and not self.exhausted:
            self._fetch()
        return self.pending[side].popleft() if self.pending[side] else None


def _csv_bytes(rows: list[Candidate]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows([c.source, c.question, c.answer, c.rating] for c in rows)
    return buffer.getvalue().encode()


def _select(streams: list[_Stream], sizes: dict[str, int], target: float) -> Iterator[tuple[str, Candidate]]:
    """Fill each split to its size from the hardest stream while the split's mean is below `target`, else the easiest.

    Hardness is each stream's mean over its first puzzles (a fixed count), so the choice depends on the seed only.
    """
    pilot = min(PILOT, sum(sizes.values()))
    hardest_first = sorted(streams, key=lambda s: s.mean_rating(pilot), reverse=True)
    taken = dict.fromkeys(sizes, 0)
    total = dict.fromkeys(sizes, 0)
    while any(taken[side] < size for side, size in sizes.items()):
        for side, size in sizes.items():
            if taken[side] >= size:
                continue
            order = hardest_first if total[side] <= target * taken[side] else hardest_first[::-1]
            for stream in order:
                candidate = stream.next(side)
                if candidate is not None:
                    taken[side] += 1
                    total[side] += candidate.rating
                    yield side, candidate
                    break
            else:
                raise HRMError(f"the sources ran out of puzzles for the {side} split; pass more --pool files")


def build_sudoku_extreme_csv(out: Path, n_train: int, n_test: int, pools: list[Path], seed: int,
                             target_rating: float = 22.0, force: bool = False, climb_steps: int = 20,
                             workers: int | None = None) -> dict:
    """Write OUT/train.csv and OUT/test.csv (n_train and n_test rated puzzles) atomically; return a summary.

    `climb_steps` sets how hard the generated puzzles are (and how long they take); `workers` the
    processes used (default: all cores). The output depends on `seed` only, not on `workers`.
    """
    if n_train < 1 or n_test < 1:
        raise HRMError(f"--train and --test must be at least 1, got {n_train} and {n_test}")
    if seed < 0:
        raise HRMError(f"--seed must be a non-negative integer, got {seed}")
    check_output(Path(out), force)
    begin = time.time()
    rng = np.random.default_rng(seed)
    pool = read_pool(pools)
    pool = [pool[i] for i in rng.permutation(len(pool))]
    test_share = n_test / (n_train + n_test)

    def side_of(key: str) -> str:
        h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:15], 16) / 16**15
        return "test" if h < test_share else "train"

    workers = workers or os.cpu_count() or 1
    seen: set[str] = set()
    rows: dict[str, list[Candidate]] = {"train": [], "test": []}
    with ExitStack() as stack:
        processes = stack.enter_context(Pool(workers)) if workers > 1 else None
        generated_tasks = ((seed, i, climb_steps) for i in count())
        generated = _Stream(_ordered(_generated, generated_tasks, processes, 2 * workers), side_of, seen)
        pooled = _Stream(_ordered(_pooled, iter(pool), processes, 8 * workers), side_of, seen)
        selection = _select([generated, pooled], {"train": n_train, "test": n_test}, target_rating)
        for side, candidate in progress(selection, label="Building Sudoku-Extreme", length=n_train + n_test):
            rows[side].append(candidate)
    with atomic_directory(Path(out), force) as tmp:
        for side, candidates in rows.items():
            (tmp / f"{side}.csv").write_bytes(_csv_bytes(candidates))
    summary: dict = {"out": str(out)}
    for side, candidates in rows.items():
        n_generated = sum(c.source == GENERATED for c in candidates)
        summary |= {f"{side}_puzzles": len(candidates),
                    f"mean_rating_{side}": round(float(np.mean([c.rating for c in candidates])), 2),
                    f"generated_{side}": n_generated, f"pooled_{side}": len(candidates) - n_generated}
    summary |= {"pool_puzzles": len(pool), "pool_rated": pooled.rated, "pool_bad": pooled.bad,
                "duplicates_dropped": generated.duplicates + pooled.duplicates,
                "seconds": round(time.time() - begin, 2)}
    return summary
