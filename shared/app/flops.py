"""Model FLOPs of HRM training and evaluation (shared/DESIGN.md sections 2-3), for model FLOP utilisation (MFU).

Only matrix products are counted, 2 FLOPs per multiply-add; elementwise work (norms, RoPE, softmax, SiLU) and
embedding lookups are left out, as in the usual MFU convention. With B rows, T = P + seq_len positions, hidden H,
SwiGLU width I, vocab V:

    block    = 2*B*T*(3*H*H + H*H)             qkv_proj, o_proj
             + 2*B*T*T*H * 2                   attention scores q.k and values p.v (all heads)
             + 2*B*T*(2*I*H + I*H)             gate_up_proj, down_proj
    level(n) = n * block                       a reasoning module of n blocks
    heads    = 2*B*T*H*V + 2*B*H*2             lm_head on every position, q_head on position 0
    segment  = HC*LC * level(L_layers) + HC * level(H_layers) + heads     (H_cycles HC, L_cycles LC)

One training step (one ACT segment) runs, in the forward direction:
    no-gradient cycles  (HC*LC - 1) * level(L_layers) + (HC - 1) * level(H_layers)
    one-step gradient   level(L_layers) + level(H_layers) + heads, times 3 (forward, and a backward of twice that)
    Q-target segment    segment, a full forward without gradient (only when halt_max_steps > 1; its logits are
                        computed as in the reference, though only its q_head output is used)
Evaluation (predict) runs halt_max_steps segments per example.

TRM (shared/TRM.md section 2) has one network of L_layers blocks (a block with mlp_t mixes tokens with a SwiGLU of
width J over the S = P + seq_len positions, 2*B*H*3*J*S, in place of attention). A segment runs
H_cycles * (L_cycles + 1) network calls and the heads; a training step runs the first H_cycles - 1 recursions
without gradient and the last one, L_cycles + 1 calls and the heads, forward and backward (3x); no Q-target segment.
With grad="bptt" (either family) the no-gradient part is differentiated too: the whole segment counts 3x. Each
family's registry entry (core/registry.py) gives its block calls, split into the two parts, and whether it has a
Q-target segment.
"""

from hrm_shared.core.config import ModelConfig
from hrm_shared.core.registry import family_of

# Peak dense bfloat16 tensor-core FLOP/s, keyed by a substring of torch.cuda.get_device_name(); the first key found
# in the name wins, so the more specific names come first.
PEAK_BF16_FLOPS: dict[str, float] = {
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM ("NVIDIA H100 80GB HBM3")
    "H200": 989e12,
    "A100": 312e12,
}


def peak_flops(device_name: str) -> float | None:
    """Peak dense bfloat16 FLOP/s of the GPU named `device_name` (as torch.cuda.get_device_name gives it), or None
    when it is not in PEAK_BF16_FLOPS."""
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in device_name), None)


def block_flops(config: ModelConfig, batch: int) -> int:
    """Forward FLOPs of one transformer block on [batch, T, H]: SwiGLU, and attention (projections, scores,
    values) or, for TRM with mlp_t, the token-mixing SwiGLU."""
    H, I, T = config.hidden_size, config.intermediate_size, config.puzzle_emb_len + config.seq_len
    channels = 2 * batch * T * 3 * I * H
    if getattr(config, "mlp_t", False):
        return channels + 2 * batch * H * 3 * config.token_mixer_size * T
    return channels + 2 * batch * T * 4 * H * H + 2 * 2 * batch * T * T * H


def heads_flops(config: ModelConfig, batch: int) -> int:
    """Forward FLOPs of lm_head (every position) and q_head (position 0)."""
    H, T = config.hidden_size, config.puzzle_emb_len + config.seq_len
    return 2 * batch * T * H * config.vocab_size + 2 * batch * H * 2


def segment_flops(config: ModelConfig, batch: int) -> int:
    """Forward FLOPs of one whole segment: every block call of the family's cycles (HRM: H_cycles * L_cycles L
    updates and H_cycles H updates; TRM: H_cycles * (L_cycles + 1) network calls) and the heads."""
    return sum(family_of(config).block_calls(config)) * block_flops(config, batch) + heads_flops(config, batch)


def train_step_flops(config: ModelConfig, batch: int) -> int:
    """FLOPs of one training step of `batch` rows: the block calls that are not differentiated, the differentiated
    ones with the heads forward and backward (3x their forward; with grad="bptt" the whole segment) and, for a family
    with a Q target (HRM) and halt_max_steps > 1, the Q-target segment's forward."""
    detached, differentiated = family_of(config).block_calls(config)
    block = block_flops(config, batch)
    q_target = segment_flops(config, batch) if config.halt_max_steps > 1 and family_of(config).q_target else 0
    return detached * block + 3 * (differentiated * block + heads_flops(config, batch)) + q_target


def eval_flops(config: ModelConfig, batch: int) -> int:
    """FLOPs of predicting `batch` examples: halt_max_steps whole segments."""
    return config.halt_max_steps * segment_flops(config, batch)
