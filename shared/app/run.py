"""A training run on disk and on the terminal (shared/DESIGN.md sections 4, 5 and 7), numpy only.

```
<run>/config.json      the run's CheckpointConfig (model, train, dataset) and the options it was started with
<run>/metrics.jsonl    one JSON object per training step ("split": "train") and per evaluation ("split": "test")
<run>/last/            the latest checkpoint plus train_state.safetensors: `hrm train --resume <run>` continues it
<run>/step_N/          the weights evaluated at step N (a checkpoint `hrm evaluate` takes)
<run>/eval_outputs.npz the last evaluation's predictions (RUN_OUTPUTS, for `hrm report`)
<run>/curves.png       the training curves (app/plot.py)
```
train_state.safetensors holds numpy arrays (optimizer moments and step, the carry over the global batch) and, as
JSON in its metadata under STATE_KEY, the step, the data-iterator position, the exploration generator's state and
the number of processes that wrote it (a run resumes on any number: every piece of the state is global).
"""

import fcntl
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from hrm_shared.app.tracking import TENSORBOARD_DIR, WANDB_ID_FILE
from hrm_shared.core.atomic import newest_version, remove_incomplete, remove_path, write_file, writing
from hrm_shared.core.checkpoint import (
    CONFIG_FILE,
    DATA_FIELDS,
    TRAIN_STATE_FILE,
    CheckpointConfig,
    check_checkpoint_output,
    check_finite,
    check_splits_agree,
    dataset_record,
    read_checkpoint_config,
    verify_file,
)
from hrm_shared.core.config import ModelConfig, TrainConfig, apply_overrides, preset
from hrm_shared.core.distributed import launched_rank
from hrm_shared.core.errors import HRMError
from hrm_shared.core.progress import duration, pace
from hrm_shared.core.registry import family_of

METRICS_FILE = "metrics.jsonl"
RUN_OUTPUTS = "eval_outputs.npz"
PLOT_FILE = "curves.png"  # the training curves (app/plot.py)
LAST = "last"
STATE_KEY = "hrm_train_state"
# Invocation options a resume keeps unless they are given again.
OPTIONS = ("eval_interval", "checkpoint_every", "wandb", "tensorboard")
log = logging.getLogger(__name__)
# The entries of a run directory that hrm writes and reads back, besides the step_N checkpoints and the hidden
# versions of interrupted writes (core/atomic.py); any other name in a run (report.html) is an output.
RUN_ENTRIES = {CONFIG_FILE, METRICS_FILE, LAST, RUN_OUTPUTS, PLOT_FILE, TENSORBOARD_DIR, WANDB_ID_FILE}
# A train step's metric sums: ROW_METRICS over the rows that halted (their means divide by `count`), BATCH_METRICS
# over all rows (divided by the global batch, as the reference logs them).
ROW_METRICS = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps")
BATCH_METRICS = ("lm_loss", "q_halt_loss", "q_continue_loss")


def step_dir(run: Path, step: int) -> Path:
    """`<run>/step_<step>`: the weights evaluated at that step."""
    return Path(run) / f"step_{step}"


def last_checkpoint(run: Path) -> Path:
    """The checkpoint `hrm train --resume` continues: the newest complete version of `<run>/last`, which a kill while
    it was being replaced leaves under a hidden name (core/atomic.py newest_version); `<run>/last` when none."""
    return newest_version(Path(run) / LAST) or Path(run) / LAST


def run_config(model: ModelConfig, train: TrainConfig, data_dir: Path, overrides: list[str],
               seed: int | None = None) -> CheckpointConfig:
    """`model` and `train` with `overrides` and `seed`, and the sizes and puzzle kind of dataset `data_dir` (sizes
    refused in `overrides`: they come from the data). HRMError when the dataset is invalid (format.check_dataset)
    or its test split does not fit the model."""
    from hrm_shared.core.format import check_dataset, read_metadata
    from hrm_shared.puzzles.kinds import dataset_kind

    data_keys = [item for item in overrides if item.partition("=")[0].rpartition(".")[2] in DATA_FIELDS]
    if data_keys:
        raise HRMError(f"{data_keys[0]!r}: {', '.join(DATA_FIELDS)} come from the dataset; leave them out of --set")
    model, train = apply_overrides(model, train, overrides)
    check_dataset(data_dir)
    record = dataset_record(Path(data_dir).resolve(), dataset_kind(data_dir))
    model = model.replace(**{name: record[name] for name in DATA_FIELDS})
    check_splits_agree(read_metadata(data_dir, "train"), read_metadata(data_dir, "test"), Path(data_dir))
    return CheckpointConfig(model=model, train=train.replace(seed=train.seed if seed is None else seed),
                            dataset=record)


