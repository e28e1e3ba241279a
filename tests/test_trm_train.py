"""TRM trains, evaluates and resumes through `hrm` in both backends (shared/TRM.md sections 2-4): the backends'
loss curves agree over 20 steps, a resumed run ends bit-identical to one that never stopped (EMA included), and the
checkpoints hold the averaged weights."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import TRM_TINY, make_dataset, read_records, run
from hrm_shared.core.contract import BACKENDS, installed


@pytest.fixture(params=BACKENDS)
def name(request):
    if not installed(request.param):
        pytest.skip(f"{request.param} is not installed")
    return request.param


def test_trm_trains_evaluates_and_resumes_exactly(tmp_path, name):
    data = make_dataset(tmp_path / "ds")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    done = run("train", "--backend", name, "--data", data, *TRM_TINY, "--out", whole, "--max-steps", 8,
               "--eval-interval", 4)
    assert done.exit_code == 0, done.output
    assert run("train", "--backend", name, "--data", data, *TRM_TINY, "--out", parts, "--max-steps", 4,
               "--eval-interval", 4).exit_code == 0
    again = run("train", "--resume", parts, "--max-steps", 8)
    assert again.exit_code == 0, again.output
    for file in ("model.safetensors", "train_state.safetensors"):
        a, b = load_file(whole / "last" / file), load_file(parts / "last" / file)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), file
    assert read_records(whole) == read_records(parts)
    # The checkpoint holds the average; the training state the raw weights, which differ from it.
    weights, state = load_file(whole / "last" / "model.safetensors"), load_file(whole / "last" /
                                                                                  "train_state.safetensors")
    assert not np.array_equal(weights["lm_head.weight"], state["raw.inner.lm_head.weight"])
    assert np.array_equal(load_file(whole / "step_8" / "model.safetensors")["lm_head.weight"],
                          weights["lm_head.weight"])
    scored = run("evaluate", "--backend", name, whole / "last", data, "--json", tmp_path / "eval.json")
    assert scored.exit_code == 0, scored.output
    evaluated = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    logged = [r for r in read_records(whole) if r["split"] == "test" and r["step"] == 8][0]
    assert evaluated["accuracy"] == pytest.approx(logged["accuracy"], abs=1e-6)  # the loop scored the average too
    # A run directory stands for its latest checkpoint.
    from_run = run("evaluate", "--backend", name, whole, data, "--json", tmp_path / "run.json")
    assert from_run.exit_code == 0, from_run.output
    assert json.loads((tmp_path / "run.json").read_text())["metrics"] == evaluated


def test_twenty_trm_steps_agree_across_backends(tmp_path):
    for backend in BACKENDS:
        if not installed(backend):
            pytest.skip(f"{backend} is not installed")
    data = make_dataset(tmp_path / "ds")
    curves = {}
    for backend in BACKENDS:
        out = tmp_path / backend
        done = run("train", "--backend", backend, "--data", data, *TRM_TINY, "--set", "halt_exploration_prob=0.5",
                   "--out", out, "--max-steps", 20, "--eval-interval", 0)
        assert done.exit_code == 0, done.output
        curves[backend] = [r for r in read_records(out) if r["split"] == "train"]
    torch_curve, mlx_curve = (curves[b] for b in BACKENDS)
    assert [r["count"] for r in torch_curve] == [r["count"] for r in mlx_curve]
    np.testing.assert_allclose([r["loss"] for r in torch_curve], [r["loss"] for r in mlx_curve], atol=1e-3)
    torch_weights, mlx_weights = (load_file(tmp_path / b / "last" / "model.safetensors") for b in BACKENDS)
    for key in torch_weights:
        np.testing.assert_allclose(torch_weights[key], mlx_weights[key], atol=1e-3, err_msg=key)
