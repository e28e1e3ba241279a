"""The layout's promises: both backends follow the one contract (core/contract.py) and are twins file for file,
the import graph faces one way without cycles, and the wheel installs only project-owned names."""

import ast
import importlib
import inspect
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from hrm_shared.app.backend import import_backend
from hrm_shared.core.contract import BACKENDS, installed, model_problems, problems
from hrm_shared.core.errors import DISTRIBUTION
from hrm_shared.core.registry import FAMILIES

ROOT = Path(__file__).resolve().parent.parent
# The import name each top-level folder installs as (pyproject.toml [tool.setuptools.package-dir]).
INSTALLED = {"hrm_shared": ROOT / "shared", "hrm_convert": ROOT / "convert", "hrm_mlx": ROOT / "hrm_mlx",
             "hrm_torch": ROOT / "hrm_torch"}
# Parameter names that are the same thing in the two frameworks' words.
SAME_WORD = {"dim": "axis", "tensor": "array"}
# Differences the frameworks force, with why: MLX's Optimizer base class is driven through init_single and
# apply_single; torch's AdamATan2 keeps flat buffers and hands its flat gradient to the all-reduce, and compiles its
# update apart (the backward runs outside torch.compile; MLX compiles the update within its step); a torch process
# group is addressed by rank and size, an MLX one by its Group object.
FRAMEWORK_ONLY = {"torch": {"optim.AdamATan2.flat_gradient", "optim.AdamATan2.compile",
                            "distributed.Collective.__init__"},
                  "mlx": {"optim.AdamATan2.init_single", "optim.AdamATan2.apply_single",
                          "distributed.Collective.__init__"}}


def _parameters(function) -> tuple[str, ...]:
    return tuple(SAME_WORD.get(name, name) for name in inspect.signature(function).parameters)


def public_api(backend: str, file: str) -> list[tuple[str, tuple[str, ...]]]:
    """[(qualified name, parameter names)] of the functions, classes and methods `hrm_<backend>.<file>` defines, in
    source order; torch's `forward` counts as `__call__`."""
    module = importlib.import_module(f"hrm_{backend}.{file}")
    items = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            items.append((inspect.getsourcelines(obj)[1], name, _parameters(obj)))
        elif inspect.isclass(obj):
            items.append((inspect.getsourcelines(obj)[1], name, ()))
            for method, function in vars(obj).items():
                function = inspect.unwrap(function) if callable(function) else function
                written = inspect.isfunction(function) and function.__code__.co_filename == module.__file__
                if written and (not method.startswith("_") or method in ("__init__", "__call__")):
                    method = "__call__" if method == "forward" else method
                    if f"{file}.{name}.{method}" not in FRAMEWORK_ONLY[backend]:
                        items.append((inspect.getsourcelines(function)[1], f"{name}.{method}", _parameters(function)))
    return [(name, parameters) for _, name, parameters in sorted(items)]


def backend_files(backend: str) -> set[str]:
    return {path.stem for path in INSTALLED[f"hrm_{backend}"].glob("*.py")}


@pytest.fixture(scope="module")
def packages():
    for name in BACKENDS:
        if not installed(name):
            pytest.skip(f"{name} is not installed")
    return {name: import_backend(name) for name in BACKENDS}


def test_both_backends_have_the_same_files():
    assert backend_files("torch") == backend_files("mlx")


@pytest.mark.parametrize("file", sorted(backend_files("torch")))
def test_twin_files_define_the_same_names_with_the_same_parameters_in_the_same_order(packages, file):
    assert public_api("torch", file) == public_api("mlx", file)


def test_both_backends_follow_the_contract(packages):
    for package in packages.values():
        assert problems(package) == []


def test_every_model_family_has_its_model_class_in_each_backend(packages):
    for name in packages:
        for family in FAMILIES.values():
            module = importlib.import_module(family.model_module(name))
            assert inspect.isclass(getattr(module, family.model_class, None)), (name, family.name)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_familys_model_follows_the_model_protocol(packages, family):
    for name in packages:
        module = importlib.import_module(FAMILIES[family].model_module(name))
        assert model_problems(getattr(module, FAMILIES[family].model_class)) == []


def test_the_model_protocol_names_what_a_model_lacks(packages):
    model = packages["torch"].model
    broken = type("Broken", (model.HRM,), {"end_segment": lambda self, carry: carry,
                                            "inner_class": type("Inner", (model.HRMInner,), {"heads": None})})
    found = model_problems(broken)
    assert any(line.endswith("Broken.end_segment should take ('inner_carry', 'steps', 'data', 'outputs', "
                             "'training', 'exploration', 'puzzle_rows')") for line in found)
    assert any(line.endswith("Inner.heads should take ('z_H', 'z_L')") for line in found)
    assert len(found) == 2


