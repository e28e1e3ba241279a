"""The train step in PyTorch (shared/DESIGN.md section 5): one optimizer step per ACT segment, the carry kept across
batches, epochs and evaluations. The loop, metrics and checkpoints are backend-neutral (shared/app/train_loop.py).
"""

from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from torch import nn

from hrm_shared.core.act import ExplorationDraws
from hrm_shared.core.config import ModelConfig, TrainConfig
from hrm_shared.core.init import init_weights
from hrm_shared.core.iterator import local_batch_size
from hrm_shared.core.train_state import CARRY, carry_rows, carry_state, entries
from hrm_torch.device import place, to_backend
from hrm_torch.distributed import Collective
from hrm_torch.loss import act_loss
from hrm_torch.model import Batch, Carry, InnerCarry, build_model, load_canonical
from hrm_torch.optim import EMA, AdamATan2, SignSGD


def new_model(config: ModelConfig, seed: int, device: str | None = None) -> nn.Module:
    """The model of `config`'s family with the reference initialisation of `seed` (core/init.py), on `device` (see
    device.place)."""
    model = build_model(config)
    load_canonical(model, init_weights(config, seed))
    return place(model, device)


class Trainer:
    """AdamATan2 on every trainable parameter, SignSGD on the puzzle-table rows a batch looks up, and the carry.

    `compile` wraps the forward, loss and update in torch.compile (default: on CUDA only). With a `collective` (several
    processes, hrm_torch/distributed.py) the carry holds this process's rows of the global batch, the flat gradient
    and the metric sums are summed across processes, and every process applies the same sparse update from every
    process's (ids, row gradients). A step launches GPU work without waiting for it: `launch` returns device values
    that `read` turns into numbers, every `read_every` steps in the loop.
    """

    def __init__(self, model: nn.Module, train: TrainConfig, compile: bool | None = None,
                 collective: Collective | None = None) -> None:
        self.model, self.train = model, train
        self.device = model.inner.H_init.device
        self.collective = collective if collective is not None and collective.size > 1 else None
        self.adam = AdamATan2(model, (train.beta1, train.beta2), train.weight_decay)
        self.ema = EMA(model, train.ema_rate) if train.ema else None
        self.sparse = None
        if model.config.puzzle_emb_ndim > 0:
            self.sparse = SignSGD(model.inner.puzzle_emb, train.puzzle_emb_weight_decay)
        self.world = 1 if self.collective is None else self.collective.size
        self.rank = 0 if self.collective is None else self.collective.rank
        B, T = local_batch_size(train.global_batch_size, self.world), model.config.seq_len
        empty = {"inputs": np.zeros((B, T), np.int32), "labels": np.zeros((B, T), np.int32),
                 "puzzle_identifiers": np.zeros(B, np.int32)}
        self.carry = model.initial_carry(to_backend(empty, self.device))
        cuda = self.device.type == "cuda"
        compile = cuda if compile is None else compile
        self._loss = torch.compile(self._segment_loss) if compile else self._segment_loss
        if compile:
            self.adam.compile()
        self.read_every = 1 if self.device.type == "cpu" else 10  # a read waits for the GPU: not every step there
        self.pin_memory = cuda  # page-locked batches copy to the GPU without a wait; the CPU path is the same unpinned
        self.eval_batch_size = train.global_batch_size * (4 if cuda else 1)  # inference keeps no activations
        self.keys: tuple[str, ...] = ()

    def _segment_loss(self, carry: Carry, batch: Batch, draws: ExplorationDraws, rows: torch.Tensor | None
                      ) -> tuple[Carry, torch.Tensor, dict[str, torch.Tensor]]:
        """One training segment -> (new carry, total / global_batch_size, metric sums over the halted rows)."""
        carry, outputs = self.model(carry, batch, True, draws, puzzle_rows=rows)
        total, metrics = act_loss(outputs, carry.current_data["labels"], carry.halted, carry.steps,
                                  self.model.config.loss_type)
        return carry, total / self.train.global_batch_size, metrics

    def prepare(self, batch: dict[str, np.ndarray], draws: ExplorationDraws) -> dict[str, torch.Tensor]:
        """This process's batch rows (int32 [B_local, seq_len] and [B_local]) and exploration draws as host tensors,
        pinned with `pin_memory` (on CUDA) so the copy in `launch` does not wait; safe to call from a background
        thread."""
        arrays = {**batch, "explore": draws.explore, "min_halt_steps": draws.min_halt_steps}
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        return {k: t.pin_memory() for k, t in tensors.items()} if self.pin_memory else tensors

    def launch(self, prepared: dict[str, torch.Tensor], lr: float, puzzle_lr: float) -> torch.Tensor:
        """One optimizer step on the next segment of every row (the batch fills the rows that halted), queued on the
        device -> float64 [1 + metrics]: the loss over all rows and the metric sums over the rows that halted, summed
        over the processes (`read` names them)."""
        moved = {k: t.to(self.device, non_blocking=True) for k, t in prepared.items()}
        draws = ExplorationDraws(moved.pop("explore"), moved.pop("min_halt_steps"))
        rows = ids = None
        if self.sparse is not None:
            ids = self.model.segment_data(self.carry, moved)["puzzle_identifiers"]
            rows = self.model.inner.puzzle_emb.weights[ids].requires_grad_()
        self.carry, loss, metrics = self._loss(self.carry, moved, draws, rows)
        loss.backward()
        self.keys = ("loss", *metrics)
        values = torch.stack([loss.detach(), *metrics.values()]).to(torch.float64)
        row_grads = rows.grad if rows is not None else None
        gradients = self.adam.flat_gradient()
        if self.collective is None:
            self.adam.update(gradients, lr)
        else:
            self.adam.update(self.collective.all_sum(gradients), lr)
            self.collective.all_sum(values)
            if self.sparse is not None:
                ids, row_grads = self.collective.all_gather(ids), self.collective.all_gather(row_grads)
        if self.sparse is not None:
            self.sparse.update(ids, row_grads, puzzle_lr)
        if self.ema is not None:
            self.ema.update()
        self.model.zero_grad(set_to_none=True)
        return values

    def read(self, launched: list[torch.Tensor]) -> list[dict[str, float]]:
        """`launch` results -> one {"loss", metric sums} dict each, with one wait for the device."""
        if not launched:
            return []
        if self.collective is None:
            table = torch.stack(launched).tolist()
        else:
            with self.collective.guard("a step"):  # NCCL reports a failed collective when its results are read
                table = torch.stack(launched).tolist()
        return [dict(zip(self.keys, values)) for values in table]

    def step(self, batch: dict[str, np.ndarray], draws: ExplorationDraws, lr: float, puzzle_lr: float
             ) -> dict[str, float]:
        """prepare, launch and read one step: the loss (over all rows) and the metric sums over the rows that
        halted, as numbers."""
        return self.read([self.launch(self.prepare(batch, draws), lr, puzzle_lr)])[0]

    def averaged(self) -> AbstractContextManager:
        """A block within which the model holds its EMA weights (train.ema), as evaluation and checkpoints want
        them; without EMA the model as it is."""
        return nullcontext() if self.ema is None else self.ema.averaged()

    def state_dict(self) -> dict[str, np.ndarray]:
        """What exact resume needs beyond the weights, as numpy: "adam.<name>" (AdamATan2.state_dict),
        "carry.<name>" for CARRY (z_H, z_L widened to float32, exactly), the carry over the global batch (gathered
        from every process: a collective), and with EMA "raw.<name>", the parameters themselves (the checkpoint's
        weights are the average)."""
        carry = self.carry
        tensors = {"z_H": carry.inner_carry.z_H.float(), "z_L": carry.inner_carry.z_L.float(), "steps": carry.steps,
                   "halted": carry.halted, **carry.current_data}
        state = {f"adam.{k}": v.detach().cpu().numpy().copy() for k, v in self.adam.state_dict().items()}
        state.update(carry_state({name: tensors[name].detach().cpu().numpy() for name in CARRY}, self.collective))
        if self.ema is not None:
            state.update({f"raw.{k}": v for k, v in self.ema.raw_state().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Take a state written by `state_dict` (either backend's, any number of processes); this process takes its
        rows of the global carry; with EMA the model's weights (the average) become the shadow and "raw.<name>" its
        parameters. A missing or misshapen entry is an HRMError."""
        local = {"z_H": self.carry.inner_carry.z_H, "z_L": self.carry.inner_carry.z_L, "steps": self.carry.steps,
                 "halted": self.carry.halted, **self.carry.current_data}
        rows = carry_rows(state, {name: tuple(local[name].shape) for name in CARRY}, self.rank, self.world)
        self.adam.load_state_dict({k: torch.from_numpy(v) for k, v in entries(state, "adam.").items()})
        t = {name: torch.from_numpy(rows[name]).to(self.device) for name in CARRY}
        dtype = self.carry.inner_carry.z_H.dtype
        self.carry = Carry(InnerCarry(t["z_H"].to(dtype), t["z_L"].to(dtype)), t["steps"], t["halted"],
                           {k: t[k] for k in ("inputs", "labels", "puzzle_identifiers")})
        if self.ema is not None:
            self.ema.load_raw_state(entries(state, "raw."))
