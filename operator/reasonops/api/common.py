"""Types shared by the three kinds: references, locations, conditions, resources.

Conventions (Kubernetes API style): camelCase field names, integers or strings instead of floats
(decimals such as learning rates are strings like "5e-6"), lists of named items instead of maps,
bounded lists and strings, and no server-side defaults: defaults live here and are applied by the
operator when it resolves a spec, so the API server never rewrites what a user (or Argo CD) applied.
"""

from __future__ import annotations

import fractions
import functools
import json
import math
import re
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, ClassVar, Literal, Optional, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

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
REASON_NO_CHECKPOINTS = "NoCheckpoints"  # model.checkpoints of a FineTuneJob that kept no exported checkpoint (of checkpointSteps)
REASON_WAITING_FOR_SELECTION = "WaitingForSelection"  # model.evalRun: that EvalRun has selected no checkpoint yet
REASON_WAITING_FOR_BASELINE = "WaitingForBaseline"  # a relative gate's baseline EvalRun has not succeeded yet
REASON_BASELINE_NOT_FOUND = "BaselineNotFound"
REASON_BASELINE_FAILED = "BaselineFailed"
REASON_BASELINE_UNUSABLE = "BaselineUnusable"  # the baseline is the EvalRun itself, or evaluates model.checkpoints
REASON_NO_SELECTION = "NoSelection"  # no checkpoint has a result for the selection's benchmark
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
REASON_MAX_MODEL_LEN_TOO_LONG = "MaxModelLenTooLong"
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
REASON_API_KEY_MISSING = "ApiKeyMissing"
REASON_GENERATION_FAILED = "GenerationFailed"
REASON_INVALID_ARGUMENT = "InvalidArgument"
REASON_SANDBOX_UNAVAILABLE = "SandboxUnavailable"
REASON_SHARDS_INCOMPLETE = "ShardsIncomplete"
REASON_SHARDS_INCONSISTENT = "ShardsInconsistent"

# --- validation rules: one declaration, enforced by the API server (CEL) and by pydantic ----------

RULES: list["Rule"] = []  # every rule declared, so a test can check each CEL rule of the CRDs has its twin


@dataclass(frozen=True)
class Rule:
    """A validation rule: its CEL text goes into the CRD (`x-kubernetes-validations`), its predicate
    runs in pydantic, and both report the same message at the same field.

    On a model: list it in the model's `rules` (`self` is the object). On a field's type: put it in
    `Annotated[...]` (`self` is the value). `field` (a CEL fieldPath such as ".microBatchSize") names
    the field the problem is reported at, for rules that relate several fields.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field: Optional[str] = None

    def __post_init__(self) -> None:
        RULES.append(self)

    def cel_rule(self) -> dict[str, str]:
        rule = {"rule": self.cel, "message": self.message}
        if self.field:
            rule["fieldPath"] = self.field
        return rule

    def enforce(self, value: Any) -> Any:
        if self.check(value):
            return value
        if not self.field:
            raise PydanticCustomError("rule", self.message)
        loc = tuple(self.field.lstrip(".").split("."))
        raise ValidationError.from_exception_data(
            "rule", [InitErrorDetails(type=PydanticCustomError("rule", self.message), loc=loc, input=value)]
        )

    # as Annotated metadata of a field's type
    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return core_schema.no_info_after_validator_function(self.enforce, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema.setdefault("x-kubernetes-validations", []).append(self.cel_rule())
        return json_schema


def _is_set(obj: Any, name: str) -> bool:
    """CEL's has(): the field is present (pydantic: not None; the API server prunes explicit nulls)."""
    return getattr(obj, name) is not None


def exactly_one(*names: str, message: str) -> Rule:
    has = ", ".join(f"has(self.{n})" for n in names)
    return Rule(f"[{has}].filter(x, x).size() == 1", message, lambda m: sum(_is_set(m, n) for n in names) == 1)


def at_most_one(*names: str, message: str) -> Rule:
    has = ", ".join(f"has(self.{n})" for n in names)
    return Rule(f"[{has}].filter(x, x).size() <= 1", message, lambda m: sum(_is_set(m, n) for n in names) <= 1)


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


def _bound(value: float, low: Optional[float], high: Optional[float], low_open: bool, high_open: bool) -> bool:
    if not math.isfinite(value):  # "1e400": CEL's double() fails on it, so the API server refuses it
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)


