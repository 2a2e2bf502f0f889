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
the served model's name        `served_model_name`
the endpoint of an EvalRun     `endpoint_url`
env var of a secret's value    `api_key_env`
who reports final results      `is_reporting_process`
what a checkpoint is called    `checkpoint_name`; its servable export: `checkpoint_model`
the checkpoints a run exported `exported_checkpoints` (FineTuneJob status.checkpoints)
which checkpoint a pod rates   `document_for_checkpoint` (`Env.CHECKPOINTS`, the pod's completion index)
the termination message        `encode_result` (valid JSON within 4 KiB)
============================  ==========================================================
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from typing import Any, Iterable, Mapping, Optional, Union

from pydantic import ConfigDict, Field, ValidationError

from .api.common import API_VERSION, Location, Model, resolve_defaults, validation_problems
from .api.v1alpha1 import KINDS, MAX_CHECKPOINTS, CheckpointRef, EvalModelRef, EvalRun, EvalRunSpec, FineTuneJob, FineTuneJobSpec, ReasoningDataset, Resource

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
    CHECKPOINTS = "REASONOPS_CHECKPOINTS"  # EvalRun pods, one per checkpoint (their index: JOB_COMPLETION_INDEX)
    API_KEY_PREFIX = "REASONOPS_API_KEY_"


def api_key_env(secret: str, key: str) -> str:
    """The environment variable that carries the value of key `key` of Secret `secret`."""
    clean = "".join(ch if ch.isalnum() else "_" for ch in f"{secret}_{key}").upper()
    return f"{Env.API_KEY_PREFIX}{clean}"


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
    (``<finetune output>/evals/<name>/<revision>``). None when neither applies: the API requires
    `spec.output` unless the model is a FineTuneJob's.
    """
    name = ev.metadata["name"]
    if ev.spec.output is not None:
        return location_string(ev.spec.output, name, revision)
    if ev.spec.model.fineTuneJob and model_location_:
        base = model_location_.rstrip("/")
        base = base[: -len("/model")] if base.endswith("/model") else base
        return f"{base}/evals/{name}/{revision}"
    return None


# --- revisions -----------------------------------------------------------------------------------

# Fields that change how or where a revision runs, or how its results are judged, not what it produces:
# editing them makes no new revision (a gate threshold edit re-judges the stored results).
NON_REVISION_FIELDS: dict[str, frozenset[str]] = {
    "ReasoningDataset": frozenset({"suspend", "resources", "backoffLimit", "activeDeadlineSeconds"}),
    "FineTuneJob": frozenset({"suspend", "resources", "backoffLimit", "activeDeadlineSeconds", "retrainPolicy"}),
    "EvalRun": frozenset({"suspend", "resources", "backoffLimit", "activeDeadlineSeconds", "serving", "gates", "concurrency", "parallelism"}),
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
    """(nodes, GPUs per node, processes per node) of a FineTuneJob: one process per GPU, one on CPU."""
    nodes = spec.numNodes or 1
    if spec.gpusPerNode is not None:
        gpus = spec.gpusPerNode
    elif spec.resources is not None and spec.resources.gpus is not None:
        gpus = spec.resources.gpus
    else:
        gpus = default_gpus_per_node
    return nodes, gpus, max(gpus, 1)


def serving_enabled(spec: EvalRunSpec) -> bool:
    """Whether the operator runs a server for an EvalRun: not for an endpoint, not offline, not disabled."""
    if spec.model.endpoint is not None or spec.backend == "offline":
        return False
    return spec.serving is None or spec.serving.enabled is not False


def eval_job_gpus(spec: EvalRunSpec) -> int:
    """GPUs of the benchmark Job: as set, else vLLM's tensor parallel size offline, else none (an HTTP client,
    or the CPU engine offline)."""
    if spec.resources is not None and spec.resources.gpus is not None:
        return spec.resources.gpus
    if spec.backend == "offline":
        if spec.serving and spec.serving.engine == "cpu":
            return 0
        return (spec.serving.tensorParallelSize if spec.serving and spec.serving.tensorParallelSize else 1)
    return 0


def served_model_name(ev: EvalRun) -> str:
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


# Keys of a Hugging Face config.json that bound the context, as vLLM reads them (the smallest wins).
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length", "max_seq_length", "seq_len")


def model_context_length(model_config: Mapping[str, Any]) -> Optional[int]:
    """The longest context a model's config.json allows, as vLLM derives it: the smallest of the
    length keys (of `text_config` for multimodal models), times a rope_scaling factor that extends it."""
    config = model_config.get("text_config") or model_config
    lengths = [int(config[k]) for k in _CONTEXT_KEYS if isinstance(config.get(k), (int, float)) and config[k] > 0]
    if not lengths:
        return None
    length = min(lengths)
    rope = config.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type"))
    if kind not in (None, "su", "longrope", "llama3", "mrope", "default") and rope.get("factor"):
        length = int(rope.get("original_max_position_embeddings", length) * rope["factor"])
    return length


def check_max_model_len(model_config: Mapping[str, Any], requested: Optional[int]) -> Optional[str]:
    """A one-line error when serving.maxModelLen exceeds the model's context (vLLM refuses to start
    then), else None."""
    if requested is None:
        return None
    allowed = model_context_length(model_config)
    if allowed is not None and requested > allowed:
        return (f"serving.maxModelLen {requested} exceeds the model's context of {allowed} tokens "
                f"(max_position_embeddings and rope_scaling in its config.json)")
    return None



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


class WorkloadDocument(Model):
    """The document at `RESOURCE_FILE`: the resource, resolved for one revision."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    apiVersion: str = API_VERSION
    kind: str
    metadata: Identity
    spec: dict[str, Any] = Field(description="The spec as written (wire form), volume locations as paths in the pod (`spec_for_pod`).")
    revision: str
    output: str = Field(description="Where this revision writes, as a path (or URI) the workload opens.")
    outputLocation: str = Field(description="The same location in canonical form (pvc://, URI or path), for reports.")
    context: WorkloadContext = Field(default_factory=WorkloadContext)

    def resource(self) -> Resource:
        """The typed resource (raises `InvalidDocument` naming the problems)."""
        return parse_resource({"apiVersion": self.apiVersion, "kind": self.kind,
                               "metadata": self.metadata.model_dump(), "spec": self.spec})

    def canonical(self, reported: str) -> str:
        """A location a workload reported (a path under `output`, a path relative to it, or anything else)
        in canonical form: under `outputLocation` when it lies in the output, else as `canonical` maps it."""
        if reported == self.output or reported.startswith(self.output.rstrip("/") + "/"):
            return self.outputLocation + reported[len(self.output):]
        if not reported.startswith("/") and "://" not in reported:
            return f"{self.outputLocation.rstrip('/')}/{reported}"
        return canonical(reported)

    def as_dict(self) -> dict[str, Any]:
        """The wire form the workloads' `config_from_resource(doc)` take."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)


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
    """Parse and validate a workload document (its JSON text or the decoded mapping)."""
    try:
        raw = json.loads(data) if isinstance(data, (str, bytes)) else dict(data)
        doc = WorkloadDocument.model_validate(raw)
    except ValueError as exc:  # JSON and pydantic errors alike
        problems = validation_problems(exc) if isinstance(exc, ValidationError) else [str(exc)]
        raise InvalidDocument("the workload document is invalid: " + "; ".join(problems)) from None
    doc.resource()
    return doc


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
