"""The train step in PyTorch (DESIGN.md section 5): one optimizer step per ACT segment, the carry kept across
batches, epochs and evaluations. The loop, metrics and checkpoints are backend-neutral (shared/train_loop.py).
"""

import numpy as np
import torch

from shared.act import ExplorationDraws
from shared.config import HRMConfig, TrainConfig
from shared.errors import HRMError
from shared.init import init_weights
from hrm_torch.checkpoint import default_device
from hrm_torch.evaluate import to_backend
from hrm_torch.loss import act_loss
from hrm_torch.model import HRM, Batch, Carry, InnerCarry, load_canonical
from hrm_torch.optim import AdamATan2, SignSGD

CARRY = ("z_H", "z_L", "steps", "halted", "inputs", "labels", "puzzle_identifiers")


def new_model(config: HRMConfig, seed: int, device: str | None = None) -> HRM:
    """HRM(config) with the reference initialisation of `seed` (shared/init.py), on `device` (default:
    default_device())."""
    model = HRM(config)
    load_canonical(model, init_weights(config, seed))
    device = default_device() if device is None else device
    try:
        return model.to(device)
    except (RuntimeError, AssertionError) as e:
        raise HRMError(f"cannot place the model on device {device!r} ({e}); choose cpu, cuda or mps") from None


class Trainer:
    """AdamATan2 on every trainable parameter, SignSGD on the puzzle-table rows a batch looks up, and the carry.

    `compile` wraps the forward and loss in torch.compile (default: on CUDA only).
    """

    def __init__(self, model: HRM, train: TrainConfig, compile: bool | None = None) -> None:
        self.model, self.train = model, train
        self.device = model.inner.H_init.device
        self.adam = AdamATan2(model.named_parameters(), (train.beta1, train.beta2), train.weight_decay)
        self.sparse = None
        if model.config.puzzle_emb_ndim > 0:
            self.sparse = SignSGD(model.inner.puzzle_emb, train.puzzle_emb_weight_decay)
        B, T = train.global_batch_size, model.config.seq_len
        empty = {"inputs": np.zeros((B, T), np.int32), "labels": np.zeros((B, T), np.int32),
                 "puzzle_identifiers": np.zeros(B, np.int32)}
        self.carry = model.initial_carry(to_backend(empty, self.device))
        compile = self.device.type == "cuda" if compile is None else compile
        self._loss = torch.compile(self._segment_loss) if compile else self._segment_loss

    def _segment_loss(self, carry: Carry, batch: Batch, draws: ExplorationDraws, rows: torch.Tensor | None
                      ) -> tuple[Carry, torch.Tensor, dict[str, torch.Tensor]]:
        """One training segment -> (new carry, total / global_batch_size, metric sums over the halted rows)."""
        carry, outputs = self.model(carry, batch, True, draws, puzzle_rows=rows)
        total, metrics = act_loss(outputs, carry.current_data["labels"], carry.halted, carry.steps,
                                  self.model.config.loss_type)
        return carry, total / self.train.global_batch_size, metrics

    def step(self, batch: dict[str, np.ndarray], draws: ExplorationDraws, lr: float, puzzle_lr: float
             ) -> dict[str, float]:
        """One optimizer step on the next segment of every row; `batch` (int32 arrays [B, seq_len] and [B]) fills
        the rows that halted. Returns the loss (over all rows) and the metric sums over the rows that halted."""
        batch = to_backend(batch, self.device)
        draws = ExplorationDraws(*(torch.from_numpy(a).to(self.device) for a in (draws.explore, draws.min_halt_steps)))
        rows = ids = None
        if self.sparse is not None:
            ids = self.model.segment_data(self.carry, batch)["puzzle_identifiers"]
            rows = self.model.inner.puzzle_emb.weights[ids].requires_grad_()
        self.carry, loss, metrics = self._loss(self.carry, batch, draws, rows)
        loss.backward()
        self.adam.update(lr)
        if self.sparse is not None:
            self.sparse.update(ids, rows.grad, puzzle_lr)
        self.model.zero_grad(set_to_none=True)
        values = torch.stack([loss.detach(), *metrics.values()]).to(torch.float64).tolist()
        return dict(zip(("loss", *metrics), values))

    def state_dict(self) -> dict[str, np.ndarray]:
        """What exact resume needs beyond the weights, as numpy: "adam.<name>" (AdamATan2.state_dict) and
        "carry.<name>" for CARRY (z_H, z_L widened to float32, exactly)."""
        carry = self.carry
        tensors = {"z_H": carry.inner_carry.z_H.float(), "z_L": carry.inner_carry.z_L.float(), "steps": carry.steps,
                   "halted": carry.halted, **carry.current_data}
        state = {f"adam.{k}": v for k, v in self.adam.state_dict().items()}
        state.update({f"carry.{k}": tensors[k] for k in CARRY})
        return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Take a state written by `state_dict` (either backend's); a missing or misshapen entry is an HRMError."""
        for key, value in self.state_dict().items():
            if key.startswith("carry.") and (key not in state or state[key].shape != value.shape):
                raise HRMError(f"training state: {key!r} is missing or misshapen; it was saved for another config")
        self.adam.load_state_dict({k.removeprefix("adam."): torch.from_numpy(v) for k, v in state.items()
                                   if k.startswith("adam.")})
        t = {name: torch.from_numpy(state[f"carry.{name}"]).to(self.device) for name in CARRY}
        dtype = self.carry.inner_carry.z_H.dtype
        self.carry = Carry(InnerCarry(t["z_H"].to(dtype), t["z_L"].to(dtype)), t["steps"], t["halted"],
                           {k: t[k] for k in ("inputs", "labels", "puzzle_identifiers")})
