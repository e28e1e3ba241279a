"""Stablemax / softmax cross-entropy and the ACT loss with its metrics, in MLX (shared/DESIGN.md section 4)."""

import mlx.core as mx
import mlx.nn as nn

IGNORE_LABEL_ID = -100


def log_stablemax(x: mx.array, axis: int = -1) -> mx.array:
    """log(s(x) / sum s(x)) with s(x) = x + 1 for x >= 0 and 1 / (1 - x + 1e-30) otherwise; x's dtype."""
    # minimum() keeps the unused branch finite so its gradient is 0, not nan; values are the reference's.
    s = mx.where(x < 0, 1 / (1 - mx.minimum(x, 0) + 1e-30), x + 1)
    return mx.log(s / s.sum(axis=axis, keepdims=True))


def _float64_available() -> bool:
    """Whether float64 can run here: the default device is the CPU (MLX has no float64 on the GPU)."""
    return mx.default_device() == mx.cpu


def stablemax_cross_entropy(logits: mx.array, labels: mx.array) -> mx.array:
    """Per-token loss [B, seq_len] from logits [B, seq_len, V] and int labels; 0 where label is -100.

    float64 as the reference when the default device is the CPU; MLX has float64 only on the CPU stream, so on the
    GPU this runs in float32 (the parity tests compare on the CPU).
    """
    dtype = mx.float64 if _float64_available() else mx.float32
    logprobs = log_stablemax(logits.astype(dtype))
    valid = labels != IGNORE_LABEL_ID
    index = mx.where(valid, labels, 0)
    picked = mx.take_along_axis(logprobs, index[..., None], axis=-1)[..., 0]  # [B, seq_len]
    return -mx.where(valid, picked, 0)


def softmax_cross_entropy(logits: mx.array, labels: mx.array) -> mx.array:
    """Per-token loss [B, seq_len] float32 from logits [B, seq_len, V] and int labels; 0 where label is -100."""
    valid = labels != IGNORE_LABEL_ID
    loss = nn.losses.cross_entropy(logits.astype(mx.float32), mx.where(valid, labels, 0), reduction="none")
    return mx.where(valid, loss, 0)


LOSSES = {"stablemax_cross_entropy": stablemax_cross_entropy, "softmax_cross_entropy": softmax_cross_entropy}


def act_loss(outputs: dict[str, mx.array], labels: mx.array, halted: mx.array, steps: mx.array,
             loss_type: str) -> tuple[mx.array, dict[str, mx.array]]:
    """(total loss over all rows, metric sums).

    total = lm_loss + 0.5 * (q_halt_loss + q_continue_loss); the caller divides by the global batch size.
    Metrics (0-dim arrays, sums): over the rows that halted in this call (divide by `count`): count, accuracy,
    exact_accuracy, q_halt_accuracy, steps; as the reference logs them, over all rows (divide by the global batch):
    lm_loss, q_halt_loss, q_continue_loss (0 without a Q target).
    """
    logits, q_halt = outputs["logits"], outputs["q_halt_logits"]
    mask = labels != IGNORE_LABEL_ID
    counts = mask.sum(-1)
    divisor = mx.maximum(counts, 1)
    is_correct = mask & (logits.argmax(-1) == labels)
    seq_correct = is_correct.sum(-1) == counts
    valid = halted & (counts > 0)
    lm_rows = LOSSES[loss_type](logits, labels).sum(-1) / divisor  # [B]
    q_halt_rows = nn.losses.binary_cross_entropy(q_halt, seq_correct.astype(q_halt.dtype),
                                                with_logits=True, reduction="none")
    q_continue_rows = mx.zeros_like(q_halt_rows)
    if "target_q_continue" in outputs:
        q_continue_rows = nn.losses.binary_cross_entropy(outputs["q_continue_logits"],
                                                         outputs["target_q_continue"], with_logits=True,
                                                         reduction="none")
    lm_loss, q_halt_loss, q_continue_loss = lm_rows.sum(), q_halt_rows.sum(), q_continue_rows.sum()
    total = lm_loss + 0.5 * (q_halt_loss + q_continue_loss)
    metrics = {
        "count": valid.sum(),
        "accuracy": mx.where(valid, is_correct.sum(-1) / divisor, 0).sum(),
        "exact_accuracy": (valid & seq_correct).sum(),
        "q_halt_accuracy": (valid & ((q_halt >= 0) == seq_correct)).sum(),
        "steps": mx.where(valid, steps, 0).sum(),
        "lm_loss": lm_loss,
        "q_halt_loss": q_halt_loss,
        "q_continue_loss": q_continue_loss,
    }
    return total, {k: mx.stop_gradient(v) for k, v in metrics.items()}
