"""The README's Python quickstart (the first ```python block after `## Python`) runs as written in a fresh virtual
environment where the wheel of this checkout is installed, once per backend (its import line naming the backend),
and the two backends' solve() answers agree on the same checkpoint. The frameworks come from the test's own
environment (a .pth line naming its site-packages), so nothing is downloaded; hrm itself comes only from the wheel."""

import json
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Beside the quickstart, in the same environment: solve the quickstart's puzzle with another run's checkpoint.
CROSS_CHECK = """
import json, sys
import hrm_shared
from {module} import load, solve
solution = solve(load(sys.argv[1]), sys.argv[2])
print(json.dumps({{"answer": solution.answer, "trajectory": solution.trajectory, "file": hrm_shared.__file__}}))
"""


def quickstart() -> str:
    """The first ```python block after the `## Python` heading of README.md."""
    text = (ROOT / "README.md").read_text()
    assert "\n## Python\n" in text, "README.md has no `## Python` section"
    found = re.search(r"```python\n(.*?)```", text.split("\n## Python\n", 1)[1], re.S)
    assert found, "the `## Python` section of README.md has no ```python block"
    return found.group(1)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with this checkout's wheel installed (pip, no dependencies, no index) and the
    test environment's site-packages after its own on the path; its python."""
    root = tmp_path_factory.mktemp("quickstart")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(root / "dist"), str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, capture_output=True)
    python = root / "venv" / "bin" / "python"
    wheel = next((root / "dist").glob("*.whl"))
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    own = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                         text=True, check=True).stdout.strip()
    (Path(own) / "frameworks.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def run_here(python: Path, cwd: Path, code: str, *args) -> str:
    """Run `code` with `python` in directory `cwd` (away from this checkout); its stdout."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {"PATH": f"{python.parent}:/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(cwd)}
    env.update({k: v for k, v in os.environ.items() if k.startswith(("OMP_WAIT", "TMP"))})
    done = subprocess.run([str(python), "-c", code, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=1800)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_quickstart_runs_as_written_in_both_backends_and_they_agree(both, venv, tmp_path):
    block = quickstart()
    first = block.splitlines()[0]
    assert first.startswith("from hrm_torch import "), "the quickstart's first line imports the API from a backend"
    puzzle = re.search(r'solve\(model, "([^"]+)"\)', block).group(1)
    printed = {}
    for name in ("torch", "mlx"):
        code = block.replace(first, first.replace("hrm_torch", f"hrm_{name}"), 1)
        lines = run_here(venv, tmp_path / name, code).splitlines()
        answer, valid = lines[0].split()
        assert len(answer) == len(puzzle) and set(answer) <= set(".1234") and valid in ("True", "False")
        printed[name] = answer
    runs = {name: next((tmp_path / name / "runs").iterdir()) for name in printed}
    for name, other in (("torch", "mlx"), ("mlx", "torch")):  # each backend solves with the other's checkpoint
        solved = json.loads(run_here(venv, tmp_path / name, CROSS_CHECK.format(module=f"hrm_{name}"), runs[other],
                                     puzzle))
        assert Path(solved["file"]).is_relative_to(venv.parents[1]), solved["file"]  # hrm from the wheel
        assert solved["answer"] == printed[other] == solved["trajectory"][-1]
