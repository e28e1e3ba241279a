"""The learning-rate schedule and the length of a run (shared/DESIGN.md section 5), as pure functions.

Step numbering follows the reference: the optimizer step counter t starts at 1 (it is incremented before the lr is
computed), and the lr of step t is `learning_rate(t, ...)`. Step 0 is never taken, so warmup never uses lr 0.
"""

import math
from dataclasses import dataclass


def learning_rate(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """The lr of optimizer step `step` (1-based): linear warmup, then a cosine from base_lr down to min_ratio * base_lr.

    step < warmup_steps: base_lr * step / warmup_steps; afterwards, with progress = (step - warmup) / (total - warmup),
    base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + cos(pi * progress))). min_ratio = 1 is constant after warmup.
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def total_steps(epochs: int, total_groups: int, mean_puzzle_examples: float, global_batch_size: int) -> int:
    """Optimizer steps of a run: epochs * total_groups * mean_puzzle_examples / global_batch_size, rounded down.

    The reference's estimate: each epoch visits every group once, and one puzzle of a group gives on average
    `mean_puzzle_examples` examples (from the training split's dataset.json).
    """
    return int(epochs * total_groups * mean_puzzle_examples / global_batch_size)


@dataclass(frozen=True)
class RunPlan:
    """Where a run ends and evaluates. `total_steps` is the lr schedule's length only: like the reference, a run ends
    after its epochs / eval_interval passes (at `last_step`, never past total_steps) and evaluates at each pass's end
    (`eval_steps`, ascending, the last equal to last_step). `exact` is False where a pass's batch count is estimated
    (puzzles of several examples: the examples a random puzzle gives vary)."""

    total_steps: int
    last_step: int
    eval_steps: tuple[int, ...]
    exact: bool = True

    def describe(self) -> str:
        """One line: the steps, the evaluations and the lr schedule's length."""
        about = "" if self.exact else " (estimated: a random puzzle gives a varying number of examples)"
        evaluations = f"{len(self.eval_steps)} evaluation{'s' * (len(self.eval_steps) != 1)}"
        return (f"{self.last_step:,} steps{about}, {evaluations}, the last at step {self.last_step:,}; the lr "
                f"schedule spans {self.total_steps:,} steps")

    def until(self, max_steps: int | None) -> "RunPlan":
        """The plan of a run stopped at `max_steps` (None: not stopped): it ends and evaluates there."""
        if max_steps is None or max_steps >= self.last_step:
            return self
        return RunPlan(self.total_steps, max_steps, (*(s for s in self.eval_steps if s < max_steps), max_steps),
                       self.exact)


def run_plan(epochs: int, eval_interval: int, total_groups: int, mean_puzzle_examples: float,
             global_batch_size: int, eval_every: int | None = None) -> RunPlan:
    """The reference's plan of a run: epochs / eval_interval passes of floor(eval_interval * total_groups *
    mean_puzzle_examples / global_batch_size) batches each (each pass drops its last partial batch), capped at
    total_steps; evaluations at the pass ends, or every `eval_every` steps when given (0: at the end only).

    Exact when every puzzle holds one example (Sudoku, mazes): each group then gives one example a visit.
    """
    total = total_steps(epochs, total_groups, mean_puzzle_examples, global_batch_size)
    per_pass = int(eval_interval * total_groups * mean_puzzle_examples / global_batch_size)
    last = min(epochs // eval_interval * per_pass, total)
    return RunPlan(total, last, _evaluations(per_pass if eval_every is None else eval_every, last),
                   mean_puzzle_examples == 1.0)


def legacy_plan(total: int, epochs: int, eval_interval: int, eval_every: int | None = None) -> RunPlan:
    """The plan of a run started before run plans were recorded in its checkpoints: to total_steps, evaluating every
    total * eval_interval / epochs steps (or `eval_every`) and at the end."""
    every = max(1, total * eval_interval // epochs) if eval_every is None else eval_every
    return RunPlan(total, total, _evaluations(every, total))


def _evaluations(every: int, last: int) -> tuple[int, ...]:
    """Every `every` steps (0: none) before `last`, then `last` (none when the run takes no step)."""
    steps = tuple(range(every, last, every)) if every > 0 else ()
    return (*steps, last) if last > 0 else ()