def decimal_in(low: Optional[float], high: Optional[float], *, low_open: bool = False, high_open: bool = False) -> Any:
    """A Decimal within bounds, checked by the API server (CEL `double(self)`) and by pydantic alike."""
    parts, words = [], []
    if low is not None:
        parts.append(f"double(self) {'>' if low_open else '>='} {float(low)!r}")
    if high is not None:
        parts.append(f"double(self) {'<' if high_open else '<='} {float(high)!r}")
    if low is not None and high is not None:
        words.append(f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
    elif low is not None:
        words.append(f"{'greater than' if low_open else 'at least'} {low:g}")
    else:
        words.append(f"{'less than' if high_open else 'at most'} {high:g}")
    rule = Rule(" && ".join(parts), f"must be a number {words[0]}",
                lambda v: _bound(float(v), low, high, low_open, high_open))
    return Annotated[Decimal, rule]


Fraction = decimal_in(0, 1)  # shares, probabilities, thresholds, scores
PositiveDecimal = decimal_in(0, None, low_open=True)
NonNegativeDecimal = decimal_in(0, None)
Temperature = decimal_in(0, 2)
TopP = decimal_in(0, 1, low_open=True)

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
ShortText = Annotated[str, Field(max_length=253)]
LongText = Annotated[str, Field(max_length=8192)]

# Label and annotation keys as Kubernetes checks them: an optional DNS-subdomain prefix (at most 253
# characters) and "/", then a name of at most 63 characters; label values at most 63 of the name's
# characters, or empty. (RE2 and Python's re read these patterns alike.)
_KEY_RE = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
           r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_VALUE_RE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"


def _valid_key(key: str) -> bool:
    return re.match(_KEY_RE, key) is not None and key.find("/") <= 253


_QUALIFIED = ("a Kubernetes qualified name: an optional DNS subdomain prefix (at most 253 characters) and '/',"
              " then at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric")
_LABEL_VALUE = "empty or at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
LabelKey = Annotated[
    str, Field(max_length=317),  # prefix (253) + "/" + name (63)
    Rule(f"self.matches('{_KEY_RE}') && self.indexOf('/') <= 253", f"must be {_QUALIFIED}", _valid_key),
]
LabelValue = Annotated[
    str, Field(max_length=63),
    Rule(f"self.matches('{_VALUE_RE}')", f"must be {_LABEL_VALUE}", lambda v: re.match(_VALUE_RE, v) is not None),
]
# Maps are checked as a whole (rules on map keys cannot be expressed in a CRD schema).
_KEYS_RULE = Rule(
    f"self.all(k, k.matches('{_KEY_RE}') && k.indexOf('/') <= 253)", f"keys must be {_QUALIFIED}",
    lambda d: all(_valid_key(k) for k in d),
)
_VALUES_RULE = Rule(
    f"self.all(k, self[k].matches('{_VALUE_RE}'))", f"label values must be {_LABEL_VALUE}",
    lambda d: all(re.match(_VALUE_RE, v) is not None for v in d.values()),
)
_Key = Annotated[str, Field(max_length=317)]
Annotations = Annotated[dict[_Key, Annotated[str, Field(max_length=4096)]], Field(max_length=32), _KEYS_RULE]
Labels = Annotated[dict[_Key, Annotated[str, Field(max_length=63)]], Field(max_length=32), _KEYS_RULE, _VALUES_RULE]


# --- metadata as the API server checks it for a namespaced custom resource --------------------------

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_RE = rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$"
ANNOTATIONS_MAX_BYTES = 256 * 1024


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or not re.match(_DNS_SUBDOMAIN_RE, value):
        raise PydanticCustomError("dns_subdomain", "must be a lowercase RFC 1123 subdomain: at most 253 characters, lowercase"
                                  " alphanumerics, '-' or '.', starting and ending with an alphanumeric (e.g. 'example.com')")
    return value


def _dns_label(value: str) -> str:
    if len(value) > 63 or not re.match(f"^{_DNS_LABEL}$", value):
        raise PydanticCustomError("dns_label", "must be a lowercase RFC 1123 label: at most 63 characters, lowercase"
                                  " alphanumerics or '-', starting and ending with an alphanumeric (e.g. 'my-name')")
    return value


def _qualified_keys(mapping: dict[str, str], fold_case: bool = False) -> dict[str, str]:
    bad = [key for key in mapping if not _valid_key(key.lower() if fold_case else key)]
    if bad:
        raise PydanticCustomError("qualified_name", "key {key} must be {rule}", {"key": repr(bad[0]), "rule": _QUALIFIED})
    return mapping


def _annotation_keys(annotations: dict[str, str]) -> dict[str, str]:
    """Annotation keys are qualified names once lowercased (their prefix may be written in capitals)."""
    return _qualified_keys(annotations, fold_case=True)


def _label_values(labels: dict[str, str]) -> dict[str, str]:
    bad = [value for value in labels.values() if len(value) > 63 or not re.match(_VALUE_RE, value)]
    if bad:
        raise PydanticCustomError("label_value", "value {value} must be {rule}", {"value": repr(bad[0]), "rule": _LABEL_VALUE})
    return labels


def _annotations_size(annotations: dict[str, str]) -> dict[str, str]:
    if sum(len(key) + len(value) for key, value in annotations.items()) > ANNOTATIONS_MAX_BYTES:
        raise PydanticCustomError("too_long", "may not be more than 256 KiB in total")
    return annotations


class ObjectMeta(BaseModel):
    """metadata of a custom resource, checked as the API server checks it (apimachinery's ObjectMeta
    validation with names as DNS subdomains): the fields it knows and their rules; the ones it sets itself
    are accepted as they come back from it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, AfterValidator(_dns_subdomain)]
    namespace: Optional[Annotated[str, AfterValidator(_dns_label)]] = None
    generateName: Optional[str] = None
    labels: Optional[Annotated[dict[str, str], AfterValidator(_qualified_keys), AfterValidator(_label_values)]] = None
    annotations: Optional[Annotated[dict[str, str], AfterValidator(_annotation_keys), AfterValidator(_annotations_size)]] = None
    finalizers: Optional[list[str]] = None
    ownerReferences: Optional[list[dict[str, Any]]] = None
    uid: Optional[str] = None
    resourceVersion: Optional[str] = None
    generation: Optional[int] = None
    creationTimestamp: Optional[str] = None
    deletionTimestamp: Optional[str] = None
    deletionGracePeriodSeconds: Optional[int] = None
    managedFields: Optional[list[dict[str, Any]]] = None
    selfLink: Optional[str] = None


def _loc(parts: tuple[Any, ...]) -> str:
    """A pydantic error location written as the API server writes field paths: spec.stages[0].name."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_problems(error: Any, limit: int = 10) -> list[str]:
    """`field.path: message` for each problem of a pydantic ValidationError."""
    return [f"{_loc(e['loc'])}: {e['msg']}" for e in error.errors()[:limit]]


def decimal(value: Optional[str], default: float | None = None) -> float | None:
    """Turn a spec decimal string into a float (None stays None unless a default is given)."""
    return default if value is None else float(value)


# --- defaults: one named value per field, stated in the CRD description by crdgen ---------------

DEFAULT_KEY = "x-reasonops-default"  # where a field records its static default (crdgen removes it)


def defaulted(value: Any, description: str, **constraints: Any) -> Any:
    """An optional field with a static default. The wire keeps it unset (the API server never rewrites a
    spec); `resolve_defaults` fills it in, and crdgen writes "(default X)" into the CRD from `value`."""
    return Field(default=None, description=description, json_schema_extra={DEFAULT_KEY: value}, **constraints)


_NO_DEFAULT = object()


def static_default(info: FieldInfo) -> Any:
    """The static default a field records (defaulted() or a plain non-None default), else _NO_DEFAULT."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and DEFAULT_KEY in extra:
        return extra[DEFAULT_KEY]
    if info.default is not None and not info.is_required() and info.default_factory is None:
        return info.default
    return _NO_DEFAULT


def render_default(value: Any) -> str:
    """A default as one writes it in YAML: true, 5, limo, "0.8" (quoted when YAML would read it otherwise)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", value):
        return json.dumps(value)
    return str(value)


def _model_type(annotation: Any) -> Optional[type]:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, Model):
            return arg
    return None