def new_run(run: Path, preset_name: str | None, data_dir: Path, overrides: list[str], seed: int | None,
            backend: str, options: dict, force: bool = False,
            check: Callable[[CheckpointConfig], None] | None = None,
            start: tuple[ModelConfig, TrainConfig] | None = None) -> CheckpointConfig:
    """Create run directory `run` with config.json; return the run's config, made from preset `preset_name` or, when
    given, the model and train configs `start` (a whole config file; `preset_name` then None). A `run` that holds
    files is refused, unless `force` and it is a run without a checkpoint (what a kill or a failure before the first
    checkpoint leaves), whose files are removed to start over. Everything that can refuse the run (the config, the
    dataset, the batch among the processes, the run's length, `check`) is checked before anything is written. Of
    several processes started by a launcher, only rank 0 checks and writes the directory."""
    run = Path(run)
    writer = launched_rank() == 0
    if writer and run.exists() and (not run.is_dir() or any(run.iterdir())):
        check_restartable(run, force)
    if start is None and preset_name is not None:
        start = preset(preset_name)
    elif start is None or preset_name is not None:
        raise HRMError("internal: new_run takes a preset name or the configs to start from, one of them")
    config = run_config(*start, data_dir, overrides, seed)
    config.backend = backend
    check_startable(config, Path(data_dir))
    if check is not None:
        check(config)
    if writer:
        for entry in run.iterdir() if run.is_dir() else ():
            remove_path(entry)
        write_run_config(run, config, options, preset_name)
    return config


def check_restartable(run: Path, force: bool) -> None:
    """Refuse starting a new run in the non-empty `run`, unless `force` and it is a run without a checkpoint: each
    refusal says how to continue or start over."""
    if not run.is_dir():
        raise HRMError(f"{run} is a file, not a directory; choose another --out")
    if not (run / CONFIG_FILE).is_file():
        raise HRMError(f"{run} already holds files and is not a run; choose another --out")
    checkpoints = [p.name for p in run.iterdir() if p.name == LAST or p.name.startswith("step_")
                   or p.name.startswith(f".{LAST}.new-")]
    if checkpoints:
        raise HRMError(f"{run} already holds files of a run with a checkpoint ({checkpoints[0]}); continue it with "
                       f"`hrm train --resume {run}`, or remove the directory to start over")
    if not force:
        raise HRMError(f"{run} already holds files of a run with no checkpoint yet; start it over with --force (or "
                       f"remove the directory), or choose another --out")
    foreign = sorted(p.name for p in run.iterdir() if p.name not in RUN_ENTRIES and not p.name.startswith("."))
    if foreign:
        raise HRMError(f"refusing to start over in {run}: it holds files that are not a run's "
                       f"({', '.join(foreign[:3])})")


def check_startable(config: CheckpointConfig, data_dir: Path) -> None:
    """Refuse a config whose run could not take a step: a global batch that does not divide among the launched
    processes, or a run of no step (epochs x examples smaller than one global batch)."""
    from hrm_shared.app.eta import run_length
    from hrm_shared.app.memory import launched_world
    from hrm_shared.core.format import read_metadata
    from hrm_shared.core.iterator import local_batch_size

    train = config.train
    local_batch_size(train.global_batch_size, launched_world())
    metadata = read_metadata(data_dir, "train")
    if run_length(train, metadata) < 1:
        raise HRMError(f"the run would take no step: epochs x groups x examples ({train.epochs} x "
                       f"{metadata.total_groups} x {metadata.mean_puzzle_examples:g}) < global_batch_size "
                       f"{train.global_batch_size}; raise epochs or lower global_batch_size")


