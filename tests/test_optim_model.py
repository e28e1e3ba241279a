"""The puzzle-row gradient path and both optimizers on the tiny HRM (shared/DESIGN.md sections 2 and 5).

A train step looks up the puzzle-table rows of the ids in `HRM.segment_data`, passes them as `puzzle_rows` and takes
their gradient (torch: a leaf tensor's .grad; MLX: value_and_grad over (parameters, rows)). Tolerance: gradients
max|g - ref| <= 1e-4 * max|ref| (measured: 1.4e-5 between backends, 4e-8 against the dense table gradient).
"""

import numpy as np
import pytest

from backends import random_batch, tiny_config, tiny_weights
from hrm_shared.app.backend import import_backend
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.init import NON_TRAINABLE, canonical_shapes

TABLE = "puzzle_emb.weights"


def assert_close(actual, expected, tolerance, what):
    error = np.abs(actual.astype(np.float64) - expected).max() / max(np.abs(expected).max(), 1e-30)
    assert error <= tolerance, f"{what}: relative difference {error:.2e} > {tolerance}"


def _two_calls(config):
    """Two batches and draws; between the calls rows 0 and 2 halt, so the second call mixes carried and new rows."""
    rng = np.random.default_rng(3)
    batches = [random_batch(rng, config), random_batch(rng, config)]
    draws = [draw_exploration(rng, 4, config.halt_max_steps, 0.5) for _ in range(2)]
    halted = np.array([True, False, True, False])
    ids = np.where(halted, batches[1]["puzzle_identifiers"], batches[0]["puzzle_identifiers"])
    return batches, draws, halted, ids


