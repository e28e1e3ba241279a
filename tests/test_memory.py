"""The memory model (shared/app/memory.py) against measurement, its structure, and `hrm train --dry-run`.

Measurement: `hrm bench`'s peak of a training step on the CPU, in a fresh process (torch: the peak resident set, at
batch 64 so that activations dominate its few tens of MiB of noise; MLX: its allocator counter, at batch 32), for the
tiny HRM and TRM presets; the prediction must lie within 30% of it (on the development machine it lay at 0.90 to
1.05 of it).
"""

import json

import pytest

from helpers import TINY, invoke, make_dataset, run
from hrm_shared.app import memory
from hrm_shared.app.bench import Spec, bench_config, run_isolated
from hrm_shared.app.memory import Runtime, differentiated_blocks, max_batch, predict_peak
from hrm_shared.core.config import preset
from hrm_shared.core.init import count_parameters

CPU = {"torch": Runtime("torch", "cpu"), "mlx": Runtime("mlx", "cpu")}
BATCH = {"torch": 64, "mlx": 32}


@pytest.mark.parametrize("name", ["tiny", "trm-tiny"])
def test_the_prediction_is_within_30_percent_of_the_measured_peak(backend, name):
    spec = Spec(backend.name, name, "cpu", batch=BATCH[backend.name], steps=1, warmup=1, evaluate=False)
    record = run_isolated(spec)
    model, train, _ = bench_config(spec, on_cpu=True)
    estimate = predict_peak(model, train, CPU[backend.name])
    # An allocator counter (state_memory_bytes is set) sees tensors only, not the process's overhead.
    predicted = estimate.peak - (estimate.overhead if record["state_memory_bytes"] is not None else 0)
    assert 0.7 <= predicted / record["peak_memory_bytes"] <= 1.3, (predicted, record["peak_memory_bytes"])


def _sudoku(name: str = "sudoku", **changes):
    model, train = preset(name)
    return model.replace(vocab_size=11, seq_len=81, **changes), train


def test_hrm_activations_are_flat_in_the_cycles_and_trm_grows_with_L_cycles_plus_one():
    runtime = Runtime("torch", "cuda")
    model, train = _sudoku()
    flat = {predict_peak(model.replace(H_cycles=h, L_cycles=l), train, runtime).peak for h, l in ((2, 2), (4, 8))}
    assert len(flat) == 1
    assert differentiated_blocks(model.replace(grad="bptt")) == 2 * (2 * 4 + 4)
    trm, trm_train = _sudoku("trm-sudoku-att")
    calls = [differentiated_blocks(trm.replace(L_cycles=n)) for n in (2, 4, 6)]
    assert calls == [3 * 2, 5 * 2, 7 * 2]
    peaks = [predict_peak(trm.replace(L_cycles=n), trm_train, runtime).parts["activations"] for n in (2, 4, 6)]
    assert peaks[2] - peaks[1] == pytest.approx(peaks[1] - peaks[0], rel=1e-6) and peaks[1] > peaks[0]


def test_the_parts_count_the_optimizer_ema_table_and_forward_dtype():
    model, train = _sudoku(num_puzzle_identifiers=1000)
    N = count_parameters(model)
    torch_parts = predict_peak(model, train, Runtime("torch", "cuda")).parts
    mlx_parts = predict_peak(model, train.replace(ema=True), Runtime("mlx", "gpu")).parts
    assert (torch_parts["optimizer"], mlx_parts["optimizer"]) == (12 * N, 8 * N)
    assert (torch_parts["ema"], mlx_parts["ema"]) == (0, 4 * N)
    assert torch_parts["puzzle_table"] == 4 * 1000 * 512
    half = predict_peak(model, train, Runtime("torch", "cuda")).parts["activations"]
    full = predict_peak(model.replace(forward_dtype="float32"), train, Runtime("torch", "cuda")).parts["activations"]
    assert 0.5 < half / full < 0.75  # bfloat16 halves all but the float32 norm statistics and the loss


def test_max_batch_is_the_largest_that_fits():
    model, train = _sudoku()
    runtime, usable = Runtime("mlx", "gpu"), int(10.7 * 2**30)
    best = max_batch(model, train, runtime, usable)
    assert predict_peak(model, train, runtime, best).peak <= usable < predict_peak(model, train, runtime, best + 1).peak
    assert max_batch(model, train, runtime, 1000) == 0
    assert max_batch(model, train, runtime, usable, world=4) == 4 * best


@pytest.mark.parametrize("name, macs_gib", [("sudoku-laptop", 10.7), ("arc-laptop", 10.7)])
def test_the_laptop_presets_fit_a_16_gb_mac_with_the_tolerance_to_spare(name, macs_gib):
    model, train = preset(name)
    model = model.replace(vocab_size=12, seq_len=900, num_puzzle_identifiers=263_000) if name == "arc-laptop" else \
        model.replace(vocab_size=11, seq_len=81)
    assert predict_peak(model, train, Runtime("mlx", "gpu")).peak * 1.3 <= macs_gib * 2**30


def test_dry_run_prints_and_writes_the_figures_and_starts_nothing(tmp_path):
    data = make_dataset(tmp_path / "ds")
    out, path = tmp_path / "run", tmp_path / "dry.json"
    result = run("train", "--backend", "torch", "--data", data, *TINY, "--out", out, "--dry-run", "--json", path)
    assert result.exit_code == 0, result.output
    assert not out.exists()
    record = json.loads(path.read_text())
    assert record["peak_memory_bytes"] == sum(record["parts"].values()) > 0
    assert record["usable_memory_bytes"] > 0 and record["fits"] is True and record["max_batch"] >= 8
    assert "Predicted peak memory" in result.output and "largest global batch that fits" in result.output
    assert invoke("train", "--data", data, "--out", out, "--json", path).exit_code == 2  # --json needs --dry-run


def test_a_run_that_will_not_fit_is_warned_about_and_still_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_ram", lambda: (30 * 2**20, "test RAM"))
    data = make_dataset(tmp_path / "ds")
    result = run("train", "--backend", "torch", "--device", "cpu", "--data", data, *TINY, "--out", tmp_path / "run",
                 "--max-steps", 1, "--eval-interval", 0, "--set", "global_batch_size=512")
    assert result.exit_code == 0, result.output
    # A batch too large for the device is warned about (one row fits); not even one row is refused before anything
    # is allocated (tests/test_faults_sweep.py).
    assert "Warning: the predicted peak memory" in result.output and "--set global_batch_size=" in result.output
