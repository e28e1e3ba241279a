"""ARC score of a model (shared/DESIGN.md section 6): a streaming vote over the augmented views of every test
input, pass@k, and a submission in the ARC Prize format. ArcVote is what every scorer uses (shared/app/scoring.py):
one evaluation's vote on a dataset's test tasks and its pass@k.

Each test row's prediction is cropped (the largest top-left rectangle of colour tokens), its augmentation undone
(dihedral inverse, then the colour map) and counted as one vote for that grid under (task, test index); between
grids with as many votes the higher mean sigmoid(q_halt) wins, then the one seen first. Only one count and one q
sum per distinct grid are kept, never logits. **(ours)** An empty crop (no colour at the top-left corner) casts no
vote: it can never be right, and a submission cannot hold it.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import load_split, read_identifiers, read_metadata
from hrm_shared.puzzles.arc_augment import (
    COLOR_OFFSET,
    GRID_SIZE,
    NUM_COLORS,
    inverse_dihedral,
    parse_aug_name,
    unaugment_grid,
)
from hrm_shared.puzzles.kinds import ARC, is_arc
from hrm_shared.puzzles.render import arc_grid

PASS_KS = (1, 2, 10)
ATTEMPTS = 2  # the ARC Prize's attempts per test input
EMPTY_ANSWER = [[0]]  # a test input without any vote still needs a grid in a submission


@dataclass
class Candidate:
    """One distinct de-augmented answer to a test input: grid uint8 [h, w], its votes and mean sigmoid(q_halt)."""

    grid: np.ndarray
    votes: int
    q: float


@dataclass
class ArcTestTask:
    """A test task as the dataset holds it, de-augmented: test inputs and true outputs (uint8 grids) in order."""

    name: str
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]


def crop_shapes(tokens: np.ndarray) -> np.ndarray:
    """Per sequence of `tokens` [B, 900] the (rows, cols) int64 [B, 2] that crop_prediction would keep, for the
    whole batch at once; (0, 0) where (0, 0) holds no colour."""
    grids = np.asarray(tokens).reshape(-1, GRID_SIZE, GRID_SIZE)
    is_colour = (grids >= COLOR_OFFSET) & (grids < COLOR_OFFSET + NUM_COLORS)  # [B, 30, 30]
    runs = np.where(is_colour.all(axis=2), GRID_SIZE, np.argmin(is_colour, axis=2))  # [B, 30] run from column 0
    widths = np.minimum.accumulate(runs, axis=1)  # [B, 30] widest rectangle of each height
    areas = widths * np.arange(1, GRID_SIZE + 1)
    rows = np.argmax(areas, axis=1)  # first of the largest areas, as crop_prediction
    cols = widths[np.arange(len(grids)), rows]
    return np.where(cols[:, None] > 0, np.stack([rows + 1, cols], axis=1), 0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function in float64, without overflow for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def grid_key(grid: np.ndarray) -> bytes:
    """A grid uint8 [h, w] (h, w <= 30) as hashable bytes: h, w, then its cells."""
    return bytes(grid.shape) + np.ascontiguousarray(grid, dtype=np.uint8).tobytes()


def key_grid(key: bytes) -> np.ndarray:
    """Inverse of grid_key: the grid uint8 [h, w]."""
    return np.frombuffer(key[2:], dtype=np.uint8).reshape(key[0], key[1])


class ArcVoter:
    """Votes per (task, test index) over augmented views, fed a batch of test rows at a time.

    Rows must come in dataset order, each once: the n-th row seen with a puzzle identifier is that puzzle's test
    input n, as the test iterator gives them to one process. Use a new voter for each evaluation.
    """

    def __init__(self, names: list[str]):
        self.names = names
        self.votes: dict[tuple[str, int], dict[bytes, list]] = {}  # (task, index) -> {grid key: [votes, q sum]}
        self.rows = 0
        self.empty = 0
        self._views: dict[int, tuple[str, int, np.ndarray]] = {}
        self._seen: dict[int, int] = {}

    def _view(self, identifier: int) -> tuple[str, int, np.ndarray]:
        """(task, dihedral id, inverse colour map uint8 [10] over token values) of puzzle `identifier`, parsed
        once."""
        view = self._views.get(identifier)
        if view is None:
            if not 0 < identifier < len(self.names):
                raise HRMError(f"puzzle identifier {identifier} names no puzzle in identifiers.json (ids 1.."
                               f"{len(self.names) - 1}): the outputs come from another dataset")
            task, k, mapping = parse_aug_name(self.names[identifier])
            # Indexed by token (colour + COLOR_OFFSET), so a cropped prediction needs no subtraction first.
            inverse = np.zeros(COLOR_OFFSET + NUM_COLORS, dtype=np.uint8)
            inverse[COLOR_OFFSET:] = np.argsort(mapping)
            view = self._views[identifier] = task, k, inverse
        return view

    def add(self, outputs: dict[str, np.ndarray]) -> None:
        """Count one batch of evaluation outputs (other keys are ignored): puzzle_identifiers [B] int, predictions
        [B, 900] tokens, q_halt_logits [B] float. Fits `evaluate(..., on_batch=voter.add)`."""
        identifiers = np.asarray(outputs["puzzle_identifiers"]).reshape(-1).tolist()
        grids = np.asarray(outputs["predictions"]).reshape(-1, GRID_SIZE, GRID_SIZE)
        shapes = crop_shapes(grids).tolist()
        qs = sigmoid(outputs["q_halt_logits"]).reshape(-1).tolist()
        for row, identifier in enumerate(identifiers):
            task, k, inverse = self._view(identifier)
            index = self._seen.get(identifier, 0)
            self._seen[identifier] = index + 1
            self.rows += 1
            votes = self.votes.setdefault((task, index), {})
            h, w = shapes[row]
            if h == 0:
                self.empty += 1
                continue
            grid = inverse[inverse_dihedral(grids[row, :h, :w], k)]
            entry = votes.setdefault(grid_key(grid), [0, 0.0])
            entry[0] += 1
            entry[1] += qs[row]

    def ranked(self, task: str, index: int) -> list[Candidate]:
        """The answers to test input `index` of `task`, most votes first, ties by mean sigmoid(q_halt), then by
        first seen; empty when no view of it had an answer."""
        votes = self.votes.get((task, index), {})
        order = sorted(votes.items(), key=lambda item: (-item[1][0], -item[1][1] / item[1][0]))
        return [Candidate(key_grid(key), count, q_sum / count) for key, (count, q_sum) in order]


def read_test_tasks(data_dir: Path) -> dict[str, ArcTestTask]:
    """The test tasks of an ARC dataset in dataset order, de-augmented from the first view of each group (the
    identity in our builds): test inputs and true outputs, from the test split's inputs and labels. HRMError when
    two groups' names parse as one task."""
    metadata, sets = load_split(Path(data_dir), "test")
    if not is_arc(metadata):
        raise HRMError(f"{data_dir} is not an ARC dataset (vocab_size {metadata.vocab_size}, seq_len "
                       f"{metadata.seq_len}; ARC has {ARC.vocab_size} and {ARC.seq_len})")
    names = read_identifiers(Path(data_dir))
    tasks: dict[str, ArcTestTask] = {}
    first: dict[str, str] = {}  # task -> the name of its group's first puzzle
    for s in sets.values():
        for puzzle in s.group_indices[:-1].tolist():
            full_name = names[int(s.puzzle_identifiers[puzzle])]
            name, k, mapping = parse_aug_name(full_name)
            if name in first:  # views are told apart by their names, so these two tasks would vote as one
                raise HRMError(f"{data_dir}: the test tasks {first[name]!r} and {full_name!r} both read as task "
                               f"{name!r} (a name <task>_t<k>_<colour map> is an augmentation of <task>); rebuild "
                               f"the dataset with the task renamed")
            first[name] = full_name
            rows = range(int(s.puzzle_indices[puzzle]), int(s.puzzle_indices[puzzle + 1]))
            tasks[name] = ArcTestTask(name, [unaugment_grid(arc_grid(s.inputs[r]), k, mapping) for r in rows],
                                      [unaugment_grid(arc_grid(s.labels[r]), k, mapping) for r in rows])
    return tasks


