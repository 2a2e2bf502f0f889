"""The HTML report of real workload outputs in a real browser: headless Chromium opens it, and every plot
rendered (tests/browser_support.py says how it is checked). The demo's own report is checked the same way by
tests/test_demo.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from browser_support import assert_every_plot_rendered
from report_support import real_outputs


@pytest.mark.slow
def test_every_plot_of_a_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    outputs = real_outputs(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "reasonops", "report", str(outputs.root)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    labels = assert_every_plot_rendered(Path(proc.stdout.strip()), tmp_path / "profile")
    assert len(labels) == 3 + 3 + 2 and "training loss" in labels
