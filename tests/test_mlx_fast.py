"""The fast paths of the MLX backend against the plain ones they replace, on the CPU: fused RMSNorm and RoPE against
the layer formulas, the train step (no-gradient cycles and the Q target outside mx.value_and_grad) against
differentiating the model's own call, compiled evaluation against eager, the order-independent puzzle-row sum
against a scatter-add, no float64 on the GPU branch of the device check, and the errors of a failed collective.

Tolerances: float32 RoPE 1e-5 (measured 2e-6: the kernel's angles from the same inverse frequencies); RMSNorm,
gradients, evaluation and the sparse update exact; compiled against eager training steps 1e-5 (relative).
"""

import socket

import numpy as np
import pytest

from backends import adapter, random_batch, tiny_config, tiny_weights
from helpers import TINY, invoke, make_dataset
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.config import TrainConfig, TRMConfig
from hrm_shared.core.errors import HRMError

mx = pytest.importorskip("mlx.core")
from mlx.utils import tree_flatten  # noqa: E402  (mlx is optional)


@pytest.fixture
def mlx():
    return adapter("mlx")


def _trm_config(**changes) -> TRMConfig:
    return TRMConfig(vocab_size=10, seq_len=16, num_puzzle_identifiers=3, hidden_size=64, num_heads=2,
                     expansion=2.0, L_layers=2, H_cycles=2, L_cycles=2, halt_max_steps=4, puzzle_emb_ndim=64,
                     puzzle_emb_len=1, forward_dtype="float32", **changes)


CONFIGS = {"hrm": tiny_config(), "hrm-bptt": tiny_config(grad="bptt"), "hrm-direct": tiny_config(halt_max_steps=1),
           "hrm-learned": tiny_config(pos_encodings="learned", puzzle_emb_ndim=0), "trm": _trm_config(),
           "trm-bptt": _trm_config(grad="bptt")}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_rms_norm_is_the_formula(mlx, dtype):
    x = mx.array(np.random.default_rng(0).normal(0, 3, (4, 901, 128)).astype(np.float32)).astype(getattr(mx, dtype))
    x32 = x.astype(mx.float32)
    formula = (x32 * mx.rsqrt(mx.square(x32).mean(-1, keepdims=True) + 1e-5)).astype(x.dtype)
    assert mx.array_equal(mlx.layers.rms_norm(x, 1e-5), formula).item()


@pytest.mark.parametrize("positions", [17, 901])
def test_fast_rope_follows_the_rotate_half_tables(mlx, positions):
    rng = np.random.default_rng(1)
    q, k = (rng.normal(0, 3, (2, positions, 4, 64)).astype(np.float32) for _ in range(2))
    config = tiny_config(seq_len=positions - 1, hidden_size=256, num_heads=4, L_layers=1)
    model = mlx.build(config, tiny_weights(config))
    tables = model.inner.rotary_emb()
    expected = [np.array(t) for t in mlx.layers.apply_rotary_pos_emb(mx.array(q), mx.array(k), *tables)]
    for name, x, want in (("q", q, expected[0]), ("k", k, expected[1])):
        got = np.array(mlx.layers._rope(mx.array(x).transpose(0, 2, 1, 3), tables.freqs).transpose(0, 2, 1, 3))
        assert np.abs(got - want).max() <= 1e-5, name
    half = mlx.layers._rope(mx.array(q).astype(mx.bfloat16).transpose(0, 2, 1, 3), tables.freqs)
    assert half.dtype == mx.bfloat16


