"""Initialisation, exploration draws, layers, one segment, the ACT wrapper and the loss, each against numpy.

The numpy references below are written from shared/DESIGN.md sections 2-4 in float64, independently of either backend.
"""

import math

import numpy as np
import pytest

from backends import random_batch, tiny_config, tiny_weights
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.config import PRESETS, HRMConfig, preset
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import canonical_shapes, erf, erfinv, init_weights, round_to_bfloat16, truncated_normal

TRUNC_FACTOR = 1.1368472343  # JAX truncated normal on [-2, 2]: std correction


# ----------------------------------------------------------------------------------------------- numpy references

def mm(x, w):
    """x @ w.T without BLAS: OpenBLAS's spinning threads would starve torch's and MLX's on a small machine."""
    return np.einsum("...i,oi->...o", x, w)


def np_rms_norm(x, eps=1e-5):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)


def np_rope(x, theta=10000.0):
    """x [B, T, heads, D]: rotate each pair (i, i + D/2) by the angle position * theta^(-2i/D)."""
    T, D = x.shape[1], x.shape[-1]
    angle = np.arange(T)[:, None] * theta ** (-np.arange(0, D, 2) / D)  # [T, D/2]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    a, b = x[..., :D // 2], x[..., D // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def np_attention(w, x, heads, rope):
    B, T, H = x.shape
    qkv = mm(x, w["self_attn.qkv_proj.weight"]).reshape(B, T, 3 * heads, H // heads)
    q, k, v = qkv[:, :, :heads], qkv[:, :, heads:2 * heads], qkv[:, :, 2 * heads:]
    if rope:
        q, k = np_rope(q), np_rope(k)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(H // heads)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return mm(np.einsum("bhqk,bkhd->bqhd", p, v).reshape(B, T, H), w["self_attn.o_proj.weight"])


def np_swiglu(w, x):
    gate, up = np.split(mm(x, w["mlp.gate_up_proj.weight"]), 2, axis=-1)
    return mm(gate / (1 + np.exp(-gate)) * up, w["mlp.down_proj.weight"])


def np_block(w, x, heads, rope):
    x = np_rms_norm(x + np_attention(w, x, heads, rope))
    return np_rms_norm(x + np_swiglu(w, x))


def np_segment(weights, config: HRMConfig, z_H, z_L, batch):
    """One segment of shared/DESIGN.md section 2 in float64 -> (z_H, z_L, logits, q_halt, q_continue)."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    B, H, P = len(batch["inputs"]), config.hidden_size, config.puzzle_emb_len
    x = w["embed_tokens.embedding_weight"][batch["inputs"]]
    if P:
        rows = np.zeros((B, P * H))
        rows[:, :config.puzzle_emb_ndim] = w["puzzle_emb.weights"][batch["puzzle_identifiers"]]
        x = np.concatenate([rows.reshape(B, P, H), x], axis=1)
    if config.pos_encodings == "learned":
        x = 0.707106781 * (x + w["embed_pos.embedding_weight"])
    x = math.sqrt(H) * x

    def level(name, n_layers, h, injection):
        h = h + injection
        for i in range(n_layers):
            prefix = f"{name}.layers.{i}."
            h = np_block({k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)}, h, config.num_heads,
                         config.pos_encodings == "rope")
        return h

    for _ in range(config.H_cycles):
        for _ in range(config.L_cycles):
            z_L = level("L_level", config.L_layers, z_L, z_H + x)
        z_H = level("H_level", config.H_layers, z_H, z_L)
    q = mm(z_H[:, 0], w["q_head.weight"]) + w["q_head.bias"]
    return z_H, z_L, mm(z_H, w["lm_head.weight"])[:, P:], q[:, 0], q[:, 1]


def np_act_loss(outputs, labels, halted, steps, loss_type):
    logits = outputs["logits"].astype(np.float64)
    mask = labels != -100
    counts, index = mask.sum(-1), np.where(mask, labels, 0)
    if loss_type == "stablemax_cross_entropy":
        s = np.where(logits < 0, 1 / (1 - logits), logits + 1)
        logp = np.log(s / s.sum(-1, keepdims=True))
    else:
        top = logits.max(-1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    lm_rows = (-np.take_along_axis(logp, index[..., None], -1)[..., 0] * mask).sum(-1) / np.maximum(counts, 1)
    correct = mask & (logits.argmax(-1) == labels)
    seq_correct = correct.sum(-1) == counts

    def bce(x, y):
        x = x.astype(np.float64)
        return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))

    q_halt_rows = bce(outputs["q_halt_logits"], seq_correct)
    q_continue_rows = (bce(outputs["q_continue_logits"], outputs["target_q_continue"])
                       if "target_q_continue" in outputs else np.zeros(len(labels)))
    valid = halted & (counts > 0)
    total = lm_rows.sum() + 0.5 * (q_halt_rows.sum() + q_continue_rows.sum())
    return total, {"count": valid.sum(), "accuracy": (correct.sum(-1) / np.maximum(counts, 1))[valid].sum(),
                   "exact_accuracy": (valid & seq_correct).sum(),
                   "q_halt_accuracy": (valid & ((outputs["q_halt_logits"] >= 0) == seq_correct)).sum(),
                   "steps": steps[valid].sum(), "lm_loss": lm_rows.sum(), "q_halt_loss": q_halt_rows.sum(),
                   "q_continue_loss": q_continue_rows.sum()}


# ---------------------------------------------------------------------------------------- initialisation (numpy)

def test_erf_and_erfinv_are_accurate():
    x = np.linspace(-5, 5, 2001)
    assert np.abs(erf(x) - np.array([math.erf(v) for v in x])).max() < 1e-14
    y = np.linspace(-0.9999, 0.9999, 2001)
    assert np.abs(np.array([math.erf(v) for v in erfinv(y)]) - y).max() < 1e-14


def test_truncated_normal_has_the_requested_std_and_bounds():
    std = 0.5
    x = truncated_normal(np.random.default_rng(0), (1000, 1000), std)
    bound = 2 * TRUNC_FACTOR * std
    assert x.dtype == np.float32 and x.shape == (1000, 1000)
    assert abs(x.mean()) < 3e-3 and abs(x.std() - std) < 2e-3
    assert -bound - 1e-6 <= x.min() < -0.999 * bound and 0.999 * bound < x.max() <= bound + 1e-6
    # The density is a truncated Gaussian: the fraction inside one (untruncated) sigma.
    inside = np.mean(np.abs(x) < TRUNC_FACTOR * std)
    assert abs(inside - math.erf(1 / math.sqrt(2)) / math.erf(math.sqrt(2))) < 2e-3


def test_round_to_bfloat16_rounds_to_nearest_even():
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -(1 + 2**-8), 3.0], np.float32)
    expected = np.array([1.0, 1 + 2**-6, 1 + 2**-7, -1.0, 3.0], np.float32)
    assert np.array_equal(round_to_bfloat16(x), expected)


def test_init_weights_follow_the_reference_initialisation():
    config = HRMConfig(vocab_size=200, seq_len=40, num_puzzle_identifiers=5, hidden_size=128, num_heads=4,
                       H_layers=1, L_layers=1, puzzle_emb_ndim=128, pos_encodings="learned")
    weights = init_weights(config, seed=3)
    assert {k: v.shape for k, v in weights.items()} == canonical_shapes(config)
    assert all(v.dtype == np.float32 for v in weights.values())
    assert all(np.array_equal(v, init_weights(config, seed=3)[k]) for k, v in weights.items())
    assert not np.array_equal(weights["lm_head.weight"], init_weights(config, seed=4)["lm_head.weight"])
    assert np.all(weights["q_head.weight"] == 0) and np.all(weights["q_head.bias"] == -5)
    assert np.all(weights["puzzle_emb.weights"] == 0)
    for name in ("H_init", "L_init"):
        assert np.array_equal(weights[name], round_to_bfloat16(weights[name]))
        assert 0.8 < weights[name].std() < 1.2 and np.abs(weights[name]).max() <= 2 * TRUNC_FACTOR
    for name, w in weights.items():
        if w.ndim == 2 and not name.startswith(("q_head", "puzzle_emb")):
            fan_in = w.shape[1]
            assert abs(w.std() * math.sqrt(fan_in) - 1) < 4 / math.sqrt(2 * w.size), name
            assert np.abs(w).max() <= 2 * TRUNC_FACTOR / math.sqrt(fan_in) * (1 + 1e-6), name


def test_exploration_draws():
    draws = draw_exploration(np.random.default_rng(0), 10_000, halt_max_steps=16, prob=0.1)
    assert draws.explore.dtype == bool and draws.min_halt_steps.dtype == np.int32
    assert abs(draws.explore.mean() - 0.1) < 0.01
    assert np.all(draws.min_halt_steps[~draws.explore] == 0)
    assert set(np.unique(draws.min_halt_steps[draws.explore])) == set(range(2, 17))
    again = draw_exploration(np.random.default_rng(0), 10_000, halt_max_steps=16, prob=0.1)
    assert np.array_equal(again.min_halt_steps, draws.min_halt_steps)
    assert np.all(draw_exploration(np.random.default_rng(0), 8, halt_max_steps=1, prob=1.0).min_halt_steps == 0)


# ------------------------------------------------------------------------------------------ layers (per backend)

def test_rms_norm(backend):
    x = np.random.default_rng(0).normal(0, 3, (2, 5, 64)).astype(np.float32)
    out = backend.numpy(backend.layers.rms_norm(backend.array(x), 1e-5))
    assert np.abs(out - np_rms_norm(x.astype(np.float64))).max() < 1e-5
    half = backend.layers.rms_norm(backend.array(x, "bfloat16"), 1e-5)
    assert "bfloat16" in str(half.dtype)


def test_rotary_embedding(backend):
    x = np.random.default_rng(0).normal(size=(2, 17, 3, 32)).astype(np.float32)
    assert np.array_equal(backend.numpy(backend.layers.rotate_half(backend.array(x))),
                          np.concatenate([-x[..., 16:], x[..., :16]], axis=-1))
    cos, sin = backend.layers.RotaryEmbedding(32, 17, 10000.0)()
    q, k = backend.layers.apply_rotary_pos_emb(backend.array(x), backend.array(2 * x), cos, sin)
    assert np.abs(backend.numpy(q) - np_rope(x.astype(np.float64))).max() < 1e-5
    assert np.abs(backend.numpy(k) - np_rope(2 * x.astype(np.float64))).max() < 2e-5


def _preset_rope_shapes() -> set[tuple[int, int, float]]:
    """(head_dim, positions, theta) of every rope preset on every dataset size we build: 4x4, 6x6, 9x9 Sudoku and
    the 30x30 grids of mazes and ARC."""
    shapes = set()
    for name in PRESETS:
        model, _ = preset(name)
        if model.pos_encodings == "rope":
            shapes |= {(model.head_dim, model.puzzle_emb_len + seq_len, model.rope_theta)
                       for seq_len in (16, 36, 81, 900)}
    return shapes


def test_torch_rotary_tables_are_the_reference_formula():
    torch = pytest.importorskip("torch")
    from hrm_torch.layers import RotaryEmbedding
    shapes = _preset_rope_shapes()
    assert {head_dim for head_dim, _, _ in shapes} == {32, 64}
    for head_dim, positions, theta in sorted(shapes):
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)
        rotary = RotaryEmbedding(head_dim, positions, theta)
        cos, sin = rotary()
        assert torch.equal(cos, angles.cos()) and torch.equal(sin, angles.sin()), (head_dim, positions)
        rotary.to(torch.float64)  # a move rebuilds the tables, in float32, on the new device
        assert rotary.cos_cached.dtype == torch.float32 and torch.equal(rotary.cos_cached, angles.cos())


def test_mlx_rotary_tables_follow_torch():
    pytest.importorskip("torch")
    mx = pytest.importorskip("mlx.core")
    from hrm_mlx.layers import RotaryEmbedding as MLXRotary
    from hrm_torch.layers import RotaryEmbedding as TorchRotary
    for head_dim, positions, theta in sorted(_preset_rope_shapes()):
        for got, want in zip(MLXRotary(head_dim, positions, theta)(), TorchRotary(head_dim, positions, theta)()):
            assert np.abs(np.array(got.astype(mx.float32)) - want.numpy()).max() <= 1e-5, (head_dim, positions)


def test_attention_and_swiglu(backend):
    config = tiny_config(L_layers=1)
    weights = tiny_weights(config)
    model = backend.build(config, weights)
    layer = model.inner.L_level.layers[0]
    w = {k.removeprefix("L_level.layers.0."): v.astype(np.float64) for k, v in weights.items()}
    assert w["mlp.gate_up_proj.weight"].shape == (2 * 256, 64)  # round(2 * 64 * 2/3) = 85 -> 256
    x = np.random.default_rng(0).normal(0, 2, (2, 17, 64)).astype(np.float32)
    attn = backend.numpy(layer.self_attn(backend.array(x), model.inner.rotary_emb()))
    assert np.abs(attn - np_attention(w, x.astype(np.float64), 2, rope=True)).max() < 1e-4
    mlp = backend.numpy(layer.mlp(backend.array(x)))
    assert np.abs(mlp - np_swiglu(w, x.astype(np.float64))).max() < 1e-4


# ---------------------------------------------------------------------------------- one segment and ACT wrapper

@pytest.mark.parametrize("pos_encodings, puzzle_emb_ndim", [("rope", 64), ("learned", 100), ("rope", 0)])
def test_segments_match_the_numpy_reference(backend, pos_encodings, puzzle_emb_ndim):
    config = tiny_config(pos_encodings=pos_encodings, puzzle_emb_ndim=puzzle_emb_ndim, halt_max_steps=8)
    weights = tiny_weights(config)
    model = backend.build(config, weights)
    batch = random_batch(np.random.default_rng(0), config)
    shape = (4, config.puzzle_emb_len + config.seq_len, config.hidden_size)
    z_H = np.broadcast_to(weights["H_init"].astype(np.float64), shape)
    z_L = np.broadcast_to(weights["L_init"].astype(np.float64), shape)
    carry = model.initial_carry(backend.batch(batch))
    for segment in range(3):
        carry, out = backend.step(model, carry, backend.batch(batch), False, None)
        z_H, z_L, logits, q_halt, q_continue = np_segment(weights, config, z_H, z_L, batch)
        state = backend.carry_numpy(carry)
        for name, ours, ref in [("logits", out["logits"], logits), ("q_halt", out["q_halt_logits"], q_halt),
                                ("q_continue", out["q_continue_logits"], q_continue),
                                ("z_H", state["z_H"], z_H), ("z_L", state["z_L"], z_L)]:
            assert np.abs(ours - ref).max() < 1e-4, f"segment {segment}: {name}"
        assert out["logits"].shape == (4, config.seq_len, config.vocab_size)
        assert out["q_halt_logits"].dtype == np.float32
        z_H, z_L = state["z_H"].astype(np.float64), state["z_L"].astype(np.float64)  # compare per segment


def test_act_wrapper_eval_runs_every_row_halt_max_steps(backend):
    config = tiny_config(halt_max_steps=3)
    weights = tiny_weights(config)
    weights["q_head.bias"] = np.array([5.0, -5.0], np.float32)  # Q says halt; eval must ignore it
    model = backend.build(config, weights)
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, config) for _ in range(4)]
    carry = model.initial_carry(backend.batch(batches[0]))
    for call, (steps, data) in enumerate([(1, 0), (2, 0), (3, 0), (1, 3)]):
        carry, out = backend.step(model, carry, backend.batch(batches[call]), False, None)
        state = backend.carry_numpy(carry)
        assert np.all(state["steps"] == steps) and np.all(state["halted"] == (steps == 3)), f"call {call}"
        assert all(np.array_equal(state[k], batches[data][k]) for k in batches[data]), f"call {call}"
        assert "target_q_continue" not in out
    fresh = model.initial_carry(backend.batch(batches[3]))
    _, first = backend.step(model, fresh, backend.batch(batches[3]), False, None)
    assert np.abs(first["logits"] - out["logits"]).max() < 1e-6  # a halted row restarts from H_init, L_init


def test_act_wrapper_training_halts_on_q_and_exploration(backend):
    config = tiny_config(halt_max_steps=3)
    model = backend.build(config, tiny_weights(config))
    rng = np.random.default_rng(0)
    batch = backend.batch(random_batch(rng, config))
    carry = model.initial_carry(batch)
    draws = draw_exploration(rng, 4, 3, 0.0)
    with pytest.raises(HRMError, match="exploration"):
        model(carry, batch, True, None)
    for call in range(4):
        before = backend.carry_numpy(carry)
        carry, out = backend.step(model, carry, batch, True, draws)
        state = backend.carry_numpy(carry)
        _, _, (next_halt, next_continue) = model.inner(carry.inner_carry, carry.current_data)
        next_halt, next_continue = backend.numpy(next_halt), backend.numpy(next_continue)
        is_last = state["steps"] >= 3
        target = np.where(is_last, next_halt, np.maximum(next_halt, next_continue))
        assert np.abs(out["target_q_continue"] - 1 / (1 + np.exp(-target))).max() < 1e-6
        expected = is_last | (out["q_halt_logits"] > out["q_continue_logits"])
        assert np.array_equal(state["halted"], expected), f"call {call}"
        assert np.array_equal(state["steps"], np.where(before["halted"], 0, before["steps"]) + 1)
    # Q says halt at once, exploration keeps rows 1 and 2 running to at least 3 and 2 steps.
    weights = tiny_weights(config)
    weights["q_head.weight"][:] = 0
    weights["q_head.bias"] = np.array([5.0, -5.0], np.float32)
    model = backend.build(config, weights)
    carry = model.initial_carry(batch)
    draws.min_halt_steps = np.array([0, 3, 2, 0], np.int32)
    halted = []
    for _ in range(3):
        carry, _ = backend.step(model, carry, batch, True, draws)
        halted.append(backend.carry_numpy(carry)["halted"].tolist())
    assert halted == [[True, False, False, True], [True, False, True, True], [True, True, False, True]]


# ---------------------------------------------------------------------------------------------------------- loss

def test_stablemax(backend):
    x = np.random.default_rng(0).normal(0, 4, (3, 5, 7))
    s = np.where(x < 0, 1 / (1 - x), x + 1)
    out = backend.numpy(backend.losses.log_stablemax(backend.array(x.astype(np.float32))))
    assert np.abs(out - np.log(s / s.sum(-1, keepdims=True))).max() < 1e-5


@pytest.mark.parametrize("loss_type", ["stablemax_cross_entropy", "softmax_cross_entropy"])
@pytest.mark.parametrize("with_target", [False, True])
def test_act_loss_matches_numpy(backend, loss_type, with_target):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (5, 6, 4)).astype(np.float32)
    labels = rng.integers(0, 4, (5, 6)).astype(np.int32)
    labels[0] = logits[0].argmax(-1)  # an exactly solved row
    labels[1, :2] = -100
    labels[2] = -100  # a row with nothing to supervise never counts
    outputs = {"logits": logits, "q_halt_logits": rng.normal(0, 2, 5).astype(np.float32),
               "q_continue_logits": rng.normal(0, 2, 5).astype(np.float32)}
    if with_target:
        outputs["target_q_continue"] = rng.random(5).astype(np.float32)
    halted = np.array([True, True, True, False, True])
    steps = np.array([3, 1, 2, 4, 5], np.int32)
    total, metrics = backend.loss(outputs, labels, halted, steps, loss_type)
    ref_total, ref_metrics = np_act_loss(outputs, labels, halted, steps, loss_type)
    assert total == pytest.approx(ref_total, rel=1e-5)
    assert metrics == pytest.approx({k: float(v) for k, v in ref_metrics.items()}, rel=1e-5, abs=1e-6)
    assert metrics["count"] == 3 and metrics["exact_accuracy"] == 1
