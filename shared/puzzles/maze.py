"""The maze puzzle kind (shared/DESIGN.md section 6): tokens, text, shortest paths and the checker of an answer.

A maze is a square grid over the characters `# SGo` (wall, open, start, goal, path), stored row-major as tokens
1..5 (0 is padding). A question holds walls, open cells, S and G; its answer is the question with the cells of the
shortest S->G path (S and G excluded) replaced by `o`. The reference CSV importer and the dataset writer live in
shared/data/maze.py, the generator of new mazes in shared/data/maze_generate.py.
"""

import numpy as np

from hrm_shared.core.errors import HRMError

CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5
VOCAB_SIZE = len(CHARSET) + 1


def to_grid(tokens: np.ndarray) -> np.ndarray:
    """A maze's tokens [size*size] or [size, size] as a square [size, size] array (a view when possible)."""
    tokens = np.asarray(tokens)
    size = int(round(tokens.size ** 0.5))
    if size * size != tokens.size or tokens.ndim not in (1, 2):
        raise HRMError(f"a maze needs size*size tokens in a square, got shape {tokens.shape}")
    return tokens.reshape(size, size)


def maze_to_text(tokens: np.ndarray) -> str:
    """Render tokens [size*size] or [size, size] as `size` lines over `# SGo`; tokens outside 1..5 show as `?`."""
    grid = to_grid(tokens)
    table = np.array(list("?" + CHARSET + "?" * (256 - VOCAB_SIZE)))
    return "\n".join("".join(row) for row in table[np.clip(grid, 0, 255)])


def text_to_tokens(text: str) -> np.ndarray:
    """The tokens [len(text)] uint8 of a row-major string over `# SGo` (caller checks the characters)."""
    table = np.zeros(256, dtype=np.uint8)
    table[[ord(c) for c in CHARSET]] = np.arange(1, VOCAB_SIZE, dtype=np.uint8)
    return table[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]


def bfs_distances(passable: np.ndarray, source: tuple[int, int]) -> np.ndarray:
    """4-connected BFS steps from `source` over `passable` [H, W] bool: int32 [H, W], -1 where unreachable."""
    dist = np.full(passable.shape, -1, dtype=np.int32)
    frontier = np.zeros(passable.shape, dtype=bool)
    frontier[source] = True
    seen = frontier.copy()
    dist[source] = 0
    step = 0
    while frontier.any():
        step += 1
        grown = np.zeros_like(frontier)
        grown[1:] |= frontier[:-1]
        grown[:-1] |= frontier[1:]
        grown[:, 1:] |= frontier[:, :-1]
        grown[:, :-1] |= frontier[:, 1:]
        frontier = grown & passable & ~seen
        seen |= frontier
        dist[frontier] = step
    return dist


def count_shortest_paths(dist: np.ndarray, target: tuple[int, int], cap: int = 2) -> int:
    """Number of shortest paths to `target` given BFS distances `dist` [H, W] (from bfs_distances), capped at `cap`.

    Layer DP: the count of a cell at distance k is the sum of its neighbours' counts at distance k - 1.
    """
    length = int(dist[target])
    if length < 0:
        return 0
    counts = np.where(dist == 0, 1, 0).astype(np.int64)
    for k in range(1, length + 1):
        total = np.zeros_like(counts)
        total[1:] += counts[:-1]
        total[:-1] += counts[1:]
        total[:, 1:] += counts[:, :-1]
        total[:, :-1] += counts[:, 1:]
        layer = dist == k
        counts[layer] = np.minimum(total[layer], cap)
    return int(counts[target])


def _find(grid: np.ndarray, token: int) -> tuple[int, int] | None:
    cells = np.argwhere(grid == token)
    return (int(cells[0, 0]), int(cells[0, 1])) if len(cells) == 1 else None


def solve_maze(question: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Shortest S->G paths of a question [size*size] or [size, size] (tokens 1..4).

    Returns (answer, length, count): the answer has the question's shape with every cell on a shortest path
    (S and G excluded) set to PATH (one path when count is 1), length in steps (-1 when G is unreachable or S/G are
    not unique), count of shortest paths capped at 2.
    """
    grid = to_grid(question)
    start, goal = _find(grid, START), _find(grid, GOAL)
    if start is None or goal is None:
        return np.array(question, copy=True), -1, 0
    passable = grid != WALL
    from_start = bfs_distances(passable, start)
    length = int(from_start[goal])
    if length < 0:
        return np.array(question, copy=True), -1, 0
    from_goal = bfs_distances(passable, goal)
    on_path = (from_start >= 0) & (from_goal >= 0) & (from_start + from_goal == length) & (grid == OPEN)
    answer = np.where(on_path, PATH, grid).astype(np.uint8).reshape(np.shape(question))
    return answer, length, count_shortest_paths(from_start, goal)


def is_optimal_path(question: np.ndarray, prediction: np.ndarray) -> bool:
    """Whether the PATH cells of `prediction` form an S->G path of the question's shortest length.

    Both are tokens [size*size] or [size, size]. The PATH cells must all lie on open cells of the question and be
    exactly the intermediate cells of one walk from S to G of optimal length; other cells of the prediction are
    not looked at. False when the question has no S->G path.
    """
    grid, predicted = to_grid(question), to_grid(prediction)
    if grid.shape != predicted.shape:
        return False
    _, length, _ = solve_maze(grid)
    marked = predicted == PATH
    if length < 0 or np.any(marked & (grid != OPEN)) or int(marked.sum()) != length - 1:
        return False
    start, goal = _find(grid, START), _find(grid, GOAL)
    if start is None or goal is None:  # solve_maze found a path, so both are there; this tells mypy
        return False
    walk = bfs_distances(marked | (grid == START) | (grid == GOAL), start)
    return int(walk[goal]) == length
