"""The training loop (DESIGN.md section 5), the same for both backends and numpy only.

A backend package (hrm_torch or hrm_mlx) brings the model (`train.new_model`, `checkpoint.load_checkpoint`), the
optimizer step (`train.Trainer`: one step per ACT segment, the carry kept across batches, epochs and evaluations),
checkpoints and evaluation. The loop draws the batches and the exploration numbers (in a background thread, ahead
of the device), sets the learning rates, reads the steps' numbers every few steps, stops on a budget, a NaN loss or
Ctrl-C, and writes metrics and checkpoints (shared/run.py). Started by torchrun or mlx.launch, every process runs
this loop on its rows of the global batch and rank 0 alone writes (shared/distributed.py).
"""

import importlib
import math
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from hrm_shared.core.act import ExplorationDraws, draw_exploration
from hrm_shared.core.checkpoint import CheckpointConfig, checkpoint_directory
from hrm_shared.puzzles.arc_vote import ArcVoter, arc_score, is_arc, read_test_tasks
from hrm_shared.core.format import read_identifiers, read_metadata
from hrm_shared.core.iterator import TestIterator, TrainIterator, local_batch_size
from hrm_shared.core.distributed import Collective, describe_world, launched_rank, rank_rows
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import count_parameters
from hrm_shared.app.plot import plot_run
from hrm_shared.app.report import RUN_OUTPUTS
from hrm_shared.app.run import (LAST, METRICS_FILE, Budget, MetricsLog, ProgressLine, duration, mean_metrics,
                        read_train_state, step_dir, write_train_state)
from hrm_shared.core.schedule import learning_rate, total_steps

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
    log_every: int | None = None  # steps between reads of the steps' numbers; None: the trainer's (1 on CPU, 10 GPU)


