"""The backend contract, written once: the modules, functions and classes a backend package provides.

A backend is the package `hrm_<name>` for a name in BACKENDS; it is installed when its framework (FRAMEWORKS)
imports. Each Protocol below is one module of the package (`hrm_torch/model.py`, `hrm_mlx/model.py`, ...), with the
functions it defines and their parameter names; classes a module must define are named in CLASSES with their
methods. Each model family of the registry (core/registry.py) adds its model module, which `model.build_model`
imports when a config of that family is built; its ACT model class follows the Model protocol and its inner
network the Inner protocol (`model_problems`). The backend loader (app/backend.py), the benchmark (app/bench.py) and
the tests (tests/conftest.py) use this one definition; `problems` checks a package against it.
"""

import inspect
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from hrm_shared.core.checkpoint import CheckpointConfig
from hrm_shared.core.config import ModelConfig
from hrm_shared.core.distributed import Collective

BACKENDS = ("torch", "mlx")
FRAMEWORKS = {"torch": "torch", "mlx": "mlx.core"}  # what must import for the backend to be installed

Arrays = dict[str, Any]  # name -> the framework's tensor


class Inner(Protocol):
    """model.HRMInner and each family's subclass of it (the model's `inner`): one segment of the network. A call is
    `heads(*differentiated_cycles(*detached_cycles(z_H, z_L, x, cos_sin()), x, cos_sin()))` on the carried states
    and x = input_embeddings(...); a family overrides the two cycle methods, and the MLX trainer runs the pieces
    apart (the detached cycles outside differentiation)."""

    def input_embeddings(self, inputs: Any, puzzle_identifiers: Any, puzzle_rows: Any = None) -> Any: ...

    def empty_carry(self, batch_size: int) -> Any: ...

    def reset_carry(self, reset: Any, carry: Any) -> Any: ...

    def cos_sin(self) -> Any: ...

    def detached_cycles(self, z_H: Any, z_L: Any, x: Any, cos_sin: Any) -> tuple[Any, Any]: ...

    def differentiated_cycles(self, z_H: Any, z_L: Any, x: Any, cos_sin: Any) -> tuple[Any, Any]: ...

    def heads(self, z_H: Any, z_L: Any) -> tuple[Any, Any, tuple[Any, Any]]: ...


class Model(Protocol):
    """model.HRM and each family's ACT model (a torch.nn.Module, an mlx.nn.Module): a call is
    `end_segment(<the inner call on begin_segment's carry and data>, ...)`."""

    config: ModelConfig
    inner: Inner
    inner_class: type
    has_q_target: bool  # training's halting rule runs a second segment (the registry's q_target)

    def __call__(self, carry: Any, batch: Arrays, training: bool, exploration: Any = None,
                 puzzle_rows: Any = None) -> tuple[Any, Arrays]: ...

    def initial_carry(self, batch: Arrays) -> Any: ...

    def segment_data(self, carry: Any, batch: Arrays) -> Arrays: ...

    def begin_segment(self, carry: Any, batch: Arrays) -> tuple[Any, Any, Arrays]: ...

    def end_segment(self, inner_carry: Any, steps: Any, data: Arrays, outputs: Arrays, training: bool,
                    exploration: Any, puzzle_rows: Any) -> tuple[Any, Arrays]: ...

    def eval_segment(self, carry: Any, batch: Arrays) -> tuple[Any, Arrays]: ...

    def q_halting(self, outputs: Arrays, is_last: Any, inner_carry: Any, data: Arrays,
                  puzzle_rows: Any) -> tuple[Any, Arrays]: ...


class LayersModule(Protocol):
    """layers.py: the transformer pieces every family builds on."""

    def rms_norm(self, x: Any, eps: float) -> Any: ...


class ModelModule(Protocol):
    """model.py: HRM, the ACT carry, and what every family shares: construction and canonical weights."""

    def build_model(self, config: ModelConfig) -> Model: ...

    def canonical_state(self, model: Model) -> dict[str, np.ndarray]: ...

    def load_canonical(self, model: Model, weights: dict[str, np.ndarray]) -> None: ...


class LossModule(Protocol):
    """loss.py: stablemax / softmax cross-entropy and the ACT loss with its metrics."""

    def act_loss(self, outputs: Arrays, labels: Any, halted: Any, steps: Any, loss_type: str) -> tuple[Any, Arrays]: ...


class DeviceModule(Protocol):
    """device.py: where the backend runs, and the one edge where a numpy batch becomes the framework's arrays."""

    def default_device(self) -> str: ...

    def place(self, model: Model, device: str | None) -> Model: ...

    def compute_device(self, model: Model, device: str | None = None) -> Any: ...

    def to_backend(self, batch: dict[str, np.ndarray], device: Any = None) -> Arrays: ...


