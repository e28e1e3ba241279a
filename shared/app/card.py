"""`hrm push`: the folder a run's checkpoint goes to the Hugging Face Hub as, with its model card (README.md).

The card's numbers come from the run: the family, preset and overrides from `<run>/config.json`, the parameter
count from the model config, the dataset's kind and fingerprint from the checkpoint's config, and the accuracy from
the run's last evaluation in `<run>/metrics.jsonl` (`hrm train` measured it on the dataset's test split). The
checkpoint pushed is the one that evaluation scored, `<run>/step_N`; `<run>/last` when the run has none.
"""

import json
import shutil
from pathlib import Path

from hrm_shared.app.hub import CARD_FILE
from hrm_shared.app.run import LAST, METRICS_FILE, read_metrics, read_run_config, step_dir
from hrm_shared.core.checkpoint import (
    CONFIG_FILE,
    DATA_FIELDS,
    IDENTIFIERS_FILE,
    MODEL_FILE,
    CheckpointConfig,
    read_checkpoint_config,
)
from hrm_shared.core.config import preset
from hrm_shared.core.init import count_parameters
from hrm_shared.core.registry import family_of
from hrm_shared.core.version import distribution

LICENCE = "Apache-2.0"  # the project's, which its checkpoints share (pyproject.toml `license`)
UNRECORDED = "unrecorded"  # a run written before config.json recorded its preset


def pushed_checkpoint(run: Path) -> tuple[Path, dict | None]:
    """(the checkpoint to push, the test record that scored it): `<run>/step_N` of the last evaluation in
    metrics.jsonl, or `<run>/last` with None when the run has no evaluation. HRMError when `run` is not a run."""
    read_run_config(run)
    tests = [r for r in read_metrics(Path(run) / METRICS_FILE) if r.get("split") == "test"]
    if tests and (step_dir(run, tests[-1]["step"]) / MODEL_FILE).is_file():
        return step_dir(run, tests[-1]["step"]), tests[-1]
    return Path(run) / LAST, None


def overrides(preset_name: str, config: CheckpointConfig) -> list[str]:
    """The `key=value` overrides that turn preset `preset_name` into `config` (dataset sizes and the seed left out):
    what `--set` gave."""
    model, train = preset(preset_name)
    pairs = [(f"model.{k}", v, getattr(config.model, k)) for k, v in model.to_dict().items() if k not in DATA_FIELDS]
    pairs += [(f"train.{k}", v, getattr(config.train, k)) for k, v in train.to_dict().items() if k != "seed"]
    return [f"{key}={new}" for key, old, new in pairs if old != new]


def model_card(repo: str, config: CheckpointConfig, preset_name: str | None, tested: dict | None,
               checkpoint: str) -> str:
    """The model card (Markdown with the Hub's YAML header) of `checkpoint` (its name in the run, such as step_500)
    with `config`, made from preset `preset_name` (None: a whole config file; or UNRECORDED) and scored by the test
    record `tested` (None: never evaluated), published as `repo`."""
    family = family_of(config.model).name
    kind = config.dataset.get("kind") or "unknown"
    if preset_name is None:
        made = "none: a whole config file (`hrm train --config FILE`)"
    elif preset_name == UNRECORDED:
        made = "unknown: the run predates the preset's record in its config.json"
    else:
        made = f"`{preset_name}`"
    if preset_name not in (None, UNRECORDED) and (changed := overrides(preset_name, config)):
        made += " with " + " ".join(f"`--set {item}`" for item in changed)
    if tested is None:
        accuracy = "not measured: the run never evaluated"
    else:
        accuracy = (f"exact accuracy {tested['exact_accuracy']:.4f}, token accuracy {tested['accuracy']:.4f} on the "
                    f"{tested['count']:,} examples of the dataset's test split, at step {tested['step']:,}")
    name = distribution() or "hrm"
    rows = [("model family", family.upper()), ("preset", made),
            ("parameters", f"{count_parameters(config.model):,} trainable"),
            ("dataset", f"{kind}, fingerprint `{config.dataset.get('fingerprint', 'unknown')}`, seq_len "
                        f"{config.model.seq_len}, vocab_size {config.model.vocab_size}"),
            ("accuracy", accuracy),
            ("measured by", "`hrm train` (the run's last evaluation, metrics.jsonl); measure again with "
                            f"`hrm evaluate hub:{repo} DATA`" if tested else "-"),
            ("backend", config.backend or "unknown"), ("checkpoint", checkpoint), ("licence", LICENCE)]
    header = ["---", f"library_name: {name}", f"license: {LICENCE.lower()}",
              f"tags: [{family}, {kind}, reasoning, {config.backend or 'unknown'}]", "---"]
    table = ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]
    backend = config.backend or "torch"
    usage = ["```python", f"from hrm_{backend} import load, solve", "", f'model = load("hub:{repo}")',
             "print(solve(model, PUZZLE).text)", "```", "", "or from the shell:", "", "```",
             f"hrm evaluate hub:{repo} DATA", f"hrm solve hub:{repo} PUZZLE", "```"]
    title = f"# {family.upper()} for {kind} puzzles"
    return "\n".join([*header, "", title, "", *table, "", "## Use", "", *usage]) + "\n"


def build_upload(run: Path, folder: Path, repo: str) -> dict:
    """Fill the empty directory `folder` with what `hrm push RUN REPO` uploads: the pushed checkpoint's config.json,
    model.safetensors, identifiers.json (when it has one) and the model card README.md. Returns what it wrote:
    checkpoint, files, accuracy."""
    run, folder = Path(run), Path(folder)
    checkpoint, tested = pushed_checkpoint(run)
    config = read_checkpoint_config(checkpoint)
    recorded = json.loads((run / CONFIG_FILE).read_text()).get("preset", UNRECORDED)
    folder.mkdir(parents=True, exist_ok=True)
    files = [name for name in (CONFIG_FILE, MODEL_FILE, IDENTIFIERS_FILE) if (checkpoint / name).is_file()]
    for name in files:
        shutil.copyfile(checkpoint / name, folder / name)
    (folder / CARD_FILE).write_text(model_card(repo, config, recorded, tested, checkpoint.name))
    return {"checkpoint": str(checkpoint), "files": ", ".join([*files, CARD_FILE]),
            "exact_accuracy": "not measured" if tested is None else f"{tested['exact_accuracy']:.4f}"}

