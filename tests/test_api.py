"""The API models and the CRDs generated from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from reasonops.api import crdgen
from reasonops.api.v1alpha1 import KINDS, EvalRun, FineTuneJob, ReasoningDataset

ROOT = Path(__file__).resolve().parents[1]


def test_committed_crds_match_the_models():
    rendered = crdgen.render_all()
    for directory in (ROOT / "crds", ROOT / "charts" / "reasonops" / "crds"):
        if directory == ROOT / "charts" / "reasonops" / "crds" and not directory.parent.exists():
            continue
        committed = {p.name: p.read_text() for p in directory.glob("*.yaml")}
        assert committed == rendered, f"{directory} is stale: run `reasonops crds`"


def _walk(schema: dict, path: str = ""):
    yield path, schema
    for name, prop in (schema.get("properties") or {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


@pytest.mark.parametrize("kind", list(KINDS.values()), ids=list(KINDS))
def test_crd_schema_is_structural_described_and_bounded(kind):
    crd = crdgen.build_crd(kind)
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert "reasonops" in crd["spec"]["names"]["categories"]
    assert crd["spec"]["names"]["shortNames"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:3] == ["Ready", "Reason", "Revision"] and columns[-1] == "Age" and len(columns) >= 5
    root = version["schema"]["openAPIV3Schema"]
    for section in ("spec", "status"):
        for path, node in _walk(root["properties"][section], section):
            assert "$ref" not in node and "anyOf" not in node and "default" not in node, path
            if path != section and not path.endswith("[]"):  # list items are described by their list
                assert node.get("description"), f"{path} has no description"
            if node.get("type") == "array":
                assert "maxItems" in node, f"{path} is an unbounded list"
            if node.get("type") == "string" and "enum" not in node and "format" not in node:
                assert "maxLength" in node, f"{path} is an unbounded string"


def test_named_lists_are_maps_keyed_by_name():
    spec = crdgen.build_crd(ReasoningDataset)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["sources"]["x-kubernetes-list-type"] == "map"
    assert spec["properties"]["stages"]["x-kubernetes-list-map-keys"] == ["name"]


def test_cel_rules_reach_the_schema():
    ft = crdgen.build_crd(FineTuneJob)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in ft["x-kubernetes-validations"]]
    assert "has(self.datasetRef) != has(self.dataset)" in rules


def _example(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ROOT / "examples" / name).read_text()) if d]


def test_examples_are_valid():
    files = sorted((ROOT / "examples").glob("*.yaml"))
    assert files
    for path in files:
        for doc in _example(path.name):
            KINDS[doc["kind"]].model_validate(doc)


def _finetune(**spec) -> dict:
    base = {"baseModel": {"name": "Qwen/Qwen2.5-7B-Instruct"}, "datasetRef": {"name": "limo"}, "output": {"path": "/out"}}
    return {"apiVersion": "reasonops.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "ft"}, "spec": {**base, **spec}}


def test_decimals_are_strings_checked_for_form():
    FineTuneJob.model_validate(_finetune(hyperparameters={"learningRate": "5e-6"}))
    with pytest.raises(ValidationError, match="learningRate"):
        FineTuneJob.model_validate(_finetune(hyperparameters={"learningRate": "fast"}))


def test_unknown_fields_are_rejected_with_their_name():
    with pytest.raises(ValidationError, match="learningrate"):
        FineTuneJob.model_validate(_finetune(hyperparameters={"learningrate": "5e-6"}))


def test_eval_defaults_are_not_written_to_the_wire():
    ev = EvalRun.model_validate({
        "apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun", "metadata": {"name": "e"},
        "spec": {"model": {"fineTuneJob": "ft"}, "benchmarks": [{"name": "aime24"}]},
    })
    assert ev.spec.to_wire() == {"model": {"fineTuneJob": "ft"}, "benchmarks": [{"name": "aime24"}]}
