"""The package type-checks: ``python -m mypy`` finds nothing.

What is checked and how strictly is ``[tool.mypy]`` in pyproject.toml (the whole
``ambient_jupyter`` package), so this test and a developer's ``.venv/bin/mypy`` agree.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def test_mypy_is_clean() -> None:
    if importlib.util.find_spec("mypy") is None:
        problem = "mypy is not installed (pip install mypy, or the [test] extra)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    lines = result.stdout.strip().splitlines()
    summary = lines[-1] if lines else result.stderr.strip()
    print(f"\nmypy: {summary}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary.startswith("Success: no issues found"), summary
