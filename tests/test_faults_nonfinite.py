"""Non-finite weights (a diverged run): refused when a checkpoint is loaded (each backend), converted or resumed, and
never written as `<run>/last`. The poisoned files are written by the tests themselves."""

import importlib

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from backends import tiny_config, tiny_weights
from helpers import TINY, invoke, make_dataset, run
from hrm_convert.backends import convert_checkpoint
from hrm_shared.app.backend import import_backend
from hrm_shared.app.run import new_run
from hrm_shared.app.train_loop import RunOptions, TrainingRun
from hrm_shared.core.checkpoint import MODEL_FILE, TRAIN_STATE_FILE, CheckpointConfig
from hrm_shared.core.errors import HRMError


def poison(path, name: str, value: float = np.inf) -> None:
    """Set the first value of tensor `name` in the safetensors file `path` to `value`, keeping its metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    tensors[name].reshape(-1)[0] = value
    save_file(tensors, path, metadata=metadata)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_loading_refuses_non_finite_weights(backend, tmp_path, value):
    config = tiny_config()
    backend.package.checkpoint.save_checkpoint(tmp_path / "ckpt", backend.build(config, tiny_weights(config)),
                                               CheckpointConfig(model=config))
    poison(tmp_path / "ckpt" / MODEL_FILE, "lm_head.weight", value)
    with pytest.raises(HRMError, match=r"tensor 'lm_head.weight' holds NaN or infinite values"):
        backend.package.checkpoint.load_checkpoint(tmp_path / "ckpt", "cpu")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_convert_refuses_non_finite_weights(tmp_path, dtype):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file as save_torch

    config = tiny_config()
    package = import_backend("torch")
    package.checkpoint.save_checkpoint(tmp_path / "src", package.model.build_model(config),
                                       CheckpointConfig(model=config))
    tensors = load_torch(tmp_path / "src" / MODEL_FILE)
    tensors["H_init"] = tensors["H_init"].to(getattr(torch, dtype))
    tensors["H_init"][0] = float("nan")  # bfloat16, as the reference stores H_init: the check reads the bits
    save_torch(tensors, tmp_path / "src" / MODEL_FILE)
    with pytest.raises(HRMError, match=r"tensor 'H_init' holds NaN or infinite values"):
        convert_checkpoint(tmp_path / "src", tmp_path / "dst", "mlx")
    assert not (tmp_path / "dst").exists()


def test_evaluate_fails_on_non_finite_weights(tmp_path):
    data = make_dataset(tmp_path / "ds")
    assert run("init", tmp_path / "ckpt", "--backend", "torch", "--data", data, *TINY).exit_code == 0
    poison(tmp_path / "ckpt" / MODEL_FILE, "q_head.weight", np.nan)
    r = invoke("evaluate", tmp_path / "ckpt", data, "--backend", "torch")
    assert r.exit_code == 1 and "lm_loss" not in r.output
    assert r.output.strip().splitlines()[-1].startswith("Error: ") and "'q_head.weight' holds NaN" in r.output


@pytest.mark.parametrize("file, name", [(MODEL_FILE, "lm_head.weight"), (TRAIN_STATE_FILE, None)])
def test_resume_refuses_a_poisoned_last_checkpoint(tmp_path, file, name):
    data = make_dataset(tmp_path / "ds")
    run_dir = tmp_path / "run"
    assert run("train", "--backend", "torch", "--data", data, *TINY, "--out", run_dir, "--max-steps", 2,
               "--eval-interval", 0).exit_code == 0
    path = run_dir / "last" / file
    name = name or next(k for k in load_file(path) if k.startswith("adam.") and k.endswith(".v"))
    poison(path, name)
    r = invoke("train", "--resume", run_dir, "--max-steps", 4)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert f"{file}: tensor {name!r} holds NaN or infinite values" in r.output
    assert "last good checkpoint" not in r.output


def test_a_non_finite_training_state_is_never_written_as_last(tmp_path):
    data = make_dataset(tmp_path / "ds")
    run_dir = tmp_path / "run"
    package = import_backend("torch")
    config = new_run(run_dir, "tiny", data, TINY[3::2], None, "torch", {})  # TINY[3::2]: its --set values
    collective, device = importlib.import_module("hrm_torch.distributed").connect("cpu")
    training = TrainingRun(package, collective, device, run_dir, config,
                           RunOptions(eval_interval=0, checkpoint_every=2, compile=False), resume=False)
    try:
        for _ in range(3):
            training.take_step()  # saves <run>/last at step 2
        state = training.trainer.state_dict()
        moment = next(k for k in state if k.startswith("adam.") and k.endswith(".v"))
        state[moment].reshape(-1)[0] = np.inf  # the second moment overflowed; the weights are still finite
        training.trainer.load_state_dict(state)
        with pytest.raises(HRMError, match=rf"training state {moment!r} is not finite at step 3: training "
                                           rf"diverged; .*keeps the last good checkpoint, step 2"):
            training.save_last()
    finally:
        training.close()
    saved = load_file(run_dir / "last" / TRAIN_STATE_FILE)
    assert int(saved["adam.step"]) == 2 and all(np.isfinite(v).all() for v in saved.values())
