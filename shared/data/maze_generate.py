"""Generator of hard mazes with a unique shortest path (shared/DESIGN.md section 6, ours).

Random walls at 30-50% density almost never give an S->G path longer than 110 steps on 30x30, so one maze is made
in four steps, each keeping the shortest path fixed:

1. Tree: a recursive backtracker carves open cells from a random cell, opening only walls that touch exactly one
   open cell, until none is left. The open cells form a tree (about 60% of the grid on 30x30) whose paths wind.
2. Ends: S is a random open cell, G a random open cell more than `min_path` steps from S; in a tree their path is
   the only one.
3. Density: the number of walls is drawn uniformly over the counts in [0.3, 0.5] * size^2. To add walls, random
   dead ends off the path are closed (which keeps every open cell reachable). To remove walls, a wall is opened only
   when the best route through it, dist_S(cell) + dist_G(cell), stays longer than the path (distances from S and G
   are updated incrementally after each opening): openings add loops and detours, never a route as short as the
   path. Each opening goes to the block (about size/6 cells square) with the most walls that still has such a wall,
   so walls thin out evenly; near the path few walls qualify, so at low density the path's surroundings stay
   denser than the rest (on 30x30 at 30-35% walls: about 35% within 2 cells of the path, 28% elsewhere).
4. Check: an independent numpy BFS (solve_maze of shared/puzzles/maze.py) confirms the length and that the shortest
   path is unique.

Each maze depends only on (seed, index), so a run is deterministic for any number of worker processes.
"""

import csv
import heapq
import io
import math
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.progress import progress
from hrm_shared.data.maze import write_maze_dataset
from hrm_shared.puzzles.maze import CHARSET, GOAL, OPEN, START, WALL, solve_maze

INF = 1 << 30
MAX_ATTEMPTS = 1000


@lru_cache(maxsize=8)
def _neighbours(size: int) -> tuple[tuple[int, ...], ...]:
    cells = []
    for r in range(size):
        for c in range(size):
            i = r * size + c
            cells.append(tuple(j for j, ok in ((i - size, r > 0), (i + size, r < size - 1),
                                               (i - 1, c > 0), (i + 1, c < size - 1)) if ok))
    return tuple(cells)


def _carve_tree(rng: np.random.Generator, size: int, nbrs: tuple) -> tuple[list[bool], list[int]]:
    """Recursive backtracker: open cells (a tree) and, per cell, its number of open neighbours."""
    is_open = [False] * (size * size)
    open_nbrs = [0] * (size * size)

    def carve(cell: int) -> None:
        is_open[cell] = True
        for j in nbrs[cell]:
            open_nbrs[j] += 1

    root = int(rng.integers(size * size))
    carve(root)
    stack = [root]
    while stack:
        options = [j for j in nbrs[stack[-1]] if not is_open[j] and open_nbrs[j] == 1]
        if options:
            cell = options[int(rng.integers(len(options)))]
            carve(cell)
            stack.append(cell)
        else:
            stack.pop()
    return is_open, open_nbrs


def _distances(is_open: list[bool], nbrs: tuple, source: int) -> list[int]:
    dist = [INF] * len(is_open)
    dist[source] = 0
    queue = deque([source])
    while queue:
        a = queue.popleft()
        for b in nbrs[a]:
            if is_open[b] and dist[b] == INF:
                dist[b] = dist[a] + 1
                queue.append(b)
    return dist


def _lower(dist: list[int], is_open: list[bool], nbrs: tuple, cell: int) -> None:
    """Update BFS distances in place after `cell` was opened (distances only shrink)."""
    dist[cell] = min([dist[a] for a in nbrs[cell] if is_open[a]] + [INF - 1]) + 1
    queue = deque([cell])
    while queue:
        a = queue.popleft()
        step = dist[a] + 1
        for b in nbrs[a]:
            if is_open[b] and dist[b] > step:
                dist[b] = step
                queue.append(b)


