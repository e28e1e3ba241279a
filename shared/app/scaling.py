"""Inference-time scaling (`hrm scaling`, the paper's Sudoku figure): exact accuracy, and ARC pass@k, after M
segments for several M, and in the adaptive mode, from one evaluation.

Evaluation is deterministic and a segment never looks ahead, so the answer after segment m of a run of M >= m
segments is the answer of a run of exactly m segments: one evaluation of max(M) segments with trajectory=True
scores every M on the way (tests/test_scaling.py checks it against separate evaluations).
"""

from pathlib import Path
from types import ModuleType

import numpy as np

from hrm_shared.app.plot import new_figure, save_figure
from hrm_shared.app.scoring import score
from hrm_shared.app.trajectory import Adaptive, halting_rule, scores
from hrm_shared.core.config import MAX_DEPTH, ModelConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.puzzles.arc_vote import ArcVote, arc_vote


def parse_steps(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8]: distinct segment counts from 1 to MAX_DEPTH, sorted; HRMError otherwise."""
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise HRMError(f"--steps {text!r} must be comma-separated whole numbers, such as 1,2,4,8,16") from None
    if not steps or steps[0] < 1:
        raise HRMError(f"--steps {text!r} must name segment counts of at least 1")
    if steps[-1] > MAX_DEPTH:
        raise HRMError(f"--steps {text!r}: {steps[-1]:,} segments is past the {MAX_DEPTH} a model may run "
                       f"(config.MAX_DEPTH; each segment costs a whole forward pass of every example)")
    return steps


class SegmentCurve:
    """Sums per segment count in `steps` over the batches of evaluate(trajectory=True) answers of max(steps)
    segments: counted examples, exact and token accuracy; with an ARC `vote` a fresh one per count."""

    def __init__(self, steps: list[int], vote: ArcVote | None = None) -> None:
        self.steps = steps
        self.count = 0
        self.exact = np.zeros(len(steps), np.int64)
        self.accuracy = np.zeros(len(steps), np.float64)
        self.votes = None if vote is None else [vote.fresh() for _ in steps]

    def add(self, answers: dict[str, np.ndarray]) -> None:
        """Count one batch: the answer after each M of `steps` is segment_predictions[:, M - 1]."""
        for i, M in enumerate(self.steps):
            predictions = answers["segment_predictions"][:, M - 1]
            counted, exact, accuracy = scores(predictions, answers["labels"])
            if i == 0:
                self.count += int(counted.sum())
            self.exact[i] += int(exact[counted].sum())
            self.accuracy[i] += float(accuracy[counted].sum())
            if self.votes is not None:
                self.votes[i].add({"predictions": predictions, "puzzle_identifiers": answers["puzzle_identifiers"],
                                    "q_halt_logits": answers["segment_q_halt_logits"][:, M - 1]})


def scaling_curve(package: ModuleType, model, config: ModelConfig, data_dir: Path, steps: list[int],
                  batch_size: int) -> dict:
    """Evaluate `model` (a backend `package`'s, of `config`) once over max(steps) segments on `data_dir`'s test split
    -> {"points": [{segments, exact_accuracy, accuracy[, pass@k]}] per M, "adaptive": the adaptive mode within
    max(steps) ({count, exact_accuracy, accuracy, mean_segments[, pass@k]}), "count", "metrics" (the backend's at
    max(steps)), "halting": the rule}."""
    vote = arc_vote(data_dir)
    curve = SegmentCurve(steps, vote)
    adaptive = Adaptive(config, vote.fresh() if vote is not None else None)
    scored = score(package, model, data_dir, batch_size, None, [curve.add, adaptive.add], segments=max(steps),
                   trajectory=True)
    n = max(curve.count, 1)
    points = []
    for i, M in enumerate(steps):
        point = {"segments": M, "exact_accuracy": curve.exact[i] / n, "accuracy": curve.accuracy[i] / n}
        points.append({**point, **(curve.votes[i].passes() if curve.votes is not None else {})})
    return {"points": points, "adaptive": adaptive.result(), "count": curve.count, "metrics": scored.metrics,
            "halting": halting_rule(config, max(steps))}


def plot_scaling(result: dict, path: Path, title: str) -> Path | None:
    """Draw exact accuracy (and ARC pass@2) against the segments, with the adaptive mode as a point at its mean
    segments, to the PNG `path`; None when matplotlib (the `plot` extra) is not installed."""
    made = new_figure(figsize=(6, 4))
    if made is None:
        return None
    figure, axis = made
    points, adaptive = result["points"], result["adaptive"]
    segments = [p["segments"] for p in points]
    axis.plot(segments, [p["exact_accuracy"] for p in points], "o-", label="exact accuracy, M segments")
    axis.plot([adaptive["mean_segments"]], [adaptive["exact_accuracy"]], "s", label="adaptive (Q-halt), mean segments")
    if "pass@2" in points[0]:
        axis.plot(segments, [p["pass@2"] for p in points], "^--", label="ARC pass@2")
    axis.set_xscale("log", base=2)
    axis.set_xticks(segments, [str(s) for s in segments])
    axis.set(xlabel="segments at inference (M)", ylabel="accuracy", ylim=(0, 1), title=title)
    axis.legend()
    return save_figure(figure, path)
