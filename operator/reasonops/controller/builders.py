"""Pure functions that build the desired Kubernetes objects of a resource (plain dicts).

Nothing here talks to the API server: every function takes the resource (and what the operator
observed) and returns manifests, so each is unit-tested without a cluster. `kube.py` applies them.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
from typing import Any, Iterable, Optional

from ..api.common import API_VERSION, Location, Resources
from ..api.v1alpha1 import EvalRun, EvalRunSpec, FineTuneJob, FineTuneJobSpec, ReasoningDataset
from .settings import Settings

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "reasonops"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_KIND = "reasonops.io/kind"
LABEL_NAME = "reasonops.io/name"
LABEL_REVISION = "reasonops.io/revision"
LABEL_COMPONENT = "reasonops.io/component"
LABEL_JOB = "reasonops.io/job"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"

RESOURCE_FILE = "/etc/reasonops/resource.json"
PVC_ROOT = "/mnt/pvc"
GPU = "nvidia.com/gpu"
UID = 1000

# Fields that change how or where a revision runs, not what it produces: no new revision for them.
NON_REVISION_FIELDS = {"suspend", "resources", "backoffLimit", "activeDeadlineSeconds", "retrainPolicy", "serving"}


# --- names, labels, revisions ------------------------------------------------------------------


def revision_of(spec: dict[str, Any], inputs: Optional[dict[str, Any]] = None) -> str:
    """A short, stable hash of what a revision produces: the spec (less how it runs) and its inputs."""
    relevant = {k: v for k, v in sorted(spec.items()) if k not in NON_REVISION_FIELDS}
    canonical = json.dumps({"spec": relevant, "inputs": inputs or {}}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def child_name(name: str, revision: str) -> str:
    """Name of a revision's children; short enough for pod hostnames of indexed Jobs (<= 63 chars)."""
    return f"{name[:44].rstrip('-')}-{revision[:8]}"


def server_name(name: str) -> str:
    return f"{name[:52].rstrip('-')}-server"


