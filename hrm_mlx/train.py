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
from hrm_shared.core.iterator import local_batch_size
from hrm_shared.core.distributed import rank_rows
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import init_weights
from hrm_mlx.distributed import Collective
from hrm_mlx.device import place, to_backend
from hrm_mlx.loss import act_loss
from hrm_mlx.model import Batch, Carry, InnerCarry, build_model, load_canonical
from hrm_mlx.optim import EMA, AdamATan2, SignSGD

CARRY = ("z_H", "z_L", "steps", "halted", "inputs", "labels", "puzzle_identifiers")


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
    batch, the gradients and the metric sums are summed across processes inside the compiled step, and every
    process applies the same sparse update from every process's (ids, row gradients).
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
        self._step = self._segment_step if compile is False else mx.compile(self._segment_step, inputs=state,
                                                                             outputs=state)
        self.read_every = 1  # each step is evaluated before the next (mx.eval), so reading its numbers costs nothing
        self.eval_batch_size = train.global_batch_size

    def _segment_step(self, carry: tuple[mx.array, ...], batch: Batch, min_halt_steps: mx.array, lr: mx.array,
                      puzzle_lr: mx.array) -> tuple[tuple[mx.array, ...], mx.array, dict[str, mx.array]]:
        """One training segment and both optimizer updates -> (new carry arrays, total / global_batch_size, metric
        sums over the halted rows), the loss and sums over every process."""
        model, carry = self.model, _unflatten(carry)
        draws = ExplorationDraws(explore=min_halt_steps > 0, min_halt_steps=min_halt_steps)

        def loss_fn(params: dict, rows: mx.array | None):
            model.update(params)
            new, outputs = model(carry, batch, True, draws, puzzle_rows=rows)
            total, metrics = act_loss(outputs, new.current_data["labels"], new.halted, new.steps,
                                      model.config.loss_type)
            # The puzzle ids leave out of the carry: mx.compile (MLX 0.32) fails when a value_and_grad output is the
            # array the differentiated rows were gathered with. The caller puts them back.
            return total / self.train.global_batch_size, _flatten(new)[:-1], metrics

        params = model.trainable_parameters()
        ids = model.segment_data(carry, batch)["puzzle_identifiers"]
        row_grads = None
        if self.sparse is None:
            (loss, new, metrics), grads = mx.value_and_grad(lambda p: loss_fn(p, None))(params)
        else:
            rows = model.inner.puzzle_emb.weights[ids]
            (loss, new, metrics), (grads, row_grads) = mx.value_and_grad(loss_fn, argnums=(0, 1))(params, rows)
        all_ids = ids
        if self.collective is not None:
            grads = _all_sum_tree(self.collective, grads)
            # float32, not torch's float64: the Apple GPU has no float64 (sums of counts stay exact to 2^24).
            sums = self.collective.all_sum(mx.stack([loss, *metrics.values()]).astype(mx.float32))
            loss, metrics = sums[0], dict(zip(metrics, sums[1:]))
            if self.sparse is not None:
                all_ids, row_grads = self.collective.all_gather(ids), self.collective.all_gather(row_grads)
        self.adam.update(grads, lr)
        if self.sparse is not None:
            self.sparse.update(all_ids, row_grads, puzzle_lr)
        if self.ema is not None:
            self.ema.update()
        return (*new, ids), loss, metrics

    def prepare(self, batch: dict[str, np.ndarray], draws: ExplorationDraws) -> tuple[dict, ExplorationDraws]:
        """This process's batch rows and exploration draws, as they are: MLX arrays are made in `launch`, on the
        thread that runs the graph (unified memory: no copy to wait for)."""
        return batch, draws

    def launch(self, prepared: tuple[dict, ExplorationDraws], lr: float, puzzle_lr: float) -> dict[str, mx.array]:
        """One optimizer step on the next segment of every row (the batch fills the rows that halted) -> the loss
        over all rows and the metric sums over the rows that halted, summed over the processes (`read` turns them
        into numbers)."""
        batch, draws = prepared
        new, loss, metrics = self._step(_flatten(self.carry), to_backend(batch), mx.array(draws.min_halt_steps),
                                        mx.array(lr, dtype=mx.float32), mx.array(puzzle_lr, dtype=mx.float32))
        arrays = (new, loss, metrics, self.model.state, self.adam.state, None if self.ema is None else self.ema.state)
        if self.collective is None:
            mx.eval(*arrays)
        else:
            with self.collective.guard("a step"):  # the step's collectives run here
                mx.eval(*arrays)
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
        for name in CARRY:
            local = np.array(arrays[name])
            state[f"carry.{name}"] = local if self.collective is None else self.collective.all_gather_numpy(local)
        if self.ema is not None:
            state.update({f"raw.{k}": v for k, v in self.ema.raw_state().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Take a state written by `state_dict` (either backend's, any number of processes); this process takes its
        rows of the global carry; with EMA the model's weights (the average) become the shadow and "raw.<name>" its
        parameters. A missing or misshapen entry is an HRMError."""
        local = dict(zip(CARRY, _flatten(self.carry)))
        B = local["steps"].shape[0]
        for name in CARRY:
            key, shape = f"carry.{name}", (B * self.world, *local[name].shape[1:])
            if key not in state or state[key].shape != shape:
                raise HRMError(f"training state: {key!r} is missing or misshapen; it was saved for another config")
        self.adam.load_state_dict({k.removeprefix("adam."): mx.array(v) for k, v in state.items()
                                   if k.startswith("adam.")})
        dtype = self.carry.inner_carry.z_H.dtype
        mine = rank_rows(self.rank, B)
        arrays = [mx.array(state[f"carry.{k}"][mine]) for k in CARRY]
        self.carry = _unflatten((arrays[0].astype(dtype), arrays[1].astype(dtype), *arrays[2:]))
        mx.eval(_flatten(self.carry), self.adam.state)
        if self.ema is not None:
            self.ema.load_raw_state({k.removeprefix("raw."): v for k, v in state.items() if k.startswith("raw.")})


def _all_sum_tree(collective: Collective, tree: dict) -> dict:
    """Sum a tree of gradients over the processes as one flat array (one collective, not one per parameter)."""
    flat = tree_flatten(tree)
    sizes = [g.size for _, g in flat]
    total = collective.all_sum(mx.concatenate([g.reshape(-1) for _, g in flat]))
    pieces = mx.split(total, list(itertools.accumulate(sizes))[:-1])
    return tree_unflatten([(name, piece.reshape(g.shape)) for (name, g), piece in zip(flat, pieces)])
