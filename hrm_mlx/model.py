"""HRM in MLX: the H/L recurrence with the one-step gradient and the ACT wrapper (shared/DESIGN.md sections 2-3).

Paper (arXiv 2506.21734), section 2: the hierarchical recurrence, "approximate gradient" and "adaptive computational
time". Module attribute paths are the canonical names (shared/core/names.py), relative to `HRM.inner`. TRM (trm.py)
subclasses HRMInner and HRM, overriding `build_levels`, `detached_cycles`, `differentiated_cycles` and
`q_halting`.
"""

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from hrm_shared.core.act import ExplorationDraws
from hrm_shared.core.config import HRMConfig, ModelConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import check_canonical
from hrm_shared.core.registry import family_of
from hrm_mlx.layers import CastedEmbedding, CastedLinear, CosSin, PuzzleEmbedding, ReasoningModule, RotaryEmbedding

Batch = dict[str, mx.array]


@dataclass
class InnerCarry:
    """Recurrent states z_H, z_L [B, T, H] in the forward dtype."""

    z_H: mx.array
    z_L: mx.array


@dataclass
class Carry:
    """ACT state: inner carry, steps [B] int32, halted [B] bool, and the rows each sequence is working on."""

    inner_carry: InnerCarry
    steps: mx.array
    halted: mx.array
    current_data: Batch


class HRMInner(nn.Module):
    """Embeddings, the H and L levels, and the output heads; one call runs one segment."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.forward_dtype = getattr(mx, config.forward_dtype)
        self.puzzle_emb_len = config.puzzle_emb_len
        H = config.hidden_size
        self.embed_tokens = CastedEmbedding(config.vocab_size, H, self.forward_dtype)
        self.lm_head = CastedLinear(H, config.vocab_size, bias=False)
        self.q_head = CastedLinear(H, 2, bias=True)
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = PuzzleEmbedding(config.num_puzzle_identifiers, config.puzzle_emb_ndim,
                                              self.forward_dtype)
        positions = self.puzzle_emb_len + config.seq_len
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(config.head_dim, positions, config.rope_theta)
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(positions, H, self.forward_dtype)
        self.build_levels(config)
        self.H_init = mx.zeros((H,))
        self.L_init = mx.zeros((H,))
        self.freeze(recurse=False, keys=["H_init", "L_init"])

    def build_levels(self, config: HRMConfig) -> None:
        """HRM's two independent stacks: H_level (H_layers blocks) and L_level (L_layers blocks)."""
        self.H_level = ReasoningModule(config, config.H_layers)
        self.L_level = ReasoningModule(config, config.L_layers)

    def input_embeddings(self, inputs: mx.array, puzzle_identifiers: mx.array,
                         puzzle_rows: mx.array | None = None) -> mx.array:
        """Tokens [B, seq_len] int32 and puzzle ids [B] -> scaled embeddings [B, T, H] in the forward dtype.

        `puzzle_rows` [B, ndim] float32, when given, stands in for the table rows of `puzzle_identifiers`, so a train
        step can differentiate the loss with respect to the rows it looked up (sparse SignSGD).
        """
        e = self.embed_tokens(inputs)  # [B, seq_len, H]
        B, _, H = e.shape
        if self.config.puzzle_emb_ndim > 0:
            if puzzle_rows is None:
                rows = self.puzzle_emb(puzzle_identifiers)  # [B, ndim]
            else:
                rows = puzzle_rows.astype(self.forward_dtype)
            rows = mx.pad(rows, [(0, 0), (0, self.puzzle_emb_len * H - rows.shape[-1])])  # [B, P*H]
            e = mx.concatenate((rows.reshape(B, self.puzzle_emb_len, H), e), axis=1)  # [B, T, H]
        if self.config.pos_encodings == "learned":
            e = 0.707106781 * (e + self.embed_pos.embedding_weight.astype(self.forward_dtype))
        return math.sqrt(H) * e

    def empty_carry(self, batch_size: int) -> InnerCarry:
        """Zero states [B, T, H]; every row is reset before its first use."""
        shape = (batch_size, self.puzzle_emb_len + self.config.seq_len, self.config.hidden_size)
        zeros = mx.zeros(shape, dtype=self.forward_dtype)
        return InnerCarry(z_H=zeros, z_L=zeros)

    def reset_carry(self, reset: mx.array, carry: InnerCarry) -> InnerCarry:
        """Rows where reset [B] is true restart from H_init, L_init (broadcast over positions)."""
        reset = reset.reshape(-1, 1, 1)  # [B, 1, 1]
        return InnerCarry(z_H=mx.where(reset, self.H_init.astype(self.forward_dtype), carry.z_H),
                          z_L=mx.where(reset, self.L_init.astype(self.forward_dtype), carry.z_L))

    def cos_sin(self) -> CosSin | None:
        """The RoPE tables [T, head_dim] float32, or None without RoPE."""
        return self.rotary_emb() if self.config.pos_encodings == "rope" else None

    def _cycles(self, z_H: mx.array, z_L: mx.array, x: mx.array, cos_sin: CosSin | None,
                last: bool) -> tuple[mx.array, mx.array]:
        """Every L and H update of a segment on z_H, z_L, x [B, T, H]; without the last L and H ones unless `last`."""
        H_cycles, L_cycles = self.config.H_cycles, self.config.L_cycles
        for i in range(H_cycles):
            for j in range(L_cycles):
                if last or (i, j) != (H_cycles - 1, L_cycles - 1):
                    z_L = self.L_level(z_L, z_H + x, cos_sin)
            if last or i != H_cycles - 1:
                z_H = self.H_level(z_H, z_L, cos_sin)
        return z_H, z_L

    def detached_cycles(self, z_H: mx.array, z_L: mx.array, x: mx.array,
                        cos_sin: CosSin | None) -> tuple[mx.array, mx.array]:
        """The updates of a segment that are not differentiated, on z_H, z_L, x [B, T, H]: with the one-step gradient
        every update but the last L and H ones, detached; with grad="bptt" none (z_H, z_L as given)."""
        if self.config.grad != "one_step":
            return z_H, z_L
        z_H, z_L = self._cycles(z_H, z_L, x, cos_sin, last=False)
        return mx.stop_gradient(z_H), mx.stop_gradient(z_L)

    def differentiated_cycles(self, z_H: mx.array, z_L: mx.array, x: mx.array,
                              cos_sin: CosSin | None) -> tuple[mx.array, mx.array]:
        """The differentiated updates after `detached_cycles`: the last L and H updates (the one-step gradient), or
        every update of the segment with grad="bptt"."""
        if self.config.grad != "one_step":
            return self._cycles(z_H, z_L, x, cos_sin, last=True)
        z_L = self.L_level(z_L, z_H + x, cos_sin)
        z_H = self.H_level(z_H, z_L, cos_sin)
        return z_H, z_L

    def heads(self, z_H: mx.array, z_L: mx.array) -> tuple[InnerCarry, mx.array, tuple[mx.array, ...]]:
        """New states z_H, z_L [B, T, H] -> (detached carry, logits [B, seq_len, vocab], (q_halt [B], q_continue [B])
        float32)."""
        new_carry = InnerCarry(z_H=mx.stop_gradient(z_H), z_L=mx.stop_gradient(z_L))
        logits = self.lm_head(z_H)[:, self.puzzle_emb_len:]  # [B, seq_len, vocab]
        q = self.q_head(z_H[:, 0]).astype(mx.float32)  # [B, 2]
        return new_carry, logits, (q[..., 0], q[..., 1])

    def __call__(self, carry: InnerCarry, batch: Batch,
                 puzzle_rows: mx.array | None = None) -> tuple[InnerCarry, mx.array, tuple[mx.array, ...]]:
        """One segment: the embeddings, `detached_cycles`, `differentiated_cycles` and `heads` -> (detached new carry,
        logits [B, seq_len, vocab], (q_halt [B], q_continue [B]) float32). `puzzle_rows`: see `input_embeddings`."""
        cos_sin = self.cos_sin()
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"], puzzle_rows)
        z_H, z_L = self.detached_cycles(carry.z_H, carry.z_L, x, cos_sin)
        return self.heads(*self.differentiated_cycles(z_H, z_L, x, cos_sin))


