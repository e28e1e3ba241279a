"""TRM in each backend against shared/TRM.md and the float64 numpy reference in trm_reference.py: names and parameter
counts, the mlp_t and attention blocks, whole segments, the halting rule, evaluation length, and the gradient of a
training segment (the full last recursion) against finite differences.

Tolerances (float32, CPU): blocks and segments max-abs <= 1e-4; gradients along a direction d:
|g.d - finite difference| <= 1e-4 * |g| |d| (float64 central differences, eps 1e-5; measured 2.2e-5 torch, 2.3e-6
MLX), while HRM's one-step gradient is at least 1% off (measured 7% or more).
"""

import numpy as np
import pytest

import trm_reference as ref
from backends import random_batch
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import NON_TRAINABLE, canonical_shapes, count_parameters

OUTPUTS = {"logits", "q_halt_logits", "q_continue_logits"}


def _max_diff(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b).max())


# ------------------------------------------------------------------------------------------ names and parameters

@pytest.mark.parametrize("name, trainable", [("mlp_t", 126_850), ("attention", 131_970)])
def test_smallest_config_has_the_spec_parameter_count(name, trainable):
    config = ref.variant(name)
    assert count_parameters(config) == trainable
    shapes = canonical_shapes(config)
    assert not any(k.startswith("H_level") for k in shapes)
    if config.mlp_t:
        assert shapes["L_level.layers.1.mlp_t.gate_up_proj.weight"] == (512, 18)
        assert shapes["L_level.layers.1.mlp_t.down_proj.weight"] == (18, 256)
        assert not any("self_attn" in k for k in shapes)


@pytest.mark.parametrize("name", ref.VARIANTS)
def test_model_tensors_are_the_canonical_shapes(backend, name):
    config = ref.variant(name)
    weights = ref.trm_weights(config)
    model = ref.build(backend, config, weights)
    assert type(model).__name__ == "TRM"
    state = backend.model.canonical_state(model)
    assert {k: v.shape for k, v in state.items()} == canonical_shapes(config)
    assert all(v.dtype == np.float32 and np.array_equal(v, weights[k]) for k, v in state.items())
    trainable = backend.trainable_shapes(model)
    assert set(trainable) == set(canonical_shapes(config)) - set(NON_TRAINABLE)
    assert sum(int(np.prod(s)) for s in trainable.values()) == count_parameters(config)


# ------------------------------------------------------------------------------------------ blocks and segments

@pytest.mark.parametrize("name", ["attention", "mlp_t", "learned"])
def test_blocks_match_the_numpy_reference(backend, name):
    config = ref.variant(name)
    weights = ref.trm_weights(config)
    model = ref.build(backend, config, weights)
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    S = config.puzzle_emb_len + config.seq_len
    x = np.random.default_rng(0).normal(0, 2, (3, S, config.hidden_size)).astype(np.float32)
    for i in range(config.L_layers):
        prefix = f"L_level.layers.{i}."
        out = backend.block(model, "L_level", i, x)
        diff = _max_diff(out, ref.block(w, prefix, x.astype(np.float64), config))
        assert diff <= 1e-4, f"{prefix}: max-abs {diff:.2e}"
    if config.mlp_t:  # the token mixer alone, on [B, H, S]
        u = x.transpose(0, 2, 1).copy()
        out = backend.numpy(model.inner.L_level.layers[0].mlp_t(backend.array(u)))
        assert _max_diff(out, ref.swiglu(w, "L_level.layers.0.mlp_t.", u.astype(np.float64))) <= 1e-4


@pytest.mark.parametrize("name", ref.VARIANTS)
def test_segments_match_the_numpy_reference(backend, name):
    config = ref.variant(name)
    weights = ref.trm_weights(config)
    model = ref.build(backend, config, weights)
    batch = random_batch(np.random.default_rng(0), config)
    carry = model.initial_carry(backend.batch(batch))
    state = backend.carry_numpy(carry)
    for segment in range(3):
        params, y, z, data = ref.act_inputs(weights, config, state, batch)
        y, z, logits, q_halt, q_continue = ref.segment(params, config, y, z, data["inputs"])
        carry, out = backend.step(model, carry, backend.batch(batch), False, None)
        state = backend.carry_numpy(carry)
        assert set(out) == OUTPUTS
        assert out["logits"].shape == (4, config.seq_len, config.vocab_size)
        assert out["q_halt_logits"].dtype == np.float32
        for what, ours, expected in [("logits", out["logits"], logits), ("q_halt", out["q_halt_logits"], q_halt),
                                     ("q_continue", out["q_continue_logits"], q_continue),
                                     ("z_H", state["z_H"], y), ("z_L", state["z_L"], z)]:
            diff = _max_diff(ours, expected)
            assert diff <= 1e-4, f"segment {segment}: {what} max-abs {diff:.2e}"


# --------------------------------------------------------------------------------------------------- ACT wrapper

