"""The training loop (DESIGN.md section 5), the same for both backends and numpy only.

A backend package (hrm_torch or hrm_mlx) brings the model (`train.new_model`, `checkpoint.load_checkpoint`), the
optimizer step (`train.Trainer`: one step per ACT segment, the carry kept across batches, epochs and evaluations),
checkpoints and evaluation. The loop draws the batches and the exploration numbers, sets the learning rates, stops
on a budget, a NaN loss or Ctrl-C, and writes metrics and checkpoints (shared/run.py).
"""

import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from shared.act import draw_exploration
from shared.checkpoint import CheckpointConfig, checkpoint_directory
from shared.arc_vote import ArcVoter, arc_score, is_arc, read_test_tasks
from shared.data.format import read_identifiers, read_metadata
from shared.data.iterator import TestIterator, TrainIterator
from shared.errors import HRMError
from shared.init import count_parameters
from shared.plot import plot_run
from shared.report import RUN_OUTPUTS
from shared.run import (LAST, METRICS_FILE, Budget, MetricsLog, ProgressLine, duration, mean_metrics,
                        read_train_state, step_dir, write_train_state)
from shared.schedule import learning_rate, total_steps

INTERRUPTED = "interrupted (Ctrl-C)"
# The last evaluation writes every prediction to <run>/eval_outputs.npz (for `hrm report`) up to this many tokens.
MAX_KEPT_TOKENS = 50_000_000


@dataclass
class RunOptions:
    """How one invocation of `hrm train` runs; none of these change what a step computes."""

    max_steps: int | None = None  # counted from the start of the run
    max_minutes: float | None = None  # of this invocation
    eval_interval: int | None = None  # steps between evaluations; None: the config's eval_interval epochs; 0: end only
    checkpoint_every: int = 1000  # steps between writes of <run>/last (also written at the end)
    device: str | None = None
    compile: bool | None = None  # None: the backend's default


