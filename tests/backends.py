"""Test helpers for the models: one small adapter per backend that speaks numpy at its edges, and the tiny configs,
weights and batches the tests run them on. The `backend` and `both` fixtures (conftest.py) hand out the adapters.

An adapter builds a model from a canonical numpy weight dict, runs segments, blocks, losses and one-segment
gradients, and hands back numpy arrays, so one test body runs against each backend and compares them. It reaches the
backend through the backend contract (core/contract.py): `package`, `layers`, `model` and `losses` are the contract
modules that `import_backend` loads.
"""

from pathlib import Path

import numpy as np
import pytest

from hrm_shared.app.backend import import_backend
from hrm_shared.core.act import ExplorationDraws
from hrm_shared.core.config import HRMConfig, ModelConfig, TRMConfig
from hrm_shared.core.contract import installed
from hrm_shared.core.format import read_metadata
from hrm_shared.core.init import init_weights


def tiny_config(**changes) -> HRMConfig:
    """A CPU-sized model: hidden 64, 2 heads, 1 H layer, 2 L layers, seq 16, P = 1, float32."""
    config = HRMConfig(vocab_size=10, seq_len=16, num_puzzle_identifiers=3, hidden_size=64, num_heads=2,
                       expansion=2.0, H_layers=1, L_layers=2, halt_max_steps=4, puzzle_emb_ndim=64,
                       forward_dtype="float32")
    return config.replace(**changes)


def tiny_trm_config(**changes) -> TRMConfig:
    """tiny_config's sizes for TRM: hidden 64, 2 heads, 2 layers, 2 recursions of 2 latent updates, seq 16, P = 1."""
    config = TRMConfig(vocab_size=10, seq_len=16, num_puzzle_identifiers=3, hidden_size=64, num_heads=2,
                       expansion=2.0, L_layers=2, H_cycles=2, L_cycles=2, halt_max_steps=4, puzzle_emb_ndim=64,
                       puzzle_emb_len=1, forward_dtype="float32")
    return config.replace(**changes)


# The tiny config of each registered family, which the tests parametrised over FAMILIES (the `family` fixture) run.
FAMILY_CONFIGS = {"hrm": tiny_config, "trm": tiny_trm_config}


def family_config(family: str, **changes) -> ModelConfig:
    """The tiny config of model `family` (FAMILY_CONFIGS) with `changes`; a family without one fails the test."""
    if family not in FAMILY_CONFIGS:
        pytest.fail(f"model family {family!r} has no tiny config: add one to FAMILY_CONFIGS in tests/backends.py")
    return FAMILY_CONFIGS[family](**changes)


def data_config(data: Path, family: str = "hrm", **changes) -> ModelConfig:
    """A tiny float32 config of `family` ("hrm" or "trm") for the dataset `data`: hidden 32, 1 head, 1 layer per
    level, halt_max_steps 3 (TRM: 2 recursions of 2 latent updates, P = 1); `changes` on top."""
    m = read_metadata(data, "test")
    shared = dict(vocab_size=m.vocab_size, seq_len=m.seq_len, num_puzzle_identifiers=m.num_puzzle_identifiers,
                  hidden_size=32, num_heads=1, expansion=2.0, L_layers=1, halt_max_steps=3, puzzle_emb_ndim=32,
                  forward_dtype="float32")
    if family == "trm":
        return TRMConfig(**{**shared, "H_cycles": 2, "L_cycles": 2, "puzzle_emb_len": 1, **changes})
    return HRMConfig(**{**shared, "H_layers": 1, **changes})