def _reference_gradients(act_loss, model, carry, batch, draws, rows):
    """Differentiate the model's own call (every cycle and the Q target inside mx.value_and_grad), as the train step
    did before it moved them out -> (loss, carry arrays, metrics, gradients, row gradients)."""
    loss_type = model.config.loss_type

    def loss_fn(params, rows):
        model.update(params)
        new, outputs = model(carry, batch, True, draws, puzzle_rows=rows)
        total, metrics = act_loss(outputs, new.current_data["labels"], new.halted, new.steps, loss_type)
        return total / 8, (new.inner_carry.z_H, new.inner_carry.z_L, new.steps, new.halted), metrics

    params = model.trainable_parameters()
    if rows is None:
        (loss, new, metrics), grads = mx.value_and_grad(lambda p: loss_fn(p, None))(params)
        row_grads = None
    else:
        (loss, new, metrics), (grads, row_grads) = mx.value_and_grad(loss_fn, argnums=(0, 1))(params, rows)
    model.update(params)
    return loss, new, metrics, grads, row_grads


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_train_step_has_the_gradients_of_the_models_own_call(mlx, name):
    config = CONFIGS[name]
    model = mlx.build(config, tiny_weights(config))
    trainer = mlx.package.train.Trainer(model, TrainConfig(global_batch_size=8), compile=False)
    rng = np.random.default_rng(4)
    train = mlx.package.train
    for segment in range(3):
        batch = mlx.batch(random_batch(rng, config, 8))
        draws = draw_exploration(rng, 8, config.halt_max_steps, 0.5)
        flat = train._flatten(trainer.carry)
        new, loss, metrics, grads, ids, row_grads = trainer._gradients(flat, batch, mx.array(draws.min_halt_steps))
        carry = train._unflatten(flat)
        ids_ref = model.segment_data(carry, batch)["puzzle_identifiers"]
        rows = model.inner.puzzle_emb.weights[ids_ref] if config.puzzle_emb_ndim else None
        ref = _reference_gradients(mlx.losses.act_loss, model, carry, batch, draws, rows)
        assert loss.item() == ref[0].item(), f"segment {segment}: loss"
        for i, (got, want) in enumerate(zip(new, ref[1])):
            assert mx.array_equal(got, want).item(), f"segment {segment}: carry array {i}"
        assert {k: v.item() for k, v in metrics.items()} == {k: v.item() for k, v in ref[2].items()}
        want_grads = dict(tree_flatten(ref[3]))
        for key, g in tree_flatten(grads):
            assert mx.array_equal(g, want_grads[key]).item(), f"segment {segment}: gradient of {key}"
        if config.puzzle_emb_ndim:
            assert mx.array_equal(row_grads, ref[4]).item() and mx.array_equal(ids, ids_ref).item()
        trainer.carry = train._unflatten(new)


@pytest.mark.parametrize("name", ["hrm", "trm"])
def test_compiled_training_follows_eager(mlx, name):
    config = CONFIGS[name]
    losses = []
    for compile_step in (False, True):
        trainer = mlx.package.train.Trainer(mlx.build(config, tiny_weights(config)),
                                            TrainConfig(global_batch_size=8, lr=1e-3, lr_warmup_steps=1), compile_step)
        rng = np.random.default_rng(2)
        losses.append([trainer.step(random_batch(rng, config, 8), draw_exploration(rng, 8, 4, 0.3), 1e-3, 1e-2)
                       for _ in range(4)])
    for eager, compiled in zip(*losses):
        assert eager["count"] == compiled["count"]
        assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-5)


@pytest.mark.parametrize("name", ["hrm", "hrm-learned", "trm"])
def test_compiled_evaluation_predicts_as_eager(mlx, name):
    config = CONFIGS[name]
    model = mlx.build(config, tiny_weights(config))
    batch = random_batch(np.random.default_rng(3), config, 8)
    predict = mlx.package.evaluate.predict_numpy
    compiled = predict(model, batch, segments=6, trajectory=True, states=True)
    mx.disable_compile()
    try:
        eager = predict(model, batch, segments=6, trajectory=True, states=True)
    finally:
        mx.enable_compile()
    assert compiled.keys() == eager.keys()
    for key, value in eager.items():
        assert np.array_equal(compiled[key], value), key
    weights = tiny_weights(config, seed=5)  # new weights reach the compiled function (they are its inputs)
    mlx.model.load_canonical(model, weights)
    assert np.array_equal(predict(model, batch)["q_halt_logits"],
                          predict(mlx.build(config, weights), batch)["q_halt_logits"])


def test_the_puzzle_row_sum_is_the_scatter_add(mlx):
    rng = np.random.default_rng(6)
    ids = mx.array(rng.integers(0, 5, 64).astype(np.int32))
    gradients = mx.array(rng.normal(size=(64, 32)).astype(np.float32))
    first = mx.min(mx.where(ids[:, None] == ids[None, :], mx.arange(64), 64), axis=1)
    scattered = mx.zeros_like(gradients).at[first].add(gradients)[first]
    summed = mlx.package.optim._id_sums(ids, gradients)
    np.testing.assert_allclose(np.array(summed), np.array(scattered), rtol=1e-6, atol=1e-6)
    assert mx.array_equal(mx.sign(summed), mx.sign(scattered)).item()
    config = tiny_config(num_puzzle_identifiers=5, puzzle_emb_ndim=32)
    model = mlx.build(config, tiny_weights(config))
    optimizer = mlx.package.optim.SignSGD(model.inner.puzzle_emb, 0.1)
    optimizer.update(ids, gradients, 1e-2)
    table = np.array(tiny_weights(config)["puzzle_emb.weights"])
    for i in np.unique(np.array(ids)):
        total = np.array(scattered)[np.array(ids) == i][0]
        table[i] = table[i] * (1 - 1e-2 * 0.1) - 1e-2 * np.sign(total)
    assert np.array_equal(np.array(model.inner.puzzle_emb.weights), table)


