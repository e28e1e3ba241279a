"""TRM test helpers: an independent float64 numpy reference of TRM, its configs and weights, and one training
segment's gradients (parameters and puzzle rows) from each backend.

The reference is written from shared/TRM.md sections 1-3 and shared/DESIGN.md section 2, not from either backend.
Parameters are a dict of canonical names, plus "puzzle_rows" [B, ndim]: the puzzle-table rows of the segment's ids,
the tensor sparse SignSGD differentiates.
"""

import math

import numpy as np

from backends import random_batch, tiny_weights
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.config import TRMConfig

# Named changes to the smallest config, each a case shared/TRM.md section 6 asks to test.
VARIANTS = {
    "attention": {},
    "mlp_t": dict(mlp_t=True, pos_encodings="none"),
    "learned": dict(pos_encodings="learned", puzzle_emb_ndim=100),
    "H_cycles=1": dict(H_cycles=1),
    "no puzzle": dict(puzzle_emb_ndim=0, puzzle_emb_len=0),
}


def trm_config(**changes) -> TRMConfig:
    """The smallest CPU config of shared/TRM.md section 6: hidden 64, 2 heads, expansion 4, 2 layers, T = n = 2,
    halt_max_steps 3, puzzle_emb_ndim 64, P = 2, seq_len 16, vocab 6, 3 puzzle ids, float32."""
    config = TRMConfig(vocab_size=6, seq_len=16, num_puzzle_identifiers=3, hidden_size=64, num_heads=2, expansion=4.0,
                       L_layers=2, H_cycles=2, L_cycles=2, halt_max_steps=3, puzzle_emb_ndim=64, puzzle_emb_len=2,
                       forward_dtype="float32")
    return config.replace(**changes)


def variant(name: str) -> TRMConfig:
    """The smallest config with the changes VARIANTS[name]."""
    return trm_config(**VARIANTS[name])