def _close_dead_ends(rng: np.random.Generator, is_open: list[bool], open_nbrs: list[int], nbrs: tuple,
                     keep: set[int], count: int) -> bool:
    """Close `count` random dead ends outside `keep`; False when they run out first."""
    leaves = [i for i, o in enumerate(is_open) if o and open_nbrs[i] == 1 and i not in keep]
    while count > 0 and leaves:
        k = int(rng.integers(len(leaves)))
        leaves[k], leaves[-1] = leaves[-1], leaves[k]
        cell = leaves.pop()
        if not is_open[cell] or open_nbrs[cell] != 1:
            continue
        is_open[cell] = False
        count -= 1
        for j in nbrs[cell]:
            open_nbrs[j] -= 1
            if is_open[j] and open_nbrs[j] == 1 and j not in keep:
                leaves.append(j)
    return count == 0


def _open_walls(rng: np.random.Generator, is_open: list[bool], nbrs: tuple, start: int, goal: int, count: int,
                size: int) -> bool:
    """Open `count` walls that leave the S->G path the unique shortest one; False when candidates run out first.

    Each opening goes to the block (about size/6 cells square) with the highest wall fraction that still holds an
    acceptable wall, so that walls thin out evenly instead of vanishing far from the path first.
    """
    from_start, from_goal = _distances(is_open, nbrs, start), _distances(is_open, nbrs, goal)
    length = from_start[goal]
    side = max(3, round(size / 6))
    blocks: dict[int, list[int]] = {}
    cells: dict[int, int] = {}
    for cell in range(size * size):
        block = cell // size // side * size + cell % size // side
        cells[block] = cells.get(block, 0) + 1
        if not is_open[cell]:
            blocks.setdefault(block, []).append(cell)
    ties = rng.permutation(len(blocks)).tolist()
    heap = []
    for tie, (block, walls) in zip(ties, blocks.items()):
        walls[:] = rng.permutation(walls).tolist()
        heap.append((-len(walls) / cells[block], tie, block))
    heapq.heapify(heap)
    while count > 0 and heap:
        _, tie, block = heapq.heappop(heap)
        walls = blocks[block]
        while walls:
            cell = walls.pop()
            near = [a for a in nbrs[cell] if is_open[a]]
            via = min([from_start[a] for a in near] + [INF]) + min([from_goal[a] for a in near] + [INF]) + 2
            if via > length:
                is_open[cell] = True
                count -= 1
                _lower(from_start, is_open, nbrs, cell)
                _lower(from_goal, is_open, nbrs, cell)
                heapq.heappush(heap, (-len(walls) / cells[block], tie, block))
                break
    return count == 0


def _attempt(rng: np.random.Generator, size: int, min_path: int,
             wall_range: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, int] | None:
    nbrs = _neighbours(size)
    is_open, open_nbrs = _carve_tree(rng, size, nbrs)
    cells = [i for i, o in enumerate(is_open) if o]
    start = cells[int(rng.integers(len(cells)))]
    from_start = _distances(is_open, nbrs, start)
    far = [i for i, d in enumerate(from_start) if min_path < d < INF]
    if not far:
        return None
    goal = far[int(rng.integers(len(far)))]
    from_goal = _distances(is_open, nbrs, goal)
    path = {i for i in range(size * size) if from_start[i] + from_goal[i] == from_start[goal]}
    walls = int(rng.integers(wall_range[0], wall_range[1] + 1)) - is_open.count(False)
    if walls > 0 and not _close_dead_ends(rng, is_open, open_nbrs, nbrs, path, walls):
        return None
    if walls < 0 and not _open_walls(rng, is_open, nbrs, start, goal, -walls, size):
        return None
    grid = np.where(np.array(is_open), OPEN, WALL).astype(np.uint8)
    grid[start], grid[goal] = START, GOAL
    grid = grid.reshape(size, size)
    answer, length, count = solve_maze(grid)
    return (grid, answer, length) if length > min_path and count == 1 else None


def generate_maze(rng: np.random.Generator, size: int = 30, min_path: int = 110,
                  density: tuple[float, float] = (0.3, 0.5)) -> tuple[np.ndarray, np.ndarray, int]:
    """One maze with wall density in `density` and a unique shortest S->G path longer than `min_path` steps:
    (question, answer) [size, size] uint8 and the path length. Draws only from `rng`; HRMError when the bounds cannot
    be met."""
    wall_range = (math.ceil(density[0] * size * size - 1e-9), math.floor(density[1] * size * size + 1e-9))
    if size < 3 or wall_range[0] > wall_range[1]:
        raise HRMError(f"cannot make a {size}x{size} maze with wall density in {density}; use size >= 3, a wider range")
    for _ in range(MAX_ATTEMPTS):
        maze = _attempt(rng, size, min_path, wall_range)
        if maze is not None:
            return maze
    raise HRMError(f"no {size}x{size} maze with a shortest path over {min_path} steps in {MAX_ATTEMPTS} attempts; "
                   f"lower --min-path or raise --size")