M = TypeVar("M", bound="Model")


def resolve_defaults(model: M) -> M:
    """A copy of `model` with every unset field that has a static default filled in, recursively.

    Fields whose default depends on a preset, a protocol or the operator's settings (no static
    default recorded) stay unset; the workload presets resolve them. An unset sub-object whose
    default is `{}` (e.g. EvalRun's serving) is created so that its own defaults are filled too.
    """
    updates: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            default = static_default(info)
            if default is _NO_DEFAULT:
                continue
            sub = _model_type(info.annotation)
            value = sub.model_validate(default) if sub is not None and isinstance(default, dict) else default
        if isinstance(value, Model):
            value = resolve_defaults(value)
        elif isinstance(value, list):
            value = [resolve_defaults(v) if isinstance(v, Model) else v for v in value]
        updates[name] = value
    return model.model_copy(update=updates)


# Lists whose items are named sub-objects: in the CRD, maps keyed by name (merged by name under
# server-side apply), so the API server refuses a name twice; pydantic does the same, in its words.
NAMED_LISTS = ("sources", "stages", "perturbations", "teachers", "benchmarks", "components", "env", "volumes",
               "extendedResources")


def _check_unique_names(model: "Model", field: str) -> None:
    items = getattr(model, field, None)
    if not isinstance(items, list):
        return
    seen: set[str] = set()
    for index, item in enumerate(items):
        name = getattr(item, "name", None)
        if name is None:
            return  # a list of plain values, not of named items
        if name in seen:
            raise ValidationError.from_exception_data("unique", [InitErrorDetails(
                type=PydanticCustomError("duplicate", "Duplicate value: {item}", {"item": json.dumps({"name": name}, separators=(",", ":"))}),
                loc=(field, index), input=name)])
        seen.add(name)


