"""One scoring path: evaluate a model on a dataset's test split, vote ARC's augmented views and compute pass@k.

The training loop, `hrm evaluate`, `hrm scaling` and the adaptive mode score through `score` and the ArcVote of
puzzles/arc_vote.py (whose `passes` is the one pass@k filter); `hrm report` feeds the same ArcVote from saved outputs.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from hrm_shared.puzzles.arc_vote import ArcVote

Listener = Callable[[dict[str, np.ndarray]], None]  # one batch of evaluate() answers


@dataclass
class Scored:
    """An evaluation's result: the backend's `metrics` (count and means), its `outputs` (evaluate's, or None) and the
    ARC `vote` it fed (None off ARC)."""

    metrics: dict[str, float]
    outputs: dict[str, np.ndarray] | None
    vote: ArcVote | None

    def with_passes(self) -> dict[str, float]:
        """The metrics and, with a vote, its pass@k rates."""
        return {**self.metrics, **(self.vote.passes() if self.vote is not None else {})}


def score(package: ModuleType, model: Any, data_dir: Path, batch_size: int, vote: ArcVote | None = None,
          listeners: Sequence[Listener] = (), **options: Any) -> Scored:
    """Evaluate `model` (a backend `package`'s) on `data_dir`'s test split in batches of `batch_size` with the
    backend's evaluate `options` (keep_outputs, segments, trajectory, collective), each batch's answers fed to
    `vote` (ARC; see arc_vote.arc_vote) and to each of `listeners`."""
    feeds = ([vote.add] if vote is not None else []) + list(listeners)

    def on_batch(answers: dict[str, np.ndarray]) -> None:
        for feed in feeds:
            feed(answers)

    metrics, outputs = package.evaluate.evaluate(model, data_dir, batch_size, on_batch=on_batch if feeds else None,
                                                 **options)
    return Scored(metrics, outputs, vote)
