"""The train step in MLX (shared/DESIGN.md section 5): one optimizer step per ACT segment, the carry kept across
batches, epochs and evaluations. The loop, metrics and checkpoints are backend-neutral (shared/app/train_loop.py).
"""

import itertools
from contextlib import AbstractContextManager, nullcontext

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from hrm_shared.core.act import ExplorationDraws
from hrm_shared.core.config import ModelConfig, TrainConfig
from hrm_shared.core.init import init_weights
from hrm_shared.core.iterator import local_batch_size
from hrm_shared.core.train_state import CARRY, carry_rows, carry_state, entries
from hrm_mlx.device import place, to_backend
from hrm_mlx.distributed import Collective
from hrm_mlx.loss import act_loss
from hrm_mlx.model import Batch, Carry, InnerCarry, build_model, load_canonical
from hrm_mlx.optim import EMA, AdamATan2, SignSGD


def new_model(config: ModelConfig, seed: int, device: str | None = None) -> nn.Module:
    """The model of `config`'s family with the reference initialisation of `seed` (core/init.py), on `device` (see
    device.place)."""
    model = build_model(config)
    load_canonical(model, init_weights(config, seed))
    return place(model, device)


def _flatten(carry: Carry) -> tuple[mx.array, ...]:
    """The carry as arrays in CARRY order, so a compiled function can take and return it."""
    return (carry.inner_carry.z_H, carry.inner_carry.z_L, carry.steps, carry.halted,
            *(carry.current_data[k] for k in CARRY[4:]))


def _unflatten(arrays: tuple[mx.array, ...]) -> Carry:
    """The inverse of _flatten."""
    return Carry(InnerCarry(*arrays[:2]), arrays[2], arrays[3], dict(zip(CARRY[4:], arrays[4:])))


