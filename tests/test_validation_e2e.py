"""Bad resources are rejected by the API server itself, with a message naming the field."""

from __future__ import annotations

import copy
import json

import pytest

pytestmark = pytest.mark.cluster

API = "reasonops.io/v1alpha1"
DATASET = {"apiVersion": API, "kind": "ReasoningDataset", "metadata": {"name": "d"},
           "spec": {"sources": [{"name": "s", "path": "/data/p.jsonl"}], "output": {"path": "/out"}}}
FINETUNE = {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": "f"},
            "spec": {"baseModel": {"name": "Qwen/Qwen2.5-7B-Instruct"}, "datasetRef": {"name": "d"}, "output": {"path": "/out"}}}
EVAL = {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "e"},
        "spec": {"model": {"fineTuneJob": "f"}, "benchmarks": [{"name": "aime24"}]}}


def _with(base: dict, path: str, value) -> dict:
    doc = copy.deepcopy(base)
    node = doc
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return doc


_DELETE = object()

CASES = [
    ("missing sources", _with(DATASET, "spec.sources", _DELETE), "spec.sources"),
    ("missing output", _with(DATASET, "spec.output", _DELETE), "spec.output"),
    ("source with two kinds", _with(DATASET, "spec.sources.0.uri", "s3://b/k"), "exactly one of hub, path, uri or inline"),
    ("source with none", _with(DATASET, "spec.sources.0.path", _DELETE), "exactly one of hub, path, uri or inline"),
    ("too many sources", _with(DATASET, "spec.sources", [{"name": f"s{i}", "path": "/p"} for i in range(33)]), "spec.sources"),
    ("bad source name", _with(DATASET, "spec.sources.0.name", "Not_A_Name"), "spec.sources[0].name"),
    ("stage with two types", _with(DATASET, "spec.stages", [{"name": "x", "dedupe": {}, "select": {"size": 3}}]), "exactly one of dedupe"),
    ("select size zero", _with(DATASET, "spec.stages", [{"name": "x", "select": {"size": 0}}]), "spec.stages[0].select.size"),
    ("solve window inverted", _with(DATASET, "spec.stages", [{"name": "x", "difficulty": {"sampler": {"model": "m"}, "attempts": 4, "minSolved": 3, "maxSolved": 1}}]), "minSolved must not exceed maxSolved"),
    ("threshold not a decimal", _with(DATASET, "spec.stages", [{"name": "x", "dedupe": {"threshold": "high"}}]), "spec.stages[0].dedupe.threshold"),
    ("string where an object goes", _with(DATASET, "spec.output", "/out"), "spec.output"),
    ("over-long system prompt", _with(DATASET, "spec.systemPrompt", "x" * 9000), "spec.systemPrompt"),
    ("wrong type epochs", _with(FINETUNE, "spec.hyperparameters", {"epochs": "fifteen"}), "spec.hyperparameters.epochs"),
    ("negative epochs", _with(FINETUNE, "spec.hyperparameters", {"epochs": -1}), "spec.hyperparameters.epochs"),
    ("unknown method", _with(FINETUNE, "spec.method", "qlora"), "spec.method"),
    ("lora block with full", _with(FINETUNE, "spec.lora", {"rank": 8}), "lora is only allowed with method: lora"),
    ("dataset twice", _with(FINETUNE, "spec.dataset", {"path": "/d"}), "exactly one of datasetRef or dataset"),
    ("zero stage 4", _with(FINETUNE, "spec.deepspeed", {"zeroStage": 4}), "spec.deepspeed.zeroStage"),
    ("too many nodes", _with(FINETUNE, "spec.numNodes", 1000), "spec.numNodes"),
    ("learning rate as float", _with(FINETUNE, "spec.hyperparameters", {"learningRate": 0.00001}), "spec.hyperparameters.learningRate"),
    ("no benchmarks", _with(EVAL, "spec.benchmarks", []), "spec.benchmarks"),
    ("model twice", _with(EVAL, "spec.model.name", "Qwen/Qwen2.5-7B"), "exactly one of fineTuneJob, name or endpoint"),
    ("gate without minimum", _with(EVAL, "spec.gates", [{"benchmark": "aime24"}]), "spec.gates[0].minScore"),
    ("endpoint not http", _with(EVAL, "spec.model", {"endpoint": {"url": "ftp://x"}}), "spec.model.endpoint.url"),
    ("too many samples", _with(EVAL, "spec.benchmarks.0.samples", 5000), "spec.benchmarks[0].samples"),
]


@pytest.fixture(scope="module")
def api(cluster):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    cluster.kubectl("apply", "--server-side", "-f", str(root / "crds"))
    for plural in ("reasoningdatasets", "finetunejobs", "evalruns"):
        cluster.wait_established(f"{plural}.reasonops.io")
    return cluster


@pytest.mark.parametrize("doc,field", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_resource_is_rejected_naming_the_problem(api, doc, field):
    proc = api.kubectl("create", "--dry-run=server", "-n", "default", "-f", "-", input=json.dumps(doc), check=False)
    assert proc.returncode != 0, f"accepted: {doc}"
    assert field in proc.stderr, proc.stderr


@pytest.mark.parametrize("doc", [DATASET, FINETUNE, EVAL], ids=["dataset", "finetune", "eval"])
def test_minimal_resources_are_accepted(api, doc):
    api.kubectl("create", "--dry-run=server", "-n", "default", "-f", "-", input=json.dumps(doc))
