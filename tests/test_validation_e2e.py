"""Bad resources are rejected by the API server itself, naming the field, and `reasonops run` rejects
the same files with the same message on one line (the CRDs' CEL rules and the pydantic models agree).

The cases are in validation_support.py; test_validation_parity.py checks the pydantic side alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from validation_support import INVALID, VALID

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