def labels_for(kind: str, name: str, component: str, revision: Optional[str] = None) -> dict[str, str]:
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: "reasonops",
        LABEL_KIND: kind,
        LABEL_NAME: name[:63],
        LABEL_COMPONENT: component,
    }
    if revision:
        labels[LABEL_REVISION] = revision
    return labels


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(body: dict[str, Any], name: str, labels: dict[str, str], annotations: Optional[dict] = None) -> dict:
    meta = {
        "name": name,
        "namespace": body["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [owner_reference(body)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def pod_annotations(resources: Optional[Resources], settings: Settings) -> dict[str, str]:
    return {**settings.pod_annotations, **((resources.podAnnotations or {}) if resources else {})}


def pod_labels(resources: Optional[Resources]) -> dict[str, str]:
    return dict(resources.podLabels or {}) if resources else {}


def queue_labels(body: dict[str, Any]) -> dict[str, str]:
    labels = body["metadata"].get("labels") or {}
    return {k: labels[k] for k in (QUEUE_LABEL, PRIORITY_LABEL) if k in labels}


# --- locations ------------------------------------------------------------------------------------


def location_string(location: Location, *parts: str) -> str:
    """The canonical form of a location: pvc://claim/dir, an object-store URI, or a plain path."""
    tail = [p.strip("/") for p in parts if p]
    if location.volume is not None:
        base = posixpath.join(location.volume.claimName, location.volume.path.strip("/"))
        return "pvc://" + posixpath.join(base, *tail).rstrip("/")
    if location.uri is not None:
        return "/".join([location.uri.rstrip("/"), *tail])
    return posixpath.join(location.path or "", *tail)


def claim_of(location: str) -> Optional[str]:
    return location[len("pvc://"):].split("/", 1)[0] if location.startswith("pvc://") else None


def pod_path(location: str) -> str:
    """Where a canonical location is found inside a pod (pvc:// claims are mounted under /mnt/pvc)."""
    if location.startswith("pvc://"):
        return posixpath.join(PVC_ROOT, location[len("pvc://"):])
    return location


# --- the document handed to workload pods -------------------------------------------------------


def resource_document(
    body: dict[str, Any], spec: dict[str, Any], revision: str, output: str, context: dict[str, Any]
) -> dict[str, Any]:
    """What a workload reads from /etc/reasonops/resource.json (paths already translated for the pod)."""
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": body["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid", "")},
        "spec": spec,
        "revision": revision,
        "output": pod_path(output),
        "context": {k: pod_path(v) if isinstance(v, str) else v for k, v in context.items()},
    }


def build_configmap(body: dict[str, Any], name: str, labels: dict[str, str], document: dict[str, Any]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(body, name, labels),
        "data": {"resource.json": json.dumps(document, indent=1, sort_keys=True)},
    }


# --- pods --------------------------------------------------------------------------------------


def _resource_limits(resources: Optional[Resources], gpus: int) -> dict[str, Any]:
    limits: dict[str, str] = {}
    if gpus:
        limits[GPU] = str(gpus)
    if resources and resources.cpu:
        limits["cpu"] = resources.cpu
    if resources and resources.memory:
        limits["memory"] = resources.memory
    return {"requests": dict(limits), "limits": dict(limits)} if limits else {}


def _secret_env(secret_name: str, key: str, env_name: str) -> dict[str, Any]:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


def build_pod_spec(
    body: dict[str, Any],
    settings: Settings,
    *,
    image: str,
    command: list[str],
    env: list[dict[str, Any]],
    resources: Optional[Resources],
    gpus: int,
    locations: Iterable[str],
    configmap: Optional[str] = None,
    env_from_secrets: Iterable[str] = (),
    restart_policy: str = "Never",
    ports: Optional[list[dict[str, Any]]] = None,
    probes: Optional[dict[str, Any]] = None,
    subdomain: Optional[str] = None,
) -> dict[str, Any]:
    """A non-root, read-only-root pod with the resource's config, volumes and GPU requests."""
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", **({"sizeLimit": resources.sharedMemory} if resources and resources.sharedMemory else {})}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}]
    if configmap:
        volumes.append({"name": "resource", "configMap": {"name": configmap}})
        mounts.append({"name": "resource", "mountPath": posixpath.dirname(RESOURCE_FILE), "readOnly": True})
    for claim in sorted({c for c in map(claim_of, locations) if c}):
        volumes.append({"name": f"pvc-{claim}"[:63], "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": f"pvc-{claim}"[:63], "mountPath": posixpath.join(PVC_ROOT, claim)})
    container: dict[str, Any] = {
        "name": "main",
        "image": (resources.image if resources and resources.image else image),
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HOME", "value": "/tmp/huggingface"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            *env,
        ],
        "volumeMounts": mounts,
        "resources": _resource_limits(resources, gpus),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    env_from = [{"secretRef": {"name": s}} for s in dict.fromkeys(env_from_secrets)]
    if env_from:
        container["envFrom"] = env_from
    if ports:
        container["ports"] = ports
    if probes:
        container.update(probes)
    pod: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
        "enableServiceLinks": False,
    }
    if settings.workload_service_account:
        pod["serviceAccountName"] = settings.workload_service_account
    if resources and resources.nodeSelector:
        pod["nodeSelector"] = {e.key: e.value for e in resources.nodeSelector}
    elif gpus and settings.gpu_node_selector:
        pod["nodeSelector"] = dict(settings.gpu_node_selector)
    if resources and resources.tolerations:
        pod["tolerations"] = [t.to_wire() for t in resources.tolerations]
    elif gpus and settings.gpu_tolerations:
        pod["tolerations"] = list(settings.gpu_tolerations)
    if resources and resources.priorityClassName:
        pod["priorityClassName"] = resources.priorityClassName
    if subdomain:
        pod["subdomain"] = subdomain
    return pod


def _identity_env(body: dict[str, Any], revision: str, output: str) -> list[dict[str, Any]]:
    meta = body["metadata"]
    return [
        {"name": "REASONOPS_KIND", "value": body["kind"]},
        {"name": "REASONOPS_NAME", "value": meta["name"]},
        {"name": "REASONOPS_NAMESPACE", "value": meta["namespace"]},
        {"name": "REASONOPS_REVISION", "value": revision},
        {"name": "REASONOPS_OUTPUT", "value": pod_path(output)},
        {"name": "REASONOPS_VOLUME_ROOT", "value": PVC_ROOT},
    ]


