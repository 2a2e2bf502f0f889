"""Pure builders: the Kubernetes objects made for each kind (no cluster)."""

from __future__ import annotations

from pathlib import Path

import yaml

from reasonops.api.v1alpha1 import EvalRun, FineTuneJob, ReasoningDataset
from reasonops.controller import builders as b
from reasonops.controller.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Settings(train_image="train:1", curate_image="curate:1", eval_image="eval:1", serve_image="serve:1",
                    workload_service_account="reasonops-workload")


def _load(name: str, kind: str) -> dict:
    for doc in yaml.safe_load_all((ROOT / "examples" / name).read_text()):
        if doc and doc["kind"] == kind:
            doc["metadata"].update(namespace="team", uid="uid-1", generation=1)
            return doc
    raise AssertionError(kind)


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_revision_ignores_how_a_run_is_scheduled_but_not_what_it_produces():
    spec = {"sources": [{"name": "a", "path": "/x"}], "output": {"path": "/o"}}
    assert b.revision_of(spec) == b.revision_of({**spec, "suspend": True, "resources": {"gpus": 8}})
    assert b.revision_of(spec) != b.revision_of({**spec, "stages": [{"name": "s", "select": {"size": 5}}]})
    assert b.revision_of(spec, {"dataset": "r1"}) != b.revision_of(spec, {"dataset": "r2"})


def test_child_names_fit_indexed_pod_hostnames():
    name = b.child_name("x" * 80, "0123456789")
    assert len(name) <= 53 and name.endswith("-01234567")
    assert len(f"{name}-255") <= 63


def test_locations_translate_to_pod_paths():
    from reasonops.api.common import Location

    loc = Location.model_validate({"volume": {"claimName": "data", "path": "sets/"}})
    s = b.location_string(loc, "limo", "abc")
    assert s == "pvc://data/sets/limo/abc"
    assert b.pod_path(s) == "/mnt/pvc/data/sets/limo/abc" and b.claim_of(s) == "data"
    assert b.location_string(Location(uri="s3://bucket/p/"), "n", "r") == "s3://bucket/p/n/r"


def test_dataset_job_is_secure_queued_and_carries_its_config():
    body = _load("reasoningdataset.yaml", "ReasoningDataset")
    ds = ReasoningDataset.model_validate(body)
    children = b.build_dataset_children(body, ds, "rev1234567", SETTINGS, {}, suspend=False)
    cm, job = children
    assert cm["kind"] == "ConfigMap" and job["kind"] == "Job"
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "reasonops.io/v1alpha1", "kind": "ReasoningDataset", "name": "limo-math", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True,
    }
    # Kueue: the queue label is passed on and the Job starts suspended so Kueue can admit it.
    assert job["metadata"]["labels"][b.QUEUE_LABEL] == "gpu-batch" and job["spec"]["suspend"] is True
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert pod["serviceAccountName"] == "reasonops-workload"
    assert {"name": "pvc-reasoning-data", "persistentVolumeClaim": {"claimName": "reasoning-data"}} in pod["volumes"]
    env = _env(container)
    assert env["REASONOPS_OUTPUT"] == "/mnt/pvc/reasoning-data/datasets/limo-math/rev1234567"
    doc = yaml.safe_load(cm["data"]["resource.json"])
    assert doc["revision"] == "rev1234567" and doc["spec"]["stages"][-1] == {"name": "select", "select": {"size": 800}}


def test_finetune_is_an_indexed_job_with_rendezvous_environment():
    body = _load("finetunejob.yaml", "FineTuneJob")
    ft = FineTuneJob.model_validate(body)
    ctx = {"datasetLocation": "pvc://reasoning-data/datasets/limo-math/r1", "datasetRevision": "r1"}
    cm, svc, job = b.build_finetune_children(body, ft, "abcdef123456", SETTINGS, ctx, suspend=False)
    name = "limo-32b-abcdef12"
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 4 == job["spec"]["parallelism"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {b.LABEL_JOB: name}
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == name
    env = _env(pod["containers"][0])
    assert env["MASTER_ADDR"] == f"{name}-0.{name}" and env["MASTER_PORT"] == "29500"
    assert env["NNODES"] == "4" and env["NPROC_PER_NODE"] == "8" and env["WORLD_SIZE"] == "32"
    assert env["NODE_RANK"] == {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert env["PET_NNODES"] == "4"
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"reasoning-data", "reasoning-models"}  # output and the dataset it reads
    doc = yaml.safe_load(cm["data"]["resource.json"])
    assert doc["context"]["datasetLocation"] == "/mnt/pvc/reasoning-data/datasets/limo-math/r1"


def test_eval_server_has_startup_probe_and_gpus_per_tensor_parallel_rank():
    body = _load("evalrun.yaml", "EvalRun")
    ev = EvalRun.model_validate(body)
    deployment, service = b.build_eval_server(body, ev, "pvc://reasoning-models/runs/limo-32b/r/model", "r", SETTINGS)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["vllm", "serve", "/mnt/pvc/reasoning-models/runs/limo-32b/r/model"]
    assert "--tensor-parallel-size" in container["command"] and container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["startupProbe"]["httpGet"]["path"] == "/v1/models"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 1800
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert b.endpoint_url(ev, SETTINGS) == "http://limo-32b-eval-server.team.svc:8000/v1"


def test_secrets_are_referenced_never_copied():
    body = _load("reasoningdataset.yaml", "ReasoningDataset")
    body["spec"]["stages"][2]["difficulty"]["sampler"]["endpoint"] = {
        "url": "https://api.example.com/v1", "apiKeySecretRef": {"name": "openai", "key": "token"}}
    ds = ReasoningDataset.model_validate(body)
    cm, job = b.build_dataset_children(body, ds, "r", SETTINGS, {}, suspend=False)
    env = [e for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "REASONOPS_API_KEY_OPENAI_TOKEN"]
    assert env == [{"name": "REASONOPS_API_KEY_OPENAI_TOKEN", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "token"}}}]


def test_pod_annotations_and_labels_reach_the_pods_without_a_new_revision():
    body = _load("reasoningdataset.yaml", "ReasoningDataset")
    spec = dict(body["spec"])
    body["spec"]["resources"]["podAnnotations"] = {"sidecar.istio.io/inject": "false"}
    body["spec"]["resources"]["podLabels"] = {"team": "math"}
    assert b.revision_of(spec) == b.revision_of(body["spec"])
    ds = ReasoningDataset.model_validate(body)
    job = b.build_dataset_children(body, ds, "r", SETTINGS, {}, suspend=False)[1]
    meta = job["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"sidecar.istio.io/inject": "false"} and meta["labels"]["team"] == "math"


def test_gpu_pods_get_the_operators_default_placement_unless_they_set_their_own():
    settings = Settings(gpu_node_selector={"pool": "gpu"}, gpu_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
    body = _load("evalrun.yaml", "EvalRun")
    ev = EvalRun.model_validate(body)
    server = b.build_eval_server(body, ev, "/models/m", "r", settings)[0]["spec"]["template"]["spec"]
    assert server["nodeSelector"] == {"pool": "gpu"} and server["tolerations"][0]["key"] == "nvidia.com/gpu"
    job = b.build_eval_children(body, ev, "r", settings, {"modelLocation": "/models/m"}, suspend=False)[1]
    assert "nodeSelector" not in job["spec"]["template"]["spec"]  # the benchmark Job uses no GPU