# --- the wire as the API server reads it ----------------------------------------------------------

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def without_nulls(value: Any) -> Any:
    """`value` with every explicit null of a mapping removed, recursively: the API server prunes them from
    structural schemas without nullable fields (list items stay: a null item is invalid there too)."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


# kubectl (Go) writes an integral float below 1e21 without a fraction (3.0 as 3), so the API server reads
# it as the integer it is; from 1e21 on it writes an exponent, and the API server sees a non-integer.
GO_PLAIN_FLOAT_LIMIT = 1e21


def _holds_int(annotation: Any) -> bool:
    """Whether a field's type is an integer, optional or in a list (`int`, `Optional[int]`, `list[int]`,
    `Literal[0, 1]`)."""
    if annotation is int:
        return True
    if typing.get_origin(annotation) is Literal:
        return all(type(arg) is int for arg in typing.get_args(annotation))
    return any(_holds_int(arg) for arg in typing.get_args(annotation) if not isinstance(arg, (FieldInfo, Rule)))


@functools.cache
def _integer_fields(model: type) -> frozenset[str]:
    return frozenset(name for name, info in model.model_fields.items() if _holds_int(info.annotation))


def _as_integer(value: Any) -> Any:
    """An integral float (3.0, as YAML reads `3.0`) as the integer kubectl sends for it; anything else unchanged."""
    if isinstance(value, float) and value.is_integer() and abs(value) < GO_PLAIN_FLOAT_LIMIT:
        return int(value)
    if isinstance(value, list):
        return [_as_integer(item) for item in value]
    return value


def _out_of_int64(data: dict[Any, Any], integers: frozenset[str]) -> list[InitErrorDetails]:
    """Values of integer fields (or in their lists) that do not fit in 64 bits, which the API server cannot
    store as integers."""
    def outside(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX

    problem = PydanticCustomError("int64", "must be an integer in [-2^63, 2^63-1] (a 64-bit integer)")
    found = []
    for key, value in data.items():
        if key not in integers:
            continue
        if outside(value):
            found.append(InitErrorDetails(type=problem, loc=(key,), input=value))
        elif isinstance(value, list):
            found += [InitErrorDetails(type=problem, loc=(key, index), input=item) for index, item in enumerate(value) if outside(item)]
    return found


class Model(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields rejected, `rules` checked.

    Validation is as strict as the API server's: no conversions (strict mode: "15" is not an integer, 1 and
    "true" are not booleans) but the one kubectl makes (an integral float such as 3.0 is sent as an integer),
    64-bit integers, and an explicit null is the same as an absent field.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=False, strict=True)
    rules: ClassVar[tuple[Rule, ...]] = ()  # object-level validation rules (CEL in the CRD, checked here too)

    @model_validator(mode="before")
    @classmethod
    def _as_the_api_server_reads(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        integers = _integer_fields(cls)
        data = {key: _as_integer(value) if key in integers else value for key, value in without_nulls(data).items()}
        problems = _out_of_int64(data, integers)
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> "Model":
        for rule in type(self).rules:
            rule.enforce(self)
        for field in NAMED_LISTS:
            _check_unique_names(self, field)
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        json_schema = handler(schema)
        if cls.rules:
            # extend, never replace: a rule written by hand elsewhere stays visible (and fails the parity test)
            handler.resolve_ref_schema(json_schema).setdefault("x-kubernetes-validations", []).extend(r.cel_rule() for r in cls.rules)
        return json_schema

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SecretKeyRef(Model):
    """A key of a Secret in the resource's namespace. Secrets are only ever referenced, never copied."""

    name: Name = Field(description="Name of the Secret.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="Key inside the Secret whose value is used."
    )


