"""`hrm train` and `hrm demo`: training runs, started or resumed, and the small train-and-solve demo."""

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import click

from hrm_shared.app.cli.common import (
    PRESET_HELP,
    ExistingDir,
    PathType,
    backend_option,
    device_option,
    set_option,
    summary,
    verbosity_options,
    verify_option,
)
from hrm_shared.core.errors import install_hint
from hrm_shared.core.registry import FAMILIES


@click.command("train")
@backend_option
@click.option("--data", "data_dir", type=ExistingDir, default=None, help="Dataset to train on (a new run needs it).")
@click.option("--preset", "preset_name", default=None, metavar="NAME",
              help=f"{PRESET_HELP}  [default: from the dataset's puzzle kind and the device: the reference's recipe "
                   f"on an NVIDIA GPU (sudoku, maze, arc), else sudoku-laptop, arc-laptop, or demo for a Sudoku "
                   f"smaller than 9x9]")
@set_option
@click.option("--config", "config_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              metavar="FILE", help="A run's recipe in a YAML or JSON file: a preset and overrides, or a whole config "
                                   "as `hrm config` prints it; --set applies on top.")
@click.option("--out", type=PathType, default=None, help="New run directory.")
@click.option("--resume", type=PathType, default=None, help="Continue the run in this directory from its last/.")
@click.option("--max-steps", type=click.IntRange(1), default=None,
              help="Stop at this step, counted from the start of the run.")
