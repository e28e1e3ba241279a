"""The two optimizers of HRM training in MLX (shared/DESIGN.md section 5).

AdamATan2 updates every trainable parameter as the reference's CUDA kernel does; SignSGD updates the rows of the puzzle
table (frozen, outside value_and_grad's parameters) that a batch looked up, from the gradient of those rows. Both take
the lr of each step as an argument (shared/core/schedule.py). Their arrays live in `AdamATan2.state` and in the model,
so a train step compiled with `inputs=outputs=[model.state, adam.state]` captures them.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from hrm_shared.core.errors import HRMError
from hrm_mlx.model import PuzzleEmbedding


class AdamATan2(optim.Optimizer):
    """Adam with atan2 in place of the epsilon-guarded division, decoupled weight decay applied first.

    For step t = 1, 2, ...: p *= 1 - lr*wd; m += (1-b1)(g - m); v += (1-b2)(g^2 - v);
    p -= lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t)). State: m, v per parameter (float32, like the
    parameter) and the step count. It updates the parameters it gets gradients for: value_and_grad over
    `trainable_parameters()` leaves out the frozen H_init, L_init and puzzle table.
    """

    def __init__(self, model: nn.Module, betas: tuple[float, float] = (0.9, 0.95), weight_decay: float = 0.1) -> None:
        super().__init__()
        self._maybe_schedule("learning_rate", 0.0)
        self.model = model
        self.betas = betas
        self.weight_decay = weight_decay
        self.init(model.trainable_parameters())

    def init_single(self, parameter: mx.array, state: dict) -> None:
        """Zero moments m, v shaped like `parameter`."""
        state["m"] = mx.zeros_like(parameter)
        state["v"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        """The updated `parameter` (the formula above); m and v are updated in `state`."""
        lr = self.learning_rate.astype(gradient.dtype)
        b1, b2 = self.betas
        t = self.step.astype(mx.float32)  # already counts this step
        m = state["m"] + (1 - b1) * (gradient - state["m"])
        v = state["v"] + (1 - b2) * (mx.square(gradient) - state["v"])
        state["m"], state["v"] = m, v
        parameter = parameter * (1 - lr * self.weight_decay)
        return parameter - lr / (1 - b1 ** t) * mx.arctan2(m, mx.sqrt(v) / mx.sqrt(1 - b2 ** t))

    def update(self, gradients: dict, lr: float | mx.array) -> None:
        """One step with learning rate `lr` (an mx.array inside a compiled step, so a new lr does not recompile) on
        `gradients`, a tree like `model.trainable_parameters()`; the model is updated in place."""
        self.state["learning_rate"] = mx.array(lr, dtype=mx.float32)
        super().update(self.model, gradients)

    def state_dict(self) -> dict[str, mx.array]:
        """{"step": int64 0-dim, "<parameter name>.m": m, "<parameter name>.v": v}; names as in
        `tree_flatten(model.parameters())`."""
        state = {k: v for k, v in tree_flatten(self.state) if k not in ("step", "learning_rate")}
        return {"step": self.step.astype(mx.int64), **state}

    def load_state_dict(self, state: dict[str, mx.array]) -> None:
        """Take a state written by `state_dict` (either backend's, as mx arrays); missing, extra or misshapen entries
        are an HRMError naming the entry."""
        expected = self.state_dict()
        for name in expected:
            if name not in state:
                raise HRMError(f"optimizer state: {name!r} is missing; the state was saved for a different model")
            if tuple(state[name].shape) != tuple(expected[name].shape):
                raise HRMError(f"optimizer state: {name!r} has shape {tuple(state[name].shape)}, the model needs "
                               f"{tuple(expected[name].shape)}")
        extra = sorted(set(state) - set(expected))
        if extra:
            raise HRMError(f"optimizer state: unexpected entry {extra[0]!r}; the state was saved for a different model")
        # Leaf by leaf in place: a step already compiled with `inputs=adam.state` sees the loaded values, and the
        # tree keeps the empty entries of frozen modules that apply_gradients walks.
        for name, value in state.items():
            *path, leaf = name.split(".")
            node = self.state
            for part in path:
                node = node[int(part)] if isinstance(node, list) else node[part]
            node[leaf] = value.astype(expected[name].dtype)
        self.state["step"] = state["step"].astype(mx.uint64)


class SignSGD:
    """Sparse SignSGD with decoupled weight decay for the puzzle table: only the rows a batch looked up change."""

    def __init__(self, puzzle_emb: PuzzleEmbedding, weight_decay: float = 0.1) -> None:
        self.puzzle_emb = puzzle_emb
        self.weight_decay = weight_decay

    def update(self, ids: mx.array, gradients: mx.array, lr: float | mx.array) -> None:
        """ids [B] int, gradients [B, ndim] of the rows looked up for them: sum the gradients of rows sharing an id,
        then for each id present p = p * (1 - lr*wd) - lr * sign(g); the table is replaced in the module."""
        summed = _id_sums(ids, gradients)
        lr = mx.array(lr, dtype=mx.float32)
        weights = self.puzzle_emb.weights
        rows = weights[ids] * (1 - lr * self.weight_decay) - lr * mx.sign(summed)
        # Rows sharing an id carry the same value, so the order of the writes does not matter.
        self.puzzle_emb.weights = mx.put_along_axis(weights, ids[:, None], rows.astype(weights.dtype), axis=0)


def _id_sums(ids: mx.array, gradients: mx.array) -> mx.array:
    """For each row of ids [N] int, the sum of the gradients [N, ndim] float32 of every row with its id -> [N, ndim].

    A matmul with the 0/1 matrix of equal ids [N, N], not a scatter-add: a GPU scatter-add adds with atomics in an
    order that can change from run to run, a matmul adds in a fixed order, so a resumed run repeats the update bit
    for bit. Zeros add exactly, so on the CPU each sum is the scatter-add's up to the order of its terms.
    """
    same = (ids[:, None] == ids[None, :]).astype(gradients.dtype)  # [N, N]
    return same @ gradients


class EMA:
    """The exponential moving average of the trainable parameters (shared/TRM.md section 4): a shadow copied from the
    parameters at the start, then after each optimizer step shadow = rate * shadow + (1 - rate) * parameter, with no
    bias correction. The frozen H_init, L_init and puzzle table are not averaged. The shadow lives in `state`, so a
    step compiled with it among its inputs and outputs updates it."""

    def __init__(self, model: nn.Module, rate: float) -> None:
        self.model = model
        self.rate = rate
        self.state = {"shadow": tree_map(lambda p: p, model.trainable_parameters())}

    def update(self) -> None:
        """Fold the parameters' current values into the shadow."""
        self.state["shadow"] = tree_map(lambda s, p: self.rate * s + (1 - self.rate) * p, self.state["shadow"],
                                        self.model.trainable_parameters())

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """Within the block the model's parameters hold the shadow; afterwards their own values again."""
        raw = self.model.trainable_parameters()
        self.model.update(self.state["shadow"])
        try:
            yield
        finally:
            self.model.update(raw)

    def raw_state(self) -> dict[str, np.ndarray]:
        """{parameter name: float32 numpy copy} of the parameters themselves (not the shadow), for exact resume."""
        return {name: np.array(p.astype(mx.float32)) for name, p in tree_flatten(self.model.trainable_parameters())}

    def load_raw_state(self, raw: dict[str, np.ndarray]) -> None:
        """Keep the model's current parameters as the shadow and set the parameters to `raw` (as raw_state wrote it):
        a model loaded from an averaged checkpoint resumes with both. A missing or misshapen entry is an HRMError."""
        current = tree_flatten(self.model.trainable_parameters())
        for name, p in current:
            if name not in raw or tuple(raw[name].shape) != tuple(p.shape):
                raise HRMError(f"training state: raw weight {name!r} is missing or misshapen; it was saved for "
                               f"another config")
        self.state["shadow"] = tree_unflatten(current)
        self.model.update(tree_unflatten([(name, mx.array(np.asarray(raw[name], dtype=np.float32)))
                                          for name, _ in current]))
        mx.eval(self.model.parameters(), self.state)

