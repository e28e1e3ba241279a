"""torch and MLX against each other on the same canonical weights, inputs and draws (shared/DESIGN.md section 8).

Tolerances (CPU; the worst value measured on the tiny configs below in brackets):
- float32, per block and per segment from the same carry: max-abs <= 1e-4 (blocks 7e-6, segments 4e-5 on z_L).
- float32, 16 segments where each backend carries its own state, in eval and in training with shared draws:
  halting, steps, data identical; argmax identical where the top-2 logit margin exceeds 1e-3; Q targets <= 1e-4
  (3e-6); the states drift apart slowly through the recurrence (z_L 1e-4), so logits are held to 1e-3 (4e-5).
- bfloat16 (the rounding, not the formula, differs: each backend is about as far from the float32 model as from
  the other): per block relative RMS <= 0.02 (0.010; max-abs 0.05-0.15 at |x| < 4, a few bfloat16 ulps); per
  segment from the same carry relative RMS <= 0.1 (0.05).
- one-segment gradients, float32: max|g_torch - g_mlx| <= 1e-4 * max|g_torch| per tensor (6e-6); loss 1e-6 (7e-8).

The block and gradient tests run every registered model family (the `family` fixture, its tiny config); the segment
tests check HRM's Q target, and tests/test_trm_parity.py TRM's variants.
"""

import numpy as np
import pytest

from backends import family_config, random_batch, tiny_config, tiny_weights
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.init import canonical_shapes

STATE = ("z_H", "z_L")
DATA = ("inputs", "labels", "puzzle_identifiers")


