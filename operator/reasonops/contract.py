"""The operator→pod contract: what a workload pod receives, defined once, imported by both sides.

The operator (``controller/``) builds a `WorkloadDocument` for each revision and mounts it into the pod
at `RESOURCE_FILE`; `reasonops run` builds the same document on a laptop. Every workload
(``curate/``, ``train/``, ``evaluate/``) reads exactly this document and nothing the operator computes
in any other way. Layers: ``api`` → ``contract`` → ``controller`` and the workloads; no workload imports
the controller (checked by import-linter, see ``.importlinter``).

Each decision the two sides share has one owner here, a pure function with a unit test:

============================  ==========================================================
where a revision writes        `dataset_output`, `finetune_output`, `eval_output`
where a model ends up          `model_location`
where a location is in a pod   `pod_path` (volume claims under `VOLUME_ROOT`), `canonical`, `spec_for_pod`
which claims a pod mounts      `claims_of`
what makes a new revision      `revision_of` (`NON_REVISION_FIELDS`)
how many processes train       `training_world`
GPUs of the evaluation Job     `eval_job_gpus`
whether a server is needed     `serving_enabled`
whether a sandbox is needed    `needs_sandbox` (`CODE_BENCHMARKS`)
a revision's inputs, output   `resolve` (`resolve_dataset`, `resolve_model`, `resolve_samplers`, `resolve_baselines`)
the served model's name        `served_model_name`
the endpoint of an EvalRun     `endpoint_url`
env var of a secret's value    `api_key_env`
who reports final results      `is_reporting_process`
what a checkpoint is called    `checkpoint_name`; its servable export: `checkpoint_model`
the checkpoints a run exported `exported_checkpoints` (FineTuneJob status.checkpoints)
which checkpoint a pod rates   `document_for_checkpoint` (`Env.CHECKPOINTS`, the pod's completion index)
the termination message        `encode_result` (valid JSON within 4 KiB)
where an export is published   `export_location`; the environment it becomes: `export_environment`
which env vars carry tracking   `tracking_env` (MLflow's and W&B's own variable names)
where tracking files go         `tracking_dir` (TensorBoard events, W&B offline runs, the tracker's state)
============================  ==========================================================
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, Optional, TypeVar, Union

from pydantic import ConfigDict, Field, ValidationError, model_validator

from .api.common import (
    API_VERSION, COND_FAILED, COND_SERVING, REASON_DATASET_FAILED, REASON_DATASET_NOT_FOUND, REASON_ENDPOINT_NOT_FOUND,
    REASON_MODEL_FAILED, REASON_MODEL_NOT_FOUND, REASON_NO_CHECKPOINTS, REASON_WAITING_FOR_DATASET, REASON_WAITING_FOR_ENDPOINT,
    REASON_WAITING_FOR_MODEL, REASON_WAITING_FOR_SELECTION, Location, Model, resolve_defaults, validation_problems,
)
from .api.common import REASON_BASELINE_FAILED, REASON_BASELINE_NOT_FOUND, REASON_BASELINE_UNUSABLE, REASON_WAITING_FOR_BASELINE
from .api.v1alpha1 import (KINDS, MAX_CHECKPOINTS, CheckpointRef, EvalModelRef, EvalRun, EvalRunSpec, FineTuneJob, FineTuneJobSpec, ReasoningDataset,
                           ReasoningDatasetSpec, Resource)
from .api.common import SecretKeyRef
from .api.v1alpha1 import Tracking
# The operator checks serving.maxModelLen with these, and training reports a model's context with them.

# --- where things are in a pod ---------------------------------------------------------------------

RESOURCE_FILE = "/etc/reasonops/resource.json"
VOLUME_ROOT = "/mnt/pvc"  # pvc://CLAIM/DIR is mounted at VOLUME_ROOT/CLAIM
SCRATCH = "/tmp"  # the pod's only writable path besides volumes (read-only root filesystem)
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LIMIT = 4096  # bytes; the kubelet truncates longer messages
PVC_SCHEME = "pvc://"
# A training pod that failed only because another pod of its group went away exits with this status; the
# Job's pod failure policy ignores it (the lost pod's own failure is the one counted), so `backoffLimit` and
# status.restarts count group restarts. 75 is EX_TEMPFAIL: try again.
PEER_LOST_EXIT_CODE = 75
# A training pod stopped by SIGTERM (preemption, a drain, a deleted pod) after every rank saved the current step
# (train.preemption) exits with the same status, for the same reason: nothing failed, the group restarts from
# that checkpoint, and neither backoffLimit nor status.restarts counts it.
STOPPED_EXIT_CODE = PEER_LOST_EXIT_CODE


class Env:
    """Names of the environment variables the operator sets on workload pods."""

    KIND = "REASONOPS_KIND"
    NAME = "REASONOPS_NAME"
    NAMESPACE = "REASONOPS_NAMESPACE"
    REVISION = "REASONOPS_REVISION"
    OUTPUT = "REASONOPS_OUTPUT"  # where the revision writes, as a path in the pod
    VOLUME_ROOT = "REASONOPS_VOLUME_ROOT"
    METRICS_PORT = "REASONOPS_METRICS_PORT"
    MODEL_REVISION = "REASONOPS_MODEL_REVISION"  # server pods: the revision of the served model
    STATUS_KUBECONFIG = "REASONOPS_STATUS_KUBECONFIG"  # tests: a kubeconfig for status patches
    HF_TOKEN = "HF_TOKEN"  # a hub token, from spec.hubTokenSecretRef
    SHARDS = "REASONOPS_SHARDS"  # curation pods sharing the model stages (their index: JOB_COMPLETION_INDEX)
    SANDBOX_URL = "REASONOPS_SANDBOX_URL"  # the resource's sandbox service (model-written code runs there)
    SANDBOX_ISOLATION = "REASONOPS_SANDBOX_ISOLATION"  # bwrap (default: refuse without it) or SANDBOX_UNCONFINED
    CHECKPOINTS = "REASONOPS_CHECKPOINTS"  # EvalRun pods, one per checkpoint (their index: JOB_COMPLETION_INDEX)
    API_KEY_PREFIX = "REASONOPS_API_KEY_"


SANDBOX_UNCONFINED = "unconfined"  # the explicit opt-out: process limits only where bubblewrap does not work


def api_key_env(secret: str, key: str) -> str:
    """The environment variable that carries the value of key `key` of Secret `secret`."""
    clean = "".join(ch if ch.isalnum() else "_" for ch in f"{secret}_{key}").upper()
    return f"{Env.API_KEY_PREFIX}{clean}"


# --- experiment tracking --------------------------------------------------------------------------

# The variables MLflow's and W&B's clients read themselves: the pod gets each from the Secret key the spec names
# (secretKeyRef), and `reasonops run` from the shell that runs it.
MLFLOW_TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
MLFLOW_USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
MLFLOW_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
WANDB_API_KEY_ENV = "WANDB_API_KEY"
TRACKING_DIRS = {"tensorboard": "tensorboard", "wandb": "wandb", "state": "tracking"}


def tracking_env(tracking: Optional[Tracking]) -> list[tuple[str, SecretKeyRef]]:
    """(environment variable, the Secret key whose value it carries) of a spec's tracking section."""
    if tracking is None:
        return []
    pairs: list[tuple[str, Optional[SecretKeyRef]]] = []
    if tracking.mlflow is not None:
        pairs += [(MLFLOW_TOKEN_ENV, tracking.mlflow.tokenSecretRef), (MLFLOW_USERNAME_ENV, tracking.mlflow.usernameSecretRef),
                  (MLFLOW_PASSWORD_ENV, tracking.mlflow.passwordSecretRef)]
    if tracking.wandb is not None:
        pairs.append((WANDB_API_KEY_ENV, tracking.wandb.apiKeySecretRef))
    return [(name, ref) for name, ref in pairs if ref is not None]


