"""The train step in MLX (DESIGN.md section 5): one optimizer step per ACT segment, the carry kept across
batches, epochs and evaluations. The loop, metrics and checkpoints are backend-neutral (shared/train_loop.py).
"""

import mlx.core as mx
import numpy as np

from shared.act import ExplorationDraws
from shared.config import HRMConfig, TrainConfig
from shared.errors import HRMError
from shared.init import init_weights
from hrm_mlx.checkpoint import DEVICES
from hrm_mlx.evaluate import to_backend
from hrm_mlx.loss import act_loss
from hrm_mlx.model import HRM, Batch, Carry, InnerCarry, load_canonical
from hrm_mlx.optim import AdamATan2, SignSGD

CARRY = ("z_H", "z_L", "steps", "halted", "inputs", "labels", "puzzle_identifiers")


def new_model(config: HRMConfig, seed: int, device: str | None = None) -> HRM:
    """HRM(config) with the reference initialisation of `seed` (shared/init.py); `device` ("cpu" or "gpu")
    becomes MLX's default device."""
    if device is not None:
        if device not in DEVICES:
            raise HRMError(f"unknown MLX device {device!r}; choose {' or '.join(DEVICES)}")
        mx.set_default_device(DEVICES[device])
    model = HRM(config)
    load_canonical(model, init_weights(config, seed))
    return model


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
    """

    def __init__(self, model: HRM, train: TrainConfig, compile: bool | None = None) -> None:
        self.model, self.train = model, train
        self.adam = AdamATan2((train.beta1, train.beta2), train.weight_decay)
        self.adam.init(model.trainable_parameters())
        self.sparse = None
        if model.config.puzzle_emb_ndim > 0:
            self.sparse = SignSGD(model.inner.puzzle_emb, train.puzzle_emb_weight_decay)
        B, T = train.global_batch_size, model.config.seq_len
        empty = {"inputs": np.zeros((B, T), np.int32), "labels": np.zeros((B, T), np.int32),
                 "puzzle_identifiers": np.zeros(B, np.int32)}
        self.carry = model.initial_carry(to_backend(empty))
        state = [model.state, self.adam.state]
        self._step = self._segment_step if compile is False else mx.compile(self._segment_step, inputs=state,
                                                                             outputs=state)

    def _segment_step(self, carry: tuple[mx.array, ...], batch: Batch, min_halt_steps: mx.array, lr: mx.array,
                      puzzle_lr: mx.array) -> tuple[tuple[mx.array, ...], mx.array, dict[str, mx.array]]:
        """One training segment and both optimizer updates -> (new carry arrays, total / global_batch_size, metric
        sums over the halted rows)."""
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
        if self.sparse is None:
            (loss, new, metrics), grads = mx.value_and_grad(lambda p: loss_fn(p, None))(params)
        else:
            rows = model.inner.puzzle_emb.weights[ids]
            (loss, new, metrics), (grads, row_grads) = mx.value_and_grad(loss_fn, argnums=(0, 1))(params, rows)
        self.adam.update(model, grads, lr)
        if self.sparse is not None:
            self.sparse.update(ids, row_grads, puzzle_lr)
        return (*new, ids), loss, metrics

    def step(self, batch: dict[str, np.ndarray], draws: ExplorationDraws, lr: float, puzzle_lr: float
             ) -> dict[str, float]:
        """One optimizer step on the next segment of every row; `batch` (int32 arrays [B, seq_len] and [B]) fills
        the rows that halted. Returns the loss (over all rows) and the metric sums over the rows that halted."""
        new, loss, metrics = self._step(_flatten(self.carry), to_backend(batch), mx.array(draws.min_halt_steps),
                                        mx.array(lr, dtype=mx.float32), mx.array(puzzle_lr, dtype=mx.float32))
        mx.eval(new, loss, metrics, self.model.state, self.adam.state)
        self.carry = _unflatten(new)
        return {"loss": loss.item(), **{k: v.item() for k, v in metrics.items()}}

    def state_dict(self) -> dict[str, np.ndarray]:
        """What exact resume needs beyond the weights, as numpy: "adam.<name>" (AdamATan2.state_dict) and
        "carry.<name>" for CARRY (z_H, z_L widened to float32, exactly)."""
        arrays = dict(zip(CARRY, _flatten(self.carry)))
        arrays["z_H"], arrays["z_L"] = arrays["z_H"].astype(mx.float32), arrays["z_L"].astype(mx.float32)
        state = {f"adam.{k}": v for k, v in self.adam.state_dict().items()}
        state.update({f"carry.{k}": arrays[k] for k in CARRY})
        return {k: np.array(v) for k, v in state.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Take a state written by `state_dict` (either backend's); a missing or misshapen entry is an HRMError."""
        for key, value in self.state_dict().items():
            if key.startswith("carry.") and (key not in state or state[key].shape != value.shape):
                raise HRMError(f"training state: {key!r} is missing or misshapen; it was saved for another config")
        self.adam.load_state_dict({k.removeprefix("adam."): mx.array(v) for k, v in state.items()
                                   if k.startswith("adam.")})
        dtype = self.carry.inner_carry.z_H.dtype
        arrays = [mx.array(state[f"carry.{k}"]) for k in CARRY]
        self.carry = _unflatten((arrays[0].astype(dtype), arrays[1].astype(dtype), *arrays[2:]))
        mx.eval(_flatten(self.carry), self.adam.state)