@contextmanager
def interrupt_flag() -> Iterator[Callable[[], bool]]:
    """Within the block a first Ctrl-C (SIGINT) only sets the flag the loop checks between steps, so the state it
    saves is whole; a second one raises KeyboardInterrupt as usual. Outside the main thread: no handler."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hits: list[int] = []

    def handler(signum, frame) -> None:
        if hits:
            raise KeyboardInterrupt
        hits.append(signum)
        print("\nCtrl-C: saving a checkpoint after this step (press again to quit without saving)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(hits)
    finally:
        signal.signal(signal.SIGINT, previous)


def train(package: ModuleType, run: Path, config: CheckpointConfig, options: RunOptions, resume: bool) -> dict:
    """Train `config` in run directory `run` with backend `package` (from scratch, or from `<run>/last` when
    `resume`) until total_steps or a budget; returns a summary. HRMError on a NaN loss (the last good checkpoint
    stays)."""
    run, data_dir = Path(run), Path(config.dataset["path"])
    model_config, train_config = config.model, config.train
    batch_size = train_config.global_batch_size
    iterator = TrainIterator(data_dir, batch_size, seed=train_config.seed)
    metadata = iterator.metadata
    total = total_steps(train_config.epochs, metadata.total_groups, metadata.mean_puzzle_examples, batch_size)
    if total < 1:
        raise HRMError(f"the run would take no step: epochs x groups x examples ({train_config.epochs} x "
                       f"{metadata.total_groups} x {metadata.mean_puzzle_examples:g}) < global_batch_size "
                       f"{batch_size}; raise epochs or lower global_batch_size")
    rng = np.random.default_rng(train_config.seed)  # exploration draws (shared/act.py)
    identifiers = read_identifiers(data_dir)
    test_metadata = read_metadata(data_dir, "test")
    arc_tasks = read_test_tasks(data_dir) if is_arc(test_metadata) else None
    test_tokens = TestIterator(data_dir, batch_size).num_examples * test_metadata.seq_len
    last = run / LAST
    if resume:
        model, _ = package.checkpoint.load_checkpoint(last, options.device)
        trainer = package.train.Trainer(model, train_config, options.compile)
        tensors, info = read_train_state(last)
        trainer.load_state_dict(tensors)
        iterator.load_state_dict(info["iterator"])
        rng.bit_generator.state = info["rng"]
        step = saved = info["step"]
    else:
        model = package.train.new_model(model_config, train_config.seed, options.device)
        trainer = package.train.Trainer(model, train_config, options.compile)
        step, saved = 0, None
    every = options.eval_interval
    if every is None:
        every = max(1, total * train_config.eval_interval // train_config.epochs)

    def save(directory: Path, with_state: bool) -> None:
        weights = package.model.canonical_state(model)
        bad = next((name for name, w in weights.items() if not np.isfinite(w).all()), None)
        if bad is not None:
            raise HRMError(f"weight {bad!r} is not finite at step {step}: training diverged; lower lr "
                           f"({_last_good(last, saved)})")
        try:
            with checkpoint_directory(directory) as tmp:
                package.checkpoint.save_checkpoint(tmp, model, config, identifiers)
                if with_state:
                    write_train_state(tmp, trainer.state_dict(), {"step": step, "iterator": iterator.state_dict(),
                                                                  "rng": rng.bit_generator.state})
        except OSError as e:
            raise HRMError(f"could not write the checkpoint {directory} at step {step} ({e.strerror or e}); "
                           f"{_last_good(last, saved)}; free space and continue with `hrm train --resume {run}`"
                           ) from None

    def evaluate(final: bool) -> dict:
        voter = ArcVoter(identifiers) if arc_tasks else None
        keep = final and test_tokens <= MAX_KEPT_TOKENS
        metrics, outputs = package.evaluate.evaluate(model, data_dir, batch_size, keep_outputs=keep,
                                                     on_batch=voter.add if voter else None)
        if voter is not None:
            metrics.update({k: v for k, v in arc_score(voter, arc_tasks).items() if k.startswith("pass@")})
        log.write({"split": "test", "step": step, "epoch": iterator.epoch, **metrics})
        line.note(f"step {step:,}: test " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "count"))
        save(step_dir(run, step), with_state=False)
        if outputs is not None:
            with (run / RUN_OUTPUTS).open("wb") as f:
                np.savez(f, **outputs)
        return metrics

    log = MetricsLog(run / METRICS_FILE, step if resume else None)
    budget = Budget(total, options.max_steps, options.max_minutes)
    line = ProgressLine(budget.target, step)
    line.note(describe(config, total, iterator.epoch, step))
    began, train_seconds, first_step = time.monotonic(), 0.0, step
    tested, tested_at = {}, None
    try:
        with interrupt_flag() as interrupted:
            while (reason := INTERRUPTED if interrupted() else budget.stop_reason(step)) is None:
                batch = next(iterator)
                draws = draw_exploration(rng, batch_size, model_config.halt_max_steps,
                                         model_config.halt_exploration_prob)
                schedule = (step + 1, train_config.lr_warmup_steps, total, train_config.lr_min_ratio)
                lr = learning_rate(schedule[0], train_config.lr, *schedule[1:])
                puzzle_lr = learning_rate(schedule[0], train_config.puzzle_emb_lr, *schedule[1:])
                clock = time.perf_counter()
                result = trainer.step(batch, draws, lr, puzzle_lr)
                train_seconds += time.perf_counter() - clock
                if not math.isfinite(result["loss"]):
                    raise HRMError(f"the loss is {result['loss']} at step {step + 1}: training stopped; lower lr "
                                   f"({_last_good(last, saved)})")
                step += 1
                log.write({"split": "train", "step": step, "epoch": iterator.epoch, "lr": lr, **mean_metrics(result)})
                line.update(step, result, train_seconds)
                if every and step % every == 0:
                    tested, tested_at = evaluate(final=step >= budget.target), step
                if step % options.checkpoint_every == 0:
                    save(last, with_state=True)
                    saved = step
            if reason != INTERRUPTED and tested_at != step:
                tested = evaluate(final=True)
            if saved != step:
                save(last, with_state=True)
    finally:
        log.close()
        plot_run(run)
    line.note(f"{reason} at step {step:,}; checkpoint in {last}")
    summary = {"run": str(run), "backend": package.__name__.removeprefix("hrm_"), "stopped": reason,
               "steps": f"{step:,} of {total:,}", "time": duration(time.monotonic() - began),
               "speed": f"{(step - first_step) / max(train_seconds, 1e-9):.2f} steps/s"}
    summary.update({f"test {k}": f"{v:.4f}" for k, v in tested.items() if k in ("accuracy", "exact_accuracy")})
    return summary


def describe(config: CheckpointConfig, total: int, epoch: float, step: int) -> str:
    """The lines printed before the first step: model size, the puzzle table's memory, the length of the run."""
    model, train = config.model, config.train
    table = model.num_puzzle_identifiers * model.puzzle_emb_ndim if model.puzzle_emb_ndim else 0
    text = (f"{count_parameters(model):,} trainable parameters; puzzle table {model.num_puzzle_identifiers:,} x "
            f"{model.puzzle_emb_ndim} = {table * 4 / 2**20:,.1f} MiB float32 (SignSGD, no moments)\n"
            f"{total:,} steps of global batch {train.global_batch_size} ({train.epochs:,} epochs)")
    return text + (f"; resuming at step {step:,} (epoch {epoch:.2f})" if step else "")


def _last_good(last: Path, saved: int | None) -> str:
    """Where the last good checkpoint is, for an error message."""
    return f"{last} keeps the last good checkpoint, step {saved:,}" if saved is not None else "no checkpoint was written"