def tracking_dir(output: str, what: Literal["tensorboard", "wandb", "state"]) -> str:
    """Where a run's tracking files go, under its output: TensorBoard's event files (a per-checkpoint evaluation's
    pods share the EvalRun revision's, so its checkpoints make one curve), W&B's offline runs, the tracker's
    state (the MLflow run a restarted pod continues)."""
    return f"{output.rstrip('/')}/{TRACKING_DIRS[what]}"


# --- locations -----------------------------------------------------------------------------------


def location_string(location: Location, *parts: str) -> str:
    """The canonical form of a location: pvc://claim/dir, an object-store URI, or a plain path."""
    tail = [p.strip("/") for p in parts if p]
    if location.volume is not None:
        base = posixpath.join(location.volume.claimName, location.volume.path.strip("/"))
        return PVC_SCHEME + posixpath.join(base, *tail).rstrip("/")
    if location.uri is not None:
        return "/".join([location.uri.rstrip("/"), *tail])
    return posixpath.join(location.path or "", *tail)


def claim_of(location: str) -> Optional[str]:
    """The volume claim a canonical location lives on (None for paths and object-store URIs)."""
    return location[len(PVC_SCHEME):].split("/", 1)[0] if location.startswith(PVC_SCHEME) else None


def claims_of(locations: Iterable[Optional[str]]) -> list[str]:
    """The claims a pod must mount to reach every location, sorted."""
    return sorted({c for c in (claim_of(x) for x in locations if x) if c})


def pod_path(location: str, volume_root: Optional[str] = None) -> str:
    """Where a canonical location is found by a workload: claims under the volume root, the rest as is.

    In a pod the root is `VOLUME_ROOT`; `reasonops run` maps claims to a directory of its output.
    """
    if location.startswith(PVC_SCHEME):
        root = volume_root or os.environ.get(Env.VOLUME_ROOT) or VOLUME_ROOT
        return posixpath.join(root, location[len(PVC_SCHEME):])
    return location


def canonical(path: str, volume_root: Optional[str] = None) -> str:
    """The inverse of `pod_path`: a path a workload reported, as the canonical location."""
    root = (volume_root or os.environ.get(Env.VOLUME_ROOT) or VOLUME_ROOT).rstrip("/") + "/"
    return PVC_SCHEME + path[len(root):] if path.startswith(root) else path


def dataset_output(ds: ReasoningDataset, revision: str) -> str:
    return location_string(ds.spec.output, ds.metadata["name"], revision)


def finetune_output(ft: FineTuneJob, revision: str) -> str:
    return location_string(ft.spec.output, ft.metadata["name"], revision)


def model_location(finetune_output_location: str) -> str:
    """Where a FineTuneJob revision's final model is (the `model/` directory of its output)."""
    return f"{finetune_output_location.rstrip('/')}/model"


def checkpoint_name(step: int) -> str:
    """The name of a training checkpoint (its directory under `<output>/checkpoints/`)."""
    return f"step-{step}"


def checkpoint_model(checkpoint: str) -> str:
    """Where the servable export of a training checkpoint is (`checkpoints.export`): its `model/` directory."""
    return f"{checkpoint.rstrip('/')}/model"


def exported_checkpoints(finetune_output_location: str, reported: Any, limit: int = MAX_CHECKPOINTS) -> list[dict[str, Any]]:
    """A FineTuneJob's status.checkpoints from the exported checkpoints its training reported (step and epoch,
    oldest first): the newest `limit`, each named and located (`checkpoint_name`, `checkpoint_model`)."""
    out = []
    valid = [e for e in (reported if isinstance(reported, list) else []) if isinstance(e, dict) and isinstance(e.get("step"), int)]
    for entry in valid[-limit:]:
        name = checkpoint_name(entry["step"])
        out.append({"name": name, "step": entry["step"], "epoch": str(entry.get("epoch") or "")[:16] or None,
                    "location": checkpoint_model(f"{finetune_output_location.rstrip('/')}/checkpoints/{name}")[:1024]})
    return out


