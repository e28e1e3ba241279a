"""The `hrm` command line. Heavy modules (builders, backends) are imported inside the command that uses them."""

import click

from hrm_shared.app.cli.analysis import analyze, scaling_cmd
from hrm_shared.app.cli.arc import arc, report_cmd
from hrm_shared.app.cli.bench import bench_cmd
from hrm_shared.app.cli.common import Group
from hrm_shared.app.cli.data import data
from hrm_shared.app.cli.launch import launch_cmd
from hrm_shared.app.cli.model import config_cmd, convert_cmd, evaluate_cmd, init_cmd, push_cmd, solve_cmd
from hrm_shared.app.cli.train import demo, train_cmd


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """--version: the installed distribution's name and version (core/version.py), looked up only when asked."""
    if value:
        from hrm_shared.core.version import distribution, version

        click.echo(f"{distribution() or 'hrm'}, version {version()}")
        ctx.exit()


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and exit.")
def main() -> None:
    """Hierarchical Reasoning Model: datasets, training and evaluation in MLX and PyTorch."""


for command in (data, config_cmd, init_cmd, convert_cmd, train_cmd, launch_cmd, evaluate_cmd, solve_cmd, push_cmd, demo,
                arc, report_cmd, bench_cmd, scaling_cmd, analyze):
    main.add_command(command)
