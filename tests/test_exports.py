"""Exports to an object store, end to end through `reasonops run` as a shell runs it, against moto's
S3-compatible server (a real HTTP server, started here as its own program from hack/moto-venv.sh's venv): a
curation publishes its dataset, a tiny fine-tune trains from that s3:// dataset and publishes its model, and an
evaluation reads the model back from s3://. Errors (no such bucket, an unreachable endpoint) name the URI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from reasonops.contract import parse_resource, resolve
from reasonops.tinymodel import build_servable_model

from train_support import arithmetic_rows
from vllm_support import engine_environment

ROOT = Path(__file__).resolve().parents[1]
API = "reasonops.io/v1alpha1"
BUCKET = "reasoning-exports"
SECRET = "s3cr3t-value-never-logged"  # the secret access key: it must appear in no output, state or status


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moto(**env: str) -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free local port (its own program, from hack/moto-venv.sh's venv), once it answers."""
    subprocess.run([str(ROOT / "hack" / "moto-venv.sh")], check=True, timeout=600)
    port = _free_port()
    server = subprocess.Popen([str(ROOT / ".venv-moto" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=5)
            return server, endpoint
        except urllib.error.HTTPError:  # it answers (a refusal is an answer)
            return server, endpoint
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.3)


@pytest.fixture(scope="module")
def store() -> Iterator[str]:
    """moto's S3 server with one bucket; yields its endpoint URL."""
    server, endpoint = _moto()
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=10)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


