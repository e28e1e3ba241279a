"""Evaluation in MLX: every test example runs exactly halt_max_steps segments (or any other number M), the last one
is scored (shared/DESIGN.md sections 3-4); on request every segment's answer and the final states too."""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np

from hrm_shared.core.distributed import SOLO, Collective
from hrm_shared.core.errors import HRMError
from hrm_shared.core.evaluation import SUMS, TRAJECTORY, Answers
from hrm_shared.core.iterator import TestIterator
from hrm_shared.core.progress import progress
from hrm_mlx.device import compute_device, to_backend
from hrm_mlx.loss import act_loss
from hrm_mlx.model import HRM, Batch, Carry


def predict(model: HRM, batch: Batch, segments: int | None = None, trajectory: bool = False
            ) -> tuple[Carry, dict[str, mx.array]]:
    """Run `segments` (M, default halt_max_steps; any M >= 1, past halt_max_steps too) eval segments from a fresh
    carry -> (carry, the last segment's outputs: logits [B, seq_len, vocab], q_halt_logits [B], q_continue_logits [B]
    float32), lazily: the caller evaluates them. With `trajectory`, outputs also hold TRAJECTORY: each segment's
    argmax predictions [B, M, seq_len] int32 and Q logits [B, M] float32."""
    M = model.config.halt_max_steps if segments is None else segments
    if M < 1:
        raise HRMError(f"an evaluation runs at least 1 segment, not {M}")
    carry = model.initial_carry(batch)
    running = mx.zeros_like(carry.halted)
    steps = []
    for m in range(M):
        # Rows halt at halt_max_steps; past it they keep their state instead of restarting from the batch.
        carry, outputs = model.eval_segment(replace(carry, halted=running) if m else carry, batch)
        if trajectory:
            steps.append((outputs["logits"].argmax(-1).astype(mx.int32), outputs["q_halt_logits"],
                          outputs["q_continue_logits"]))
    if trajectory:
        outputs = {**outputs, **{k: mx.stack(v, axis=1) for k, v in zip(TRAJECTORY, zip(*steps))}}
    return carry, outputs


def _answers(carry: Carry, outputs: dict[str, mx.array], rows: int, states: bool = False) -> dict[str, np.ndarray]:
    """The first `rows` rows' predictions [rows, seq_len] int32 (argmax), q_halt_logits [rows] float32, the
    TRAJECTORY arrays that `outputs` hold, and with `states` the final z_H, z_L [rows, T, H] float32; `rows` may be 0
    (a process whose slice of the last batch is empty)."""
    # argmax before slicing: MLX refuses to reduce a zero-size array, and evaluate's padded batch is never empty.
    answers = {"predictions": np.array(outputs["logits"].argmax(-1)[:rows].astype(mx.int32)),
               "q_halt_logits": np.array(outputs["q_halt_logits"][:rows].astype(mx.float32))}
    answers.update({k: np.array(outputs[k][:rows]) for k in TRAJECTORY if k in outputs})
    if states:
        answers.update({k: np.array(getattr(carry.inner_carry, k)[:rows].astype(mx.float32)) for k in ("z_H", "z_L")})
    return answers


def predict_numpy(model: HRM, batch: dict[str, np.ndarray], device: str | None = None, segments: int | None = None,
                  trajectory: bool = False, states: bool = False) -> dict[str, np.ndarray]:
    """predict() on a numpy batch -> predictions [B, seq_len] int32 and q_halt_logits [B] float32 of the last
    segment, with `trajectory` every segment's (predict's TRAJECTORY), with `states` the final z_H, z_L [B, T, H]
    float32 (TRM: y and z). `device` ("cpu" or "gpu") defaults to MLX's default device."""
    with mx.stream(compute_device(model, device)):
        carry, outputs = predict(model, to_backend(batch), segments, trajectory)
        return _answers(carry, outputs, len(batch["inputs"]), states)


def evaluate(model: HRM, data_dir: Path, batch_size: int, device: str | None = None,
             keep_outputs: bool = False, on_batch: Callable[[dict[str, np.ndarray]], None] | None = None,
             collective: Collective = SOLO, segments: int | None = None, trajectory: bool = False
             ) -> tuple[dict, dict[str, np.ndarray] | None]:
    """Score `model` on `<data_dir>/test` after `segments` segments (default halt_max_steps) -> (metrics, outputs).

    Metrics are means over the examples with a supervised token (`count` of them): accuracy, exact_accuracy,
    q_halt_accuracy, steps, lm_loss. With `keep_outputs`, outputs holds one row per test example in dataset order:
    predictions [N, seq_len] int32 (argmax), labels [N, seq_len] int32 (-100 where ignored), q_halt_logits [N]
    float32, puzzle_identifiers [N] int32; otherwise None. `on_batch`, when given, receives those four arrays
    for the real rows of each batch, in dataset order (the ARC vote). With `trajectory`, both also hold each
    segment's answers (predict's TRAJECTORY: [N, M, seq_len] and [N, M]). `device` ("cpu" or "gpu") defaults to
    MLX's default.
    With a `collective` of several processes, each evaluates its rows of every batch and the metric sums are summed
    over the processes; when one process passes `keep_outputs` or `on_batch`, every process must: the answers of
    every process reach `on_batch` on each of them, and outputs are kept on rank 0 (None elsewhere).
    """
    iterator = TestIterator(Path(data_dir), batch_size, collective.rank, collective.size)
    B = iterator.local_batch_size
    sums = np.zeros(len(SUMS), np.float64)
    answers = Answers(B, keep_outputs, on_batch, collective, trajectory)
    batches = progress(iterator, label="Evaluating", length=len(iterator)) if collective.rank == 0 else iterator
    with mx.stream(compute_device(model, device)):
        for numpy_batch, rows in batches:
            carry, outputs = predict(model, to_backend(numpy_batch), segments, trajectory)
            real = mx.arange(B) < rows  # [B]: not padding
            _, metrics = act_loss(outputs, carry.current_data["labels"], real, carry.steps, model.config.loss_type)
            mx.eval(metrics, outputs)
            sums += [metrics[k].item() for k in SUMS]
            if answers.wanted:
                answers.add(_answers(carry, outputs, rows), numpy_batch, rows)
            collective.beat()
    return answers.result(sums)
