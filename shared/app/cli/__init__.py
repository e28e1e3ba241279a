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
from hrm_shared.core.errors import DISTRIBUTION


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION)
def main() -> None:
    """Hierarchical Reasoning Model: datasets, training and evaluation in MLX and PyTorch."""


for command in (data, config_cmd, init_cmd, convert_cmd, train_cmd, launch_cmd, evaluate_cmd, solve_cmd, push_cmd, demo,
                arc, report_cmd, bench_cmd, scaling_cmd, analyze):
    main.add_command(command)