class VolumeLocation(Model):
    """A directory on a PersistentVolumeClaim."""

    claimName: Name = Field(description="Name of the PersistentVolumeClaim, mounted into the pods.")
    path: ShortText = Field(default="", description="Directory inside the volume (relative).")


class Location(Model):
    """Where data lives: a directory on a volume claim, an object-store URI, or a plain path.

    Exactly one of volume, uri or path.
    """

    rules = (exactly_one("volume", "uri", "path", message="exactly one of volume, uri or path must be set"),)

    volume: Optional[VolumeLocation] = Field(default=None, description="A directory on a volume claim.")
    uri: Optional[Annotated[str, Field(max_length=1024, pattern=r"^[a-z0-9+.-]+://.+")]] = Field(
        default=None, description="An fsspec URI such as s3://bucket/prefix (credentials by secret reference)."
    )
    path: Optional[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default=None, description="A path inside the pod (e.g. a hostPath or image path) or on a laptop."
    )
    credentialsSecretRef: Optional[Name] = Field(
        default=None,
        description="Secret whose keys become environment variables of the pod (e.g. AWS_ACCESS_KEY_ID) for uri access.",
    )


class Toleration(Model):
    """Shaped like a core/v1 Toleration, with the rules Kubernetes applies to one."""

    rules = (
        Rule("has(self.key) || (has(self.operator) && self.operator == 'Exists')", "operator must be Exists when key is empty",
             lambda t: t.key is not None or t.operator == "Exists", field=".operator"),
        Rule("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
             "value must be empty when operator is Exists", lambda t: t.operator != "Exists" or not t.value, field=".value"),
        Rule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
             "effect must be NoExecute when tolerationSeconds is set",
             lambda t: t.tolerationSeconds is None or t.effect == "NoExecute", field=".effect"),
    )

    key: Optional[LabelKey] = Field(default=None, description="Taint key the toleration applies to.")
    operator: Optional[Literal["Exists", "Equal"]] = Field(default=None, description="Exists or Equal (default: Equal).")
    value: Optional[LabelValue] = Field(default=None, description="Taint value for Equal.")
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(
        default=None, description="Taint effect to tolerate; empty means all."
    )
    tolerationSeconds: Optional[int] = Field(default=None, ge=0, description="For NoExecute: how long to stay.")


class NodeSelectorEntry(Model):
    key: LabelKey = Field(description="Node label key.")
    value: LabelValue = Field(description="Node label value.")


# --- pod settings: what the operator adds to a pod is reserved, the rest is the user's ---------------

# Environment variables the operator sets on workload pods (contract.Env and the rendezvous of torchrun):
# a user's value would break the contract between the operator and the workload. HOME, HF_HOME and
# PYTHONUNBUFFERED are set too, but only as defaults that a user's env replaces (e.g. HF_HOME on a cache claim).
RESERVED_ENV_PREFIXES = ("REASONOPS_", "PET_")
RESERVED_ENV_NAMES = ("HF_TOKEN", "MASTER_ADDR", "MASTER_PORT", "NNODES", "NPROC_PER_NODE", "NODE_RANK", "WORLD_SIZE",
                      "VLLM_NO_USAGE_STATS")
# The operator's own volumes of a workload pod and where they are mounted (contract: RESOURCE_FILE's directory
# and VOLUME_ROOT, under which pvc://CLAIM is mounted as volume pvc-CLAIM).
RESERVED_VOLUME_NAMES = ("tmp", "shm", "resource")
RESERVED_VOLUME_PREFIX = "pvc-"
RESERVED_MOUNT_PATHS = ("/tmp", "/dev/shm", "/etc/reasonops", "/mnt/pvc")


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _env_name_free(name: str) -> bool:
    return name not in RESERVED_ENV_NAMES and not name.startswith(RESERVED_ENV_PREFIXES)


