"""Pure builders: the Kubernetes objects made for each kind (no cluster)."""

from __future__ import annotations

import posixpath
from pathlib import Path

import pydantic
import pytest
import yaml

from reasonops import contract
from reasonops.api.common import TRAINING_GRACE_SECONDS, TRAINING_SHARED_MEMORY, Resources
from reasonops.api.v1alpha1 import EvalRun, FineTuneJob, ReasoningDataset
from reasonops.controller import builders
from reasonops.controller.sandbox_builders import build_sandbox_children
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


def _doc(res, revision: str, output: str | None = None, **context) -> contract.WorkloadDocument:
    if output is None:
        output = {"ReasoningDataset": contract.dataset_output, "FineTuneJob": contract.finetune_output}[res.kind](res, revision)
    return contract.build_document(res, revision=revision, output=output, context=contract.WorkloadContext(**context))


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_child_names_fit_indexed_pod_hostnames():
    name = builders.child_name("x" * 80, "0123456789")
    assert len(name) <= 53 and name.endswith("-01234567")
    assert len(f"{name}-255") <= 63


def test_dataset_job_is_secure_queued_and_carries_its_config():
    body = _load("reasoningdataset.yaml", "ReasoningDataset")
    ds = contract.with_defaults(ReasoningDataset.model_validate(body))
    children = builders.build_dataset_children(body, ds, _doc(ds, "rev1234567"), SETTINGS, suspend=False)
    cm, job = children
    assert cm["kind"] == "ConfigMap" and job["kind"] == "Job"
    assert job["metadata"]["ownerReferences"][0] == {
        "apiVersion": "reasonops.io/v1alpha1", "kind": "ReasoningDataset", "name": "limo-math", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True,
    }
    # Kueue: the queue label is passed on and the Job starts suspended so Kueue can admit it.
    assert job["metadata"]["labels"][builders.QUEUE_LABEL] == "gpu-batch" and job["spec"]["suspend"] is True
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
    ft = contract.with_defaults(FineTuneJob.model_validate(body))
    dataset = "pvc://reasoning-data/datasets/limo-math/r1"
    document = _doc(ft, "abcdef123456", datasetLocation=dataset, datasetRevision="r1")
    cm, svc, job = builders.build_finetune_children(body, ft, document, SETTINGS, False, input_locations=[dataset])
    name = "limo-32b-abcdef12"
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 4 == job["spec"]["parallelism"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {builders.LABEL_JOB: name}
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
    ev = contract.with_defaults(EvalRun.model_validate(body))
    deployment, service = builders.build_eval_server(body, ev, "pvc://reasoning-models/runs/limo-32b/r/model", "r", SETTINGS)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["vllm", "serve", "/mnt/pvc/reasoning-models/runs/limo-32b/r/model"]
    assert "--tensor-parallel-size" in container["command"] and container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["startupProbe"]["httpGet"]["path"] == "/v1/models"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 1800
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert contract.endpoint_url("limo-32b-eval", "team", SETTINGS.server_port) == "http://limo-32b-eval-server.team.svc:8000/v1"


def test_the_eval_server_and_the_sandbox_carry_kueues_labels_to_their_pods():
    # Kueue's deployment and pod integrations admit each pod from the resource's queue (tests/test_kueue.py).
    body = _load("evalrun.yaml", "EvalRun")
    body["metadata"]["labels"] = {builders.QUEUE_LABEL: "gpu", builders.PRIORITY_LABEL: "low", "team": "a"}
    ev = contract.with_defaults(EvalRun.model_validate(body))
    server = builders.build_eval_server(body, ev, "/models/m", "r", SETTINGS)[0]
    sandbox = build_sandbox_children(body, SETTINGS)[0]
    for deployment in (server, sandbox):
        for labels in (deployment["metadata"]["labels"], deployment["spec"]["template"]["metadata"]["labels"]):
            assert labels[builders.QUEUE_LABEL] == "gpu" and labels[builders.PRIORITY_LABEL] == "low" and "team" not in labels
        assert builders.QUEUE_LABEL not in deployment["spec"]["selector"]["matchLabels"]


def test_secrets_are_referenced_never_copied():
    body = _load("reasoningdataset.yaml", "ReasoningDataset")
    body["spec"]["stages"][2]["difficulty"]["sampler"]["endpoint"] = {
        "url": "https://api.example.com/v1", "apiKeySecretRef": {"name": "openai", "key": "token"}}
    ds = contract.with_defaults(ReasoningDataset.model_validate(body))
    cm, job = builders.build_dataset_children(body, ds, _doc(ds, "r"), SETTINGS, suspend=False)
    env = [e for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "REASONOPS_API_KEY_OPENAI_TOKEN"]
    assert env == [{"name": "REASONOPS_API_KEY_OPENAI_TOKEN", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "token"}}}]


