"""TRM checkpoints (shared/TRM.md section 5): written by either backend, converted bit for bit, read by the other
with identical predictions, and imported from the official code's step files."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import make_dataset
from hrm_convert.backends import convert_checkpoint
from hrm_shared.app.backend import import_backend
from hrm_shared.core.checkpoint import CheckpointConfig, read_checkpoint_config
from hrm_shared.core.config import TrainConfig, TRMConfig
from hrm_shared.core.contract import BACKENDS, installed
from hrm_shared.core.init import init_weights
from hrm_shared.core.registry import FAMILIES

VARIANTS = [dict(), dict(mlp_t=True, pos_encodings="none")]


def trm_config(**changes) -> TRMConfig:
    """The smallest CPU config of shared/TRM.md section 6 on a dataset of vocab 10, seq_len 16, 3 puzzle ids."""
    return TRMConfig(vocab_size=10, seq_len=16, num_puzzle_identifiers=3, hidden_size=64, num_heads=2, H_cycles=2,
                     L_cycles=2, halt_max_steps=3, puzzle_emb_ndim=64, puzzle_emb_len=2, forward_dtype="float32",
                     **changes)


def weights_of(config: TRMConfig) -> dict[str, np.ndarray]:
    """init_weights with a random puzzle table and Q head, so the prefix and halting matter."""
    weights = init_weights(config, 0)
    rng = np.random.default_rng(1)
    weights["puzzle_emb.weights"] = rng.normal(0, 1, weights["puzzle_emb.weights"].shape).astype(np.float32)
    weights["q_head.weight"] = rng.normal(0, 0.1, weights["q_head.weight"].shape).astype(np.float32)
    return weights


def predictions(name: str, checkpoint: Path, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    package = import_backend(name)
    model, _ = package.checkpoint.load_checkpoint(checkpoint, "cpu")
    return package.evaluate.predict_numpy(model, batch)


def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds", groups=1, puzzles_per_group=1, seq_len=16, vocab_size=10)


def test_registry_families_are_distinct():
    assert {family.module for family in FAMILIES.values()} == {"model", "trm"}


@pytest.mark.parametrize("changes", VARIANTS)
def test_a_trm_checkpoint_converts_bit_for_bit_and_predicts_alike(tmp_path, changes):
    for name in BACKENDS:
        if not installed(name):
            pytest.skip(f"{name} is not installed")
    config = trm_config(**changes)
    torch_package = import_backend("torch")
    model = torch_package.model.build_model(config)
    torch_package.model.load_canonical(model, weights_of(config))
    torch_package.checkpoint.save_checkpoint(tmp_path / "t", model, CheckpointConfig(model=config,
                                                                                       train=TrainConfig(ema=True)))
    assert read_checkpoint_config(tmp_path / "t").model == config
    convert_checkpoint(tmp_path / "t", tmp_path / "m", "mlx")
    convert_checkpoint(tmp_path / "m", tmp_path / "t2", "torch")
    assert (tmp_path / "t2" / "model.safetensors").read_bytes() == (tmp_path / "t" / "model.safetensors").read_bytes()
    rng = np.random.default_rng(3)
    batch = {"inputs": rng.integers(0, 10, (5, 16)).astype(np.int32), "labels": np.zeros((5, 16), np.int32),
             "puzzle_identifiers": rng.integers(0, 3, 5).astype(np.int32)}
    ours, theirs = predictions("torch", tmp_path / "t", batch), predictions("mlx", tmp_path / "m", batch)
    assert np.array_equal(ours["predictions"], theirs["predictions"])
    np.testing.assert_allclose(ours["q_halt_logits"], theirs["q_halt_logits"], atol=1e-4)


def write_official_trm(run: Path, config: TRMConfig, weights: dict, with_name: bool = True) -> Path:
    """An official TRM run directory: step_5 (torch.save'd, compiled prefixes, bf16 H_init/L_init) and its
    all_config.yaml with the keys the reference's trm.yaml writes (H_layers included, and ignored)."""
    import torch

    run.mkdir()
    prefix = "_orig_mod.model.inner."
    state = {prefix + k: torch.from_numpy(v) for k, v in weights.items()}
    for name in ("H_init", "L_init"):
        state[prefix + name] = state[prefix + name].to(torch.bfloat16)
    torch.save(state, run / "step_5")
    arch = {k: getattr(config, k) for k in ("hidden_size", "num_heads", "expansion", "L_layers", "H_cycles",
                                            "L_cycles", "halt_max_steps", "halt_exploration_prob", "puzzle_emb_ndim",
                                            "puzzle_emb_len", "pos_encodings", "forward_dtype", "mlp_t",
                                            "no_ACT_continue")}
    arch.update(H_layers=0, loss={"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"})
    if with_name:
        arch["name"] = FAMILIES["trm"].reference_arch
    (run / "all_config.yaml").write_text(yaml.safe_dump({
        "arch": arch, "epochs": 50000, "eval_interval": 5000, "global_batch_size": 768, "lr": 1e-4,
        "puzzle_emb_lr": 1e-4, "weight_decay": 1.0, "puzzle_emb_weight_decay": 1.0, "ema": True, "ema_rate": 0.999}))
    return run / "step_5"


@pytest.mark.parametrize("changes", VARIANTS)
@pytest.mark.parametrize("with_name", [True, False])
def test_official_trm_import(tmp_path, changes, with_name):
    if not installed("torch"):
        pytest.skip("reading the official pickle needs torch")
    from hrm_convert.official import import_official

    config = trm_config(**changes)
    weights = weights_of(config)
    step = write_official_trm(tmp_path / "run", config, weights, with_name)
    summary = import_official(step, dataset(tmp_path), tmp_path / "ours", "torch")
    assert summary["family"] == "trm" and summary["ignored arch keys"] == "H_layers"
    assert "by position only" in summary["warning"] and "pass@2" in summary["warning"]  # 3 puzzle ids
    ours = read_checkpoint_config(tmp_path / "ours")
    assert ours.model == config and ours.train.ema and ours.train.epochs == 50000
    model, _ = import_backend("torch").checkpoint.load_checkpoint(tmp_path / "ours", "cpu")
    state = import_backend("torch").model.canonical_state(model)
    assert all(np.array_equal(state[k], weights[k]) for k in weights)


def test_the_official_import_says_how_to_install_pyyaml(tmp_path, monkeypatch):
    if not installed("torch"):
        pytest.skip("reading the official pickle needs torch")
    import sys

    from helpers import invoke

    config = trm_config()
    step = write_official_trm(tmp_path / "run", config, weights_of(config))
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    r = invoke("convert", "--from-official", step, "--data", dataset(tmp_path), tmp_path / "ours")
    assert r.exit_code == 1 and "needs PyYAML: pip install 'hrm-reasoning[official]'" in r.output
    assert not (tmp_path / "ours").exists()