def _mount_path_free(path: str) -> bool:
    """Neither one of the operator's mount paths, nor inside one, nor a directory that holds one."""
    return not any(path == p or path.startswith(p + "/") or p.startswith(path + "/") for p in RESERVED_MOUNT_PATHS)


_ENV_PREFIXES_CEL = " || ".join(f"self.startsWith('{p}')" for p in RESERVED_ENV_PREFIXES)
EnvName = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"),
    Rule(f"!(self in {_cel_list(RESERVED_ENV_NAMES)} || {_ENV_PREFIXES_CEL})",
         "is set by the operator: names starting with " + " or ".join(RESERVED_ENV_PREFIXES) + " and "
         + ", ".join(RESERVED_ENV_NAMES) + " are reserved (HF_TOKEN comes from spec.hubTokenSecretRef)",
         _env_name_free),
]
VolumeName = Annotated[
    Name,
    Rule(f"!(self in {_cel_list(RESERVED_VOLUME_NAMES)} || self.startsWith('{RESERVED_VOLUME_PREFIX}'))",
         "is the name of one of the operator's volumes: " + ", ".join(RESERVED_VOLUME_NAMES)
         + f" and names starting with {RESERVED_VOLUME_PREFIX} are reserved",
         lambda name: name not in RESERVED_VOLUME_NAMES and not name.startswith(RESERVED_VOLUME_PREFIX)),
]
_MOUNT_CEL = " && ".join(f"!(self == '{p}' || self.startsWith('{p}/') || '{p}'.startsWith(self + '/'))"
                         for p in RESERVED_MOUNT_PATHS)