def test_pod_annotations_and_labels_reach_the_pods_without_a_new_revision():
    body = _load("reasoningdataset.yaml", "ReasoningDataset")
    spec = dict(body["spec"])
    body["spec"]["resources"]["podAnnotations"] = {"sidecar.istio.io/inject": "false"}
    body["spec"]["resources"]["podLabels"] = {"team": "math"}
    assert contract.revision_of("ReasoningDataset", spec) == contract.revision_of("ReasoningDataset", body["spec"])
    ds = contract.with_defaults(ReasoningDataset.model_validate(body))
    job = builders.build_dataset_children(body, ds, _doc(ds, "r"), SETTINGS, suspend=False)[1]
    meta = job["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"sidecar.istio.io/inject": "false"} and meta["labels"]["team"] == "math"


def test_gpu_pods_get_the_operators_default_placement_unless_they_set_their_own():
    settings = Settings(gpu_node_selector={"pool": "gpu"}, gpu_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}])
    body = _load("evalrun.yaml", "EvalRun")
    ev = contract.with_defaults(EvalRun.model_validate(body))
    server = builders.build_eval_server(body, ev, "/models/m", "r", settings)[0]["spec"]["template"]["spec"]
    assert server["nodeSelector"] == {"pool": "gpu"} and server["tolerations"][0]["key"] == "nvidia.com/gpu"
    job = builders.build_eval_children(body, ev, _doc(ev, "r", "/results/r", modelLocation="/models/m"), settings, False,
                                model_location="/models/m")[1]
    assert "nodeSelector" not in job["spec"]["template"]["spec"]  # the benchmark Job uses no GPU


def test_every_referenced_volume_is_mounted_and_every_credential_reaches_the_pod():
    body = _load("reasoningdataset.yaml", "ReasoningDataset")
    body["spec"]["sources"].append({"name": "extra", "uri": "pvc://pools/extra.jsonl"})
    body["spec"]["output"] = {"uri": "s3://bucket/datasets", "credentialsSecretRef": "s3-creds"}
    for stage in body["spec"]["stages"]:
        if "decontaminate" in stage:
            stage["decontaminate"]["benchmarkPath"] = "pvc://benchmarks/math"
    body["spec"]["hubTokenSecretRef"] = {"name": "hf", "key": "token"}
    ds = contract.with_defaults(ReasoningDataset.model_validate(body))
    pod = builders.build_dataset_children(body, ds, _doc(ds, "r"), SETTINGS, suspend=False)[1]["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"pools", "benchmarks"}
    container = pod["containers"][0]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/mnt/pvc/pools", "/mnt/pvc/benchmarks"} <= mounts
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert _env(container)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}


def test_training_pods_get_the_credentials_of_the_dataset_they_read():
    body = _load("finetunejob.yaml", "FineTuneJob")
    ft = contract.with_defaults(FineTuneJob.model_validate(body))
    document = _doc(ft, "r", datasetLocation="s3://bucket/ds/r1")
    job = builders.build_finetune_children(body, ft, document, SETTINGS, False, input_locations=["s3://bucket/ds/r1"],
                                    input_secrets=["dataset-store"])[2]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "dataset-store"}} in container["envFrom"]


