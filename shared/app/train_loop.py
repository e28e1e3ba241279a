"""The training loop (shared/DESIGN.md section 5), the same for both backends and numpy only.

A backend package (hrm_torch or hrm_mlx) brings the model (`train.new_model`, `checkpoint.load_checkpoint`), the
optimizer step (`train.Trainer`: one step per ACT segment, the carry kept across batches, epochs and evaluations),
checkpoints and evaluation. The loop draws the batches and the exploration numbers (in a background thread, ahead
of the device), sets the learning rates, reads the steps' numbers every few steps, stops on a budget, a NaN loss or
Ctrl-C, and writes metrics and checkpoints (shared/app/run.py). Started by torchrun or mlx.launch, every process
runs this loop on its rows of the global batch and rank 0 alone writes (shared/core/distributed.py).
"""

import _thread
import importlib
import logging
import math
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from hrm_shared.app.eta import Pace, day_warning, device_flops, fitting_preset, run_estimate, train_plan
from hrm_shared.app.flops import train_step_flops
from hrm_shared.app.plot import plot_run
from hrm_shared.app.run import (
    LAST,
    METRICS_FILE,
    RUN_OUTPUTS,
    Budget,
    MetricsLog,
    ProgressLine,
    last_checkpoint,
    mean_metrics,
    read_train_state,
    step_dir,
    write_train_state,
)
from hrm_shared.app.scoring import score
from hrm_shared.app.tracking import discard_tracker_files, open_trackers
from hrm_shared.core.act import ExplorationDraws, draw_exploration
from hrm_shared.core.atomic import replace_file
from hrm_shared.core.checkpoint import CONFIG_FILE, CheckpointConfig, checkpoint_directory
from hrm_shared.core.config import TrainConfig
from hrm_shared.core.distributed import Collective, describe_world, launched_rank, rank_rows
from hrm_shared.core.errors import HRMError, WriteError
from hrm_shared.core.format import DatasetMetadata, read_identifiers, read_metadata
from hrm_shared.core.init import count_parameters
from hrm_shared.core.iterator import TestIterator, TrainIterator, local_batch_size
from hrm_shared.core.progress import duration
from hrm_shared.core.schedule import RunPlan, learning_rate, legacy_plan
from hrm_shared.puzzles.arc_vote import arc_vote

INTERRUPTED = "interrupted (Ctrl-C)"
TERMINATED = "terminated (SIGTERM)"
HUNG_UP = "hung up (SIGHUP)"
QUIT_STATUS = 130  # 128 + SIGINT: what a shell reports for a process that Ctrl-C ended
# The signals that stop a run after saving, with the stop each makes: a closed terminal or a dropped SSH session
# sends SIGHUP, a scheduler SIGTERM.
STOPS: dict[int, str] = {signal.SIGINT: INTERRUPTED, signal.SIGTERM: TERMINATED, signal.SIGHUP: HUNG_UP}
# The exit status of `hrm train` after each stop on a signal (128 + its number), so that `hrm train ... && next`
# does not go on after an interrupted run.
STOP_STATUS = {reason: 128 + number for number, reason in STOPS.items()}
# The last evaluation writes every prediction to <run>/eval_outputs.npz (for `hrm report`) up to this many tokens.
MAX_KEPT_TOKENS = 50_000_000
# The run plans a checkpoint's training state names (core/schedule.py): the reference's passes, or (written before
# plans were recorded, so absent) to total_steps.
PASSES, LEGACY = "passes", "total_steps"


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
    wandb: str | None = None  # a W&B project the metrics also go to (shared/app/tracking.py)
    tensorboard: bool = False  # also write the metrics as TensorBoard events in <run>/tensorboard
    verify: bool = True  # check a resumed checkpoint's files against their checksums (core/checksums.py)
    # What a second Ctrl-C does, called at once from the signal thread: `hrm train` ends the process there; None
    # raises KeyboardInterrupt in the main thread when it next runs Python, so a notebook's kernel lives on.
    on_second_interrupt: Callable[[], None] | None = None


log = logging.getLogger(__name__)


def _first_notice(number: int) -> None:
    """What interrupt_flag says by default on the first signal (rank 0 only)."""
    if launched_rank() == 0:
        log.warning("\nCtrl-C: saving a checkpoint after this step (press again to quit without saving)")


