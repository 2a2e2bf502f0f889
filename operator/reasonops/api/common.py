"""Types shared by the three kinds: references, locations, conditions, resources.

Conventions (Kubernetes API style): camelCase field names, integers or strings instead of floats
(decimals such as learning rates are strings like "5e-6"), lists of named items instead of maps,
bounded lists and strings, and no server-side defaults: defaults live here and are applied by the
operator when it resolves a spec, so the API server never rewrites what a user (or Argo CD) applied.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

GROUP = "reasonops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# --- condition types and reasons (constants beside the types) -------------------------------
COND_READY = "Ready"  # the current revision's result exists and is usable
COND_PROGRESSING = "Progressing"  # work for the current revision is pending or running
COND_FAILED = "Failed"  # the current revision failed
COND_SUSPENDED = "Suspended"
COND_PASSED = "Passed"  # EvalRun: every gate met
COND_SERVING = "Serving"  # EvalRun: the OpenAI-compatible endpoint is available

REASON_PENDING = "Pending"
REASON_RUNNING = "Running"
REASON_SUCCEEDED = "Succeeded"
REASON_FAILED = "Failed"
REASON_SUSPENDED = "Suspended"
REASON_QUEUED = "Queued"  # waiting for Kueue admission
REASON_WAITING_FOR_DATASET = "WaitingForDataset"
REASON_DATASET_NOT_FOUND = "DatasetNotFound"
REASON_DATASET_FAILED = "DatasetFailed"
REASON_WAITING_FOR_MODEL = "WaitingForModel"
REASON_MODEL_NOT_FOUND = "ModelNotFound"
REASON_MODEL_FAILED = "ModelFailed"
REASON_INVALID_SPEC = "InvalidSpec"
REASON_EMPTY_DATASET = "EmptyDataset"
REASON_GATES_PASSED = "GatesPassed"
REASON_GATES_FAILED = "GatesFailed"
REASON_NO_GATES = "NoGates"
REASON_ENDPOINT_NOT_FOUND = "EndpointNotFound"
REASON_WAITING_FOR_ENDPOINT = "WaitingForEndpoint"
REASON_WAITING_FOR_SERVER = "WaitingForServer"
REASON_SERVER_READY = "ServerReady"
REASON_SERVER_STARTING = "ServerStarting"
REASON_SERVER_REMOVED = "ServerRemoved"
REASON_WORKLOAD_CRASHED = "WorkloadCrashed"
# Reasons a workload fails with (reasonops.errors.WorkloadError), shown in the Failed condition.
REASON_ENDPOINT_UNREACHABLE = "EndpointUnreachable"
REASON_SOURCE_UNAVAILABLE = "SourceUnavailable"
REASON_INVALID_RESPONSES = "InvalidResponses"
REASON_DATASET_UNREADABLE = "DatasetUnreadable"
REASON_BENCHMARK_UNAVAILABLE = "BenchmarkUnavailable"
REASON_UNKNOWN_BENCHMARK = "UnknownBenchmark"
REASON_RENDEZVOUS_FAILED = "RendezvousFailed"
REASON_PEER_FAILED = "PeerFailed"
REASON_OUTPUT_UNWRITABLE = "OutputUnwritable"
REASON_ENGINE_UNAVAILABLE = "EngineUnavailable"

_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _check_decimal(value: str) -> str:
    if not _DECIMAL.match(value):
        raise ValueError(f"{value!r} is not a decimal number such as \"0.6\" or \"5e-6\"")
    return value


# A decimal written as a string ("5e-6", "0.95"): Kubernetes APIs avoid floats in spec.
Decimal = Annotated[
    str,
    Field(max_length=32, pattern=r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"),
    AfterValidator(_check_decimal),
]
Name = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
ShortText = Annotated[str, Field(max_length=253)]
LongText = Annotated[str, Field(max_length=8192)]


def validation_problems(error: Any, limit: int = 10) -> list[str]:
    """`field.path: message` for each problem of a pydantic ValidationError."""
    return [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:limit]]


def decimal(value: Optional[str], default: float | None = None) -> float | None:
    """Turn a spec decimal string into a float (None stays None unless a default is given)."""
    return default if value is None else float(value)


class Model(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=False)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SecretKeyRef(Model):
    """A key of a Secret in the resource's namespace. Secrets are only ever referenced, never copied."""

    name: Name = Field(description="Name of the Secret.")
    key: ShortText = Field(description="Key inside the Secret whose value is used.")


class VolumeLocation(Model):
    """A directory on a PersistentVolumeClaim."""

    claimName: Name = Field(description="Name of the PersistentVolumeClaim, mounted into the pods.")
    path: ShortText = Field(default="", description="Directory inside the volume (relative).")