def tiny_weights(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """init_weights plus a random puzzle table and Q head, so the prefix and the halting decisions matter."""
    weights = init_weights(config, seed)
    rng = np.random.default_rng(seed + 1)
    if "puzzle_emb.weights" in weights:
        weights["puzzle_emb.weights"] = rng.normal(0, 1, weights["puzzle_emb.weights"].shape).astype(np.float32)
    weights["q_head.weight"] = rng.normal(0, config.hidden_size ** -0.5, (2, config.hidden_size)).astype(np.float32)
    weights["q_head.bias"] = np.zeros(2, np.float32)
    return weights


def random_batch(rng: np.random.Generator, config: ModelConfig, batch_size: int = 4) -> dict[str, np.ndarray]:
    """inputs, labels [B, seq_len] int32 (some labels -100) and puzzle_identifiers [B] int32."""
    shape = (batch_size, config.seq_len)
    labels = rng.integers(0, config.vocab_size, shape).astype(np.int32)
    labels[rng.random(shape) < 0.2] = -100
    return {"inputs": rng.integers(0, config.vocab_size, shape).astype(np.int32), "labels": labels,
            "puzzle_identifiers": rng.integers(0, config.num_puzzle_identifiers, batch_size).astype(np.int32)}


class Adapter:
    """What both adapters share: the backend package and its contract modules, building a model, and what is the
    same in both frameworks once a subclass defines `array` (numpy -> tensor) and `numpy` (tensor -> numpy)."""

    name: str

    def __init__(self) -> None:
        self.package = import_backend(self.name)
        self.layers, self.model, self.losses = self.package.layers, self.package.model, self.package.loss

    def build(self, config: ModelConfig, weights: dict[str, np.ndarray]):
        """The model of `config`'s family holding the canonical `weights`."""
        m = self.model.build_model(config)
        self.model.load_canonical(m, weights)
        return m

    def batch(self, batch: dict[str, np.ndarray]) -> dict:
        return {k: self.array(v) for k, v in batch.items()}

    def carry_numpy(self, carry) -> dict[str, np.ndarray]:
        return {"z_H": self.numpy(carry.inner_carry.z_H), "z_L": self.numpy(carry.inner_carry.z_L),
                "steps": self.numpy(carry.steps), "halted": self.numpy(carry.halted),
                **{k: self.numpy(v) for k, v in carry.current_data.items()}}

    def carry_from_numpy(self, m, state: dict[str, np.ndarray]):
        """A carry holding `state` (as carry_numpy writes it), states cast to the model's forward dtype."""
        dtype = m.config.forward_dtype
        inner = self.model.InnerCarry(z_H=self.array(state["z_H"], dtype), z_L=self.array(state["z_L"], dtype))
        data = {k: self.array(state[k]) for k in ("inputs", "labels", "puzzle_identifiers")}
        return self.model.Carry(inner, self.array(state["steps"]), self.array(state["halted"]), data)

    def segments(self, m, batch: dict[str, np.ndarray], count: int) -> dict[str, np.ndarray]:
        """`count` segments of the inner network on a numpy batch from one reset carry, without the ACT wrapper ->
        each segment's argmax predictions [B, count, seq_len], q_halt_logits and q_continue_logits [B, count], and
        the final z_H, z_L [B, T, H]."""
        inner, data = m.inner, self.batch(batch)
        B = len(batch["inputs"])
        carry = inner.reset_carry(self.array(np.ones(B, bool)), inner.empty_carry(B))
        steps = []
        for _ in range(count):
            carry, logits, (q_halt, q_continue) = self.inner_call(m, carry, data)
            steps.append((self.numpy(logits).argmax(-1), self.numpy(q_halt), self.numpy(q_continue)))
        predictions, q_halt, q_continue = (np.stack(s, axis=1) for s in zip(*steps))
        return {"predictions": predictions, "q_halt_logits": q_halt, "q_continue_logits": q_continue,
                "z_H": self.numpy(carry.z_H), "z_L": self.numpy(carry.z_L)}

    def loss(self, outputs: dict[str, np.ndarray], labels, halted, steps, loss_type: str):
        total, metrics = self.losses.act_loss({k: self.array(v) for k, v in outputs.items()}, self.array(labels),
                                            self.array(halted), self.array(steps), loss_type)
        return float(total), {k: float(v) for k, v in metrics.items()}


class TorchAdapter(Adapter):
    name = "torch"

    def __init__(self) -> None:
        import torch

        super().__init__()
        self.torch = torch

    def trainable_shapes(self, m) -> dict[str, tuple[int, ...]]:
        return {k: tuple(p.shape) for k, p in m.inner.named_parameters() if p.requires_grad}

    def array(self, x: np.ndarray, dtype: str | None = None):
        t = self.torch.from_numpy(np.ascontiguousarray(x))
        return t.to(getattr(self.torch, dtype)) if dtype else t

    def numpy(self, x) -> np.ndarray:
        x = x.detach()
        return x.to(self.torch.float32).numpy() if x.is_floating_point() else x.numpy()

    def step(self, m, carry, batch: dict, training: bool, draws: ExplorationDraws | None):
        """One ACT call -> (carry, {output name: numpy})."""
        with self.torch.no_grad():
            carry, outputs = m(carry, batch, training, draws)
        return carry, {k: self.numpy(v) for k, v in outputs.items()}

    def inner_call(self, m, carry, batch: dict):
        """One segment of the inner network -> (carry, logits, (q_halt, q_continue))."""
        with self.torch.no_grad():
            return m.inner(carry, batch)

    def block(self, m, level: str, index: int, x: np.ndarray) -> np.ndarray:
        """Block `index` of `level` on x [B, T, H] (cast to the forward dtype) with the model's RoPE tables."""
        inner = m.inner
        cos_sin = inner.rotary_emb() if m.config.pos_encodings == "rope" else None
        with self.torch.no_grad():
            out = getattr(inner, level).layers[index](self.array(x, m.config.forward_dtype), cos_sin)
        return self.numpy(out)

    def grads(self, m, carry, batch: dict, draws: ExplorationDraws, loss_type: str):
        """Loss and {canonical name: gradient} of one training segment."""
        m.zero_grad()
        new_carry, outputs = m(carry, batch, True, draws)
        total, _ = self.losses.act_loss(outputs, new_carry.current_data["labels"], new_carry.halted,
                                      new_carry.steps, loss_type)
        total.backward()
        return float(total.detach()), {k: self.numpy(p.grad) for k, p in m.inner.named_parameters()}


class MLXAdapter(Adapter):
    name = "mlx"

    def __init__(self) -> None:
        import mlx.core as mx
        import mlx.nn as nn
        from mlx.utils import tree_flatten

        super().__init__()
        self.mx, self.nn, self.tree_flatten = mx, nn, tree_flatten

    def trainable_shapes(self, m) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.tree_flatten(m.inner.trainable_parameters())}

    def array(self, x: np.ndarray, dtype: str | None = None):
        a = self.mx.array(x)
        return a.astype(getattr(self.mx, dtype)) if dtype else a

    def numpy(self, x) -> np.ndarray:
        mx = self.mx
        return np.array(x.astype(mx.float32) if mx.issubdtype(x.dtype, mx.floating) else x)

    def step(self, m, carry, batch: dict, training: bool, draws: ExplorationDraws | None):
        carry, outputs = m(carry, batch, training, draws)
        return carry, {k: self.numpy(v) for k, v in outputs.items()}

    def inner_call(self, m, carry, batch: dict):
        return m.inner(carry, batch)

    def block(self, m, level: str, index: int, x: np.ndarray) -> np.ndarray:
        inner = m.inner
        cos_sin = inner.rotary_emb() if m.config.pos_encodings == "rope" else None
        return self.numpy(getattr(inner, level).layers[index](self.array(x, m.config.forward_dtype), cos_sin))

    def grads(self, m, carry, batch: dict, draws: ExplorationDraws, loss_type: str):
        def loss_fn(model):
            new_carry, outputs = model(carry, batch, True, draws)
            total, _ = self.losses.act_loss(outputs, new_carry.current_data["labels"], new_carry.halted,
                                          new_carry.steps, loss_type)
            return total

        total, grads = self.nn.value_and_grad(m, loss_fn)(m)
        return float(total), {k.removeprefix("inner."): self.numpy(g) for k, g in self.tree_flatten(grads)}


ADAPTERS = {"torch": TorchAdapter, "mlx": MLXAdapter}  # one per name in core/contract.py BACKENDS


def adapter(name: str) -> Adapter:
    """The adapter of backend `name`, or a pytest skip when it is not installed."""
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    return ADAPTERS[name]()