MountPath = Annotated[
    str, Field(min_length=2, max_length=1024, pattern=r"^/[^:]*[^/:]$"),
    Rule(r"!self.matches('(^|/)[.][.](/|$)')", "must not contain '..'", lambda p: re.search(r"(^|/)\.\.(/|$)", p) is None),
    Rule(_MOUNT_CEL, "must not be, be inside or hold one of the operator's mounts: " + ", ".join(RESERVED_MOUNT_PATHS),
         _mount_path_free),
]
Quantity = Annotated[str, Field(max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|m)?$")]


class ConfigMapKeyRef(Model):
    """A key of a ConfigMap in the resource's namespace."""

    name: Name = Field(description="Name of the ConfigMap.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="Key inside the ConfigMap whose value is used."
    )


class EnvSource(Model):
    """Where an environment variable's value comes from: a key of a Secret or of a ConfigMap."""

    rules = (exactly_one("secretKeyRef", "configMapKeyRef", message="exactly one of secretKeyRef or configMapKeyRef must be set"),)

    secretKeyRef: Optional[SecretKeyRef] = Field(default=None, description="A key of a Secret (the value is never copied).")
    configMapKeyRef: Optional[ConfigMapKeyRef] = Field(default=None, description="A key of a ConfigMap.")


class EnvVar(Model):
    """An environment variable of the workload container: a value, or a reference to a Secret or ConfigMap key."""

    rules = (exactly_one("value", "valueFrom", message="exactly one of value or valueFrom must be set"),)

    name: EnvName = Field(description="Variable name; the operator's own (REASONOPS_*, PET_*, the torchrun rendezvous, HF_TOKEN) are reserved.")
    value: Optional[Annotated[str, Field(max_length=32768)]] = Field(default=None, description="The value.")
    valueFrom: Optional[EnvSource] = Field(default=None, description="The value from a Secret or ConfigMap key.")


class EmptyDirVolume(Model):
    """A scratch directory that lives as long as the pod."""

    medium: Optional[Literal["Memory"]] = Field(default=None, description="Memory for a tmpfs (counts against the pod's memory); unset: the node's disk.")
    sizeLimit: Optional[Quantity] = Field(default=None, description="Most the directory may hold, e.g. \"10Gi\".")


class ClaimVolume(Model):
    """A PersistentVolumeClaim in the resource's namespace."""

    claimName: Name = Field(description="Name of the PersistentVolumeClaim.")
    readOnly: Optional[bool] = Field(default=None, description="Mount the claim read-only.")


class SecretVolume(Model):
    """The keys of a Secret as files."""

    secretName: Name = Field(description="Name of the Secret.")


class ConfigMapVolume(Model):
    """The keys of a ConfigMap as files."""

    name: Name = Field(description="Name of the ConfigMap.")


class Volume(Model):
    """An extra volume of the workload pods: exactly one of emptyDir, persistentVolumeClaim, secret or configMap."""

    rules = (exactly_one("emptyDir", "persistentVolumeClaim", "secret", "configMap",
                         message="exactly one of emptyDir, persistentVolumeClaim, secret or configMap must be set"),)

    name: VolumeName = Field(description="Volume name, referenced by volumeMounts; tmp, shm, resource and pvc-* are the operator's.")
    emptyDir: Optional[EmptyDirVolume] = Field(default=None, description="A scratch directory.")
    persistentVolumeClaim: Optional[ClaimVolume] = Field(default=None, description="A volume claim.")
    secret: Optional[SecretVolume] = Field(default=None, description="A Secret's keys as files.")
    configMap: Optional[ConfigMapVolume] = Field(default=None, description="A ConfigMap's keys as files.")


class VolumeMount(Model):
    """Where an extra volume appears in the workload container."""

    name: VolumeName = Field(description="Name of one of the volumes beside this list (volumes).")
    mountPath: MountPath = Field(
        description="Absolute path in the container; not over the operator's mounts (" + ", ".join(RESERVED_MOUNT_PATHS) + ")."
    )
    subPath: Optional[Annotated[str, Field(max_length=1024, pattern=r"^[^/]")]] = Field(
        default=None, description="A path inside the volume to mount instead of its root (relative)."
    )
    readOnly: Optional[bool] = Field(default=None, description="Mount read-only.")


class ExtendedResource(Model):
    """A device plugin's resource requested (and limited) per pod, e.g. rdma/hca: 1."""

    rules = (Rule("!(self.name in ['cpu', 'memory', 'nvidia.com/gpu', 'ephemeral-storage'])",
                  "cpu, memory and GPUs are set by cpu, memory and gpus; ephemeral-storage is not an extended resource",
                  lambda r: r.name not in ("cpu", "memory", "nvidia.com/gpu", "ephemeral-storage"), field=".name"),)

    name: LabelKey = Field(description="Resource name, e.g. rdma/hca or example.com/fpga.")
    quantity: int = Field(ge=1, le=1024, description="How many per pod (request and limit).")


class LabelSelector(Model):
    """Pods with all of these labels."""

    matchLabels: Labels = Field(description="Labels the pods counted must all have.")


class TopologySpreadConstraint(Model):
    """Shaped like a core/v1 TopologySpreadConstraint: how evenly the pods spread over a topology domain."""

    maxSkew: int = Field(ge=1, le=1024, description="Most the pod counts of two domains may differ by.")
    topologyKey: LabelKey = Field(description="Node label whose values are the domains, e.g. topology.kubernetes.io/zone.")
    whenUnsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(description="DoNotSchedule or ScheduleAnyway.")
    labelSelector: Optional[LabelSelector] = Field(
        default=None, description="Pods counted (default: the pods of this workload: its reasonops.io component and resource labels)."
    )
    minDomains: Optional[int] = Field(default=None, ge=1, le=1024, description="Domains counted at least (DoNotSchedule only).")


CpuQuantity = Annotated[str, Field(max_length=16, pattern=r"^[0-9]+(\.[0-9]+)?m?$")]


def cpu_millicores(quantity: str) -> fractions.Fraction:
    """A CPU quantity of the `cpu` fields' form ("2", "1.5", "500m") in millicores, exactly."""
    return fractions.Fraction(quantity[:-1]) if quantity.endswith("m") else fractions.Fraction(quantity) * 1000


class Resources(Model):
    """Compute and pod settings of the workload pods."""

    rules = (
        Rule("!has(self.cpu) || !has(self.cpuLimit) || quantity(self.cpuLimit).compareTo(quantity(self.cpu)) >= 0",
             "cpuLimit must not be below cpu",
             lambda r: r.cpu is None or r.cpuLimit is None or cpu_millicores(r.cpuLimit) >= cpu_millicores(r.cpu),
             field=".cpuLimit"),
        Rule("!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && self.volumes.exists(v, v.name == m.name))",
             "every volume mount must name a volume of volumes",
             lambda r: all(any(v.name == m.name for v in r.volumes or []) for m in r.volumeMounts or []), field=".volumeMounts"),
        Rule("!has(self.volumeMounts) || self.volumeMounts.all(m, self.volumeMounts.exists_one(n, n.mountPath == m.mountPath))",
             "two volume mounts have the same mountPath",
             lambda r: len({m.mountPath for m in r.volumeMounts or []}) == len(r.volumeMounts or []), field=".volumeMounts"),
    )

    gpus: Optional[int] = Field(default=None, ge=0, le=16, description="GPUs per pod (nvidia.com/gpu).")
    cpu: Optional[CpuQuantity] = Field(
        default=None, description="CPU request per pod, e.g. \"8\" or \"500m\"; also its limit unless cpuLimit says otherwise."
    )
    cpuLimit: Optional[CpuQuantity] = Field(
        default=None, description="CPU limit per pod when it should be above cpu: the pod may use a node's idle cores up to it"
                                  " (Burstable QoS) instead of being throttled at its request. Unset: the limit is cpu.",
    )
    memory: Optional[Annotated[str, Field(max_length=16, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")]] = Field(
        default=None, description="Memory request and limit per pod, e.g. \"64Gi\"."
    )
    sharedMemory: Optional[Annotated[str, Field(max_length=16, pattern=r"^[0-9]+([KMGT]i?)?$")]] = Field(
        default=None, description="Size limit of /dev/shm, a memory-backed emptyDir that counts against the pod's memory"
                                  " (NCCL and data loaders need a large one); unset: no limit but the pod's memory."
    )
    extendedResources: Optional[list[ExtendedResource]] = Field(
        default=None, max_length=16, description="Device plugins' resources per pod, e.g. RDMA devices (rdma/hca: 1)."
    )
    nodeSelector: Optional[list[NodeSelectorEntry]] = Field(
        default=None, max_length=16, description="Node labels the pods must match."
    )
    tolerations: Optional[list[Toleration]] = Field(default=None, max_length=16, description="Taints the pods tolerate.")
    affinity: Optional[dict[str, Any]] = Field(
        default=None, description="A core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity), given to the pods as"
                                  " written; the API server checks it when the operator creates them."
    )
    topologySpreadConstraints: Optional[list[TopologySpreadConstraint]] = Field(
        default=None, max_length=8, description="How the pods spread over zones, racks or nodes."
    )
    image: Optional[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        default=None, description="Overrides the workload image configured in the operator."
    )
    imagePullSecrets: Optional[list[Name]] = Field(
        default=None, max_length=8, description="Names of Secrets (kubernetes.io/dockerconfigjson) to pull the image with."
    )
    priorityClassName: Optional[Name] = Field(default=None, description="PriorityClass of the pods.")
    terminationGracePeriodSeconds: Optional[int] = Field(
        default=None, ge=0, le=86400,
        description="Seconds a pod has after SIGTERM (preemption, drain) before it is killed (unset: Kubernetes' 30).",
    )
    env: Optional[list[EnvVar]] = Field(default=None, max_length=64, description="Extra environment variables of the workload container.")
    volumes: Optional[list[Volume]] = Field(default=None, max_length=16, description="Extra volumes of the pods.")
    volumeMounts: Optional[list[VolumeMount]] = Field(
        default=None, max_length=16, description="Where the extra volumes appear in the workload container."
    )
    podAnnotations: Optional[Annotations] = Field(
        default=None, description="Annotations added to the workload pods (e.g. sidecar or scrape settings)."
    )
    podLabels: Optional[Labels] = Field(
        default=None, description="Labels added to the workload pods."
    )


TRAINING_SHARED_MEMORY = "16Gi"
TRAINING_GRACE_SECONDS = 600


class TrainingResources(Resources):
    """Compute and pod settings of the training pods: the same fields, with defaults for distributed training."""

    sharedMemory: Optional[Annotated[str, Field(max_length=16, pattern=r"^[0-9]+([KMGT]i?)?$")]] = defaulted(
        TRAINING_SHARED_MEMORY,
        "Size limit of /dev/shm, a memory-backed emptyDir that counts against the pod's memory: NCCL's shared-memory"
        " transport between the GPUs of a node and the data loader workers' batches live there.",
    )
    terminationGracePeriodSeconds: Optional[int] = defaulted(
        TRAINING_GRACE_SECONDS,
        "Seconds a pod has after SIGTERM (preemption, drain) to finish its step and write a checkpoint before it is"
        " killed; size it by docs/preemption.md.", ge=0, le=86400,
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