def checkpoints_to_evaluate(model: EvalModelRef, kept: Iterable[CheckpointRef]) -> tuple[list[CheckpointRef], Optional[str]]:
    """An EvalRun's model.checkpoints: which of its FineTuneJob's kept exported checkpoints (oldest first) are
    evaluated, every one or those of model.checkpointSteps, in the FineTuneJob's order; or, when there are
    none to evaluate, why (the message of a NoCheckpoints condition, naming what was kept)."""
    kept = list(kept)
    if not model.checkpoints:
        return [], None
    if not kept:
        return [], (f"FineTuneJob {model.fineTuneJob!r} kept no servable checkpoints: set its spec.checkpoints.export: true "
                    "(and keep them: checkpoints.keep)")
    if model.checkpoints == "all":
        return kept, None
    wanted = set(model.checkpointSteps or ())
    missing = sorted(wanted - {x.step for x in kept})
    if missing:
        return [], (f"FineTuneJob {model.fineTuneJob!r} kept no servable checkpoint at step{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of "
                    f"model.checkpointSteps; it kept steps {', '.join(str(x.step) for x in kept)}")
    return [x for x in kept if x.step in wanted], None


def eval_output(ev: EvalRun, revision: str, model_location_: str = "") -> Optional[str]:
    """Where an EvalRun revision writes responses and reports.

    `spec.output` when set; otherwise next to the evaluated FineTuneJob model
    (``<finetune output>/evals/<name>/<revision>``). None only while that model is not known yet (the API
    requires `spec.output` unless the model is a FineTuneJob's): no revision runs before it is, so there is
    no fallback (a scratch directory in the pod would lose the results with the pod).
    """
    name = ev.metadata["name"]
    if ev.spec.output is not None:
        return location_string(ev.spec.output, name, revision)
    if ev.spec.model.fineTuneJob and model_location_:
        base = model_location_.rstrip("/")
        base = base[: -len("/model")] if base.endswith("/model") else base
        return f"{base}/evals/{name}/{revision}"
    return None


# --- exports to object stores (spec.export) ---------------------------------------------------------

AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"  # from export.accessKeyIdSecretRef (a secretKeyRef, never a value)
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"  # from export.secretAccessKeySecretRef


def export_location(export: Any, name: str, revision: str) -> str:
    """Where a revision's dataset or final model is published: <export.uri>/<name>/<revision>."""
    return f"{export.uri.rstrip('/')}/{name}/{revision}"


def export_environment(export: Any) -> dict[str, str]:
    """The plain environment variables of an export (its endpoint and region; the credentials come from
    Secret keys): what the operator sets in the pod and what `reasonops run` applies."""
    env = {}
    if export is not None and export.endpointUrl:
        env["AWS_ENDPOINT_URL"] = export.endpointUrl
    if export is not None and export.region:
        env.update(AWS_REGION=export.region, AWS_DEFAULT_REGION=export.region)
    return env


# --- revisions -----------------------------------------------------------------------------------

# Fields that change how or where a revision runs, or how its results are judged, not what it produces:
# editing them makes no new revision (a gate threshold edit re-judges the stored results).
NON_REVISION_FIELDS: dict[str, frozenset[str]] = {
    "ReasoningDataset": frozenset({"suspend", "resources", "backoffLimit", "activeDeadlineSeconds", "tracking"}),
    "FineTuneJob": frozenset({"suspend", "resources", "backoffLimit", "activeDeadlineSeconds", "retrainPolicy", "tracking"}),
    "EvalRun": frozenset({"suspend", "resources", "backoffLimit", "activeDeadlineSeconds", "serving", "gates", "concurrency", "parallelism",
                          "tracking"}),
}


def revision_of(kind: str, spec: Mapping[str, Any], inputs: Optional[Mapping[str, Any]] = None) -> str:
    """A short, stable hash of what a revision produces: the spec as written (less how it runs) and its inputs."""
    skip = NON_REVISION_FIELDS[kind]
    relevant = {k: v for k, v in sorted(spec.items()) if k not in skip}
    canonical_json = json.dumps({"spec": relevant, "inputs": dict(inputs or {})}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical_json.encode()).hexdigest()[:10]


def input_hash(text: str) -> str:
    """A revision-like hash of an input named by location only (a dataset or model path, an endpoint)."""
    return hashlib.sha256(text.encode()).hexdigest()[:10]


# --- decisions both sides make -------------------------------------------------------------------


def training_world(spec: FineTuneJobSpec, default_gpus_per_node: int) -> tuple[int, int, int]:
    """(nodes, GPUs per node, processes per node) of a FineTuneJob: one process per GPU, one on CPU. The node
    count is the API's (its default included); the GPUs are gpusPerNode, else resources.gpus, else the
    operator's setting."""
    spec = resolve_defaults(spec)
    gpus = next((g for g in (spec.gpusPerNode, spec.resources.gpus if spec.resources else None) if g is not None),
                default_gpus_per_node)
    return spec.numNodes, gpus, max(gpus, 1)


def serving_enabled(spec: EvalRunSpec) -> bool:
    """Whether the operator runs a server for an EvalRun: not for an endpoint, not offline, not disabled."""
    if spec.model.endpoint is not None or spec.backend == "offline":
        return False
    return spec.serving is None or spec.serving.enabled is not False


def eval_job_gpus(spec: EvalRunSpec) -> int:
    """GPUs of the benchmark Job: as set, else vLLM's tensor parallel size offline (the API's default
    included), else none (an HTTP client, or the CPU engine offline)."""
    spec = resolve_defaults(spec)
    if spec.resources is not None and spec.resources.gpus is not None:
        return spec.resources.gpus
    if spec.backend == "offline" and spec.serving.engine != "cpu":
        return spec.serving.tensorParallelSize
    return 0


def served_model_name(ev: EvalRun) -> str:
    """The model name in an EvalRun's API requests: spec.model.servedModelName, else the resource name.

    The same for the operator's server (`--served-model-name`), the local server of `reasonops run`, an
    external endpoint and the samplers of a ReasoningDataset naming the EvalRun: the API documents the
    resource name as the default. A model location is never the name (a path is what vLLM answers to only
    when nobody names the model, and the operator always names it)."""
    return ev.spec.model.servedModelName or ev.metadata["name"]


