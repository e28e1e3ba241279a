"""The canonical parameter names and shapes of each model family: those of the official checkpoints without their
`_orig_mod.` / `model.inner.` prefixes (shared/DESIGN.md section 2, "Canonical names"; shared/TRM.md section 5).
Both backends' module paths equal these names, so loading and conversion never rename a tensor.
"""

from hrm_shared.core.config import HRMConfig, ModelConfig, TRMConfig
from hrm_shared.core.errors import HRMError


def common_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors every family holds: initial states, token table, heads, puzzle table, learned positions."""
    if config.vocab_size < 1 or config.seq_len < 1:
        raise HRMError(f"vocab_size={config.vocab_size} and seq_len={config.seq_len} must be at least 1: "
                       f"take them from the dataset (its dataset.json)")
    H, V = config.hidden_size, config.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"H_init": (H,), "L_init": (H,), "embed_tokens.embedding_weight": (V, H),
                                          "lm_head.weight": (V, H), "q_head.weight": (2, H), "q_head.bias": (2,)}
    if config.puzzle_emb_ndim > 0:
        shapes["puzzle_emb.weights"] = (config.num_puzzle_identifiers, config.puzzle_emb_ndim)
    if config.pos_encodings == "learned":
        shapes["embed_pos.embedding_weight"] = (config.puzzle_emb_len + config.seq_len, H)
    return shapes


def block_shapes(config: ModelConfig, prefix: str, token_mixer: bool = False) -> dict[str, tuple[int, ...]]:
    """One block's tensors under `prefix`: attention (or, with `token_mixer`, mlp_t over the positions) and SwiGLU."""
    H, I = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]]
    if token_mixer:
        S, J = config.puzzle_emb_len + config.seq_len, config.token_mixer_size
        shapes = {prefix + "mlp_t.gate_up_proj.weight": (2 * J, S), prefix + "mlp_t.down_proj.weight": (S, J)}
    else:
        shapes = {prefix + "self_attn.qkv_proj.weight": (3 * H, H), prefix + "self_attn.o_proj.weight": (H, H)}
    shapes[prefix + "mlp.gate_up_proj.weight"] = (2 * I, H)
    shapes[prefix + "mlp.down_proj.weight"] = (H, I)
    return shapes


def hrm_shapes(config: HRMConfig) -> dict[str, tuple[int, ...]]:
    """{canonical name: shape} of every HRM tensor (trainable or not); rotary tables are never saved."""
    shapes = common_shapes(config)
    for level, n_layers in (("H_level", config.H_layers), ("L_level", config.L_layers)):
        for i in range(n_layers):
            shapes.update(block_shapes(config, f"{level}.layers.{i}."))
    return shapes


def trm_shapes(config: TRMConfig) -> dict[str, tuple[int, ...]]:
    """{canonical name: shape} of every TRM tensor: HRM's names without H_level, `mlp_t.*` in place of
    `self_attn.*` when config.mlp_t."""
    shapes = common_shapes(config)
    for i in range(config.L_layers):
        shapes.update(block_shapes(config, f"L_level.layers.{i}.", token_mixer=config.mlp_t))
    return shapes
