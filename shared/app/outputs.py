"""The one rule every `hrm` command applies to a file it is asked to write (--json, --out, --save-outputs, --png,
...): never a checkpoint's, a run's or a dataset's own file, nor anything inside a checkpoint or dataset directory,
whatever the options; and an existing file only with --force, unless the command itself wrote it (its `own` test).
The directories' own writers (checkpoints, runs, builders) keep their own rules (core/atomic.py check_replaceable).
"""

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from hrm_shared.app.run import LAST, METRICS_FILE, RUN_ENTRIES
from hrm_shared.core.checkpoint import CONFIG_FILE, MODEL_FILE
from hrm_shared.core.errors import HRMError
from hrm_shared.core.format import SPLITS

STEP_ENTRY = re.compile(r"step_\d+")


def _kind(directory: Path) -> str | None:
    """'checkpoint', 'dataset' or 'run' for a directory of that kind (by the files it holds), else None."""
    if (directory / CONFIG_FILE).is_file() and (directory / MODEL_FILE).is_file():
        return "checkpoint"
    if (directory / "identifiers.json").is_file() and any((directory / s / "dataset.json").is_file() for s in SPLITS):
        return "dataset"
    if directory.name in SPLITS and (directory / "dataset.json").is_file():
        return "dataset"
    if (directory / CONFIG_FILE).is_file() and ((directory / METRICS_FILE).is_file() or (directory / LAST).is_dir()):
        return "run"
    return None


def protected_by(path: Path) -> str | None:
    """Why writing the file `path` would damage a checkpoint, run or dataset (the reason, naming the directory), or
    None: `path` is inside a checkpoint or dataset directory, or is (or is inside) one of a run's own entries."""
    path = Path(path).absolute().resolve()
    for directory in reversed(path.parents):
        kind = _kind(directory)
        entry = path.relative_to(directory).parts[0]
        if kind == "run" and not (entry in RUN_ENTRIES or STEP_ENTRY.fullmatch(entry) or entry.startswith(".")):
            continue
        if kind is not None:
            return f"it belongs to the {kind} {directory}"
    if path.is_dir() and (kind := _kind(path)) is not None:
        return f"it is the {kind} directory {path}"
    return None


def check_output_file(path: Path | None, force: bool, own: Callable[[Path], bool] | None = None) -> None:
    """Refuse writing the file `path` (None: nothing to write) before any work: HRMError when it would replace a
    checkpoint's, run's or dataset's file (protected_by; even with `force`), when it is a directory, or when it
    exists and `force` is off, unless `own(path)` says the command itself wrote it."""
    if path is None:
        return
    path = Path(path)
    if reason := protected_by(path):
        raise HRMError(f"refusing to write {path}: {reason}, which hrm reads back; choose another output path")
    if path.is_dir():
        raise HRMError(f"{path} is a directory; give a file path")
    if path.exists() and not force and not (own is not None and own(path)):
        raise HRMError(f"{path} already exists and hrm did not write it for this command; pass --force to replace "
                       f"it, or choose another path")


def check_output_files(paths: Iterable[Path | None], force: bool) -> None:
    """check_output_file for each of `paths` (None ones skipped)."""
    for path in paths:
        check_output_file(path, force)
