"""GPU checks of the MLX backend (skipped without MLX's GPU: Metal, or CUDA with mlx[cuda]; `pytest -m metal`,
scripts/mac_check.sh and scripts/gpu_check.sh): bf16 on the GPU against the float32 CPU reference per segment, and
compiled training on the GPU against eager training on the CPU.

Tolerances as tests/test_bf16.py and tests/test_cuda.py: per segment, from the CPU run's carry, bf16 logits within
6e-2 in relative norm with >= 94% argmax agreement; float32 training losses within 1e-4 (relative).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from backends import adapter, random_batch, tiny_config, tiny_weights
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.config import TrainConfig

mx = pytest.importorskip("mlx.core")

# MLX's GPU: Metal on Apple silicon, or CUDA with MLX's CUDA build (scripts/gpu_check.sh), which shares Metal's rules.
pytestmark = [pytest.mark.metal,
              pytest.mark.skipif(not mx.is_available(mx.gpu), reason="needs MLX's GPU (Metal, or CUDA with mlx[cuda])")]


@contextmanager
def on(device) -> Iterator[None]:
    """MLX's default device is `device` (mx.cpu, mx.gpu) within the block: the operations made there run on it."""
    previous = mx.default_device()
    mx.set_default_device(device)
    try:
        yield
    finally:
        mx.set_default_device(previous)


def test_bf16_on_metal_follows_the_float32_cpu_reference():
    mlx = adapter("mlx")
    config = tiny_config(seq_len=81, vocab_size=11, hidden_size=128, num_heads=2)
    weights = tiny_weights(config)
    full, half = mlx.build(config, weights), mlx.build(config.replace(forward_dtype="bfloat16"), weights)
    batch = mlx.batch(random_batch(np.random.default_rng(0), config, 32))
    carry = full.initial_carry(batch)
    for segment in range(config.halt_max_steps):
        with on(mx.gpu):
            _, got = mlx.step(half, mlx.carry_from_numpy(half, mlx.carry_numpy(carry)), batch, False, None)
        with on(mx.cpu):
            carry, expected = mlx.step(full, carry, batch, False, None)
        ref, logits = expected["logits"], got["logits"]
        error = np.linalg.norm(logits - ref) / np.linalg.norm(ref)
        agreement = (logits.argmax(-1) == ref.argmax(-1)).mean()
        assert error <= 6e-2 and agreement >= 0.94, f"segment {segment}: error {error:.3g}, argmax {agreement:.3f}"


def test_compiled_training_on_metal_matches_eager_on_the_cpu():
    mlx = adapter("mlx")
    config = tiny_config(vocab_size=7, seq_len=8, num_puzzle_identifiers=3, hidden_size=64)
    train = TrainConfig(global_batch_size=8, lr=1e-3, lr_warmup_steps=1, puzzle_emb_lr=1e-2)
    losses = {}
    for device, compile_step in ((mx.cpu, False), (mx.gpu, True)):
        with on(device):
            trainer = mlx.package.train.Trainer(mlx.build(config, tiny_weights(config)), train, compile_step)
            rng = np.random.default_rng(2)
            losses[compile_step] = [
                trainer.step(random_batch(rng, config, 8), draw_exploration(rng, 8, config.halt_max_steps, 0.1),
                             1e-3, 1e-2)["loss"] for _ in range(5)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4, atol=1e-5)