def truth_ranks(voter: ArcVoter, task: ArcTestTask) -> list[int | None]:
    """Per test input of `task`, the 1-based rank of its true output among the voted answers, or None."""
    ranks = []
    for index, output in enumerate(task.outputs):
        key = grid_key(output)
        keys = [grid_key(c.grid) for c in voter.ranked(task.name, index)]
        ranks.append(keys.index(key) + 1 if key in keys else None)
    return ranks


def pass_at(ranks: dict[str, list[int | None]], ks: tuple[int, ...] = PASS_KS) -> dict:
    """From each task's truth ranks: `tasks`, `test_inputs`, `pass@k` (a task counts when every one of its test
    inputs has its true output in the top k) and under `fractional` the reference's pass@k (each test input
    counts as a fraction of its task)."""
    def solved(task_ranks: list[int | None], k: int) -> list[bool]:
        return [r is not None and r <= k for r in task_ranks]

    n = max(1, len(ranks))
    result: dict = {"tasks": len(ranks), "test_inputs": sum(map(len, ranks.values()))}
    result.update({f"pass@{k}": sum(all(solved(r, k)) for r in ranks.values()) / n for k in ks})
    result["fractional"] = {f"pass@{k}": float(sum(np.mean(solved(r, k)) for r in ranks.values() if r) / n)
                            for k in ks}
    return result


