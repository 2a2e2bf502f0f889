"""Checkpoint selection through `reasonops run` on local files, as a shell runs it: a fine-tune keeps servable
checkpoints, an EvalRun rates each (the CPU engine in the "pod", offline: vLLM's CPU backend, the `vllm` program
REASONOPS_VLLM names) and selects one, and a second EvalRun evaluates the selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reasonops.tinymodel import build_servable_model

from train_support import REPO, arithmetic_rows, write_dataset
from vllm_support import engine_environment

pytestmark = pytest.mark.slow
API = "reasonops.io/v1alpha1"


def test_reasonops_run_selects_a_checkpoint_and_evaluates_it(tmp_path: Path):
    base = build_servable_model(tmp_path / "base", layers=1, seed=3)  # a shape vLLM's CPU attention takes
    data = write_dataset(tmp_path / "data", arithmetic_rows(8))
    bench = [{"name": "demo", "maxTokens": 4, "limit": 3}]
    engine = {"backend": "offline", "serving": {"engine": "cpu"}}
    docs = [
        # listed first: a file's order does not matter, the selection's consumer runs after it
        {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "release"},
         "spec": {"model": {"evalRun": "pick"}, "benchmarks": bench, "output": {"path": "evals"}, **engine}},
        {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": "tiny"}, "spec": {
            "baseModel": {"name": str(base)}, "dataset": {"path": str(data)}, "output": {"path": "models"}, "preset": "none",
            "hyperparameters": {"learningRate": "3e-3", "epochs": 2, "globalBatchSize": 4, "microBatchSize": 1, "maxLength": 256,
                                "warmupRatio": "0", "seed": 7},
            "checkpoints": {"everyEpochs": 1, "keep": 0, "export": True}}},
        {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "pick"}, "spec": {
            "model": {"fineTuneJob": "tiny", "checkpoints": "all"}, "benchmarks": bench, **engine,
            "selection": {"benchmark": "demo"}, "gates": [{"benchmark": "demo", "minScore": "0"}]}},
        {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "last"}, "spec": {
            "model": {"fineTuneJob": "tiny", "checkpoints": "steps", "checkpointSteps": [4]}, "benchmarks": bench, **engine}},
    ]
    file = tmp_path / "pipeline.yaml"
    file.write_text(yaml.safe_dump_all(docs))
    out = tmp_path / "out"
    # A shell's environment: none of the rendezvous variables an in-process training test leaves behind.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env |= engine_environment()
    # four evaluations, each starting vLLM (30-120 s on two shared cores)
    proc = subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(file), "--output", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    state = {p.stem: json.loads(p.read_text()) for p in (out / "state").glob("*.json")}
    run_dir = Path(state["FineTuneJob-tiny"]["output"])
    pick = state["EvalRun-pick"]["result"]
    assert [(c["name"], c["epoch"]) for c in pick["checkpoints"]] == [("step-2", "1.00"), ("step-4", "2.00")]
    for entry in pick["checkpoints"]:
        assert entry["location"] == str(run_dir / "checkpoints" / entry["name"] / "model")
        assert entry["results"][0]["benchmark"] == "demo" and entry["results"][0]["problems"] == 3
    # Each checkpoint was rated from its own export, into its own directory.
    pick_out = Path(state["EvalRun-pick"]["output"])
    for name in ("step-2", "step-4"):
        summary = json.loads((pick_out / "checkpoints" / name / "summary.json").read_text())
        assert summary["provenance"]["modelLocation"] == str(run_dir / "checkpoints" / name / "model")
    # The report above the checkpoints' directories draws the checkpoint curve: one point per checkpoint.
    report = (pick_out / "report.html").read_text()
    curve = report.split('aria-label="checkpoint curve (pass@1)"')[0].rsplit("<svg", 1)[1]
    assert 'data-series-count="1" data-points="2"' in curve and "<script" not in report
    scores = [c["results"][0]["score"] for c in pick["checkpoints"]]
    best = max(range(2), key=lambda i: (float(scores[i]), -i))  # ties go to the earlier
    selected = pick["selectedCheckpoint"]
    assert selected["name"] == pick["checkpoints"][best]["name"] and selected["score"] == scores[best]
    assert pick["results"] == pick["checkpoints"][best]["results"] and pick["gates"][0]["passed"] is True
    assert f"selected {selected['name']}: demo score {selected['score']}" in proc.stdout
    # The downstream EvalRun evaluated the selected checkpoint.
    release = state["EvalRun-release"]
    assert release["result"]["provenance"]["modelLocation"] == selected["location"]
    assert release["output"].startswith(str(out / "evals" / "release"))
    # Only the listed step; then a step the fine-tune did not keep, named with the kept ones, in a later run.
    assert [c["name"] for c in state["EvalRun-last"]["result"]["checkpoints"]] == ["step-4"]
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**docs[3], "spec": {**docs[3]["spec"], "model": {"fineTuneJob": "tiny", "checkpoints": "steps",
                                                                                      "checkpointSteps": [3]}}}))
    proc = subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(wrong), "--output", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "FineTuneJob 'tiny' kept no servable checkpoint at step 3 of model.checkpointSteps; it kept steps 2, 4" in proc.stderr, proc.stderr[-2000:]
