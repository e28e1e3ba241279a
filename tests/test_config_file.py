"""`hrm train --config FILE` (shared/app/config_file.py): a preset plus overrides, or a whole config as `hrm config`
prints it, in YAML or JSON; --set on top. What `hrm config` prints is a valid FILE, and the run it starts is the run
`--preset` and `--set` start."""

import json
import re

import pytest

from helpers import TINY, invoke, make_dataset
from hrm_shared.app.config_file import read_config_file
from hrm_shared.core.checkpoint import DATA_FIELDS, read_checkpoint_config
from hrm_shared.core.config import apply_overrides, preset
from hrm_shared.core.errors import HRMError

SETS = TINY[2:]  # TINY's --set pairs
ONE_STEP = ["--backend", "torch", "--max-steps", 1, "--eval-interval", 0]


def trained_config(run):
    """The model and train configs of `run`'s checkpoint."""
    config = read_checkpoint_config(run / "last")
    return config.model, config.train


def test_what_hrm_config_prints_is_a_config_file_that_starts_the_same_run(tmp_path):
    printed = invoke("config", "--preset", "tiny", *SETS, "--set", "lr=0.002")
    assert printed.exit_code == 0
    (tmp_path / "tiny.json").write_text(printed.stdout)
    recipe = read_config_file(tmp_path / "tiny.json")
    expected = apply_overrides(*preset("tiny"), TINY[3::2] + ["lr=0.002"])
    assert recipe.preset is None and recipe.overrides == []
    assert recipe.start[1] == expected[1]
    assert recipe.start[0].replace(**{k: getattr(expected[0], k) for k in DATA_FIELDS}) == expected[0]
    data = make_dataset(tmp_path / "ds")
    r = invoke("train", "--data", data, "--config", tmp_path / "tiny.json", "--out", tmp_path / "file", *ONE_STEP)
    assert r.exit_code == 0, r.output
    r = invoke("train", "--data", data, *TINY, "--set", "lr=0.002", "--out", tmp_path / "flags", *ONE_STEP)
    assert r.exit_code == 0, r.output
    assert trained_config(tmp_path / "file") == trained_config(tmp_path / "flags")
    assert json.loads((tmp_path / "file" / "config.json").read_text())["preset"] is None
    assert json.loads((tmp_path / "flags" / "config.json").read_text())["preset"] == "tiny"


def test_a_yaml_preset_with_overrides_and_set_on_top(tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / "run.yaml").write_text("preset: tiny\noverrides:\n  hidden_size: 32\n  puzzle_emb_ndim: 32\n"
                                       "  train.lr: 0.0005\n  ema: true\n")
    data = make_dataset(tmp_path / "ds")
    r = invoke("train", "--data", data, "--config", tmp_path / "run.yaml", "--set", "global_batch_size=8",
               "--set", "halt_max_steps=3", "--out", tmp_path / "run", *ONE_STEP)
    assert r.exit_code == 0, r.output
    model, train = trained_config(tmp_path / "run")
    assert (model.hidden_size, model.halt_max_steps, train.lr, train.ema, train.global_batch_size) == (32, 3, 5e-4,
                                                                                                       True, 8)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["preset"] == "tiny"


@pytest.mark.parametrize("name, text, message", [
    ("a.json", '{"preset": "tinny"}', "unknown preset 'tinny'"),
    ("a.json", '{"preset": "tiny", "set": {"lr": 1}}', "unknown keys set beside preset"),
    ("a.json", '{"preset": "tiny", "overrides": 3}', "overrides must be a mapping"),
    ("a.json", '{"family": "hrm", "model": {}}', "names no preset and lacks train"),
    ("a.json", '{"family": "hrm", "model": {"seq_len": 9}, "train": {}}', "seq_len come from the dataset"),
    ("a.json", '{"family": "hrm", "model": {}, "train": {}}', "model lacks"),
    ("a.json", "[1, 2]", "holds list"),
    ("a.json", "{", "is not valid JSON"),
    ("a.yaml", "preset: [", "is not valid YAML"),
])
def test_a_bad_config_file_names_the_file_and_the_problem(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(HRMError, match=f"^{re.escape(str(tmp_path / name))}.*{re.escape(message)}"):
        read_config_file(tmp_path / name)


def test_config_goes_without_preset_and_resume(tmp_path):
    (tmp_path / "a.json").write_text('{"preset": "tiny"}')
    r = invoke("train", "--data", tmp_path, "--config", tmp_path / "a.json", "--preset", "tiny", "--out", tmp_path)
    assert r.exit_code == 2 and "--config names the preset and starts a new run" in r.output
