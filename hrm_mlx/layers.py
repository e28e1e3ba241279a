"""Transformer layers of HRM and TRM in MLX (shared/DESIGN.md section 2, shared/TRM.md section 1): post-norm blocks
of RoPE attention (or TRM's token-mixing SwiGLU) and SwiGLU, the reasoning modules they make, and the puzzle table.

Parameters are float32 and cast to the activation dtype at each use; RMSNorm statistics and RoPE run in float32.
Both run as MLX's fused kernels (mx.fast.rms_norm, mx.fast.rope), which compute the same thing (tests/test_mlx_fast.py).
"""

import mlx.core as mx
import mlx.nn as nn

from hrm_shared.core.config import ModelConfig

CosSin = tuple[mx.array, mx.array]


def rms_norm(x: mx.array, eps: float) -> mx.array:
    """x * rsqrt(mean(x^2) + eps) over the last axis, computed in float32, returned in x's dtype; no gain."""
    return mx.fast.rms_norm(x, None, eps)


def rotate_half(x: mx.array) -> mx.array:
    """[..., D] -> cat(-x[..., D/2:], x[..., :D/2])."""
    x1, x2 = mx.split(x, 2, axis=-1)
    return mx.concatenate((-x2, x1), axis=-1)


def apply_rotary_pos_emb(q: mx.array, k: mx.array, cos: mx.array,
                         sin: mx.array) -> tuple[mx.array, mx.array]:
    """Rotate q, k [B, T, heads, D] by cos, sin [T, D] in float32; results in the inputs' dtype."""
    cos, sin = cos[:, None, :], sin[:, None, :]  # [T, 1, D]
    q32, k32 = q.astype(mx.float32), k.astype(mx.float32)
    q_rot = q32 * cos + rotate_half(q32) * sin
    k_rot = k32 * cos + rotate_half(k32) * sin
    return q_rot.astype(q.dtype), k_rot.astype(k.dtype)


class _Tables(tuple):
    """RotaryEmbedding's (cos, sin) [positions, head_dim] float32, with `freqs` [head_dim / 2] float32, the
    reference's 1 / inv_freq, for mx.fast.rope: from the same float32 inverse frequencies its angles are the
    tables' to float32 rounding."""

    freqs: mx.array

    def __new__(cls, cos: mx.array, sin: mx.array, freqs: mx.array) -> "_Tables":
        tables = super().__new__(cls, (cos, sin))
        tables.freqs = freqs
        return tables


class RotaryEmbedding(nn.Module):
    """RoPE tables cos, sin [positions, head_dim] float32, held under `_` names (not parameters, never saved).

    Built with MLX's float32 ops by the reference's formula: within float32 rounding of torch's tables
    (tests/test_model_components.py).
    """

    def __init__(self, head_dim: int, positions: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim))
        freqs = mx.outer(mx.arange(positions, dtype=mx.float32), inv_freq)  # [positions, head_dim / 2]
        angles = mx.concatenate((freqs, freqs), axis=-1)  # [positions, head_dim]
        self._cos_cached, self._sin_cached = mx.cos(angles), mx.sin(angles)
        self._freqs = 1.0 / inv_freq
        mx.eval(self._cos_cached, self._sin_cached, self._freqs)  # constants of a compiled step, not graphs

    def __call__(self) -> CosSin:
        return _Tables(self._cos_cached, self._sin_cached, self._freqs)


def _rope(x: mx.array, freqs: mx.array) -> mx.array:
    """x [B, heads, T, D] rotated at positions 0..T-1 (rotate-half layout) by mx.fast.rope in float32; x's dtype."""
    rotated = mx.fast.rope(x.astype(mx.float32), x.shape[-1], traditional=False, base=None, scale=1.0, offset=0,
                           freqs=freqs)
    return rotated.astype(x.dtype)


