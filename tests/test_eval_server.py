"""The EvalRun's model server as a real node would run it: vLLM's arguments and Deployment, and the CPU engine."""

from __future__ import annotations

from pathlib import Path

import yaml

from reasonops.api.v1alpha1 import EvalRun
from reasonops import contract
from reasonops.controller import builders as b
from reasonops.controller.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Settings(eval_image="eval:1", serve_image="serve:1")


def _evalrun(**serving) -> tuple[dict, EvalRun]:
    body = yaml.safe_load((ROOT / "examples" / "evalrun.yaml").read_text())
    body["metadata"].update(namespace="team", uid="uid-1", generation=1)
    body["spec"]["serving"] = {**body["spec"]["serving"], **serving}
    return body, contract.with_defaults(EvalRun.model_validate(body))


def _server(**serving) -> tuple[dict, dict]:
    body, ev = _evalrun(**serving)
    deployment, _ = b.build_eval_server(body, ev, "pvc://models/m/model", "rev1", SETTINGS)
    return deployment, deployment["spec"]["template"]["spec"]["containers"][0]


def test_vllm_server_sends_the_protocols_sampling_only():
    deployment, container = _server()
    args = container["command"]
    assert args[args.index("--generation-config") + 1] == "vllm"
    assert args[args.index("--max-model-len") + 1] == "32768"
    assert deployment["metadata"]["annotations"]["reasonops.io/generation-config"] == "vllm"


def test_one_gpu_replica_is_recreated_not_rolled():
    deployment, _ = _server(replicas=1)
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    deployment, _ = _server(replicas=2)
    assert "strategy" not in deployment["spec"]  # two replicas roll one at a time
    deployment, _ = _server(replicas=1, engine="cpu")
    assert "strategy" not in deployment["spec"]  # no GPUs to ask for twice


def test_probes_survive_a_loaded_server_and_requests_are_set():
    _, container = _server()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["timeoutSeconds"] >= 5 and container[probe]["periodSeconds"] >= 10
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 1800
    assert container["resources"]["requests"]["cpu"] == "8" and container["resources"]["requests"]["memory"] == "64Gi"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    # The user's own figures win.
    _, container = _server(resources={"cpu": "3", "memory": "20Gi"})
    assert container["resources"]["requests"] == {"nvidia.com/gpu": "4", "cpu": "3", "memory": "20Gi"}


def test_pods_carry_the_model_revision_they_serve():
    deployment, _ = _server()
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"][b.LABEL_MODEL_REVISION] == "rev1"
    assert b.LABEL_MODEL_REVISION not in deployment["spec"]["selector"]["matchLabels"]  # the selector is immutable
    body, ev = _evalrun()
    long = b.build_eval_server(body, ev, "/m", "x" * 80, SETTINGS)[0]["spec"]["template"]["metadata"]["labels"]
    assert len(long[b.LABEL_MODEL_REVISION]) <= 63


def test_cpu_engine_serves_with_reasonops_from_the_eval_image_and_leaves_vllm_unchanged():
    vllm_before, _ = _server()
    deployment, container = _server(engine="cpu", replicas=1)
    assert container["image"] == "eval:1"
    assert container["command"][:3] == ["reasonops", "serve", "/mnt/pvc/models/m/model"]
    args = container["command"]
    assert args[args.index("--port") + 1] == "8000" and args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--served-model-name") + 1] == "limo-32b-eval"
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert deployment["metadata"]["annotations"]["reasonops.io/engine"] == "cpu"
    assert "nodeSelector" not in deployment["spec"]["template"]["spec"]
    # The default engine is vllm and its Deployment does not depend on the field being set.
    explicit, _ = _server(engine="vllm")
    assert explicit == vllm_before