def test_eval_job_mounts_its_output_and_not_the_model_when_a_server_serves_it():
    body = _load("evalrun.yaml", "EvalRun")
    body["spec"]["output"] = {"volume": {"claimName": "results", "path": "evals"}}
    ev = contract.with_defaults(EvalRun.model_validate(body))
    model = "pvc://reasoning-models/runs/limo-32b/r/model"
    output = contract.eval_output(ev, "r", model)
    assert output == "pvc://results/evals/limo-32b-eval/r"  # spec.output wins over "next to the model"
    document = _doc(ev, "r", output, modelLocation=model)
    job = builders.build_eval_children(body, ev, document, SETTINGS, False, model_location=model)[1]
    pod = job["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"results"}
    assert _env(pod["containers"][0])["REASONOPS_OUTPUT"] == "/mnt/pvc/results/evals/limo-32b-eval/r"
    offline = EvalRun.model_validate({**body, "spec": {**body["spec"], "backend": "offline"}})
    pod = builders.build_eval_children(body, offline, document, SETTINGS, False, model_location=model)[1]["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"results", "reasoning-models"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"  # the engine's tensor parallel size


def test_a_checkpoint_evaluation_is_an_indexed_job_with_one_pod_per_checkpoint():
    body = {"apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun",
            "metadata": {"name": "sel", "namespace": "team", "uid": "u", "generation": 1},
            "spec": {"model": {"fineTuneJob": "ft", "checkpoints": "all"}, "backend": "offline", "benchmarks": [{"name": "aime24"}],
                     "selection": {"benchmark": "aime24"}}}
    ev = contract.with_defaults(EvalRun.model_validate(body))
    run = "pvc://models/runs/ft/r1"
    targets = [contract.CheckpointRef(name=f"step-{s}", step=s, location=contract.checkpoint_model(f"{run}/checkpoints/step-{s}")) for s in (4, 8, 12)]
    document = _doc(ev, "e1", f"{run}/evals/sel/e1", modelLocation=f"{run}/model", checkpoints=targets)
    cm, job = builders.build_eval_children(body, ev, document, SETTINGS, False, model_location=f"{run}/model")
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 3, 3)
    pod = job["spec"]["template"]["spec"]
    assert _env(pod["containers"][0])[contract.Env.CHECKPOINTS] == "3"  # every index reports its own result
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v] == ["models"]
    # The document every pod reads lists the checkpoints where the pod finds them.
    mounted = contract.read_document(cm["data"][next(iter(cm["data"]))])
    assert [c.location for c in mounted.context.checkpoints][2] == "/mnt/pvc/models/runs/ft/r1/checkpoints/step-12/model"
    plain = builders.build_eval_children(body, ev, _doc(ev, "e1", f"{run}/evals/sel/e1", modelLocation=f"{run}/model"), SETTINGS, False)[1]
    assert "completionMode" not in plain["spec"]
    # spec.parallelism limits the pods that run at once, never above one per checkpoint.
    for limit, expected in ((2, 2), (10, 3)):
        limited = EvalRun.model_validate({**body, "spec": {**body["spec"], "parallelism": limit}})
        limited_job = builders.build_eval_children(body, limited, document, SETTINGS, False, model_location=f"{run}/model")[1]
        assert (limited_job["spec"]["completions"], limited_job["spec"]["parallelism"]) == (3, expected)
    assert builders.eval_parallelism(ev.spec, 0) is None and builders.eval_parallelism(ev.spec, 3) == 3


POD_SETTINGS = {
    "env": [{"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}}},
            {"name": "NCCL_IB_HCA", "valueFrom": {"configMapKeyRef": {"name": "fabric", "key": "hca"}}},
            {"name": "HF_HOME", "value": "/cache/hf"}],
    "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "hf-cache"}}],
    "volumeMounts": [{"name": "cache", "mountPath": "/cache", "readOnly": True}],
    "imagePullSecrets": ["registry"],
    "priorityClassName": "research-high",
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"a": "b"}}}}]}},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}],
    "sharedMemory": "32Gi",
    "extendedResources": [{"name": "rdma/hca", "quantity": 1}],
    "terminationGracePeriodSeconds": 900,
}


