"""The backend-neutral half of each backend's evaluate(): what happens to a batch's answers once they are numpy
(gathered over the processes, handed to the listener, kept in dataset order) and the metric sums turned into
means."""

from collections.abc import Callable

import numpy as np

from hrm_shared.core.distributed import Collective, gather_rows

METRICS = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss")
OUTPUTS = ("predictions", "labels", "q_halt_logits", "puzzle_identifiers")
# With trajectory=True: every segment's argmax [B, M, seq_len] int32 and Q logits [B, M] float32.
TRAJECTORY = ("segment_predictions", "segment_q_halt_logits", "segment_q_continue_logits")
SUMS = ("count", *METRICS)  # what act_loss sums per batch, in this order


class Answers:
    """The answers of one evaluation, batch by batch, over `local_batch_size` rows per process: with `keep_outputs`
    kept (on rank 0) for `outputs`, and handed to `on_batch` when given; `wanted` says whether the backend needs to
    turn a batch's answers into numpy at all. `trajectory`: the answers hold the TRAJECTORY arrays too."""

    def __init__(self, local_batch_size: int, keep_outputs: bool,
                 on_batch: Callable[[dict[str, np.ndarray]], None] | None, collective: Collective,
                 trajectory: bool) -> None:
        self.local_batch_size, self.keep, self.on_batch, self.collective = (local_batch_size, keep_outputs, on_batch,
                                                                            collective)
        self.wanted = keep_outputs or on_batch is not None
        self.kept: dict[str, list[np.ndarray]] = {k: [] for k in (*OUTPUTS, *(TRAJECTORY if trajectory else ()))}

    def add(self, answers: dict[str, np.ndarray], batch: dict[str, np.ndarray], rows: int) -> None:
        """One batch: the backend's `answers` for its first `rows` rows (predictions [rows, seq_len] int32,
        q_halt_logits [rows] float32, the TRAJECTORY arrays) with the numpy `batch`'s labels and puzzle_identifiers,
        gathered from every process in dataset order (a collective: every process calls it), to `on_batch` and
        kept."""
        answers = {**answers, "labels": batch["labels"][:rows],
                   "puzzle_identifiers": batch["puzzle_identifiers"][:rows]}
        if self.collective.size > 1:
            answers = gather_rows(self.collective, answers, rows, self.local_batch_size)
        if self.on_batch is not None:
            self.on_batch(answers)
        if self.keep and self.collective.rank == 0:
            for k, v in answers.items():
                self.kept[k].append(v)

    def result(self, sums: np.ndarray) -> tuple[dict, dict[str, np.ndarray] | None]:
        """(metrics, outputs) from this process's metric `sums` float64 [len(SUMS)]: each metric the mean over the
        examples with a supervised token of every process (`count` of them); the kept answers concatenated, [N, ...]
        per key, on rank 0 with keep_outputs, else None."""
        count, *totals = self.collective.all_sum_numpy(sums).tolist()
        metrics = {"count": int(count), **{k: v / max(count, 1.0) for k, v in zip(METRICS, totals)}}
        keeping = self.keep and self.collective.rank == 0
        return metrics, {k: np.concatenate(v) for k, v in self.kept.items()} if keeping else None
