"""Pure functions that build the desired Kubernetes objects of a resource (plain dicts).

Nothing here talks to the API server: every function takes the resource (and what the operator
observed) and returns manifests, so each is unit-tested without a cluster. `kube.py` applies them.
The resources come with their defaults filled in (`contract.with_defaults`): no default is decided here.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from typing import Any, Iterable, Optional

from ..api.common import API_VERSION, Resources, SecretKeyRef
from ..api.v1alpha1 import EvalRun, EvalRunSpec, FineTuneJob, ReasoningDataset
from ..contract import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, export_environment
from ..contract import (
    PEER_LOST_EXIT_CODE,
    RESOURCE_FILE,
    VOLUME_ROOT,
    Env,
    WorkloadDocument,
    api_key_env,
    claims_of,
    eval_job_gpus,
    needs_sandbox,
    sandbox_url,
    location_string,
    pod_path,
    served_model_name,
    server_name,
    training_world,
)
from ..api.v1alpha1 import Tracking
from ..contract import tracking_env
from ..serving import ServerOptions, cpu_server_memory, server_args, server_env
from .labels import (
    ANNOTATION_ENGINE,
    ANNOTATION_GENERATION_CONFIG,
    ANNOTATION_MODEL_REVISION,
    COMPONENT_CURATE,
    COMPONENT_EVAL,
    COMPONENT_SERVER,
    COMPONENT_TRAIN,
    LABEL_JOB,
    LABEL_MODEL_REVISION,
    PRIORITY_LABEL,
    QUEUE_LABEL,
    component_selector,
    labels_for,
)
from .settings import Settings

GPU = "nvidia.com/gpu"
UID = 1000


# --- names, labels ---------------------------------------------------------------------------------


def child_name(name: str, revision: str) -> str:
    """Name of a revision's children; short enough for pod hostnames of indexed Jobs (<= 63 chars)."""
    return f"{name[:44].rstrip('-')}-{revision[:8]}"


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
    """Kueue's queue and priority labels of a resource, passed on to every child that asks for capacity: its
    Jobs (Kueue's batch/job integration) and its server's and sandbox's Deployments and pods (the deployment
    and pod integrations), so that all of them count against the same ClusterQueue."""
    labels = body["metadata"].get("labels") or {}
    return {k: labels[k] for k in (QUEUE_LABEL, PRIORITY_LABEL) if k in labels}


# --- the document handed to workload pods -------------------------------------------------------


def build_configmap(body: dict[str, Any], name: str, labels: dict[str, str], document: WorkloadDocument) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(body, name, labels),
        "data": {posixpath.basename(RESOURCE_FILE): document.to_json()},
    }


# --- pods --------------------------------------------------------------------------------------


