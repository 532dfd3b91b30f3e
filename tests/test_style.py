"""The tree is ruff-clean and ruff-formatted (pyproject.toml's settings, including the
complexity limits C901 ≤ 10 and PLR0915 ≤ 50 statements per function)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUFF = shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (pip install -e .[dev])")
@pytest.mark.parametrize("argv", [["check", "."], ["format", "--check", "."]])
def test_ruff(argv):
    done = subprocess.run([RUFF, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
