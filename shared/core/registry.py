"""The model registry: a model family is a config class, one model module per backend, its canonical parameter
names and the traits the numpy side needs of it (FLOPs, memory, analysis, import, demo, benchmark). Model
construction, checkpoint loading, conversion, the official importer and those tools dispatch on the config through
this table, never on a family by name.

A family defined outside this project registers itself through the entry point group `hrm.families`: each entry
names a ModelFamily, which `register` adds with its presets when this module is first imported.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from hrm_shared.core.config import PRESETS, HRMConfig, ModelConfig, TRMConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.names import hrm_shapes, trm_shapes

ENTRY_POINTS = "hrm.families"


@dataclass(frozen=True)
class ModelFamily:
    """One model family, where each backend defines it, and what the backend-neutral tools need to know of it."""

    name: str  # config.json's "family"
    config: type[ModelConfig]
    module: str  # the module that defines the model: hrm_<backend>.<module>, or, with "{backend}" in it, itself
    model_class: str  # the ACT model class in that module
    canonical_shapes: Callable[[ModelConfig], dict[str, tuple[int, ...]]]
    reference_arch: str  # the official code's `arch.name`, as its all_config.yaml writes it
    levels: tuple[str, ...]  # the reasoning modules, each the first part of its tensors' canonical names
    # Block calls of one training segment's forward: (not differentiated, differentiated), by the config's `grad`.
    block_calls: Callable[[ModelConfig], tuple[int, int]]
    # Whether training halts on q_halt > q_continue and trains q_continue on a second segment's target (HRM), rather
    # than halting on q_halt > 0 alone (TRM).
    q_target: bool
    state_names: tuple[str, str]  # the family's own names for the carried states z_H, z_L
    demo_presets: dict[int, str]  # the preset `hrm demo --model NAME --size N` trains, by N
    bench_presets: dict[str, str]  # the presets `hrm bench` measures, with the puzzle kind of their data shape
    presets: dict[str, tuple[dict, dict]] = field(default_factory=dict)  # a registered family's own presets

    def model_module(self, backend: str) -> str:
        """The module that defines this family's model in `backend` ("torch", "mlx")."""
        return self.module.format(backend=backend) if "{backend}" in self.module else f"hrm_{backend}.{self.module}"


def hrm_block_calls(config: HRMConfig) -> tuple[int, int]:
    """HRM: H_cycles * (L_cycles L updates + one H update); the one-step gradient differentiates the last L and H
    updates, grad="bptt" every one."""
    total = config.H_cycles * (config.L_cycles * config.L_layers + config.H_layers)
    differentiated = total if config.grad == "bptt" else config.L_layers + config.H_layers
    return total - differentiated, differentiated


def trm_block_calls(config: TRMConfig) -> tuple[int, int]:
    """TRM: H_cycles recursions of L_cycles + 1 calls of the network; the one-step gradient differentiates the last
    recursion, grad="bptt" every one."""
    recursion = (config.L_cycles + 1) * config.L_layers
    differentiated = config.H_cycles * recursion if config.grad == "bptt" else recursion
    return config.H_cycles * recursion - differentiated, differentiated


FAMILIES: dict[str, ModelFamily] = {
    "hrm": ModelFamily("hrm", HRMConfig, "model", "HRM", hrm_shapes, "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
                       ("H_level", "L_level"), hrm_block_calls, True, ("z_H", "z_L"), {4: "demo", 9: "demo-9"},
                       {"tiny": "sudoku", "sudoku": "sudoku", "sudoku-full": "sudoku", "maze": "maze",
                        "arc": "arc"}),
    "trm": ModelFamily("trm", TRMConfig, "trm", "TRM", trm_shapes,
                       "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1", ("L_level",), trm_block_calls,
                       False, ("y", "z"), {4: "trm-demo", 9: "trm-demo-9"},
                       {"trm-tiny": "sudoku", "trm-sudoku": "sudoku", "trm-sudoku-att": "sudoku", "trm-maze": "maze",
                        "trm-arc-agi-1": "arc"}),
}
DEFAULT_FAMILY = "hrm"  # checkpoints written before the registry name no family: they hold HRM


def family_of(config: ModelConfig) -> ModelFamily:
    """The family whose config class `config` is."""
    for family in FAMILIES.values():
        if type(config) is family.config:
            return family
    raise HRMError(f"internal: {type(config).__name__} is not a registered model config")


def family_named(name: str) -> ModelFamily:
    """The family called `name`; HRMError listing the known ones otherwise."""
    if name not in FAMILIES:
        raise HRMError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def register(family: ModelFamily) -> None:
    """Add `family` and its presets; HRMError when its name or a preset name is taken."""
    taken = [family.name] * (family.name in FAMILIES) + [name for name in family.presets if name in PRESETS]
    if taken:
        raise HRMError(f"model family {family.name!r}: {', '.join(taken)} already registered; rename it")
    FAMILIES[family.name] = family
    PRESETS.update({name: (family.config, model, train) for name, (model, train) in family.presets.items()})


for _entry in entry_points(group=ENTRY_POINTS):
    register(_entry.load())
