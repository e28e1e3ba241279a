"""`hrm scaling` (inference-time scaling) and `hrm analyze pr` (the participation ratio of the final states): the
paper's analyses of a checkpoint on a dataset's test split."""

import json

import click

from hrm_shared.app.cli.common import (
    Group,
    PathType,
    backend_option,
    checkpoint_argument,
    device_option,
    force_option,
    load_backend,
    summary,
    verify_option,
)
from hrm_shared.core.config import MAX_DEPTH
from hrm_shared.core.errors import install_hint

batch_size_option = click.option("--batch-size", type=click.IntRange(1), default=None,
                                 help="Examples per batch  [default: the checkpoint's global_batch_size].")


def _load(checkpoint, data_dir, backend, device, verify):
    """Check CHECKPOINT against DATA as `hrm evaluate` does and load it -> (backend name, package, model, config)."""
    from hrm_shared.core.checkpoint import check_fits_dataset, read_checkpoint_config
    from hrm_shared.core.format import check_dataset, read_metadata, verify_dataset
    from hrm_shared.puzzles.kinds import check_checkpoint_dataset

    saved = read_checkpoint_config(checkpoint)
    check_dataset(data_dir)
    check_fits_dataset(saved.model, read_metadata(data_dir, "test"), f"{data_dir}/test")
    if warning := check_checkpoint_dataset(saved.dataset, data_dir, checkpoint):
        click.echo(f"warning: {warning}", err=True)
    if verify:
        verify_dataset(data_dir)
    name, package = load_backend(backend)
    model, config = package.checkpoint.load_checkpoint(checkpoint, device, verify)
    return name, package, model, config


def _title(checkpoint, data_dir) -> str:
    """A plot's title: the last two path parts of the checkpoint (RUN/last) on those of the dataset."""
    return f"{'/'.join(checkpoint.parts[-2:])} on {'/'.join(data_dir.parts[-2:])}"


@click.command("scaling")
@click.argument("checkpoint", type=PathType, callback=checkpoint_argument)
@click.argument("data_dir", metavar="DATA", type=PathType)
@click.option("--steps", "steps_text", default="1,2,4,8,16", show_default=True,
              help="Segment counts M to score, comma-separated (any M >= 1, past training's halt_max_steps too).")
@backend_option
@batch_size_option
@device_option
@click.option("--json", "json_path", type=PathType, default=None, help="Write the curve to this JSON file.")
@click.option("--png", "png_path", type=PathType, default=None,
              help="Draw the curve to this PNG (needs matplotlib)  [default: the --json file with .png].")
@force_option
@verify_option
def scaling_cmd(checkpoint, data_dir, steps_text, backend, batch_size, device, json_path, png_path, force, verify):
    """Inference-time scaling: exact accuracy (and ARC pass@k) of CHECKPOINT on DATA's test split after M segments,
    for each M of --steps, and in the adaptive mode (each example stops at its own Q-halt decision)."""
    from hrm_shared.app.outputs import check_output_files
    from hrm_shared.app.scaling import parse_steps, plot_scaling, scaling_curve
    from hrm_shared.core.atomic import write_file

    steps = parse_steps(steps_text)
    png_path = png_path or (json_path.with_suffix(".png") if json_path is not None else None)
    check_output_files((json_path, png_path), force)
    name, package, model, config = _load(checkpoint, data_dir, backend, device, verify)
    batch_size = batch_size or config.train.global_batch_size
    result = scaling_curve(package, model, config.model, data_dir, steps, batch_size)
    passes = [k for k in result["points"][0] if k.startswith("pass@")]
    summary(f"{checkpoint} on {data_dir} (test, {name}): {result['count']:,} examples by segments M",
            {f"M={p['segments']}": "  ".join([f"exact_accuracy {p['exact_accuracy']:.4f}",
                                              *(f"{k} {p[k]:.4f}" for k in passes)]) for p in result["points"]})
    adaptive = result["adaptive"]
    summary(f"Adaptive: {result['halting']}", {
        "exact_accuracy": f"{adaptive['exact_accuracy']:.4f}", "mean_segments": f"{adaptive['mean_segments']:.3f}",
        **{k: f"{adaptive[k]:.4f}" for k in passes}})
    record = {**result, "checkpoint": str(checkpoint), "data": str(data_dir), "backend": name,
              "batch_size": batch_size, "trained_halt_max_steps": config.model.halt_max_steps}
    if json_path is not None:
        write_file(json_path, json.dumps(record, indent=2) + "\n")
    if png_path is not None:
        drawn = plot_scaling(result, png_path, _title(checkpoint, data_dir))
        click.echo(f"curve drawn to {drawn}" if drawn else "no curve drawn: matplotlib is not installed "
                   f"({install_hint('plot')})")