def _resource_limits(resources: Optional[Resources], gpus: int) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS when CPU and memory are both given), except a CPU limit set above
    the request by resources.cpuLimit."""
    limits: dict[str, str] = {}
    if gpus:
        limits[GPU] = str(gpus)
    if resources and resources.cpu:
        limits["cpu"] = resources.cpu
    if resources and resources.memory:
        limits["memory"] = resources.memory
    for extended in (resources.extendedResources or []) if resources else []:
        limits[extended.name] = str(extended.quantity)
    requests = dict(limits)
    if resources and resources.cpuLimit:
        limits["cpu"] = resources.cpuLimit  # without cpu, Kubernetes makes the request the limit
    return {"requests": requests, "limits": limits} if limits else {}


def _secret_env(secret_name: str, key: str, env_name: str) -> dict[str, Any]:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


def secret_key_env(ref: SecretKeyRef) -> dict[str, Any]:
    """The env var through which a pod receives the value a SecretKeyRef names (see contract.api_key_env)."""
    return _secret_env(ref.name, ref.key, api_key_env(ref.name, ref.key))


def hub_token_env(ref: Optional[SecretKeyRef]) -> list[dict[str, Any]]:
    """HF_TOKEN from spec.hubTokenSecretRef, for gated models and datasets."""
    return [_secret_env(ref.name, ref.key, Env.HF_TOKEN)] if ref is not None else []


def export_env(export: Any) -> list[dict[str, Any]]:
    """spec.export in the pod's environment: the credentials by secretKeyRef (never a value in the pod spec),
    the endpoint and region as values (`contract.export_environment`)."""
    if export is None:
        return []
    env = [{"name": key, "value": value} for key, value in export_environment(export).items()]
    if export.accessKeyIdSecretRef is not None and export.secretAccessKeySecretRef is not None:
        env.append(_secret_env(export.accessKeyIdSecretRef.name, export.accessKeyIdSecretRef.key, AWS_ACCESS_KEY_ID))
        env.append(_secret_env(export.secretAccessKeySecretRef.name, export.secretAccessKeySecretRef.key, AWS_SECRET_ACCESS_KEY))
    return env


def tracking_secret_env(tracking: Optional[Tracking]) -> list[dict[str, Any]]:
    """The credentials of spec.tracking, each from its Secret key under the name its client reads (contract.tracking_env)."""
    return [_secret_env(ref.name, ref.key, name) for name, ref in tracking_env(tracking)]


def build_pod_spec(
    body: dict[str, Any],
    settings: Settings,
    *,
    image: str,
    command: list[str],
    env: list[dict[str, Any]],
    resources: Optional[Resources],
    gpus: int,
    locations: Iterable[Optional[str]],
    configmap: Optional[str] = None,
    env_from_secrets: Iterable[Optional[str]] = (),
    restart_policy: str = "Never",
    ports: Optional[list[dict[str, Any]]] = None,
    probes: Optional[dict[str, Any]] = None,
    subdomain: Optional[str] = None,
    selector: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    """A non-root, read-only-root pod with the resource's document, the claims of `locations` mounted
    under the contract's volume root, credentials from `env_from_secrets`, its GPU requests and the pod
    settings of `resources` (`selector`: the labels of the workload's pods, which topology spread counts
    unless a constraint names its own)."""
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", **({"sizeLimit": resources.sharedMemory} if resources and resources.sharedMemory else {})}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "shm", "mountPath": "/dev/shm"}]
    if configmap:
        volumes.append({"name": "resource", "configMap": {"name": configmap}})
        mounts.append({"name": "resource", "mountPath": posixpath.dirname(RESOURCE_FILE), "readOnly": True})
    for claim in claims_of(locations):
        volumes.append({"name": f"pvc-{claim}"[:63], "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": f"pvc-{claim}"[:63], "mountPath": posixpath.join(VOLUME_ROOT, claim)})
    if resources:
        volumes += [volume.to_wire() for volume in resources.volumes or []]
        mounts += [mount.to_wire() for mount in resources.volumeMounts or []]
    container: dict[str, Any] = {
        "name": "main",
        "image": (resources.image if resources and resources.image else image),
        "imagePullPolicy": settings.image_pull_policy,
        "command": command,
        "env": _container_env(env, resources),
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
    env_from = [{"secretRef": {"name": s}} for s in dict.fromkeys(x for x in env_from_secrets if x)]
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
    if resources:
        pod.update(_scheduling(resources, selector or {}))
    if subdomain:
        pod["subdomain"] = subdomain
    return pod


# Set on every workload container unless the user's env (spec.resources.env) sets them.
BASE_ENV = {"HOME": "/tmp", "HF_HOME": "/tmp/huggingface", "PYTHONUNBUFFERED": "1"}


def _container_env(env: list[dict[str, Any]], resources: Optional[Resources]) -> list[dict[str, Any]]:
    """The operator's env, then the user's (spec.resources.env), which may replace a BASE_ENV default but no
    variable of the operator's own (the API reserves those)."""
    user = [variable.to_wire() for variable in (resources.env or [])] if resources else []
    named = {variable["name"] for variable in user}
    base = [{"name": name, "value": value} for name, value in BASE_ENV.items() if name not in named]
    return [*base, *env, *user]


def _scheduling(resources: Resources, selector: dict[str, str]) -> dict[str, Any]:
    """The pod-level settings of spec.resources: priority, pull secrets, affinity, topology spread, grace period."""
    pod: dict[str, Any] = {}
    if resources.priorityClassName:
        pod["priorityClassName"] = resources.priorityClassName
    if resources.imagePullSecrets:
        pod["imagePullSecrets"] = [{"name": name} for name in resources.imagePullSecrets]
    if resources.affinity:
        pod["affinity"] = resources.affinity
    if resources.topologySpreadConstraints:
        pod["topologySpreadConstraints"] = [
            {"labelSelector": {"matchLabels": dict(selector)}, **constraint.to_wire()}
            for constraint in resources.topologySpreadConstraints
        ]
    if resources.terminationGracePeriodSeconds is not None:
        pod["terminationGracePeriodSeconds"] = resources.terminationGracePeriodSeconds
    return pod


