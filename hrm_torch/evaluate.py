"""Evaluation in PyTorch: every test example runs exactly halt_max_steps segments, the last one is scored
(DESIGN.md sections 3-4)."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from shared.data.iterator import TestIterator
from shared.progress import progress
from hrm_torch.loss import act_loss
from hrm_torch.model import HRM, Batch, Carry

METRICS = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss")
OUTPUTS = ("predictions", "labels", "q_halt_logits", "puzzle_identifiers")


def to_backend(batch: dict[str, np.ndarray], device: torch.device | str) -> Batch:
    """The numpy batch (int32 arrays) as tensors on `device`: the one place a batch crosses into torch."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def predict(model: HRM, batch: Batch) -> tuple[Carry, dict[str, torch.Tensor]]:
    """Run exactly halt_max_steps eval segments from a fresh carry -> (carry, the last segment's outputs: logits
    [B, seq_len, vocab], q_halt_logits [B], q_continue_logits [B] float32)."""
    model.eval()
    with torch.inference_mode():
        carry = model.initial_carry(batch)
        for _ in range(model.config.halt_max_steps):
            carry, outputs = model(carry, batch, training=False)
    return carry, outputs


def _answers(outputs: dict[str, torch.Tensor], rows: int) -> dict[str, np.ndarray]:
    """The first `rows` rows' predictions [rows, seq_len] int32 (argmax) and q_halt_logits [rows] float32."""
    return {"predictions": outputs["logits"][:rows].argmax(-1).to(torch.int32).cpu().numpy(),
            "q_halt_logits": outputs["q_halt_logits"][:rows].to(torch.float32).cpu().numpy()}


def predict_numpy(model: HRM, batch: dict[str, np.ndarray], device: torch.device | str | None = None
                  ) -> dict[str, np.ndarray]:
    """predict() on a numpy batch -> predictions [B, seq_len] int32 and q_halt_logits [B] float32 of the last
    segment. `device` defaults to the model's."""
    device = model.inner.H_init.device if device is None else device
    _, outputs = predict(model, to_backend(batch, device))
    return _answers(outputs, len(batch["inputs"]))


def evaluate(model: HRM, data_dir: Path, batch_size: int, device: torch.device | str | None = None,
             keep_outputs: bool = False, on_batch: Callable[[dict[str, np.ndarray]], None] | None = None
             ) -> tuple[dict, dict[str, np.ndarray] | None]:
    """Score `model` on `<data_dir>/test` -> (metrics, outputs).

    Metrics are means over the examples with a supervised token (`count` of them): accuracy, exact_accuracy,
    q_halt_accuracy, steps, lm_loss. With `keep_outputs`, outputs holds one row per test example in dataset order:
    predictions [N, seq_len] int32 (argmax), labels [N, seq_len] int32 (-100 where ignored), q_halt_logits [N]
    float32, puzzle_identifiers [N] int32; otherwise None. `on_batch`, when given, receives those four arrays
    for the real rows of each batch, in dataset order (the ARC vote). `device` defaults to the model's.
    """
    device = model.inner.H_init.device if device is None else device
    iterator = TestIterator(Path(data_dir), batch_size)
    sums = dict.fromkeys(("count", *METRICS), 0.0)
    kept: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUTS}
    for numpy_batch, rows in progress(iterator, label="Evaluating", length=len(iterator)):
        carry, outputs = predict(model, to_backend(numpy_batch, device))
        with torch.inference_mode():
            real = torch.arange(batch_size, device=carry.steps.device) < rows  # [B]: not padding
            _, metrics = act_loss(outputs, carry.current_data["labels"], real, carry.steps, model.config.loss_type)
        for k in sums:
            sums[k] += float(metrics[k])
        if keep_outputs or on_batch is not None:
            answers = {**_answers(outputs, rows), "labels": numpy_batch["labels"][:rows],
                       "puzzle_identifiers": numpy_batch["puzzle_identifiers"][:rows]}
            if on_batch is not None:
                on_batch(answers)
            if keep_outputs:
                for k, v in answers.items():
                    kept[k].append(v)
    count = sums.pop("count")
    result = {"count": int(count), **{k: v / max(count, 1.0) for k, v in sums.items()}}
    return result, ({k: np.concatenate(v) for k, v in kept.items()} if keep_outputs else None)
