"""The `hrm` command line. Heavy modules (builders, backends) are imported inside the command that uses them."""

import json
import sys
from pathlib import Path
from types import ModuleType

import click

from shared.backend import BACKENDS
from shared.errors import HRMError

PathType = click.Path(path_type=Path)
ExistingDir = click.Path(path_type=Path, exists=True, file_okay=False)


class Group(click.Group):
    """A click group that turns HRMError into a one-line `Error: ...` and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HRMError as e:
            raise click.ClickException(str(e)) from None


def _refuse_existing(out: Path, force: bool) -> None:
    """Fail before any work when --out already holds files (the builders check again when they write)."""
    from shared.data.format import check_output

    check_output(out, force)


def _summary(title: str, summary: dict) -> None:
    click.echo(click.style(title, bold=True))
    width = max(map(len, summary))
    for key, value in summary.items():
        click.echo(f"  {key:<{width}}  {value}")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hrm")
def main() -> None:
    """Hierarchical Reasoning Model: datasets, training and evaluation in MLX and PyTorch."""


@main.group(cls=Group)
def data() -> None:
    """Build, inspect and validate puzzle datasets."""


@data.command("sudoku")
@click.option("--csv-dir", type=ExistingDir, required=True, help="Directory holding train.csv and test.csv.")
@click.option("--out", type=PathType, required=True, help="Output dataset directory.")
@click.option("--subsample-size", type=click.IntRange(1), default=None, help="Keep this many train puzzles.")
@click.option("--min-difficulty", type=int, default=None, help="Keep puzzles rated at least this.")
@click.option("--num-aug", type=click.IntRange(0), default=0, show_default=True, help="Augmentations per train puzzle.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--verify", is_flag=True, help="Solve every puzzle and refuse one without a unique solution.")
@click.option("--force", is_flag=True, help="Replace an existing dataset in --out.")
def data_sudoku(csv_dir, out, subsample_size, min_difficulty, num_aug, seed, verify, force):
    """Build a Sudoku dataset from the official CSV format (source,question,answer,rating)."""
    _refuse_existing(out, force)
    from shared.data.sudoku import build_sudoku_dataset

    _summary(f"Sudoku dataset written to {out}",
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
def data_sudoku_extreme(out, n_train, n_test, pools, target_rating, seed, force):
    """Generate hard unique-solution Sudoku puzzles (Sudoku-Extreme equivalent) as official CSV files."""
    _refuse_existing(out, force)
    from shared.data.sudoku_extreme import build_sudoku_extreme_csv

    _summary(f"Sudoku-Extreme CSV written to {out} (build it with `hrm data sudoku --csv-dir {out}`)",
             build_sudoku_extreme_csv(out, n_train, n_test, list(pools), seed, target_rating, force))


@data.command("sudoku-small")
@click.option("--out", type=PathType, required=True, help="Output dataset directory.")
@click.option("--size", type=click.Choice(["4", "6", "9"]), default="4", show_default=True, help="Grid side.")
@click.option("--train", "n_train", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--test", "n_test", type=click.IntRange(1), default=200, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing dataset in --out.")
def data_sudoku_small(out, size, n_train, n_test, seed, force):
    """Generate a small Sudoku dataset (4x4, 6x6 or easy 9x9) for tests and quick CPU training."""
    _refuse_existing(out, force)
    from shared.data.sudoku_small import build_small_sudoku

    _summary(f"Small Sudoku dataset written to {out}",
             build_small_sudoku(out, int(size), n_train, n_test, seed, force=force))


@data.command("maze")
@click.option("--out", type=PathType, required=True, help="Directory for the CSV files and the dataset.")
@click.option("--train", "n_train", type=click.IntRange(1), required=True)
@click.option("--test", "n_test", type=click.IntRange(1), required=True)
@click.option("--size", type=click.IntRange(4, 30), default=30, show_default=True, help="Grid side.")
@click.option("--min-path", type=click.IntRange(1), default=110, show_default=True,
              help="Keep mazes whose shortest path is longer than this.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing dataset in --out.")
def data_maze(out, n_train, n_test, size, min_path, seed, force):
    """Generate Maze-Hard-style mazes (unique shortest path) as official CSV files and a dataset."""
    _refuse_existing(out, force)
    from shared.data.maze_generate import generate_maze_dataset

    _summary(f"Maze dataset written to {out}",
             generate_maze_dataset(out, n_train, n_test, size, min_path, seed, force))


@data.command("maze-csv")
@click.option("--csv-dir", type=ExistingDir, required=True, help="Directory holding train.csv and test.csv.")
@click.option("--out", type=PathType, required=True, help="Output dataset directory.")
@click.option("--force", is_flag=True, help="Replace an existing dataset in --out.")
def data_maze_csv(csv_dir, out, force):
    """Build a maze dataset from the official CSV format (e.g. a downloaded maze-30x30-hard-1k)."""
    _refuse_existing(out, force)
    from shared.data.maze import build_maze_dataset

    _summary(f"Maze dataset written to {out}", build_maze_dataset(csv_dir, out, force))


@data.command("arc")
@click.option("--dirs", type=ExistingDir, required=True, multiple=True,
              help="ARC JSON root (its subdirectories hold task files); repeatable.")
@click.option("--out", type=PathType, required=True, help="Output dataset directory.")
@click.option("--num-aug", type=click.IntRange(0), default=1000, show_default=True, help="Augmentations per task.")
@click.option("--seed", type=click.IntRange(0), default=42, show_default=True)
@click.option("--strict", is_flag=True, help="Leave evaluation tasks out of training entirely.")
@click.option("--force", is_flag=True, help="Replace an existing dataset in --out.")
def data_arc(dirs, out, num_aug, seed, strict, force):
    """Build an ARC dataset from ARC-AGI / ConceptARC JSON directories."""
    _refuse_existing(out, force)
    from shared.data.arc import build_arc_dataset

    _summary(f"ARC dataset written to {out}", build_arc_dataset(list(dirs), out, num_aug, seed, strict, force))


@data.command("info")
@click.argument("root", type=PathType)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def data_info(root, as_json):
    """Show a dataset's metadata, counts and fingerprint."""
    from shared.data.format import dataset_info

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
    from shared.data.format import validate_dataset

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
def data_show(root, split, index, png):
    """Print one example (input and label) of a dataset."""
    from shared.data.show import render_example

    click.echo(render_example(root, split, index, png))


