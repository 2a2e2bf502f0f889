"""pydantic (`reasonops run`, the pods) enforces what the API server enforces, with the same messages.

The API server side of the same cases is tests/test_validation_e2e.py (cluster)."""

from __future__ import annotations

import json

import pytest

from reasonops.api import crdgen
from reasonops.api.common import RULES, resolve_defaults
from reasonops.api.v1alpha1 import KINDS
from reasonops.errors import WorkloadError
from reasonops.runner import parse_resource
from validation_support import GENERATED, INVALID, VALID, generated_resources, judge_locally, with_


def _cel_rules(node):
    if isinstance(node, dict):
        yield from node.get("x-kubernetes-validations", [])
        for value in node.values():
            yield from _cel_rules(value)
    elif isinstance(node, list):
        for value in node:
            yield from _cel_rules(value)


def _crd_rules() -> list[dict]:
    return [r for kind in KINDS.values() for r in _cel_rules(crdgen.build_crd(kind))]


def test_every_cel_rule_of_the_crds_has_its_python_twin():
    declared = {json.dumps(r.cel_rule(), sort_keys=True) for r in RULES}
    in_crds = {json.dumps(r, sort_keys=True) for r in _crd_rules()}
    assert len(in_crds) >= 20
    assert in_crds <= declared, f"CEL rules without a Rule declaration: {sorted(in_crds - declared)}"
    assert declared <= in_crds, f"Rules that reach no CRD: {sorted(declared - in_crds)}"


def test_every_rule_is_exercised_by_an_invalid_case():
    messages = {case[3] for case in INVALID if case[3]}
    untested = {r["message"] for r in _crd_rules() if not any(r["message"].startswith(m) for m in messages)}
    assert not untested, f"rules no case of validation_support.INVALID breaks: {sorted(untested)}"