def build_job(
    body: dict[str, Any],
    settings: Settings,
    *,
    name: str,
    labels: dict[str, str],
    pod_spec: dict[str, Any],
    resources: Optional[Resources],
    suspend: bool,
    backoff_limit: int,
    active_deadline: Optional[int],
    completions: Optional[int] = None,
) -> dict[str, Any]:
    """A batch/v1 Job; Kueue's queue label is passed on and the Job is then created suspended."""
    queue = queue_labels(body)
    job_labels = {**labels, **queue, LABEL_JOB: name}
    spec: dict[str, Any] = {
        "suspend": suspend or bool(queue.get(QUEUE_LABEL)),
        "backoffLimit": backoff_limit,
        "template": {
            "metadata": {"labels": {**pod_labels(resources), **job_labels}, "annotations": pod_annotations(resources, settings)},
            "spec": pod_spec,
        },
    }
    if active_deadline:
        spec["activeDeadlineSeconds"] = active_deadline
    if settings.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
    if completions is not None:
        spec.update(completionMode="Indexed", completions=completions, parallelism=completions)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _metadata(body, name, job_labels), "spec": spec}


WORKLOAD_COMMAND = ["reasonops", "workload", "--resource", RESOURCE_FILE]


# --- ReasoningDataset ----------------------------------------------------------------------------


def dataset_output(ds: ReasoningDataset, revision: str) -> str:
    return location_string(ds.spec.output, ds.metadata["name"], revision)


