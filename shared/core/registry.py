"""The model registry: a model family is a config class, one model module per backend and its canonical parameter
names. Model construction, checkpoint loading, conversion and the official importer dispatch on the config through
this table, never on a family by name.
"""

from collections.abc import Callable
from dataclasses import dataclass

from hrm_shared.core.config import HRMConfig, ModelConfig, TRMConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.names import hrm_shapes, trm_shapes


@dataclass(frozen=True)
class ModelFamily:
    """One model family and where each backend defines it."""

    name: str  # config.json's "family"
    config: type[ModelConfig]
    module: str  # the backend module that defines the model: hrm_<backend>.<module>
    model_class: str  # the ACT model class in that module
    canonical_shapes: Callable[[ModelConfig], dict[str, tuple[int, ...]]]
    reference_arch: str  # the official code's `arch.name`, as its all_config.yaml writes it


FAMILIES: dict[str, ModelFamily] = {
    "hrm": ModelFamily("hrm", HRMConfig, "model", "HRM", hrm_shapes,
                       "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"),
    "trm": ModelFamily("trm", TRMConfig, "trm", "TRM", trm_shapes,
                       "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"),
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
