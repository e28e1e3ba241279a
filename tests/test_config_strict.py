"""Bad config values and config files (shared/core/config.py, shared/core/checkpoint.py): every field's range is
checked where the config is built, before anything is written, and a checkpoint's config.json loads as strictly as
its tensors: every field present with its JSON type."""

import dataclasses
import json
import typing

import pytest

from helpers import TINY, invoke, make_dataset, run
from hrm_shared.core.checkpoint import CONFIG_FILE, read_checkpoint_config
from hrm_shared.core.config import MAX_DEPTH, TrainConfig, apply_overrides, preset
from hrm_shared.core.errors import HRMError
from hrm_shared.core.registry import FAMILIES

# ---- item 9: ranges ----

@pytest.mark.parametrize("override, message", [
    ("lr=-1", r"lr=-1.0 must be >= 0"),
    ("weight_decay=-1", r"weight_decay=-1.0 must be >= 0"),
    ("puzzle_emb_lr=-1e-2", r"puzzle_emb_lr=-0.01 must be >= 0"),
    ("lr_min_ratio=-3", r"lr_min_ratio=-3.0 must be in \[0, 1\]"),
    ("lr_warmup_steps=-5", r"lr_warmup_steps=-5 must be in \[0, "),
    ("rms_norm_eps=0", r"rms_norm_eps=0.0 must be > 0"),
    ("rope_theta=-1", r"rope_theta=-1.0 must be > 0"),
    (f"H_cycles={10**20}", rf"H_cycles={10**20} must be in \[1, {MAX_DEPTH}\]"),
    (f"L_cycles={MAX_DEPTH + 1}", rf"L_cycles={MAX_DEPTH + 1} must be in \[1, {MAX_DEPTH}\]"),
    ("halt_max_steps=0", r"halt_max_steps=0 must be in \[1, "),
    ("H_layers=1000", r"H_layers=1000 must be in \[1, "),
    ("seed=-1", r"seed=-1 must be in \[0, "),
    ("beta1=-0.1", r"beta1=-0.1 must be in \[0, 1\)"),
    ("beta2=1.5", r"beta2=1.5 must be in \[0, 1\)"),
    ("beta2=1", r"beta2=1.0 must be in \[0, 1\)"),
    ("expansion=nan", r"expansion=nan must be a finite number"),
    ("expansion=1e-6", r"expansion=1e-06 leaves hidden_size=64 no SwiGLU width"),
    ("lr=inf", r"lr=inf must be a finite number"),
    ("halt_exploration_prob=1.5", r"halt_exploration_prob=1.5 must be in \[0, 1\]"),
    ("global_batch_size=0", r"global_batch_size=0 must be in \[1, "),
    (f"epochs={2**40}", rf"epochs={2**40} must be in \[1, 2147483647\]"),
])
def test_out_of_range_values_are_refused_by_name(override, message):
    with pytest.raises(HRMError, match=message):
        apply_overrides(*preset("tiny"), [override])


def test_the_bounds_themselves_are_accepted():
    model, train = apply_overrides(*preset("tiny"), [f"H_cycles={MAX_DEPTH}", "lr=0", "beta2=0", "lr_min_ratio=0",
                                                     "lr_warmup_steps=0", "halt_exploration_prob=1"])
    assert model.H_cycles == MAX_DEPTH and train.lr == 0.0 and train.beta2 == 0.0


@pytest.mark.parametrize("config_class", [family.config for family in FAMILIES.values()] + [TrainConfig])
def test_every_numeric_field_has_a_range(config_class):
    hints = typing.get_type_hints(config_class)
    numeric = [f.name for f in dataclasses.fields(config_class) if hints[f.name] in (int, float)]
    assert numeric and [name for name in numeric if name not in config_class.RANGES] == []


@pytest.mark.parametrize("override", ["seed=-1", "beta2=1.5", "expansion=nan", f"H_cycles={10**20}"])
def test_a_bad_value_is_refused_before_the_run_folder_is_made(tmp_path, override):
    data = make_dataset(tmp_path / "ds")
    out = tmp_path / "run"
    r = invoke("train", "--backend", "torch", "--data", data, *TINY, "--set", override, "--out", out)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1].startswith(f"Error: {override.partition('=')[0]}=")
    assert not out.exists(), "the run folder was made, so the same --out would be refused next"
    r = invoke("init", tmp_path / "ckpt", "--backend", "torch", "--data", data, *TINY, "--set", override)
    assert r.exit_code == 1 and not (tmp_path / "ckpt").exists()


# ---- item 8: config.json is read strictly ----

@pytest.fixture
def checkpoint(tmp_path):
    """(a tiny torch checkpoint written by `hrm init`, the dataset it fits)."""
    data = make_dataset(tmp_path / "ds")
    assert run("init", tmp_path / "ckpt", "--backend", "torch", "--data", data, *TINY).exit_code == 0
    return tmp_path / "ckpt", data


