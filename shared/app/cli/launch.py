"""`hrm launch`: MLX's launcher with an exit status. mlx.launch ends with status 0 whatever its processes did; this runs
the same launcher, with the same options, and ends with status 1 when a process it started ended otherwise, as
torchrun does."""

import signal
import sys
from typing import Any

import click

from hrm_shared.core.errors import HRMError


def describe_status(status: int) -> str:
    """A process's exit status in words: "exited with status N", or "killed by SIGNAME" for the negative status of a
    signal."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"


def run_mlx_launch(arguments: list[str]) -> list[tuple[int, int]]:
    """Run mlx.launch with `arguments` (its options, `--`, the command) in this process until every process it started
    has ended -> (rank, exit status) of each, in rank order; none with `--backend mpi`, where mpirun starts them."""
    try:
        from mlx._distributed_utils import launch
        runner: Any = launch.RemoteProcess  # a base class, from MLX's untyped launcher
    except (ImportError, AttributeError):
        raise HRMError("hrm launch runs MLX's launcher (mlx.launch), which this environment lacks; "
                       "install mlx") from None
    started: list[tuple[int, launch.RemoteProcess]] = []

    class Recorded(runner):
        """MLX's runner of one process, kept in `started`: mlx.launch reads each exit status, then drops it."""

        def __init__(self, rank: int, *args, **kwargs) -> None:
            super().__init__(rank, *args, **kwargs)
            started.append((rank, self))

    argv = sys.argv
    launch.RemoteProcess, sys.argv = Recorded, ["mlx.launch", *arguments]
    try:
        launch.main()
    finally:
        launch.RemoteProcess, sys.argv = runner, argv
    return sorted((rank, process.process.wait()) for rank, process in started)


@click.command("launch", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def launch_cmd(arguments):
    """Start processes with mlx.launch; exit with status 1 when one fails.

    ARGUMENTS are mlx.launch's (its options, --, the command): `hrm launch -n 2 --backend ring -- $(which hrm) train
    --backend mlx ...`. mlx.launch itself exits with status 0 whatever its processes did; this names each process that
    failed or was killed and exits with status 1. `mlx.launch --help` lists the options.
    """
    failed = [(rank, status) for rank, status in run_mlx_launch(list(arguments)) if status != 0]
    if failed:
        raise HRMError("processes of the run did not finish: " + ", ".join(
            f"rank {rank} {describe_status(status)}" for rank, status in failed))
