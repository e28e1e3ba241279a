"""A training run on disk and on the terminal (shared/DESIGN.md sections 4, 5 and 7), numpy only.

```
<run>/config.json      the run's CheckpointConfig (model, train, dataset) and the options it was started with
<run>/metrics.jsonl    one JSON object per training step ("split": "train") and per evaluation ("split": "test")
<run>/last/            the latest checkpoint plus train_state.safetensors: `hrm train --resume <run>` continues it
<run>/step_N/          the weights evaluated at step N (a checkpoint `hrm evaluate` takes)
<run>/eval_outputs.npz the last evaluation's predictions (RUN_OUTPUTS, for `hrm report`)
```
train_state.safetensors holds numpy arrays (optimizer moments and step, the carry over the global batch) and, as
JSON in its metadata under STATE_KEY, the step, the data-iterator position, the exploration generator's state and
the number of processes that wrote it (a run resumes on any number: every piece of the state is global).
"""

import json
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from hrm_shared.core.checkpoint import (CONFIG_FILE, DATA_FIELDS, TRAIN_STATE_FILE, CheckpointConfig,
                                        check_checkpoint_output, check_fits_dataset, dataset_record,
                                        read_checkpoint_config)
from hrm_shared.core.config import ModelConfig, TrainConfig, apply_overrides, preset
from hrm_shared.core.distributed import launched_rank
from hrm_shared.core.errors import HRMError
from hrm_shared.core.progress import duration
from hrm_shared.core.registry import family_of

METRICS_FILE = "metrics.jsonl"
RUN_OUTPUTS = "eval_outputs.npz"
LAST = "last"
STATE_KEY = "hrm_train_state"
OPTIONS = ("eval_interval", "checkpoint_every")  # invocation options a resume keeps unless they are given again
ROW_METRICS = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss", "q_continue_loss")


def step_dir(run: Path, step: int) -> Path:
    """`<run>/step_<step>`: the weights evaluated at that step."""
    return Path(run) / f"step_{step}"


def run_config(model: ModelConfig, train: TrainConfig, data_dir: Path, overrides: list[str],
               seed: int | None = None) -> CheckpointConfig:
    """`model` and `train` with `overrides` and `seed`, and the sizes of dataset `data_dir` (refused in
    `overrides`: they come from the data). HRMError when the dataset's test split does not fit the model."""
    from hrm_shared.core.format import read_metadata

    data_keys = [item for item in overrides if item.partition("=")[0].rpartition(".")[2] in DATA_FIELDS]
    if data_keys:
        raise HRMError(f"{data_keys[0]!r}: {', '.join(DATA_FIELDS)} come from the dataset; leave them out of --set")
    model, train = apply_overrides(model, train, overrides)
    record = dataset_record(Path(data_dir).resolve())
    model = model.replace(**{name: record[name] for name in DATA_FIELDS})
    check_fits_dataset(model, read_metadata(data_dir, "test"), f"{data_dir}/test")
    return CheckpointConfig(model=model, train=train.replace(seed=train.seed if seed is None else seed),
                            dataset=record)


def new_run(run: Path, preset_name: str, data_dir: Path, overrides: list[str], seed: int | None,
            backend: str, options: dict) -> CheckpointConfig:
    """Create run directory `run` (refused when it holds files) with config.json; return the run's config. Of
    several processes started by a launcher, only rank 0 checks and writes the directory."""
    run = Path(run)
    writer = launched_rank() == 0
    if writer and run.exists() and (not run.is_dir() or any(run.iterdir())):
        raise HRMError(f"{run} already holds files; continue that run with `hrm train --resume {run}` or choose "
                       f"another --out")
    config = run_config(*preset(preset_name), data_dir, overrides, seed)
    config.backend = backend
    if writer:
        run.mkdir(parents=True, exist_ok=True)
        write_run_config(run, config, options)
    return config