def _detach(terminals: list[int]) -> None:
    """Send what this process writes to the file descriptors `terminals` (those of stdout and stderr that were a
    terminal) to /dev/null: after a hangup a write to the terminal fails (EIO), which would stop the run before it
    saves. Output redirected to a file is kept."""
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in terminals:
        os.dup2(null, fd)
    os.close(null)


@contextmanager
def interrupt_flag(on_first: Callable[[int], None] = _first_notice, on_second: Callable[[], None] | None = None
                   ) -> Iterator[Callable[[], int]]:
    """Within the block a first Ctrl-C (SIGINT) only sets the flag the loop checks between steps, so the state it
    saves is whole; a second one calls `on_second` at once, even while the main thread is inside a long step (`hrm
    train` ends the process there), or without it raises KeyboardInterrupt in the main thread as soon as that runs
    Python again, nothing saved. SIGTERM (a scheduler's stop, or torchrun passing on a Ctrl-C) and SIGHUP (the
    terminal closed; the output that went to it goes to /dev/null from then on) only set the flag. The first
    signal's number goes to `on_first` at once (in a thread of its own, even while the main thread is inside a long
    call), before the flag is set; the flag reads as that number (0: none yet). Outside the main thread: no
    handler."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: 0
        return
    hits: list[int] = []
    quitting = threading.Event()
    raised = threading.Event()  # set once KeyboardInterrupt is raised, and when the block ends: never raise twice

    def handler(signum: int, frame: object) -> None:
        # The second SIGINT can reach this handler twice (its own delivery and interrupt_main below) in either
        # order; a second KeyboardInterrupt would land in the cleanup and leave our handlers installed.
        if quitting.is_set() and not raised.is_set():
            raised.set()
            raise KeyboardInterrupt
    # Python runs a handler only when the main thread is between bytecodes, and a step can keep it in one C++ call
    # for minutes; the C-level handler writes each signal's number to the wakeup socket at once, for `watch` to act.
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    caught = tuple(STOPS)
    terminals = [fd for fd in (1, 2) if os.isatty(fd)]  # read now: once the terminal hangs up, isatty says no

    def watch() -> None:
        while (numbers := reader.recv(64)) and 0 not in numbers:  # 0: the block ended
            for number in numbers:
                if number not in caught:  # another signal with a Python handler
                    continue
                if quitting.is_set():  # the SIGINT interrupt_main below simulates
                    continue
                if hits and number == signal.SIGINT:
                    if on_second is not None:
                        on_second()
                        continue
                    log.warning("\nCtrl-C again: stopping without saving")
                    quitting.set()
                    if not raised.is_set():
                        _thread.interrupt_main(signal.SIGINT)
                    continue
                if number == signal.SIGHUP:
                    _detach(terminals)
                if not hits:
                    on_first(number)
                hits.append(number)

    previous = {number: signal.signal(number, handler) for number in caught}
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, name="hrm-signals", daemon=True)
    watcher.start()
    try:
        yield lambda: hits[0] if hits else 0
    finally:
        raised.set()
        signal.set_wakeup_fd(previous_fd)
        for number, action in reversed(previous.items()):  # SIGINT last: a Ctrl-C pending now raises after all
            signal.signal(number, action)
        writer.send(b"\0")
        watcher.join()
        reader.close()
        writer.close()


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
        return Position(self.iterator.state_dict(), dict(self.rng.bit_generator.state), self.iterator.epoch)

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


def describe(config: CheckpointConfig, plan: RunPlan, epoch: float, step: int, world: str = "") -> str:
    """The lines printed before the first step: model size, the puzzle table's memory, the run's `plan` and, when
    given, the processes (`world`)."""
    model, train = config.model, config.train
    table = model.num_puzzle_identifiers * model.puzzle_emb_ndim
    puzzles = (f"puzzle table {model.num_puzzle_identifiers:,} x {model.puzzle_emb_ndim} = "
               f"{table * 4 / 2**20:,.1f} MiB float32 (SignSGD, no moments)" if table else "no puzzle embedding")
    text = (f"{count_parameters(model):,} trainable parameters; {puzzles}\n"
            f"global batch {train.global_batch_size}, {train.epochs:,} epochs: {plan.describe()}")
    text += f"; resuming at step {step:,} (epoch {epoch:.2f})" if step else ""
    return text + (f"\n{world}" if world else "")


def _run_plan(train: TrainConfig, metadata: DatasetMetadata, eval_every: int | None, legacy: bool = False) -> RunPlan:
    """The run's plan (core/schedule.py): the reference's passes, or for a run resumed from a checkpoint written
    before plans were recorded (`legacy`) the plan it started with; HRMError when it would take no step."""
    plan = train_plan(train, metadata, eval_every)
    if legacy:
        plan = legacy_plan(plan.total_steps, train.epochs, train.eval_interval, eval_every)
    if plan.last_step < 1:
        raise HRMError(f"the run would take no step: a pass of eval_interval epochs x groups x examples "
                       f"({train.eval_interval} x {metadata.total_groups} x {metadata.mean_puzzle_examples:g}) < "
                       f"global_batch_size {train.global_batch_size}; raise eval_interval (and epochs) or lower "
                       f"global_batch_size")
    return plan


class TrainingRun:
    """train() in one process of `collective`: the model, its Trainer and the data, set up (from `<run>/last` when
    `resume`) when built; `run()` trains until a stop and returns the summary. Every process makes the same
    collective calls in the same order; rank 0 (`writer`) alone writes metrics and checkpoints and prints."""

    def __init__(self, package: ModuleType, collective: Collective, device: str | None, run_dir: Path,
                 config: CheckpointConfig, options: RunOptions, resume: bool) -> None:
        self.package, self.collective, self.run_dir, self.config, self.options = (package, collective, run_dir,
                                                                                   config, options)
        self.backend = package.__name__.removeprefix("hrm_")
        self.data_dir = Path(config.dataset["path"])
        self.model_config, self.train_config = config.model, config.train
        self.batch_size, self.writer = self.train_config.global_batch_size, collective.rank == 0
        local = local_batch_size(self.batch_size, collective.size)
        iterator = TrainIterator(self.data_dir, self.batch_size, seed=self.train_config.seed,
                                 epochs_per_pass=self.train_config.eval_interval, rank=collective.rank,
                                 world_size=collective.size)
        self.plan_kind = PASSES  # what a checkpoint records: a resumed run keeps the plan it started with
        rng = np.random.default_rng(self.train_config.seed)  # exploration draws (shared/core/act.py)

        self.identifiers = read_identifiers(self.data_dir)
        test_metadata = read_metadata(self.data_dir, "test")
        self.arc_vote = arc_vote(self.data_dir)
        self.test_tokens = TestIterator(self.data_dir, self.batch_size).num_examples * test_metadata.seq_len

        self.last = run_dir / LAST
        if resume:
            source = last_checkpoint(run_dir)  # <run>/last, or the newer version a kill while replacing it left
            self.model, _ = package.checkpoint.load_checkpoint(source, device, options.verify)
            self.trainer = package.train.Trainer(self.model, self.train_config, options.compile, collective)
            tensors, info = read_train_state(source, options.verify)
            self.trainer.load_state_dict(tensors)
            iterator.load_state_dict(info["iterator"])
            rng.bit_generator.state = info["rng"]
            self.step: int = info["step"]
            self.plan_kind = info.get("plan", LEGACY)
            self.saved: int | None = self.step  # the step <run>/last holds
        else:
            self.model = package.train.new_model(self.model_config, self.train_config.seed, device)
            self.trainer = package.train.Trainer(self.model, self.train_config, options.compile, collective)
            self.step, self.saved = 0, None

        self.plan = _run_plan(self.train_config, iterator.metadata, options.eval_interval,
                              legacy=self.plan_kind == LEGACY)
        self.total, self.eval_steps = self.plan.total_steps, frozenset(self.plan.eval_steps)
        self.read_every = options.log_every or self.trainer.read_every
        self.rows = rank_rows(collective.rank, local)
        resumed = self.step if resume else None
        if self.writer:  # before the Feed's thread: a tracker that cannot start stops the run here
            try:
                trackers = open_trackers(run_dir, config, options.wandb, options.tensorboard, resumed)
            except HRMError:
                if not resume:  # leave the directory empty, as new_run found it: to start again in it
                    discard_tracker_files(run_dir)
                    (run_dir / CONFIG_FILE).unlink(missing_ok=True)
                raise
            self.log: MetricsLog | None = MetricsLog(run_dir / METRICS_FILE, resumed, trackers)
        else:
            self.log = None
        self.feed = Feed(iterator, rng, self.draw, self.trainer.prepare)

        self.budget = Budget(self.plan.last_step, options.max_steps, options.max_minutes)
        self.line = ProgressLine(self.budget.target, self.step, quiet=not self.writer)  # only rank 0 reports
        self.line.note(describe(config, self.plan.until(options.max_steps), self.feed.position.epoch, self.step,
                                describe_world(collective, self.backend, self.batch_size)))
        # Between the loop and the signal thread, which reads the step a Ctrl-C will save at: `in_step` while a step
        # is being launched (it is not yet counted in `step` nor in `pending`), `signal` the first signal's number.
        self.lock = threading.Lock()
        self.in_step, self.signal = False, 0
        self.pace = self.estimate(iterator.metadata, device) if self.writer else None
        self.began, self.paused, self.first_step = time.monotonic(), 0.0, self.step
        self.pending: list[tuple[int, float, float, Any]] = []  # (step, epoch, lr, what Trainer.launch returned)
        self.tested: dict = {}
        self.tested_at: int | None = None

    def estimate(self, metadata: DatasetMetadata, device: str | None) -> Pace:
        """Print the estimated time per step and for the run on this device before the first step, with a warning
        naming a preset that fits when it is over a day (shared/app/eta.py); return the Pace that measures the
        first steps and warns then if the estimate did not."""
        resolved = self.package.bench.resolve_device(device)
        flops = device_flops(self.backend, resolved, self.package.bench.device_name(resolved))
        kind, processes = self.config.dataset.get("kind"), self.collective.size
        lines, _ = run_estimate(flops, self.model_config, self.train_config, kind, metadata,
                                self.budget.target - self.step, processes, resolved)
        for line in lines:
            self.line.note(line)
        rows = max(1, self.batch_size // processes)

        def warning(seconds: float, per_step: float) -> str:
            speed = train_step_flops(self.model_config, rows) / per_step
            return day_warning(seconds, fitting_preset(kind, self.model_config, metadata, speed, processes))

        return Pace(self.budget.target, len(lines) > 1, warning)

    def on_signal(self, number: int) -> None:
        """The first SIGINT, SIGTERM or SIGHUP (from the signal thread): note it and print, on rank 0, the step the
        run will save at."""
        with self.lock:
            self.signal = number
            step = self.stop_step()
        if self.writer:
            what = "interrupted" if number == signal.SIGINT else STOPS[number]
            self.line.note(f"\n{what}: saving at step {step:,} (Ctrl-C again to quit now)")

    def flush_due(self, step: int) -> bool:
        """Whether the steps are read right after step `step`: an evaluation or a checkpoint follows it."""
        return step in self.eval_steps or step % self.options.checkpoint_every == 0

    def stop_step(self) -> int:
        """The step a signal arriving now stops the run at (under `lock`): the step being launched or the last
        one; with several processes, the next read after it, where they agree on stopping."""
        step, waiting = self.step + self.in_step, len(self.pending) + self.in_step
        if self.collective.size > 1 and waiting:
            while not (waiting >= self.read_every or self.flush_due(step) or step >= self.budget.target):
                step, waiting = step + 1, waiting + 1
        return step

    def draw(self, generator: np.random.Generator) -> ExplorationDraws:
        """The global batch's draws from the one generator every process holds; this process's rows of them. Called
        by the Feed's thread: it reads only what __init__ set before the Feed."""
        draws = draw_exploration(generator, self.batch_size, self.model_config.halt_max_steps,
                                 self.model_config.halt_exploration_prob)
        return ExplorationDraws(draws.explore[self.rows], draws.min_halt_steps[self.rows])

    def last_good(self) -> str:
        """Where the last good checkpoint is, for an error message."""
        if self.saved is None:
            return "no checkpoint was written"
        return f"{self.last} keeps the last good checkpoint, step {self.saved:,}"

    def save(self, directory: Path, with_state: bool) -> None:
        """Write a checkpoint of the model to `directory` (rank 0), with the training state when `with_state`; with
        train.ema the checkpoint holds the averaged weights and the state the raw ones. HRMError on every process
        when a weight or a float of the state is not finite or rank 0 could not write."""
        state = self.trainer.state_dict() if with_state else None  # a collective: every process takes part
        problem = None
        with self.trainer.averaged():
            weights = self.package.model.canonical_state(self.model)
            bad = next((name for name, w in {**weights, **(state or {})}.items()
                        if w.dtype.kind == "f" and not np.isfinite(w).all()), None)
            if bad is not None:
                raise HRMError(f"{'weight' if bad in weights else 'training state'} {bad!r} is not finite at step "
                               f"{self.step}: training diverged; lower lr ({self.last_good()})")
            if self.writer:
                try:
                    with checkpoint_directory(directory) as tmp:
                        self.package.checkpoint.save_checkpoint(tmp, self.model, self.config, self.identifiers)
                        if state is not None:
                            where = self.feed.position
                            write_train_state(tmp, state, {"step": self.step, "iterator": where.iterator,
                                                           "rng": where.rng, "world_size": self.collective.size,
                                                           "plan": self.plan_kind})
                except WriteError as e:
                    problem = (f"could not write the checkpoint {directory} at step {self.step} ({e.reason}; "
                               f"{e.free} free on its disk); {self.last_good()}; free space and continue with "
                               f"`hrm train --resume {self.run_dir}`")
        if self.collective.all_sum_numpy(np.array([problem is not None], np.float64))[0]:
            raise HRMError(problem or f"rank {self.collective.rank}: rank 0 could not write the checkpoint "
                                      f"{directory} at step {self.step} (its message says why); {self.last_good()}")

    def save_last(self) -> None:
        """Save the model and the training state to `<run>/last`."""
        self.save(self.last, with_state=True)
        self.saved = self.step

    def evaluate(self, final: bool) -> dict:
        """Score the model (its EMA with train.ema) on the test split, log and print the metrics, save the weights
        to `<run>/step_N`; the `final` evaluation also writes every prediction to `<run>/RUN_OUTPUTS` (up to
        MAX_KEPT_TOKENS). Returns the metrics."""
        keep = final and self.test_tokens <= MAX_KEPT_TOKENS
        with self.trainer.averaged():  # with train.ema the average is what is scored
            scored = score(self.package, self.model, self.data_dir, self.trainer.eval_batch_size,
                           self.arc_vote.fresh() if self.arc_vote else None, keep_outputs=keep,
                           collective=self.collective)
        metrics, outputs = scored.with_passes(), scored.outputs
        if self.log is not None:
            self.log.write({"split": "test", "step": self.step, "epoch": self.feed.position.epoch,
                            "train_seconds": round(self.train_seconds(), 1), **metrics})
        self.line.note(f"step {self.step:,}: test "
                       + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "count"))
        self.save(step_dir(self.run_dir, self.step), with_state=False)
        if outputs is not None:
            with replace_file(self.run_dir / RUN_OUTPUTS) as tmp, tmp.open("wb") as f:
                np.savez(f, **outputs)  # type: ignore[arg-type]  # numpy's stub reads **arrays as allow_pickle
        return metrics

    def flush(self) -> None:
        """Read the steps launched since the last read (one wait for the device) and log them. HRMError on a
        non-finite loss."""
        for (number, epoch, lr, _), result in zip(self.pending, self.trainer.read([p[-1] for p in self.pending])):
            if not math.isfinite(result["loss"]):
                raise HRMError(f"the loss is {result['loss']} at step {number}: training stopped; lower lr "
                               f"({self.last_good()})")
            if self.log is not None:
                self.log.write({"split": "train", "step": number, "epoch": epoch, "lr": lr,
                                **mean_metrics(result, self.batch_size)})
            self.line.update(number, result, time.monotonic() - self.began - self.paused)
        if self.pace is not None and self.pending:
            if text := self.pace.read(self.pending[-1][0], self.train_seconds()):
                self.line.note(text)
        self.pending.clear()
        self.collective.beat()

    def train_seconds(self) -> float:
        """Seconds of this invocation spent in steps (evaluations and checkpoints left out)."""
        return time.monotonic() - self.began - self.paused

    def agreed_stop(self, number: int) -> str | None:
        """The stop reason every process agrees on: a signal (`number`, 0: none) or a deadline on any of them stops
        all. A collective."""
        flags = self.collective.all_sum_numpy(np.array([number > 0, self.budget.past_deadline()], np.float64))
        if flags[0]:
            return STOPS.get(number, INTERRUPTED)  # a process the signal did not reach reports an interrupt
        return self.budget.stop_reason(self.step, past_deadline=bool(flags[1]))

    def stop_reason(self) -> str | None:
        """Why to stop before the next step, or None; from here until the next step is counted a signal stops the
        run after that step (`in_step`). One process reads the signal after every step; several, with steps still
        unread, only the step budget: right after a read (at the same step on every process) agreed_stop, whose
        collective each process then calls."""
        with self.lock:
            number, self.in_step = self.signal, True
        if self.pending and self.collective.size > 1:
            reason = self.budget.stop_reason(self.step, past_deadline=False)
        else:
            reason = self.agreed_stop(number)
        if reason is not None:
            with self.lock:
                self.in_step = False
        return reason

    def take_step(self) -> None:
        """Launch the next step at the scheduled learning rates; read the steps when due, evaluate and save
        `<run>/last` when due. Evaluations and checkpoints do not count as training time."""
        fed = next(self.feed)
        train, number = self.train_config, self.step + 1
        schedule = (train.lr_warmup_steps, self.total, train.lr_min_ratio)
        lr = learning_rate(number, train.lr, *schedule)
        puzzle_lr = learning_rate(number, train.puzzle_emb_lr, *schedule)
        launched = self.trainer.launch(fed.prepared, lr, puzzle_lr)
        with self.lock:
            self.pending.append((number, fed.position.epoch, lr, launched))
            self.step, self.in_step = number, False
        test_now = self.step in self.eval_steps
        save_now = self.step % self.options.checkpoint_every == 0
        if len(self.pending) >= self.read_every or self.flush_due(self.step):
            self.flush()
        clock = time.monotonic()
        if test_now:
            self.tested, self.tested_at = self.evaluate(final=self.step >= self.budget.target), self.step
        if save_now:
            self.save_last()
        self.paused += time.monotonic() - clock

    def close(self) -> None:
        """Stop the Feed; on rank 0 close the metrics and plot them (a plot that cannot be written is a warning)."""
        self.feed.close()
        if self.log is not None:
            self.log.close()
            try:
                plot_run(self.run_dir)
            except WriteError as e:  # the curves are a convenience: never hide why the run stopped
                self.line.note(f"warning: {e}")

    def summary(self, reason: str, train_seconds: float) -> dict:
        """What `hrm train` prints at the end: the stop `reason`, steps, time, speed over `train_seconds`, the last
        test accuracies."""
        summary = {"run": str(self.run_dir), "backend": self.backend, "stopped": reason,
                   "steps": f"{self.step:,} of {self.plan.last_step:,}",
                   "time": duration(time.monotonic() - self.began),
                   "speed": f"{(self.step - self.first_step) / max(train_seconds, 1e-9):.2f} steps/s"}
        if self.collective.size > 1:
            summary["processes"] = str(self.collective.size)
        summary.update({f"test {k}": f"{v:.4f}" for k, v in self.tested.items()
                        if k in ("accuracy", "exact_accuracy")})
        return summary

    def run(self) -> dict:
        """Train until a stop (the budget, or a Ctrl-C agreed on by every process), then read the last steps,
        evaluate unless interrupted or just evaluated, save `<run>/last` unless just saved; returns the summary."""
        try:
            with interrupt_flag(self.on_signal, self.options.on_second_interrupt):
                while (reason := self.stop_reason()) is None:
                    self.take_step()
                self.flush()
                train_seconds = self.train_seconds()
                if reason not in STOP_STATUS and self.tested_at != self.step:
                    self.tested = self.evaluate(final=True)
                if self.saved != self.step:
                    self.save_last()
        finally:
            self.close()
        resume = f"; continue with `hrm train --resume {self.run_dir}`" if reason in STOP_STATUS else ""
        self.line.note(f"{reason} at step {self.step:,}; checkpoint in {self.last}{resume}")
        return self.summary(reason, train_seconds)


def train(package: ModuleType, run: Path, config: CheckpointConfig, options: RunOptions, resume: bool) -> dict:
    """Train `config` in run directory `run` with backend `package` (from scratch, or from `<run>/last` when
    `resume`) until total_steps or a budget; returns a summary. HRMError on a NaN loss (the last good checkpoint
    stays). Started by a launcher (torchrun, mlx.launch), each process trains its rows of the global batch and rank 0
    writes (shared/core/distributed.py)."""
    distributed = importlib.import_module(f"{package.__name__}.distributed")
    collective, device = distributed.connect(options.device)
    summary = TrainingRun(package, collective, device, Path(run), config, options, resume).run()
    collective.close()  # a barrier: after an error this process exits instead, and the others see it gone
    return summary
