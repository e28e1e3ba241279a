"""TRM in torch and MLX against each other from the same canonical weights, inputs and exploration draws
(shared/DESIGN.md section 8 applied to shared/TRM.md).

Tolerances (CPU, the tiny TRM configs of trm_reference.py; the worst value measured in brackets):
- float32, per block and per segment from the same carry: max-abs <= 1e-4 (blocks 5e-6, segments 2e-5 on z_L);
  halting, steps and data identical.
- float32, segments where each backend carries its own state: halting, steps, data identical; argmax identical where
  the top-2 logit margin exceeds 1e-3; logits <= 1e-3 (the states drift apart slowly through the recursion).
- bfloat16: per block relative RMS <= 0.02 (0.008); per segment from the same carry relative RMS <= 0.1 (0.07).
- one training segment's gradients, float32, every trainable tensor and the puzzle rows:
  max|g_torch - g_mlx| <= 1e-4 * max|g_torch| per tensor (2.4e-5); loss relative 1e-6 (3e-7).
"""


import numpy as np
import pytest

import trm_reference as ref
from backends import random_batch
from hrm_shared.core.act import draw_exploration

STATE = ("z_H", "z_L")
DATA = ("inputs", "labels", "puzzle_identifiers")


def _max_diff(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def _rel_rms(a, b) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


@pytest.mark.parametrize("forward_dtype, measure, tolerance", [("float32", "max-abs", 1e-4),
                                                               ("bfloat16", "relative RMS", 0.02)])
@pytest.mark.parametrize("name", ["attention", "mlp_t", "learned"])
def test_blocks(both, forward_dtype, measure, tolerance, name):
    config = ref.variant(name).replace(forward_dtype=forward_dtype)
    weights = ref.trm_weights(config)
    models = [ref.build(a, config, weights) for a in both]
    x = np.random.default_rng(0).normal(0, 3, (4, config.puzzle_emb_len + config.seq_len, 64)).astype(np.float32)
    for i in range(config.L_layers):
        ours, theirs = [a.block(m, "L_level", i, x) for a, m in zip(both, models)]
        diff = _max_diff(ours, theirs) if measure == "max-abs" else _rel_rms(theirs, ours)
        assert diff <= tolerance, f"L_level.layers.{i}: {measure} {diff:.2e} > {tolerance}"


@pytest.mark.parametrize("name", ref.VARIANTS)
def test_float32_segments_from_the_same_carry(both, name):
    config = ref.variant(name)
    weights = ref.trm_weights(config)
    models = [ref.build(a, config, weights) for a in both]
    rng = np.random.default_rng(0)
    batch = random_batch(rng, config)
    state = both[0].carry_numpy(models[0].initial_carry(both[0].batch(batch)))
    for segment in range(8):
        batch, draws = random_batch(rng, config), draw_exploration(rng, 4, config.halt_max_steps, 0.3)
        results = []
        for a, m in zip(both, models):
            carry, outputs = a.step(m, a.carry_from_numpy(m, state), a.batch(batch), True, draws)
            assert "target_q_continue" not in outputs
            results.append({**outputs, **a.carry_numpy(carry)})
        ours, theirs = results
        for what in ("logits", "q_halt_logits", "q_continue_logits") + STATE:
            diff = _max_diff(ours[what], theirs[what])
            assert diff <= 1e-4, f"segment {segment}: {what} max-abs {diff:.2e}"
        for what in ("halted", "steps") + DATA:
            assert np.array_equal(ours[what], theirs[what]), f"segment {segment}: {what}"
        state = ours


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", ["attention", "mlp_t"])
def test_float32_trajectories(both, training, name):
    config = ref.variant(name)
    weights = ref.trm_weights(config)
    models = [ref.build(a, config, weights) for a in both]
    rng = np.random.default_rng(1)
    batch = random_batch(rng, config, batch_size=8)
    carries = [m.initial_carry(a.batch(batch)) for a, m in zip(both, models)]
    halts = 0
    for segment in range(12):
        batch = random_batch(rng, config, batch_size=8)
        draws = draw_exploration(rng, 8, config.halt_max_steps, 0.3) if training else None
        results = []
        for k, (a, m) in enumerate(zip(both, models)):
            carries[k], outputs = a.step(m, carries[k], a.batch(batch), training, draws)
            results.append({**outputs, **a.carry_numpy(carries[k])})
        ours, theirs = results
        for what in ("halted", "steps") + DATA:
            assert np.array_equal(ours[what], theirs[what]), f"segment {segment}: {what}"
        top2 = np.sort(ours["logits"], axis=-1)[..., -2:]
        clear = top2[..., 1] - top2[..., 0] > 1e-3
        assert np.array_equal(ours["logits"].argmax(-1)[clear], theirs["logits"].argmax(-1)[clear]), \
            f"segment {segment}: argmax"
        assert _max_diff(ours["logits"], theirs["logits"]) <= 1e-3, f"segment {segment}: logits"
        halts += int(ours["halted"].sum())
    assert halts >= 16  # rows did halt and restart along the way


@pytest.mark.parametrize("name", ["attention", "mlp_t"])
def test_bfloat16_segments_from_the_same_carry(both, name):
    config = ref.variant(name).replace(forward_dtype="bfloat16")
    weights = ref.trm_weights(config)
    models = [ref.build(a, config, weights) for a in both]
    rng = np.random.default_rng(2)
    batch = random_batch(rng, config)
    state = both[0].carry_numpy(models[0].initial_carry(both[0].batch(batch)))
    for segment in range(6):
        batch = random_batch(rng, config)
        results = []
        for a, m in zip(both, models):
            carry, outputs = a.step(m, a.carry_from_numpy(m, state), a.batch(batch), False, None)
            results.append({**outputs, **a.carry_numpy(carry)})
        ours, theirs = results
        for what in ("logits", "q_halt_logits", "q_continue_logits") + STATE:
            error = _rel_rms(theirs[what], ours[what])
            assert error <= 0.1, f"segment {segment}: {what} relative RMS {error:.3f}"
        state = ours


@pytest.mark.parametrize("loss_type", ["stablemax_cross_entropy", "softmax_cross_entropy"])
@pytest.mark.parametrize("name", ref.VARIANTS)
def test_float32_gradients_of_one_segment(both, name, loss_type):
    config = ref.variant(name).replace(loss_type=loss_type)
    weights = ref.trm_weights(config)
    rng = np.random.default_rng(3)
    batches = [random_batch(rng, config), random_batch(rng, config)]
    draws = [draw_exploration(rng, 4, config.halt_max_steps, 0.5) for _ in range(2)]
    results = []
    for a in both:
        model = ref.build(a, config, weights)
        carry, _ = a.step(model, model.initial_carry(a.batch(batches[0])), a.batch(batches[0]), True, draws[0])
        # Rows 0 and 2 restart on the second batch, rows 1 and 3 continue: both paths into the puzzle rows.
        state = {**a.carry_numpy(carry), "halted": np.array([True, False, True, False])}
        results.append(ref.segment_gradients(a, model, state, batches[1], draws[1]))
    (loss_t, grads_t), (loss_m, grads_m) = results
    assert loss_m == pytest.approx(loss_t, rel=1e-6)
    assert sorted(grads_t) == sorted(grads_m)
    assert ("puzzle_rows" in grads_t) == (config.puzzle_emb_ndim > 0)
    for tensor, g in grads_t.items():
        assert np.abs(g).max() > 0, tensor
        error = _max_diff(g, grads_m[tensor]) / np.abs(g).max()
        assert error <= 1e-4, f"{tensor}: relative gradient difference {error:.2e}"