@pytest.mark.parametrize("doc,field,message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_resource_is_rejected_naming_the_field(doc, field, message):
    with pytest.raises(WorkloadError) as err:
        parse_resource(doc)
    text = err.value.message
    assert "\n" not in text
    assert f"{field}: {message}" in text if message else f"{field}: " in text, text


@pytest.mark.parametrize("doc", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_resource_is_accepted_and_stays_valid_with_defaults(doc):
    resource = parse_resource(doc)
    resolved = resolve_defaults(resource.spec)
    type(resource.spec).model_validate(resolved.to_wire())



# --- generated resources (the API server's verdicts: test_validation_e2e.py) -----------------------------

def test_the_generator_is_seeded_and_mutates_in_every_way():
    resources = generated_resources()
    assert len(resources) == GENERATED >= 1000
    assert json.dumps(resources) == json.dumps(generated_resources()), "the generator must be deterministic"
    described = " ".join(description for description, _ in resources)
    for category in ("type", "numeric string", "bool as string", "bool as int", "huge int", "float", "null", "null value",
                     "unknown field", "bad name", "labels", "annotations", "bad metadata", "bad kind", "bad apiVersion",
                     "range", "non-finite", "delete"):
        assert f": {category} " in described or f"; {category} " in described, f"no {category!r} mutation"
    combined = [description for description, _ in resources if "; " in description]
    assert len(combined) >= len(resources) // 4


def test_generated_resources_get_a_verdict_naming_the_field_never_a_traceback():
    verdicts = [judge_locally(doc) for _, doc in generated_resources()]
    rejected = [problem for accepted, problem in verdicts if not accepted]
    assert 0 < len(rejected) < len(verdicts)
    unnamed = [problem for problem in rejected if ": " not in problem or "\n" in problem]
    assert not unnamed, unnamed[:5]


@pytest.mark.parametrize("doc,problem", [
    ({**VALID[1][1], "spec": {**VALID[1][1]["spec"], "hyperparameters": {"epochs": "15"}}}, "spec.hyperparameters.epochs: Input should be a valid integer"),
    ({**VALID[1][1], "spec": {**VALID[1][1]["spec"], "deepspeed": {"offloadParams": "true"}}}, "spec.deepspeed.offloadParams: Input should be a valid boolean"),
    ({**VALID[1][1], "spec": {**VALID[1][1]["spec"], "deepspeed": {"offloadParams": 1}}}, "spec.deepspeed.offloadParams: Input should be a valid boolean"),
    ({**VALID[1][1], "spec": {**VALID[1][1]["spec"], "hyperparameters": {"epochs": 2**63}}}, "spec.hyperparameters.epochs: must be an integer in"),
    ({**VALID[1][1], "spec": {**VALID[1][1]["spec"], "hyperparameters": {"learningRate": "1e400"}}}, "spec.hyperparameters.learningRate: must be a number greater than 0"),
    ({**VALID[0][1], "metadata": {"name": "Bad_Name"}}, "metadata.name: must be a lowercase RFC 1123 subdomain"),
    ({**VALID[0][1], "metadata": {"name": "a" * 254}}, "metadata.name: must be a lowercase RFC 1123 subdomain"),
    ({**VALID[0][1], "metadata": {"name": "d", "labels": ["a"]}}, "metadata.labels: Input should be a valid dictionary"),
    ({**VALID[0][1], "metadata": {"name": "d", "labels": {"team": "a b"}}}, "metadata.labels: value 'a b' must be"),
    ({**VALID[0][1], "metadata": ["d"]}, "metadata: Input should be a valid dictionary"),
    ({**VALID[0][1], "metadata": "d"}, "metadata: Input should be a valid dictionary"),
    ({**VALID[0][1], "kind": {"name": "ReasoningDataset"}}, "kind: must be one of ReasoningDataset, FineTuneJob, EvalRun"),
    ({**VALID[0][1], "apiVersion": "reasonops.io/v1"}, "apiVersion: must be reasonops.io/v1alpha1"),
    ({**VALID[0][1], "unknownField": 1}, "unknownField: Extra inputs are not permitted"),
], ids=["numeric string", "bool as string", "bool as int", "above int64", "infinite decimal", "name with _", "name too long",
        "labels as a list", "label value", "metadata a list", "metadata a string", "kind a mapping", "apiVersion", "unknown field"])
def test_what_the_api_server_refuses_is_refused_naming_the_field(doc, problem):
    accepted, message = judge_locally(doc)
    assert not accepted and problem in message, message


@pytest.mark.parametrize("doc", [
    {**VALID[0][1], "spec": {**VALID[0][1]["spec"], "resources": {"podLabels": {"team": None}}}},
    {**VALID[1][1], "spec": {**VALID[1][1]["spec"], "baseModel": {"name": "m", "volume": {"volume": {"claimName": "c", "path": None}}}}},
    {**VALID[1][1], "spec": {**VALID[1][1]["spec"], "hyperparameters": {"epochs": 3.0}}},
    {**VALID[0][1], "metadata": {"name": "a" * 253}},
], ids=["null label value", "null volume path", "integral float", "name of 253 characters"])
def test_what_the_api_server_accepts_is_accepted(doc):
    assert judge_locally(doc) == (True, "")



# --- `reasonops run` as a shell runs it: one line naming the problem, never a traceback ----------

def _run(tmp_path, text: str, *extra: str):
    import os
    import subprocess
    import sys

    path = tmp_path / "resources.yaml"
    path.write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(path), *extra],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def _yaml(doc: dict) -> str:
    import yaml

    return yaml.safe_dump(doc)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
_BAD_INPUT = [
    ("stage with no kind", _yaml(next(c[1] for c in INVALID if c[0] == "stage with no kind")), (),
     "spec.stages[0]: a stage sets exactly one of dedupe, decontaminate, difficulty, generate, score or select"),
    ("threshold out of range", _yaml(next(c[1] for c in INVALID if c[0] == "decontamination threshold 2")), (),
     "spec.stages[0].decontaminate.threshold: must be a number in [0, 1]"),
    ("temperature out of range", _yaml(next(c[1] for c in INVALID if c[0] == "benchmark temperature negative")), (),
     "spec.benchmarks[0].temperature: must be a number in [0, 2]"),
    ("output is a file", _yaml(next(c[1] for c in VALID if c[0] == "minimal dataset")), ("--output", "resources.yaml"),
     "--output resources.yaml is a file"),
    ("not a mapping", "- a\n- b\n", (), "a resource must be a mapping"),
    ("no name", "apiVersion: reasonops.io/v1alpha1\nkind: EvalRun\nspec: {}\n", (), "metadata.name: Field required"),
    ("not YAML", "kind: [\n", (), "cannot read"),
    ("metadata a list", "apiVersion: reasonops.io/v1alpha1\nkind: EvalRun\nmetadata: [e]\nspec: {}\n", (),
     "metadata: Input should be a valid dictionary"),
    ("metadata a string", "apiVersion: reasonops.io/v1alpha1\nkind: EvalRun\nmetadata: e\nspec: {}\n", (),
     "metadata: Input should be a valid dictionary"),
    ("kind a mapping", "apiVersion: reasonops.io/v1alpha1\nkind: {name: EvalRun}\nmetadata: {name: e}\nspec: {}\n", (),
     "kind: must be one of ReasoningDataset, FineTuneJob, EvalRun"),
    ("epochs a string", _yaml(with_(VALID[1][1], "spec.hyperparameters", {"epochs": "15"})), (),
     "spec.hyperparameters.epochs: Input should be a valid integer"),
]


@pytest.mark.parametrize("text,extra,problem", [c[1:] for c in _BAD_INPUT], ids=[c[0] for c in _BAD_INPUT])
def test_bad_local_input_gives_one_line(tmp_path, text, extra, problem):
    proc = _run(tmp_path, text, *extra)
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], proc.stderr
    assert not (tmp_path / "reasonops-out").exists() or not any((tmp_path / "reasonops-out").iterdir())
