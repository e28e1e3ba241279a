"""What every `hrm` command shares: the error-reporting group, the log handler, path types, options and the summary
printer."""

import logging
import sys
from pathlib import Path
from types import ModuleType

import click

from hrm_shared.app.hub import HUB_PREFIX
from hrm_shared.core.config import PRESETS
from hrm_shared.core.contract import BACKENDS
from hrm_shared.core.errors import HRMError

PathType = click.Path(path_type=Path)
ExistingDir = click.Path(path_type=Path, exists=True, file_okay=False)
ExistingFile = click.Path(path_type=Path, exists=True, dir_okay=False)


class StepFile(click.ParamType):
    """An official step file: `hub:REPO` (a Hugging Face model repo), kept as that string, or an existing file,
    converted to its Path."""

    name = "STEP_FILE|hub:REPO"

    def convert(self, value: str | Path, param: click.Parameter | None, ctx: click.Context | None) -> str | Path:
        if isinstance(value, str) and value.startswith(HUB_PREFIX):
            return value
        return ExistingFile.convert(value, param, ctx)


# 128 + SIGINT: the exit status of a command Ctrl-C stopped, as a shell reports it.
INTERRUPTED_STATUS = 130
# The loggers of the library code the commands run; what they log at INFO is what `hrm` has always printed.
LIBRARY_LOGGERS = ("hrm_shared", "hrm_convert")


class TerminalHandler(logging.Handler):
    """The library's log records as `hrm` prints them: the message alone on stderr (the stream of the moment, as
    click's test runner swaps it), a record marked `redraw` (the training progress line) redrawn in place on a
    terminal. A terminal that has gone (a hangup: EIO) loses the record instead of stopping a run unsaved."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr
        text = self.format(record)
        try:
            if stream.isatty():
                stream.write("\r\033[K" + text + ("" if getattr(record, "redraw", False) else "\n"))
            else:
                stream.write(text + "\n")
            stream.flush()
        except OSError:
            pass


def set_verbosity(level: int) -> None:
    """Log the library's records from `level` on (INFO by default, WARNING with --quiet, DEBUG with --verbose)."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)


class Group(click.Group):
    """A click group that prints the library's log records (TerminalHandler, INFO and above) while a command runs,
    turns HRMError into a one-line `Error: ...` and exit status 1, and a Ctrl-C outside training's own handling (a
    builder, an evaluation, the moments a run starts or ends) into exit status 130; the atomic writers
    (core/atomic.py) leave no partial output behind it."""

    def invoke(self, ctx: click.Context):
        loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
        if any(isinstance(h, TerminalHandler) for h in loggers[0].handlers):  # a group inside `hrm`
            return self._invoke(ctx)
        handler = TerminalHandler()
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.addHandler(handler)
        set_verbosity(logging.INFO)
        try:
            return self._invoke(ctx)
        finally:
            for logger, level in zip(loggers, levels):
                logger.removeHandler(handler)
                logger.setLevel(level)

    def _invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HRMError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted (Ctrl-C): nothing more was written", err=True)
            raise click.exceptions.Exit(INTERRUPTED_STATUS) from None


def _verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        set_verbosity(logging.WARNING if param.name == "quiet" else logging.DEBUG)


def verbosity_options(command):
    """--quiet and --verbose for a command that runs long: progress and notes off, or debug records on."""
    command = click.option("--verbose", is_flag=True, expose_value=False, callback=_verbosity,
                           help="Also print debug messages.")(command)
    return click.option("--quiet", is_flag=True, expose_value=False, callback=_verbosity,
                        help="Print no progress, only warnings, errors and the results.")(command)


def refuse_existing(out: Path, force: bool) -> None:
    """Fail before any work when --out already holds files (the builders check again when they write)."""
    from hrm_shared.core.format import check_output

    check_output(out, force)


def checkpoint_argument(ctx: click.Context, param: click.Parameter, value: str) -> Path:
    """A CHECKPOINT argument: a checkpoint directory, a run directory, which stands for its latest checkpoint
    (RUN/last), as `hrm report` and `--resume` take runs, or hub:OWNER/REPO, downloaded (app/api.py
    checkpoint_path)."""
    from hrm_shared.app.api import checkpoint_path

    return checkpoint_path(value)


def summary(title: str, values: dict) -> None:
    """Print `title` in bold and `values` as aligned `key  value` lines."""
    click.echo(click.style(title, bold=True))
    width = max(map(len, values))
    for key, value in values.items():
        click.echo(f"  {key:<{width}}  {value}")


def load_backend(name: str | None) -> tuple[str, ModuleType]:
    """(backend name, its package); `name` None picks the platform's default."""
    from hrm_shared.app.backend import default_backend, import_backend

    name = name or default_backend()
    return name, import_backend(name)


backend_option = click.option("--backend", type=click.Choice(BACKENDS), default=None,
                              help="Backend to run on  [default: mlx on Apple silicon, else torch].")
device_option = click.option("--device", default=None,
                             help="torch: cpu, cuda, cuda:N or mps; mlx: cpu, gpu (or metal)  "
                                  "[default: cuda or gpu when present].")
PRESET_HELP = f"Preset to start from: {', '.join(PRESETS)} (`hrm config --preset NAME` prints one)."
preset_option = click.option("--preset", "preset_name", default="sudoku", show_default=True, metavar="NAME",
                             help=PRESET_HELP)
verify_option = click.option("--verify/--no-verify", default=True, show_default=True,
                             help="Check the checkpoint's and the dataset's files against the checksums recorded when "
                                  "they were written (a read of every byte).")
force_option = click.option("--force", is_flag=True,
                            help="Replace existing output files (never a checkpoint's, run's or dataset's).")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config field; repeatable.")