def server_name(name: str) -> str:
    """Name of an EvalRun's server Deployment and Service."""
    return f"{name[:52].rstrip('-')}-server"


def endpoint_url(name: str, namespace: str, port: int) -> str:
    """The OpenAI-compatible base URL of an EvalRun's server, as pods in the cluster reach it."""
    return f"http://{server_name(name)}.{namespace}.svc:{port}/v1"


# Benchmarks whose answers are programs run against tests (codebench.py registers exactly these).
CODE_BENCHMARKS = frozenset({"livecodebench", "livecodebench-v2", "humaneval", "mbpp", "code-demo"})


def needs_sandbox(kind: str, spec: Mapping[str, Any]) -> bool:
    """Whether a resource runs model-written code: a code benchmark, or a source of code problems."""
    if kind == "EvalRun":
        return any(b.get("name") in CODE_BENCHMARKS for b in spec.get("benchmarks") or [])
    if kind == "ReasoningDataset":
        return any(s.get("codeTests") for s in spec.get("sources") or [])
    return False


SANDBOX_PORT = 8080


def sandbox_name(name: str) -> str:
    """Name of a resource's sandbox Deployment, Service and NetworkPolicy."""
    return f"{name[:50].rstrip('-')}-sandbox"


def sandbox_url(name: str, namespace: str) -> str:
    """Where a resource's workload pods send programs to run (Env.SANDBOX_URL)."""
    return f"http://{sandbox_name(name)}.{namespace}.svc:{SANDBOX_PORT}"


def is_reporting_process(env: Mapping[str, str]) -> bool:
    """Only the first process of a job publishes results (status, termination message): rank 0 of torchrun
    workers, the launcher of node 0, or a plain single process; every pod of a per-checkpoint evaluation."""
    if env.get(Env.CHECKPOINTS):  # each pod of a checkpoint evaluation reports its own checkpoint's result
        return True
    rank = env.get("RANK")
    if rank is not None:
        return rank == "0"
    node_rank = env.get("NODE_RANK") or env.get("JOB_COMPLETION_INDEX")
    return node_rank in (None, "", "0")


# --- the document ----------------------------------------------------------------------------------


class Identity(Model):
    name: str = Field(description="metadata.name of the resource.")
    namespace: str = Field(default="local", description="metadata.namespace (\"local\" for reasonops run).")
    uid: str = Field(default="local", description="metadata.uid (\"local\" for reasonops run).")


class WorkloadContext(Model):
    """What the operator resolved for the pod; every location is where the pod reads it."""

    datasetLocation: Optional[str] = Field(default=None, description="FineTuneJob: the dataset directory.")
    datasetRevision: Optional[str] = Field(default=None, description="FineTuneJob: the dataset's revision.")
    modelLocation: Optional[str] = Field(default=None, description="EvalRun: the model directory (or hub id).")
    modelRevision: Optional[str] = Field(default=None, description="EvalRun: the model's revision.")
    endpoint: Optional[str] = Field(default=None, description="EvalRun: the OpenAI-compatible URL to evaluate.")
    servedModelName: Optional[str] = Field(default=None, description="EvalRun: the model name in API requests.")
    baseModel: Optional[str] = Field(
        default=None, description="EvalRun: the base model (hub id) of a fine-tuned model; protocols pick prompts by it."
    )
    endpoints: dict[str, Union[str, list[str]]] = Field(
        default_factory=dict, description="ReasoningDataset: EvalRun name -> URL of its server (or its replicas' URLs)."
    )
    servedModelNames: dict[str, str] = Field(
        default_factory=dict, description="ReasoningDataset: EvalRun name -> the model name its server answers to."
    )
    checkpoints: list[CheckpointRef] = Field(
        default_factory=list, description="EvalRun with model.checkpoints: the checkpoints, one per pod (`document_for_checkpoint`).",
    )
    baselines: list[BaselineRef] = Field(
        default_factory=list, description="EvalRun with relative gates: the baselines' outputs (`resolve_baselines`).",
    )


class BaselineRef(Model):
    """The output of a relative gate's baseline EvalRun, as the pod reads it."""

    name: str = Field(description="The baseline EvalRun.")
    revision: str = Field(description="Its succeeded revision compared against.")
    location: str = Field(description="Its output directory (summary.json, responses/).")


WorkloadSpec = Union[ReasoningDatasetSpec, FineTuneJobSpec, EvalRunSpec]