class Trainer:
    """AdamATan2 on every trainable parameter, SignSGD on the puzzle-table rows a batch looks up, and the carry.

    The step is nn.value_and_grad-style differentiation compiled with mx.compile over [model.state, adam.state]
    (`compile=False` runs it eagerly); the exploration numbers come from numpy, so no MLX random state is used.
    With a `collective` (several processes, hrm_mlx/distributed.py) the carry holds this process's rows of the global
    batch; the compiled gradients are evaluated, summed across processes on the CPU stream, and a compiled update
    applies them, every process the same sparse update from every process's (ids, row gradients).
    """

    def __init__(self, model: nn.Module, train: TrainConfig, compile: bool | None = None,
                 collective: Collective | None = None) -> None:
        self.model, self.train = model, train
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
        self.carry = model.initial_carry(to_backend(empty))
        state = [model.state, self.adam.state, *([] if self.ema is None else [self.ema.state])]
        if compile is False:
            self._step, self._grads, self._update = self._segment_step, self._gradients, self._apply
        else:
            self._step = mx.compile(self._segment_step, inputs=state, outputs=state)
            self._grads = mx.compile(self._gradients, inputs=[model.state])
            self._update = mx.compile(self._apply, inputs=state, outputs=state)
        self.read_every = 1  # each step is evaluated before the next (mx.eval), so reading its numbers costs nothing
        self.eval_batch_size = train.global_batch_size

    def _gradients(self, carry: tuple[mx.array, ...], batch: Batch, min_halt_steps: mx.array
                   ) -> tuple[tuple[mx.array, ...], mx.array, dict[str, mx.array], dict, mx.array, mx.array | None]:
        """One training segment -> (new carry arrays, total / global_batch_size, metric sums over the halted rows,
        gradients of the trainable parameters, puzzle ids [B] int32, gradients of their table rows [B, ndim] float32
        or None), this process's own.

        What needs no gradient runs outside mx.value_and_grad, where attention may take MLX's fused kernel (it falls
        back to unfused attention under differentiation): the family's `detached_cycles` and, for a family with a Q
        target (`has_q_target`: HRM), the segment's forward and the second segment. The differentiated function
        recomputes the embeddings, runs `differentiated_cycles`, the heads and the loss; values and gradients are
        those of differentiating the model's own call (tests/test_mlx_fast.py), the composition of the same public
        pieces.
        """
        model, inner, carry = self.model, self.model.inner, _unflatten(carry)
        draws = ExplorationDraws(explore=min_halt_steps > 0, min_halt_steps=min_halt_steps)
        inner_carry, steps, data = model.begin_segment(carry, batch)
        ids = data["puzzle_identifiers"]
        rows = None if self.sparse is None else inner.puzzle_emb.weights[ids]
        cos_sin = inner.cos_sin()
        x = inner.input_embeddings(data["inputs"], ids, rows)
        z_H, z_L = inner.detached_cycles(inner_carry.z_H, inner_carry.z_L, x, cos_sin)

        def last_cycles(x: mx.array) -> tuple[InnerCarry, dict[str, mx.array]]:
            new_inner, logits, (q_halt, q_continue) = inner.heads(*inner.differentiated_cycles(z_H, z_L, x, cos_sin))
            return new_inner, {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

        known = None
        if model.has_q_target and model.config.halt_max_steps > 1:
            new_inner, outputs = last_cycles(x)
            known = model.end_segment(new_inner, steps, data, outputs, True, draws, rows)

        def loss_fn(params: dict, rows: mx.array | None):
            model.update(params)
            new_inner, outputs = last_cycles(inner.input_embeddings(data["inputs"], ids, rows))
            if known is None:
                new, outputs = model.end_segment(new_inner, steps, data, outputs, True, draws, rows)
            else:
                new, outputs = known[0], {**outputs, "target_q_continue": known[1]["target_q_continue"]}
            total, metrics = act_loss(outputs, new.current_data["labels"], new.halted, new.steps,
                                      model.config.loss_type)
            # The puzzle ids leave out of the carry: mx.compile (MLX 0.32) fails when a value_and_grad output is the
            # array the differentiated rows were gathered with. The caller puts them back.
            return total / self.train.global_batch_size, _flatten(new)[:-1], metrics

        params = model.trainable_parameters()
        row_grads = None
        if self.sparse is None:
            (loss, new, metrics), grads = mx.value_and_grad(lambda p: loss_fn(p, None))(params)
        else:
            (loss, new, metrics), (grads, row_grads) = mx.value_and_grad(loss_fn, argnums=(0, 1))(params, rows)
        model.update(params)  # the parameters themselves again, not the differentiated function's copies
        return (*new, ids), loss, metrics, grads, ids, row_grads

    def _apply(self, grads: dict, ids: mx.array, row_grads: mx.array | None, lr: mx.array, puzzle_lr: mx.array
               ) -> None:
        """Both optimizer updates (and the EMA's) from summed gradients: AdamATan2 with `grads` at `lr`, SignSGD on
        the table rows of `ids` [N] with `row_grads` [N, ndim] at `puzzle_lr` (N: every process's rows)."""
        self.adam.update(grads, lr)
        if self.sparse is not None:
            self.sparse.update(ids, row_grads, puzzle_lr)
        if self.ema is not None:
            self.ema.update()

    def _segment_step(self, carry: tuple[mx.array, ...], batch: Batch, min_halt_steps: mx.array, lr: mx.array,
                      puzzle_lr: mx.array) -> tuple[tuple[mx.array, ...], mx.array, dict[str, mx.array]]:
        """One process alone: `_gradients` then `_apply` -> (new carry arrays, total / global_batch_size, metric
        sums over the halted rows)."""
        new, loss, metrics, grads, ids, row_grads = self._gradients(carry, batch, min_halt_steps)
        self._apply(grads, ids, row_grads, lr, puzzle_lr)
        return new, loss, metrics

    def _distributed_step(self, carry: tuple[mx.array, ...], batch: Batch, min_halt_steps: mx.array, lr: mx.array,
                          puzzle_lr: mx.array) -> tuple[tuple[mx.array, ...], mx.array, dict[str, mx.array]]:
        """Several processes: the compiled `_gradients`, evaluated; the sums and gathers across the processes on the
        CPU stream (a GPU command buffer never waits on the network: Metal ends one after about 5 s); then the
        compiled `_apply` -> as `_segment_step`, the loss and metric sums over every process."""
        collective = self.collective
        new, loss, metrics, grads, ids, row_grads = self._grads(carry, batch, min_halt_steps)
        mx.eval(new, loss, metrics, grads, row_grads)
        flat = tree_flatten(grads)
        with collective.guard("the all-reduce of the gradients"):
            total = collective.all_sum(mx.concatenate([g.reshape(-1) for _, g in flat]))
            mx.eval(total)
        with collective.guard("the sum of the loss and metrics"):
            # float32, not torch's float64: the Apple GPU has no float64 (sums of counts stay exact to 2^24).
            sums = collective.all_sum(mx.stack([loss, *metrics.values()]).astype(mx.float32))
            mx.eval(sums)
        if self.sparse is not None:
            with collective.guard("the gather of the puzzle-row gradients"):
                ids = collective.all_gather(ids)
                row_grads = collective.all_gather(row_grads)
                mx.eval(ids, row_grads)
        pieces = mx.split(total, list(itertools.accumulate(g.size for _, g in flat))[:-1])
        grads = tree_unflatten([(name, piece.reshape(g.shape)) for (name, g), piece in zip(flat, pieces)])
        self._update(grads, ids, row_grads, lr, puzzle_lr)
        return new, sums[0], dict(zip(metrics, sums[1:]))

    def prepare(self, batch: dict[str, np.ndarray], draws: ExplorationDraws) -> tuple[dict, ExplorationDraws]:
        """This process's batch rows and exploration draws, as they are: MLX arrays are made in `launch`, on the
        thread that runs the graph (unified memory: no copy to wait for)."""
        return batch, draws

    def launch(self, prepared: tuple[dict, ExplorationDraws], lr: float, puzzle_lr: float) -> dict[str, mx.array]:
        """One optimizer step on the next segment of every row (the batch fills the rows that halted) -> the loss
        over all rows and the metric sums over the rows that halted, summed over the processes (`read` turns them
        into numbers)."""
        batch, draws = prepared
        step = self._step if self.collective is None else self._distributed_step
        new, loss, metrics = step(_flatten(self.carry), to_backend(batch), mx.array(draws.min_halt_steps),
                                  mx.array(lr, dtype=mx.float32), mx.array(puzzle_lr, dtype=mx.float32))
        mx.eval(new, loss, metrics, self.model.state, self.adam.state, None if self.ema is None else self.ema.state)
        self.carry = _unflatten(new)
        return {"loss": loss, **metrics}

    def read(self, launched: list[dict[str, mx.array]]) -> list[dict[str, float]]:
        """`launch` results -> one {"loss", metric sums} dict of numbers each."""
        return [{k: v.item() for k, v in values.items()} for values in launched]

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
        arrays = dict(zip(CARRY, _flatten(self.carry)))
        arrays["z_H"], arrays["z_L"] = arrays["z_H"].astype(mx.float32), arrays["z_L"].astype(mx.float32)
        state = {f"adam.{k}": np.array(v) for k, v in self.adam.state_dict().items()}
        state.update(carry_state({name: np.array(arrays[name]) for name in CARRY}, self.collective))
        if self.ema is not None:
            state.update({f"raw.{k}": v for k, v in self.ema.raw_state().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Take a state written by `state_dict` (either backend's, any number of processes); this process takes its
        rows of the global carry; with EMA the model's weights (the average) become the shadow and "raw.<name>" its
        parameters. A missing or misshapen entry is an HRMError."""
        local = dict(zip(CARRY, _flatten(self.carry)))
        rows = carry_rows(state, {name: tuple(local[name].shape) for name in CARRY}, self.rank, self.world)
        self.adam.load_state_dict({k: mx.array(v) for k, v in entries(state, "adam.").items()})
        dtype = self.carry.inner_carry.z_H.dtype
        arrays = [mx.array(rows[k]) for k in CARRY]
        self.carry = _unflatten((arrays[0].astype(dtype), arrays[1].astype(dtype), *arrays[2:]))
        mx.eval(_flatten(self.carry), self.adam.state)
        if self.ema is not None:
            self.ema.load_raw_state(entries(state, "raw."))