@contextmanager
def interrupt_flag() -> Iterator[Callable[[], bool]]:
    """Within the block a first Ctrl-C (SIGINT) only sets the flag the loop checks between steps, so the state it
    saves is whole; a second one raises KeyboardInterrupt as usual. SIGTERM (a scheduler's stop, or torchrun passing
    on a Ctrl-C) only sets the flag. Outside the main thread: no handler."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    hits: list[int] = []

    def handler(signum, frame) -> None:
        if hits and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not hits and launched_rank() == 0:
            print("\nCtrl-C: saving a checkpoint after this step (press again to quit without saving)", file=sys.stderr)
        hits.append(signum)

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(hits)
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


@dataclass
class Position:
    """Where the data stands after the batches consumed so far: what a checkpoint saves."""

    iterator: dict  # TrainIterator.state_dict()
    rng: dict  # the exploration generator's bit_generator.state
    epoch: float


@dataclass
class Fed:
    """One prepared batch and the position after it."""

    prepared: Any  # Trainer.prepare(batch, draws)
    position: Position


class Feed:
    """The next batches and their exploration draws, drawn and prepared (Trainer.prepare) ahead in a background
    thread, so the device does not wait for the host. `position` is the state after the batches taken with `next`,
    not after those drawn ahead: a checkpoint resumes exactly."""

    def __init__(self, iterator: TrainIterator, rng: np.random.Generator,
                 draw: Callable[[np.random.Generator], ExplorationDraws], prepare: Callable[..., Any],
                 depth: int = 3) -> None:
        self.iterator, self.rng, self.draw, self.prepare = iterator, rng, draw, prepare
        self.position = self._position()
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="hrm-feed", daemon=True)
        self._thread.start()

    def _position(self) -> Position:
        return Position(self.iterator.state_dict(), self.rng.bit_generator.state, self.iterator.epoch)

    def _put(self, item: Fed | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                batch = next(self.iterator)
                prepared = self.prepare(batch, self.draw(self.rng))
                self._put(Fed(prepared, self._position()))
        except BaseException as e:  # handed to the loop, which raises it
            self._put(e)

    def __next__(self) -> Fed:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        self.position = item.position
        return item

    def close(self) -> None:
        """Stop drawing ahead."""
        self._stop.set()
        self._thread.join()


def train(package: ModuleType, run: Path, config: CheckpointConfig, options: RunOptions, resume: bool) -> dict:
    """Train `config` in run directory `run` with backend `package` (from scratch, or from `<run>/last` when
    `resume`) until total_steps or a budget; returns a summary. HRMError on a NaN loss (the last good checkpoint
    stays). Started by a launcher (torchrun, mlx.launch), each process trains its rows of the global batch and rank 0
    writes (shared/distributed.py)."""
    distributed = importlib.import_module(f"{package.__name__}.distributed")
    collective, device = distributed.connect(options.device)
    summary = _train(package, collective, device, Path(run), config, options, resume)
    collective.close()  # a barrier: after an error this process exits instead, and the others see it gone
    return summary


def _train(package: ModuleType, collective: Collective, device: str | None, run: Path, config: CheckpointConfig,
           options: RunOptions, resume: bool) -> dict:
    """train() in one process of `collective`."""
    data_dir = Path(config.dataset["path"])
    model_config, train_config = config.model, config.train
    batch_size, writer = train_config.global_batch_size, collective.rank == 0
    local = local_batch_size(batch_size, collective.size)
    iterator = TrainIterator(data_dir, batch_size, seed=train_config.seed, rank=collective.rank,
                             world_size=collective.size)
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
        model, _ = package.checkpoint.load_checkpoint(last, device)
        trainer = package.train.Trainer(model, train_config, options.compile, collective)
        tensors, info = read_train_state(last)
        trainer.load_state_dict(tensors)
        iterator.load_state_dict(info["iterator"])
        rng.bit_generator.state = info["rng"]
        step = saved = info["step"]
    else:
        model = package.train.new_model(model_config, train_config.seed, device)
        trainer = package.train.Trainer(model, train_config, options.compile, collective)
        step, saved = 0, None
    every = options.eval_interval
    if every is None:
        every = max(1, total * train_config.eval_interval // train_config.epochs)
    read_every = options.log_every or trainer.read_every
    mine = rank_rows(collective.rank, local)

    def draw(generator: np.random.Generator) -> ExplorationDraws:
        """The global batch's draws from the one generator every process holds; this process's rows of them."""
        draws = draw_exploration(generator, batch_size, model_config.halt_max_steps,
                                 model_config.halt_exploration_prob)
        return ExplorationDraws(draws.explore[mine], draws.min_halt_steps[mine])

    def save(directory: Path, with_state: bool) -> None:
        weights = package.model.canonical_state(model)
        bad = next((name for name, w in weights.items() if not np.isfinite(w).all()), None)
        if bad is not None:
            raise HRMError(f"weight {bad!r} is not finite at step {step}: training diverged; lower lr "
                           f"({_last_good(last, saved)})")
        state = trainer.state_dict() if with_state else None  # a collective: every process takes part
        problem = None
        if writer:
            try:
                with checkpoint_directory(directory) as tmp:
                    package.checkpoint.save_checkpoint(tmp, model, config, identifiers)
                    if state is not None:
                        where = feed.position
                        write_train_state(tmp, state, {"step": step, "iterator": where.iterator, "rng": where.rng,
                                                       "world_size": collective.size})
            except OSError as e:
                problem = (f"could not write the checkpoint {directory} at step {step} ({e.strerror or e}); "
                           f"{_last_good(last, saved)}; free space and continue with `hrm train --resume {run}`")
        if collective.all_sum_numpy(np.array([problem is not None], np.float64))[0]:
            raise HRMError(problem or f"rank {collective.rank}: rank 0 could not write the checkpoint {directory} at "
                                      f"step {step} (its message says why); {_last_good(last, saved)}")

    def evaluate(final: bool) -> dict:
        voter = ArcVoter(identifiers) if arc_tasks else None
        keep = final and test_tokens <= MAX_KEPT_TOKENS
        metrics, outputs = package.evaluate.evaluate(model, data_dir, trainer.eval_batch_size, keep_outputs=keep,
                                                     on_batch=voter.add if voter else None, collective=collective)
        if voter is not None:
            metrics.update({k: v for k, v in arc_score(voter, arc_tasks).items() if k.startswith("pass@")})
        if writer:
            log.write({"split": "test", "step": step, "epoch": feed.position.epoch, **metrics})
        line.note(f"step {step:,}: test " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "count"))
        save(step_dir(run, step), with_state=False)
        if outputs is not None:
            with (run / RUN_OUTPUTS).open("wb") as f:
                np.savez(f, **outputs)
        return metrics

    pending: list[tuple[int, float, float, Any]] = []  # (step, epoch, lr, what Trainer.launch returned)

    def flush() -> None:
        """Read the steps launched since the last read (one wait for the device) and log them."""
        for (number, epoch, lr, _), result in zip(pending, trainer.read([p[-1] for p in pending])):
            if not math.isfinite(result["loss"]):
                raise HRMError(f"the loss is {result['loss']} at step {number}: training stopped; lower lr "
                               f"({_last_good(last, saved)})")
            if writer:
                log.write({"split": "train", "step": number, "epoch": epoch, "lr": lr, **mean_metrics(result)})
            line.update(number, result, time.monotonic() - began - paused)
        pending.clear()
        collective.beat()

    def agreed_stop() -> str | None:
        """The stop reason every process agrees on: a Ctrl-C or a deadline on any of them stops all."""
        flags = collective.all_sum_numpy(np.array([interrupted(), budget.past_deadline()], np.float64))
        return INTERRUPTED if flags[0] else budget.stop_reason(step, past_deadline=bool(flags[1]))

    feed = Feed(iterator, rng, draw, trainer.prepare)
    log = MetricsLog(run / METRICS_FILE, step if resume else None) if writer else None
    sink = None if writer else open(os.devnull, "w")  # only rank 0 prints progress
    budget = Budget(total, options.max_steps, options.max_minutes)
    line = ProgressLine(budget.target, step, stream=sink)
    line.note(describe(config, total, feed.position.epoch, step,
                       describe_world(collective, package.__name__.removeprefix("hrm_"), batch_size)))
    began, paused, first_step = time.monotonic(), 0.0, step
    tested, tested_at = {}, None
    try:
        with interrupt_flag() as interrupted:
            while (reason := budget.stop_reason(step, past_deadline=False) if pending else agreed_stop()) is None:
                fed = next(feed)
                schedule = (step + 1, train_config.lr_warmup_steps, total, train_config.lr_min_ratio)
                lr = learning_rate(schedule[0], train_config.lr, *schedule[1:])
                puzzle_lr = learning_rate(schedule[0], train_config.puzzle_emb_lr, *schedule[1:])
                pending.append((step + 1, fed.position.epoch, lr, trainer.launch(fed.prepared, lr, puzzle_lr)))
                step += 1
                test_now, save_now = every and step % every == 0, step % options.checkpoint_every == 0
                if len(pending) >= read_every or test_now or save_now:
                    flush()
                clock = time.monotonic()  # evaluations and checkpoints do not count as training time
                if test_now:
                    tested, tested_at = evaluate(final=step >= budget.target), step
                if save_now:
                    save(last, with_state=True)
                    saved = step
                paused += time.monotonic() - clock
            flush()
            train_seconds = time.monotonic() - began - paused
            if reason != INTERRUPTED and tested_at != step:
                tested = evaluate(final=True)
            if saved != step:
                save(last, with_state=True)
    finally:
        feed.close()
        if writer:
            log.close()
            plot_run(run)
    line.note(f"{reason} at step {step:,}; checkpoint in {last}")
    if sink is not None:
        sink.close()
    summary = {"run": str(run), "backend": package.__name__.removeprefix("hrm_"), "stopped": reason,
               "steps": f"{step:,} of {total:,}", "time": duration(time.monotonic() - began),
               "speed": f"{(step - first_step) / max(train_seconds, 1e-9):.2f} steps/s"}
    if collective.size > 1:
        summary["processes"] = str(collective.size)
    summary.update({f"test {k}": f"{v:.4f}" for k, v in tested.items() if k in ("accuracy", "exact_accuracy")})
    return summary


def describe(config: CheckpointConfig, total: int, epoch: float, step: int, world: str = "") -> str:
    """The lines printed before the first step: model size, the puzzle table's memory, the length of the run and,
    when given, the processes (`world`)."""
    model, train = config.model, config.train
    table = model.num_puzzle_identifiers * model.puzzle_emb_ndim if model.puzzle_emb_ndim else 0
    text = (f"{count_parameters(model):,} trainable parameters; puzzle table {model.num_puzzle_identifiers:,} x "
            f"{model.puzzle_emb_ndim} = {table * 4 / 2**20:,.1f} MiB float32 (SignSGD, no moments)\n"
            f"{total:,} steps of global batch {train.global_batch_size} ({train.epochs:,} epochs)")
    text += f"; resuming at step {step:,} (epoch {epoch:.2f})" if step else ""
    return text + (f"\n{world}" if world else "")


def _last_good(last: Path, saved: int | None) -> str:
    """Where the last good checkpoint is, for an error message."""
    return f"{last} keeps the last good checkpoint, step {saved:,}" if saved is not None else "no checkpoint was written"
