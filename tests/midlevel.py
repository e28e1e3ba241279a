"""A third model family, defined outside the project to prove the registry's seam (tests/test_third_family.py): HRM
with a middle level. Each L update takes its injection from M_level (M_layers blocks) run on z_H with the input
x added, z_L = L(z_L, M(z_H, x)), instead of z_H + x; the H update and everything else are HRM's. Its model classes
are midlevel_mlx.py and midlevel_torch.py; a package would name FAMILY in its `hrm.families` entry point.
"""

from dataclasses import dataclass
from typing import ClassVar

from hrm_shared.core.config import MAX_DEPTH, HRMConfig, Range
from hrm_shared.core.names import block_shapes, hrm_shapes
from hrm_shared.core.registry import ModelFamily


@dataclass
class MidConfig(HRMConfig):
    """HRMConfig with a middle level of M_layers blocks."""

    M_layers: int = 1

    RANGES: ClassVar[dict[str, Range]] = {**HRMConfig.RANGES, "M_layers": Range(1, MAX_DEPTH)}


def mid_shapes(config: MidConfig) -> dict[str, tuple[int, ...]]:
    """HRM's tensors and M_level's blocks."""
    shapes = hrm_shapes(config)
    for i in range(config.M_layers):
        shapes.update(block_shapes(config, f"M_level.layers.{i}."))
    return shapes


def mid_block_calls(config: MidConfig) -> tuple[int, int]:
    """H_cycles * (L_cycles updates of M then L, and one H update); the one-step gradient differentiates the last
    M, L and H calls."""
    total = config.H_cycles * (config.L_cycles * (config.M_layers + config.L_layers) + config.H_layers)
    differentiated = total if config.grad == "bptt" else config.M_layers + config.L_layers + config.H_layers
    return total - differentiated, differentiated


TINY = dict(hidden_size=32, num_heads=1, expansion=2.0, H_layers=1, L_layers=1, M_layers=1, halt_max_steps=3,
            puzzle_emb_ndim=32, forward_dtype="float32")
FAMILY = ModelFamily(
    name="midlevel", config=MidConfig, module="midlevel_{backend}", model_class="MidHRM", canonical_shapes=mid_shapes,
    reference_arch="midlevel@MidLevelHRM", levels=("H_level", "M_level", "L_level"), block_calls=mid_block_calls,
    q_target=True, state_names=("z_H", "z_L"), demo_presets={}, bench_presets={"midlevel-tiny": "sudoku"},
    presets={"midlevel-tiny": (TINY, dict(global_batch_size=8, epochs=4, eval_interval=4, lr=1e-3, lr_warmup_steps=2))})