class WorkloadDocument(Model):
    """The document at `RESOURCE_FILE`: the resource, resolved for one revision.

    Its spec is the kind's API model with every static default filled in (`resolve_defaults`), validated
    once, when the document is built or read; workloads read its fields. On the wire it is the spec's wire form.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    apiVersion: str = API_VERSION
    kind: Literal["ReasoningDataset", "FineTuneJob", "EvalRun"]
    metadata: Identity
    spec: WorkloadSpec = Field(description="The spec with its defaults filled in, volume locations as paths in the pod (`spec_for_pod`).")
    revision: str
    output: str = Field(description="Where this revision writes, as a path (or URI) the workload opens.")
    outputLocation: str = Field(description="The same location in canonical form (pvc://, URI or path), for reports.")
    context: WorkloadContext = Field(default_factory=WorkloadContext)

    @model_validator(mode="before")
    @classmethod
    def _typed_spec(cls, data: Any) -> Any:
        """The spec as its kind's model (the union alone would guess the kind from the fields)."""
        if isinstance(data, Mapping) and data.get("kind") in KINDS and isinstance(data.get("spec"), Mapping):
            data = {**data, "spec": typed_spec(data["kind"], data["spec"])}
        return data

    @model_validator(mode="after")
    def _spec_of_kind(self) -> "WorkloadDocument":
        if not isinstance(self.spec, KINDS[self.kind].spec_model):
            raise ValueError(f"the spec of a {self.kind} document is a {type(self.spec).__name__}")
        return self

    def resource(self) -> Resource:
        """The typed resource (its spec is this document's, not validated again)."""
        return KINDS[self.kind](apiVersion=self.apiVersion, kind=self.kind, metadata=self.metadata.model_dump(), spec=self.spec)

    def canonical(self, reported: str) -> str:
        """A location a workload reported (a path under `output`, a path relative to it, or anything else)
        in canonical form: under `outputLocation` when it lies in the output, else as `canonical` maps it."""
        if reported == self.output or reported.startswith(self.output.rstrip("/") + "/"):
            return self.outputLocation + reported[len(self.output):]
        if not reported.startswith("/") and "://" not in reported:
            return f"{self.outputLocation.rstrip('/')}/{reported}"
        return canonical(reported)

    def as_dict(self) -> dict[str, Any]:
        """The wire form (what `to_json` writes and `read_document` reads)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)


def typed_spec(kind: str, spec: Mapping[str, Any]) -> WorkloadSpec:
    """A spec in wire form as the API model of `kind`, every static default filled in (raises ValidationError)."""
    return resolve_defaults(KINDS[kind].spec_model.model_validate(dict(spec)))  # type: ignore[return-value]


class InvalidDocument(ValueError):
    """A resource or workload document that does not validate; the message names every problem."""


def parse_resource(doc: Mapping[str, Any]) -> Resource:
    if not isinstance(doc, Mapping):
        raise InvalidDocument(f"a resource must be a mapping with apiVersion, kind, metadata and spec, not {type(doc).__name__}")
    kind, version, metadata = doc.get("kind"), doc.get("apiVersion"), doc.get("metadata")
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidDocument(f"kind: must be one of {', '.join(KINDS)}, not {kind!r}")
    if version != API_VERSION:
        raise InvalidDocument(f"apiVersion: must be {API_VERSION}, not {version!r}")
    name = metadata.get("name", "?") if isinstance(metadata, Mapping) else "?"
    try:  # the status of an applied resource is the operator's: the API server drops it on create
        return KINDS[kind].model_validate({key: value for key, value in doc.items() if key != "status"})
    except ValidationError as exc:
        raise InvalidDocument(format_validation_error(kind, name, exc)) from None


def format_validation_error(kind: str, name: str, error: ValidationError) -> str:
    return f"{kind} {name!r} is invalid: " + "; ".join(validation_problems(error))


def read_document(data: str | bytes | Mapping[str, Any]) -> WorkloadDocument:
    """Parse and validate a workload document (its JSON text or the decoded mapping), its spec once."""
    try:
        raw = json.loads(data) if isinstance(data, (str, bytes)) else data
    except ValueError as exc:
        raise InvalidDocument(f"the workload document is not JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise InvalidDocument(f"the workload document must be a JSON object, not {type(raw).__name__}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise InvalidDocument(f"the workload document's kind {kind!r} is not one of {', '.join(KINDS)}")
    name = raw.get("metadata", {}).get("name", "?") if isinstance(raw.get("metadata"), Mapping) else "?"
    if isinstance(raw.get("spec"), Mapping):
        try:
            raw = {**raw, "spec": typed_spec(kind, raw["spec"])}
        except ValidationError as exc:
            raise InvalidDocument(f"{kind} {name!r} is invalid: " + "; ".join(f"spec.{p}" for p in validation_problems(exc))) from None
    try:
        return WorkloadDocument.model_validate(raw)
    except ValidationError as exc:
        raise InvalidDocument("the workload document is invalid: " + "; ".join(validation_problems(exc))) from None


def _in_pod(value: Optional[str], root: str) -> Optional[str]:
    return pod_path(value, root) if value and value.startswith(PVC_SCHEME) else value


def spec_for_pod(kind: str, spec: Mapping[str, Any], volume_root: Optional[str] = None) -> dict[str, Any]:
    """The spec as the workload reads it: every location on a volume claim replaced by where the claim is
    mounted (the builders mount each of them), so no workload needs to know about claims.

    - ReasoningDataset: a source's `uri: pvc://...` becomes its `path`; decontamination `benchmarkPath`.
    - FineTuneJob: `baseModel.name` on a claim (`pvc://...`, or relative to `baseModel.volume`) becomes a path.
    - EvalRun: benchmark `path`s; the model itself comes resolved in the context.
    """
    root = volume_root or VOLUME_ROOT
    out = json.loads(json.dumps(spec))  # a deep copy of plain JSON
    if kind == "ReasoningDataset":
        for source in out.get("sources") or []:
            if str(source.get("uri", "")).startswith(PVC_SCHEME):
                source["path"] = _in_pod(source.pop("uri"), root)
        for stage in out.get("stages") or []:
            if stage.get("decontaminate"):
                stage["decontaminate"]["benchmarkPath"] = _in_pod(stage["decontaminate"].get("benchmarkPath"), root)
                if stage["decontaminate"]["benchmarkPath"] is None:
                    stage["decontaminate"].pop("benchmarkPath")
    elif kind == "FineTuneJob":
        base = out.get("baseModel") or {}
        if base.get("volume"):
            base["name"] = pod_path(location_string(Location.model_validate(base.pop("volume")), base["name"]), root)
        else:
            base["name"] = _in_pod(base.get("name"), root)
    elif kind == "EvalRun":
        for bench in out.get("benchmarks") or []:
            if bench.get("path"):
                bench["path"] = _in_pod(bench["path"], root)
    return out


R = TypeVar("R", bound=Resource)


def with_defaults(res: R) -> R:
    """The resource with every static default of its spec filled in (`api.common.resolve_defaults`): what
    the operator decides with and builds from, and what the pod reads (`build_document`)."""
    return res.model_copy(update={"spec": resolve_defaults(res.spec)})  # type: ignore[attr-defined]


def build_document(
    res: Resource, *, revision: str, output: str, context: Optional[WorkloadContext] = None,
    volume_root: Optional[str] = None,
) -> WorkloadDocument:
    """The document of one revision. `output` and the context's locations are canonical; they are
    translated to where the workload finds them (claims under `volume_root`, default `VOLUME_ROOT`).
    The spec comes with its static defaults filled in (`resolve_defaults`): the API's defaults are the
    only ones, and the pod reads the values the operator decided with, not defaults of its own."""
    ctx = (context or WorkloadContext()).model_copy()
    root = volume_root or VOLUME_ROOT
    for key in ("datasetLocation", "modelLocation"):
        value = getattr(ctx, key)
        if value:
            setattr(ctx, key, pod_path(value, root))
    ctx.checkpoints = [c.model_copy(update={"location": pod_path(c.location, root)}) for c in ctx.checkpoints]
    ctx.baselines = [b.model_copy(update={"location": pod_path(b.location, root)}) for b in ctx.baselines]
    meta = res.metadata
    return WorkloadDocument(
        kind=res.kind,
        metadata=Identity(name=meta["name"], namespace=meta.get("namespace") or "local", uid=meta.get("uid") or "local"),
        spec=spec_for_pod(res.kind, resolve_defaults(res.spec).to_wire(), root),  # type: ignore[attr-defined]
        revision=revision,
        output=pod_path(output, root),
        outputLocation=output,
        context=ctx,
    )


def document_for_checkpoint(doc: WorkloadDocument, env: Mapping[str, str]) -> tuple[WorkloadDocument, Optional[CheckpointRef]]:
    """The document one pod of a per-checkpoint evaluation works on: the checkpoint of its completion index
    as the model, its results under `<output>/checkpoints/<name>`. Unchanged (and None) for other documents."""
    if not doc.context.checkpoints:
        return doc, None
    raw = env.get("JOB_COMPLETION_INDEX") or "0"
    if not raw.isdigit() or int(raw) >= len(doc.context.checkpoints):
        raise InvalidDocument(f"JOB_COMPLETION_INDEX={raw!r} names none of the {len(doc.context.checkpoints)} checkpoints")
    target = doc.context.checkpoints[int(raw)]
    context = doc.context.model_copy(update={"modelLocation": target.location, "checkpoints": []})
    sub = f"checkpoints/{target.name}"
    return doc.model_copy(update={
        "context": context, "output": f"{doc.output.rstrip('/')}/{sub}",
        "outputLocation": f"{doc.outputLocation.rstrip('/')}/{sub}",
    }), target


# --- inputs: what a revision reads, resolved once for the operator and `reasonops run` -----------------

# The resource a reference names, as last observed: its `spec` and `status` on the wire (None: it does not
# exist). The operator looks into its watch indexes; `reasonops run` into the results of earlier local runs,
# written in the form the operator's status has (`runner.observed_state`).
Lookup = Callable[[str, str], Optional[Mapping[str, Any]]]  # (kind, name) -> {"spec": ..., "status": ...}
Waiting = tuple[str, str]  # (reason, message): why a revision cannot start yet


@dataclass(frozen=True)
class Input:
    """A resolved input of a revision (a dataset or a model), or why it is not available yet."""

    waiting: Optional[Waiting] = None
    revision: str = ""
    location: str = ""  # canonical
    secret: Optional[str] = None  # Secret with the credentials of its location
    base_model: Optional[str] = None  # a fine-tuned model's base (hub id): protocols choose prompts by it
    context_length: Optional[int] = None  # a fine-tuned model's context, as its training reported it
    checkpoints: tuple[CheckpointRef, ...] = ()  # model.checkpoints: the FineTuneJob's exported checkpoints


@dataclass(frozen=True)
class Resolution:
    """Everything a revision reads, decided before anything runs: its revision, where it writes (None only
    while waiting for the model that decides it) and the context its pod receives."""

    revision: str
    output: Optional[str]
    context: WorkloadContext
    waiting: Optional[Waiting] = None
    input: Input = Input()
    baselines: tuple[Input, ...] = ()  # EvalRun: the outputs of its relative gates' baselines


def _body_spec(body: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    return dict((body or {}).get("spec") or {})


def _body_status(body: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    return dict((body or {}).get("status") or {})


def _same(location: str) -> str:
    return location


def resolve_dataset(
    ft: FineTuneJob, lookup: Lookup, *, namespace: str, pinned: Optional[tuple[str, str]] = None,
    place: Callable[[str], str] = _same,
) -> Input:
    """The dataset a FineTuneJob trains on: `spec.dataset` as written, else the succeeded output of the
    ReasoningDataset it names (the revision `datasetRef.revision` names, else the current one). `pinned`
    (revision, location): what it trained on before, kept with `retrainPolicy: Manual` until its spec changes.
    `place` maps a location as written to where it is read (relative paths of `reasonops run`)."""
    if ft.spec.dataset is not None:
        location = place(location_string(ft.spec.dataset))
        return Input(revision=input_hash(location), location=location, secret=ft.spec.dataset.credentialsSecretRef)
    ref = ft.spec.datasetRef
    assert ref is not None  # the API requires dataset or datasetRef
    body = lookup("ReasoningDataset", ref.name)
    secret = (_body_spec(body).get("output") or {}).get("credentialsSecretRef")
    if ft.spec.retrainPolicy == "Manual" and pinned is not None:
        return Input(revision=pinned[0], location=pinned[1], secret=secret)
    if body is None:
        return Input(waiting=(REASON_DATASET_NOT_FOUND, f"ReasoningDataset {ref.name!r} does not exist in namespace {namespace}"))
    status = _body_status(body)
    if ref.revision:
        entry = next((h for h in status.get("history") or [] if h.get("revision") == ref.revision), None)
        if entry and entry.get("phase") == "Succeeded" and entry.get("location"):
            return Input(revision=ref.revision, location=entry["location"], secret=secret)
        return Input(waiting=(REASON_WAITING_FOR_DATASET, f"revision {ref.revision} of ReasoningDataset {ref.name!r} has not succeeded"))
    out = status.get("output") or {}
    if out.get("location") and out.get("revision"):
        return Input(revision=out["revision"], location=out["location"], secret=secret)
    if status.get("phase") == "Failed":
        detail = next((x.get("message", "") for x in status.get("conditions") or [] if x.get("type") == COND_FAILED), "")
        return Input(waiting=(REASON_DATASET_FAILED, f"ReasoningDataset {ref.name!r} failed: {detail}"))
    return Input(waiting=(REASON_WAITING_FOR_DATASET, f"waiting for ReasoningDataset {ref.name!r} to become Ready ({status.get('reason', 'Pending')})"))


def resolve_model(ev: EvalRun, lookup: Lookup, *, namespace: str) -> Input:
    """The model an EvalRun evaluates: a FineTuneJob's final model (and its kept checkpoints with
    model.checkpoints), the checkpoint another EvalRun selected, a named model, or an endpoint."""
    model = ev.spec.model
    if model.fineTuneJob:
        body = lookup("FineTuneJob", model.fineTuneJob)
        if body is None:
            return Input(waiting=(REASON_MODEL_NOT_FOUND, f"FineTuneJob {model.fineTuneJob!r} does not exist in namespace {namespace}"))
        status, spec = _body_status(body), _body_spec(body)
        secret = (spec.get("output") or {}).get("credentialsSecretRef")
        if status.get("modelLocation") and status.get("modelRevision"):
            kept = [CheckpointRef.model_validate({f: x.get(f) for f in CheckpointRef.model_fields}) for x in status.get("checkpoints") or []]
            checkpoints, problem = checkpoints_to_evaluate(model, kept)
            if problem:
                return Input(waiting=(REASON_NO_CHECKPOINTS, problem))
            return Input(revision=status["modelRevision"], location=status["modelLocation"], secret=secret,
                         base_model=(spec.get("baseModel") or {}).get("name"), context_length=status.get("contextLength"),
                         checkpoints=tuple(checkpoints))
        if status.get("phase") == "Failed":
            return Input(waiting=(REASON_MODEL_FAILED, f"FineTuneJob {model.fineTuneJob!r} failed"))
        return Input(waiting=(REASON_WAITING_FOR_MODEL, f"waiting for FineTuneJob {model.fineTuneJob!r} to succeed ({status.get('reason', 'Pending')})"))
    if model.evalRun:
        upstream = lookup("EvalRun", model.evalRun)
        if upstream is None:
            return Input(waiting=(REASON_MODEL_NOT_FOUND, f"EvalRun {model.evalRun!r} does not exist in namespace {namespace}"))
        selected = _body_status(upstream).get("selectedCheckpoint") or {}
        if not selected.get("location"):
            return Input(waiting=(REASON_WAITING_FOR_SELECTION, f"waiting for EvalRun {model.evalRun!r} to select a checkpoint "
                                  f"({_body_status(upstream).get('reason', 'Pending')})"))
        finetune = lookup("FineTuneJob", (_body_spec(upstream).get("model") or {}).get("fineTuneJob") or "")
        spec = _body_spec(finetune)
        return Input(revision=input_hash(selected["location"]), location=selected["location"],
                     secret=(spec.get("output") or {}).get("credentialsSecretRef"), base_model=(spec.get("baseModel") or {}).get("name"),
                     context_length=_body_status(finetune).get("contextLength"))
    if model.name:
        location = location_string(model.volume, model.name) if model.volume else model.name
        return Input(revision=input_hash(location), location=location, secret=model.volume.credentialsSecretRef if model.volume else None)
    assert model.endpoint is not None  # the API requires one of the four
    return Input(revision=input_hash(f"{model.endpoint.url}|{model.servedModelName or ''}"))


def baseline_names(spec: EvalRunSpec) -> list[str]:
    """The EvalRuns an EvalRun's relative gates compare with, each once, in order."""
    return list(dict.fromkeys(g.baseline for g in spec.gates or [] if g.baseline))


