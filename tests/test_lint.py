"""The code keeps its lint rules ([tool.ruff] in pyproject.toml: line length 120, pycodestyle, pyflakes, import
order) over the package, kernels, tests and benchmarks: `ruff check` reports nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"ruff check found problems (fix them, or `ruff check --fix .`):\n{result.stdout}"