@click.group(cls=Group)
def analyze() -> None:
    """Analyses of a trained model's internal states."""


@analyze.command("pr")
@click.argument("checkpoint", type=PathType, callback=checkpoint_argument)
@click.argument("data_dir", metavar="DATA", type=PathType)
@click.option("--examples", type=click.IntRange(2), default=1000, show_default=True,
              help="Test examples whose final states are collected (the first ones in dataset order).")
@click.option("--halt-max-steps", "segments", type=click.IntRange(1, MAX_DEPTH), default=None,
              help="Segments before the states are read  [default: the checkpoint's halt_max_steps].")
@backend_option
@batch_size_option
@device_option
@click.option("--json", "json_path", type=PathType, default=None,
              help="Write pr_h, pr_l, ratio, examples and the growth curve to this JSON file.")
@click.option("--png", "png_path", type=PathType, default=None,
              help="Draw PR against the number of examples to this PNG (needs matplotlib)  "
                   "[default: the --json file with .png].")
@force_option
@verify_option
def pr_cmd(checkpoint, data_dir, examples, segments, backend, batch_size, device, json_path, png_path, force,
           verify):
    """Participation ratio of CHECKPOINT's final high-level and low-level states (HRM z_H, z_L; TRM y, z) over
    DATA's test examples: PR = (sum of the covariance's eigenvalues)^2 / (sum of their squares)."""
    from hrm_shared.app.analysis import collect_states, plot_pr, pr_analysis
    from hrm_shared.app.outputs import check_output_files
    from hrm_shared.core.atomic import write_file
    from hrm_shared.core.registry import family_of

    png_path = png_path or (json_path.with_suffix(".png") if json_path is not None else None)
    check_output_files((json_path, png_path), force)
    name, package, model, config = _load(checkpoint, data_dir, backend, device, verify)
    batch_size = batch_size or config.train.global_batch_size
    z_H, z_L = collect_states(package, model, data_dir, examples, batch_size, segments)
    result = pr_analysis(z_H, z_L)
    names = family_of(config.model).state_names
    summary(f"{checkpoint} on {data_dir} (test, {name}): participation ratio over {result['examples']:,} examples",
            {f"PR({names[0]})": f"{result['pr_h']:.2f}", f"PR({names[1]})": f"{result['pr_l']:.2f}",
             f"PR({names[0]}) / PR({names[1]})": f"{result['ratio']:.3f}"})
    record = {**result, "states": list(names), "dimensions": int(z_H.shape[1]), "checkpoint": str(checkpoint),
              "data": str(data_dir), "backend": name,
              "segments": segments or config.model.halt_max_steps}
    if json_path is not None:
        write_file(json_path, json.dumps(record, indent=2) + "\n")
    if png_path is not None:
        drawn = plot_pr(result, png_path, _title(checkpoint, data_dir), names)
        click.echo(f"growth drawn to {drawn}" if drawn else "no plot drawn: matplotlib is not installed "
                   f"({install_hint('plot')})")
