"""The README's first command: `reasonops demo` runs the whole chain locally."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_the_whole_chain(tmp_path: Path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "reasonops", "demo", "--output", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "local OpenAI-compatible server" in proc.stdout  # says what differs from a cluster run
    summary = {s["kind"]: s for s in json.loads((out / "summary.json").read_text())}
    dataset = summary["ReasoningDataset"]["result"]
    stages = {s["stage"]: s for s in dataset["stageCounts"]}
    assert dataset["samples"] > 0 and stages["dedupe"]["dropped"] > 0 and stages["decontaminate"]["dropped"] > 0
    assert (Path(dataset["location"]) / "data.jsonl").exists()
    model = Path(summary["FineTuneJob"]["result"]["modelLocation"])
    assert (model / "config.json").exists() and list(model.glob("*.safetensors"))
    results = summary["EvalRun"]["result"]["results"]
    assert results[0]["benchmark"] == "demo" and 0.0 <= float(results[0]["score"]) <= 1.0
    assert "reasonops demo — summary" in proc.stdout
