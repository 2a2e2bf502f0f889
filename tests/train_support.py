"""Shared helpers of the tests/test_train_*.py files: tiny model, tiny datasets, workload documents."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def arithmetic_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        rows.append({
            "id": f"q{i}",
            "answer": str(a + b),
            "messages": [
                {"role": "user", "content": f"What is {a} + {b}?"},
                {"role": "assistant", "content": f"First, compute {a} + {b} = {a + b}. Therefore the answer is \\boxed{{{a + b}}}."},
            ],
        })
    return rows


def write_dataset(directory: Path, rows: list[Any], *, complete: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "data.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    if complete:
        (directory / "_COMPLETE").write_text("")
    return directory


def resource_doc(model: Path | str, dataset: Path | str, output: Path | str, **spec: Any) -> dict[str, Any]:
    """A FineTuneJob workload document for a few quick CPU steps."""
    base = {
        "baseModel": {"name": str(model)},
        "dataset": {"path": str(dataset)},
        "output": {"path": str(output)},
        "preset": "none",
        "hyperparameters": {
            "learningRate": "3e-3", "epochs": 3, "globalBatchSize": 4, "microBatchSize": 1, "maxLength": 256,
            "warmupRatio": "0", "seed": 7,
        },
        "checkpoints": {"everySteps": 2, "keep": 2},
    }
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return {
        "apiVersion": "reasonops.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "tiny", "namespace": "test", "uid": "u"},
        "spec": base,
        "revision": "r1",
        "output": str(output),
        "outputLocation": str(output),  # the contract's canonical form (a local path here)
        "context": {},
    }


# What the operator sets on a one-process training pod today: a world size, a master, but no RANK
# (only torchrun sets that, and a one-process pod is not launched through torchrun).
POD_ENV = {"WORLD_SIZE": "1", "NNODES": "1", "NPROC_PER_NODE": "1", "NODE_RANK": "0",
           "MASTER_ADDR": "tiny-0.tiny.test.svc", "MASTER_PORT": "29500"}


def subprocess_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a training subprocess: a one-process pod's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(REASONOPS_SCRATCH=str(tmp / "scratch"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    return {**env, **POD_ENV, **extra}


def train_command(resource: Path, nproc: int = 1) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "reasonops.train", "--resource", str(resource)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "reasonops.train", "--resource", str(resource)]


def run_training(resource: Path, tmp: Path, nproc: int = 1, timeout: float = 240, **extra: str) -> subprocess.CompletedProcess:
    env = subprocess_env(tmp, **extra)
    if nproc > 1:  # torchrun sets the rank variables of its workers itself
        env = {k: v for k, v in env.items() if k not in POD_ENV}
    return subprocess.run(train_command(resource, nproc), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def summary_result(output: Path) -> dict[str, Any]:
    """The result a finished run stored (what the operator copies into status)."""
    return json.loads((output / "training_summary.json").read_text())["result"]


def losses(output: Path) -> dict[int, float]:
    lines = (output / "train_log.jsonl").read_text().splitlines()
    return {entry["step"]: entry["loss"] for entry in map(json.loads, lines)}