def resolve_baselines(ev: EvalRun, lookup: Lookup, *, namespace: str, place: Callable[[str], str] = _same) -> tuple[Optional[Waiting], list[BaselineRef], tuple[Input, ...]]:
    """(why to wait, the baselines' outputs, their inputs with secrets) of an EvalRun's relative gates.

    A baseline is usable once its current revision has succeeded: its output (status.history's location of
    that revision) holds the per-problem results the paired comparison needs. Until then the run waits."""
    refs: list[BaselineRef] = []
    inputs: list[Input] = []
    for name in baseline_names(ev.spec):
        if name == ev.metadata["name"]:
            return (REASON_BASELINE_UNUSABLE, f"a relative gate names this EvalRun itself ({name!r}) as its baseline"), [], ()
        body = lookup("EvalRun", name)
        if body is None:
            return (REASON_BASELINE_NOT_FOUND, f"EvalRun {name!r} (a relative gate's baseline) does not exist in namespace {namespace}"), [], ()
        spec, status = _body_spec(body), _body_status(body)
        if (spec.get("model") or {}).get("checkpoints"):
            return (REASON_BASELINE_UNUSABLE, f"EvalRun {name!r} evaluates model.checkpoints: a baseline must evaluate a single model"), [], ()
        current = next((h for h in status.get("history") or [] if h.get("revision") == status.get("revision")), {})
        if current.get("phase") == "Succeeded" and current.get("location"):
            location = place(current["location"])
            refs.append(BaselineRef(name=name, revision=status["revision"], location=location))
            inputs.append(Input(revision=status["revision"], location=location,
                                secret=(spec.get("output") or {}).get("credentialsSecretRef")))
            continue
        if status.get("phase") == "Failed":
            detail = next((x.get("message", "") for x in status.get("conditions") or [] if x.get("type") == COND_FAILED), "")
            return (REASON_BASELINE_FAILED, f"EvalRun {name!r} (a relative gate's baseline) failed: {detail}"), [], ()
        return (REASON_WAITING_FOR_BASELINE, f"waiting for EvalRun {name!r} (a relative gate's baseline) to succeed "
                f"({status.get('reason', 'Pending')})"), [], ()
    return None, refs, tuple(inputs)


