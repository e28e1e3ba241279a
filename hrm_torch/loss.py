"""Stablemax / softmax cross-entropy and the ACT loss with its metrics, in PyTorch (shared/DESIGN.md section 4)."""

import torch
import torch.nn.functional as F

IGNORE_LABEL_ID = -100


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(s(x) / sum s(x)) with s(x) = x + 1 for x >= 0 and 1 / (1 - x + 1e-30) otherwise; x's dtype."""
    # clamp() keeps the unused branch finite so its gradient is 0, not nan; values are the reference's.
    s = torch.where(x < 0, 1 / (1 - x.clamp(max=0) + 1e-30), x + 1)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token loss [B, seq_len] float64 from logits [B, seq_len, V] and int labels; 0 where label is -100."""
    logprobs = log_stablemax(logits.to(torch.float64))
    valid = labels != IGNORE_LABEL_ID
    index = torch.where(valid, labels, 0).to(torch.long)
    picked = torch.gather(logprobs, -1, index.unsqueeze(-1)).squeeze(-1)  # [B, seq_len]
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token loss [B, seq_len] float32 from logits [B, seq_len, V] and int labels; 0 where label is -100."""
    B, T, V = logits.shape
    loss = F.cross_entropy(logits.to(torch.float32).reshape(B * T, V), labels.to(torch.long).reshape(B * T),
                           ignore_index=IGNORE_LABEL_ID, reduction="none")
    return loss.view(B, T)


LOSSES = {"stablemax_cross_entropy": stablemax_cross_entropy, "softmax_cross_entropy": softmax_cross_entropy}


def act_loss(outputs: dict[str, torch.Tensor], labels: torch.Tensor, halted: torch.Tensor, steps: torch.Tensor,
             loss_type: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total loss over all rows, metric sums).

    total = lm_loss + 0.5 * (q_halt_loss + q_continue_loss); the caller divides by the global batch size.
    Metrics (0-dim tensors, sums): over the rows that halted in this call (divide by `count`): count, accuracy,
    exact_accuracy, q_halt_accuracy, steps; as the reference logs them, over all rows (divide by the global batch):
    lm_loss, q_halt_loss, q_continue_loss (0 without a Q target).
    """
    logits, q_halt = outputs["logits"], outputs["q_halt_logits"]
    mask = labels != IGNORE_LABEL_ID
    counts = mask.sum(-1)
    divisor = counts.clamp_min(1)
    is_correct = mask & (logits.argmax(-1) == labels)
    seq_correct = is_correct.sum(-1) == counts
    valid = halted & (counts > 0)
    lm_rows = LOSSES[loss_type](logits, labels).sum(-1) / divisor  # [B]
    q_halt_rows = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="none")
    q_continue_rows = torch.zeros_like(q_halt_rows)
    if "target_q_continue" in outputs:
        q_continue_rows = F.binary_cross_entropy_with_logits(outputs["q_continue_logits"],
                                                             outputs["target_q_continue"], reduction="none")
    lm_loss, q_halt_loss, q_continue_loss = lm_rows.sum(), q_halt_rows.sum(), q_continue_rows.sum()
    total = lm_loss + 0.5 * (q_halt_loss + q_continue_loss)
    metrics = {
        "count": valid.sum(),
        "accuracy": torch.where(valid, is_correct.sum(-1) / divisor, 0).sum(),
        "exact_accuracy": (valid & seq_correct).sum(),
        "q_halt_accuracy": (valid & ((q_halt >= 0) == seq_correct)).sum(),
        "steps": torch.where(valid, steps, 0).sum(),
        "lm_loss": lm_loss,
        "q_halt_loss": q_halt_loss,
        "q_continue_loss": q_continue_loss,
    }
    return total, {k: v.detach() for k, v in metrics.items()}
