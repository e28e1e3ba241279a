"""`hrm config`, `hrm init`, `hrm convert`, `hrm evaluate` and `hrm solve`: checkpoints and what uses them."""

import json

import click

from hrm_shared.app.cli.common import (
    ExistingDir,
    PathType,
    StepFile,
    backend_option,
    checkpoint_argument,
    device_option,
    force_option,
    load_backend,
    preset_option,
    set_option,
    summary,
    verbosity_options,
    verify_option,
)
from hrm_shared.core.config import MAX_DEPTH
from hrm_shared.core.contract import BACKENDS


@click.command("config")
@preset_option
@set_option
def config_cmd(preset_name, overrides):
    """Print the model family, model and training config of a preset with overrides applied (vocab_size, seq_len
    and num_puzzle_identifiers come from a dataset, so they are not printed)."""
    from hrm_shared.core.checkpoint import DATA_FIELDS
    from hrm_shared.core.config import apply_overrides, preset
    from hrm_shared.core.registry import family_of

    model, train = apply_overrides(*preset(preset_name), list(overrides))
    fields = {k: v for k, v in model.to_dict().items() if k not in DATA_FIELDS}
    click.echo(json.dumps({"family": family_of(model).name, "model": fields, "train": train.to_dict(),
                           "from_the_dataset": list(DATA_FIELDS)}, indent=2))
    click.echo(f"{', '.join(DATA_FIELDS)} come from the dataset a run or checkpoint is made for (--data)", err=True)


@click.command("init")
@click.argument("out", type=PathType)
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Backend that writes it  [default: mlx on Apple silicon, else torch].")
@preset_option
@click.option("--data", "data_dir", type=ExistingDir, required=True,
              help="Dataset the model is for (its vocab_size, seq_len and puzzle ids).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field; repeatable.")
@click.option("--seed", type=click.IntRange(0), default=None, help="Initialisation seed  [default: the preset's].")
@click.option("--force", is_flag=True, help="Replace an existing checkpoint in OUT.")
def init_cmd(out, backend, preset_name, data_dir, overrides, seed, force):
    """Write an untrained checkpoint (the reference's initialisation, the same in both backends) to OUT."""
    from hrm_shared.app.backend import default_backend
    from hrm_shared.app.run import init_checkpoint

    summary(f"Untrained checkpoint written to {out}",
             init_checkpoint(out, backend or default_backend(), preset_name, data_dir, list(overrides), seed, force))


@click.command("convert")
@click.argument("paths", nargs=-1, type=PathType, metavar="[SRC] DST")
@click.option("--to", type=click.Choice(BACKENDS), default=None,
              help="Backend of the new checkpoint (needed with SRC DST; torch by default with --from-official).")
@click.option("--from-official", "step_file", type=StepFile(), default=None,
              help="Import the reference's step_N file (all_config.yaml beside it) instead; hub:REPO downloads it "
                   "from that Hugging Face model repo.")
@click.option("--data", "data_dir", type=ExistingDir, default=None,
              help="With --from-official: the dataset the checkpoint was trained on.")
@click.option("--force", is_flag=True, help="Replace an existing checkpoint in DST.")
@verbosity_options
def convert_cmd(paths, to, step_file, data_dir, force):
    """Convert a checkpoint for the other backend, or import the reference's.

    `hrm convert SRC DST --to mlx` copies SRC (a checkpoint, a run's latest, or hub:OWNER/REPO) bit for bit;
    `hrm convert --from-official STEP_FILE --data DATA DST` imports the reference's step_N file with the
    all_config.yaml beside it and the dataset it was trained on."""
    if step_file is None:
        if len(paths) != 2 or to is None or data_dir is not None:
            raise click.UsageError("give SRC DST and --to {torch,mlx} (--data goes with --from-official)")
        from hrm_convert.backends import convert_checkpoint
        from hrm_shared.app.api import checkpoint_path

        summary(f"Checkpoint converted for {to}",
                convert_checkpoint(checkpoint_path(str(paths[0])), paths[1], to, force))
        return
    if len(paths) != 1 or data_dir is None:
        raise click.UsageError("with --from-official give --data DATA and one DST")
    from hrm_shared.app.api import import_step_file

    summary(f"Official checkpoint imported to {paths[0]}",
             import_step_file(to or "torch", step_file, data_dir, paths[0], force))


