"""Real outputs of all three workloads, small and quick, for the report's tests: a curated dataset, a
fine-tune of a tiny model, and an evaluation of it, each written by the workload itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from train_support import arithmetic_rows, resource_doc, run_training, write_dataset


@dataclass
class Outputs:
    root: Path  # holds the three below
    dataset: Path
    trained: Path
    evaluated: Path
    unrelated: Path  # a directory with no output: the training data


def real_outputs(tmp_path: Path) -> Outputs:
    from reasonops.api.v1alpha1 import ReasoningDatasetSpec
    from reasonops.contract import read_document
    from reasonops.curate import CurateConfig, main as curate
    from reasonops.evaluate import config_from_resource, main as evaluate
    from reasonops.tinymodel import build_servable_model, build_tiny_model
    from vllm_support import vllm_server

    root = tmp_path / "out"
    pool = Path(__file__).resolve().parent / "data" / "curate_pool.jsonl"
    dataset = root / "datasets" / "pool" / "r1"
    curate(CurateConfig(spec=ReasoningDatasetSpec.model_validate({
        "sources": [{"name": "demo", "path": str(pool)}], "output": {"path": "/unused"},
        "stages": [{"name": "dedupe", "dedupe": {}}, {"name": "top", "select": {"size": 30}}]}), output=str(dataset), progress=False))

    model = build_tiny_model(tmp_path / "base", layers=1, hidden=16, seed=3)
    data = write_dataset(tmp_path / "data", arithmetic_rows(8))
    trained = root / "models" / "tiny" / "r1"
    resource = tmp_path / "train.json"
    resource.write_text(json.dumps(resource_doc(model, data, trained, hyperparameters={"epochs": 2})))
    proc = run_training(resource, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    evaluated = root / "evals" / "tiny" / "r1"
    served = build_servable_model(tmp_path / "served", layers=1, seed=3)  # vLLM's CPU attention: head size 32
    with vllm_server(served, "tiny") as url:
        evaluate(config_from_resource(read_document({
            "apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun", "metadata": {"name": "tiny", "namespace": "d", "uid": "u"},
            "spec": {"model": {"name": "tiny"}, "benchmarks": [{"name": "demo", "maxTokens": 4, "samples": 2, "temperature": "0.7"}],
                     "output": {"path": str(root / "evals")}},
            "revision": "r1", "output": str(evaluated), "outputLocation": str(evaluated), "context": {"endpoint": url}})))
    return Outputs(root=root, dataset=dataset, trained=trained, evaluated=evaluated, unrelated=tmp_path / "data")