class Location(Model):
    """Where data lives: a directory on a volume claim, an object-store URI, or a plain path.

    Exactly one of volume, uri or path.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.volume), has(self.uri), has(self.path)].filter(x, x).size() == 1",
                    "message": "exactly one of volume, uri or path must be set",
                }
            ]
        }
    )

    volume: Optional[VolumeLocation] = Field(default=None, description="A directory on a volume claim.")
    uri: Optional[Annotated[str, Field(max_length=1024, pattern=r"^[a-z0-9+.-]+://.+")]] = Field(
        default=None, description="An fsspec URI such as s3://bucket/prefix (credentials by secret reference)."
    )
    path: Optional[Annotated[str, Field(max_length=1024)]] = Field(
        default=None, description="A path inside the pod (e.g. a hostPath or image path) or on a laptop."
    )
    credentialsSecretRef: Optional[Name] = Field(
        default=None,
        description="Secret whose keys become environment variables of the pod (e.g. AWS_ACCESS_KEY_ID) for uri access.",
    )


class Toleration(Model):
    key: Optional[ShortText] = Field(default=None, description="Taint key the toleration applies to.")
    operator: Optional[Literal["Exists", "Equal"]] = Field(default=None, description="Exists or Equal.")
    value: Optional[ShortText] = Field(default=None, description="Taint value for Equal.")
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(
        default=None, description="Taint effect to tolerate; empty means all."
    )
    tolerationSeconds: Optional[int] = Field(default=None, ge=0, description="For NoExecute: how long to stay.")


class NodeSelectorEntry(Model):
    key: ShortText = Field(description="Node label key.")
    value: ShortText = Field(description="Node label value.")


class Resources(Model):
    """Compute for the workload pods."""

    gpus: Optional[int] = Field(default=None, ge=0, le=16, description="GPUs per pod (nvidia.com/gpu).")
    cpu: Optional[Annotated[str, Field(max_length=16, pattern=r"^[0-9]+(\.[0-9]+)?m?$")]] = Field(
        default=None, description="CPU request and limit per pod, e.g. \"8\" or \"500m\"."
    )
    memory: Optional[Annotated[str, Field(max_length=16, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")]] = Field(
        default=None, description="Memory request and limit per pod, e.g. \"64Gi\"."
    )
    sharedMemory: Optional[Annotated[str, Field(max_length=16, pattern=r"^[0-9]+([KMGT]i?)?$")]] = Field(
        default=None, description="Size of the /dev/shm memory volume (NCCL and data loaders need a large one)."
    )
    nodeSelector: Optional[list[NodeSelectorEntry]] = Field(
        default=None, max_length=16, description="Node labels the pods must match."
    )
    tolerations: Optional[list[Toleration]] = Field(default=None, max_length=16, description="Taints the pods tolerate.")
    image: Optional[Annotated[str, Field(max_length=512)]] = Field(
        default=None, description="Overrides the workload image configured in the operator."
    )
    priorityClassName: Optional[Name] = Field(default=None, description="PriorityClass of the pods.")
    podAnnotations: Optional[dict[Annotated[str, Field(max_length=253)], Annotated[str, Field(max_length=4096)]]] = Field(
        default=None, max_length=32, description="Annotations added to the workload pods (e.g. sidecar or scrape settings)."
    )
    podLabels: Optional[dict[Annotated[str, Field(max_length=253)], Annotated[str, Field(max_length=63)]]] = Field(
        default=None, max_length=32, description="Labels added to the workload pods."
    )


class Condition(Model):
    """Shaped like metav1.Condition."""

    type: Annotated[str, Field(max_length=64)] = Field(description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(max_length=128)] = Field(description="CamelCase reason of the last transition.")
    message: Annotated[str, Field(max_length=4096)] = Field(default="", description="Human-readable detail.")
    lastTransitionTime: Annotated[str, Field(max_length=64)] = Field(description="When the status last changed (RFC 3339).")
    observedGeneration: Optional[int] = Field(default=None, description="The generation the condition was set for.")


class ChildRef(Model):
    kind: Annotated[str, Field(max_length=64)] = Field(description="Kind of the child object.")
    name: ShortText = Field(description="Name of the child object.")


class HistoryEntry(Model):
    """A past or current revision and how it ended."""

    revision: Annotated[str, Field(max_length=64)] = Field(description="Revision (hash of the effective spec).")
    phase: Annotated[str, Field(max_length=32)] = Field(description="Pending, Running, Succeeded or Failed.")
    job: Optional[ShortText] = Field(default=None, description="The Job that ran this revision.")
    reason: Optional[Annotated[str, Field(max_length=128)]] = Field(default=None, description="Why it ended.")
    startTime: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="When it started.")
    completionTime: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="When it ended.")
    location: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Where the revision wrote its output.")
    summary: Optional[Annotated[str, Field(max_length=256)]] = Field(
        default=None, description="The headline number of the revision (samples, loss, accuracy)."
    )