def _identity_env(document: WorkloadDocument) -> list[dict[str, Any]]:
    meta = document.metadata
    sandbox = ([{"name": Env.SANDBOX_URL, "value": sandbox_url(meta.name, meta.namespace)}]
               if needs_sandbox(document.kind, document.spec.to_wire()) else [])
    return sandbox + [
        {"name": Env.KIND, "value": document.kind},
        {"name": Env.NAME, "value": meta.name},
        {"name": Env.NAMESPACE, "value": meta.namespace},
        {"name": Env.REVISION, "value": document.revision},
        {"name": Env.OUTPUT, "value": document.output},
        {"name": Env.VOLUME_ROOT, "value": VOLUME_ROOT},
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
    parallelism: Optional[int] = None,
) -> dict[str, Any]:
    """A batch/v1 Job; Kueue's queue label is passed on and the Job is then created suspended.

    Indexed Jobs (training) are one group: when a pod fails, the operator deletes its peers
    (`policy.group_restart`) and the Job re-creates every index, resuming from the latest checkpoint.
    """
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
        spec.update(completionMode="Indexed", completions=completions, parallelism=parallelism or completions)
        # Peers the operator deletes after a failure (policy.group_restart), evictions and preemptions are
        # disruptions, not failures of the workload, and so is a pod that failed only because its peer went
        # away (PEER_LOST_EXIT_CODE, train.run_group): backoffLimit counts group restarts.
        spec["podFailurePolicy"] = {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [PEER_LOST_EXIT_CODE]}},
        ]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _metadata(body, name, job_labels), "spec": spec}


WORKLOAD_COMMAND = ["reasonops", "workload", "--resource", RESOURCE_FILE]


# --- ReasoningDataset ----------------------------------------------------------------------------


def sampler_secrets(spec: Any) -> list[dict[str, Any]]:
    """Env vars for the API keys that samplers' endpoints reference."""
    env = []
    for stage in spec.stages or []:
        samplers = []
        if stage.difficulty is not None:
            samplers.append(stage.difficulty.sampler)
        if stage.generate is not None:
            samplers.extend(t.sampler for t in stage.generate.teachers)
        for sampler in samplers:
            for endpoint in [sampler.endpoint, *(sampler.endpoints or [])]:
                if endpoint is not None and endpoint.apiKeySecretRef is not None:
                    env.append(secret_key_env(endpoint.apiKeySecretRef))
    return list({e["name"]: e for e in env}.values())


def dataset_input_locations(ds: ReasoningDataset) -> list[str]:
    """Volume locations a curation pod reads: pvc:// source URIs and benchmark directories."""
    found = [s.uri for s in ds.spec.sources if s.uri]
    for stage in ds.spec.stages or []:
        if stage.decontaminate is not None and stage.decontaminate.benchmarkPath:
            found.append(stage.decontaminate.benchmarkPath)
    return [x for x in found if x]


def build_dataset_children(
    body: dict[str, Any], ds: ReasoningDataset, document: WorkloadDocument, settings: Settings, suspend: bool,
) -> list[dict[str, Any]]:
    revision = document.revision
    name = child_name(ds.metadata["name"], revision)
    labels = labels_for("ReasoningDataset", ds.metadata["name"], COMPONENT_CURATE, revision)
    resources = ds.spec.resources
    gpus = resources.gpus if resources and resources.gpus is not None else 0
    sources = [s for s in ds.spec.sources if s.uri]
    shards = ds.spec.shards  # >1: an Indexed Job; the pod reads its index from JOB_COMPLETION_INDEX
    shard_env = [{"name": Env.SHARDS, "value": str(shards)}] if shards > 1 else []
    pod = build_pod_spec(
        body, settings,
        image=settings.curate_image, command=WORKLOAD_COMMAND,
        env=_identity_env(document) + shard_env + sampler_secrets(ds.spec) + hub_token_env(ds.spec.hubTokenSecretRef)
        + export_env(ds.spec.export) + tracking_secret_env(ds.spec.tracking),
        resources=resources, gpus=gpus, locations=[document.outputLocation, *dataset_input_locations(ds)],
        configmap=name, selector=labels,
        env_from_secrets=[ds.spec.output.credentialsSecretRef, *(s.credentialsSecretRef for s in sources)],
    )
    job = build_job(
        body, settings, name=name, labels=labels, pod_spec=pod, resources=resources, suspend=suspend,
        backoff_limit=ds.spec.backoffLimit,
        active_deadline=ds.spec.activeDeadlineSeconds, completions=shards if shards > 1 else None,
    )
    return [build_configmap(body, name, labels, document), job]


