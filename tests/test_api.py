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


# --- defaults: named once in the API, stated in the CRDs and docs from the value ---------------

def _models(model: type, seen: dict | None = None) -> dict[str, type]:
    seen = {} if seen is None else seen
    if model.__name__ not in seen:
        seen[model.__name__] = model
        for info in model.model_fields.values():
            sub, _ = crdgen._sub_model(info.annotation)
            if sub is not None:
                _models(sub, seen)
    return seen


_ALL_MODELS = {n: m for kind in KINDS.values() for n, m in {**_models(kind.spec_model), **_models(kind.status_model)}.items()}


@pytest.mark.parametrize("model", list(_ALL_MODELS.values()), ids=list(_ALL_MODELS))
def test_crd_descriptions_state_the_default_recorded_on_the_field(model):
    from reasonops.api.common import _NO_DEFAULT, static_default

    schema = crdgen.schema_for(model)
    for name, info in model.model_fields.items():
        description = schema["properties"][name]["description"]
        assert "(default " not in (info.description or ""), f"{model.__name__}.{name}: a literal default in its description; use defaulted()"
        default = static_default(info)
        if default is _NO_DEFAULT or isinstance(default, dict) or default == "":
            assert "(default " not in description, f"{model.__name__}.{name}: {description}"
        else:
            assert description == crdgen.with_default(info.description, default), f"{model.__name__}.{name}: {description}"


def test_named_defaults_reach_the_crd_text():
    from reasonops.api import v1alpha1 as api

    crd = (ROOT / "crds" / "reasonops.io_reasoningdatasets.yaml").read_text()
    assert f'(default "{api.DEDUPE_THRESHOLD}")' in crd and f"(default {api.DECONTAMINATE_NGRAM})" in crd
    ds = crdgen.schema_for(api.DedupeStage)["properties"]["threshold"]["description"]
    assert ds.endswith('(default "0.6").')


def test_defaults_doc_is_current():
    assert (ROOT / "docs" / "api-defaults.md").read_text() == crdgen.render_defaults_doc(), "run `reasonops crds`"


def test_readme_points_to_the_defaults_table_and_states_none_itself():
    import re

    section = (ROOT / "README.md").read_text().split("## The resources", 1)[1].split("\n## ", 1)[0]
    assert "docs/api-defaults.md" in section
    assert not re.search(r"\(default [^:]", section)


def test_resolve_defaults_fills_static_defaults_recursively_and_leaves_the_rest():
    from reasonops.api.common import resolve_defaults

    ev = EvalRun.model_validate({
        "apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun", "metadata": {"name": "e"},
        "spec": {"model": {"fineTuneJob": "ft"}, "benchmarks": [{"name": "aime24", "temperature": "0.7"}]},
    })
    resolved = resolve_defaults(ev.spec)
    assert ev.spec.serving is None and ev.spec.protocol is None  # the input is left alone
    assert resolved.protocol == "limo" and resolved.backend == "server" and resolved.backoffLimit == 2
    assert resolved.serving.enabled is True and resolved.serving.replicas == 1 and resolved.serving.dtype == "auto"
    bench = resolved.benchmarks[0]
    assert bench.temperature == "0.7"  # set values win
    assert bench.maxTokens is None and bench.samples is None and bench.topP is None and bench.seed is None  # the protocol decides these
    assert resolved.concurrency is None and resolved.model.servedModelName is None
    assert type(resolved).model_validate(resolved.to_wire()) == resolved

    ft = FineTuneJob.model_validate(_finetune(checkpoints={"everySteps": 50}))
    spec = resolve_defaults(ft.spec)
    assert spec.deepspeed.zeroStage == 3 and spec.checkpoints.keep is None and spec.checkpoints.everyEpochs is None
    assert spec.hyperparameters.seed == 42 and spec.hyperparameters.learningRate is None  # the preset's
    assert spec.lora is None and spec.gpusPerNode is None and spec.numNodes == 1
    type(spec).model_validate(spec.to_wire())


def test_examples_stay_valid_with_defaults_resolved():
    from reasonops.api.common import resolve_defaults

    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in _example(path.name):
            spec = KINDS[doc["kind"]].model_validate(doc).spec
            type(spec).model_validate(resolve_defaults(spec).to_wire())
