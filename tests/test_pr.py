"""`hrm analyze pr` (shared/app/analysis.py): the final states it collects against the inner network run by hand,
its participation ratios against a direct numpy eigendecomposition of their covariance, both families, both
backends."""

import json
from pathlib import Path

import numpy as np
import pytest

from backends import data_config, tiny_weights
from helpers import invoke
from hrm_shared.app.analysis import growth_counts
from hrm_shared.core.checkpoint import CheckpointConfig, dataset_record
from hrm_shared.core.format import load_split
from hrm_shared.data.sudoku_small import build_small_sudoku


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sudoku") / "ds"
    build_small_sudoku(root, 4, 8, 40, seed=3)
    return root


def eigen_pr(states: np.ndarray) -> float:
    """(sum of eigenvalues)^2 / sum of squared eigenvalues of the covariance of `states` [N, D], by eigvalsh."""
    eigenvalues = np.linalg.eigvalsh(np.cov(states.astype(np.float64), rowvar=False))
    return float(eigenvalues.sum() ** 2 / np.square(eigenvalues).sum())


def checkpoint(adapter, directory: Path, data: Path, family: str):
    config = data_config(data, family)
    model = adapter.build(config, tiny_weights(config, seed=6))
    adapter.package.checkpoint.save_checkpoint(directory, model, CheckpointConfig(model=config,
                                                                                  dataset=dataset_record(data)))
    return model


@pytest.mark.parametrize("family, names", [("hrm", ("z_H", "z_L")), ("trm", ("y", "z"))])
def test_pr_of_the_final_states_against_the_eigendecomposition(backend, sudoku, tmp_path, family, names):
    model = checkpoint(backend, tmp_path / "ckpt", sudoku, family)
    r = invoke("analyze", "pr", "--backend", backend.name, tmp_path / "ckpt", sudoku, "--examples", 30,
               "--batch-size", 8, "--halt-max-steps", 5, "--json", tmp_path / "pr.json")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "pr.json").read_text())
    _, sets = load_split(sudoku, "test")
    batch = {"inputs": np.asarray(sets["all"].inputs[:30]).astype(np.int32),
             "labels": np.asarray(sets["all"].labels[:30]).astype(np.int32),
             "puzzle_identifiers": np.zeros(30, np.int32)}
    states = backend.segments(model, batch, 5)
    z_H, z_L = (states[k].reshape(30, -1) for k in ("z_H", "z_L"))
    assert result["examples"] == 30 and result["segments"] == 5 and result["states"] == list(names)
    assert result["dimensions"] == z_H.shape[1] == (model.config.puzzle_emb_len + 16) * 32
    assert result["pr_h"] == pytest.approx(eigen_pr(z_H), rel=1e-4)
    assert result["pr_l"] == pytest.approx(eigen_pr(z_L), rel=1e-4)
    assert result["ratio"] == pytest.approx(eigen_pr(z_H) / eigen_pr(z_L), rel=2e-4)
    growth = result["growth"]
    assert growth["examples"] == growth_counts(30) and growth["examples"][0] == 2 and growth["examples"][-1] == 30
    for i in (1, len(growth["examples"]) - 1):
        n = growth["examples"][i]
        assert growth["pr_h"][i] == pytest.approx(eigen_pr(z_H[:n]), rel=1e-4)
        assert growth["pr_l"][i] == pytest.approx(eigen_pr(z_L[:n]), rel=1e-4)
    assert f"PR({names[0]}) / PR({names[1]})" in r.output
    assert (tmp_path / "pr.png").is_file() or "matplotlib is not installed" in r.output


def test_backends_agree_on_a_converted_checkpoint(both, sudoku, tmp_path):
    torch_adapter, _ = both
    checkpoint(torch_adapter, tmp_path / "torch", sudoku, "hrm")
    assert invoke("convert", tmp_path / "torch", tmp_path / "mlx", "--to", "mlx").exit_code == 0
    results = []
    for name in ("torch", "mlx"):
        r = invoke("analyze", "pr", "--backend", name, tmp_path / name, sudoku, "--batch-size", 16, "--json",
                   tmp_path / f"{name}.json")
        assert r.exit_code == 0, r.output
        results.append(json.loads((tmp_path / f"{name}.json").read_text()))
    ours, theirs = results
    assert ours["examples"] == theirs["examples"] == 40  # all of them: fewer than --examples' 1000
    for key in ("pr_h", "pr_l", "ratio"):
        assert theirs[key] == pytest.approx(ours[key], rel=1e-4), key


def test_too_few_examples_is_an_error(sudoku, tmp_path):
    checkpoint_dir = tmp_path / "ckpt"
    assert invoke("init", checkpoint_dir, "--preset", "tiny", "--data", sudoku, "--set", "hidden_size=32",
                  "--set", "num_heads=1").exit_code == 0
    r = invoke("analyze", "pr", checkpoint_dir, sudoku, "--examples", 1)
    assert r.exit_code == 2 and "--examples" in r.output
