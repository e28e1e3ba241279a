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


# The loggers of the library code the commands run; what they log at INFO is what `hrm` has always printed.
LIBRARY_LOGGERS = ("hrm_shared", "hrm_convert")


class TerminalHandler(logging.Handler):
    """The library's log records as `hrm` prints them: the message alone on stderr (the stream of the moment, as
    click's test runner swaps it), a record marked `redraw` (the training progress line) redrawn in place on a
    terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr
        text = self.format(record)
        if stream.isatty():
            stream.write("\r\033[K" + text + ("" if getattr(record, "redraw", False) else "\n"))
        else:
            stream.write(text + "\n")
        stream.flush()


def set_verbosity(level: int) -> None:
    """Log the library's records from `level` on (INFO by default, WARNING with --quiet, DEBUG with --verbose)."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)


class Group(click.Group):
    """A click group that prints the library's log records (TerminalHandler, INFO and above) while a command runs and
    turns HRMError into a one-line `Error: ...` and exit status 1."""

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
device_option = click.option("--device", default=None, help="torch: cpu, cuda, cuda:N or mps; mlx: cpu, gpu (or metal)  "
                                                           "[default: cuda or gpu when present].")
PRESET_HELP = f"Preset to start from: {', '.join(PRESETS)} (`hrm config --preset NAME` prints one)."
preset_option = click.option("--preset", "preset_name", default="sudoku", show_default=True, metavar="NAME",
                             help=PRESET_HELP)
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config field; repeatable.")