def edit_config(directory, edit) -> None:
    """Rewrite `directory`'s config.json after `edit` changed the parsed dict in place."""
    path = directory / CONFIG_FILE
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["model"].pop("halt_max_steps"), r"model lacks halt_max_steps"),
    (lambda d: d["train"].pop("global_batch_size"), r"train lacks global_batch_size"),
    (lambda d: d.pop("model"), r"lacks 'model'"),
    (lambda d: d.pop("train"), r"lacks 'train'"),
    (lambda d: d.pop("dataset"), r"lacks 'dataset'"),
    (lambda d: d["model"].update(hidden_size="32"), r"model: hidden_size='32' must be an integer"),
    (lambda d: d["model"].update(hidden_size=32.0), r"model: hidden_size=32.0 must be an integer"),
    (lambda d: d["model"].update(pos_encodings=1), r"model: pos_encodings=1 must be a string"),
    (lambda d: d["model"].update(expansion=True), r"model: expansion=True must be a number"),
    (lambda d: d["model"].update(expansion=float("nan")), r"model: expansion=nan must be a finite number"),
    (lambda d: d["model"].update(H_cycles=10**20), r"model: H_cycles=\d+ must be in \[1, "),
    (lambda d: d["train"].update(ema=1), r"train: ema=1 must be true or false"),
    (lambda d: d["train"].update(lr=None), r"train: lr=None must be a number"),
    (lambda d: d.update(model=[1, 2]), r"model is list, not a JSON object"),
    (lambda d: d.update(train=None), r"train is NoneType, not a JSON object"),
    (lambda d: d.update(dataset=[]), r"dataset=\[\] must be a JSON object"),
    (lambda d: d.update(family=["hrm"]), r"family=\['hrm'\] must be a JSON string"),
    (lambda d: d.update(family="gpt"), r"unknown model family 'gpt'"),
    (lambda d: d.update(backend=None), r"backend=None must be a JSON string"),
    (lambda d: d.pop("format"), r"is not an hrm checkpoint config \(format None"),
])
def test_a_damaged_config_json_is_refused_by_name(checkpoint, edit, message):
    directory, data = checkpoint
    edit_config(directory, edit)
    with pytest.raises(HRMError, match=message):
        read_checkpoint_config(directory)
    for args in (("evaluate", directory, data, "--backend", "torch"), ("convert", directory, directory.parent / "b",
                                                                        "--to", "mlx")):
        r = invoke(*args)
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
        assert "Traceback" not in r.output and r.output.strip().splitlines()[-1].startswith("Error: ")
    assert not (directory.parent / "b").exists()


def test_a_config_json_that_is_not_an_object_is_refused(checkpoint):
    directory, _ = checkpoint
    (directory / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(HRMError, match=r"is not an hrm checkpoint config \(format None"):
        read_checkpoint_config(directory)


def test_a_missing_halt_max_steps_never_takes_the_default(checkpoint):
    directory, data = checkpoint
    edit_config(directory, lambda d: d["model"].pop("halt_max_steps"))
    r = invoke("evaluate", directory, data, "--backend", "torch")
    assert r.exit_code == 1 and "lacks halt_max_steps" in r.output and "lm_loss" not in r.output, r.output


def test_checkpoints_written_before_the_model_family_still_load(checkpoint):
    """Before there was a second family, config.json had no "family" and no EMA (train.ema, train.ema_rate)."""
    directory, _ = checkpoint
    before = read_checkpoint_config(directory)
    edit_config(directory, lambda d: [d.pop("family"), d["train"].pop("ema"), d["train"].pop("ema_rate")])
    old = read_checkpoint_config(directory)
    assert old.model == before.model and old.train == before.train.replace(ema=False, ema_rate=0.999)
    edit_config(directory, lambda d: d.update(family="hrm"))  # a checkpoint that names its family was written with EMA
    with pytest.raises(HRMError, match="train lacks ema, ema_rate"):
        read_checkpoint_config(directory)


def test_unknown_keys_are_refused_by_name(checkpoint):
    directory, _ = checkpoint
    edit_config(directory, lambda d: d["model"].update(future_field=1))
    with pytest.raises(HRMError, match="model has the unknown key 'future_field'"):
        read_checkpoint_config(directory)
    edit_config(directory, lambda d: (d["model"].pop("future_field"), d.update(extra_section={})))
    with pytest.raises(HRMError, match="unknown key 'extra_section'"):
        read_checkpoint_config(directory)


def test_resume_reads_the_run_config_as_strictly(tmp_path):
    data = make_dataset(tmp_path / "ds")
    run_dir = tmp_path / "run"
    assert run("train", "--backend", "torch", "--data", data, *TINY, "--out", run_dir, "--max-steps", 1,
               "--eval-interval", 0).exit_code == 0
    edit_config(run_dir, lambda d: d["model"].pop("halt_max_steps"))
    r = invoke("train", "--resume", run_dir)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert "model lacks halt_max_steps" in r.output and "start the run again" in r.output
