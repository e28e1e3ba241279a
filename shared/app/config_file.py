"""`hrm train --config FILE`: a run's recipe kept in a file, YAML (.yaml, .yml) or JSON (any other name).

The file holds either a preset name plus overrides,

```
preset: trm-demo-9
overrides: {lr: 0.0003, train.epochs: 200}      # as --set takes them; a list of "key=value" strings works too
```

or a whole config as `hrm config` prints it: `family`, `model` (every field but the dataset's sizes) and `train`
(every field). `--set` applies on top of either.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from hrm_shared.core.checkpoint import DATA_FIELDS
from hrm_shared.core.config import PRESETS, ModelConfig, TrainConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.registry import family_named

YAML_SUFFIXES = (".yaml", ".yml")
PRESET_KEYS = {"preset", "overrides"}
WHOLE_KEYS = {"family", "model", "train", "from_the_dataset"}  # what `hrm config` prints


@dataclass
class Recipe:
    """A run's recipe: a preset name, or the configs to start from (`start`), and `overrides` as --set takes them."""

    preset: str | None
    start: tuple[ModelConfig, TrainConfig] | None
    overrides: list[str]


def override_text(key: str, value: object) -> str:
    """`key=value` as --set takes it, from a Python or YAML/JSON value (true/false for booleans)."""
    return f"{key}={str(value).lower() if isinstance(value, bool) else value}"


def _read(path: Path) -> object:
    """The YAML or JSON document in `path`."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise HRMError(f"cannot read the config file {path} ({e})") from None
    if path.suffix.lower() not in YAML_SUFFIXES:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise HRMError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); name a YAML file .yaml") from None
    try:
        import yaml
    except ImportError:
        raise HRMError(f"reading the YAML file {path} needs PyYAML: pip install pyyaml (or write it as JSON)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise HRMError(f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None


def _overrides(raw: object, path: Path) -> list[str]:
    """The `overrides` entry: a mapping key -> value or a list of "key=value" strings."""
    if isinstance(raw, dict):
        return [override_text(key, value) for key, value in raw.items()]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return list(raw)
    raise HRMError(f"{path}: overrides must be a mapping of key: value or a list of \"key=value\" strings")


def read_config_file(path: Path) -> Recipe:
    """The Recipe in config file `path` (module doc); HRMError naming the file and what is wrong."""
    path = Path(path)
    d = _read(path)
    if not isinstance(d, dict):
        raise HRMError(f"{path} holds {type(d).__name__}; a config file is a mapping with a preset (and overrides) "
                       f"or a whole config as `hrm config` prints it")
    if "preset" in d:
        if unknown := sorted(set(d) - PRESET_KEYS):
            raise HRMError(f"{path}: unknown keys {', '.join(unknown)} beside preset; allowed: preset, overrides")
        if d["preset"] not in PRESETS:
            raise HRMError(f"{path}: unknown preset {d['preset']!r}; choose one of {', '.join(PRESETS)}")
        return Recipe(d["preset"], None, _overrides(d.get("overrides", {}), path))
    if missing := sorted({"family", "model", "train"} - set(d)):
        raise HRMError(f"{path} names no preset and lacks {', '.join(missing)} of a whole config (`hrm config "
                       f"--preset NAME` prints one)")
    if unknown := sorted(set(d) - WHOLE_KEYS):
        raise HRMError(f"{path}: unknown keys {', '.join(unknown)}; a whole config holds family, model and train")
    config = family_named(d["family"]).config
    if not isinstance(d["model"], dict):
        raise HRMError(f"{path}: model is {type(d['model']).__name__}, not a mapping")
    if given := sorted(set(d["model"]) & set(DATA_FIELDS)):
        raise HRMError(f"{path}: {', '.join(given)} come from the dataset; leave them out of model")
    sizes = {name: getattr(config(), name) for name in DATA_FIELDS}  # placeholders: the dataset sets them
    model = config.from_json({**d["model"], **sizes}, f"{path}: model")
    return Recipe(None, (model, TrainConfig.from_json(d["train"], f"{path}: train")), [])
