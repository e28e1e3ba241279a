"""`hrm bench`: training and evaluation throughput, peak memory and model FLOP utilisation per backend and preset."""

from pathlib import Path

import click

from hrm_shared.app.cli.common import PathType, force_option, set_option, verbosity_options
from hrm_shared.core.contract import BACKENDS

DEFAULT_PRESETS = ("sudoku", "arc")


def parse_cycles(text: str) -> tuple[tuple[int, int], ...]:
    """"2x2,4x8" -> ((2, 2), (4, 8)); "none" -> ()."""
    from hrm_shared.core.errors import HRMError

    if text.strip().lower() == "none":
        return ()
    try:
        numbers = [tuple(int(n) for n in item.lower().split("x")) for item in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or any(len(c) != 2 or min(c) < 1 for c in numbers):
        raise HRMError(f"--cycles {text!r} is not a list like 2x2,2x4,4x4,4x8 (H_cycles x L_cycles) or 'none'")
    return tuple((H, L) for H, L in numbers)


@click.command("bench")
@click.option("--backend", "backends", type=click.Choice(BACKENDS), multiple=True,
              help="Backend to measure; repeatable  [default: every installed backend].")
@click.option("--preset", "presets", multiple=True,
              help="Preset to measure; repeatable  [default: sudoku and arc; arc is skipped on the CPU unless named].")
@click.option("--device", default=None, help="torch: cpu, cuda, cuda:N or mps; mlx: cpu or gpu  "
                                              "[default: each backend's: cuda or gpu when present].")
@click.option("--batch", type=click.IntRange(1), default=None,
              help="Rows per step (halved while it runs out of memory)  [default: 768; on the CPU 64 for tiny, "
                   "4 otherwise].")
@click.option("--steps", type=click.IntRange(1), default=20, show_default=True, help="At most this many timed steps.")
@click.option("--seconds", type=click.FloatRange(0, min_open=True), default=60.0, show_default=True,
              help="Stop timing steps after this long (at least one step); skip eval when it would take longer.")
@click.option("--warmup", type=click.IntRange(0), default=None,
              help="Untimed steps first (compilation)  [default: 3 on an accelerator, 1 on the CPU].")
@set_option
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile / mx.compile the step  [default: mx.compile on, torch.compile on CUDA only].")
@click.option("--eval/--no-eval", "evaluate", default=True, show_default=True,
              help="Also time predict over halt_max_steps segments.")
@click.option("--cycles", "cycles_text", default="2x2,2x4,4x4,4x8", show_default=True,
              help="H_cycles x L_cycles points of the peak-memory sweep, or 'none'.")
@click.option("--cycles-preset", default=None, help="Preset of the peak-memory sweep  [default: the first preset].")
@click.option("--json", "json_path", type=PathType, required=True, help="Write the records to this JSON file.")
@force_option
@verbosity_options
def bench_cmd(backends, presets, device, batch, steps, seconds, warmup, overrides, compile_, evaluate, cycles_text,
              cycles_preset, json_path: Path, force):
    """Measure training steps/s, tokens/s, peak memory and MFU, evaluation examples/s, and peak memory as
    H_cycles x L_cycles grow; print a table and write JSON. Each measurement runs in a fresh process on synthetic
    batches of the preset's data shape."""
    from hrm_shared.app.bench import Spec, format_tables, installed_backends, preset_data, run_benchmark, write_json
    from hrm_shared.app.outputs import check_output_file
    from hrm_shared.core.errors import HRMError, install_hint

    check_output_file(json_path, force)
    cycles = parse_cycles(cycles_text)
    backends = list(backends) or installed_backends()
    if not backends:
        raise HRMError(f"no backend is installed: {install_hint('torch')} or {install_hint('mlx')}")
    named = bool(presets)
    presets = list(presets) or list(DEFAULT_PRESETS)
    for name in presets:
        preset_data(name)
    cycles_preset = cycles_preset or presets[0]
    if cycles and cycles_preset not in presets:
        raise HRMError(f"--cycles-preset {cycles_preset} is not among the presets measured ({', '.join(presets)})")
    specs = [Spec(backend, name, device, batch, list(overrides), steps, seconds, warmup, compile_, evaluate, named)
             for backend in backends for name in presets]
    result = run_benchmark(specs, cycles, cycles_preset, log=lambda line: click.echo(line, err=True))
    click.echo(format_tables(result))
    write_json(result, json_path)
    click.echo(f"Wrote {json_path}")
