"""Maze-Hard: the generator's guarantees (checked with a BFS written here), the CSV importer, the built dataset."""

import csv
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split, read_identifiers
from hrm_shared.data.maze import build_maze_dataset
from hrm_shared.data.maze_generate import _unique_layouts, generate_maze, generate_maze_dataset
from hrm_shared.puzzles.maze import (
    bfs_distances,
    count_shortest_paths,
    is_optimal_path,
    maze_to_text,
    solve_maze,
    text_to_tokens,
)

SIZE, MIN_PATH, N = 12, 25, 16


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def bfs(rows: list[str], source: tuple[int, int]) -> dict:
    """Steps from `source` to every reachable non-wall cell of `rows` (one string per row)."""
    dist = {source: 0}
    queue = deque([source])
    while queue:
        r, c = queue.popleft()
        for n in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= n[0] < len(rows) and 0 <= n[1] < len(rows) and rows[n[0]][n[1]] != "#" and n not in dist:
                dist[n] = dist[(r, c)] + 1
                queue.append(n)
    return dist


def shortest_path_count(dist: dict, goal: tuple[int, int]) -> int:
    ways = {}
    for cell in sorted(dist, key=dist.get):
        r, c = cell
        back = [ways[n] for n in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)) if dist.get(n) == dist[cell] - 1]
        ways[cell] = sum(back) if back else 1
    return ways[goal]