class TrainModule(Protocol):
    """train.py: a new model and the Trainer (one optimizer step per ACT segment, the carry across batches)."""

    def new_model(self, config: ModelConfig, seed: int, device: str | None = None) -> Model: ...


class CheckpointModule(Protocol):
    """checkpoint.py: a model <-> a checkpoint directory (config.json and canonical safetensors)."""

    def save_checkpoint(self, directory: Path, model: Model, config: CheckpointConfig,
                        identifiers: list[str] | None = None) -> None: ...

    def load_checkpoint(self, directory: Path, device: str | None = None, verify: bool = True
                        ) -> tuple[Model, CheckpointConfig]: ...


class EvaluateModule(Protocol):
    """evaluate.py: halt_max_steps segments per example (or `segments`, any M >= 1), the last one scored; with
    `trajectory` every segment's predictions and Q logits, with `states` the final z_H, z_L."""

    def predict(self, model: Model, batch: Arrays, segments: int | None = None, trajectory: bool = False
                ) -> tuple[Any, Arrays]: ...

    def predict_numpy(self, model: Model, batch: dict[str, np.ndarray], device: Any = None,
                      segments: int | None = None, trajectory: bool = False, states: bool = False
                      ) -> dict[str, np.ndarray]: ...

    def evaluate(self, model: Model, data_dir: Path, batch_size: int, device: Any = None,
                 keep_outputs: bool = False, on_batch: Callable[[dict[str, np.ndarray]], None] | None = None,
                 collective: Collective = ..., segments: int | None = None, trajectory: bool = False
                 ) -> tuple[dict, dict[str, np.ndarray] | None]: ...


class DistributedModule(Protocol):
    """distributed.py: the process group of a launcher (torchrun, mlx.launch), or one process."""

    def connect(self, device: str | None) -> tuple[Collective, str | None]: ...


class BenchModule(Protocol):
    """bench.py: what the benchmark and the memory model need from a backend: the device, waiting for it, its memory
    counter, the memory a run can use."""

    def resolve_device(self, device: str | None) -> str: ...

    def device_name(self, device: str) -> str: ...

    def synchronize(self, device: str) -> None: ...

    def reset_peak_memory(self, device: str) -> None: ...

    def memory(self, device: str) -> tuple[int, int, str] | None: ...

    def usable_memory(self, device: str) -> tuple[int, str] | None: ...

    def is_out_of_memory(self, error: BaseException | None) -> bool: ...


class OptimModule(Protocol):
    """optim.py: the two optimizers, AdamATan2 and SignSGD, and the EMA of the parameters (classes, in CLASSES)."""


class Trainer(Protocol):
    """train.Trainer(model, train, compile=None, collective=None): the optimizers and the carry of a run."""

    read_every: int  # steps between reads of the launched steps' numbers
    eval_batch_size: int

    def prepare(self, batch: dict[str, np.ndarray], draws: Any) -> Any: ...

    def launch(self, prepared: Any, lr: float, puzzle_lr: float) -> Any: ...

    def read(self, launched: list[Any]) -> list[dict[str, float]]: ...

    def step(self, batch: dict[str, np.ndarray], draws: Any, lr: float, puzzle_lr: float) -> dict[str, float]: ...

    def averaged(self) -> Any: ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


class AdamATan2(Protocol):
    """optim.AdamATan2(model, betas, weight_decay): Adam with atan2, on every trainable parameter."""

    def update(self, gradients: Any, lr: float) -> None: ...

    def state_dict(self) -> Arrays: ...

    def load_state_dict(self, state: Arrays) -> None: ...


class EMA(Protocol):
    """optim.EMA(model, rate): the moving average of the trainable parameters that evaluation and checkpoints use."""

    def update(self) -> None: ...

    def averaged(self) -> Any: ...

    def raw_state(self) -> dict[str, np.ndarray]: ...

    def load_raw_state(self, raw: dict[str, np.ndarray]) -> None: ...


class SignSGD(Protocol):
    """optim.SignSGD(puzzle_emb, weight_decay): sparse SignSGD on the puzzle-table rows a batch looked up."""

    def update(self, ids: Any, gradients: Any, lr: float) -> None: ...


MODULES: dict[str, type] = {"layers": LayersModule, "model": ModelModule, "loss": LossModule,
                            "device": DeviceModule, "train": TrainModule, "checkpoint": CheckpointModule,
                            "evaluate": EvaluateModule, "distributed": DistributedModule, "bench": BenchModule,
                            "optim": OptimModule}
