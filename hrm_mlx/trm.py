"""TRM in MLX: the Tiny Recursive Model (Jolicoeur-Martineau 2025, arXiv 2510.04871) as subclasses of HRM's
modules (shared/TRM.md sections 1-3).

One network `L_level` (L_layers post-norm blocks: attention, or the token-mixing `mlp_t`) updates both states, y
(the answer, carried as HRM's z_H) and z (the latent, z_L). Embeddings, heads, initial states, carry and resets are
HRM's (model.py), with P = config.puzzle_emb_len prefix tokens. shared/TRM.md section 2: backprop runs through the
whole last recursion, and training halts on q_halt > 0 alone, so the ACT loss (shared/TRM.md section 3) has no
Q-continue term.
"""

import mlx.core as mx

from hrm_shared.core.config import TRMConfig
from hrm_mlx.layers import CosSin, ReasoningModule
from hrm_mlx.model import HRM, Batch, HRMInner, InnerCarry


class TRMInner(HRMInner):
    """HRM's embeddings, heads and initial states around one network `L_level`; a call runs one TRM segment."""

    def build_levels(self, config: TRMConfig) -> None:
        """The single network `L_level` of L_layers blocks (no H_level)."""
        self.L_level = ReasoningModule(config, config.L_layers)

    def latent_recursion(self, y: mx.array, z: mx.array, x: mx.array,
                         cos_sin: CosSin | None) -> tuple[mx.array, mx.array]:
        """One recursion on y, z, x [B, T, H]: L_cycles times z = net(z, y + x), then y = net(y, z) -> (y, z)."""
        for _ in range(self.config.L_cycles):
            z = self.L_level(z, y + x, cos_sin)
        return self.L_level(y, z, cos_sin), z  # x is not injected into the answer update

    def detached_cycles(self, z_H: mx.array, z_L: mx.array, x: mx.array,
                        cos_sin: CosSin | None) -> tuple[mx.array, mx.array]:
        """The recursions that are not differentiated, on (y, z) = (z_H, z_L) and x [B, T, H]: the first H_cycles - 1,
        detached; none with grad="bptt"."""
        if self.config.grad != "one_step":
            return z_H, z_L
        for _ in range(self.config.H_cycles - 1):
            z_H, z_L = self.latent_recursion(z_H, z_L, x, cos_sin)
        return mx.stop_gradient(z_H), mx.stop_gradient(z_L)

    def differentiated_cycles(self, z_H: mx.array, z_L: mx.array, x: mx.array,
                              cos_sin: CosSin | None) -> tuple[mx.array, mx.array]:
        """The differentiated recursions after `detached_cycles`: the last one, differentiated throughout and into x
        at each of its latent updates, or all H_cycles with grad="bptt"."""
        for _ in range(1 if self.config.grad == "one_step" else self.config.H_cycles):
            z_H, z_L = self.latent_recursion(z_H, z_L, x, cos_sin)
        return z_H, z_L


class TRM(HRM):
    """TRM's ACT wrapper: HRM's carry, resets, exploration and fixed-length evaluation around TRMInner, with TRM's
    halting rule (no second forward, no target_q_continue output)."""

    inner_class = TRMInner

    def q_halting(self, outputs: dict[str, mx.array], is_last: mx.array, inner_carry: InnerCarry,
                  data: Batch, puzzle_rows: mx.array | None) -> tuple[mx.array, dict[str, mx.array]]:
        """Rows [B] bool where q_halt > 0 (raw logit, strict), and no extra outputs; q_continue is ignored."""
        return outputs["q_halt_logits"] > 0, {}
