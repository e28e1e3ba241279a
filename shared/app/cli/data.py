"""`hrm data ...`: dataset builders, info, validation and display."""

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click

from hrm_shared.app.cli.common import (
    ExistingDir,
    Group,
    PathType,
    force_option,
    refuse_existing,
    summary,
    verbosity_options,
)
from hrm_shared.app.hub import MAZE_REPO, SUDOKU_REPO, download_csv_dir


@click.group(cls=Group)
def data() -> None:
    """Build, inspect and validate puzzle datasets."""


def hub_option(repo: str) -> Callable:
    """The option `--hub [REPO]`: take train.csv and test.csv from a Hugging Face Hub dataset, `repo` by default."""
    return click.option("--hub", "hub_repo", is_flag=False, flag_value=repo, default=None, metavar="[REPO]",
                        help=f"Download train.csv and test.csv from this Hugging Face dataset instead of --csv-dir  "
                             f"[REPO: {repo}].")


def csv_source(csv_dir: Path | None, hub_repo: str | None) -> Path:
    """The directory holding train.csv and test.csv: --csv-dir, or the cached snapshot of the --hub dataset."""
    if csv_dir is not None and hub_repo is None:
        return csv_dir
    if csv_dir is not None or hub_repo is None:
        raise click.UsageError("give one of --csv-dir DIR and --hub [REPO]")
    folder = download_csv_dir(hub_repo)
    click.echo(f"{hub_repo} (Hugging Face Hub): {folder}")
    return folder


@data.command("sudoku")
@click.option("--csv-dir", type=ExistingDir, default=None, help="Directory holding train.csv and test.csv.")
@hub_option(SUDOKU_REPO)
@click.option("--out", type=PathType, required=True, help="Output dataset directory.")
@click.option("--subsample-size", type=click.IntRange(1), default=None, help="Keep this many train puzzles.")
@click.option("--min-difficulty", type=int, default=None, help="Keep puzzles rated at least this.")
@click.option("--num-aug", type=click.IntRange(0), default=0, show_default=True, help="Augmentations per train puzzle.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--verify", is_flag=True, help="Solve every puzzle and refuse one without a unique solution.")
@click.option("--force", is_flag=True, help="Replace an existing dataset in --out.")
@verbosity_options
def data_sudoku(csv_dir, hub_repo, out, subsample_size, min_difficulty, num_aug, seed, verify, force):
    """Build a Sudoku dataset from the official CSV format (source,question,answer,rating)."""
    refuse_existing(out, force)
    csv_dir = csv_source(csv_dir, hub_repo)
    from hrm_shared.data.sudoku import build_sudoku_dataset

    summary(f"Sudoku dataset written to {out}",
             build_sudoku_dataset(csv_dir, out, subsample_size, min_difficulty, num_aug, seed, force, verify))


@data.command("sudoku-extreme")
@click.option("--out", type=PathType, required=True, help="Directory for train.csv and test.csv.")
@click.option("--train", "n_train", type=click.IntRange(1), required=True, help="Train puzzles.")
@click.option("--test", "n_test", type=click.IntRange(1), required=True, help="Test puzzles.")
@click.option("--pool", "pools", type=click.Path(path_type=Path, exists=True, dir_okay=False), multiple=True,
              help="Puzzle list (one per line, '.' blanks) to draw from besides generated puzzles; repeatable.")
@click.option("--target-rating", type=float, default=22.0, show_default=True, help="Mean guesses to aim for.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace existing CSV files in --out.")
@verbosity_options
def data_sudoku_extreme(out, n_train, n_test, pools, target_rating, seed, force):
    """Generate hard unique-solution Sudoku puzzles (Sudoku-Extreme equivalent) as official CSV files."""
    refuse_existing(out, force)
    from hrm_shared.data.sudoku_extreme import build_sudoku_extreme_csv

    summary(f"Sudoku-Extreme CSV written to {out} (build it with `hrm data sudoku --csv-dir {out}`)",
             build_sudoku_extreme_csv(out, n_train, n_test, list(pools), seed, target_rating, force))


@data.command("sudoku-small")
@click.option("--out", type=PathType, required=True, help="Output dataset directory.")
@click.option("--size", type=click.Choice(["4", "6", "9"]), default="4", show_default=True, help="Grid side.")
@click.option("--train", "n_train", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--test", "n_test", type=click.IntRange(1), default=200, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--blanks", type=click.IntRange(1), default=None,
              help="Blank cells in every puzzle (default: as many as keep the solution unique, a minimal puzzle).")