CLASSES: dict[str, dict[str, type]] = {"train": {"Trainer": Trainer},
                                       "optim": {"AdamATan2": AdamATan2, "SignSGD": SignSGD, "EMA": EMA}}
CONSTRUCTORS = {"Trainer": ("model", "train", "compile", "collective"),
                "AdamATan2": ("model", "betas", "weight_decay"), "SignSGD": ("puzzle_emb", "weight_decay"),
                "EMA": ("model", "rate")}


class BackendPackage(ModuleType):
    """The class of a backend package (its __init__ sets it): the package's attributes that are its Python API's
    functions stay those functions when a contract module of the same name (train.py) is imported, which would
    otherwise rebind the attribute to the module. The modules themselves are in sys.modules; `contract_modules`
    gathers them for the code that drives the backend."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (isinstance(value, ModuleType) and callable(getattr(self, name, None))):
            super().__setattr__(name, value)


def contract_modules(name: str) -> ModuleType:
    """A module named `hrm_<name>` whose attributes are backend `name`'s contract modules (MODULES), imported: what
    the backend loader hands to the code that drives the backend (`package.train.Trainer`, ...)."""
    import importlib

    package = ModuleType(f"hrm_{name}", f"the contract modules of hrm_{name}")
    for module in MODULES:
        setattr(package, module, importlib.import_module(f"hrm_{name}.{module}"))
    return package


def installed(name: str) -> bool:
    """Whether backend `name`'s framework is installed, found without importing it."""
    try:
        return find_spec(FRAMEWORKS[name]) is not None
    except ModuleNotFoundError:  # find_spec("mlx.core") raises when the parent package "mlx" is absent
        return False


def _members(protocol: type, calls: bool = False) -> dict[str, Callable]:
    """The methods a Protocol declares, by name (with `calls`, `__call__` too)."""
    return {name: value for name, value in vars(protocol).items()
            if inspect.isfunction(value) and (not name.startswith("_") or (calls and name == "__call__"))}


def _parameters(function: Callable, bound: bool) -> tuple[str, ...]:
    """Parameter names of `function`, without `self` when `bound` is False for a Protocol method."""
    names = tuple(inspect.signature(function).parameters)
    return names[1:] if bound else names


def _method_problems(cls: type, protocol: type, where: str) -> list[str]:
    """The methods of `protocol` that `cls` lacks or defines with other parameter names; torch's `forward` stands
    for `__call__`."""
    found = []
    for name, declared in _members(protocol, calls=True).items():
        method = getattr(cls, "forward" if name == "__call__" and hasattr(cls, "forward") else name, None)
        if not callable(method) or _parameters(method, True) != _parameters(declared, True):
            found.append(f"{where}.{name} should take {_parameters(declared, True)}")
    return found


def model_problems(model_class: type) -> list[str]:
    """What a family's ACT model class and its `inner_class` lack of the Model and Inner protocols, one line each.
    Empty when they conform."""
    where = f"{model_class.__module__}.{model_class.__name__}"
    found = [f"{where}.has_q_target is missing"] if not hasattr(model_class, "has_q_target") else []
    inner = getattr(model_class, "inner_class", None)
    if not inspect.isclass(inner):
        return [*found, f"{where}.inner_class is missing"]
    return [*found, *_method_problems(model_class, Model, where),
            *_method_problems(inner, Inner, f"{inner.__module__}.{inner.__name__}")]


def problems(package: ModuleType) -> list[str]:
    """What `package` (with its MODULES loaded as attributes) lacks of the contract, one line each: a missing module,
    function, class or method, or one whose parameter names differ. Empty when it conforms."""
    found = []
    for module_name, protocol in MODULES.items():
        module = getattr(package, module_name, None)
        if not isinstance(module, ModuleType):
            found.append(f"{package.__name__}.{module_name} is missing")
            continue
        for name, declared in _members(protocol).items():
            defined = getattr(module, name, None)
            if not callable(defined):
                found.append(f"{module.__name__}.{name} is missing")
            elif _parameters(defined, bound=False) != _parameters(declared, bound=True):
                found.append(f"{module.__name__}.{name}{_parameters(defined, False)} should take "
                             f"{_parameters(declared, True)}")
        for class_name, class_protocol in CLASSES.get(module_name, {}).items():
            cls = getattr(module, class_name, None)
            if not inspect.isclass(cls):
                found.append(f"{module.__name__}.{class_name} is missing")
                continue
            if _parameters(cls.__init__, bound=True) != CONSTRUCTORS[class_name]:
                found.append(f"{module.__name__}.{class_name}() should take {CONSTRUCTORS[class_name]}")
            found += _method_problems(cls, class_protocol, f"{module.__name__}.{class_name}")
    return found
