"""Evaluation in PyTorch: every test example runs exactly halt_max_steps segments (or any other number M), the last
one is scored (shared/DESIGN.md sections 3-4); on request every segment's answer and the final states too."""

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hrm_shared.core.distributed import SOLO, Collective
from hrm_shared.core.errors import HRMError
from hrm_shared.core.evaluation import SUMS, TRAJECTORY, Answers
from hrm_shared.core.iterator import TestIterator
from hrm_shared.core.progress import progress
from hrm_torch.device import compute_device, to_backend
from hrm_torch.loss import act_loss
from hrm_torch.model import HRM, Batch, Carry


def predict(model: HRM, batch: Batch, segments: int | None = None, trajectory: bool = False
            ) -> tuple[Carry, dict[str, torch.Tensor]]:
    """Run `segments` (M, default halt_max_steps; any M >= 1, past halt_max_steps too) eval segments from a fresh
    carry -> (carry, the last segment's outputs: logits [B, seq_len, vocab], q_halt_logits [B], q_continue_logits [B]
    float32). With `trajectory`, outputs also hold TRAJECTORY: each segment's argmax predictions [B, M, seq_len] int32
    and Q logits [B, M] float32."""
    M = model.config.halt_max_steps if segments is None else segments
    if M < 1:
        raise HRMError(f"an evaluation runs at least 1 segment, not {M}")
    model.eval()
    with torch.inference_mode():
        carry = model.initial_carry(batch)
        running = torch.zeros_like(carry.halted)
        steps = []
        for m in range(M):
            # Rows halt at halt_max_steps; past it they keep their state instead of restarting from the batch.
            carry, outputs = model.eval_segment(replace(carry, halted=running) if m else carry, batch)
            if trajectory:
                steps.append((outputs["logits"].argmax(-1).to(torch.int32), outputs["q_halt_logits"],
                              outputs["q_continue_logits"]))
        if trajectory:
            outputs = {**outputs, **{k: torch.stack(v, dim=1) for k, v in zip(TRAJECTORY, zip(*steps))}}
    return carry, outputs


def _answers(carry: Carry, outputs: dict[str, torch.Tensor], rows: int, states: bool = False
             ) -> dict[str, np.ndarray]:
    """The first `rows` rows' predictions [rows, seq_len] int32 (argmax), q_halt_logits [rows] float32, the
    TRAJECTORY arrays that `outputs` hold, and with `states` the final z_H, z_L [rows, T, H] float32; `rows` may be 0
    (a process whose slice of the last batch is empty)."""
    answers = {"predictions": outputs["logits"][:rows].argmax(-1).to(torch.int32).cpu().numpy(),
               "q_halt_logits": outputs["q_halt_logits"][:rows].to(torch.float32).cpu().numpy()}
    answers.update({k: outputs[k][:rows].cpu().numpy() for k in TRAJECTORY if k in outputs})
    if states:
        answers.update({k: getattr(carry.inner_carry, k)[:rows].to(torch.float32).cpu().numpy()
                        for k in ("z_H", "z_L")})
    return answers


def predict_numpy(model: HRM, batch: dict[str, np.ndarray], device: torch.device | str | None = None,
                  segments: int | None = None, trajectory: bool = False, states: bool = False
                  ) -> dict[str, np.ndarray]:
    """predict() on a numpy batch -> predictions [B, seq_len] int32 and q_halt_logits [B] float32 of the last
    segment, with `trajectory` every segment's (predict's TRAJECTORY), with `states` the final z_H, z_L [B, T, H]
    float32 (TRM: y and z). `device` defaults to the model's."""
    carry, outputs = predict(model, to_backend(batch, compute_device(model, device)), segments, trajectory)
    return _answers(carry, outputs, len(batch["inputs"]), states)


def evaluate(model: HRM, data_dir: Path, batch_size: int, device: torch.device | str | None = None,
             keep_outputs: bool = False, on_batch: Callable[[dict[str, np.ndarray]], None] | None = None,
             collective: Collective = SOLO, segments: int | None = None, trajectory: bool = False
             ) -> tuple[dict, dict[str, np.ndarray] | None]:
    """Score `model` on `<data_dir>/test` after `segments` segments (default halt_max_steps) -> (metrics, outputs).

    Metrics are means over the examples with a supervised token (`count` of them): accuracy, exact_accuracy,
    q_halt_accuracy, steps, lm_loss. With `keep_outputs`, outputs holds one row per test example in dataset order:
    predictions [N, seq_len] int32 (argmax), labels [N, seq_len] int32 (-100 where ignored), q_halt_logits [N]
    float32, puzzle_identifiers [N] int32; otherwise None. `on_batch`, when given, receives those four arrays
    for the real rows of each batch, in dataset order (the ARC vote). With `trajectory`, both also hold each
    segment's answers (predict's TRAJECTORY: [N, M, seq_len] and [N, M]). `device` defaults to the model's.
    With a `collective` of several processes, each evaluates its rows of every batch and the metric sums are summed
    over the processes; when one process passes `keep_outputs` or `on_batch`, every process must: the answers of
    every process reach `on_batch` on each of them, and outputs are kept on rank 0 (None elsewhere).
    """
    device = compute_device(model, device)
    iterator = TestIterator(Path(data_dir), batch_size, collective.rank, collective.size)
    B = iterator.local_batch_size
    sums = torch.zeros(len(SUMS), dtype=torch.float64, device=device)  # summed on the device: no wait per batch
    answers = Answers(B, keep_outputs, on_batch, collective, trajectory)
    batches = progress(iterator, label="Evaluating", length=len(iterator)) if collective.rank == 0 else iterator
    for numpy_batch, rows in batches:
        carry, outputs = predict(model, to_backend(numpy_batch, device), segments, trajectory)
        with torch.inference_mode():
            real = torch.arange(B, device=carry.steps.device) < rows  # [B]: not padding
            _, metrics = act_loss(outputs, carry.current_data["labels"], real, carry.steps, model.config.loss_type)
            sums = sums + torch.stack([metrics[k] for k in SUMS]).to(torch.float64)
        if answers.wanted:
            answers.add(_answers(carry, outputs, rows), numpy_batch, rows)
        collective.beat()
    return answers.result(sums.cpu().numpy())