@click.command("evaluate")
@click.argument("checkpoint", metavar="CHECKPOINT|RUN|hub:REPO", callback=checkpoint_argument)
@click.argument("data_dir", metavar="DATA", type=PathType)
@backend_option
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Examples per batch  [default: the checkpoint's global_batch_size].")
@device_option
@click.option("--save-outputs", type=PathType, default=None,
              help="Write predictions, labels, q_halt_logits, puzzle_identifiers (a row per example) to this .npz.")
@click.option("--json", "json_path", type=PathType, default=None, help="Write the metrics to this JSON file.")
@click.option("--submission", "submission_path", type=PathType, default=None,
              help="ARC: write the two most voted answers per test input to this JSON file (ARC Prize format).")
@click.option("--halt-max-steps", "segments", type=click.IntRange(1, MAX_DEPTH), default=None,
              help="Segments each example runs, any M >= 1  [default: the checkpoint's halt_max_steps].")
@click.option("--halt", "adaptive", is_flag=True,
              help="Also score each example at its own Q-halt decision within M segments (the adaptive mode) and "
                   "print the mean segments used.")
@click.option("--save-trajectory", type=PathType, default=None,
              help="Write every segment's predictions [N, M, seq_len], q_halt_logits and q_continue_logits [N, M] "
                   "and puzzle_identifiers [N] to this .npz.")
@force_option
@verify_option
@verbosity_options
def evaluate_cmd(checkpoint, data_dir, backend, batch_size, device, save_outputs, json_path, submission_path,
                 segments, adaptive, save_trajectory, force, verify):
    """Score CHECKPOINT on the test split of dataset DATA; each example runs halt_max_steps segments (or M with
    --halt-max-steps).

    On an ARC dataset it also votes over the augmented views of each test input and prints pass@1, pass@2 (the
    official metric) and pass@10."""
    import numpy as np

    from hrm_shared.app.api import load
    from hrm_shared.app.outputs import check_output_files
    from hrm_shared.app.report import OUTPUT_KEYS
    from hrm_shared.app.scoring import score
    from hrm_shared.app.trajectory import Adaptive, halting_rule, write_trajectory
    from hrm_shared.core.atomic import replace_file, write_file
    from hrm_shared.core.checkpoint import check_fits_dataset, read_checkpoint_config
    from hrm_shared.core.errors import HRMError
    from hrm_shared.core.format import check_dataset, read_metadata, verify_dataset
    from hrm_shared.puzzles.arc_vote import arc_vote, pass_rates, submission
    from hrm_shared.puzzles.kinds import check_checkpoint_dataset

    check_output_files((save_outputs, json_path, submission_path, save_trajectory), force)
    saved = read_checkpoint_config(checkpoint)
    check_dataset(data_dir)
    metadata = read_metadata(data_dir, "test")
    check_fits_dataset(saved.model, metadata, f"{data_dir}/test")
    if warning := check_checkpoint_dataset(saved.dataset, data_dir, checkpoint):
        click.echo(f"warning: {warning}", err=True)
    vote = arc_vote(data_dir)  # before the evaluation: it may refuse the names
    if submission_path is not None and vote is None:
        raise HRMError(f"--submission is for ARC datasets; {data_dir} holds vocab_size {metadata.vocab_size}, "
                       f"seq_len {metadata.seq_len} puzzles")
    if verify:
        verify_dataset(data_dir)
    name, package = load_backend(backend)
    model = load(name, checkpoint, device, verify)
    config = model.checkpoint_config
    batch_size = batch_size or config.train.global_batch_size
    segments = segments or config.model.halt_max_steps
    halting = Adaptive(config.model, vote.fresh() if vote is not None else None) if adaptive else None
    scored = score(package, model, data_dir, batch_size, vote, [halting.add] if halting is not None else [],
                   keep_outputs=save_outputs is not None or save_trajectory is not None, segments=segments,
                   trajectory=adaptive or save_trajectory is not None)
    metrics, outputs = scored.metrics, scored.outputs
    summary(f"{checkpoint} on {data_dir} (test, {name}, {segments} segments)",
             {k: f"{v:,}" if k == "count" else f"{v:.4f}" for k, v in metrics.items()})
    record = {"metrics": metrics, "checkpoint": str(checkpoint), "data": str(data_dir), "backend": name,
              "batch_size": batch_size, "segments": segments}
    if halting is not None:
        record["adaptive"] = halting.result()
        summary(f"Adaptive: {halting_rule(config.model, segments)}",
                {k: f"{v:,}" if k == "count" else f"{v:.4f}" for k, v in record["adaptive"].items()})
    if vote is not None:
        record["arc"] = vote.score()
        summary(f"ARC score over {record['arc']['tasks']} tasks ({record['arc']['test_inputs']} test inputs; "
                f"{vote.voter.rows:,} predictions voted, {vote.voter.empty:,} empty)",
                {k: f"{v:.4f}" for k, v in pass_rates(record["arc"]).items()})
        if submission_path is not None:
            write_file(submission_path, json.dumps(submission(vote.voter, vote.tasks)) + "\n")
    if json_path is not None:
        write_file(json_path, json.dumps(record, indent=2) + "\n")
    if save_outputs is not None:
        with replace_file(save_outputs) as tmp, tmp.open("wb") as f:
            np.savez(f, **{k: outputs[k] for k in OUTPUT_KEYS})
    if save_trajectory is not None:
        write_trajectory(save_trajectory, outputs)


@click.command("solve")
@click.argument("checkpoint", metavar="CHECKPOINT|RUN|hub:REPO", callback=checkpoint_argument)
@click.argument("puzzle")
@backend_option
@device_option
@click.option("--steps", is_flag=True, help="Print the board after each segment, the cells that changed marked.")
@click.option("--task", default=None, metavar="NAME",
              help="Use the trained puzzle embedding of NAME, a puzzle the model was trained on (its identifiers.json; "
                   "an ARC task's own name)  [default: the blank puzzle's].")
@verify_option
def solve_cmd(checkpoint, puzzle, backend, device, steps, task, verify):
    """Show CHECKPOINT's answer to one PUZZLE and whether it is valid.

    PUZZLE is a Sudoku string (n*n digits, '.' or 0 for blanks) or a text file holding one for a Sudoku checkpoint,
    the path of a maze text file (one line of '# SG' characters per row) for a maze checkpoint, or an ARC grid as
    JSON (a list of rows of colours 0..9) or a JSON file holding one for an ARC checkpoint.
    """
    from hrm_shared.app.api import answer_tokens, load
    from hrm_shared.core.checkpoint import read_checkpoint_config
    from hrm_shared.puzzles.solve import read_puzzle, show_steps, solution

    config = read_checkpoint_config(checkpoint)
    read_puzzle(config.model, puzzle, config.dataset.get("kind"))  # a bad puzzle is refused before the model loads
    name, _ = load_backend(backend)
    given, answers = answer_tokens(name, load(name, checkpoint, device, verify), puzzle, task=task)
    predictions, q_halt = answers["segment_predictions"][0], answers["segment_q_halt_logits"][0]
    if steps:
        click.echo(show_steps(given, predictions, q_halt) + "\n")
    click.echo(solution(given, predictions, q_halt).text)


@click.command("push")
@click.argument("run", type=ExistingDir)
@click.argument("repo", metavar="OWNER/REPO")
@click.option("--private", is_flag=True, help="Create the Hub repo private (when it does not exist yet).")
@click.option("--out", type=PathType, default=None,
              help="Write the files to this new directory and upload nothing (to read the model card first).")
@verbosity_options
def push_cmd(run, repo, private, out):
    """Upload RUN's checkpoint to the Hugging Face Hub model repo OWNER/REPO with a model card.

    The checkpoint is the one the run's last evaluation scored (RUN/step_N; RUN/last when it never evaluated). The
    card (README.md) gives the model family, preset, parameter count, dataset kind and fingerprint, the measured
    accuracy and the command that measured it, the backend and the licence. `hrm evaluate hub:OWNER/REPO DATA` and
    load("hub:OWNER/REPO") read it back."""
    import tempfile
    from pathlib import Path

    from hrm_shared.app.card import build_upload
    from hrm_shared.app.hub import upload
    from hrm_shared.core.format import check_output

    if out is not None:
        check_output(out, False)
        summary(f"Files for {repo} written to {out} (nothing uploaded)", build_upload(run, out, repo))
        return
    with tempfile.TemporaryDirectory() as folder:
        built = build_upload(run, Path(folder), repo)
        commit = upload(Path(folder), repo, private, f"Upload {built['checkpoint']} with its model card")
    summary(f"Pushed {run} to {repo}", {**built, "commit": commit})