def _all_pods(settings: dict) -> dict[str, tuple[dict, dict]]:
    """The pod template (metadata, spec) of each kind's workload: curation Job, training Indexed Job, eval Job and
    the vLLM server Deployment, each built from the examples with `settings` as its spec.resources (and the server's)."""
    pods = {}
    body = _load("reasoningdataset.yaml", "ReasoningDataset")
    body["spec"]["resources"] = dict(settings)
    ds = contract.with_defaults(ReasoningDataset.model_validate(body))
    pods["curate"] = builders.build_dataset_children(body, ds, _doc(ds, "r1"), SETTINGS, suspend=False)[1]["spec"]["template"]
    body = _load("finetunejob.yaml", "FineTuneJob")
    body["spec"]["resources"] = dict(settings)
    ft = contract.with_defaults(FineTuneJob.model_validate(body))
    pods["train"] = builders.build_finetune_children(body, ft, _doc(ft, "r1"), SETTINGS, False)[2]["spec"]["template"]
    body = _load("evalrun.yaml", "EvalRun")
    body["spec"]["resources"] = dict(settings)
    body["spec"]["serving"]["resources"] = dict(settings)
    ev = contract.with_defaults(EvalRun.model_validate(body))
    model = "pvc://reasoning-models/runs/limo-32b/r/model"
    pods["eval"] = builders.build_eval_children(body, ev, _doc(ev, "r1", "/results/r1", modelLocation=model), SETTINGS, False,
                                                model_location=model)[1]["spec"]["template"]
    pods["server"] = builders.build_eval_server(body, ev, model, "r", SETTINGS)[0]["spec"]["template"]
    return pods


def test_every_pod_setting_reaches_the_pods_of_each_kind():
    for component, template in _all_pods(POD_SETTINGS).items():
        pod, labels = template["spec"], template["metadata"]["labels"]
        container = pod["containers"][0]
        env = [e for e in container["env"] if e["name"] in ("WANDB_API_KEY", "NCCL_IB_HCA", "HF_HOME")]
        assert env == POD_SETTINGS["env"], component  # the user's HF_HOME replaces the operator's default
        assert {"name": "cache", "persistentVolumeClaim": {"claimName": "hf-cache"}} in pod["volumes"], component
        assert {"name": "cache", "mountPath": "/cache", "readOnly": True} in container["volumeMounts"], component
        assert pod["imagePullSecrets"] == [{"name": "registry"}], component
        assert pod["priorityClassName"] == "research-high", component
        assert pod["affinity"] == POD_SETTINGS["affinity"], component
        spread = pod["topologySpreadConstraints"]
        assert [{k: v for k, v in c.items() if k != "labelSelector"} for c in spread] == POD_SETTINGS["topologySpreadConstraints"]
        # spread counts this workload's pods: its selector matches the pod's own labels
        assert spread[0]["labelSelector"]["matchLabels"].items() <= labels.items() and spread[0]["labelSelector"]["matchLabels"], component
        shm = next(v for v in pod["volumes"] if v["name"] == "shm")
        assert shm == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}, component
        assert container["resources"]["limits"]["rdma/hca"] == "1" == container["resources"]["requests"]["rdma/hca"], component
        assert pod["terminationGracePeriodSeconds"] == 900, component


@pytest.mark.parametrize("cpu,expected", [
    ({"cpu": "250m", "cpuLimit": "2"}, ({"cpu": "250m"}, {"cpu": "2"})),   # burst into idle cores
    ({"cpu": "4"}, ({"cpu": "4"}, {"cpu": "4"})),                          # the request is the limit
    ({"cpuLimit": "3"}, ({}, {"cpu": "3"})),                               # Kubernetes makes the request the limit
], ids=["limit-above", "request-only", "limit-only"])
def test_a_cpu_limit_above_the_request_reaches_every_pod_and_memory_stays_request_equal_limit(cpu, expected):
    requests, limits = expected
    for component, template in _all_pods({**cpu, "memory": "3Gi"}).items():
        resources = template["spec"]["containers"][0]["resources"]
        assert {k: v for k, v in resources["requests"].items() if k == "cpu"} == requests, component
        assert {k: v for k, v in resources["limits"].items() if k == "cpu"} == limits, component
        assert resources["requests"]["memory"] == resources["limits"]["memory"] == "3Gi", component