# --- FineTuneJob -------------------------------------------------------------------------------


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
    body: dict[str, Any], ft: FineTuneJob, document: WorkloadDocument, settings: Settings, suspend: bool,
    *, input_locations: Iterable[str] = (), input_secrets: Iterable[Optional[str]] = (),
) -> list[dict[str, Any]]:
    """ConfigMap, headless Service (rendezvous DNS) and Indexed Job of a training revision.

    `input_locations`: the dataset's canonical location (mounted when on a claim); `input_secrets`: the
    Secrets holding credentials of the inputs (e.g. the dataset's object store).
    """
    revision = document.revision
    meta_name = ft.metadata["name"]
    name = child_name(meta_name, revision)
    labels = labels_for("FineTuneJob", meta_name, COMPONENT_TRAIN, revision)
    nnodes, gpus, nproc = training_world(ft.spec, settings.default_gpus_per_node)
    base = ft.spec.baseModel
    locations = [document.outputLocation, *input_locations, base.name]
    if base.volume is not None:
        locations.append(location_string(base.volume))
    env = _identity_env(document) + torchrun_env(name, name, nnodes, nproc, settings.rendezvous_port)
    env.append({"name": Env.METRICS_PORT, "value": str(settings.workload_metrics_port)})
    env += hub_token_env(ft.spec.hubTokenSecretRef) + export_env(ft.spec.export)
    env += tracking_secret_env(ft.spec.tracking)
    secrets = [ft.spec.output.credentialsSecretRef, *input_secrets, base.volume.credentialsSecretRef if base.volume else None]
    pod = build_pod_spec(
        body, settings,
        image=settings.train_image, command=WORKLOAD_COMMAND, env=env, resources=ft.spec.resources,
        gpus=gpus, locations=locations, configmap=name, env_from_secrets=secrets,
        ports=[
            {"name": "rendezvous", "containerPort": settings.rendezvous_port},
            {"name": "metrics", "containerPort": settings.workload_metrics_port},
        ],
        subdomain=name, selector=labels,
    )
    job = build_job(
        body, settings, name=name, labels=labels, pod_spec=pod, resources=ft.spec.resources, suspend=suspend,
        backoff_limit=ft.spec.backoffLimit,
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


def build_eval_server(
    body: dict[str, Any], ev: EvalRun, model_location: str, model_revision: str, settings: Settings,
    input_secrets: Iterable[Optional[str]] = (),
) -> list[dict[str, Any]]:
    """The model's OpenAI-compatible server (Deployment + Service): `vllm serve` on GPUs (the serve image), or vLLM's
    CPU backend (serving.engine: cpu, the eval image). Its arguments and environment are serving.py's."""
    serving = ev.spec.serving
    name = server_name(ev.metadata["name"])
    labels = {**labels_for("EvalRun", ev.metadata["name"], COMPONENT_SERVER), **queue_labels(body)}
    cpu = serving.engine == "cpu"
    gpus = 0 if cpu else serving.tensorParallelSize
    # On CPU, eager: every pod starts with an empty compile cache, and compiling the graphs took longer than it
    # saved (docs/vllm-cpu: 44 s to healthy eager, 64-80 s compiled, the same requests/s).
    args = server_args(ServerOptions(
        model_path=pod_path(model_location), served_model_name=served_model_name(ev), port=settings.server_port,
        engine=serving.engine, dtype=serving.dtype, tensor_parallel_size=gpus or 1, max_model_len=serving.maxModelLen,
        enforce_eager=cpu,
    ))
    env = [{"name": key, "value": value} for key, value in server_env(serving.engine).items()]
    if cpu:
        # The engine's footprint and its KV cache, in host memory; a limit too (the user's figures win): a CPU node
        # runs other pods beside it.
        memory = cpu_server_memory()
        image, requests, limits = settings.eval_image, {"cpu": "1", "memory": memory}, {"memory": memory}
    else:
        # Loading weights goes through host memory; tokenisation and the API server use CPU.
        image, requests, limits = settings.serve_image, {"cpu": str(2 * gpus), "memory": f"{16 * gpus}Gi"}, {}
    # Timeouts sized for a server busy with a full batch: a 1 s readiness timeout would drop the
    # only endpoint under load. Loading a large model takes many minutes: a startup probe (30 min),
    # not an early liveness kill.
    probe = {"httpGet": {"path": "/v1/models", "port": settings.server_port}, "timeoutSeconds": 10}
    probes = {
        "startupProbe": {**probe, "periodSeconds": 10, "failureThreshold": 180},
        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health", "port": settings.server_port}, "timeoutSeconds": 10,
                          "periodSeconds": 30, "failureThreshold": 4},
    }
    resources = serving.resources or ev.spec.resources
    selector = component_selector("EvalRun", ev.metadata["name"], COMPONENT_SERVER)
    pod = build_pod_spec(
        body, settings,
        image=image, command=args,
        env=[{"name": Env.MODEL_REVISION, "value": model_revision}, *env, *hub_token_env(ev.spec.hubTokenSecretRef)],
        resources=resources, gpus=gpus, locations=[model_location], restart_policy="Always", env_from_secrets=input_secrets,
        ports=[{"name": "http", "containerPort": settings.server_port}], probes=probes, selector=selector,
    )
    container = pod["containers"][0]
    if resources and resources.cpuLimit:
        requests.pop("cpu")  # the user's limit bounds the request: Kubernetes makes the request the limit
    container["resources"] = {**container["resources"], "requests": {**requests, **container["resources"].get("requests", {})}}
    if limits:
        container["resources"]["limits"] = {**limits, **container["resources"].get("limits", {})}
    replicas = serving.replicas
    revision_label = model_revision if _label_value_ok(model_revision) else hashlib.sha256(model_revision.encode()).hexdigest()[:16]
    annotations = {ANNOTATION_MODEL_REVISION: model_revision, ANNOTATION_ENGINE: serving.engine,
                   ANNOTATION_GENERATION_CONFIG: "vllm"}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {
                "labels": {**pod_labels(resources), **labels, LABEL_MODEL_REVISION: revision_label},
                "annotations": {**pod_annotations(resources, settings), ANNOTATION_MODEL_REVISION: model_revision},
            },
            "spec": pod,
        },
    }
    if gpus and replicas == 1:
        # A rolling update would ask for a second set of GPUs for the new revision and can stay Pending.
        spec["strategy"] = {"type": "Recreate"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(body, name, labels, annotations),
        "spec": spec,
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body, name, labels),
        "spec": {"selector": selector, "ports": [{"name": "http", "port": settings.server_port, "targetPort": "http"}]},
    }
    return [deployment, service]


