"""`hrm arc score` and shared/puzzles/arc_score.py: a submission in the ARC Prize format against task JSON files."""

import json

import pytest

from helpers import invoke, write_arc_tasks
from hrm_shared.core.errors import HRMError
from hrm_shared.puzzles.arc_score import parse_grid, score_file, score_submission


@pytest.fixture
def solutions(tmp_path):
    """(evaluation folder of task files, {task: [true outputs]}) for tasks multi (2 tests), single, third."""
    tasks = write_arc_tasks(tmp_path / "raw")
    return tmp_path / "raw" / "evaluation", {n: [p["output"] for p in t["test"]] for n, t in tasks.items()}


def perfect(outputs: dict) -> dict:
    return {n: [{"attempt_1": o, "attempt_2": o} for o in tests] for n, tests in outputs.items()}


def write(tmp_path, submission) -> str:
    path = tmp_path / "submission.json"
    path.write_text(json.dumps(submission))
    return path


def wrong(grid: list) -> list:
    return [[(v + 1) % 10 for v in row] for row in grid]


def test_perfect_submission(solutions, tmp_path):
    directory, outputs = solutions
    result = score_file(write(tmp_path, perfect(outputs)), directory)
    assert result["problems"] == []
    assert (result["pass@1"], result["pass@2"], result["tasks"], result["test_inputs"]) == (1.0, 1.0, 3, 4)
    assert sorted(result["solved"]["pass@2"]) == ["multi", "single", "third"]


def test_attempts_and_tasks_with_several_test_inputs(solutions, tmp_path):
    directory, outputs = solutions
    sub = perfect(outputs)
    sub["single"][0]["attempt_1"] = wrong(outputs["single"][0])  # right at the second attempt only
    sub["multi"][1] = {"attempt_1": wrong(outputs["multi"][1]), "attempt_2": wrong(outputs["multi"][1])}
    result = score_file(write(tmp_path, sub), directory)
    assert result["problems"] == []
    assert result["solved"] == {"pass@1": ["third"], "pass@2": ["single", "third"]}
    assert result["pass@1"] == pytest.approx(1 / 3) and result["pass@2"] == pytest.approx(2 / 3)
    assert result["fractional"]["pass@2"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_malformed_submission_is_scored_as_far_as_it_goes(solutions, tmp_path):
    directory, outputs = solutions
    sub = perfect(outputs)
    del sub["third"]
    sub["extra"] = [{"attempt_1": [[1]], "attempt_2": [[1]]}]
    sub["multi"][0]["attempt_1"] = [[1, 2], [3]]
    sub["multi"][0]["attempt_2"] = [[10] * len(outputs["multi"][0][0])] * len(outputs["multi"][0])
    del sub["multi"][1]["attempt_2"]  # attempt_1 still right
    sub["single"] = [{"attempt_1": "not a grid", "attempt_2": outputs["single"][0]}, "surplus"]
    result = score_file(write(tmp_path, sub), directory)
    problems = result["problems"]
    expected = ["task extra: not in the solutions directory", "task third: missing from the submission",
                "task multi test 0 attempt_1 is not rectangular", "task multi test 0 attempt_2 holds 10",
                "task multi test 1: attempt_2 is missing", "task single: 2 test entries, the task has 1",
                "task single test 0 attempt_1 is not a non-empty list"]
    assert len(problems) == len(expected)
    for line, start in zip(sorted(problems), sorted(expected)):
        assert line.startswith(start), (line, start)
    assert result["solved"] == {"pass@1": [], "pass@2": ["single"]} and result["tasks"] == 3
    assert result["fractional"]["pass@1"] == pytest.approx(0.5 / 3)


@pytest.mark.parametrize("raw, why", [([], "non-empty"), ([[]], "non-empty"), ([[1, 2], [1]], "rectangular"),
                                      ([[1, -1]], "-1"), ([[1.0]], "1.0"), ([[True]], "True"), ([[[1]]], "[1]"),
                                      (None, "non-empty")])
def test_grid_checks(raw, why):
    grid, message = parse_grid(raw)
    assert grid is None and why in message


def test_a_top_level_list_is_refused():
    with pytest.raises(HRMError, match="JSON object"):
        score_submission([], {"a": []})


def test_solution_folder_problems(tmp_path):
    directory = tmp_path / "sol"
    directory.mkdir()
    (directory / "good.json").write_text(json.dumps({"train": [], "test": [{"input": [[1]], "output": [[2]]}]}))
    (directory / "broken.json").write_text("{")
    (directory / "no_output.json").write_text(json.dumps({"train": [], "test": [{"input": [[1]]}]}))
    (directory / "no_test.json").write_text(json.dumps({"train": [{"input": [[1]], "output": [[2]]}]}))
    result = score_file(write(tmp_path, {"good": [{"attempt_1": [[2]], "attempt_2": [[0]]}]}), directory)
    assert result["tasks"] == 1 and result["pass@1"] == 1.0
    assert len(result["problems"]) == 3 and all(p.startswith("solutions: ") for p in result["problems"])
    assert any("no_test" in p and "no test pairs" in p for p in result["problems"])
    with pytest.raises(HRMError, match="does not exist"):
        score_file(tmp_path / "submission.json", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HRMError, match="no ARC task with test outputs"):
        score_file(tmp_path / "submission.json", tmp_path / "empty")


def test_cli_prints_and_writes_the_scores(solutions, tmp_path):
    directory, outputs = solutions
    sub = perfect(outputs)
    del sub["single"]
    r = invoke("arc", "score", write(tmp_path, sub), "--solutions", directory, "--json", tmp_path / "out" / "s.json")
    assert r.exit_code == 0, r.output
    assert "warning: task single: missing from the submission" in r.output
    assert "pass@1" in r.output and "0.6667 (2 of 3 tasks)" in r.output
    record = json.loads((tmp_path / "out" / "s.json").read_text())
    assert (record["pass@1"], record["pass@2"], record["tasks"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)


@pytest.mark.parametrize("content, message", [("{", "is not valid JSON"), ("[1, 2]", "JSON object")])
def test_cli_errors_are_one_line(solutions, tmp_path, content, message):
    directory, _ = solutions
    path = tmp_path / "bad.json"
    path.write_text(content)
    r = invoke("arc", "score", path, "--solutions", directory)
    assert r.exit_code == 1 and r.output.startswith("Error:") and message in r.output
    assert r.output.count("\n") == 1, r.output
    r = invoke("arc", "score", tmp_path / "missing.json", "--solutions", directory)
    assert r.exit_code == 1 and "does not exist" in r.output


def test_help():
    for args in (("arc", "--help"), ("arc", "score", "--help"), ("report", "--help")):
        r = invoke(*args)
        assert r.exit_code == 0 and "Usage:" in r.output, args