def sampler_eval_runs(spec: Mapping[str, Any]) -> list[str]:
    """Names of the EvalRuns whose servers a dataset's samplers use (from the spec on the wire)."""
    names = []
    for stage in spec.get("stages") or []:
        samplers = [(stage.get("difficulty") or {}).get("sampler") or {}]
        samplers += [t.get("sampler") or {} for t in (stage.get("generate") or {}).get("teachers") or []]
        names += [s["evalRun"] for s in samplers if s.get("evalRun")]
    return names


def resolve_samplers(spec: Mapping[str, Any], lookup: Lookup) -> tuple[Optional[Waiting], dict[str, str], dict[str, str]]:
    """(why to wait, EvalRun → URL, EvalRun → served model name) for samplers naming EvalRuns.

    An EvalRun is usable when its Serving condition is True; until then the dataset waits, with the reason.
    The name is the EvalRun's `served_model_name`."""
    urls: dict[str, str] = {}
    names: dict[str, str] = {}
    for name in dict.fromkeys(sampler_eval_runs(spec)):
        body = lookup("EvalRun", name)
        if body is None:
            return (REASON_ENDPOINT_NOT_FOUND, f"EvalRun {name!r} (a sampler's evalRun) does not exist"), {}, {}
        status = _body_status(body)
        serving = next((x for x in status.get("conditions") or [] if x.get("type") == COND_SERVING), None)
        if not status.get("endpoint") or serving is None or serving.get("status") != "True":
            why = (serving or {}).get("message") or "its server is not ready"
            return (REASON_WAITING_FOR_ENDPOINT, f"waiting for the server of EvalRun {name!r}: {why}"), {}, {}
        urls[name] = status["endpoint"]
        names[name] = (_body_spec(body).get("model") or {}).get("servedModelName") or name
    return None, urls, names