def _sampler_secrets(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Environment variables for the API keys named by samplers (REASONOPS_API_KEY_<SECRET>_<KEY>)."""
    env = []
    for stage in spec.get("stages") or []:
        samplers = []
        if "difficulty" in stage:
            samplers.append(stage["difficulty"]["sampler"])
        for teacher in (stage.get("generate") or {}).get("teachers", []):
            samplers.append(teacher["sampler"])
        for sampler in samplers:
            for endpoint in [sampler.get("endpoint") or {}, *(sampler.get("endpoints") or [])]:
                ref = endpoint.get("apiKeySecretRef")
                if ref:
                    env.append(_secret_env(ref["name"], ref["key"], api_key_env(ref["name"], ref["key"])))
    return list({e["name"]: e for e in env}.values())


def api_key_env(secret: str, key: str) -> str:
    """Name of the environment variable that carries the API key of a secret reference."""
    clean = "".join(c if c.isalnum() else "_" for c in f"{secret}_{key}").upper()
    return f"REASONOPS_API_KEY_{clean}"


def build_dataset_children(
    body: dict[str, Any], ds: ReasoningDataset, revision: str, settings: Settings, context: dict[str, Any], suspend: bool
) -> list[dict[str, Any]]:
    name = child_name(ds.metadata["name"], revision)
    labels = labels_for("ReasoningDataset", ds.metadata["name"], "curate", revision)
    spec = ds.spec.to_wire()
    output = dataset_output(ds, revision)
    sources = [s.path for s in ds.spec.sources if s.path]
    document = resource_document(body, spec, revision, output, context)
    resources = ds.spec.resources
    gpus = resources.gpus if resources and resources.gpus is not None else 0
    shards = ds.spec.shards or 1  # >1: an Indexed Job; the pod reads its index from JOB_COMPLETION_INDEX
    shard_env = [{"name": "REASONOPS_SHARDS", "value": str(shards)}] if shards > 1 else []
    pod = build_pod_spec(
        body, settings,
        image=settings.curate_image, command=WORKLOAD_COMMAND,
        env=_identity_env(body, revision, output) + shard_env + _sampler_secrets(spec),
        resources=resources, gpus=gpus, locations=[output, *sources], configmap=name,
        env_from_secrets=[ds.spec.output.credentialsSecretRef] if ds.spec.output.credentialsSecretRef else [],
    )
    job = build_job(
        body, settings, name=name, labels=labels, pod_spec=pod, resources=resources, suspend=suspend,
        backoff_limit=ds.spec.backoffLimit if ds.spec.backoffLimit is not None else 2,
        active_deadline=ds.spec.activeDeadlineSeconds, completions=shards if shards > 1 else None,
    )
    return [build_configmap(body, name, labels, document), job]


# --- FineTuneJob -------------------------------------------------------------------------------


def finetune_output(ft: FineTuneJob, revision: str) -> str:
    return location_string(ft.spec.output, ft.metadata["name"], revision)


def finetune_gpus(spec: FineTuneJobSpec, settings: Settings) -> int:
    if spec.gpusPerNode is not None:
        return spec.gpusPerNode
    if spec.resources and spec.resources.gpus is not None:
        return spec.resources.gpus
    return settings.default_gpus_per_node


def torchrun_env(job_name: str, service: str, nnodes: int, nproc: int, port: int) -> list[dict[str, Any]]:
    """Rendezvous environment: master = DNS name of index 0, node rank = the Job completion index."""
    master = f"{job_name}-0.{service}"
    rank = {"valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}
    values = {"MASTER_ADDR": master, "MASTER_PORT": str(port), "NNODES": str(nnodes), "NPROC_PER_NODE": str(nproc)}
    env: list[dict[str, Any]] = []
    for key, value in values.items():
        env.append({"name": key, "value": value})
        env.append({"name": f"PET_{key}", "value": value})
    env.append({"name": "NODE_RANK", **rank})
    env.append({"name": "PET_NODE_RANK", **rank})
    env.append({"name": "WORLD_SIZE", "value": str(nnodes * nproc)})
    return env


def build_finetune_children(
    body: dict[str, Any], ft: FineTuneJob, revision: str, settings: Settings, context: dict[str, Any], suspend: bool
) -> list[dict[str, Any]]:
    meta_name = ft.metadata["name"]
    name = child_name(meta_name, revision)
    labels = labels_for("FineTuneJob", meta_name, "train", revision)
    spec = ft.spec.to_wire()
    output = finetune_output(ft, revision)
    nnodes = ft.spec.numNodes or 1
    gpus = finetune_gpus(ft.spec, settings)
    nproc = max(gpus, 1)
    inputs = [context.get("datasetLocation", ""), ft.spec.baseModel.name]
    if ft.spec.baseModel.volume is not None:
        inputs.append(location_string(ft.spec.baseModel.volume))
    document = resource_document(body, spec, revision, output, context)
    env = _identity_env(body, revision, output) + torchrun_env(name, name, nnodes, nproc, settings.rendezvous_port)
    env.append({"name": "REASONOPS_METRICS_PORT", "value": str(settings.workload_metrics_port)})
    secrets = [s for s in (ft.spec.output.credentialsSecretRef,) if s]
    pod = build_pod_spec(
        body, settings,
        image=settings.train_image, command=WORKLOAD_COMMAND, env=env, resources=ft.spec.resources,
        gpus=gpus, locations=[output, *inputs], configmap=name, env_from_secrets=secrets,
        ports=[
            {"name": "rendezvous", "containerPort": settings.rendezvous_port},
            {"name": "metrics", "containerPort": settings.workload_metrics_port},
        ],
        subdomain=name,
    )
    job = build_job(
        body, settings, name=name, labels=labels, pod_spec=pod, resources=ft.spec.resources, suspend=suspend,
        backoff_limit=ft.spec.backoffLimit if ft.spec.backoffLimit is not None else 3,
        active_deadline=ft.spec.activeDeadlineSeconds, completions=nnodes,
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body, name, labels),
        "spec": {
            "clusterIP": "None",
            # Publish pods before they are ready: workers must resolve the master while it starts.
            "publishNotReadyAddresses": True,
            "selector": {LABEL_JOB: name},
            "ports": [{"name": "rendezvous", "port": settings.rendezvous_port, "targetPort": settings.rendezvous_port}],
        },
    }
    return [build_configmap(body, name, labels, document), service, job]


# --- EvalRun -----------------------------------------------------------------------------------


def eval_output(ev: EvalRun, revision: str, model_location: str) -> str:
    """Results go next to the model (a FineTuneJob's output) or to /tmp-like paths for external models."""
    base = model_location.rstrip("/")
    if base.endswith("/model"):
        base = base[: -len("/model")]
    return f"{base}/evals/{ev.metadata['name']}/{revision}" if base else f"/tmp/reasonops/{ev.metadata['name']}/{revision}"


def serving_enabled(spec: EvalRunSpec) -> bool:
    if spec.model.endpoint is not None:
        return False
    return spec.serving is None or spec.serving.enabled is not False


def endpoint_url(ev: EvalRun, settings: Settings) -> str:
    return f"http://{server_name(ev.metadata['name'])}.{ev.metadata['namespace']}.svc:{settings.server_port}/v1"


def served_model_name(ev: EvalRun) -> str:
    return ev.spec.model.servedModelName or ev.metadata["name"]


def build_eval_server(
    body: dict[str, Any], ev: EvalRun, model_location: str, model_revision: str, settings: Settings
) -> list[dict[str, Any]]:
    """A vLLM OpenAI-compatible server (Deployment + Service) for the model."""
    serving = ev.spec.serving
    name = server_name(ev.metadata["name"])
    labels = labels_for("EvalRun", ev.metadata["name"], "server")
    tp = serving.tensorParallelSize if serving and serving.tensorParallelSize else 1
    args = [
        "vllm", "serve", pod_path(model_location),
        "--served-model-name", served_model_name(ev),
        "--host", "0.0.0.0", "--port", str(settings.server_port),
        "--tensor-parallel-size", str(tp),
        "--dtype", (serving.dtype if serving and serving.dtype else "auto"),
        "--generation-config", "auto",
    ]
    if serving and serving.maxModelLen:
        args += ["--max-model-len", str(serving.maxModelLen)]
    probe = {"httpGet": {"path": "/v1/models", "port": settings.server_port}}
    probes = {
        # Loading a large model takes many minutes: a startup probe, not an early liveness kill.
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**probe, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/health", "port": settings.server_port}, "periodSeconds": 30, "failureThreshold": 4},
    }
    resources = (serving.resources if serving else None) or ev.spec.resources
    pod = build_pod_spec(
        body, settings,
        image=settings.serve_image, command=args,
        env=[{"name": "REASONOPS_MODEL_REVISION", "value": model_revision}, {"name": "VLLM_NO_USAGE_STATS", "value": "1"}],
        resources=resources, gpus=tp, locations=[model_location], restart_policy="Always",
        ports=[{"name": "http", "containerPort": settings.server_port}], probes=probes,
    )
    selector = {LABEL_NAME: labels[LABEL_NAME], LABEL_KIND: "EvalRun", LABEL_COMPONENT: "server"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(body, name, labels, {"reasonops.io/model-revision": model_revision}),
        "spec": {
            "replicas": serving.replicas if serving and serving.replicas is not None else 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**pod_labels(resources), **labels},
                    "annotations": {**pod_annotations(resources, settings), "reasonops.io/model-revision": model_revision},
                },
                "spec": pod,
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body, name, labels),
        "spec": {"selector": selector, "ports": [{"name": "http", "port": settings.server_port, "targetPort": "http"}]},
    }
    return [deployment, service]