def find(rows: list[str], char: str) -> list[tuple[int, int]]:
    return [(r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch == char]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("maze") / "data"
    return out, generate_maze_dataset(out, n_train=N, n_test=N, size=SIZE, min_path=MIN_PATH, seed=3, workers=1)


def test_generated_mazes_are_long_unique_and_labelled(generated):
    out, summary = generated
    rows = read_rows(out / "train.csv") + read_rows(out / "test.csv")
    assert len(rows) == 2 * N and summary["train"] == summary["test"] == N
    lengths, densities = [], []
    for row in rows:
        q = [row["question"][i:i + SIZE] for i in range(0, SIZE * SIZE, SIZE)]
        a = [row["answer"][i:i + SIZE] for i in range(0, SIZE * SIZE, SIZE)]
        assert len(row["question"]) == SIZE * SIZE and set(row["question"]) <= set("# SG")
        (start,), (goal,) = find(q, "S"), find(q, "G")
        from_start, from_goal = bfs(q, start), bfs(q, goal)
        length = from_start[goal]
        assert length > MIN_PATH and int(row["rating"]) == length
        assert shortest_path_count(from_start, goal) == 1
        on_path = {c for c in from_start if c in from_goal and from_start[c] + from_goal[c] == length}
        assert set(find(a, "o")) == on_path - {start, goal}
        assert all(qc == ac or (qc, ac) == (" ", "o") for qc, ac in zip(row["question"], row["answer"]))
        densities.append(row["question"].count("#") / SIZE ** 2)
        lengths.append(length)
    assert 0.3 <= min(densities) and max(densities) <= 0.5 and max(densities) - min(densities) > 0.05
    assert summary["mean_path_length"] == pytest.approx(np.mean(lengths), abs=0.01)
    assert summary["mean_wall_density"] == pytest.approx(np.mean(densities), abs=1e-3)


def test_train_and_test_layouts_are_disjoint(generated):
    out, _ = generated
    walls = {split: [tuple(ch == "#" for ch in row["question"]) for row in read_rows(out / f"{split}.csv")]
             for split in ("train", "test")}
    assert len(set(walls["train"]) | set(walls["test"])) == 2 * N


def test_built_dataset_loads_with_reference_metadata(generated):
    out, _ = generated
    assert read_identifiers(out) == ["<blank>"]
    for split in ("train", "test"):
        metadata, sets = load_split(out, split)
        assert (metadata.vocab_size, metadata.seq_len, metadata.num_puzzle_identifiers) == (6, SIZE * SIZE, 1)
        assert (metadata.total_groups, metadata.mean_puzzle_examples, metadata.sets) == (N, 1.0, ["all"])
        s = sets["all"]
        rows = read_rows(out / f"{split}.csv")
        expected = np.array([["# SGo".index(ch) + 1 for ch in row["question"]] for row in rows])
        np.testing.assert_array_equal(s.inputs, expected)
        np.testing.assert_array_equal(s.labels, [["# SGo".index(ch) + 1 for ch in row["answer"]] for row in rows])
        np.testing.assert_array_equal(s.puzzle_identifiers, np.zeros(N))
        np.testing.assert_array_equal(s.puzzle_indices, np.arange(N + 1))
        np.testing.assert_array_equal(s.group_indices, np.arange(N + 1))


def test_generation_is_deterministic_for_a_seed_and_any_worker_count(tmp_path):
    kwargs = dict(n_train=40, n_test=24, size=SIZE, min_path=MIN_PATH)
    generate_maze_dataset(tmp_path / "a", seed=5, workers=1, **kwargs)
    generate_maze_dataset(tmp_path / "b", seed=5, workers=2, **kwargs)
    generate_maze_dataset(tmp_path / "c", seed=6, workers=1, **kwargs)
    for name in ("train.csv", "test.csv", "train/all__inputs.npy", "test/all__labels.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train.csv").read_bytes() != (tmp_path / "c" / "train.csv").read_bytes()


def test_generate_refuses_existing_output_and_impossible_bounds(generated):
    out, _ = generated
    with pytest.raises(HRMError, match="--force"):
        generate_maze_dataset(out, n_train=1, n_test=1, size=SIZE, min_path=MIN_PATH)
    with pytest.raises(HRMError, match="min-path"):
        generate_maze(np.random.default_rng(0), size=5, min_path=40)
    with pytest.raises(HRMError, match="seed"):
        generate_maze_dataset(out.parent / "other", n_train=1, n_test=1, seed=-1)


def test_importer_rebuilds_the_generated_dataset(generated, tmp_path):
    out, _ = generated
    summary = build_maze_dataset(out, tmp_path / "built")
    assert (summary["train"], summary["test"], summary["size"], summary["seq_len"]) == (N, N, SIZE, SIZE * SIZE)
    for name in ("train/all__inputs.npy", "train/all__labels.npy", "test/all__inputs.npy", "test/dataset.json"):
        assert (out / name).read_bytes() == (tmp_path / "built" / name).read_bytes()


GOOD = ["source,question,answer,rating", "x,S  G,So G,2"]


@pytest.mark.parametrize("train_lines, message", [
    (["source,question,label,rating", "x,S  G,So G,2"], "header"),
    (GOOD + ["x,S  G,So G"], "line 3: 3 fields"),
    (GOOD + ["x,S  G,S  x,2"], "'x'"),
    (["source,question,answer,rating", "x,S  G ,S  G ,2"], "not a square"),
    (GOOD + ["x," + "S" + " " * 7 + "G," + "S" + " " * 7 + "G,8"], "line 3: a 3x3 maze"),
    (GOOD + ["x,S  G,S  G  ,3"], "line 3: answer has 6"),
    (GOOD + ["x,S  G,S##G,3"], "line 3: the answer differs"),
    (["source,question,answer,rating"], "no mazes"),
])
def test_importer_rejects_bad_csv(tmp_path, train_lines, message):
    (tmp_path / "train.csv").write_text("\n".join(train_lines) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(GOOD) + "\n")
    with pytest.raises(HRMError, match=message):
        build_maze_dataset(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_importer_rejects_missing_file_and_sizes_differing_between_splits(tmp_path):
    (tmp_path / "train.csv").write_text("\n".join(GOOD) + "\n")
    with pytest.raises(HRMError, match="test.csv not found"):
        build_maze_dataset(tmp_path, tmp_path / "out")
    (tmp_path / "test.csv").write_text("source,question,answer,rating\nx,S   #   G,S   #   G,4\n")
    with pytest.raises(HRMError, match="differ in size"):
        build_maze_dataset(tmp_path, tmp_path / "out")


OPEN4 = "S   " "    " " #  " "   G"


def test_solver_counts_paths_and_checker_wants_an_optimal_path():
    question = text_to_tokens(OPEN4)
    _, length, count = solve_maze(question)
    assert (length, count) == (6, 2)
    corridor = text_to_tokens("S#G" " # " "   ")
    answer, length, count = solve_maze(corridor)
    assert (length, count) == (6, 1) and maze_to_text(answer) == "S#G\no#o\nooo"
    assert count_shortest_paths(bfs_distances(np.ones((3, 3), bool), (0, 0)), (2, 2), cap=10) == 6

    def check(rows: list[str]) -> bool:
        return is_optimal_path(question, text_to_tokens("".join(rows)).reshape(4, 4))

    assert check(["Sooo", "   o", " # o", "   G"])
    assert check(["S   ", "o   ", "o#  ", "oooG"])
    assert not check(["So  ", "oo  ", "o#  ", "oooG"])     # a walk of 8 steps: valid but not optimal
    assert not check(["Sooo", "   o", " #  ", "   G"])     # stops short of G
    assert not check(["Sooo", "   o", " #  ", "  oG"])     # right count, not connected
    assert not check(["S   ", "oo  ", " o  ", " ooG"])     # 6 steps, but through the wall at (2, 1)
    assert not check(["Sooo", "o  o", " # o", "   G"])     # an optimal path plus a stray cell


def test_repeated_wall_layouts_are_dropped():
    a, b = np.array([[1, 2], [3, 4]]), np.array([[1, 1], [3, 4]])
    a_moved = np.array([[1, 3], [2, 4]])  # same walls as `a`, other S/G: still a repeat
    dropped = [0]
    kept = list(_unique_layouts(iter([(a,), (a_moved,), (b,), (a,)]), 2, dropped))
    assert [m[0].tolist() for m in kept] == [a.tolist(), b.tolist()] and dropped == [1]
