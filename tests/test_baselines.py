"""The paper's baselines: the direct-prediction Transformer presets (one pass through the same parameters) and the
gradient mode grad="bptt" (backprop through every cycle of the segment) in both backends.

Independent checks: the direct model's logits against its blocks run by hand; TRM's BPTT gradient against float64
finite differences of the numpy reference (trm_reference.py) with every net call perturbed; HRM's against torch
autograd through the recurrence unrolled by hand; the two backends' BPTT gradients against each other (float32,
max|g_torch - g_mlx| <= 1e-4 * max|g_torch| per tensor, as tests/test_model_parity.py); saved activations flat in
the cycles for the one-step gradient and growing for BPTT.
"""

import numpy as np
import pytest

import trm_reference as ref
from backends import adapter, random_batch, tiny_config, tiny_weights
from hrm_shared.app.flops import segment_flops, train_step_flops
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.config import preset
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import canonical_shapes, count_parameters


def _max_diff(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.mark.parametrize("name", ["demo", "sudoku"])
def test_direct_preset_is_the_same_parameters_in_one_pass(name):
    model, train = preset(name)
    direct, direct_train = preset(f"{name}-direct")
    assert (direct.H_cycles, direct.L_cycles, direct.halt_max_steps) == (1, 1, 1)
    assert direct.replace(H_cycles=model.H_cycles, L_cycles=model.L_cycles,
                          halt_max_steps=model.halt_max_steps) == model
    assert direct_train == train
    sized = {k: v.replace(vocab_size=11, seq_len=81) for k, v in (("hrm", model), ("direct", direct))}
    assert canonical_shapes(sized["direct"]) == canonical_shapes(sized["hrm"])
    assert count_parameters(sized["direct"]) == count_parameters(sized["hrm"])


def test_direct_model_is_one_stack_of_blocks(backend):
    """One segment of the direct model = L_level's blocks on L_init + H_init + x, then H_level's on H_init + that,
    then lm_head: a post-norm Transformer of L_layers + H_layers blocks."""
    config = tiny_config(H_cycles=1, L_cycles=1, halt_max_steps=1)
    weights = tiny_weights(config)
    model = backend.build(config, weights)
    batch = random_batch(np.random.default_rng(0), config)
    outputs = backend.package.evaluate.predict(model, backend.batch(batch))[1]
    inner = model.inner
    x = backend.numpy(inner.input_embeddings(backend.array(batch["inputs"]),
                                             backend.array(batch["puzzle_identifiers"])))
    h = weights["L_init"] + weights["H_init"] + x
    for i in range(config.L_layers):
        h = backend.block(model, "L_level", i, h)
    h = weights["H_init"] + h
    for i in range(config.H_layers):
        h = backend.block(model, "H_level", i, h)
    logits = (h @ weights["lm_head.weight"].T)[:, config.puzzle_emb_len:]
    assert _max_diff(backend.numpy(outputs["logits"]), logits) <= 1e-4


def test_grad_is_a_config_field_with_two_values():
    assert tiny_config().grad == "one_step" and tiny_config(grad="bptt").grad == "bptt"
    with pytest.raises(HRMError, match="grad='full' is not one of one_step, bptt"):
        tiny_config(grad="full")
    config = tiny_config(vocab_size=11, seq_len=81)
    assert train_step_flops(config.replace(grad="bptt"), 4) == 3 * segment_flops(config, 4) + segment_flops(config, 4)
    assert train_step_flops(config.replace(grad="bptt"), 4) > train_step_flops(config, 4)


def _hrm_gradients(adapter, config, weights, seed: int = 3):
    """Loss and gradients of one training segment of HRM `config` from a carry one segment in."""
    rng = np.random.default_rng(seed)
    batch = random_batch(rng, config)
    draws = [draw_exploration(rng, 4, config.halt_max_steps, 0.5) for _ in range(2)]
    model = adapter.build(config, weights)
    carry, _ = adapter.step(model, model.initial_carry(adapter.batch(batch)), adapter.batch(batch), True, draws[0])
    return adapter.grads(model, carry, adapter.batch(batch), draws[1], config.loss_type)


def test_hrm_bptt_gradients_agree_across_backends_and_differ_from_one_step(both):
    config = tiny_config(grad="bptt")
    weights = tiny_weights(config)
    (loss_t, grads_t), (loss_m, grads_m) = (_hrm_gradients(a, config, weights) for a in both)
    assert loss_m == pytest.approx(loss_t, rel=1e-6)
    for name, g in grads_t.items():
        assert _max_diff(g, grads_m[name]) <= 1e-4 * np.abs(g).max(), name
    loss_one, grads_one = _hrm_gradients(both[0], config.replace(grad="one_step"), weights)
    assert loss_one == pytest.approx(loss_t, rel=1e-6)  # the same forward pass
    for name in ("embed_tokens.embedding_weight", "L_level.layers.0.mlp.down_proj.weight"):
        assert _max_diff(grads_one[name], grads_t[name]) > 0.01 * np.abs(grads_t[name]).max(), name


def test_one_cycle_leaves_nothing_to_cut(backend):
    config = tiny_config(H_cycles=1, L_cycles=1)
    weights = tiny_weights(config)
    loss_one, grads_one = _hrm_gradients(backend, config, weights)
    loss_bptt, grads_bptt = _hrm_gradients(backend, config.replace(grad="bptt"), weights)
    assert loss_one == loss_bptt and all(np.array_equal(g, grads_bptt[k]) for k, g in grads_one.items())


def test_hrm_bptt_is_autograd_through_the_unrolled_recurrence():
    """The bptt model's gradient of a scalar of its logits = torch autograd through every L and H update of the
    segment, written out here from shared/DESIGN.md section 2 without the model's recursion."""
    torch_adapter = adapter("torch")
    torch = torch_adapter.torch
    config = tiny_config(grad="bptt", H_cycles=2, L_cycles=3)
    weights = tiny_weights(config)
    model = torch_adapter.build(config, weights)
    batch = torch_adapter.batch(random_batch(np.random.default_rng(4), config))
    inner = model.inner
    carry = inner.reset_carry(torch.ones(4, dtype=torch.bool), inner.empty_carry(4))
    projection = torch.from_numpy(np.random.default_rng(5).normal(size=(4, config.seq_len, config.vocab_size))
                                  .astype(np.float32))

    def gradients(logits):
        model.zero_grad()
        (logits * projection).sum().backward()
        return {k: p.grad.clone() for k, p in inner.named_parameters() if p.grad is not None}  # q_head: none

    ours = gradients(inner(carry, batch)[1])
    cos_sin = inner.rotary_emb()
    x = inner.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
    z_H, z_L = carry.z_H, carry.z_L
    for _ in range(config.H_cycles):
        for _ in range(config.L_cycles):
            z_L = inner.L_level(z_L, z_H + x, cos_sin)
        z_H = inner.H_level(z_H, z_L, cos_sin)
    theirs = gradients(inner.lm_head(z_H)[:, inner.puzzle_emb_len:])
    assert sorted(ours) == sorted(theirs) and "L_level.layers.1.self_attn.qkv_proj.weight" in ours
    for name, g in theirs.items():
        assert torch.allclose(ours[name], g, rtol=1e-5, atol=1e-6 * float(g.abs().max())), name


@pytest.mark.parametrize("name", ["attention", "mlp_t"])
def test_trm_bptt_gradient_is_that_of_every_recursion(backend, name):
    """TRM with grad="bptt": each gradient along itself equals the finite difference of the numpy segment loss with
    every net call perturbed (all H_cycles recursions), not only the last recursion."""
    config = ref.variant(name).replace(grad="bptt")
    _, grads, (params, y, z, data), _ = ref.second_call_gradients(backend, config)
    every_call = config.H_cycles * (config.L_cycles + 1)
    for tensor in ("embed_tokens.embedding_weight", "puzzle_rows", "L_level.layers.0.mlp.gate_up_proj.weight"):
        g = grads[tensor].astype(np.float64)
        norm = np.linalg.norm(g)
        fd = ref.directional_derivative(params, config, y, z, data, tensor, g / norm, every_call)
        assert abs(norm - fd) <= 1e-4 * norm, f"{tensor}: gradient vs finite difference"
        last = ref.directional_derivative(params, config, y, z, data, tensor, g / norm, config.L_cycles + 1)
        assert abs(last - norm) > 0.01 * norm, f"{tensor}: the gradient is the one-step (last recursion) one"


def test_trm_bptt_gradients_agree_across_backends(both):
    config = ref.variant("attention").replace(grad="bptt")
    weights = ref.trm_weights(config)
    rng = np.random.default_rng(3)
    batch = random_batch(rng, config)
    draws = draw_exploration(rng, 4, config.halt_max_steps, 0.5)
    results = []
    for a in both:
        model = ref.build(a, config, weights)
        state = a.carry_numpy(model.initial_carry(a.batch(batch)))
        results.append(ref.segment_gradients(a, model, state, batch, draws))
    (loss_t, grads_t), (loss_m, grads_m) = results
    assert loss_m == pytest.approx(loss_t, rel=1e-6)
    for tensor, g in grads_t.items():
        assert _max_diff(g, grads_m[tensor]) <= 1e-4 * np.abs(g).max(), tensor


def _saved_bytes(torch_adapter, config) -> int:
    """Bytes torch autograd saves for the backward of one training segment (the activations the gradient keeps)."""
    torch = torch_adapter.torch
    weights = tiny_weights(config)
    model = torch_adapter.build(config, weights)
    rng = np.random.default_rng(0)
    batch = torch_adapter.batch(random_batch(rng, config))
    draws = draw_exploration(rng, 4, config.halt_max_steps, 0.5)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(model.initial_carry(batch), batch, True, draws)
    return sum(saved)


def test_one_step_memory_is_flat_in_the_cycles_and_bptt_grows():
    torch_adapter = adapter("torch")
    cycles = [(1, 2), (2, 2), (2, 4), (4, 4)]
    one_step = [_saved_bytes(torch_adapter, tiny_config(H_cycles=h, L_cycles=l)) for h, l in cycles]
    bptt = [_saved_bytes(torch_adapter, tiny_config(H_cycles=h, L_cycles=l, grad="bptt")) for h, l in cycles]
    assert len(set(one_step)) == 1
    assert bptt == sorted(bptt) and len(set(bptt)) == len(bptt) and bptt[-1] > 5 * one_step[-1]