def build_eval_children(
    body: dict[str, Any], ev: EvalRun, revision: str, settings: Settings, context: dict[str, Any], suspend: bool
) -> list[dict[str, Any]]:
    name = child_name(ev.metadata["name"], revision)
    labels = labels_for("EvalRun", ev.metadata["name"], "eval", revision)
    spec = ev.spec.to_wire()
    output = eval_output(ev, revision, context.get("modelLocation", ""))
    document = resource_document(body, spec, revision, output, context)
    env = _identity_env(body, revision, output)
    if ev.spec.model.endpoint and ev.spec.model.endpoint.apiKeySecretRef:
        ref = ev.spec.model.endpoint.apiKeySecretRef
        env.append(_secret_env(ref.name, ref.key, api_key_env(ref.name, ref.key)))
    offline = ev.spec.backend == "offline"
    gpus = (ev.spec.resources.gpus if ev.spec.resources and ev.spec.resources.gpus is not None else (1 if offline else 0))
    pod = build_pod_spec(
        body, settings,
        image=settings.eval_image, command=WORKLOAD_COMMAND, env=env, resources=ev.spec.resources, gpus=gpus,
        locations=[output, context.get("modelLocation", "")], configmap=name,
    )
    job = build_job(
        body, settings, name=name, labels=labels, pod_spec=pod, resources=ev.spec.resources, suspend=suspend,
        backoff_limit=ev.spec.backoffLimit if ev.spec.backoffLimit is not None else 2,
        active_deadline=ev.spec.activeDeadlineSeconds,
    )
    return [build_configmap(body, name, labels, document), job]


def describe_command(command: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in command)
