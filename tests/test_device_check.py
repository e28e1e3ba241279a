"""scripts/gpu_check.sh and scripts/mac_check.sh in their --cpu-smoke mode: every stage runs on the CPU at toy sizes
(the device tests, `hrm bench`, the Sudoku-Extreme-equivalent build, the training run; for gpu_check.sh also MLX's
stage, with this Python's MLX) and the results file and the table hold what docs/benchmarks.md describes. The two
share one work folder, so the data is built once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hrm_shared.core.contract import installed

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("device-check")


@pytest.mark.parametrize("script, backend", [("gpu_check.sh", "torch"), ("mac_check.sh", "mlx")])
def test_the_check_script_runs_every_stage_on_the_cpu(work, script, backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    out = work / f"{backend}.json"
    done = subprocess.run(["bash", str(ROOT / "scripts" / script), "--cpu-smoke", "--out", str(out), "--work",
                           str(work)], env={**os.environ, "HRM_PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert (result["backend"], result["device"], result["cpu_smoke"]) == (backend, "cpu", True)
    assert result["device_tests"]["status"] == "passed" and "skipped" in result["device_tests"]["summary"]
    assert [r["preset"] for r in result["bench"]] == ["tiny", "trm-tiny"]
    for record in result["bench"]:
        assert record["steps_per_s"] > 0 and record["peak_memory_bytes"] > 0 and record["predicted_peak_bytes"] > 0
    _assert_trained(result["training"])
    stages = {"device_tests", "bench", "data", "training"}
    lines = done.stdout.splitlines()
    if script == "gpu_check.sh":  # MLX's stage beside torch's, here with this Python's MLX on the CPU
        mlx = result["mlx"]
        if not installed("mlx"):
            assert "skipped" in mlx and lines[1].startswith("MLX: skipped")
        else:
            assert (mlx["python"], mlx["backend"], mlx["device"]) == (sys.executable, "mlx", "cpu")
            assert mlx["device_tests"]["status"] == "passed" and "skipped" in mlx["device_tests"]["summary"]
            assert [r["preset"] for r in mlx["bench"]] == ["tiny"] and mlx["bench"][0]["steps_per_s"] > 0
            _assert_trained(mlx["training"])
            stages |= {"mlx_device_tests", "mlx_bench", "mlx_training"}
            assert lines[1].startswith(f"MLX ({sys.executable}, on cpu): device tests passed")
            assert any(line.split()[:2] == ["mlx", "bench"] for line in lines)
            assert any(line.split()[:2] == ["mlx", "train"] for line in lines)
        stages.add("mlx_setup")
    else:
        assert "mlx" not in result
    assert set(result["stage_seconds"]) == stages
    assert result["seconds"] <= 9 * 60
    header = next(line.split() for line in lines if line.split()[:1] == ["stage"])
    assert header[:8] == ["stage", "preset", "batch", "steps/s", "MFU", "peak", "GiB", "predicted"]
    assert "accuracy" in header and f"Wrote {out}" in done.stdout


def _assert_trained(training: dict) -> None:
    assert training["preset"] == "tiny" and training["steps_per_s"] > 0 and training["curve"]
    assert 0 <= training["accuracy"] <= 1 and training["predicted_peak_bytes"] > 0
