"""`hrm arc score` (a submission against the task files) and `hrm report` (an evaluation as an HTML page)."""

import json
from pathlib import Path

import click

from hrm_shared.app.cli.common import ExistingDir, Group, PathType, force_option, summary

SHOWN_PROBLEMS = 20  # problems printed; --json keeps them all


@click.group(cls=Group)
def arc() -> None:
    """ARC submissions in the ARC Prize format."""


@arc.command("score")
@click.argument("submission_path", metavar="SUBMISSION", type=PathType)
@click.option("--solutions", "solutions_dir", type=PathType, required=True,
              help="Directory of ARC task JSON files with their test outputs (e.g. ARC-AGI-1/data/evaluation).")
@click.option("--json", "json_path", type=PathType, default=None,
              help="Write pass@1, pass@2, tasks, the solved task ids and every problem to this JSON file.")
@force_option
def arc_score_cmd(submission_path, solutions_dir, json_path, force):
    """Score SUBMISSION ({task: [{"attempt_1": grid, "attempt_2": grid}, ...]}) against the solutions: a task
    counts when every test input is solved; pass@2 (either attempt) is the official metric."""
    from hrm_shared.app.outputs import check_output_file
    from hrm_shared.puzzles.arc_score import score_file

    check_output_file(json_path, force)
    result = score_file(submission_path, solutions_dir)
    problems = result["problems"]
    for line in problems[:SHOWN_PROBLEMS]:
        click.echo(f"warning: {line}", err=True)
    if len(problems) > SHOWN_PROBLEMS:
        more = f" (all in {json_path})" if json_path is not None else " (pass --json FILE to see them all)"
        click.echo(f"warning: ... and {len(problems) - SHOWN_PROBLEMS} more problems{more}", err=True)
    n = result["tasks"]
    values = {k: f"{result[k]:.4f} ({len(result['solved'][k]):,} of {n:,} tasks)" for k in ("pass@1", "pass@2")}
    values["pass@2, each test input a fraction of its task"] = f"{result['fractional']['pass@2']:.4f}"
    values["problems"] = f"{len(problems):,}"
    summary(f"{submission_path} against {solutions_dir}", values)
    if json_path is not None:
        from hrm_shared.core.atomic import write_file

        write_file(json_path, json.dumps(result, indent=2) + "\n")


@click.command("report")
@click.argument("source", metavar="RUN_OR_OUTPUTS", type=click.Path(path_type=Path, exists=True))
@click.option("--data", "data_dir", type=ExistingDir, default=None,
              help="Dataset the outputs were evaluated on  [default: the run's, from RUN/config.json].")
@click.option("--tasks", "tasks_dirs", type=ExistingDir, multiple=True,
              help="ARC: directory of task JSON files for the demonstration pairs; repeatable  "
                   "[default: the dataset's train split].")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Cards drawn: the first LIMIT solved and the first LIMIT unsolved tasks or examples of the whole "
                   "test split; the summary counts all and says how many are shown  [default: 400].")
@click.option("--out", type=PathType, default=None,
              help="HTML file to write  [default: RUN/report.html, or OUTPUTS with .html].")
@click.option("--trajectory", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Also show every segment's answer from this .npz of `hrm evaluate --save-trajectory` (the same "
                   "evaluation).")
@force_option
def report_cmd(source, data_dir, tasks_dirs, limit, out, trajectory, force):
    """Write a self-contained HTML page of an evaluation: per ARC task the demonstrations, test inputs, expected
    outputs and the two most voted answers; per Sudoku or maze example input, answer and prediction.

    RUN_OR_OUTPUTS is a run directory holding eval_outputs.npz, or an outputs .npz from
    `hrm evaluate --save-outputs` (then give --data)."""
    from hrm_shared.app.report import DEFAULT_LIMIT, write_report

    result = write_report(source, data_dir, out, list(tasks_dirs), limit or DEFAULT_LIMIT, trajectory, force)
    summary(f"Report written to {result.pop('report')}", result)
