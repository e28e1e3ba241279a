"""Conversion between the backends' checkpoints, import of the reference's checkpoints, and the CLI commands
`hrm init` and `hrm convert` (shared/DESIGN.md sections 7 and 8: the round trip torch -> mlx -> torch is bit-exact).
The conversion tests run every registered model family (the `family` fixture); the rest HRM's tiny config."""

import json
import sys

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file as load_numpy

from backends import adapter, family_config, random_batch, tiny_config, tiny_weights
from helpers import invoke, make_dataset, reference_dataset, write_reference
from hrm_convert.backends import convert_checkpoint, read_safetensors_header
from hrm_shared.app.backend import import_backend
from hrm_shared.core.checkpoint import (
    CONFIG_FILE,
    IDENTIFIERS_FILE,
    MODEL_FILE,
    TRAIN_STATE_FILE,
    CheckpointConfig,
    read_checkpoint_config,
)
from hrm_shared.core.config import HRMConfig, preset
from hrm_shared.core.errors import HRMError
from hrm_shared.core.init import count_parameters, init_weights

OTHER = {"torch": "mlx", "mlx": "torch"}


def one_segment(a, model, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    b = a.batch(batch)
    return a.step(model, model.initial_carry(b), b, False, None)[1]


def save_with(a, directory, config: HRMConfig, weights: dict, init_dtype: str = "float32") -> None:
    """A checkpoint written by adapter `a`'s backend, with H_init and L_init held (and so stored) in `init_dtype`."""
    model = a.build(config, weights)
    if init_dtype == "bfloat16":
        for name in ("H_init", "L_init"):
            value = getattr(model.inner, name)
            bf16 = value.to(a.torch.bfloat16) if a.name == "torch" else value.astype(a.mx.bfloat16)
            setattr(model.inner, name, bf16)
    identifiers = ["<blank>", "p1", "p2"]
    import_backend(a.name).checkpoint.save_checkpoint(directory, model, CheckpointConfig(model=config), identifiers)


def bits(path, loader: str) -> dict[str, tuple[str, np.ndarray]]:
    """{name: (dtype, raw bits as unsigned integers)} of a safetensors file read by torch's or MLX's loader; the
    bits cross into numpy as integers, so bfloat16 never passes through numpy."""
    if loader == "torch":
        import torch
        from safetensors.torch import load_file
        views = {2: (torch.int16, np.uint16), 4: (torch.int32, np.uint32)}
        return {k: (str(t.dtype).removeprefix("torch."), t.view(views[t.element_size()][0]).numpy()
                    .view(views[t.element_size()][1])) for k, t in load_file(path).items()}
    import mlx.core as mx
    views = {2: mx.uint16, 4: mx.uint32}
    return {k: (str(a.dtype).removeprefix("mlx.core."), np.array(a.view(views[a.itemsize])))
            for k, a in mx.load(str(path)).items()}


def same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k][0] == b[k][0] and np.array_equal(a[k][1], b[k][1]) for k in a)