class HRM(nn.Module):
    """The ACT wrapper: one call advances every row by one segment, resetting rows that halted last call."""

    inner_class = HRMInner  # the network one segment runs; a subclass (TRM) swaps in its own

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.inner = self.inner_class(config)
        self._compiled_eval: Callable | None = None

    @property
    def has_q_target(self) -> bool:
        """Whether training's halting rule runs a second segment for a Q target (the registry's q_target)."""
        return family_of(self.config).q_target

    def initial_carry(self, batch: Batch) -> Carry:
        """A carry with every row halted, so the first call loads the batch into every row."""
        B = batch["inputs"].shape[0]
        return Carry(inner_carry=self.inner.empty_carry(B),
                     steps=mx.zeros((B,), dtype=mx.int32),
                     halted=mx.ones((B,), dtype=mx.bool_),
                     current_data={k: mx.zeros_like(v) for k, v in batch.items()})

    def segment_data(self, carry: Carry, batch: Batch) -> Batch:
        """The data each row works on in the next call: the batch's row where the carry halted, else the carried row.

        A train step takes the puzzle ids [B] from here to look up the rows it passes as `puzzle_rows`.
        """
        return {k: mx.where(carry.halted.reshape(-1, *[1] * (v.ndim - 1)), batch[k], v)
                for k, v in carry.current_data.items()}

    def begin_segment(self, carry: Carry, batch: Batch) -> tuple[InnerCarry, mx.array, Batch]:
        """The start of a call: (inner carry with halted rows reset, steps [B] int32 with halted rows at 0, the data
        each row works on: `segment_data`)."""
        inner_carry = self.inner.reset_carry(carry.halted, carry.inner_carry)
        return inner_carry, mx.where(carry.halted, 0, carry.steps), self.segment_data(carry, batch)

    def end_segment(self, inner_carry: InnerCarry, steps: mx.array, data: Batch, outputs: dict[str, mx.array],
                    training: bool, exploration: ExplorationDraws | None, puzzle_rows: mx.array | None
                    ) -> tuple[Carry, dict[str, mx.array]]:
        """The end of a call, after the segment gave `outputs` and the new `inner_carry`: count the step and decide
        which rows halt (training with halt_max_steps > 1: `q_halting`, whose extra outputs join `outputs`) -> (new
        carry, outputs)."""
        steps = steps + 1
        is_last = steps >= self.config.halt_max_steps
        halted = is_last
        if training and self.config.halt_max_steps > 1:
            q_halted, targets = self.q_halting(outputs, is_last, inner_carry, data, puzzle_rows)
            outputs = {**outputs, **targets}
            halted = (halted | q_halted) & (steps >= mx.array(exploration.min_halt_steps))
        return Carry(inner_carry, steps, halted, data), outputs

    def eval_segment(self, carry: Carry, batch: Batch) -> tuple[Carry, dict[str, mx.array]]:
        """One evaluation call (training=False), mx.compile'd once per model over its state (the weights are inputs,
        so training, EMA and loading reach it); it traces once per batch shape and predicts as the eager call
        (tests/test_mlx_fast.py)."""
        if self._compiled_eval is None:
            def segment(arrays: tuple[mx.array, ...], data: Batch, batch: Batch) -> tuple[tuple, dict[str, mx.array]]:
                carry = Carry(InnerCarry(arrays[0], arrays[1]), arrays[2], arrays[3], data)
                new, outputs = self(carry, batch, training=False)
                return (new.inner_carry.z_H, new.inner_carry.z_L, new.steps, new.halted, new.current_data), outputs

            self._compiled_eval = mx.compile(segment, inputs=[self.state])
        arrays = (carry.inner_carry.z_H, carry.inner_carry.z_L, carry.steps, carry.halted)
        (z_H, z_L, steps, halted, data), outputs = self._compiled_eval(arrays, carry.current_data, batch)
        return Carry(InnerCarry(z_H, z_L), steps, halted, data), outputs

    def __call__(self, carry: Carry, batch: Batch, training: bool, exploration: ExplorationDraws | None = None,
                 puzzle_rows: mx.array | None = None) -> tuple[Carry, dict[str, mx.array]]:
        """One segment for every row: `begin_segment`, the inner network, `end_segment` -> (new carry, outputs:
        logits, q_halt_logits, q_continue_logits, and, when training with halt_max_steps > 1, what `q_halting` adds:
        HRM's target_q_continue).

        `puzzle_rows` [B, ndim] float32: the puzzle-table rows of `segment_data(carry, batch)["puzzle_identifiers"]`,
        given in training so the caller gets their gradient; None looks them up in the table.
        """
        if training and self.config.halt_max_steps > 1 and exploration is None:
            raise HRMError("training with halt_max_steps > 1 needs exploration draws "
                           "(hrm_shared.core.act.draw_exploration)")
        inner_carry, steps, data = self.begin_segment(carry, batch)
        inner_carry, logits, (q_halt, q_continue) = self.inner(inner_carry, data, puzzle_rows)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}
        return self.end_segment(inner_carry, steps, data, outputs, training, exploration, puzzle_rows)

    def q_halting(self, outputs: dict[str, mx.array], is_last: mx.array, inner_carry: InnerCarry, data: Batch,
                  puzzle_rows: mx.array | None) -> tuple[mx.array, dict[str, mx.array]]:
        """Training's Q-head halting rule -> (rows [B] bool the Q head halts, extra outputs).

        HRM: q_halt > q_continue (raw logits, strict), and target_q_continue [B] float32 =
        sigmoid(is_last ? next_halt : max(next_halt, next_continue)) from a second segment on the new carry
        `inner_carry` and the same `data` (no replay buffer). Runs without gradient.
        """
        _, _, (next_halt, next_continue) = self.inner(inner_carry, data, puzzle_rows)
        target = mx.sigmoid(mx.where(is_last, next_halt, mx.maximum(next_halt, next_continue)))
        return outputs["q_halt_logits"] > outputs["q_continue_logits"], {"target_q_continue": mx.stop_gradient(target)}


def build_model(config: ModelConfig) -> nn.Module:
    """The ACT model of `config`'s family (core/registry.py), with zero weights: load them with `load_canonical`."""
    family = family_of(config)
    module = importlib.import_module(family.model_module(__package__.removeprefix("hrm_")))
    return getattr(module, family.model_class)(config)


def canonical_state(model: nn.Module) -> dict[str, np.ndarray]:
    """{canonical name: float32 numpy copy} of every saved tensor (parameters, frozen ones included)."""
    return {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(model.inner.parameters())}


def load_canonical(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Copy canonical float32 `weights` into `model`; missing, extra or misshapen tensors are an HRMError."""
    state = dict(tree_flatten(model.inner.parameters()))
    check_canonical(weights, {k: tuple(v.shape) for k, v in state.items()}, "loading weights")
    model.inner.load_weights([(k, mx.array(np.asarray(weights[k], dtype=np.float32))) for k in state], strict=True)
    mx.eval(model.inner.parameters())
