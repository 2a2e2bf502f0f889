"""Bad resources are rejected by the API server itself, naming the field, and `reasonops run` rejects
the same files with the same message on one line (the CRDs' CEL rules and the pydantic models agree).

The cases are in validation_support.py; test_validation_parity.py checks the pydantic side alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import KUBECTL
from validation_support import INVALID, VALID, ApiServer, generated_resources, judge_locally

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api(cluster):
    # Applying the CRDs is itself a check: the API server refuses CEL rules over its cost budget.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for plural in ("reasoningdatasets", "finetunejobs", "evalruns"):
        cluster.wait_established(f"{plural}.reasonops.io")
    return cluster


def _reasonops_run(tmp_path: Path, doc: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "resource.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(path), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("doc,field,message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_resource_is_rejected_alike_by_the_api_server_and_reasonops_run(api, tmp_path, doc, field, message):
    server = api.kubectl("create", "--dry-run=server", "-n", "default", "-f", "-", input=json.dumps(doc), check=False)
    assert server.returncode != 0, f"accepted: {doc}"
    assert f"{field}: " in server.stderr, server.stderr
    if message:  # a CEL rule: `<field>: Invalid value: "<type>": <message>`
        assert re.search(rf'{re.escape(field)}: (Invalid value: "\w+": )?{re.escape(message)}', server.stderr), server.stderr

    local = _reasonops_run(tmp_path, doc)
    assert local.returncode == 1, local
    lines = local.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in local.stderr, local.stderr
    assert lines[0].startswith(f"error: InvalidSpec: {doc['kind']} ")
    assert f"{field}: {message}" in lines[0] if message else f"{field}: " in lines[0], lines[0]


@pytest.mark.parametrize("doc", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_resources_are_accepted(api, doc):
    api.kubectl("create", "--dry-run=server", "-n", "default", "-f", "-", input=json.dumps(doc))


def test_generated_resources_are_judged_alike_by_the_api_server_and_reasonops_run(api):
    """The seeded generator's resources (every field of the examples mutated, alone and together), each
    applied to the API server (server-side dry run) and validated as `reasonops run` validates: the same
    verdict for every one, and a one-line error, never a traceback, for every refusal."""
    resources = generated_resources()
    started = time.monotonic()
    verdicts = ApiServer(api.kubeconfig, str(KUBECTL)).judge([doc for _, doc in resources])
    seconds = time.monotonic() - started
    tracebacks, disagreements = [], []
    for (description, doc), (server_accepts, server_says) in zip(resources, verdicts):
        try:
            local_accepts, local_says = judge_locally(doc)
        except Exception as exc:  # noqa: BLE001 - what the test counts
            tracebacks.append(f"{description}: {type(exc).__name__}: {exc}")
            continue
        if local_accepts != server_accepts:
            disagreements.append(f"{description}: the API server {'accepts' if server_accepts else 'refuses: ' + server_says[:300]};"
                                 f" reasonops run {'accepts' if local_accepts else 'refuses: ' + local_says[:300]}")
    refused = sum(not accepted for accepted, _ in verdicts)
    print(f"{len(resources)} resources ({refused} refused by the API server) judged in {seconds:.1f} s:"
          f" {len(disagreements)} disagreements, {len(tracebacks)} tracebacks")
    assert not tracebacks, "\n".join(tracebacks[:20])
    assert not disagreements, f"{len(disagreements)} of {len(resources)}:\n" + "\n".join(disagreements[:40])
    assert 0 < refused < len(resources)
    assert seconds < 60
