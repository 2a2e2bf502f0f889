"""`reasonops demo`: the whole chain on this machine — no cluster, no GPU, no downloads.

It runs the bundled demo resources (data/demo.yaml) through the same local runner as `reasonops run`:
curate a bundled problem pool (dedupe, decontamination, scoring, selection) → fine-tune a tiny model
built on the spot with DeepSpeed ZeRO-3 on CPU → serve it with a local OpenAI-compatible server and
evaluate it → print a summary and where everything is.
"""

from __future__ import annotations

import json
import os
import string
import time
from pathlib import Path
from typing import Any

from importlib import resources

DIFFERENCES = [
    "runs every workload in this process instead of Kubernetes Jobs (the operator is not involved)",
    "trains on CPU with DeepSpeed ZeRO-3 over gloo instead of GPUs with NCCL, attention: sdpa",
    "serves the model with reasonops' small OpenAI-compatible server instead of vLLM",
    "uses a tiny randomly initialised model, so the scores mean nothing: the plumbing is the point",
]


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def render_resources(output: Path, base_model: Path) -> Path:
    template = resources.files("reasonops").joinpath("data/demo.yaml").read_text()
    pool = resources.files("reasonops").joinpath("data/demo_pool.jsonl")
    text = string.Template(template).substitute(POOL=str(pool), OUTPUT=str(output), BASE_MODEL=str(base_model))
    path = output / "demo.yaml"
    path.write_text(text)
    return path


def _row(summary: dict[str, Any]) -> str:
    result = summary.get("result") or {}
    if summary["kind"] == "ReasoningDataset":
        counts = ", ".join(f"{s['stage']} -{s['dropped']}" for s in result.get("stageCounts", []))
        headline = f"{result.get('samples')} samples ({counts})"
    elif summary["kind"] == "FineTuneJob":
        loss = result.get("finalLoss")
        headline = f"{result.get('steps')} steps, final loss {loss:.3f}" if isinstance(loss, (int, float)) else "trained"
    else:
        scores = ", ".join(f"{r['benchmark']} pass@1 {float(r['score']):.2f}" for r in result.get("results", []))
        headline = scores or "evaluated"
    return f"  {summary['kind']:<17} {summary['name']:<14} {summary['seconds']:>6.1f}s  {headline}"


def main(output: str = "./reasonops-demo", keep: bool = False) -> int:
    from .runner import run_local
    from .tinymodel import build_tiny_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    root = Path(output).resolve()
    if root.exists() and not keep and (root / "demo.yaml").exists():
        import shutil

        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    _say("differences from a cluster run:")
    for line in DIFFERENCES:
        _say(f"  - {line}")
    base = root / "base-model"
    if not (base / "config.json").exists():
        _say(f"building a tiny random Qwen2-style model in {base}")
        build_tiny_model(base, layers=2, hidden=64)
    manifest = render_resources(root, base)
    _say(f"resources: {manifest}")
    summaries = run_local(manifest, root)
    print()
    print("reasonops demo — summary")
    for s in summaries:
        print(_row(s))
    print()
    print("where things are:")
    for s in summaries:
        print(f"  {s['kind']:<17} {s['location']}")
    (root / "summary.json").write_text(json.dumps(summaries, indent=1, default=str))
    print(f"\nfinished in {time.time() - started:.0f}s; summary in {root / 'summary.json'}")
    return 0