def test_the_contract_names_what_a_package_lacks(packages):
    broken = types.ModuleType("hrm_broken")
    for module in ("layers", "model", "loss", "train", "checkpoint", "evaluate", "distributed", "bench", "optim"):
        setattr(broken, module, getattr(packages["torch"], module))
    device = types.ModuleType("hrm_broken.device")
    device.default_device = packages["torch"].device.default_device
    device.place = lambda model: model
    broken.device = device
    found = problems(broken)
    assert "hrm_broken.device.compute_device is missing" in found
    assert any(line.startswith("hrm_broken.device.place('model',) should take ('model', 'device')") for line in found)
    assert "hrm_broken.device.to_backend is missing" in found


def _imports(path: Path) -> set[str]:
    """The absolute module names a source file imports (at any depth, lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _project_modules() -> dict[str, Path]:
    modules = {}
    for package, folder in INSTALLED.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            modules[".".join((package, *parts)).removesuffix(".__init__")] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """{project module: the project modules it imports}."""
    modules = _project_modules()
    return {name: {imported for imported in _imports(path) if imported in modules and imported != name}
            for name, path in modules.items()}


def test_the_import_graph_has_no_cycle():
    graph, state = import_graph(), {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in graph[module]:
            assert state.get(imported) != "open", f"import cycle: {' -> '.join(path + [module, imported])}"
            if imported not in state:
                visit(imported, path + [module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


# What each package may import: a package lower in the list never imports one higher up. app/ drives everything
# and loads a backend only through core/backend.py, by name; convert/ is a library below the commands.
ONE_WAY = {
    "hrm_shared.core": ("hrm_shared.core",),
    "hrm_shared.puzzles": ("hrm_shared.core", "hrm_shared.puzzles"),
    "hrm_shared.data": ("hrm_shared.core", "hrm_shared.puzzles", "hrm_shared.data"),
    "hrm_torch": ("hrm_shared.core", "hrm_torch"),
    "hrm_mlx": ("hrm_shared.core", "hrm_mlx"),
    "hrm_convert": ("hrm_shared.core", "hrm_shared.puzzles", "hrm_convert"),
    "hrm_shared.app": ("hrm_shared.core", "hrm_shared.puzzles", "hrm_shared.data", "hrm_convert", "hrm_shared.app"),
    "hrm_shared": (),
}


def _package(module: str) -> str:
    """The ONE_WAY package a project module belongs to: the longest key that is it or holds it."""
    return max((p for p in ONE_WAY if module == p or module.startswith(p + ".")), key=len)


def test_every_project_module_belongs_to_a_one_way_package():
    assert {_package(module) for module in import_graph()} == set(ONE_WAY)


@pytest.mark.parametrize("importer", list(ONE_WAY))
def test_imports_face_one_way(importer):
    """The backends import only core/; core/ imports nothing that drives it; puzzles/ and data/ never reach app/;
    convert/ never reaches app/ (which imports it), so no two packages import each other. A backend package's own
    __init__ is its public face (the Python API), which binds the app to the backend: it also imports app/ and
    puzzles/."""
    face = ("hrm_shared.app", "hrm_shared.puzzles") if importer in ("hrm_torch", "hrm_mlx") else ()
    for module, imported in import_graph().items():
        if _package(module) == importer:
            allowed = ONE_WAY[importer] + (face if module == importer else ())
            bad = sorted(name for name in imported if not any(name == a or name.startswith(a + ".") for a in allowed))
            assert not bad, f"{module} imports {bad}"


def test_no_two_packages_import_each_other():
    edges = {(_package(module), _package(name)) for module, imported in import_graph().items() for name in imported}
    loops = sorted((a, b) for a, b in edges if a < b and (b, a) in edges)
    assert not loops, f"packages that import each other: {loops}"


def test_the_wheel_installs_only_project_names_and_imports_beside_a_users_shared(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob(f"{DISTRIBUTION.replace('-', '_')}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        archive.extractall(tmp_path / "site")
    assert {name for name in top if not name.endswith(".dist-info")} == set(INSTALLED)
    metadata = next((tmp_path / "site").glob("*.dist-info")).joinpath("METADATA").read_text()
    assert f"Name: {DISTRIBUTION}\n" in metadata and "License-Expression: Apache-2.0" in metadata
    user = tmp_path / "project"
    for own in ("shared", "convert"):
        (user / own).mkdir(parents=True)
        (user / own / "__init__.py").write_text(f"MINE = {own!r}\n")
    code = ("import shared, convert, hrm_shared.app.cli, hrm_convert.backends; "
            "print(shared.MINE, convert.MINE, hrm_shared.app.cli.main.name, hrm_shared.__file__)")
    # The wheel's files first on the path, then the editable install of this checkout.
    for path, source in ((tmp_path / "site", tmp_path / "site" / "hrm_shared"), ("", ROOT / "shared")):
        env = {"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"}
        done = subprocess.run([sys.executable, "-c", code], cwd=user, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[:3] == ["shared", "convert", "main"]
        assert Path(done.stdout.split()[3]).parent == source