def resolve(
    res: Resource, spec: Mapping[str, Any], lookup: Lookup, *, pinned_dataset: Optional[tuple[str, str]] = None,
    server_url: Optional[str] = None, place: Callable[[str], str] = _same,
) -> Resolution:
    """A resource's inputs, revision, output and pod context: the one resolution of the operator and of
    `reasonops run`. `spec` is the spec on the wire as written (the revision's hash); `server_url` where the
    server of a serving EvalRun answers (the operator's Service; None for `reasonops run`, whose local
    server starts with the run); `place` maps locations as written to where they are read."""
    namespace = res.metadata.get("namespace") or "local"
    if isinstance(res, FineTuneJob):
        dataset = resolve_dataset(res, lookup, namespace=namespace, pinned=pinned_dataset, place=place)
        revision = revision_of(res.kind, spec, {"dataset": dataset.revision or None})
        context = WorkloadContext(datasetLocation=dataset.location or None, datasetRevision=dataset.revision or None)
        return Resolution(revision, place(finetune_output(res, revision)), context, dataset.waiting, dataset)
    if isinstance(res, EvalRun):
        model = resolve_model(res, lookup, namespace=namespace)
        baseline_wait, baselines, baseline_inputs = resolve_baselines(res, lookup, namespace=namespace, place=place)
        inputs: dict[str, Any] = {"model": model.revision or None}
        if baselines:  # a new baseline revision is a new comparison: a new revision
            inputs["baselines"] = {b.name: b.revision for b in baselines}
        revision = revision_of(res.kind, spec, inputs)
        serving = serving_enabled(res.spec)
        endpoint = server_url if serving else (res.spec.model.endpoint.url if res.spec.model.endpoint else None)
        context = WorkloadContext(
            modelLocation=model.location or None, modelRevision=model.revision or None, endpoint=endpoint or None,
            baseModel=model.base_model or res.spec.model.name or None,
            servedModelName=served_model_name(res) if res.spec.backend != "offline" or res.spec.model.endpoint else None,
            checkpoints=list(model.checkpoints), baselines=baselines,
        )
        output = eval_output(res, revision, model.location)
        return Resolution(revision, place(output) if output else None, context, model.waiting or baseline_wait, model, baseline_inputs)
    assert isinstance(res, ReasoningDataset)
    revision = revision_of(res.kind, spec)
    waiting, urls, served = resolve_samplers(spec, lookup)
    context = WorkloadContext(endpoints=urls, servedModelNames=served)
    return Resolution(revision, place(dataset_output(res, revision)), context, waiting)


# --- results ---------------------------------------------------------------------------------------

# Dropped, in this order, until a result fits the termination message; what remains is always valid JSON.
_OPTIONAL_RESULT_KEYS = ("provenance", "engine", "stageCounts", "perCheckpoint", "intervals", "message")


def encode_result(result: Mapping[str, Any], limit: int = TERMINATION_LIMIT) -> str:
    """The result as compact JSON within `limit` bytes, shrunk by dropping optional fields, never by cutting.

    Order: the known optional keys, then long lists are shortened (keeping their first items), then any
    remaining key except `error`. The full result also goes to status and the output directory.
    """
    def dumps(value: Mapping[str, Any]) -> str:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)

    out = dict(result)
    text = dumps(out)
    for key in _OPTIONAL_RESULT_KEYS:
        if len(text.encode()) <= limit:
            return text
        if key in out:
            out.pop(key)
            out["truncated"] = True
            text = dumps(out)
    for key, value in list(out.items()):
        while isinstance(value, list) and len(value) > 1 and len(text.encode()) > limit:
            value = value[: len(value) // 2]
            out[key], out["truncated"] = value, True
            text = dumps(out)
    for key in sorted(out, key=lambda k: -len(dumps({k: out[k]}))):
        if len(text.encode()) <= limit:
            break
        if key not in ("error", "truncated"):
            out.pop(key)
            out["truncated"] = True
            text = dumps(out)
    if len(text.encode()) > limit and "error" in out:  # an error message over the limit: keep its reason
        err = out["error"] if isinstance(out["error"], dict) else {"message": str(out["error"])}
        room = max(limit - len(dumps({"error": {"reason": err.get("reason", ""), "message": ""}, "truncated": True})) - 8, 0)
        message = str(err.get("message", ""))
        while len(json.dumps(message[:room])[1:-1].encode()) > room:
            room -= max(1, room // 8)
        out = {"error": {"reason": err.get("reason", ""), "message": message[:room]}, "truncated": True}
        text = dumps(out)
    return text