@click.option("--max-minutes", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many minutes of this invocation.")
@click.option("--eval-interval", type=click.IntRange(0), default=None,
              help="Steps between evaluations (0: at the end only)  [default: the config's eval_interval epochs].")
@click.option("--checkpoint-every", type=click.IntRange(1), default=None,
              help="Steps between writes of RUN/last  [default: 1000].")
@click.option("--seed", type=click.IntRange(0), default=None, help="Seed of weights, data order and exploration.")
@device_option
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile / mx.compile the step  [default: mx.compile on, torch.compile on CUDA only].")
@click.option("--dry-run", is_flag=True,
              help="Print the predicted peak memory, the device's usable memory, whether the run fits and the "
                   "largest global batch that does; start nothing (--out is not needed).")
@click.option("--json", "json_path", type=PathType, default=None,
              help="With --dry-run: write its figures to this JSON file.")
@click.option("--wandb", "wandb_project", default=None, metavar="PROJECT",
              help=f"Also log the metrics to this Weights & Biases project ({install_hint('wandb')}; "
                   "WANDB_MODE=offline logs offline).")
@click.option("--tensorboard/--no-tensorboard", default=None,
              help=f"Also write the metrics as TensorBoard events in RUN/tensorboard ({install_hint('tensorboard')}).")
@click.option("--force", is_flag=True,
              help="Start over in --out when it holds a run without a checkpoint (one stopped before its first); "
                   "with --dry-run, replace an existing --json file.")
@verify_option
@click.pass_context
@verbosity_options
def train_cmd(ctx, backend, data_dir, preset_name, overrides, config_file, out, resume, max_steps, max_minutes,
              eval_interval, checkpoint_every, seed, device, compile_, dry_run, json_path, wandb_project, tensorboard,
              force, verify):
    """Train HRM: start a run with --data and --out, or continue one with --resume RUN; --dry-run predicts the run's
    peak memory instead. A run stopped by Ctrl-C, SIGTERM or SIGHUP saves and exits with status 130, 143 or 129."""
    from hrm_shared.app.api import choose_preset
    from hrm_shared.app.backend import default_backend, import_backend
    from hrm_shared.app.config_file import read_config_file
    from hrm_shared.app.outputs import check_output_file
    from hrm_shared.app.run import new_run, read_run_config, resume_run, run_config, run_lock
    from hrm_shared.app.tracking import check_installed
    from hrm_shared.app.train_loop import STOP_STATUS, RunOptions, train
    from hrm_shared.core.config import preset
    from hrm_shared.core.distributed import launched_rank

    if json_path is not None and not dry_run:
        raise click.UsageError("--json goes with --dry-run")
    if (out is None) == (resume is None) and not (dry_run and resume is None):
        raise click.UsageError("give either --out RUN (a new run) or --resume RUN")
    if config_file is not None and (preset_name is not None or resume is not None):
        raise click.UsageError("--config names the preset and starts a new run: give it without --preset and --resume")
    check_output_file(json_path, force)
    with run_lock(out or resume) if not dry_run and launched_rank() == 0 else nullcontext():
        given = {"eval_interval": eval_interval, "checkpoint_every": checkpoint_every, "wandb": wandb_project,
                 "tensorboard": tensorboard}
        for option in ("wandb", "tensorboard"):
            if given[option] and not dry_run:
                check_installed(option)
        if resume is None:
            if data_dir is None:
                raise click.UsageError("a new run needs --data DATASET")
            name = backend or default_backend()
            package = import_backend(name)
            start, overrides = None, list(overrides)
            if config_file is not None:
                recipe = read_config_file(config_file)
                preset_name, start, overrides = recipe.preset, recipe.start, recipe.overrides + overrides
            elif preset_name is None:
                preset_name = choose_preset(package, data_dir, device)
            if dry_run:  # the run's config without creating its directory
                config = run_config(*(start or preset(preset_name)), data_dir, overrides, seed)
            else:
                config = new_run(out, preset_name, data_dir, overrides, seed, name, given, force,
                                 check=lambda config: _check_start(package, config, device, verify), start=start)
            run, options = out, given
        else:
            config = resume_run(resume, preset_name, data_dir, list(overrides), seed)
            _, saved = read_run_config(resume)
            package = import_backend(backend or config.backend or default_backend())
            run, options = resume, {k: saved.get(k) if v is None else v for k, v in given.items()}
            for option in ("wandb", "tensorboard"):
                if options[option] and not dry_run:
                    check_installed(option)
        if dry_run:
            _dry_run(package, config, device, json_path, max_steps, options["eval_interval"])
            return
        if resume is not None:
            _check_start(package, config, device, verify)
        run_options = RunOptions(max_steps=max_steps, max_minutes=max_minutes, eval_interval=options["eval_interval"],
                                 checkpoint_every=options["checkpoint_every"] or 1000, device=device, compile=compile_,
                                 wandb=options["wandb"], tensorboard=bool(options["tensorboard"]), verify=verify,
                                 on_second_interrupt=quit_now)
        result = train(package, run, config, run_options, resume is not None)
        if launched_rank() == 0:
            summary("Training stopped", result)
        ctx.exit(STOP_STATUS.get(result["stopped"], 0))


def quit_now() -> None:
    """What a second Ctrl-C does to `hrm train`: end the process at once, nothing saved, even inside a long step
    (train_loop.interrupt_flag calls it from its signal thread)."""
    from hrm_shared.app.train_loop import QUIT_STATUS

    print("\nCtrl-C again: quitting without saving", file=sys.stderr, flush=True)
    os._exit(QUIT_STATUS)


def _dry_run(package, config, device: str | None, json_path: Path | None, max_steps: int | None,
             eval_interval: int | None) -> None:
    """Print (and write to `json_path`) the memory prediction of `config` on `package`'s `device`, the run's plan (to
    `max_steps`, evaluating every `eval_interval` steps when given) and the time estimate of its run there."""
    from hrm_shared.app.eta import device_flops, run_estimate, train_plan
    from hrm_shared.app.memory import format_report, memory_record
    from hrm_shared.core.atomic import write_file
    from hrm_shared.core.format import read_metadata

    record = memory_record(package, config.model, config.train, device)
    click.echo(format_report(record))
    metadata = read_metadata(Path(config.dataset["path"]), "train")
    plan = train_plan(config.train, metadata, eval_interval).until(max_steps)
    steps = plan.last_step
    click.echo(f"Plan: {plan.describe()}")
    flops = device_flops(record["backend"], record["device"], package.bench.device_name(record["device"]))
    lines, per_step = run_estimate(flops, config.model, config.train, config.dataset.get("kind"), metadata, steps,
                                   record["processes"], record["device"])
    click.echo("\n".join(lines or [f"Time: unknown on {record['device']} until steps are measured"]))
    record.update(steps=steps, last_step=plan.last_step, eval_steps=list(plan.eval_steps),
                  lr_schedule_steps=plan.total_steps, estimated_seconds_per_step=per_step)
    if json_path is not None:
        write_file(json_path, json.dumps(record, indent=2) + "\n")
        click.echo(f"Wrote {json_path}")


def _check_start(package, config, device: str | None, verify: bool) -> None:
    """Refuse `config` when not even one row per process fits the device (memory.check_trainable) or, with
    `verify`, when its dataset's files changed since the build (format.verify_dataset); warn on stderr (rank 0) when
    the predicted peak memory of its batch exceeds what the device can give."""
    from hrm_shared.app.memory import check_trainable, memory_record, warning
    from hrm_shared.core.distributed import launched_rank
    from hrm_shared.core.format import verify_dataset

    record = memory_record(package, config.model, config.train, device)
    check_trainable(record)
    if verify:
        verify_dataset(Path(config.dataset["path"]))
    if record["fits"] is False and launched_rank() == 0:
        click.echo(click.style(warning(record), fg="yellow"), err=True)


def _is_demo_record(path: Path) -> bool:
    """Whether the file `path` is the --json record of an earlier `hrm demo` (its keys say so)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and {"exact_accuracy", "test_examples", "seconds", "backend"} <= set(record)


@click.command()
@backend_option
@click.option("--out", type=PathType, default=Path("runs/demo"), show_default=True,
              help="Directory for the demo's dataset and run (replaced).")
@click.option("--json", "json_path", type=PathType, default=None,
              help="Write exact_accuracy, test_examples, seconds, backend and model to this JSON file.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--model", type=click.Choice(list(FAMILIES)), default="trm", show_default=True,
              help="The model family: TRM (preset trm-demo-9, or trm-demo for --size 4) or HRM (demo-9, demo); each "
                   "family's registry entry names its demo presets.")
@click.option("--size", type=click.Choice(["9", "4"]), default="9", show_default=True,
              help="9: 9x9 puzzles with 45 blank cells and a unique solution; 4: minimal 4x4 puzzles.")
@click.option("--eval-interval", type=click.IntRange(0), default=0, show_default=True,
              help="Steps between evaluations on the held-out puzzles (0: at the end only); scripts/bench_demo.py "
                   "--from OUT draws them.")
@click.option("--force", is_flag=True, help="Replace an existing --json file that an earlier demo did not write.")
@verbosity_options
def demo(backend, out, json_path, seed, model, size, eval_interval, force):
    """Build a Sudoku set, train a small TRM (or HRM) on it, evaluate it and solve a held-out puzzle: about ten
    minutes on two CPU cores with torch for 9x9, five for 4x4. HRM on 9x9 (demo-9) trains 7,500 steps, about an hour
    there (2.3 steps a second), and is not the match of TRM on 9x9 (docs/demo.md)."""
    from hrm_shared.app.backend import default_backend
    from hrm_shared.app.demo import run_demo
    from hrm_shared.app.outputs import check_output_file

    check_output_file(json_path, force, _is_demo_record)
    result = run_demo(out, backend or default_backend(), seed, family=model, size=int(size),
                      eval_interval=eval_interval)
    if json_path is not None:
        from hrm_shared.core.atomic import write_file

        write_file(json_path, json.dumps(result, indent=2) + "\n")
