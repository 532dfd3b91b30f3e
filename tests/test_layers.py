"""The package's layers: arrows point down, nothing imports cli or ui, only ui imports
streamlit (the import-linter contracts in pyproject.toml), and the library imports without
the app's dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = shutil.which("lint-imports") or "lint-imports"
LAYERS = (
    "config",
    "files",
    "fields",
    "theory",
    "data",
    "core",
    "runs",
    "results",
    "viz",
    "cli",
    "ui",
)


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    argv = [LINT, "--config", str(cwd / "pyproject.toml"), "--no-cache"]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layer_contracts():
    done = _lint(ROOT, ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "4 kept, 0 broken" in done.stdout


def _fake_tree(tmp_path: Path, bad_import: tuple[str, str]) -> Path:
    """A package shaped like covnoise whose module `bad_import[0]` imports `bad_import[1]`."""
    pkg = tmp_path / "covnoise"
    for layer in LAYERS:
        if layer in ("config", "files", "fields"):
            pkg.mkdir(parents=True, exist_ok=True)
            (pkg / f"{layer}.py").write_text("")
        else:
            (pkg / layer).mkdir(parents=True, exist_ok=True)
            (pkg / layer / "__init__.py").write_text("")
            (pkg / layer / "mod.py").write_text("")
    (pkg / "__init__.py").write_text("")
    src, target = bad_import
    (pkg / src / "mod.py").write_text(f"import {target}\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_catch_an_upward_import_a_cli_import_and_streamlit(tmp_path):
    """Each kind of violation breaks the contract (so the first test can fail)."""
    for i, bad in enumerate(
        [
            ("core", "covnoise.runs.mod"),
            ("results", "covnoise.cli.mod"),
            ("viz", "streamlit"),
            ("data", "covnoise.core.mod"),
        ]
    ):
        tree = _fake_tree(tmp_path / str(i), bad)
        done = _lint(tree, tree)
        assert done.returncode == 1, (bad, done.stdout[-2000:])
        assert "BROKEN" in done.stdout


def test_the_library_imports_without_streamlit():
    """Every module outside ui imports with streamlit made unimportable."""
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "covnoise").rglob("*.py")
        if "ui" not in p.relative_to(ROOT / "covnoise").parts and p.name != "__main__.py"
    )
    code = (
        "import sys; sys.modules['streamlit'] = None\n"
        f"import importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
        "print('ok', len(sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-3000:]
    assert len(modules) > 30