@click.option("--force", is_flag=True, help="Replace an existing dataset in --out.")
@verbosity_options
def data_sudoku_small(out, size, n_train, n_test, seed, blanks, force):
    """Generate a small Sudoku dataset (4x4, 6x6 or 9x9, unique solutions) for tests and quick CPU training."""
    refuse_existing(out, force)
    from hrm_shared.data.sudoku_small import build_small_sudoku

    summary(f"Small Sudoku dataset written to {out}",
             build_small_sudoku(out, int(size), n_train, n_test, seed, force=force, blanks=blanks))


@data.command("maze")
@click.option("--out", type=PathType, required=True, help="Directory for the CSV files and the dataset.")
@click.option("--train", "n_train", type=click.IntRange(1), required=True)
@click.option("--test", "n_test", type=click.IntRange(1), required=True)
@click.option("--size", type=click.IntRange(4, 30), default=30, show_default=True, help="Grid side.")
@click.option("--min-path", type=click.IntRange(1), default=110, show_default=True,
              help="Keep mazes whose shortest path is longer than this.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing dataset in --out.")
@verbosity_options
def data_maze(out, n_train, n_test, size, min_path, seed, force):
    """Generate Maze-Hard-style mazes (unique shortest path) as official CSV files and a dataset."""
    refuse_existing(out, force)
    from hrm_shared.data.maze_generate import generate_maze_dataset

    summary(f"Maze dataset written to {out}",
             generate_maze_dataset(out, n_train, n_test, size, min_path, seed, force))


@data.command("maze-csv")
@click.option("--csv-dir", type=ExistingDir, default=None, help="Directory holding train.csv and test.csv.")
@hub_option(MAZE_REPO)
@click.option("--out", type=PathType, required=True, help="Output dataset directory.")
@click.option("--force", is_flag=True, help="Replace an existing dataset in --out.")
@verbosity_options
def data_maze_csv(csv_dir, hub_repo, out, force):
    """Build a maze dataset from the official CSV format (e.g. a downloaded maze-30x30-hard-1k)."""
    refuse_existing(out, force)
    csv_dir = csv_source(csv_dir, hub_repo)
    from hrm_shared.data.maze import build_maze_dataset

    summary(f"Maze dataset written to {out}", build_maze_dataset(csv_dir, out, force))


@data.command("arc")
@click.option("--dirs", type=ExistingDir, required=True, multiple=True,
              help="ARC JSON root (its subdirectories hold task files); repeatable.")
@click.option("--out", type=PathType, required=True, help="Output dataset directory.")
@click.option("--num-aug", type=click.IntRange(0), default=1000, show_default=True, help="Augmentations per task.")
@click.option("--seed", type=click.IntRange(0), default=42, show_default=True)
@click.option("--strict", is_flag=True, help="Leave evaluation tasks out of training entirely.")
@click.option("--force", is_flag=True, help="Replace an existing dataset in --out.")
@verbosity_options
def data_arc(dirs, out, num_aug, seed, strict, force):
    """Build an ARC dataset from ARC-AGI / ConceptARC JSON directories."""
    refuse_existing(out, force)
    from hrm_shared.data.arc import build_arc_dataset

    summary(f"ARC dataset written to {out}", build_arc_dataset(list(dirs), out, num_aug, seed, strict, force))


@data.command("info")
@click.argument("root", type=PathType)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def data_info(root, as_json):
    """Show a dataset's metadata, counts and fingerprint."""
    from hrm_shared.core.format import dataset_info

    info = dataset_info(root)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"{root}  fingerprint {info['fingerprint']}")
    for split, s in info["splits"].items():
        click.echo(f"  {split:5s}  {s['examples']:>9,} examples  {s['puzzles']:>8,} puzzles  {s['groups']:>7,} groups"
                   f"  vocab {s['vocab_size']}  seq_len {s['seq_len']}  puzzle ids {s['num_puzzle_identifiers']}")


@data.command("validate")
@click.argument("root", type=PathType)
def data_validate(root):
    """Check a dataset; exit status 1 and one line per problem when it is invalid."""
    from hrm_shared.core.format import validate_dataset

    problems = validate_dataset(root)
    for p in problems:
        click.echo(f"invalid: {p}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{root}: valid")


@data.command("show")
@click.argument("root", type=PathType)
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--index", type=click.IntRange(0), default=0, show_default=True, help="Example index.")
@click.option("--png", type=PathType, default=None, help="Also write the example as a PNG (ARC).")
@click.option("--colour/--no-colour", "colour", default=None,
              help="ARC grids as coloured blocks or as digits  [default: colour on a terminal, digits otherwise].")
@force_option
def data_show(root, split, index, png, colour, force):
    """Print one example (input and label) of a dataset."""
    from hrm_shared.app.outputs import check_output_file
    from hrm_shared.puzzles.show import render_example

    check_output_file(png, force)
    if colour is None:  # click strips colour codes from output that is not a terminal: digits read there
        colour = click.get_text_stream("stdout").isatty()
    click.echo(render_example(root, split, index, png, colour), color=colour)
