"""The training state beyond the weights (train_state.safetensors), as numpy: the backend-neutral half of each
backend's Trainer.state_dict and load_state_dict.

Its entries: "adam.<name>" (the optimizer's moments and step), "carry.<name>" for each of CARRY (the carry over the
global batch, z_H and z_L in float32), and with EMA "raw.<name>" (the parameters, as the checkpoint's weights are the
average).
"""

import numpy as np

from hrm_shared.core.distributed import Collective, rank_rows
from hrm_shared.core.errors import HRMError

CARRY = ("z_H", "z_L", "steps", "halted", "inputs", "labels", "puzzle_identifiers")


def carry_state(local: dict[str, np.ndarray], collective: Collective | None) -> dict[str, np.ndarray]:
    """"carry.<name>" for each of CARRY from this process's rows `local[name]` (numpy [B, ...]; z_H and z_L already
    float32): gathered over the global batch [B * processes, ...] from every process with a `collective` (so every
    process must call it), else a copy."""
    return {f"carry.{name}": local[name].copy() if collective is None else collective.all_gather_numpy(local[name])
            for name in CARRY}


def carry_rows(state: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], rank: int, world: int
               ) -> dict[str, np.ndarray]:
    """This process's rows of each carry entry of `state` (written by carry_state with any number of processes),
    {name: contiguous numpy [B, ...]}, where `shapes[name]` is its local carry's shape [B, ...] and it is process
    `rank` of `world`. HRMError when an entry is missing or is not the global batch's [B * world, ...]."""
    B = shapes["steps"][0]
    for name in CARRY:
        key, shape = f"carry.{name}", (B * world, *shapes[name][1:])
        if key not in state or state[key].shape != shape:
            raise HRMError(f"training state: {key!r} is missing or misshapen; it was saved for another config")
    mine = rank_rows(rank, B)
    return {name: np.ascontiguousarray(state[f"carry.{name}"][mine]) for name in CARRY}


def entries(state: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries of `state` under `prefix` ('adam.', 'raw.'), the prefix removed."""
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