@pytest.mark.parametrize("init_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("start", ["torch", "mlx"])
def test_round_trip_through_the_other_backend_is_bit_exact(both, tmp_path, start, init_dtype, family):
    config = family_config(family)
    save_with(adapter(start), tmp_path / "a", config, tiny_weights(config), init_dtype)
    convert_checkpoint(tmp_path / "a", tmp_path / "b", OTHER[start])
    convert_checkpoint(tmp_path / "b", tmp_path / "c", start)
    files = [tmp_path / d / MODEL_FILE for d in "abc"]
    assert bits(files[0], "torch")["H_init"][0] == init_dtype
    for loader in ("torch", "mlx"):
        first = bits(files[0], loader)
        assert all(same_bits(first, bits(f, loader)) for f in files[1:]), loader
    assert same_bits(bits(files[0], "torch"), bits(files[0], "mlx"))
    assert [read_checkpoint_config(tmp_path / d).backend for d in "abc"] == [start, OTHER[start], start]
    assert json.loads((tmp_path / "c" / IDENTIFIERS_FILE).read_text()) == ["<blank>", "p1", "p2"]


@pytest.mark.parametrize("init_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("start", ["torch", "mlx"])
def test_a_checkpoint_from_one_backend_runs_identically_in_the_other(both, tmp_path, start, init_dtype, family):
    config = family_config(family)
    weights = tiny_weights(config)  # H_init, L_init hold bfloat16 values: storing them as bfloat16 loses nothing
    source, target = adapter(start), adapter(OTHER[start])
    save_with(source, tmp_path / "a", config, weights, init_dtype)
    convert_checkpoint(tmp_path / "a", tmp_path / "b", target.name)
    batch = random_batch(np.random.default_rng(1), config)
    expected = one_segment(target, target.build(config, weights), batch)
    reference = one_segment(source, source.build(config, weights), batch)
    for directory in ("a", "b"):  # the unconverted directory loads too: the formats are the same
        model, _ = import_backend(target.name).checkpoint.load_checkpoint(tmp_path / directory, "cpu")
        state = target.model.canonical_state(model)
        assert all(np.array_equal(state[k], weights[k]) for k in weights)
        outputs = one_segment(target, model, batch)
        for name in expected:
            assert np.array_equal(outputs[name], expected[name]), name
            assert np.abs(outputs[name] - reference[name]).max() <= 1e-4, name


def test_convert_checks_the_tensors_against_the_config(tmp_path):
    config = tiny_config()
    save_with(adapter("torch"), tmp_path / "a", config, tiny_weights(config))
    d = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    d["model"]["L_layers"] = 1
    (tmp_path / "a" / CONFIG_FILE).write_text(json.dumps(d))
    with pytest.raises(HRMError, match="unexpected tensor 'L_level.layers.1.*different model config"):
        convert_checkpoint(tmp_path / "a", tmp_path / "b", "mlx")
    assert not (tmp_path / "b").exists()


def test_convert_refuses_a_damaged_file(tmp_path):
    config = tiny_config()
    save_with(adapter("torch"), tmp_path / "a", config, tiny_weights(config))
    path = tmp_path / "a" / MODEL_FILE
    assert read_safetensors_header(path)["q_head.bias"] == ("float32", (2,))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(HRMError, match="not a valid safetensors file"):
        convert_checkpoint(tmp_path / "a", tmp_path / "b", "mlx")
    path.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00[1,2]")
    with pytest.raises(HRMError, match="not a JSON object"):
        convert_checkpoint(tmp_path / "a", tmp_path / "b", "mlx")


def test_convert_output_rules(tmp_path):
    config = tiny_config()
    save_with(adapter("torch"), tmp_path / "a", config, tiny_weights(config))
    (tmp_path / "a" / TRAIN_STATE_FILE).write_bytes(b"optimizer")
    summary = convert_checkpoint(tmp_path / "a", tmp_path / "b", "mlx")
    assert "left out" in summary and not (tmp_path / "b" / TRAIN_STATE_FILE).exists()
    with pytest.raises(HRMError, match="already holds files; pass --force"):
        convert_checkpoint(tmp_path / "a", tmp_path / "b", "mlx")
    convert_checkpoint(tmp_path / "a", tmp_path / "b", "torch", force=True)
    assert read_checkpoint_config(tmp_path / "b").backend == "torch"
    with pytest.raises(HRMError, match="is the source checkpoint"):
        convert_checkpoint(tmp_path / "a", tmp_path / "a", "mlx", force=True)
    with pytest.raises(HRMError, match="unknown backend 'jax'"):
        convert_checkpoint(tmp_path / "a", tmp_path / "c", "jax")
    with pytest.raises(HRMError, match="is not a checkpoint"):
        convert_checkpoint(tmp_path, tmp_path / "c", "mlx")


# ---- the reference's checkpoints ----

@pytest.mark.parametrize("prefix", ["_orig_mod.model.inner.", "model.inner.", ""])
def test_official_import_loads_identically_in_each_backend(backend, tmp_path, prefix):
    adapter("torch")  # reading the reference's pickle needs torch
    from hrm_convert.official import import_official

    config = tiny_config()
    weights = tiny_weights(config)
    data = reference_dataset(tmp_path)
    step = write_reference(tmp_path / "run", config, weights, prefix)
    summary = import_official(step, data, tmp_path / "ours", backend.name)
    assert summary["dropped"] == f"{prefix}rotary_emb.cos_cached, {prefix}rotary_emb.sin_cached"
    assert summary["ignored arch keys"] == "puzzle_emb_len"
    model, ours = import_backend(backend.name).checkpoint.load_checkpoint(tmp_path / "ours", "cpu")
    assert ours.model == config and ours.backend == backend.name
    assert ours.train.lr == 7e-5 and ours.train.global_batch_size == 384 and ours.train.eval_interval == 2000
    assert ours.dataset["seq_len"] == 16 and len(ours.dataset["fingerprint"]) == 16
    assert (tmp_path / "ours" / IDENTIFIERS_FILE).read_bytes() == (data / IDENTIFIERS_FILE).read_bytes()
    assert all(v.dtype == np.float32 for v in load_numpy(tmp_path / "ours" / MODEL_FILE).values())
    state = backend.model.canonical_state(model)
    assert all(np.array_equal(state[k], weights[k]) for k in weights)
    batch = random_batch(np.random.default_rng(2), config)
    expected = one_segment(backend, backend.build(config, weights), batch)
    outputs = one_segment(backend, model, batch)
    assert all(np.array_equal(outputs[k], expected[k]) for k in expected)


def test_official_import_with_learned_positions(tmp_path):
    adapter("torch")
    from hrm_convert.official import import_official

    config = tiny_config(pos_encodings="learned", loss_type="softmax_cross_entropy")
    step = write_reference(tmp_path / "run", config, tiny_weights(config))
    summary = import_official(step, reference_dataset(tmp_path), tmp_path / "ours")
    assert summary["dropped"] == "none"
    assert read_checkpoint_config(tmp_path / "ours").model == config


def _import_error(tmp_path, message, config=None, weights=None, vocab_size=10, extra=None, damage=None):
    adapter("torch")
    from hrm_convert.official import import_official

    config = config or tiny_config()
    step = write_reference(tmp_path / "run", config, weights or tiny_weights(config), extra=extra)
    if damage:
        damage(step)
    with pytest.raises(HRMError, match=message):
        import_official(step, reference_dataset(tmp_path, vocab_size), tmp_path / "ours")
    assert not (tmp_path / "ours").exists()


def test_official_import_refuses_a_puzzle_table_that_does_not_fit_the_dataset(tmp_path):
    config = tiny_config(num_puzzle_identifiers=5)
    _import_error(tmp_path, "puzzle table of 5 rows but the dataset .* num_puzzle_identifiers=3", config,
                  tiny_weights(config))


def test_official_import_refuses_a_token_table_that_does_not_fit_the_dataset(tmp_path):
    _import_error(tmp_path, "token table of 10 rows but the dataset .* vocab_size=7", vocab_size=7)


def test_official_import_refuses_tensors_the_config_does_not_describe(tmp_path):
    extra = {"H_level.layers.1.mlp.down_proj.weight": np.zeros((64, 256), np.float32)}
    _import_error(tmp_path, "unexpected tensor 'H_level.layers.1.mlp.down_proj.weight'.*all_config.yaml",
                  extra=extra)


def test_official_import_needs_its_config_and_a_state_dict(tmp_path):
    _import_error(tmp_path, "all_config.yaml is missing", damage=lambda step: (step.parent / "all_config.yaml")
                  .unlink())


def test_official_import_refuses_a_file_that_is_not_a_state_dict(tmp_path):
    _import_error(tmp_path, "not a torch.save'd state dict", damage=lambda step: step.write_bytes(b"garbage"))


def test_official_import_refuses_a_bad_arch(tmp_path):
    def damage(step):
        path = step.parent / "all_config.yaml"
        d = yaml.safe_load(path.read_text())
        del d["arch"]["H_cycles"]
        path.write_text(yaml.safe_dump(d))
    _import_error(tmp_path, "arch lacks H_cycles", damage=damage)


@pytest.mark.parametrize("section, key, value, message", [
    ("arch", "H_cycles", 10**20, r"H_cycles=\d+ must be in \[1, "), (None, "lr", -1.0, r"lr=-1.0 must be >= 0"),
    (None, "beta2", 1.5, r"beta2=1.5 must be in \[0, 1\)")])
def test_official_import_refuses_out_of_range_values(tmp_path, section, key, value, message):
    def damage(step):
        path = step.parent / "all_config.yaml"
        d = yaml.safe_load(path.read_text())
        (d[section] if section else d)[key] = value
        path.write_text(yaml.safe_dump(d))
    _import_error(tmp_path, f"all_config.yaml: {message}", damage=damage)


def test_official_import_refuses_non_finite_weights(tmp_path):
    config = tiny_config()
    weights = tiny_weights(config)
    weights["lm_head.weight"][0, 0] = np.nan
    _import_error(tmp_path, r"step_10: tensor 'lm_head.weight' holds NaN or infinite values", weights=weights)


# ---- the CLI ----

def test_cli_init_then_convert(tmp_path):
    data = make_dataset(tmp_path / "ds", seq_len=16, vocab_size=10)
    r = invoke("init", "--backend", "torch", "--preset", "tiny", "--data", data, "--seed", 3, "--set", "L_layers=2",
               tmp_path / "t")
    assert r.exit_code == 0, r.output
    ours = read_checkpoint_config(tmp_path / "t")
    assert f"parameters              {count_parameters(ours.model):,}" in r.output
    assert "num_puzzle_identifiers  73" in r.output
    model, _ = preset("tiny")
    assert ours.model == model.replace(L_layers=2, vocab_size=10, seq_len=16, num_puzzle_identifiers=73)
    assert ours.train.seed == 3 and ours.backend == "torch" and ours.dataset["path"] == str(data)
    stored = load_numpy(tmp_path / "t" / MODEL_FILE)
    expected = init_weights(ours.model, 3)
    assert stored.keys() == expected.keys() and all(np.array_equal(stored[k], expected[k]) for k in expected)
    r = invoke("init", "--backend", "mlx", "--preset", "tiny", "--data", data, "--seed", 3, "--set", "L_layers=2",
               tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert all(np.array_equal(v, expected[k]) for k, v in load_numpy(tmp_path / "m" / MODEL_FILE).items())
    r = invoke("convert", tmp_path / "t", tmp_path / "c", "--to", "mlx")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c" / MODEL_FILE).read_bytes() == (tmp_path / "t" / MODEL_FILE).read_bytes()
    assert read_checkpoint_config(tmp_path / "c").backend == "mlx"
    r = invoke("convert", tmp_path / "m", tmp_path / "c", "--to", "torch")
    assert r.exit_code == 1 and "already holds files; pass --force" in r.output
    assert invoke("convert", tmp_path / "m", tmp_path / "c", "--to", "torch", "--force").exit_code == 0
    r = invoke("init", "--backend", "torch", "--preset", "tiny", "--data", data, tmp_path / "t")
    assert r.exit_code == 1 and "already holds files" in r.output


def test_cli_init_refuses_data_fields_and_bad_keys(tmp_path):
    data = make_dataset(tmp_path / "ds", seq_len=16, vocab_size=10)
    r = invoke("init", "--backend", "torch", "--preset", "tiny", "--data", data, "--set", "vocab_size=3",
               tmp_path / "t")
    assert r.exit_code == 1 and "come from the dataset" in r.output
    r = invoke("init", "--backend", "torch", "--preset", "tiny", "--data", data, "--set", "hiden_size=3",
               tmp_path / "t")
    assert r.exit_code == 1 and "unknown config key 'hiden_size'" in r.output
    assert not (tmp_path / "t").exists()


def test_cli_convert_from_official(tmp_path):
    adapter("torch")
    config = tiny_config()
    step = write_reference(tmp_path / "run", config, tiny_weights(config))
    data = reference_dataset(tmp_path)
    r = invoke("convert", "--from-official", step, "--data", data, tmp_path / "ours", "--to", "mlx")
    assert r.exit_code == 0, r.output
    assert "rotary_emb.cos_cached" in r.output and read_checkpoint_config(tmp_path / "ours").backend == "mlx"
    r = invoke("convert", "--from-official", step, "--data", data, tmp_path / "ours")
    assert r.exit_code == 1 and "already holds files" in r.output


@pytest.mark.parametrize("args", [["only-one"], ["a", "b"], ["a", "b", "--to", "mlx", "--data", "."],
                                  ["--from-official", "{step}", "x"]])
def test_cli_convert_usage_errors(tmp_path, args):
    step = tmp_path / "step_1"
    step.write_bytes(b"")
    r = invoke("convert", *[a.format(step=step) for a in args])
    assert r.exit_code == 2 and "Usage" in r.output


@pytest.mark.parametrize("framework", ["torch", "mlx.core"])
def test_cli_says_how_to_install_a_missing_backend(tmp_path, monkeypatch, framework):
    data = make_dataset(tmp_path / "ds", seq_len=16, vocab_size=10)
    name = framework.partition(".")[0]
    monkeypatch.setitem(sys.modules, framework, None)  # `import framework` now fails as if it were not installed
    r = invoke("init", "--backend", name, "--preset", "tiny", "--data", data, tmp_path / "t")
    assert r.exit_code == 1 and f"the {name} backend is not installed: pip install 'hrm-reasoning[{name}]'" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "t").exists()
    if name == "torch":
        r = invoke("convert", "--from-official", data / IDENTIFIERS_FILE, "--data", data, tmp_path / "t")
        assert r.exit_code == 1 and "pip install 'hrm-reasoning[torch]'" in r.output