def arc_score(voter: ArcVoter, tasks: dict[str, ArcTestTask], ks: tuple[int, ...] = PASS_KS) -> dict:
    """pass_at() over `tasks` plus the rows voted and those whose crop was empty."""
    return {**pass_at({name: truth_ranks(voter, task) for name, task in tasks.items()}, ks),
            "rows": voter.rows, "empty_predictions": voter.empty}


class ArcVote:
    """One evaluation's vote on an ARC dataset: an ArcVoter fed batches of answers (`add`, an evaluate on_batch
    listener) and scored against the dataset's test tasks (`names`: identifiers.json; `tasks`: read_test_tasks)."""

    def __init__(self, names: list[str], tasks: dict[str, ArcTestTask]) -> None:
        self.names, self.tasks, self.voter = names, tasks, ArcVoter(names)

    @classmethod
    def read(cls, data_dir: Path) -> "ArcVote":
        """The vote for the test split of ARC dataset `data_dir` (HRMError as read_test_tasks)."""
        return cls(read_identifiers(Path(data_dir)), read_test_tasks(data_dir))

    def fresh(self) -> "ArcVote":
        """A new, empty vote on the same tasks: one per evaluation, or per way of answering within one."""
        return ArcVote(self.names, self.tasks)

    def add(self, answers: dict[str, np.ndarray]) -> None:
        """Count one batch of answers (ArcVoter.add)."""
        self.voter.add(answers)

    def score(self) -> dict:
        """arc_score of the votes so far: pass@k, `fractional`, tasks, test inputs, rows and empty predictions."""
        return arc_score(self.voter, self.tasks)

    def passes(self) -> dict[str, float]:
        """The pass@k rates of score() alone: what metrics, curves and the adaptive mode report."""
        return pass_rates(self.score())


def pass_rates(score: dict) -> dict[str, float]:
    """The pass@k rates of an arc_score result alone, {"pass@1": ..., "pass@2": ..., ...} in PASS_KS order."""
    return {k: v for k, v in score.items() if k.startswith("pass@")}


def arc_vote(data_dir: Path) -> ArcVote | None:
    """The vote for `data_dir`'s test split when it holds ARC (kinds.is_arc), else None; read before an evaluation,
    as it may refuse the task names."""
    return ArcVote.read(data_dir) if is_arc(read_metadata(Path(data_dir), "test")) else None


def submission(voter: ArcVoter, tasks: dict[str, ArcTestTask]) -> dict[str, list[dict[str, list]]]:
    """The ARC Prize submission: {task: [{"attempt_1": grid, "attempt_2": grid} per test input]}, the two most
    voted answers (the first repeated when there is one, EMPTY_ANSWER when there is none)."""
    result = {}
    for name, task in tasks.items():
        entries = []
        for index in range(len(task.outputs)):
            grids = [c.grid.tolist() for c in voter.ranked(name, index)[:ATTEMPTS]] or [EMPTY_ANSWER]
            grids += [grids[0]] * (ATTEMPTS - len(grids))
            entries.append({f"attempt_{i + 1}": grid for i, grid in enumerate(grids)})
        result[name] = entries
    return result
