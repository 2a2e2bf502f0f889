"""The EvalRun's model server as a real node would run it: vLLM's arguments and Deployment, and the CPU engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reasonops.api.v1alpha1 import EvalRun
from reasonops import contract as k
from reasonops.controller import builders as b
from reasonops.controller.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Settings(eval_image="eval:1", serve_image="serve:1")
# Qwen2.5-32B-Instruct's config.json (the fields that bound the context).
QWEN25_32B = {"architectures": ["Qwen2ForCausalLM"], "max_position_embeddings": 32768, "sliding_window": 131072, "rope_scaling": None}


def _evalrun(**serving) -> tuple[dict, EvalRun]:
    body = yaml.safe_load((ROOT / "examples" / "evalrun.yaml").read_text())
    body["metadata"].update(namespace="team", uid="uid-1", generation=1)
    body["spec"]["serving"] = {**body["spec"]["serving"], **serving}
    return body, EvalRun.model_validate(body)


def _server(**serving) -> tuple[dict, dict]:
    body, ev = _evalrun(**serving)
    deployment, _ = b.build_eval_server(body, ev, "pvc://models/m/model", "rev1", SETTINGS)
    return deployment, deployment["spec"]["template"]["spec"]["containers"][0]


def test_max_model_len_is_checked_against_the_models_config():
    assert k.check_max_model_len(QWEN25_32B, 32768) is None
    assert k.check_max_model_len(QWEN25_32B, None) is None
    error = k.check_max_model_len(QWEN25_32B, 40960)
    assert error and "40960" in error and "32768" in error and "\n" not in error
    # YaRN extends the context by its factor (Qwen2.5's documented 131072 with factor 4).
    yarn = {**QWEN25_32B, "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    assert k.check_max_model_len(yarn, 131072) is None and k.check_max_model_len(yarn, 131073)
    # Llama 3.1's rope_scaling does not change the stated context; the smallest length key wins.
    llama = {"max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    assert k.check_max_model_len(llama, 131072) is None and k.check_max_model_len(llama, 262144)
    assert k.check_max_model_len({"max_position_embeddings": 4096, "seq_length": 2048}, 4096)
    assert k.check_max_model_len({"text_config": {"max_position_embeddings": 8192}}, 16384)
    assert k.check_max_model_len({}, 1 << 20) is None  # no length in the config: vLLM decides


@pytest.mark.parametrize("example", ["examples/evalrun.yaml", "examples/gitops/base/evalrun.yaml"])
def test_examples_ask_for_no_more_context_than_qwen25_32b_has(example):
    doc = next(d for d in yaml.safe_load_all((ROOT / example).read_text()) if d and d["kind"] == "EvalRun")
    assert k.check_max_model_len(QWEN25_32B, doc["spec"]["serving"]["maxModelLen"]) is None


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