class TorchModel:
    """A training call of the tiny torch HRM, the way a train step does it: rows [B, ndim] as a leaf tensor."""

    def __init__(self, config, weights) -> None:
        import torch

        package = import_backend("torch")
        self.torch, self.loss, self.optim, self.config = torch, package.loss, package.optim, config
        self.m = package.model.build_model(config)
        package.model.load_canonical(self.m, weights)

    def _second_call_loss(self, dense: bool):
        torch, m = self.torch, self.m
        batches, draws, halted, _ = _two_calls(self.config)
        first, second = [{k: torch.from_numpy(v) for k, v in b.items()} for b in batches]
        with torch.no_grad():
            carry, _ = m(m.initial_carry(first), first, True, draws[0])
        carry.halted = torch.from_numpy(halted)
        ids = m.segment_data(carry, second)["puzzle_identifiers"]
        table = m.inner.puzzle_emb.weights
        rows = None if dense else table[ids].requires_grad_()
        table.requires_grad_(dense)
        carry, outputs = m(carry, second, True, draws[1], puzzle_rows=rows)
        total, _ = self.loss.act_loss(outputs, carry.current_data["labels"], carry.halted, carry.steps,
                                      self.config.loss_type)
        total.backward()
        table.requires_grad_(False)
        return ids, (table if dense else rows).grad

    def row_grads(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids [B], d loss / d rows [B, ndim])."""
        ids, grads = self._second_call_loss(dense=False)
        return ids.numpy(), grads.numpy()

    def table_grads(self) -> np.ndarray:
        """d loss / d table [N, ndim], with the table itself differentiated."""
        return self._second_call_loss(dense=True)[1].numpy()

    def train_step(self, lr: float) -> set[str]:
        """One update of both optimizers -> the names AdamATan2 holds moments for."""
        adam = self.optim.AdamATan2(self.m, weight_decay=0.5)
        sparse = self.optim.SignSGD(self.m.inner.puzzle_emb, weight_decay=0.5)
        ids, grads = self._second_call_loss(dense=False)
        adam.update(adam.flat_gradient(), lr)
        sparse.update(ids, grads, lr)
        return {k.removesuffix(".m") for k in adam.state_dict() if k.endswith(".m")}


class MLXModel:
    """A training call of the tiny MLX HRM, the way a train step does it: value_and_grad over (parameters, rows)."""

    def __init__(self, config, weights) -> None:
        import mlx.core as mx
        import mlx.nn as nn

        package = import_backend("mlx")
        self.mx, self.nn, self.loss, self.optim, self.config = mx, nn, package.loss, package.optim, config
        self.m = package.model.build_model(config)
        package.model.load_canonical(self.m, weights)

    def _second_call(self):
        """(the carry after the first call, with rows 0 and 2 halted, the second batch, its draws)."""
        batches, draws, halted, _ = _two_calls(self.config)
        first, second = [{k: self.mx.array(v) for k, v in b.items()} for b in batches]
        carry, _ = self.m(self.m.initial_carry(first), first, True, draws[0])
        carry.halted = self.mx.array(halted)
        return carry, second, draws[1]

    def _loss(self, carry, batch, draws, rows=None):
        carry, outputs = self.m(carry, batch, True, draws, puzzle_rows=rows)
        return self.loss.act_loss(outputs, carry.current_data["labels"], carry.halted, carry.steps,
                                  self.config.loss_type)[0]

    def _grads(self):
        """(ids [B], parameter gradients, row gradients [B, ndim]) of the second call."""
        carry, second, draws = self._second_call()
        ids = self.m.segment_data(carry, second)["puzzle_identifiers"]

        def loss_fn(params, rows):
            self.m.update(params)
            return self._loss(carry, second, draws, rows)

        rows = self.m.inner.puzzle_emb.weights[ids]
        _, (grads, row_grads) = self.mx.value_and_grad(loss_fn, argnums=(0, 1))(self.m.trainable_parameters(), rows)
        return ids, grads, row_grads

    def row_grads(self) -> tuple[np.ndarray, np.ndarray]:
        ids, _, row_grads = self._grads()
        return np.array(ids), np.array(row_grads)

    def table_grads(self) -> np.ndarray:
        carry, second, draws = self._second_call()
        self.m.inner.puzzle_emb.unfreeze()
        _, grads = self.nn.value_and_grad(self.m, self._loss)(carry, second, draws)
        self.m.inner.puzzle_emb.freeze()
        return np.array(grads["inner"]["puzzle_emb"]["weights"])

    def train_step(self, lr: float) -> set[str]:
        adam = self.optim.AdamATan2(self.m, weight_decay=0.5)
        sparse = self.optim.SignSGD(self.m.inner.puzzle_emb, weight_decay=0.5)
        ids, grads, row_grads = self._grads()
        adam.update(grads, lr)
        sparse.update(ids, row_grads, lr)
        self.mx.eval(self.m.parameters(), adam.state)
        return {k.removesuffix(".m") for k in adam.state_dict() if k.endswith(".m")}


MODELS = {"torch": TorchModel, "mlx": MLXModel}


def test_row_gradients_equal_the_table_gradient(backend):
    config = tiny_config()
    _, _, _, expected_ids = _two_calls(config)
    assert len(set(expected_ids)) < len(expected_ids)  # duplicate ids: their row gradients add up
    ids, rows = MODELS[backend.name](config, tiny_weights(config)).row_grads()
    table = MODELS[backend.name](config, tiny_weights(config)).table_grads()
    assert np.array_equal(ids, expected_ids)
    summed = np.zeros_like(table, dtype=np.float64)
    np.add.at(summed, ids, rows)
    assert np.abs(rows).max() > 0
    assert_close(table, summed, 1e-4, "table gradient")


def test_row_gradients_agree_between_backends(both):
    config = tiny_config()
    (ids_t, ours), (ids_m, theirs) = [MODELS[a.name](config, tiny_weights(config)).row_grads() for a in both]
    assert np.array_equal(ids_t, ids_m)
    assert_close(theirs, ours.astype(np.float64), 1e-4, "row gradients")


def test_a_train_step_never_touches_the_initial_states(backend):
    config = tiny_config()
    weights = tiny_weights(config)
    model = MODELS[backend.name](config, weights)
    names = model.train_step(lr=0.1)
    assert names == {f"inner.{k}" for k in canonical_shapes(config) if k not in NON_TRAINABLE}
    after = backend.model.canonical_state(model.m)
    for name in ("H_init", "L_init"):
        assert np.array_equal(after[name], weights[name]), name
    changed = [k for k in weights if k not in NON_TRAINABLE and not np.array_equal(after[k], weights[k])]
    assert len(changed) == len(weights) - len(NON_TRAINABLE)
    _, _, _, ids = _two_calls(config)
    absent = np.setdiff1d(np.arange(config.num_puzzle_identifiers), ids)
    assert np.array_equal(after[TABLE][absent], weights[TABLE][absent])
    assert not np.array_equal(after[TABLE][ids], weights[TABLE][ids])


def test_mlx_optimizers_work_inside_a_compiled_step():
    """Compiled with the model's and AdamATan2's state as inputs and outputs, three steps with a changing lr give
    what the eager steps give: the moments, step count, lr and puzzle table are all captured."""
    pytest.importorskip("mlx.core")
    import mlx.core as mx
    from mlx.utils import tree_unflatten

    from hrm_mlx.model import canonical_state

    config = tiny_config()
    rng = np.random.default_rng(4)
    grads = [[(f"inner.{k}", rng.normal(0, 1, s).astype(np.float32)) for k, s in canonical_shapes(config).items()
              if k not in NON_TRAINABLE] for _ in range(3)]
    row_grads = [rng.normal(0, 1, (4, config.puzzle_emb_ndim)).astype(np.float32) for _ in range(3)]
    ids = mx.array([2, 0, 2, 1])
    results = []
    for compiled in (False, True):
        model = MLXModel(config, tiny_weights(config))
        adam = model.optim.AdamATan2(model.m, weight_decay=0.2)
        sparse = model.optim.SignSGD(model.m.inner.puzzle_emb, weight_decay=0.2)
        state = [model.m.state, adam.state]

        def step(g, rows, lr):  # called within this iteration only, so the loop's adam and sparse are the ones meant
            adam.update(g, lr)  # noqa: B023
            sparse.update(ids, rows, lr)  # noqa: B023

        if compiled:
            step = mx.compile(step, inputs=state, outputs=state)
        for g, rows, lr in zip(grads, row_grads, (1e-2, 3e-2, 2e-2)):
            step(tree_unflatten([(k, mx.array(v)) for k, v in g]), mx.array(rows), mx.array(lr))
            mx.eval(state)
        results.append({**canonical_state(model.m),
                        **{k: np.array(v) for k, v in adam.state_dict().items()}})
    eager, compiled = results
    assert int(compiled["step"]) == 3 and not np.array_equal(compiled[TABLE], tiny_weights(config)[TABLE])
    for k, v in eager.items():
        assert_close(compiled[k], v.astype(np.float64), 1e-6, k)
