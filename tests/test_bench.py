"""The benchmark (`hrm bench`): its FLOP count against torch's own FLOP counter, its records and its JSON."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hrm_shared.app.bench import Spec, measure, synthetic_batch
from hrm_shared.app.cli import main
from hrm_shared.app.flops import eval_flops, peak_flops, train_step_flops
from hrm_shared.core.act import draw_exploration
from hrm_shared.core.config import preset
from hrm_shared.core.contract import installed

CONTRACT = {"backend", "device", "preset", "batch", "steps_per_s", "tokens_per_s", "peak_memory_bytes", "mfu"}


def _tiny(name: str = "tiny", **changes):
    """A tiny preset on 16-token sequences, batch 4."""
    model, train = preset(name)
    model = model.replace(vocab_size=11, seq_len=16, num_puzzle_identifiers=5, **changes)
    return model, train.replace(global_batch_size=4)


@pytest.mark.parametrize("changes", [{}, {"H_cycles": 3, "L_cycles": 1, "H_layers": 2}, {"halt_max_steps": 1},
                                     {"name": "trm-tiny"}, {"name": "trm-tiny", "H_cycles": 3, "L_cycles": 1},
                                     {"name": "trm-tiny", "mlp_t": True, "pos_encodings": "none"}])
def test_flops_match_torch_flop_counter(changes):
    pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from hrm_torch.device import to_backend
    from hrm_torch.evaluate import predict
    from hrm_torch.train import Trainer, new_model

    config, train = _tiny(**changes)
    model = new_model(config, 0, "cpu")
    trainer = Trainer(model, train, compile=False)
    rng = np.random.default_rng(0)
    batch = synthetic_batch(rng, config, 4)
    draws = draw_exploration(rng, 4, config.halt_max_steps, config.halt_exploration_prob)
    step, evaluation = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH):  # attention as matmuls, which the counter sees on the CPU
        with step:
            trainer.step(batch, draws, 1e-3, 1e-3)
        with evaluation:
            predict(model, to_backend(batch, "cpu"))
    assert train_step_flops(config, 4) == pytest.approx(step.get_total_flops(), rel=0.02)
    assert eval_flops(config, 4) == pytest.approx(evaluation.get_total_flops(), rel=0.02)


@pytest.mark.parametrize("name, flops", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                         ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                         ("NVIDIA GeForce RTX 4090", None), ("cpu", None)])
def test_peak_flops_by_device_name(name, flops):
    assert peak_flops(name) == flops


def test_measure_fills_a_record(backend):
    spec = Spec(backend.name, "tiny", "cpu", batch=2, overrides=["seq_len=16"], steps=2, warmup=1)
    record = measure(spec)
    config, _ = _tiny()
    assert record["skipped"] is None and record["timed_steps"] == 2 and record["batch"] == 2
    assert record["flops_per_step"] == train_step_flops(config, 2)
    assert record["tokens_per_s"] == pytest.approx(2 * 16 * record["steps_per_s"])
    assert record["mfu"] is None and record["eval_examples_per_s"] > 0
    assert record["peak_memory_bytes"] >= 0 and record["peak_memory_method"]


def test_seq_900_is_skipped_on_the_cpu_unless_named(backend):
    record = measure(Spec(backend.name, "arc", "cpu", named=False))
    assert record["skipped"].startswith("seq_len 900 on the CPU") and record["steps_per_s"] is None
    assert CONTRACT <= set(record)


def test_hrm_bench_writes_the_contract_records(tmp_path):
    name = next((n for n in ("mlx", "torch") if installed(n)), None)  # MLX starts in a tenth of a second
    if name is None:
        pytest.skip("no backend is installed")
    path = tmp_path / "bench.json"
    args = ["bench", "--backend", name, "--preset", "tiny", "--device", "cpu", "--batch", "2", "--steps", "2",
            "--set", "seq_len=16", "--cycles", "1x1,2x2", "--json", str(path)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    [record] = data["records"]
    assert CONTRACT <= set(record)
    assert (record["backend"], record["device"], record["preset"], record["batch"]) == (name, "cpu", "tiny", 2)
    assert record["steps_per_s"] > 0 and record["peak_memory_bytes"] > 0 and record["mfu"] is None
    [sweep] = data["cycles_memory"]
    assert [(p["H_cycles"], p["L_cycles"]) for p in sweep["points"]] == [(1, 1), (2, 2)]
    peaks = [p["peak_memory_bytes"] for p in sweep["points"]]
    assert min(peaks) > 0 and sweep["peak_ratio"] == pytest.approx(peaks[1] / peaks[0])
    assert "steps/s" in result.output and "peak ratio" in result.output


@pytest.mark.parametrize("args, message", [(["--cycles", "2y2"], "--cycles '2y2'"),
                                           (["--preset", "chess"], "preset 'chess'"),
                                           (["--preset", "tiny", "--cycles-preset", "sudoku"], "--cycles-preset")])
def test_hrm_bench_refuses_bad_options(tmp_path, args, message):
    result = CliRunner().invoke(main, ["bench", *args, "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 1 and message in result.output and not (tmp_path / "b.json").exists()


def test_torch_out_of_memory_is_recognised_through_wrappers():
    torch = pytest.importorskip("torch")
    from hrm_torch.bench import is_out_of_memory

    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        except torch.OutOfMemoryError as e:
            raise RuntimeError("the compiled graph failed") from e
    except RuntimeError as wrapped:
        assert is_out_of_memory(wrapped)
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