@contextmanager
def run_lock(run: Path) -> Iterator[None]:
    """Hold an advisory lock (flock) on the run directory `run` (made when missing; removed again when the block
    leaves it empty) for the block: a second `hrm train` on the same run is refused with a one-line HRMError. The
    system releases the lock when the process ends, however it ends. Once it is held, the temporary versions a
    killed write left in `run` (core/atomic.py) are removed: no one else writes there."""
    run = Path(run)
    made = not run.exists()
    with writing(run):
        run.mkdir(parents=True, exist_ok=True)
    fd = os.open(run, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HRMError(f"another hrm train is running on {run} (it holds a lock on the directory); wait for it "
                           f"to stop, or stop it (Ctrl-C saves) before starting this one") from None
        remove_incomplete(run)
        yield
    finally:
        os.close(fd)
        if made and run.is_dir() and not any(run.iterdir()):
            run.rmdir()


def write_run_config(run: Path, config: CheckpointConfig, options: dict, preset_name: str | None = None) -> None:
    """Write `<run>/config.json` (and `run`): config.to_dict() plus the invocation `options` (its OPTIONS keys) and
    the preset the run was made from (None: a whole config file), which `hrm push` puts on the model card."""
    d = {**config.to_dict(), "options": {k: options.get(k) for k in OPTIONS}, "preset": preset_name}
    write_file(Path(run) / CONFIG_FILE, json.dumps(d, indent=2, sort_keys=True) + "\n")


def read_run_config(run: Path) -> tuple[CheckpointConfig, dict]:
    """(config, options) from `<run>/config.json`; HRMError when `run` is not a run directory."""
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        raise HRMError(f"{run} is not a training run: {path} is missing (start one with `hrm train --out {run}`)")
    try:
        d = json.loads(path.read_text())
        config = CheckpointConfig.from_dict(d, str(path), extra=("options", "preset"))
        options = d.get("options", {})
        if not isinstance(config.dataset.get("path"), str) or not isinstance(options, dict):
            raise HRMError(f"{path} needs the dataset's path and an options object")
    except json.JSONDecodeError as e:
        raise HRMError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); start the run again") from None
    except HRMError as e:
        raise HRMError(f"{e}; it is not the run config hrm wrote: start the run again") from None
    return config, options


def config_difference(a: CheckpointConfig, b: CheckpointConfig) -> str | None:
    """The first difference between two configs that changes training, as 'key=A vs B', or None."""
    families = family_of(a.model).name, family_of(b.model).name
    if families[0] != families[1]:
        return f"model family={families[0]!r} vs {families[1]!r}"
    pairs = [(f"model.{k}", v, getattr(b.model, k)) for k, v in a.model.to_dict().items()]
    pairs += [(f"train.{k}", v, getattr(b.train, k)) for k, v in a.train.to_dict().items()]
    pairs.append(("dataset fingerprint", a.dataset.get("fingerprint"), b.dataset.get("fingerprint")))
    return next((f"{key}={x!r} vs {y!r}" for key, x, y in pairs if x != y), None)


def resume_run(run: Path, preset_name: str | None, data_dir: Path | None, overrides: list[str],
               seed: int | None) -> CheckpointConfig:
    """The config to continue `run` with. Options given with --resume (a preset, overrides, a seed) must describe
    the run's own config; the dataset (`data_dir`, default the run's) must be the one the run started with;
    `<run>/last` must be a checkpoint of this config with a training state."""
    config, _ = read_run_config(run)
    data_dir = Path(data_dir if data_dir is not None else config.dataset["path"])
    start = preset(preset_name) if preset_name is not None else (config.model, config.train)
    given = run_config(*start, data_dir, overrides, config.train.seed if seed is None else seed)
    diff = config_difference(given, config)
    if diff and diff.startswith("dataset"):
        raise HRMError(f"the dataset {data_dir} is not the one the run in {run} started with ({diff}); pass "
                       f"--data with the run's dataset")
    if diff:
        raise HRMError(f"the options given with --resume differ from the run in {run} ({diff}); resume with the "
                       f"run's own config, or start a new run with --out")
    last = last_checkpoint(run)
    if not (last / TRAIN_STATE_FILE).is_file():
        raise HRMError(f"{run} has no checkpoint to resume ({last / TRAIN_STATE_FILE} is missing: it stopped before "
                       f"its first checkpoint); start it over with `hrm train --out {run} --force` and its --data "
                       f"and options")
    if diff := config_difference(read_checkpoint_config(last), config):
        raise HRMError(f"{last} holds a checkpoint of another config than {run / CONFIG_FILE} ({diff}); resume the "
                       f"run it belongs to")
    config.dataset = given.dataset
    return config


