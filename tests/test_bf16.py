"""bfloat16 forward with float32 master weights on the CPU, in both backends: the code path the GPU trains with (every
preset's forward_dtype), against the same model in float32.

Per segment, from the float32 run's carry at that segment (so errors do not compound over segments), the bfloat16
model's logits stay within 6e-2 of float32 in relative (Frobenius) norm and share the argmax on >= 94% of tokens, and
q_halt within 0.15 (measured on the development machine: at most 1.7e-2 with attention, 4.1e-2 with mlp_t; 96.6%;
0.07). Training 8 steps from the same weights, batches and exploration draws: losses within 2% (measured 0.7%), the
parameters and the AdamATan2 moments float32 throughout, the carry bfloat16.
"""

import numpy as np
import pytest

import trm_reference as ref
from backends import random_batch, tiny_config, tiny_weights
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.config import TrainConfig

MODELS = {"hrm": lambda: tiny_config(vocab_size=11, seq_len=81),
          "trm": lambda: ref.variant("attention").replace(vocab_size=11, seq_len=81, halt_max_steps=5),
          "trm-mlp_t": lambda: ref.variant("mlp_t").replace(vocab_size=11, seq_len=81, halt_max_steps=5)}


def _weights(config):
    return tiny_weights(config) if type(config).__name__ == "HRMConfig" else ref.trm_weights(config)


@pytest.mark.parametrize("name", MODELS)
def test_each_bfloat16_segment_follows_float32(backend, name):
    config = MODELS[name]()
    weights = _weights(config)
    full, half = backend.build(config, weights), backend.build(config.replace(forward_dtype="bfloat16"), weights)
    batch = backend.batch(random_batch(np.random.default_rng(0), config, 8))
    carry = full.initial_carry(batch)
    for segment in range(config.halt_max_steps):
        start = backend.carry_from_numpy(half, backend.carry_numpy(carry))
        _, got = backend.step(half, start, batch, False, None)
        carry, expected = backend.step(full, carry, batch, False, None)
        assert str(start.inner_carry.z_H.dtype).endswith("bfloat16")
        ref_logits, logits = expected["logits"], got["logits"]
        error = np.linalg.norm(logits - ref_logits) / np.linalg.norm(ref_logits)
        agreement = (logits.argmax(-1) == ref_logits.argmax(-1)).mean()
        assert error <= 6e-2 and agreement >= 0.94, f"segment {segment}: error {error:.3g}, argmax {agreement:.3f}"
        assert np.abs(got["q_halt_logits"] - expected["q_halt_logits"]).max() <= 0.15, f"segment {segment}: q_halt"


def _dtypes(backend, trainer) -> set[str]:
    """The dtype names of the model's parameters and the AdamATan2 moments."""
    state = trainer.adam.state_dict()
    moments = [v for k, v in state.items() if k != "step"]
    if backend.name == "torch":
        tensors = [*trainer.model.parameters(), *moments]
    else:
        tensors = [v for _, v in backend.tree_flatten(trainer.model.parameters())] + moments
    return {str(t.dtype).rpartition(".")[2] for t in tensors}


@pytest.mark.parametrize("name", ["hrm", "trm"])
def test_bfloat16_training_keeps_float32_masters_and_follows_float32(backend, name):
    config = MODELS[name]().replace(seq_len=16, halt_max_steps=3)
    weights = _weights(config)
    train = TrainConfig(global_batch_size=16, lr=1e-3, lr_warmup_steps=1, puzzle_emb_lr=1e-2)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        trainer = backend.package.train.Trainer(backend.build(config.replace(forward_dtype=dtype), weights), train)
        rng = np.random.default_rng(0)
        losses[dtype] = [trainer.step(random_batch(rng, config, 16), draw_exploration(rng, 16, 3, 0.5), 1e-3,
                                      1e-2)["loss"] for _ in range(8)]
        assert _dtypes(backend, trainer) == {"float32"}, f"{dtype}: a master weight or moment is not float32"
        assert str(trainer.carry.inner_carry.z_H.dtype).endswith(dtype)
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)
    assert losses["float32"][-1] < losses["float32"][0]
