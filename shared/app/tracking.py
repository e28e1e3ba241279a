"""Experiment trackers beside `<run>/metrics.jsonl`: Weights & Biases (`hrm train --wandb PROJECT`, the `wandb`
extra) and TensorBoard event files (`--tensorboard`, the `tensorboard` extra: tensorboardX).

MetricsLog (shared/app/run.py) hands every record it writes to each tracker, so the trackers hold the same numbers
as the file: a record {"split": S, "step": N, K: V, ...} becomes the scalars "S/K" at step N. A resumed run
continues the same W&B run (its id is kept in `<run>/WANDB_ID_FILE`) and the same TensorBoard directory, where the
events after the step it resumes from are purged as metrics.jsonl's lines are.
"""

import importlib
import math
import secrets
import shutil
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol

from hrm_shared.core.atomic import write_file
from hrm_shared.core.checkpoint import CheckpointConfig
from hrm_shared.core.errors import HRMError, install_hint

TENSORBOARD_DIR = "tensorboard"  # <run>/tensorboard/: the event files
WANDB_ID_FILE = "wandb_run_id"  # <run>/wandb_run_id: the W&B run a resume continues
# (option, the module it needs, the extra that installs it)
PACKAGES = {"wandb": ("wandb", "wandb"), "tensorboard": ("tensorboardX", "tensorboard")}


class Tracker(Protocol):
    """What MetricsLog calls: `log` for each record it writes, `close` once at the end."""

    def log(self, record: dict) -> None: ...

    def close(self) -> None: ...


def check_installed(option: str) -> None:
    """HRMError naming the extra to install when the package that tracker `option` ('wandb', 'tensorboard') needs
    is missing; checked before a run starts, without importing it."""
    module, extra = PACKAGES[option]
    if find_spec(module) is None:
        raise HRMError(f"--{option} needs the {module} package: {install_hint(extra)}")


def _import(option: str) -> Any:
    check_installed(option)
    return importlib.import_module(PACKAGES[option][0])


def scalars(record: dict) -> tuple[int, dict[str, float]]:
    """(step, {"split/key": value}) of a metrics record: every finite number but the step (a count is kept)."""
    split = record.get("split", "train")
    values = {f"{split}/{k}": float(v) for k, v in record.items()
              if k not in ("split", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
              and math.isfinite(v)}
    return int(record["step"]), values


class WandbTracker:
    """A W&B run named after the run directory, in project `project`, with the run's config; offline with
    WANDB_MODE=offline, written under WANDB_DIR as W&B does."""

    def __init__(self, run_dir: Path, project: str, config: CheckpointConfig) -> None:
        wandb = _import("wandb")
        id_file = Path(run_dir) / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(6)  # W&B ids: [a-z0-9]
        if not id_file.is_file():
            write_file(id_file, run_id + "\n")
        try:
            self.run = wandb.init(project=project, name=Path(run_dir).name, id=run_id, resume="allow",
                                  config=config.to_dict())
        except Exception as e:  # W&B raises its own types (no login, no network): one line instead
            raise HRMError(f"--wandb {project}: W&B could not start a run ({str(e).splitlines()[0]}); log in with "
                           f"`wandb login`, or set WANDB_MODE=offline") from None

    def log(self, record: dict) -> None:
        """Log the record's numbers at its step."""
        step, values = scalars(record)
        self.run.log(values, step=step)

    def close(self) -> None:
        """Finish the W&B run (offline: its files are complete for `wandb sync`)."""
        self.run.finish()


class TensorBoardTracker:
    """Event files in `<run>/TENSORBOARD_DIR`; `resume_step` purges the events after it that an earlier invocation
    wrote."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        tensorboardX = _import("tensorboard")
        purge = None if resume_step is None else resume_step + 1
        self.writer = tensorboardX.SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge)

    def log(self, record: dict) -> None:
        """Add the record's numbers as scalars at its step."""
        step, values = scalars(record)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        """Write out and close the event file."""
        self.writer.close()


def open_trackers(run_dir: Path, config: CheckpointConfig, wandb_project: str | None, tensorboard: bool,
                  resume_step: int | None) -> list[Tracker]:
    """The trackers a run asked for: W&B in `wandb_project`, TensorBoard when `tensorboard`; none by default."""
    trackers: list[Tracker] = []
    if tensorboard:
        trackers.append(TensorBoardTracker(run_dir, resume_step))
    try:
        if wandb_project:
            trackers.append(WandbTracker(run_dir, wandb_project, config))
    except BaseException:
        for tracker in trackers:
            tracker.close()
        raise
    return trackers


def discard_tracker_files(run_dir: Path) -> None:
    """Remove what open_trackers wrote in `run_dir` (the W&B id, the event files): for a new run that stops before
    its first step, so that it can be started again in the same directory."""
    (Path(run_dir) / WANDB_ID_FILE).unlink(missing_ok=True)
    shutil.rmtree(Path(run_dir) / TENSORBOARD_DIR, ignore_errors=True)
