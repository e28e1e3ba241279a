"""Backend-agnostic ACT helpers (shared/DESIGN.md section 3).

The exploration numbers are drawn here, in numpy, from the run's seeded generator and handed to the backend,
so the torch and MLX models follow the same halting trajectory **(ours)**.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class ExplorationDraws:
    """One call's exploration: `explore` [B] bool (u < prob), `min_halt_steps` [B] int32 (0 where not exploring)."""

    explore: np.ndarray
    min_halt_steps: np.ndarray


def draw_exploration(rng: np.random.Generator, batch_size: int, halt_max_steps: int,
                     prob: float) -> ExplorationDraws:
    """Draw u ~ U[0, 1) and k ~ randint{2..halt_max_steps} per row; min_halt_steps = (u < prob) * k.

    Both numbers are drawn for every row on every call, so the generator advances the same way whatever the outcome.
    """
    explore = rng.random(batch_size) < prob
    k = rng.integers(2, max(halt_max_steps, 2) + 1, size=batch_size)
    if halt_max_steps < 2:
        k = np.zeros_like(k)
    return ExplorationDraws(explore=explore, min_halt_steps=(explore * k).astype(np.int32))
