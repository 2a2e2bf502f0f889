"""The package's layers (api → contract → controller | workloads), checked by import-linter (.importlinter)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(config: Path, source_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(config)], cwd=source_root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_layers_hold():
    proc = _lint(ROOT / ".importlinter", ROOT / "operator")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_a_workload_importing_the_controller_breaks_the_build(tmp_path):
    """The check is real: the same configuration fails on a copy of the package where a workload imports the operator."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "operator" / "reasonops", copy / "reasonops", ignore=shutil.ignore_patterns("__pycache__"))
    recipe = copy / "reasonops" / "curate" / "recipe.py"
    recipe.write_text(recipe.read_text() + textwrap.dedent("""
        from ..controller import builders as _builders  # a layer violation
    """))
    proc = _lint(ROOT / ".importlinter", copy)
    assert proc.returncode != 0 and "reasonops.curate.recipe -> reasonops.controller.builders" in proc.stdout