def trm_weights(config: TRMConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical float32 weights: init_weights with a random puzzle table and Q head (halting and prefix matter)."""
    return tiny_weights(config, seed)


def build(adapter, config: TRMConfig, weights: dict[str, np.ndarray]):
    """The backend's model of `config`'s family (a TRM) holding `weights`."""
    model = adapter.model.build_model(config)
    adapter.model.load_canonical(model, weights)
    return model


# ----------------------------------------------------------------------------------------------- numpy reference

def mm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T without BLAS: OpenBLAS's spinning threads would starve torch's and MLX's on a small machine."""
    return np.einsum("...i,oi->...o", x, w)


def rms_norm(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Over the last axis, no gain."""
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)


def swiglu(w: dict, prefix: str, x: np.ndarray) -> np.ndarray:
    """down(silu(gate) * up) over the last axis of x, with `{prefix}gate_up_proj.weight` = [gate; up]."""
    gate, up = np.split(mm(x, w[prefix + "gate_up_proj.weight"]), 2, axis=-1)
    return mm(gate / (1 + np.exp(-gate)) * up, w[prefix + "down_proj.weight"])


def rope(x: np.ndarray, theta: float) -> np.ndarray:
    """x [B, T, heads, D]: rotate each pair (i, i + D/2) by the angle position * theta^(-2i/D)."""
    T, D = x.shape[1], x.shape[-1]
    angle = np.arange(T)[:, None] * theta ** (-np.arange(0, D, 2) / D)  # [T, D/2]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    a, b = x[..., :D // 2], x[..., D // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def attention(w: dict, prefix: str, x: np.ndarray, config: TRMConfig) -> np.ndarray:
    """Non-causal multi-head attention on x [B, T, H], RoPE on q and k when config.pos_encodings is rope."""
    B, T, H = x.shape
    heads, D = config.num_heads, config.head_dim
    qkv = mm(x, w[prefix + "qkv_proj.weight"]).reshape(B, T, 3, heads, D)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if config.pos_encodings == "rope":
        q, k = rope(q, config.rope_theta), rope(k, config.rope_theta)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return mm(np.einsum("bhqk,bkhd->bqhd", p, v).reshape(B, T, H), w[prefix + "o_proj.weight"])


def block(w: dict, prefix: str, x: np.ndarray, config: TRMConfig) -> np.ndarray:
    """One post-norm block on x [B, T, H]: attention, or with mlp_t the SwiGLU across positions normalised over T."""
    if config.mlp_t:
        u = x.transpose(0, 2, 1)  # [B, H, T]
        x = rms_norm(u + swiglu(w, prefix + "mlp_t.", u)).transpose(0, 2, 1)
    else:
        x = rms_norm(x + attention(w, prefix + "self_attn.", x, config))
    return rms_norm(x + swiglu(w, prefix + "mlp.", x))


def net(w: dict, config: TRMConfig, h: np.ndarray, injection: np.ndarray) -> np.ndarray:
    """The one network: its blocks on h + injection."""
    h = h + injection
    for i in range(config.L_layers):
        h = block(w, f"L_level.layers.{i}.", h, config)
    return h


def input_embeddings(w: dict, config: TRMConfig, inputs: np.ndarray) -> np.ndarray:
    """sqrt(H) * [P prefix tokens holding w["puzzle_rows"] zero-padded; token embeddings] (+ learned positions)."""
    B, H, P = len(inputs), config.hidden_size, config.puzzle_emb_len
    x = w["embed_tokens.embedding_weight"][inputs]
    if P:
        prefix = np.zeros((B, P * H))
        prefix[:, :config.puzzle_emb_ndim] = w["puzzle_rows"]
        x = np.concatenate([prefix.reshape(B, P, H), x], axis=1)
    if config.pos_encodings == "learned":
        x = 0.707106781 * (x + w["embed_pos.embedding_weight"])
    return math.sqrt(H) * x


def segment(w: dict, config: TRMConfig, y: np.ndarray, z: np.ndarray, inputs: np.ndarray,
            frozen: dict | None = None, free_calls: int | None = None) -> tuple[np.ndarray, ...]:
    """One TRM segment (shared/TRM.md section 2) from y, z [B, T, H] -> (y, z, logits, q_halt, q_continue).

    For finite differences of a truncated gradient: with `frozen`, every net call but the last `free_calls` (and the
    input embedding they take) uses the parameters `frozen`, so only the last calls and the heads see `w`.
    """
    first_free = 0 if frozen is None else config.H_cycles * (config.L_cycles + 1) - free_calls
    x_free = input_embeddings(w, config, inputs)
    x_frozen = x_free if frozen is None else input_embeddings(frozen, config, inputs)
    call = 0
    for _ in range(config.H_cycles):
        for j in range(config.L_cycles + 1):
            p, x = (w, x_free) if call >= first_free else (frozen, x_frozen)
            if j < config.L_cycles:
                z = net(p, config, z, y + x)
            else:
                y = net(p, config, y, z)
            call += 1
    q = mm(y[:, 0], w["q_head.weight"]) + w["q_head.bias"]
    return y, z, mm(y, w["lm_head.weight"])[:, config.puzzle_emb_len:], q[:, 0], q[:, 1]


def loss(logits: np.ndarray, q_halt: np.ndarray, labels: np.ndarray) -> float:
    """TRM's ACT loss over all rows (shared/TRM.md section 3): sum of per-row mean stablemax losses + 0.5 * BCE(q_halt,
    all supervised tokens argmax-correct)."""
    mask = labels != -100
    s = np.where(logits < 0, 1 / (1 - np.minimum(logits, 0)), logits + 1)
    logp = np.log(s / s.sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, np.where(mask, labels, 0)[..., None], -1)[..., 0]
    lm = (-picked * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
    correct = (mask & (logits.argmax(-1) == labels)).sum(-1) == mask.sum(-1)
    bce = np.maximum(q_halt, 0) - q_halt * correct + np.log1p(np.exp(-np.abs(q_halt)))
    return float(lm.sum() + 0.5 * bce.sum())


def act_inputs(weights: dict[str, np.ndarray], config: TRMConfig, state: dict[str, np.ndarray],
               batch: dict[str, np.ndarray]) -> tuple[dict, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """What the ACT wrapper feeds one segment from a carry `state` (as an adapter's carry_numpy writes it) and a
    batch: (float64 parameters with "puzzle_rows", y, z [B, T, H], data). Halted rows restart from H_init, L_init on
    their batch row."""
    halted = state["halted"]
    data = {k: np.where(halted.reshape(-1, *[1] * (v.ndim - 1)), v, state[k]) for k, v in batch.items()}
    params = {k: v.astype(np.float64) for k, v in weights.items()}
    if config.puzzle_emb_ndim:
        params["puzzle_rows"] = params["puzzle_emb.weights"][data["puzzle_identifiers"]]
    reset = halted[:, None, None]
    y = np.where(reset, params["H_init"], state["z_H"].astype(np.float64))
    z = np.where(reset, params["L_init"], state["z_L"].astype(np.float64))
    return params, y, z, data


def directional_derivative(params: dict, config: TRMConfig, y: np.ndarray, z: np.ndarray, data: dict,
                           name: str, direction: np.ndarray, free_calls: int, eps: float = 1e-5) -> float:
    """Central finite difference of the segment loss along `direction` in parameter `name`, differentiating only the
    last `free_calls` net calls (the earlier ones see the unperturbed parameters)."""
    def at(step: float) -> float:
        moved = {**params, name: params[name] + step * direction}
        _, _, logits, q_halt, _ = segment(moved, config, y, z, data["inputs"], frozen=params, free_calls=free_calls)
        return loss(logits, q_halt, data["labels"])

    return (at(eps) - at(-eps)) / (2 * eps)


# ------------------------------------------------------------------------------- one training segment's gradients

def torch_segment_gradients(adapter, model, state: dict, batch: dict, draws) -> tuple[float, dict[str, np.ndarray]]:
    """torch: the loss and {canonical name or "puzzle_rows": gradient} of one training call, the puzzle rows passed
    as a leaf tensor as a train step does."""
    carry, batch = adapter.carry_from_numpy(model, state), adapter.batch(batch)
    model.zero_grad()
    rows = None
    if model.config.puzzle_emb_ndim:
        ids = model.segment_data(carry, batch)["puzzle_identifiers"]
        rows = model.inner.puzzle_emb.weights[ids].requires_grad_()
    carry, outputs = model(carry, batch, True, draws, puzzle_rows=rows)
    total, _ = adapter.losses.act_loss(outputs, carry.current_data["labels"], carry.halted, carry.steps,
                                       model.config.loss_type)
    total.backward()
    grads = {k: adapter.numpy(p.grad) for k, p in model.inner.named_parameters()}
    if rows is not None:
        grads["puzzle_rows"] = adapter.numpy(rows.grad)
    return float(total.detach()), grads


def mlx_segment_gradients(adapter, model, state: dict, batch: dict, draws) -> tuple[float, dict[str, np.ndarray]]:
    """MLX: the same, by value_and_grad over (trainable parameters, puzzle rows) as a train step does."""
    mx = adapter.mx
    carry, batch = adapter.carry_from_numpy(model, state), adapter.batch(batch)

    def loss_fn(params, rows):
        model.update(params)
        new, outputs = model(carry, batch, True, draws, puzzle_rows=rows)
        return adapter.losses.act_loss(outputs, new.current_data["labels"], new.halted, new.steps,
                                       model.config.loss_type)[0]

    params = model.trainable_parameters()
    if model.config.puzzle_emb_ndim:
        rows = model.inner.puzzle_emb.weights[model.segment_data(carry, batch)["puzzle_identifiers"]]
        total, (grads, row_grads) = mx.value_and_grad(loss_fn, argnums=(0, 1))(params, rows)
        extra = {"puzzle_rows": adapter.numpy(row_grads)}
    else:
        total, grads = mx.value_and_grad(lambda p: loss_fn(p, None))(params)
        extra = {}
    named = {k.removeprefix("inner."): adapter.numpy(g) for k, g in adapter.tree_flatten(grads)}
    return float(total), {**named, **extra}


SEGMENT_GRADIENTS = {"torch": torch_segment_gradients, "mlx": mlx_segment_gradients}


def segment_gradients(adapter, model, state: dict, batch: dict, draws) -> tuple[float, dict[str, np.ndarray]]:
    """The loss (not divided by the batch size) and gradients of one training call of `model` from the carry
    `state` on `batch` with exploration `draws`, in numpy."""
    return SEGMENT_GRADIENTS[adapter.name](adapter, model, state, batch, draws)


def second_call_gradients(adapter, config: TRMConfig
                          ) -> tuple[float, dict[str, np.ndarray], tuple, np.random.Generator]:
    """A model of `config` with trm_weights, a first training call on a random batch, then (loss, gradients) of the
    second call from its carry with rows 0 and 2 restarting (segment_gradients), the numpy inputs of that call
    (act_inputs: params, y, z, data) and the generator the batches came from, for further draws."""
    weights = trm_weights(config)
    model = build(adapter, config, weights)
    rng = np.random.default_rng(5)
    batches = [random_batch(rng, config), random_batch(rng, config)]
    draws = [draw_exploration(rng, 4, config.halt_max_steps, 0.5) for _ in range(2)]
    first = adapter.batch(batches[0])
    carry, _ = adapter.step(model, model.initial_carry(first), first, True, draws[0])
    state = {**adapter.carry_numpy(carry), "halted": np.array([True, False, True, False])}
    total, grads = segment_gradients(adapter, model, state, batches[1], draws[1])
    return total, grads, act_inputs(weights, config, state, batches[1]), rng