class CastedLinear(nn.Module):
    """y = x @ weight.T (+ bias) with `weight` [out, in] float32 cast to x's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight = mx.zeros((out_features, in_features))
        if bias:
            self.bias = mx.zeros((out_features,))

    def __call__(self, x: mx.array) -> mx.array:
        if "bias" in self:
            return mx.addmm(self.bias.astype(x.dtype), x, self.weight.astype(x.dtype).T)
        return x @ self.weight.astype(x.dtype).T


class CastedEmbedding(nn.Module):
    """Rows of `embedding_weight` [num, dim] float32, returned in `dtype`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: mx.Dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self.embedding_weight = mx.zeros((num_embeddings, embedding_dim))

    def __call__(self, ids: mx.array) -> mx.array:
        return self.embedding_weight[ids].astype(self.dtype)


class Attention(nn.Module):
    """Non-causal multi-head self-attention; `qkv_proj` rows are [Q heads | K heads | V heads]."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = CastedLinear(hidden_size, hidden_size, bias=False)

    def __call__(self, x: mx.array, cos_sin: CosSin | None) -> mx.array:
        B, T, H = x.shape
        qkv = self.qkv_proj(x).reshape(B, T, 3 * self.num_heads, self.head_dim)  # [B, T, 3*heads, D]
        q, k, v = (t.transpose(0, 2, 1, 3) for t in mx.split(qkv, 3, axis=2))  # each [B, heads, T, D]
        if cos_sin is not None:
            q, k = _rope(q, cos_sin.freqs), _rope(k, cos_sin.freqs)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.head_dim ** -0.5)
        out = out.transpose(0, 2, 1, 3)  # [B, heads, T, D] -> [B, T, heads, D]
        return self.o_proj(out.reshape(B, T, H))  # [B, T, H]


class SwiGLU(nn.Module):
    """down_proj(silu(gate) * up) with `gate_up_proj` [2*inter, H] split into gate (first half) and up."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up_proj = CastedLinear(hidden_size, 2 * intermediate_size, bias=False)
        self.down_proj = CastedLinear(intermediate_size, hidden_size, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        gate, up = mx.split(self.gate_up_proj(x), 2, axis=-1)
        # silu in float32, rounded once, as torch does for bfloat16.
        return self.down_proj(nn.silu(gate.astype(mx.float32)).astype(up.dtype) * up)


class Block(nn.Module):
    """Post-norm block on x [B, T, H]: x = norm(x + attn(x)); x = norm(x + mlp(x)), norms over H.

    With config.mlp_t (shared/TRM.md section 1) the attention is `mlp_t`, a SwiGLU across the T = P + seq_len
    positions applied per channel, and that residual is normalised over the position axis T.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.eps = config.rms_norm_eps
        self.mixes_tokens = getattr(config, "mlp_t", False)  # only TRMConfig has mlp_t
        if self.mixes_tokens:
            self.mlp_t = SwiGLU(config.puzzle_emb_len + config.seq_len, config.token_mixer_size)
        else:
            self.self_attn = Attention(config.hidden_size, config.num_heads)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def __call__(self, x: mx.array, cos_sin: CosSin | None) -> mx.array:
        if self.mixes_tokens:
            u = x.transpose(0, 2, 1)  # [B, T, H] -> [B, H, T]
            x = rms_norm(u + self.mlp_t(u), self.eps).transpose(0, 2, 1)  # [B, H, T] -> [B, T, H]
        else:
            x = rms_norm(x + self.self_attn(x, cos_sin), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class PuzzleEmbedding(nn.Module):
    """The puzzle table `weights` [num_puzzle_identifiers, puzzle_emb_ndim]: frozen, trained by sparse SignSGD."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: mx.Dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self.weights = mx.zeros((num_embeddings, embedding_dim))
        self.freeze()

    def __call__(self, ids: mx.array) -> mx.array:
        return self.weights[ids].astype(self.dtype)


class ReasoningModule(nn.Module):
    """One level (HRM's H or L, TRM's single network): add the injection, then run the blocks in order."""

    def __init__(self, config: ModelConfig, num_layers: int) -> None:
        super().__init__()
        self.layers = [Block(config) for _ in range(num_layers)]

    def __call__(self, h: mx.array, injection: mx.array, cos_sin: CosSin | None) -> mx.array:
        h = h + injection
        for layer in self.layers:
            h = layer(h, cos_sin)
        return h
