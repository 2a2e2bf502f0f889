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
from validation_support import INVALID, VALID


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
]


@pytest.mark.parametrize("text,extra,problem", [c[1:] for c in _BAD_INPUT], ids=[c[0] for c in _BAD_INPUT])
def test_bad_local_input_gives_one_line(tmp_path, text, extra, problem):
    proc = _run(tmp_path, text, *extra)
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], proc.stderr
    assert not (tmp_path / "reasonops-out").exists() or not any((tmp_path / "reasonops-out").iterdir())
