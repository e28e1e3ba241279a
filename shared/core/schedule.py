"""The learning-rate schedule and the length of a run (shared/DESIGN.md section 5), as pure functions.

Step numbering follows the reference: the optimizer step counter t starts at 1 (it is incremented before the lr is
computed), and the lr of step t is `learning_rate(t, ...)`. Step 0 is never taken, so warmup never uses lr 0.
"""

import math


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