def test_training_halts_where_q_halt_is_positive(backend):
    config = ref.variant("attention")
    weights = ref.trm_weights(config)
    weights["q_head.bias"] = np.array([0.0, 10.0], np.float32)  # q_continue > q_halt: HRM's rule would never halt
    model = ref.build(backend, config, weights)
    rng = np.random.default_rng(0)
    batch = random_batch(rng, config, batch_size=8)
    carry = model.initial_carry(backend.batch(batch))
    draws = draw_exploration(rng, 8, config.halt_max_steps, 0.0)
    with pytest.raises(HRMError, match="exploration"):
        model(carry, backend.batch(batch), True, None)
    q_halts = 0
    for call in range(6):
        before = backend.carry_numpy(carry)
        carry, out = backend.step(model, carry, backend.batch(batch), True, draws)
        state = backend.carry_numpy(carry)
        assert set(out) == OUTPUTS, f"call {call}: no second forward, no target_q_continue"
        assert np.all(out["q_continue_logits"] > out["q_halt_logits"])
        is_last = state["steps"] >= config.halt_max_steps
        assert np.array_equal(state["halted"], is_last | (out["q_halt_logits"] > 0)), f"call {call}"
        assert np.array_equal(state["steps"], np.where(before["halted"], 0, before["steps"]) + 1)
        q_halts += int(((out["q_halt_logits"] > 0) & ~is_last).sum())
        # The ACT loss has no Q-continue term: total = lm_loss + 0.5 * q_halt_loss over every row.
        total, metrics = backend.loss(out, state["labels"], state["halted"], state["steps"], config.loss_type)
        assert metrics["q_continue_loss"] == 0
        assert total == pytest.approx(ref.loss(out["logits"].astype(np.float64),
                                               out["q_halt_logits"].astype(np.float64), state["labels"]), rel=1e-5)
    assert q_halts >= 4  # rows did stop early on q_halt > 0
    # Q says halt at once; exploration keeps rows 1 and 2 running to at least 3 and 2 steps.
    weights["q_head.weight"][:] = 0
    weights["q_head.bias"] = np.array([5.0, 10.0], np.float32)
    model = ref.build(backend, config, weights)
    carry = model.initial_carry(backend.batch(batch))
    draws.min_halt_steps = np.array([0, 3, 2, 0, 0, 0, 0, 0], np.int32)
    halted = []
    for _ in range(3):
        carry, _ = backend.step(model, carry, backend.batch(batch), True, draws)
        halted.append(backend.carry_numpy(carry)["halted"][:4].tolist())
    assert halted == [[True, False, False, True], [True, False, True, True], [True, True, False, True]]


def test_evaluation_runs_every_row_exactly_halt_max_steps(backend):
    config = ref.variant("mlp_t")
    weights = ref.trm_weights(config)
    weights["q_head.bias"] = np.array([5.0, -5.0], np.float32)  # Q says halt; evaluation must ignore it
    model = ref.build(backend, config, weights)
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, config) for _ in range(4)]
    carry = model.initial_carry(backend.batch(batches[0]))
    for call, (steps, data) in enumerate([(1, 0), (2, 0), (3, 0), (1, 3)]):
        carry, out = backend.step(model, carry, backend.batch(batches[call]), False, None)
        state = backend.carry_numpy(carry)
        assert np.all(out["q_halt_logits"] > 0) and set(out) == OUTPUTS
        assert np.all(state["steps"] == steps) and np.all(state["halted"] == (steps == 3)), f"call {call}"
        assert all(np.array_equal(state[k], batches[data][k]) for k in batches[data]), f"call {call}"
    _, first = backend.step(model, model.initial_carry(backend.batch(batches[3])), backend.batch(batches[3]), False,
                            None)
    assert _max_diff(first["logits"], out["logits"]) < 1e-6  # a halted row restarts from H_init, L_init


# ------------------------------------------------------------------------------------------------------ gradients

@pytest.mark.parametrize("name", ["attention", "mlp_t", "H_cycles=1", "no puzzle"])
def test_gradients_are_those_of_the_whole_last_recursion(backend, name):
    """Each gradient, along itself and along a random direction, equals the finite difference of the numpy segment
    loss whose last recursion (L_cycles + 1 net calls) alone sees the perturbation; for the embeddings, the puzzle
    rows and the network it differs from HRM's one-step gradient (the last 2 calls only)."""
    config = ref.variant(name)
    total, grads, (params, y, z, data), rng = ref.second_call_gradients(backend, config)
    _, _, logits, q_halt, _ = ref.segment(params, config, y, z, data["inputs"])
    assert total == pytest.approx(ref.loss(logits, q_halt, data["labels"]), rel=1e-5)
    trainable = set(canonical_shapes(config)) - set(NON_TRAINABLE)
    assert set(grads) == trainable | ({"puzzle_rows"} if config.puzzle_emb_ndim else set())
    assert np.all(grads["q_head.weight"][1] == 0) and grads["q_head.bias"][1] == 0  # q_continue has no loss
    last_recursion = config.L_cycles + 1
    for tensor, g in grads.items():
        g = g.astype(np.float64)
        norm = np.linalg.norm(g)
        assert norm > 0, tensor
        for direction in (g / norm, rng.normal(size=g.shape) / np.sqrt(g.size)):
            fd = ref.directional_derivative(params, config, y, z, data, tensor, direction, last_recursion)
            error = abs(float((g * direction).sum()) - fd) / (norm * np.linalg.norm(direction))
            assert error <= 1e-4, f"{tensor}: gradient vs finite difference {error:.2e}"
        if tensor.startswith(("embed_tokens", "puzzle_rows", "L_level")):
            one_step = ref.directional_derivative(params, config, y, z, data, tensor, g / norm, free_calls=2)
            assert abs(one_step - norm) > 0.01 * norm, f"{tensor}: the gradient is HRM's one-step gradient"