def write_run_config(run: Path, config: CheckpointConfig, options: dict) -> None:
    """Write `<run>/config.json`: config.to_dict() plus the invocation `options` (its OPTIONS keys)."""
    d = {**config.to_dict(), "options": {k: options.get(k) for k in OPTIONS}}
    (Path(run) / CONFIG_FILE).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def read_run_config(run: Path) -> tuple[CheckpointConfig, dict]:
    """(config, options) from `<run>/config.json`; HRMError when `run` is not a run directory."""
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        raise HRMError(f"{run} is not a training run: {path} is missing (start one with `hrm train --out {run}`)")
    try:
        d = json.loads(path.read_text())
        if missing := [key for key in ("model", "train", "dataset") if key not in d]:
            raise KeyError(missing[0])
        config = CheckpointConfig.from_dict(d)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise HRMError(f"{path} is not a run config ({e!r}); start the run again") from None
    return config, d.get("options", {})


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
    last = Path(run) / LAST
    if not (last / TRAIN_STATE_FILE).is_file():
        raise HRMError(f"{run} has no checkpoint to resume ({last / TRAIN_STATE_FILE} is missing); start the run "
                       f"again")
    if diff := config_difference(read_checkpoint_config(last), config):
        raise HRMError(f"{last} holds a checkpoint of another config than {run / CONFIG_FILE} ({diff}); resume the "
                       f"run it belongs to")
    config.dataset = given.dataset
    return config


def write_train_state(directory: Path, tensors: dict[str, np.ndarray], info: dict) -> None:
    """Write `<directory>/train_state.safetensors`: `tensors` and, as JSON metadata, `info`."""
    tensors = {k: np.asarray(v, order="C") for k, v in tensors.items()}  # ascontiguousarray would make 0-dim 1-dim
    save_file(tensors, str(Path(directory) / TRAIN_STATE_FILE), metadata={STATE_KEY: json.dumps(info)})


def read_train_state(directory: Path) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, info) as write_train_state wrote them; HRMError when the file is missing or unreadable."""
    path = Path(directory) / TRAIN_STATE_FILE
    try:
        with safe_open(str(path), framework="np") as f:
            info = json.loads((f.metadata() or {})[STATE_KEY])
            return {k: f.get_tensor(k) for k in f.keys()}, info
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise HRMError(f"{path} is not a readable training state ({e!r}); start the run again") from None


def mean_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Sums over rows with their `count` -> count and the ROW_METRICS means (absent when count is 0); other keys
    (the loss over all rows) are kept."""
    count = sums.get("count", 0.0)
    means = {k: v / count for k, v in sums.items() if k in ROW_METRICS and count > 0}
    return {**{k: v for k, v in sums.items() if k not in ROW_METRICS}, "count": int(count), **means}


class MetricsLog:
    """`<run>/metrics.jsonl`, one JSON object a line, flushed at once; a resume first drops the lines written
    after the step it resumes from."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.is_file():
            lines = self.path.read_text().splitlines(keepends=True)
            self.path.write_text("".join(line for line in lines if json.loads(line).get("step", 0) <= resume_step))
        self.file = self.path.open("a")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class ProgressLine:
    """The terminal line: step/total, steps/s, loss and exact accuracy (means since the last line), ETA.

    On a terminal it is redrawn in place twice a second; otherwise a line is printed every `interval` seconds.
    """

    def __init__(self, total: int, start_step: int, stream: TextIO | None = None, interval: float = 30.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.start_step = total, start_step
        self.interval = 0.5 if self.tty else interval
        self.shown = time.monotonic()
        self.sums: dict[str, float] = {}

    def update(self, step: int, result: dict[str, float], train_seconds: float) -> None:
        """Add one step's `result` (loss and metric sums); redraw when due. `train_seconds`: time spent in steps."""
        for k in ("loss", "count", "exact_accuracy"):
            self.sums[k] = self.sums.get(k, 0.0) + result[k]
        self.sums["n"] = self.sums.get("n", 0.0) + 1
        if time.monotonic() - self.shown < self.interval and step < self.total:
            return
        rate = (step - self.start_step) / max(train_seconds, 1e-9)
        count = self.sums["count"]
        exact = f"{self.sums['exact_accuracy'] / count:.3f}" if count else "-"  # no row halted since the last line
        text = (f"step {step:,}/{self.total:,}  {rate:.2f} steps/s  loss {self.sums['loss'] / self.sums['n']:.4f}  "
                f"exact {exact}  ETA {duration((self.total - step) / max(rate, 1e-9))}")
        self.stream.write(f"\r\033[K{text}" if self.tty else text + "\n")
        self.stream.flush()
        self.shown, self.sums = time.monotonic(), {}

    def note(self, text: str) -> None:
        """Print a whole line (an evaluation, a stop) without breaking the progress line."""
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()


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