def _max_diff(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def _rel_rms(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def _blocks(config):
    """(level, index) of every block of `config`'s model, read from its canonical names."""
    return sorted({(name.split(".")[0], int(name.split(".")[2])) for name in canonical_shapes(config)
                   if name.split(".")[1:2] == ["layers"]})


@pytest.mark.parametrize("forward_dtype, measure, tolerance", [("float32", "max-abs", 1e-4),
                                                               ("bfloat16", "relative RMS", 0.02)])
@pytest.mark.parametrize("pos_encodings", ["rope", "learned"])
def test_blocks(both, forward_dtype, measure, tolerance, pos_encodings, family):
    config = family_config(family, forward_dtype=forward_dtype, pos_encodings=pos_encodings)
    weights = tiny_weights(config)
    models = [a.build(config, weights) for a in both]
    x = np.random.default_rng(0).normal(0, 3, (4, 17, 64)).astype(np.float32)
    for level, i in _blocks(config):
        ours, theirs = [a.block(m, level, i, x) for a, m in zip(both, models)]
        diff = _max_diff(ours, theirs) if measure == "max-abs" else _rel_rms(theirs, ours)
        assert diff <= tolerance, f"{level}.layers.{i}: {measure} {diff:.2e} > {tolerance}"


@pytest.mark.parametrize("pos_encodings, puzzle_emb_ndim", [("rope", 64), ("learned", 100)])
def test_float32_segments_from_the_same_carry(both, pos_encodings, puzzle_emb_ndim):
    config = tiny_config(pos_encodings=pos_encodings, puzzle_emb_ndim=puzzle_emb_ndim)
    weights = tiny_weights(config)
    models = [a.build(config, weights) for a in both]
    rng = np.random.default_rng(0)
    batch = random_batch(rng, config)
    state = both[0].carry_numpy(models[0].initial_carry(both[0].batch(batch)))
    for segment in range(8):
        batch, draws = random_batch(rng, config), draw_exploration(rng, 4, config.halt_max_steps, 0.3)
        results = []
        for a, m in zip(both, models):
            carry, outputs = a.step(m, a.carry_from_numpy(m, state), a.batch(batch), True, draws)
            results.append({**outputs, **a.carry_numpy(carry)})
        ours, theirs = results
        for name in ("logits", "q_halt_logits", "q_continue_logits", "target_q_continue") + STATE:
            diff = _max_diff(ours[name], theirs[name])
            assert diff <= 1e-4, f"segment {segment}: {name} max-abs {diff:.2e}"
        for name in ("halted", "steps") + DATA:
            assert np.array_equal(ours[name], theirs[name]), f"segment {segment}: {name}"
        state = ours


@pytest.mark.parametrize("training", [False, True])
def test_float32_trajectories_over_16_segments(both, training):
    config = tiny_config()
    weights = tiny_weights(config)
    models = [a.build(config, weights) for a in both]
    rng = np.random.default_rng(1)
    batch = random_batch(rng, config)
    carries = [m.initial_carry(a.batch(batch)) for a, m in zip(both, models)]
    halts = 0
    for segment in range(16):
        batch = random_batch(rng, config)
        draws = draw_exploration(rng, 4, config.halt_max_steps, 0.3) if training else None
        results = []
        for k, (a, m) in enumerate(zip(both, models)):
            carries[k], outputs = a.step(m, carries[k], a.batch(batch), training, draws)
            results.append({**outputs, **a.carry_numpy(carries[k])})
        ours, theirs = results
        for name in ("halted", "steps") + DATA:
            assert np.array_equal(ours[name], theirs[name]), f"segment {segment}: {name}"
        top2 = np.sort(ours["logits"], axis=-1)[..., -2:]
        clear = top2[..., 1] - top2[..., 0] > 1e-3
        assert np.array_equal(ours["logits"].argmax(-1)[clear], theirs["logits"].argmax(-1)[clear]), \
            f"segment {segment}: argmax"
        assert _max_diff(ours["logits"], theirs["logits"]) <= 1e-3, f"segment {segment}: logits"
        assert ("target_q_continue" in ours) == ("target_q_continue" in theirs) == training
        if training:
            assert _max_diff(ours["target_q_continue"], theirs["target_q_continue"]) <= 1e-4, f"segment {segment}"
        halts += int(ours["halted"].sum())
    assert halts >= 8  # rows did halt and restart along the way


def test_bfloat16_segments_from_the_same_carry(both):
    config = tiny_config(forward_dtype="bfloat16")
    weights = tiny_weights(config)
    models = [a.build(config, weights) for a in both]
    rng = np.random.default_rng(2)
    batch = random_batch(rng, config)
    state = both[0].carry_numpy(models[0].initial_carry(both[0].batch(batch)))
    for segment in range(8):
        batch = random_batch(rng, config)
        results = []
        for a, m in zip(both, models):
            carry, outputs = a.step(m, a.carry_from_numpy(m, state), a.batch(batch), False, None)
            results.append({**outputs, **a.carry_numpy(carry)})
        ours, theirs = results
        for name in ("logits", "q_halt_logits", "q_continue_logits") + STATE:
            error = _rel_rms(theirs[name], ours[name])
            assert error <= 0.1, f"segment {segment}: {name} relative RMS {error:.3f}"
        state = ours


@pytest.mark.parametrize("loss_type", ["stablemax_cross_entropy", "softmax_cross_entropy"])
@pytest.mark.parametrize("pos_encodings", ["rope", "learned"])
def test_float32_gradients_of_one_segment(both, loss_type, pos_encodings, family):
    config = family_config(family, loss_type=loss_type, pos_encodings=pos_encodings)
    weights = tiny_weights(config)
    rng = np.random.default_rng(3)
    batch = random_batch(rng, config)
    draws = [draw_exploration(rng, 4, config.halt_max_steps, 0.5) for _ in range(2)]
    results = []
    for a in both:
        model = a.build(config, weights)
        carry = model.initial_carry(a.batch(batch))
        carry, _ = a.step(model, carry, a.batch(batch), True, draws[0])
        results.append(a.grads(model, carry, a.batch(batch), draws[1], loss_type))
    (loss_t, grads_t), (loss_m, grads_m) = results
    assert loss_m == pytest.approx(loss_t, rel=1e-6)
    assert sorted(grads_t) == sorted(grads_m)
    for name, g in grads_t.items():
        error = _max_diff(g, grads_m[name]) / np.abs(g).max()
        assert error <= 1e-4, f"{name}: relative gradient difference {error:.2e}"