def _run(resources: list[dict], out: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    file = out.parent / f"{resources[0]['metadata']['name']}.yaml"
    file.write_text(yaml.safe_dump_all(resources))
    return subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(file), "--output", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _env(**extra: str) -> dict[str, str]:
    """A shell's environment with the credentials (as a pod gets them from the export's Secret keys)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**clean, "PYTHONPATH": str(ROOT / "operator"), "AWS_ACCESS_KEY_ID": "reasonops-test", "AWS_SECRET_ACCESS_KEY": SECRET, **extra}


def _listing(endpoint: str, prefix: str) -> list[str]:
    with urllib.request.urlopen(f"{endpoint}/{BUCKET}?list-type=2&prefix={prefix}", timeout=10) as answer:
        body = answer.read().decode()
    return [part.split("</Key>")[0] for part in body.split("<Key>")[1:]]


@pytest.mark.slow
def test_a_dataset_and_a_model_go_to_the_store_and_come_back(store: str, tmp_path: Path) -> None:
    export = {"uri": f"s3://{BUCKET}/team", "endpointUrl": store, "region": "us-east-1",
              "accessKeyIdSecretRef": {"name": "store", "key": "id"}, "secretAccessKeySecretRef": {"name": "store", "key": "secret"}}
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": r["id"], "question": r["messages"][0]["content"], "answer": r["answer"],
                                        "solution": r["messages"][1]["content"]}) + "\n" for r in arithmetic_rows(8)))
    out = tmp_path / "out"
    dataset = {"apiVersion": API, "kind": "ReasoningDataset", "metadata": {"name": "arith"},
               "spec": {"sources": [{"name": "pool", "path": str(pool)}], "output": {"path": "datasets"}, "export": export}}
    proc = _run([dataset], out, _env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = json.loads((out / "state" / "ReasoningDataset-arith.json").read_text())
    exported = state["result"]["exportLocation"]
    assert exported == f"s3://{BUCKET}/team/arith/{state['revision']}"
    keys = _listing(store, f"team/arith/{state['revision']}/")
    assert {f"team/arith/{state['revision']}/{name}" for name in ("data.jsonl", "manifest.json", "_COMPLETE", "_EXPORTED")} <= set(keys)

    # A fine-tune of another team trains from the s3:// dataset and publishes its model; the endpoint comes
    # from the environment here (a credentials Secret's AWS_ENDPOINT_URL), not from an export.
    base = build_servable_model(tmp_path / "base", layers=1, seed=3)  # the evaluation below serves it with vLLM's CPU backend
    finetune = {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": "tiny"}, "spec": {
        "baseModel": {"name": str(base)}, "dataset": {"uri": exported, "credentialsSecretRef": "store"},
        "output": {"path": "models"}, "preset": "none", "export": export,
        "hyperparameters": {"learningRate": "3e-3", "epochs": 1, "globalBatchSize": 4, "microBatchSize": 1, "maxLength": 128,
                            "warmupRatio": "0", "seed": 7}}}
    proc = _run([finetune], out, _env(AWS_ENDPOINT_URL=store))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = json.loads((out / "state" / "FineTuneJob-tiny.json").read_text())
    model_uri = state["result"]["exportLocation"]
    assert model_uri == f"s3://{BUCKET}/team/tiny/{state['revision']}"
    model_keys = _listing(store, f"team/tiny/{state['revision']}/")
    assert any(key.endswith("/config.json") for key in model_keys) and any(key.endswith(".safetensors") for key in model_keys)

    # An evaluation reads the model back from the store (a local copy for the CPU engine) and scores it.
    evaluation = {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "from-store"}, "spec": {
        "model": {"name": model_uri}, "backend": "offline", "serving": {"engine": "cpu"}, "output": {"path": "evals"},
        "benchmarks": [{"name": "demo", "limit": 2, "maxTokens": 4, "samples": 1, "temperature": "0"}]}}
    proc = _run([evaluation], out, _env(AWS_ENDPOINT_URL=store, **engine_environment()))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "state" / "EvalRun-from-store.json").read_text())["result"]
    assert result["results"][0]["problems"] == 2 and result["provenance"]["modelLocation"] == model_uri
    for written in [*(out / "state").glob("*.json"), *out.rglob("summary.json")]:
        assert SECRET not in written.read_text(), written


@pytest.mark.slow
def test_store_errors_name_the_uri_in_one_line(store: str, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "What is 1 + 1?", "solution": "\\boxed{2}", "answer": "2"}) + "\n")

    def dataset(name: str, uri: str, endpoint: str) -> dict:
        return {"apiVersion": API, "kind": "ReasoningDataset", "metadata": {"name": name},
                "spec": {"sources": [{"name": "pool", "path": str(rows)}], "output": {"path": "datasets"},
                         "export": {"uri": uri, "endpointUrl": endpoint}}}

    proc = _run([dataset("nobucket", "s3://no-such-bucket/x", store)], tmp_path / "out", _env())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "ExportFailed" in proc.stderr and "cannot export to s3://no-such-bucket/x/nobucket/" in proc.stderr
    assert "no such bucket" in proc.stderr and SECRET not in proc.stdout + proc.stderr

    proc = _run([dataset("unreachable", f"s3://{BUCKET}/x", f"http://127.0.0.1:{_free_port()}")], tmp_path / "out2", _env())
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"cannot export to s3://{BUCKET}/x/unreachable/" in proc.stderr and "the endpoint is unreachable" in proc.stderr

    # A store that checks credentials (moto with authentication on) refuses unknown keys.
    checking, endpoint = _moto(INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        proc = _run([dataset("refused", f"s3://{BUCKET}/x", endpoint)], tmp_path / "out3", _env())
    finally:
        checking.terminate()
        checking.wait(timeout=10)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"cannot export to s3://{BUCKET}/x/refused/" in proc.stderr and "access denied: check the credentials" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_the_example_is_valid_and_names_keys_its_secret_has() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / "exports" / "pipeline.yaml").read_text()) if d]
    secret = next(d for d in docs if d["kind"] == "Secret")
    resources = {d["metadata"]["name"]: parse_resource(d) for d in docs if d["kind"] != "Secret"}
    for name in ("math-reasoning", "reasoner"):
        export = resources[name].spec.export
        for ref in (export.accessKeyIdSecretRef, export.secretAccessKeySecretRef):
            assert ref.name == secret["metadata"]["name"] and ref.key in secret["stringData"]
    evaluation = resources["published-eval"]
    resolution = resolve(evaluation, evaluation.spec.to_wire(), lambda kind, name: None)
    assert resolution.input.location == "s3://reasoning/models/reasoner/REVISION" and resolution.input.secret == "model-store"