def _maze_at(job: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, int]:
    seed, index, size, min_path = job
    return generate_maze(np.random.default_rng([seed, index]), size, min_path)


def generate_mazes(seed: int, size: int = 30, min_path: int = 110,
                   workers: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Endless stream of generate_maze results, maze i drawn from (seed, i), computed by `workers` processes."""
    batch = max(64, 16 * workers)
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        for first in range(0, 1 << 62, batch):
            jobs = [(seed, i, size, min_path) for i in range(first, first + batch)]
            yield from (pool.imap(_maze_at, jobs, chunksize=4) if pool else map(_maze_at, jobs))
    finally:
        if pool:
            pool.terminate()


def _unique_layouts(mazes: Iterator[tuple], count: int, dropped: list[int]) -> Iterator[tuple]:
    seen = set()
    for maze in mazes:
        layout = (maze[0] == WALL).tobytes()
        if layout in seen:
            dropped[0] += 1
            continue
        seen.add(layout)
        yield maze
        if len(seen) == count:
            return


def _csv_bytes(questions: np.ndarray, answers: np.ndarray, lengths: list[int], source: str) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["source", "question", "answer", "rating"])
    chars = np.frombuffer(("?" + CHARSET).encode(), dtype=np.uint8)
    for q, a, n in zip(questions, answers, lengths):
        writer.writerow([source, chars[q].tobytes().decode(), chars[a].tobytes().decode(), n])
    return text.getvalue().encode()


def generate_maze_dataset(out: Path, n_train: int, n_test: int, size: int = 30, min_path: int = 110, seed: int = 0,
                          force: bool = False, workers: int | None = None) -> dict:
    """Generate n_train + n_test mazes and write, atomically in `out`, train.csv and test.csv in the reference
    Maze-Hard format and the dataset built from them (identifiers.json, train/, test/).

    No wall layout appears twice (so train and test are disjoint). `workers` processes (default: all cores) share the
    work; the output depends only on the arguments other than `workers`. Returns a summary: counts, mean and min path
    length, mean wall density, duplicates dropped, seconds.
    """
    if n_train < 1 or n_test < 1:
        raise HRMError(f"need at least one train and one test maze, got {n_train} and {n_test}")
    if size < 3:
        raise HRMError(f"maze size {size} is too small; use at least 3")
    if seed < 0:
        raise HRMError(f"seed {seed} is negative; use a seed >= 0")
    began = time.perf_counter()
    total = n_train + n_test
    workers = max(1, min(workers or os.cpu_count() or 1, total // 32))
    dropped = [0]
    stream = _unique_layouts(generate_mazes(seed, size, min_path, workers), total, dropped)
    rows: list[tuple[np.ndarray, np.ndarray]] = []
    lengths = []
    for question, answer, length in progress(stream, label="Generating mazes", length=total):
        rows.append((question.reshape(-1), answer.reshape(-1)))
        lengths.append(length)
    questions, answers = np.stack([q for q, _ in rows]), np.stack([a for _, a in rows])
    source = f"hrm-maze-{size}x{size}-min{min_path}-seed{seed}"
    parts = {"train": slice(0, n_train), "test": slice(n_train, total)}
    write_maze_dataset(out, {split: (questions[s], answers[s]) for split, s in parts.items()}, force=force,
                       extra_files={f"{split}.csv": _csv_bytes(questions[s], answers[s], lengths[s], source)
                                    for split, s in parts.items()})
    return {"train": n_train, "test": n_test, "size": size, "min_path": min_path, "seed": seed,
            "mean_path_length": round(float(np.mean(lengths)), 2), "min_path_length": int(min(lengths)),
            "mean_wall_density": round(float(np.mean(questions == WALL)), 4), "duplicates_dropped": dropped[0],
            "seconds": round(time.perf_counter() - began, 2)}
