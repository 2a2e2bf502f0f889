"""The EvalRun's model server as a real node would run it: vLLM's arguments and Deployment, and the CPU engine."""

from __future__ import annotations

from pathlib import Path

import yaml

from reasonops.api.v1alpha1 import EvalRun
from reasonops import contract, serving
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


def test_cpu_engine_serves_with_vllms_cpu_backend_from_the_eval_image_and_leaves_the_gpu_server_unchanged():
    vllm_before, _ = _server()
    deployment, container = _server(engine="cpu", replicas=1)
    assert container["image"] == "eval:1"
    assert container["command"][:3] == ["vllm", "serve", "/mnt/pvc/models/m/model"]
    args = container["command"]
    assert args[args.index("--port") + 1] == "8000" and args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--served-model-name") + 1] == "limo-32b-eval"
    assert args[args.index("--generation-config") + 1] == "vllm"
    assert args[args.index("--max-model-len") + 1] == "32768"
    assert "--tensor-parallel-size" not in args  # no GPUs to split over
    assert "--enforce-eager" in args and "--enforce-eager" not in vllm_before["spec"]["template"]["spec"]["containers"][0]["command"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VLLM_CPU_KVCACHE_SPACE"] == str(serving.CPU_KV_CACHE_GIB) and env["VLLM_NO_USAGE_STATS"] == "1"
    # Sized from what vLLM's CPU backend was measured to hold (docs/vllm-cpu): 3.5-4.5 GB with a 1 GiB KV cache.
    memory = container["resources"]["requests"]["memory"]
    assert memory == container["resources"]["limits"]["memory"] == "5Gi"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert deployment["metadata"]["annotations"]["reasonops.io/engine"] == "cpu"
    assert deployment["metadata"]["annotations"]["reasonops.io/generation-config"] == "vllm"
    assert "nodeSelector" not in deployment["spec"]["template"]["spec"]
    # The user's own figures win.
    _, container = _server(engine="cpu", resources={"cpu": "2", "memory": "8Gi"})
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    # The default engine is vllm and its Deployment does not depend on the field being set.
    explicit, _ = _server(engine="vllm")
    assert explicit == vllm_before


def test_both_engines_start_the_server_serving_py_describes():
    """serving.server_args/server_env are the one owner of the server's command: the builders add nothing of their own."""
    body, ev = _evalrun(engine="cpu")
    deployment, _ = b.build_eval_server(body, ev, "pvc://models/m/model", "rev1", SETTINGS)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    options = serving.ServerOptions(model_path="/mnt/pvc/models/m/model", served_model_name="limo-32b-eval", port=8000,
                                    engine="cpu", dtype=ev.spec.serving.dtype, max_model_len=32768, enforce_eager=True)
    assert container["command"] == serving.server_args(options)
    assert serving.server_env("cpu").items() <= {e["name"]: e.get("value") for e in container["env"]}.items()
    _, container = _server()
    gpu = serving.ServerOptions(model_path="/mnt/pvc/models/m/model", served_model_name="limo-32b-eval", port=8000,
                                dtype=ev.spec.serving.dtype, tensor_parallel_size=4, max_model_len=32768)
    assert container["command"] == serving.server_args(gpu)