def write_train_state(directory: Path, tensors: dict[str, np.ndarray], info: dict) -> None:
    """Write `<directory>/train_state.safetensors`: `tensors` and, as JSON metadata, `info`."""
    tensors = {k: np.asarray(v, order="C") for k, v in tensors.items()}  # ascontiguousarray would make 0-dim 1-dim
    save_file(tensors, str(Path(directory) / TRAIN_STATE_FILE), metadata={STATE_KEY: json.dumps(info)})


def read_train_state(directory: Path, verify: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, info) as write_train_state wrote them; HRMError when the file is missing or unreadable, a float
    tensor holds a NaN or an infinity, or (with `verify`) the file differs from its checksum (core/checksums.py)."""
    path = Path(directory) / TRAIN_STATE_FILE
    try:
        with safe_open(str(path), framework="np") as f:
            info = json.loads((f.metadata() or {})[STATE_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, IndexError, ValueError, UnicodeDecodeError) as e:
        raise HRMError(f"{path} is not a readable training state ({e!r}); start the run again") from None
    check_finite({k: bool(np.isfinite(v).all()) for k, v in tensors.items() if v.dtype.kind == "f"}, str(path))
    if verify:
        verify_file(directory, TRAIN_STATE_FILE)
    if not isinstance(info, dict) or not {"step", "iterator", "rng"} <= set(info):
        raise HRMError(f"{path} does not hold the training position (step, iterator, rng) hrm writes; the file is "
                       f"damaged: resume from an earlier checkpoint or start the run again")
    return tensors, info


def mean_metrics(sums: dict[str, float], global_batch_size: int) -> dict[str, float]:
    """A train step's sums with their `count` -> count, the ROW_METRICS means (absent when count is 0) and the
    BATCH_METRICS divided by `global_batch_size`; other keys (the loss, already divided) are kept."""
    count = sums.get("count", 0.0)
    means = {k: v / count for k, v in sums.items() if k in ROW_METRICS and count > 0}
    means.update({k: v / global_batch_size for k, v in sums.items() if k in BATCH_METRICS})
    kept = {k: v for k, v in sums.items() if k not in ROW_METRICS + BATCH_METRICS}
    return {**kept, "count": int(count), **means}


def _metric_lines(path: Path) -> list[tuple[str, dict]]:
    """(line, record) for each line of a metrics.jsonl, leaving out a torn last line (a write cut short by a kill or a
    full disk); HRMError naming any other line that is not a JSON object."""
    lines = Path(path).read_text(errors="replace").splitlines()
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            kept.append((line, record))
        elif number < len(lines):
            raise HRMError(f"{path} line {number} is not a JSON record; delete that line and try again")
    return kept


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl in order (none when there is no file); a torn last line is left out."""
    return [record for _, record in _metric_lines(path)] if Path(path).is_file() else []


class MetricsLog:
    """`<run>/metrics.jsonl`, one JSON object a line, each written whole: a write that fails (a full disk) is cut
    back off and raised as WriteError. A resume first drops a torn last line and the lines after the step it resumes
    from, replacing the file whole (core/atomic.py), never truncating it in place. Each record written also goes to
    the `trackers` (shared/app/tracking.py: W&B, TensorBoard), which `close` closes."""

    def __init__(self, path: Path, resume_step: int | None = None, trackers: Sequence = ()) -> None:
        self.path, self.trackers = Path(path), list(trackers)
        if resume_step is not None and self.path.is_file():
            write_file(self.path, "".join(f"{line}\n" for line, record in _metric_lines(self.path)
                                          if record.get("step", 0) <= resume_step))
        with writing(self.path):
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict) -> None:
        """Append `record` as one line."""
        data = (json.dumps(record) + "\n").encode()
        size = os.fstat(self.fd).st_size
        with writing(self.path):
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError:
                os.ftruncate(self.fd, size)  # a full disk may take part of the line: leave none of it
                raise
        for tracker in self.trackers:
            tracker.log(record)

    def close(self) -> None:
        """Close the file and the trackers."""
        os.close(self.fd)
        for tracker in self.trackers:
            tracker.close()


