"""CUDA checks of the torch backend (skipped without an NVIDIA GPU): bf16 on the GPU against the float32 CPU
reference per segment, SDPA's fused kernels against its math kernel, and torch.compile against eager training.

Tolerances: bf16 has an 8-bit mantissa, so per-segment logits are compared relative to their scale (<= 5e-2) and
by argmax agreement (>= 97% of tokens); float32 paths agree to 1e-4.
"""

import numpy as np
import pytest

from backends import tiny_config, tiny_weights
from hrm_shared.app.backend import import_backend
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.config import TrainConfig

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")]


def make_model(config, device):
    models = import_backend("torch").model
    model = models.build_model(config)
    models.load_canonical(model, tiny_weights(config))
    return model.to(device)


def random_batch(rng, config, rows=32):
    return {"inputs": rng.integers(1, config.vocab_size, (rows, config.seq_len)).astype(np.int32),
            "labels": rng.integers(1, config.vocab_size, (rows, config.seq_len)).astype(np.int32),
            "puzzle_identifiers": rng.integers(0, config.num_puzzle_identifiers, rows).astype(np.int32)}


def segments(model, batch, device, count=4):
    """Logits [B, T, V] float32 of `count` eval segments from a fresh carry, as numpy."""
    from hrm_torch.device import to_backend

    batch = to_backend(batch, device)
    out = []
    with torch.inference_mode():
        carry = model.initial_carry(batch)
        for _ in range(count):
            carry, outputs = model(carry, batch, training=False)
            out.append(outputs["logits"].float().cpu().numpy())
    return out


def test_bf16_on_the_gpu_follows_the_float32_cpu_reference():
    config = tiny_config(seq_len=81, vocab_size=11, hidden_size=128, num_heads=2)
    batch = random_batch(np.random.default_rng(0), config)
    reference = segments(make_model(config, "cpu"), batch, "cpu")
    gpu = segments(make_model(config.replace(forward_dtype="bfloat16"), "cuda"), batch, "cuda")
    for index, (ref, got) in enumerate(zip(reference, gpu)):
        scale = np.abs(ref).max()
        assert np.abs(got - ref).max() <= 5e-2 * scale, f"segment {index}: bf16 drifted from the float32 reference"
        agreement = (got.argmax(-1) == ref.argmax(-1)).mean()
        assert agreement >= 0.97, f"segment {index}: argmax agrees on {agreement:.3f} of tokens"


def test_fused_sdpa_matches_the_math_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    config = tiny_config(seq_len=81, vocab_size=11, hidden_size=128, num_heads=2, forward_dtype="bfloat16")
    model = make_model(config, "cuda")
    batch = random_batch(np.random.default_rng(1), config)
    fused = segments(model, batch, "cuda")
    with sdpa_kernel(SDPBackend.MATH):
        math = segments(model, batch, "cuda")
    for index, (a, b) in enumerate(zip(fused, math)):
        assert np.abs(a - b).max() <= 5e-2 * np.abs(b).max(), f"segment {index}: fused and math SDPA differ"


def test_compiled_training_matches_eager():
    from hrm_torch.train import Trainer

    config = tiny_config(vocab_size=7, seq_len=8, num_puzzle_identifiers=3, hidden_size=64)
    train = TrainConfig(global_batch_size=8, lr=1e-3, lr_warmup_steps=1, puzzle_emb_lr=1e-2)
    losses = {}
    for compile_step in (False, True):
        trainer = Trainer(make_model(config, "cuda"), train, compile=compile_step)
        rng = np.random.default_rng(2)
        losses[compile_step] = [
            trainer.step(random_batch(rng, config, 8), draw_exploration(rng, 8, config.halt_max_steps, 0.1),
                         1e-3, 1e-2)["loss"] for _ in range(5)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4, atol=1e-5)
