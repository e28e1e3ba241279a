"""Every segment's answer: the trajectory file (`hrm evaluate --save-trajectory`), exact accuracy of a batch of
answers, and the adaptive mode (`hrm evaluate --halt`), where each example stops at its own Q-halt decision.

The backends' evaluate(trajectory=True) hands over, per batch of n rows, segment_predictions [n, M, seq_len] int32
and segment_q_halt_logits, segment_q_continue_logits [n, M] float32 (M segments). The adaptive mode applies each
family's halting rule of training (model.py and trm.py `q_halting`) to those logits, without the exploration: HRM
halts at the first segment where q_halt > q_continue, TRM (no_ACT_continue) where q_halt > 0; an example that never
halts stops at M.
"""

from pathlib import Path

import numpy as np

from hrm_shared.core.atomic import replace_file
from hrm_shared.core.config import ModelConfig
from hrm_shared.core.iterator import IGNORE_LABEL_ID
from hrm_shared.core.registry import family_of
from hrm_shared.puzzles.arc_vote import ArcVote

# The trajectory file's arrays, one row per test example in dataset order, and the evaluate() answers they are.
TRAJECTORY_KEYS = {"predictions": "segment_predictions", "q_halt_logits": "segment_q_halt_logits",
                   "q_continue_logits": "segment_q_continue_logits", "puzzle_identifiers": "puzzle_identifiers"}


def trajectory_arrays(answers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The trajectory file's arrays from evaluate(trajectory=True) answers: predictions [N, M, seq_len] int32,
    q_halt_logits and q_continue_logits [N, M] float32, puzzle_identifiers [N] int32."""
    return {key: answers[source] for key, source in TRAJECTORY_KEYS.items()}


def write_trajectory(path: Path, answers: dict[str, np.ndarray]) -> None:
    """Write trajectory_arrays(answers) to the .npz `path`, atomically."""
    with replace_file(Path(path)) as tmp, tmp.open("wb") as f:
        np.savez(f, **trajectory_arrays(answers))  # type: ignore[arg-type]  # numpy's stub reads **arrays as allow_pickle


def scores(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of predictions and labels [n, seq_len] (labels -100 where ignored) -> (counted [n] bool: has a
    supervised token, exact [n] bool: every supervised token right, accuracy [n] float64: the fraction right), as
    the backends' metrics count them."""
    supervised = labels != IGNORE_LABEL_ID
    right = (predictions == labels) & supervised
    counts = supervised.sum(axis=1)
    return counts > 0, right.sum(axis=1) == counts, right.sum(axis=1) / np.maximum(counts, 1)


def halts_on_q_halt_alone(config: ModelConfig) -> bool:
    """Whether the family halts on q_halt > 0 alone (TRM's no_ACT_continue) rather than q_halt > q_continue (HRM):
    whether it trains no Q-continue target (the registry's q_target)."""
    return not family_of(config).q_target


def halting_rule(config: ModelConfig, segments: int) -> str:
    """The adaptive mode in words, for `config`'s family and at most `segments` segments."""
    rule = "q_halt > 0" if halts_on_q_halt_alone(config) else "q_halt > q_continue"
    return f"each example stops at its first segment with {rule}, at most {segments}"


def halt_segments(q_halt: np.ndarray, q_continue: np.ndarray, q_halt_alone: bool) -> np.ndarray:
    """Per example of the Q logits [n, M], the segment (1..M, int64 [n]) it halts at: the first where q_halt >
    q_continue (q_halt > 0 with `q_halt_alone`), raw logits, strict; M when none."""
    decided = q_halt > (0.0 if q_halt_alone else q_continue)  # [n, M]
    decided[:, -1] = True
    return decided.argmax(axis=1) + 1


def at_segments(answers: dict[str, np.ndarray], segments: np.ndarray) -> dict[str, np.ndarray]:
    """The answers each example gives at its own segment (1-based, [n]): predictions [n, seq_len] and
    q_halt_logits [n], with its labels and puzzle_identifiers, for scoring and the ARC vote."""
    rows = np.arange(len(segments))
    return {"predictions": answers["segment_predictions"][rows, segments - 1],
            "q_halt_logits": answers["segment_q_halt_logits"][rows, segments - 1],
            "labels": answers["labels"], "puzzle_identifiers": answers["puzzle_identifiers"]}


class Adaptive:
    """The adaptive mode's sums over the batches of evaluate(trajectory=True) answers: each example scored at its
    own halting segment (halt_segments) and, on ARC data (`vote`, a fresh ArcVote), voted with those answers."""

    def __init__(self, config: ModelConfig, vote: ArcVote | None = None) -> None:
        self.q_halt_alone, self.vote = halts_on_q_halt_alone(config), vote
        self.count, self.exact, self.accuracy, self.segments = 0, 0, 0.0, 0

    def add(self, answers: dict[str, np.ndarray]) -> None:
        """Count one batch of answers (segment_* arrays, labels, puzzle_identifiers)."""
        segments = halt_segments(answers["segment_q_halt_logits"], answers["segment_q_continue_logits"],
                                 self.q_halt_alone)
        halted = at_segments(answers, segments)
        counted, exact, accuracy = scores(halted["predictions"], halted["labels"])
        self.count += int(counted.sum())
        self.exact += int(exact[counted].sum())
        self.accuracy += float(accuracy[counted].sum())
        self.segments += int(segments[counted].sum())
        if self.vote is not None:
            self.vote.add(halted)

    def result(self) -> dict:
        """count (examples with a supervised token), exact_accuracy, accuracy and mean_segments over them, and with
        a vote ARC's pass@k."""
        n = max(self.count, 1)
        result = {"count": self.count, "exact_accuracy": self.exact / n, "accuracy": self.accuracy / n,
                  "mean_segments": self.segments / n}
        return {**result, **(self.vote.passes() if self.vote is not None else {})}