def _label_value_ok(value: str) -> bool:
    return len(value) <= 63 and bool(re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", value))


def eval_parallelism(spec: EvalRunSpec, checkpoints: int) -> Optional[int]:
    """Pods of the per-checkpoint Job that run at once: spec.parallelism, at most one per checkpoint, else
    every checkpoint at once; None without checkpoints (a one-pod Job)."""
    if not checkpoints:
        return None
    return min(spec.parallelism, checkpoints) if spec.parallelism else checkpoints


def build_eval_children(
    body: dict[str, Any], ev: EvalRun, document: WorkloadDocument, settings: Settings, suspend: bool,
    *, model_location: str = "", input_secrets: Iterable[Optional[str]] = (), baselines: Iterable[Any] = (),
) -> list[dict[str, Any]]:
    """ConfigMap and Job of an evaluation revision. The model's claim is mounted only when the Job loads
    the weights itself (backend: offline); through a server it needs none. `baselines` (contract.Input):
    the outputs of relative gates' baselines, read at the end (their claims mounted, their Secrets' keys in
    the environment)."""
    baselines = list(baselines)
    revision = document.revision
    name = child_name(ev.metadata["name"], revision)
    labels = labels_for("EvalRun", ev.metadata["name"], COMPONENT_EVAL, revision)
    env = _identity_env(document) + hub_token_env(ev.spec.hubTokenSecretRef)
    env += tracking_secret_env(ev.spec.tracking)
    if ev.spec.model.endpoint and ev.spec.model.endpoint.apiKeySecretRef:
        env.append(secret_key_env(ev.spec.model.endpoint.apiKeySecretRef))
    offline = ev.spec.backend == "offline"
    checkpoints = len(document.context.checkpoints)  # model.checkpoints: an Indexed Job, one pod per checkpoint
    if checkpoints:
        env.append({"name": Env.CHECKPOINTS, "value": str(checkpoints)})
    locations = [document.outputLocation, *(b.path for b in ev.spec.benchmarks if b.path)]
    if offline:
        locations.append(model_location)
    locations += [b.location for b in baselines]
    pod = build_pod_spec(
        body, settings,
        image=settings.eval_image, command=WORKLOAD_COMMAND, env=env, resources=ev.spec.resources,
        gpus=eval_job_gpus(ev.spec), locations=locations, configmap=name, selector=labels,
        env_from_secrets=[ev.spec.output.credentialsSecretRef if ev.spec.output else None,
                          *(input_secrets if offline else ()), *(b.secret for b in baselines)],
    )
    job = build_job(
        body, settings, name=name, labels=labels, pod_spec=pod, resources=ev.spec.resources, suspend=suspend,
        backoff_limit=ev.spec.backoffLimit,
        active_deadline=ev.spec.activeDeadlineSeconds, completions=checkpoints or None,
        parallelism=eval_parallelism(ev.spec, checkpoints),
    )
    return [build_configmap(body, name, labels, document), job]