def _float64_arrays(tree, where: str) -> list[str]:
    return [f"{where}.{k}" for k, v in tree_flatten(tree) if isinstance(v, mx.array) and v.dtype == mx.float64]


@pytest.mark.parametrize("compile_step", [False, True])
def test_no_float64_reaches_the_state_on_the_gpu_branch(mlx, monkeypatch, compile_step):
    config = tiny_config(num_puzzle_identifiers=3)
    model = mlx.build(config, tiny_weights(config))
    loss_module = mlx.package.loss
    rng = np.random.default_rng(7)
    cpu = mlx.package.train.Trainer(mlx.build(config, tiny_weights(config)), TrainConfig(global_batch_size=8), False)
    cpu_loss = cpu.launch(cpu.prepare(random_batch(rng, config, 8), draw_exploration(rng, 8, 4, 0.3)), 1e-3, 1e-2)
    assert cpu_loss["loss"].dtype == mx.float64, "the CPU rule (float64 as the reference) changed"
    monkeypatch.setattr(loss_module, "_float64_available", lambda: False)  # the branch the GPU takes
    trainer = mlx.package.train.Trainer(model, TrainConfig(global_batch_size=8, ema=True), compile_step)
    found = []
    for _ in range(3):
        launched = trainer.launch(trainer.prepare(random_batch(rng, config, 8), draw_exploration(rng, 8, 4, 0.3)),
                                  1e-3, 1e-2)
        found += _float64_arrays(launched, "loss and metrics")
    found += _float64_arrays(model.parameters(), "weights") + _float64_arrays(trainer.adam.state, "optimizer")
    found += _float64_arrays(trainer.ema.state, "ema")
    found += _float64_arrays(list(mlx.package.train._flatten(trainer.carry)), "carry")
    carry, outputs = mlx.package.evaluate.predict(model, mlx.batch(random_batch(rng, config, 8)))
    _, metrics = loss_module.act_loss(outputs, carry.current_data["labels"], carry.halted, carry.steps,
                                      config.loss_type)
    found += _float64_arrays(outputs, "eval outputs") + _float64_arrays(metrics, "eval metrics")
    assert not found, found


@pytest.mark.skipif(mx.is_available(mx.gpu), reason="MLX has a GPU here")
def test_the_gpu_where_mlx_has_none_is_a_one_line_error(mlx, tmp_path):
    for device in ("gpu", "metal"):
        with pytest.raises(HRMError, match=f"MLX has no GPU on this machine \\(--device {device}\\)"):
            mlx.package.device.compute_device(None, device)
    result = invoke("train", "--backend", "mlx", "--device", "gpu", "--data", make_dataset(tmp_path / "ds"), *TINY,
                    "--out", tmp_path / "run", "--max-steps", 1)
    assert result.exit_code == 1
    assert result.output.splitlines() == ["Error: MLX has no GPU on this machine (--device gpu); use --device cpu, or "
                                          "the torch backend for an NVIDIA GPU"]


class _Peers:
    """What guard reads of a PeerWatch: its connections to the neighbours, by rank."""

    def __init__(self, peers: dict) -> None:
        self.peers = peers


def test_a_failed_collective_names_what_failed_and_the_peer_that_is_gone(mlx, monkeypatch, capsys):
    group = mx.distributed.init()
    collective = mlx.package.distributed.Collective(group, 600.0)
    here, there = socket.socketpair()
    try:
        collective.peers = _Peers({here: 1})
        with pytest.raises(HRMError) as error:
            with collective.guard("the all-reduce of the gradients"):
                raise RuntimeError("[ring] Recv failed\nmore")
        message = str(error.value)
        assert "rank 0: the all-reduce of the gradients across 1 processes failed: MLX reports: [ring] Recv failed;" \
               in message and "hrm train --resume" in message
        there.close()
        gone = "failed: peer rank 1 is gone \\(its connection closed: another process died"
        with pytest.raises(HRMError, match=gone):
            with collective.guard("the all-reduce of the gradients"):
                raise RuntimeError("[ring] Recv failed")
        exits = []
        monkeypatch.setattr(mlx.package.distributed.os, "_exit", exits.append)
        with collective.guard("the gather of the puzzle-row gradients"):
            collective._timed_out(1)
        assert exits == [1]
        assert ("Error: rank 0: the gather of the puzzle-row gradients across 1 processes timed out after 600 s "
                "(HRM_DIST_TIMEOUT_S)") in capsys.readouterr().err
    finally:
        collective.peers = None
        collective.watchdog.close()
        here.close()
