"""The registry's seam: a model family from outside the project (tests/midlevel.py, HRM with a middle level, and its
classes in tests/midlevel_mlx.py and tests/midlevel_torch.py) registers itself, in this process with `register` and
in the benchmark's fresh processes through an `hrm.families` entry point, and then trains, evaluates, converts,
imports and benchmarks through the public commands in both backends, no project file naming it.

Parity as tests/test_train.py: the two backends' losses within 1e-3 over a few steps, predictions of a converted
checkpoint equal, Q logits within 1e-4.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import invoke, make_dataset, read_records, write_reference
from hrm_shared.app.backend import import_backend
from hrm_shared.app.flops import train_step_flops
from hrm_shared.core.checkpoint import read_checkpoint_config
from hrm_shared.core.config import PRESETS
from hrm_shared.core.contract import BACKENDS, installed, model_problems
from hrm_shared.core.init import init_weights
from hrm_shared.core.registry import FAMILIES, register
from midlevel import FAMILY, TINY, MidConfig

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def midlevel(tmp_path, monkeypatch):
    """The family registered here and, as an installed package would, through an entry point that fresh processes
    find on PYTHONPATH; both undone afterwards."""
    for name in BACKENDS:
        if not installed(name):
            pytest.skip(f"{name} is not installed")
    families, presets = dict(FAMILIES), dict(PRESETS)
    register(FAMILY)
    info = tmp_path / "site" / "hrm_midlevel-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hrm-midlevel\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[hrm.families]\n{FAMILY.name} = midlevel:FAMILY\n")
    paths = (str(tmp_path / "site"), str(TESTS), os.environ.get("PYTHONPATH"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    yield FAMILY
    FAMILIES.clear()
    FAMILIES.update(families)
    PRESETS.clear()
    PRESETS.update(presets)


def predictions(backend: str, checkpoint: Path, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    package = import_backend(backend)
    model, _ = package.checkpoint.load_checkpoint(checkpoint, "cpu")
    return package.evaluate.predict_numpy(model, batch)


def test_its_models_follow_the_model_protocol_in_both_backends(midlevel):
    for backend in BACKENDS:
        module = __import__(midlevel.model_module(backend))
        assert model_problems(getattr(module, midlevel.model_class)) == []


def test_it_trains_evaluates_and_converts_through_the_commands(midlevel, tmp_path):
    data = make_dataset(tmp_path / "ds")
    for backend in BACKENDS:
        r = invoke("train", "--backend", backend, "--data", data, "--preset", "midlevel-tiny", "--out",
                   tmp_path / backend, "--max-steps", 4, "--seed", 1)
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / backend / "last" / "config.json").read_text())["family"] == "midlevel"
        assert type(read_checkpoint_config(tmp_path / backend / "last").model) is MidConfig
        r = invoke("evaluate", tmp_path / backend / "last", data, "--halt", "--json", tmp_path / f"{backend}.json")
        assert r.exit_code == 0, r.output
        assert "q_halt > q_continue" in r.output  # the halting rule of a family with a Q target
        assert json.loads((tmp_path / f"{backend}.json").read_text())["metrics"]["count"] > 0
    losses = {b: [r["loss"] for r in read_records(tmp_path / b) if r["split"] == "train"] for b in BACKENDS}
    assert len(losses["torch"]) == 4
    np.testing.assert_allclose(losses["mlx"], losses["torch"], rtol=0, atol=1e-3)
    r = invoke("convert", tmp_path / "torch" / "last", tmp_path / "converted", "--to", "mlx")
    assert r.exit_code == 0, r.output
    rng = np.random.default_rng(2)
    batch = {"inputs": rng.integers(1, 7, (6, 8)).astype(np.int32), "labels": np.zeros((6, 8), np.int32),
             "puzzle_identifiers": rng.integers(0, 73, 6).astype(np.int32)}
    ours, theirs = predictions("torch", tmp_path / "torch" / "last", batch), predictions("mlx", tmp_path / "converted",
                                                                                         batch)
    assert np.array_equal(ours["predictions"], theirs["predictions"])
    np.testing.assert_allclose(ours["q_halt_logits"], theirs["q_halt_logits"], atol=1e-4)


def test_an_official_style_checkpoint_is_recognised_by_its_levels(midlevel, tmp_path):
    data = make_dataset(tmp_path / "ds")
    config = MidConfig(vocab_size=7, seq_len=8, num_puzzle_identifiers=73, **TINY)
    weights = init_weights(config, 3)
    step = write_reference(tmp_path / "run", config, weights)
    reference = yaml.safe_load((step.parent / "all_config.yaml").read_text())
    del reference["arch"]["name"]  # the family must come from the tensors: H_level, M_level and L_level
    reference["arch"]["M_layers"] = config.M_layers
    (step.parent / "all_config.yaml").write_text(yaml.safe_dump(reference))
    r = invoke("convert", "--from-official", step, "--data", data, tmp_path / "imported")
    assert r.exit_code == 0, r.output
    imported = read_checkpoint_config(tmp_path / "imported")
    assert imported.model == config
    model, _ = import_backend("torch").checkpoint.load_checkpoint(tmp_path / "imported", "cpu")
    state = import_backend("torch").model.canonical_state(model)
    assert state.keys() == weights.keys() and all(np.array_equal(state[k], weights[k]) for k in weights)


def test_it_is_benchmarked_in_fresh_processes(midlevel, tmp_path):
    r = invoke("bench", "--preset", "midlevel-tiny", "--steps", 1, "--seconds", 5, "--warmup", 0, "--cycles",
               "none", "--json", tmp_path / "bench.json")
    assert r.exit_code == 0, r.output
    records = json.loads((tmp_path / "bench.json").read_text())["records"]
    assert sorted(record["backend"] for record in records) == sorted(BACKENDS)
    config = MidConfig(vocab_size=11, seq_len=81, num_puzzle_identifiers=1, **TINY)
    for record in records:
        assert record["skipped"] is None and record["steps_per_s"] > 0, record
        assert record["flops_per_step"] == train_step_flops(config, record["batch"])