@main.command()
@click.option("--out", type=PathType, default=Path("runs/demo-data"), show_default=True,
              help="Where to write the demo dataset.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
def demo(out, seed):
    """Build a small 4x4 Sudoku dataset, validate it and show a few puzzles."""
    from shared.data.format import validate_dataset
    from shared.data.show import render_example
    from shared.data.sudoku_small import build_small_sudoku

    _summary(f"Demo dataset written to {out}", build_small_sudoku(out, 4, 1000, 200, seed, force=True))
    problems = validate_dataset(out)
    if problems:
        raise HRMError(f"the demo dataset is invalid: {problems[0]}")
    click.echo(f"{out}: valid")
    for index in range(2):
        click.echo(render_example(out, "test", index, None))


@main.command("config")
@click.option("--preset", "preset_name", default="sudoku", show_default=True, help="Preset to start from.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field; repeatable.")
def config_cmd(preset_name, overrides):
    """Print the model and training config of a preset with overrides applied."""
    from shared.config import apply_overrides, preset

    model, train = apply_overrides(*preset(preset_name), list(overrides))
    click.echo(json.dumps({"model": model.to_dict(), "train": train.to_dict()}, indent=2))


@main.command("init")
@click.argument("out", type=PathType)
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Backend that writes it  [default: mlx on Apple silicon, else torch].")
@click.option("--preset", "preset_name", default="sudoku", show_default=True, help="Preset to start from.")
@click.option("--data", "data_dir", type=ExistingDir, required=True,
              help="Dataset the model is for (its vocab_size, seq_len and puzzle ids).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field; repeatable.")
@click.option("--seed", type=click.IntRange(0), default=None, help="Initialisation seed  [default: the preset's].")
@click.option("--force", is_flag=True, help="Replace an existing checkpoint in OUT.")
def init_cmd(out, backend, preset_name, data_dir, overrides, seed, force):
    """Write an untrained checkpoint (the reference's initialisation, the same in both backends) to OUT."""
    from shared.backend import default_backend
    from shared.checkpoint import init_checkpoint

    _summary(f"Untrained checkpoint written to {out}",
             init_checkpoint(out, backend or default_backend(), preset_name, data_dir, list(overrides), seed, force))


@main.command("convert")
@click.argument("paths", nargs=-1, type=PathType, metavar="[SRC] DST")
@click.option("--to", type=click.Choice(BACKENDS), default=None,
              help="Backend of the new checkpoint (needed with SRC DST; torch by default with --from-official).")
@click.option("--from-official", "step_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="Import the reference's step_N file (all_config.yaml beside it) instead.")
@click.option("--data", "data_dir", type=ExistingDir, default=None,
              help="With --from-official: the dataset the checkpoint was trained on.")
@click.option("--force", is_flag=True, help="Replace an existing checkpoint in DST.")
def convert_cmd(paths, to, step_file, data_dir, force):
    """Convert a checkpoint for the other backend, or import the reference's.

    `hrm convert SRC DST --to mlx` copies SRC bit for bit; `hrm convert --from-official STEP_FILE --data DATA DST`
    imports the reference's step_N file with the all_config.yaml beside it and the dataset it was trained on."""
    if step_file is None:
        if len(paths) != 2 or to is None or data_dir is not None:
            raise click.UsageError("give SRC DST and --to {torch,mlx} (--data goes with --from-official)")
        from convert.backends import convert_checkpoint

        _summary(f"Checkpoint converted for {to}", convert_checkpoint(paths[0], paths[1], to, force))
        return
    if len(paths) != 1 or data_dir is None:
        raise click.UsageError("with --from-official give --data DATA and one DST")
    from shared.backend import import_backend

    import_backend("torch")  # the reference's step files are torch pickles
    from convert.official import import_official

    _summary(f"Official checkpoint imported to {paths[0]}",
             import_official(step_file, data_dir, paths[0], to or "torch", force))


def _backend(name: str | None) -> tuple[str, ModuleType]:
    """(backend name, its package with `checkpoint` and `evaluate` loaded); `name` None picks the default."""
    import importlib

    from shared.backend import default_backend, import_backend

    name = name or default_backend()
    package = import_backend(name)
    importlib.import_module(f"{package.__name__}.evaluate")
    return name, package


_backend_option = click.option("--backend", type=click.Choice(BACKENDS), default=None,
                               help="Backend to run on  [default: mlx on Apple silicon, else torch].")
_device_option = click.option("--device", default=None, help="torch: cpu, cuda, cuda:N or mps; mlx: cpu or gpu  "
                                                            "[default: cuda or gpu when present].")


@main.command("evaluate")
@click.argument("checkpoint", type=PathType)
@click.argument("data_dir", metavar="DATA", type=PathType)
@_backend_option
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Examples per batch  [default: the checkpoint's global_batch_size].")
@_device_option
@click.option("--save-outputs", type=PathType, default=None,
              help="Write predictions, labels, q_halt_logits, puzzle_identifiers (a row per example) to this .npz.")
@click.option("--json", "json_path", type=PathType, default=None, help="Write the metrics to this JSON file.")
def evaluate_cmd(checkpoint, data_dir, backend, batch_size, device, save_outputs, json_path):
    """Score CHECKPOINT on the test split of dataset DATA; each example runs halt_max_steps segments."""
    import numpy as np

    from shared.checkpoint import check_fits_dataset, read_checkpoint_config
    from shared.data.format import read_metadata

    check_fits_dataset(read_checkpoint_config(checkpoint).model, read_metadata(data_dir, "test"), f"{data_dir}/test")
    name, package = _backend(backend)
    model, config = package.checkpoint.load_checkpoint(checkpoint, device)
    batch_size = batch_size or config.train.global_batch_size
    metrics, outputs = package.evaluate.evaluate(model, data_dir, batch_size, keep_outputs=save_outputs is not None)
    _summary(f"{checkpoint} on {data_dir} (test, {name})",
             {k: f"{v:,}" if k == "count" else f"{v:.4f}" for k, v in metrics.items()})
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"metrics": metrics, "checkpoint": str(checkpoint), "data": str(data_dir),
                                         "backend": name, "batch_size": batch_size}, indent=2) + "\n")
    if save_outputs is not None:
        save_outputs.parent.mkdir(parents=True, exist_ok=True)
        with save_outputs.open("wb") as f:
            np.savez(f, **outputs)


@main.command("solve")
@click.argument("checkpoint", type=PathType)
@click.argument("puzzle")
@_backend_option
@_device_option
def solve_cmd(checkpoint, puzzle, backend, device):
    """Show CHECKPOINT's answer to one PUZZLE and whether it is valid.

    PUZZLE is a Sudoku string (n*n digits, '.' or 0 for blanks) for a Sudoku checkpoint, or the path of a maze
    text file (one line of '# SG' characters per row) for a maze checkpoint.
    """
    from shared.checkpoint import read_checkpoint_config
    from shared.solve import read_puzzle, show_answer

    config = read_checkpoint_config(checkpoint)
    given = read_puzzle(config.model, puzzle)
    _, package = _backend(backend)
    model, _ = package.checkpoint.load_checkpoint(checkpoint, device)
    answer = package.evaluate.predict_numpy(model, given.batch())
    text, _ = show_answer(given, answer["predictions"][0])
    click.echo(text)
    click.echo(f"q_halt logit after {config.model.halt_max_steps} segments: {answer['q_halt_logits'][0]:+.3f} "
               f"(> 0: the model believes its answer)")