class ProgressLine:
    """The progress line, logged (logger hrm_shared.app.run, level INFO): step/total, the measured speed (steps/s, or
    s/step when a step takes over a second), loss and exact accuracy (means since the last line), ETA.

    The first step is shown as soon as it is read; then, when stderr is a terminal, a line twice a second marked
    `redraw` (the CLI's handler redraws it in place), otherwise a line every `interval` seconds. `quiet`: nothing
    (the processes other than rank 0)."""

    def __init__(self, total: int, start_step: int, quiet: bool = False, interval: float = 30.0) -> None:
        self.quiet = quiet
        self.total, self.start_step = total, start_step
        self.interval = 0.5 if sys.stderr.isatty() else interval
        self.shown = -math.inf
        self.sums: dict[str, float] = {}

    def update(self, step: int, result: dict[str, float], train_seconds: float) -> None:
        """Add one step's `result` (loss and metric sums); log the line when due. `train_seconds`: time in steps."""
        for k in ("loss", "count", "exact_accuracy"):
            self.sums[k] = self.sums.get(k, 0.0) + result[k]
        self.sums["n"] = self.sums.get("n", 0.0) + 1
        if time.monotonic() - self.shown < self.interval and step < self.total:
            return
        rate = (step - self.start_step) / max(train_seconds, 1e-9)
        count = self.sums["count"]
        exact = f"{self.sums['exact_accuracy'] / count:.3f}" if count else "-"  # no row halted since the last line
        speed = f"{rate:.2f} steps/s" if rate >= 1 else pace(1 / max(rate, 1e-9))
        if not self.quiet:
            log.info("step %s/%s  %s  loss %.4f  exact %s  ETA %s", f"{step:,}", f"{self.total:,}", speed,
                     self.sums["loss"] / self.sums["n"], exact, duration((self.total - step) / max(rate, 1e-9)),
                     extra={"redraw": True})
        self.shown, self.sums = time.monotonic(), {}

    def note(self, text: str) -> None:
        """Log a whole line (an evaluation, a stop) that stays."""
        if not self.quiet:
            log.info(text)


class Budget:
    """When a run stops: at total_steps, at --max-steps (counted from the start of the run), after --max-minutes
    of this invocation."""

    def __init__(self, total_steps: int, max_steps: int | None = None, max_minutes: float | None = None) -> None:
        self.target = total_steps if max_steps is None else min(total_steps, max_steps)
        self.total_steps = total_steps
        self.deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes

    def past_deadline(self) -> bool:
        """Whether --max-minutes of this invocation have passed."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def stop_reason(self, step: int, past_deadline: bool | None = None) -> str | None:
        """Why to stop before taking step `step + 1`, or None to go on. `past_deadline` (default: read the clock)
        lets several processes stop on the deadline at the same step."""
        if step >= self.total_steps:
            return f"finished: {self.total_steps:,} steps"
        if step >= self.target:
            return f"stopped at --max-steps {self.target:,}"
        if self.past_deadline() if past_deadline is None else past_deadline:
            return "stopped at --max-minutes"
        return None


def init_checkpoint(out: Path, backend: str, preset_name: str, data_dir: Path, overrides: list[str],
                    seed: int | None = None, force: bool = False) -> dict:
    """Write an untrained checkpoint to `out`: a preset's configs with `overrides`, the dataset's vocab_size,
    seq_len and num_puzzle_identifiers, weights from core/init.py with `seed` (default: the train config's seed,
    which is set to it), identifiers.json copied from the dataset. Returns a summary."""
    from hrm_shared.app.backend import import_backend
    from hrm_shared.core.format import read_identifiers
    from hrm_shared.core.init import count_parameters, init_weights

    check_checkpoint_output(Path(out), force)
    package = import_backend(backend)
    config = run_config(*preset(preset_name), Path(data_dir), overrides, seed)
    model_config, train, record = config.model, config.train, config.dataset
    model = package.model.build_model(model_config)
    package.model.load_canonical(model, init_weights(model_config, train.seed))
    package.checkpoint.save_checkpoint(Path(out), model, config, read_identifiers(Path(data_dir)))
    return {"backend": backend, "preset": preset_name, "parameters": f"{count_parameters(model_config):,}",
            "vocab_size": model_config.vocab_size, "seq_len": model_config.seq_len,
            "num_puzzle_identifiers": model_config.num_puzzle_identifiers, "seed": train.seed,
            "dataset": f"{data_dir} (fingerprint {record['fingerprint']})"}
