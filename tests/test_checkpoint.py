"""Checkpoint directories in each backend (shared/DESIGN.md section 7): round trips, strict loading, backend
selection."""

import inspect
import json
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from backends import random_batch, tiny_config, tiny_weights
from hrm_shared.app.backend import BACKENDS, default_backend, import_backend
from hrm_shared.core.checkpoint import CONFIG_FILE, MODEL_FILE, CheckpointConfig, read_checkpoint_config
from hrm_shared.core.config import TrainConfig
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import NON_TRAINABLE, canonical_shapes


def checkpoint_module(adapter):
    return import_backend(adapter.name).checkpoint


def one_segment(adapter, model, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs of the first eval segment on `batch`, as numpy."""
    b = adapter.batch(batch)
    return adapter.step(model, model.initial_carry(b), b, False, None)[1]


def saved(adapter, tmp_path, **changes):
    """(directory, config, weights) of a tiny checkpoint written by `adapter`'s backend."""
    config = tiny_config(**changes)
    weights = tiny_weights(config)
    directory = tmp_path / "ckpt"
    checkpoint_module(adapter).save_checkpoint(directory, adapter.build(config, weights),
                                               CheckpointConfig(model=config, train=TrainConfig(seed=7)))
    return directory, config, weights


@pytest.mark.parametrize("pos_encodings", ["rope", "learned"])
def test_round_trip_gives_identical_outputs(backend, tmp_path, pos_encodings):
    config = tiny_config(pos_encodings=pos_encodings)
    weights = tiny_weights(config)
    model = backend.build(config, weights)
    module = checkpoint_module(backend)
    module.save_checkpoint(tmp_path / "ckpt", model, CheckpointConfig(model=config, dataset={"seq_len": 16}),
                           ["<blank>", "a", "b"])
    loaded, loaded_config = module.load_checkpoint(tmp_path / "ckpt", "cpu")
    assert loaded_config.model == config and loaded_config.backend == backend.name
    assert loaded_config.dataset == {"seq_len": 16}
    assert json.loads((tmp_path / "ckpt" / "identifiers.json").read_text()) == ["<blank>", "a", "b"]
    batch = random_batch(np.random.default_rng(0), config)
    before, after = one_segment(backend, model, batch), one_segment(backend, loaded, batch)
    for name in before:
        assert np.array_equal(before[name], after[name]), name
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["ckpt"]  # no temporary directory left behind


def test_saved_file_holds_canonical_float32_tensors(backend, tmp_path):
    directory, config, weights = saved(backend, tmp_path)
    stored = load_file(directory / MODEL_FILE)
    assert {k: v.shape for k, v in stored.items()} == canonical_shapes(config)
    for name, value in stored.items():
        assert value.dtype == np.float32 and np.array_equal(value, weights[name]), name


def test_loaded_model_keeps_initial_states_and_puzzle_table_frozen(backend, tmp_path):
    directory, config, _ = saved(backend, tmp_path)
    model, _ = checkpoint_module(backend).load_checkpoint(directory, "cpu")
    assert set(backend.trainable_shapes(model)) == set(canonical_shapes(config)) - set(NON_TRAINABLE)


def test_save_replaces_a_checkpoint_but_not_other_files(backend, tmp_path):
    directory, config, weights = saved(backend, tmp_path)
    module = checkpoint_module(backend)
    changed = dict(weights, **{"q_head.bias": np.array([1.0, 2.0], np.float32)})
    module.save_checkpoint(directory, backend.build(config, changed), CheckpointConfig(model=config))
    assert np.array_equal(load_file(directory / MODEL_FILE)["q_head.bias"], [1.0, 2.0])
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(HRMError, match="not a checkpoint's"):
        module.save_checkpoint(other, backend.build(config, weights), CheckpointConfig(model=config))
    assert (other / "todo.txt").read_text() == "keep me"


def _edit_tensors(directory, edit) -> None:
    tensors = load_file(directory / MODEL_FILE)
    edit(tensors)
    save_file(tensors, directory / MODEL_FILE)


def _edit_config(directory, **model_changes) -> None:
    path = directory / CONFIG_FILE
    d = json.loads(path.read_text())
    d["model"].update(model_changes)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("damage, message", [
    (lambda d: _edit_tensors(d, lambda t: t.pop("lm_head.weight")), "'lm_head.weight' is missing"),
    (lambda d: _edit_tensors(d, lambda t: t.update(extra=np.zeros(3, np.float32))), "unexpected tensor 'extra'"),
    (lambda d: _edit_tensors(d, lambda t: t.update({"q_head.bias": np.zeros(3, np.float32)})),
     r"'q_head.bias' has shape \(3,\) but config.json needs \(2,\)"),
    (lambda d: _edit_tensors(d, lambda t: t.update({"H_init": t["H_init"].astype(np.float16)})),
     "'H_init' is stored as float16"),
    (lambda d: _edit_config(d, vocab_size=11), "'embed_tokens.embedding_weight' has shape .* needs"),
    (lambda d: _edit_config(d, H_layers=2), "'H_level.layers.1.self_attn.qkv_proj.weight' is missing"),
    (lambda d: (d / MODEL_FILE).write_bytes(b"not safetensors"), "not a readable safetensors file"),
    (lambda d: (d / CONFIG_FILE).unlink(), "is not a checkpoint"),
    (lambda d: (d / CONFIG_FILE).write_text("{"), "not valid JSON"),
], ids=["missing", "extra", "misshapen", "float16", "config-vocab", "config-layers", "corrupt", "no-config",
        "bad-json"])
def test_strict_loading_names_the_problem(backend, tmp_path, damage, message):
    directory, _, _ = saved(backend, tmp_path)
    damage(directory)
    with pytest.raises(HRMError, match=message):
        checkpoint_module(backend).load_checkpoint(directory, "cpu")


def test_loading_a_missing_directory_or_a_bad_device_is_an_error(backend, tmp_path):
    module = checkpoint_module(backend)
    with pytest.raises(HRMError, match="does not exist"):
        module.load_checkpoint(tmp_path / "nothing")
    directory, _, _ = saved(backend, tmp_path)
    with pytest.raises(HRMError, match="device 'tpu'"):
        module.load_checkpoint(directory, "tpu")


def test_both_backends_define_the_same_checkpoint_functions():
    apis = []
    for name in BACKENDS:
        module = import_backend(name).checkpoint
        functions = [(inspect.getsourcelines(f)[1], n, list(inspect.signature(f).parameters))
                     for n, f in vars(module).items() if inspect.isfunction(f) and f.__module__ == module.__name__]
        apis.append([(n, params) for _, n, params in sorted(functions)])
    assert apis[0] == apis[1]


def test_import_backend_returns_the_package_with_its_checkpoint_module():
    for name in BACKENDS:
        package = import_backend(name)
        assert package.__name__ == f"hrm_{name}" and callable(package.checkpoint.load_checkpoint)
    assert default_backend() in BACKENDS
    with pytest.raises(HRMError, match="unknown backend 'jax'"):
        import_backend("jax")


@pytest.mark.parametrize("name, framework", [("torch", "torch"), ("mlx", "mlx.core")])
def test_a_backend_whose_framework_is_missing_is_an_error_with_the_fix(monkeypatch, name, framework):
    monkeypatch.setitem(sys.modules, framework, None)  # `import framework` now fails as if it were not installed
    with pytest.raises(HRMError, match=rf"the {name} backend is not installed: pip install 'hrm-reasoning\[{name}\]'"):
        import_backend(name)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS prefers mlx")
def test_default_backend_falls_back_to_mlx_without_torch(monkeypatch):
    assert default_backend() == "torch"
    monkeypatch.setitem(sys.modules, "torch", None)
    assert default_backend() == "mlx"


def test_checkpoint_config_round_trips_through_json(tmp_path, backend):
    directory, config, _ = saved(backend, tmp_path)
    read = read_checkpoint_config(directory)
    assert read.model == config and read.train == TrainConfig(seed=7) and read.backend == backend.name
