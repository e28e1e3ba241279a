"""Score a submission in the ARC Prize format against the task JSON files that hold the true test outputs,
independent of any model.

A submission is `{task_id: [{"attempt_1": grid, "attempt_2": grid} per test input, in the task's order]}`. A test
input is solved at pass@1 when attempt_1 equals its output, at pass@2 when either attempt does; a task counts when
all its test inputs are solved (`fractional` gives the reference's per-input fractions). A malformed submission is
scored as far as it can be: every problem is listed by task id and the affected attempt counts as wrong.
"""

import json
from pathlib import Path

import numpy as np

from hrm_shared.core.errors import HRMError
from hrm_shared.puzzles.arc_task import read_arc_task
from hrm_shared.puzzles.arc_vote import ATTEMPTS, pass_at

MAX_COLOUR = 9


def read_solutions(directory: Path) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """The true test outputs (uint8 grids) per task from every task JSON file under `directory` (recursively),
    and one line per file that could not be used (unreadable, no test outputs, a task id seen twice)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise HRMError(f"solutions directory {directory} does not exist; pass a folder of ARC task JSON files "
                       f"with test outputs (e.g. ARC-AGI-1/data/evaluation)")
    solutions: dict[str, list[np.ndarray]] = {}
    problems = []
    for path in sorted(directory.rglob("*.json")):
        try:
            task = read_arc_task(path)
        except HRMError as e:
            problems.append(f"solutions: {e}")
            continue
        if not task.test:
            problems.append(f"solutions: task {task.name} ({path}) has no test pairs")
        elif task.name in solutions:
            problems.append(f"solutions: task {task.name} appears twice; {path} is ignored")
        else:
            solutions[task.name] = [output for _, output in task.test]
    if not solutions:
        raise HRMError(f"no ARC task with test outputs under {directory}" + (f" ({problems[0]})" if problems else ""))
    return solutions, problems


def parse_grid(raw: object) -> tuple[np.ndarray | None, str | None]:
    """(grid uint8 [h, w], None) for a valid grid (a non-empty rectangle of integers 0..9), else (None, why)."""
    if not isinstance(raw, list) or not raw or not all(isinstance(row, list) and row for row in raw):
        return None, "is not a non-empty list of non-empty rows"
    if len({len(row) for row in raw}) != 1:
        return None, f"is not rectangular (row lengths {sorted({len(row) for row in raw})})"
    bad = [v for row in raw for v in row if type(v) is not int or not 0 <= v <= MAX_COLOUR]
    if bad:
        return None, f"holds {bad[0]!r}, not a colour 0..{MAX_COLOUR}"
    return np.array(raw, dtype=np.uint8), None


def _attempts(entry: object, where: str, problems: list[str]) -> list[np.ndarray | None]:
    """The ATTEMPTS grids of one test input's entry (None where missing or invalid), noting each problem."""
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected an object with attempt_1 and attempt_2, got {type(entry).__name__}")
        return [None] * ATTEMPTS
    grids: list[np.ndarray | None] = []
    for i in range(1, ATTEMPTS + 1):
        name = f"attempt_{i}"
        if name not in entry:
            problems.append(f"{where}: {name} is missing")
            grids.append(None)
            continue
        grid, why = parse_grid(entry[name])
        if why is not None:
            problems.append(f"{where} {name} {why}")
        grids.append(grid)
    return grids


def _ranks(entries: object, outputs: list[np.ndarray], task: str, problems: list[str]) -> list[int | None]:
    """Per test input the first attempt (1-based) equal to its output, or None; problems named by task id."""
    if not isinstance(entries, list):
        problems.append(f"task {task}: expected a list of attempts per test input, got {type(entries).__name__}")
        entries = []
    elif len(entries) != len(outputs):
        problems.append(f"task {task}: {len(entries)} test entries, the task has {len(outputs)} test inputs")
    ranks = []
    for index, output in enumerate(outputs):
        grids = _attempts(entries[index], f"task {task} test {index}", problems) if index < len(entries) else []
        ranks.append(next((i + 1 for i, g in enumerate(grids) if g is not None and np.array_equal(g, output)), None))
    return ranks


def score_submission(submission: object, solutions: dict[str, list[np.ndarray]]) -> dict:
    """Score a parsed submission against `solutions` {task: true outputs}: pass@1, pass@2, `tasks` (those in the
    solutions), `fractional`, `solved` (task ids per pass@k) and `problems` (one line each, by task id). A task
    missing from the submission counts as unsolved; one not in the solutions is listed and left out."""
    if not isinstance(submission, dict):
        raise HRMError(f"a submission is a JSON object {{task_id: [...]}}, got a {type(submission).__name__}")
    problems = [f"task {task}: not in the solutions directory; not scored" for task in submission
                if task not in solutions]
    ranks: dict[str, list[int | None]] = {}
    for task, outputs in solutions.items():
        if task not in submission:
            problems.append(f"task {task}: missing from the submission; counted as unsolved")
            ranks[task] = [None] * len(outputs)
        else:
            ranks[task] = _ranks(submission[task], outputs, task, problems)
    result = pass_at(ranks, ks=tuple(range(1, ATTEMPTS + 1)))
    result["solved"] = {f"pass@{k}": [t for t, r in ranks.items() if all(x is not None and x <= k for x in r)]
                        for k in range(1, ATTEMPTS + 1)}
    result["problems"] = problems
    return result


def score_file(path: Path, solutions_dir: Path) -> dict:
    """score_submission() of the JSON file at `path` against the task files under `solutions_dir`; problems with
    the solution files come first in `problems`."""
    try:
        submission = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise HRMError(f"submission {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise HRMError(f"submission {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HRMError(f"cannot read submission {path} ({e})") from None
    solutions, problems = read_solutions(solutions_dir)
    result = score_submission(submission, solutions)
    result["problems"] = problems + result["problems"]
    return result
