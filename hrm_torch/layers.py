"""Transformer layers of HRM and TRM in PyTorch (shared/DESIGN.md section 2, shared/TRM.md section 1): post-norm
blocks of RoPE attention (or TRM's token-mixing SwiGLU) and SwiGLU, the reasoning modules they make, and the
puzzle table.

Parameters are float32 and cast to the activation dtype at each use; RMSNorm statistics and RoPE run in float32.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hrm_shared.core.config import ModelConfig

try:
    from flash_attn_interface import flash_attn_func
except ImportError:
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        flash_attn_func = None

CosSin = tuple[torch.Tensor, torch.Tensor]


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) over the last axis, computed in float32, returned in x's dtype; no gain."""
    x32 = x.to(torch.float32)
    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[..., D] -> cat(-x[..., D/2:], x[..., :D/2])."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q, k [B, T, heads, D] by cos, sin [T, D] in float32; results in the inputs' dtype."""
    cos, sin = cos[:, None, :], sin[:, None, :]  # [T, 1, D]
    q32, k32 = q.to(torch.float32), k.to(torch.float32)
    q_rot = q32 * cos + rotate_half(q32) * sin
    k_rot = k32 * cos + rotate_half(k32) * sin
    return q_rot.to(q.dtype), k_rot.to(k.dtype)


class RotaryEmbedding(nn.Module):
    """RoPE tables cos, sin [positions, head_dim] float32, held as non-persistent buffers (never saved).

    Built with torch's own float32 ops on the module's device, as the reference builds them, and rebuilt there when
    the module moves: torch's power differs from numpy's by one ulp on some frequencies, and an imported official
    checkpoint reproduces the reference's numbers bit for bit only from its tables.
    """

    cos_cached: torch.Tensor
    sin_cached: torch.Tensor

    def __init__(self, head_dim: int, positions: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.positions, self.theta = head_dim, positions, theta
        self.register_buffer("cos_cached", torch.empty(0), persistent=False)
        self.register_buffer("sin_cached", torch.empty(0), persistent=False)
        self._build()

    def _build(self) -> None:
        device = self.cos_cached.device
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
                                         / self.head_dim))
        freqs = torch.outer(torch.arange(self.positions, dtype=torch.float32, device=device), inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)  # [positions, head_dim]
        self.cos_cached, self.sin_cached = angles.cos(), angles.sin()

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "RotaryEmbedding":
        super()._apply(fn, recurse)
        self._build()
        return self

    def forward(self) -> CosSin:
        return self.cos_cached, self.sin_cached


class CastedLinear(nn.Module):
    """y = x @ weight.T (+ bias) with `weight` [out, in] float32 cast to x's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    """Rows of `embedding_weight` [num, dim] float32, returned in `dtype`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self.embedding_weight = nn.Parameter(torch.zeros(num_embeddings, embedding_dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight).to(self.dtype)


class Attention(nn.Module):
    """Non-causal multi-head self-attention; `qkv_proj` rows are [Q heads | K heads | V heads]."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = CastedLinear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        B, T, H = x.shape
        qkv = self.qkv_proj(x).view(B, T, 3 * self.num_heads, self.head_dim)  # [B, T, 3*heads, D]
        q, k, v = qkv.chunk(3, dim=2)  # each [B, T, heads, D]
        if cos_sin is not None:
            q, k = apply_rotary_pos_emb(q, k, *cos_sin)
        if flash_attn_func is not None and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
            out = flash_attn_func(q, k, v, causal=False)
            out = out[0] if isinstance(out, tuple) else out  # flash-attn 3 also returns the log-sum-exp
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            out = out.transpose(1, 2)  # [B, heads, T, D] -> [B, T, heads, D]
        return self.o_proj(out.reshape(B, T, H))  # [B, T, H]


class SwiGLU(nn.Module):
    """down_proj(silu(gate) * up) with `gate_up_proj` [2*inter, H] split into gate (first half) and up."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up_proj = CastedLinear(hidden_size, 2 * intermediate_size, bias=False)
        self.down_proj = CastedLinear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


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

    def forward(self, x: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        if self.mixes_tokens:
            u = x.transpose(1, 2)  # [B, T, H] -> [B, H, T]
            x = rms_norm(u + self.mlp_t(u), self.eps).transpose(1, 2)  # [B, H, T] -> [B, T, H]
        else:
            x = rms_norm(x + self.self_attn(x, cos_sin), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class PuzzleEmbedding(nn.Module):
    """The puzzle table `weights` [num_puzzle_identifiers, puzzle_emb_ndim]: a buffer, trained by sparse SignSGD."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self.register_buffer("weights", torch.zeros(num_embeddings, embedding_dim), persistent=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weights[ids].to(self.dtype)


class ReasoningModule(nn.Module):
    """One level (HRM's H or L, TRM's single network): add the injection, then run the blocks in order."""

    def __init__(self, config: ModelConfig, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(config) for _ in range(num_layers)])

    def forward(self, h: torch.Tensor, injection: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        h = h + injection
        for layer in self.layers:
            h = layer(h, cos_sin)
        return h