def test_pod_setting_defaults_come_from_the_api_training_gets_shm_and_time_to_checkpoint():
    pods = _all_pods({})
    train = pods.pop("train")["spec"]
    assert train["terminationGracePeriodSeconds"] == TRAINING_GRACE_SECONDS
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": TRAINING_SHARED_MEMORY}} in train["volumes"]
    for component, template in pods.items():
        pod = template["spec"]
        assert "terminationGracePeriodSeconds" not in pod, component  # Kubernetes' own
        assert "imagePullSecrets" not in pod and "affinity" not in pod and "topologySpreadConstraints" not in pod, component
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["HF_HOME"] == "/tmp/huggingface" and env["HOME"] == "/tmp", component


def test_the_api_refuses_every_env_var_volume_and_mount_the_operator_sets_itself():
    """What the builders put into a pod is reserved in the API: a user's env, volume or mount cannot replace it
    (but for the BASE_ENV defaults, which a user's env may replace)."""
    pods = _all_pods({"gpus": 1})
    for component, template in pods.items():
        pod = template["spec"]
        container = pod["containers"][0]
        for variable in container["env"]:
            if variable["name"] not in builders.BASE_ENV:
                with pytest.raises(pydantic.ValidationError, match="is set by the operator"):
                    Resources.model_validate({"env": [{"name": variable["name"], "value": "x"}]})
        for volume in pod["volumes"]:
            with pytest.raises(pydantic.ValidationError, match="operator's volumes"):
                Resources.model_validate({"volumes": [{"name": volume["name"], "emptyDir": {}}]})
        for mount in container["volumeMounts"]:
            parent = posixpath.dirname(mount["mountPath"])
            for path in (mount["mountPath"], mount["mountPath"] + "/x", *([parent] if parent != "/" else [])):
                with pytest.raises(pydantic.ValidationError, match="operator's mounts"):
                    Resources.model_validate({"volumes": [{"name": "v", "emptyDir": {}}],
                                              "volumeMounts": [{"name": "v", "mountPath": path}]})


EXPORT = {"uri": "s3://team-models/reasoning", "endpointUrl": "http://minio.storage:9000", "region": "eu-west-1",
          "accessKeyIdSecretRef": {"name": "store", "key": "access-key"}, "secretAccessKeySecretRef": {"name": "store", "key": "secret-key"}}


@pytest.mark.parametrize("example,kind", [("reasoningdataset.yaml", "ReasoningDataset"), ("finetunejob.yaml", "FineTuneJob")])
def test_an_export_reaches_the_pod_with_its_credentials_by_reference(example, kind):
    body = _load(example, kind)
    body["spec"]["export"] = EXPORT
    res = contract.with_defaults({"ReasoningDataset": ReasoningDataset, "FineTuneJob": FineTuneJob}[kind].model_validate(body))
    build = builders.build_dataset_children if kind == "ReasoningDataset" else builders.build_finetune_children
    job = next(x for x in build(body, res, _doc(res, "r"), SETTINGS, False) if x["kind"] == "Job")
    env = _env(job["spec"]["template"]["spec"]["containers"][0])
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "store", "key": "access-key"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "store", "key": "secret-key"}}
    assert (env["AWS_ENDPOINT_URL"], env["AWS_REGION"], env["AWS_DEFAULT_REGION"]) == ("http://minio.storage:9000", "eu-west-1", "eu-west-1")
    # Without keys (a workload identity), no credential variable at all; without an export, nothing.
    assert builders.export_env(type(res.spec.export)(uri="s3://team-models/reasoning")) == [] and builders.export_env(None) == []


def test_an_export_is_validated_strictly():
    from reasonops.api.v1alpha1 import ObjectStoreExport

    assert contract.export_location(ObjectStoreExport.model_validate(EXPORT), "ds", "abc") == "s3://team-models/reasoning/ds/abc"
    for wrong, message in [({"uri": "gs://bucket/x"}, "String should match pattern"),
                           ({"uri": "s3://Bucket_Upper/x"}, "String should match pattern"),
                           ({**EXPORT, "secretAccessKeySecretRef": None}, "accessKeyIdSecretRef and secretAccessKeySecretRef go together"),
                           ({**EXPORT, "endpointUrl": "minio:9000"}, "String should match pattern"),
                           ({**EXPORT, "region": "EU West"}, "String should match pattern")]:
        with pytest.raises(pydantic.ValidationError, match=message.replace("(", r"\(")):
            ObjectStoreExport.model_validate(wrong)
