"""kopf handlers: watch the three kinds and their children, reconcile level-based.

Every watch event of a resource, or of one of its Jobs, pods or Deployments, reconciles that resource
from in-memory indexes (no extra API reads): gather what was observed (`Observed`) → the kind's pure
decision in `decide.py` → apply the plan. This module decides nothing itself. Reconciles of one resource
are serialised by a lock; a periodic resync catches anything missed.
No change-detection handlers are used, so kopf writes no annotations or finalizers on user objects
(Argo CD sees no drift) and the operator never writes to spec.

What keeps a reconcile cheap (at a thousand resources the watch events outnumber the resources 4:1):
- a validated spec is kept per resource and generation, so status and child events skip pydantic;
- a status patch's answer is the freshest copy of the object until the watch delivers it, so a child
  event in between neither recomputes from the stale copy nor patches the same status again; and the
  watch event of the operator's own status patch reconciles nothing (only the dependents);
- index handlers are coroutines (kopf runs plain functions in a thread pool) and API calls go through
  one aiohttp session (`AsyncKube`);
- kopf keeps no diff base (it would deep-copy every object on every event for change detection).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Optional, Union

import kopf
from pydantic import ValidationError

from .. import contract
from ..api import common
from ..api.v1alpha1 import KINDS, Resource
from ..kube import AsyncKube
from . import metrics
from .builders import child_name
from .decide import DECIDERS, Observed, decide_invalid, resolution_of
from .labels import (
    ANNOTATION_APPLIED_AT,
    ANNOTATION_MODEL_REVISION,
    ANNOTATION_SPEC_HASH,
    COMPONENT_SANDBOX,
    COMPONENT_SERVER,
    LABEL_COMPONENT,
    LABEL_JOB,
    LABEL_KIND,
    LABEL_NAME,
    LABEL_REVISION,
    MANAGED,
    QUEUE_LABEL,
    component_selector,
    name_label,
    revision_selector,
    selector_string,
)
from .policy import (
    POD_CREATION_GRACE,
    JobState,
    KueueWorkload,
    Plan,
    PodState,
    ServerState,
    creation_failure,
    kueue_waiting,
    needs_creation_check,
    updated_available,
)
from .settings import Settings

log = logging.getLogger("reasonops.operator")
GROUP, VERSION = common.GROUP, common.VERSION
INDEX_OF_KIND = {"ReasoningDataset": "dataset_index", "FineTuneJob": "finetune_index", "EvalRun": "eval_index"}
RESYNC_SECONDS = float(os.environ.get("REASONOPS_RESYNC_SECONDS", "60"))
# Kueue's Workloads (one per queued Job): why a queued Job waits. Without Kueue nothing is watched.
KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"


Key = tuple[str, str, str]  # (kind, namespace, name) of a resource


@dataclass(frozen=True)
class _Parsed:
    """A resource's validated spec for one generation (or why it is invalid)."""

    uid: str
    generation: Optional[int]
    model: Union[Resource, ValidationError]  # as written
    defaulted: Optional[Resource]  # with every default filled in (contract.with_defaults)
    spec: dict[str, Any]  # the spec on the wire (to_wire), input of the revision hash


@dataclass(frozen=True)
class _Written:
    """The object as the operator's last status patch returned it, until the watch delivers that version."""

    seen: str  # resourceVersion of the copy the reconcile started from
    body: dict[str, Any]


class _State:
    settings: Settings = Settings()
    kube: Optional[AsyncKube] = None
    locks: dict[Key, asyncio.Lock] = {}
    parsed: dict[Key, _Parsed] = {}
    written: dict[Key, _Written] = {}
    indexes: dict[str, Any] = {}
    resync_task: Optional[asyncio.Task] = None
    requeued: set[Key] = set()
    job_owners: dict[tuple[str, str], tuple[str, str]] = {}  # (namespace, Job) -> (kind, name) of its resource


STATE = _State()


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# --- startup ----------------------------------------------------------------------------------


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    STATE.settings = Settings.from_env()
    STATE.kube = AsyncKube(os.environ.get("REASONOPS_KUBECONFIG"), pool_size=32)
    logging.getLogger().setLevel(os.environ.get("REASONOPS_LOG_LEVEL", "INFO").upper())  # kopf resets it to INFO
    # kopf logs every handler call at INFO; at a thousand objects that is most of the operator's work.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLogger().level))
    settings.posting.level = logging.WARNING  # handler log lines are not events; transitions are
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = _NoDiffBase()
    settings.watching.server_timeout = int(os.environ.get("REASONOPS_WATCH_TIMEOUT", "300"))
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.networking.connect_timeout = 10
    # kopf keeps a worker task (a stack of coroutines and a queue) per object for this long after its last
    # event. The default, 5 s, kept every object of a burst alive at once (about 25 MiB of the peak at a
    # thousand resources); a resource's events arrive well within a second of each other.
    settings.batching.idle_timeout = 1.0
    if os.environ.get("REASONOPS_METRICS", "1") != "0":
        try:
            metrics.serve(STATE.settings.metrics_port)
        except OSError as exc:  # a second operator in the same process (tests): metrics already served
            log.warning("metrics endpoint not started: %s", exc)
    STATE.resync_task = asyncio.create_task(_resync_forever())
    _tune_gc()


def _tune_gc() -> None:
    """Collect cyclic garbage less eagerly than Python's default (every 700 net allocations).

    Watch events allocate many short-lived containers, and each full collection traverses every live
    object; at a thousand resources the collector took about half of the operator's CPU time. The objects
    of the imported modules never become garbage: frozen, no collection looks at them again. Reference
    counting still frees all non-cyclic garbage at once.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if STATE.resync_task:
        STATE.resync_task.cancel()
    if STATE.kube:
        await STATE.kube.close()


class _NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: only change-detection handlers use one, and this operator has none.

    kopf builds the essence of every object on every watch event (a deep copy) whatever the handlers are;
    at scale that copy was the largest single cost in the operator. Nothing is ever stored on objects.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> Optional[kopf.BodyEssence]:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


# --- indexes: what exists, kept current by the watches --------------------------------------------


# Index handlers are coroutines: kopf hands plain functions to a thread pool, which costs more than they do.


def _snapshot(body: Any) -> dict[str, Any]:
    """A plain view of what reconciling needs (managedFields, often the largest part, is left out).

    Shallow: every watch event brings freshly decoded objects, and nothing here modifies them.
    """
    return {**dict(body), "metadata": {key: value for key, value in body["metadata"].items() if key != "managedFields"}}


@kopf.index(GROUP, VERSION, "reasoningdatasets")
async def dataset_index(namespace: str, name: str, body: Any, **_: Any) -> dict:
    return {(namespace, name): _snapshot(body)}


@kopf.index(GROUP, VERSION, "finetunejobs")
async def finetune_index(namespace: str, name: str, body: Any, **_: Any) -> dict:
    return {(namespace, name): _snapshot(body)}


@kopf.index(GROUP, VERSION, "evalruns")
async def eval_index(namespace: str, name: str, body: Any, **_: Any) -> dict:
    return {(namespace, name): _snapshot(body)}


def _job_state(body: Any) -> JobState:
    spec, status, meta = body.get("spec", {}), body.get("status", {}) or {}, body["metadata"]
    conds = {x.get("type"): x for x in status.get("conditions") or [] if x.get("status") == "True"}
    failed = conds.get("Failed")
    return JobState(
        name=meta["name"],
        revision=(meta.get("labels") or {}).get(LABEL_REVISION, ""),
        suspended=bool(spec.get("suspend")),
        active=status.get("active", 0) or 0,
        ready=status.get("ready", 0) or 0,
        succeeded=status.get("succeeded", 0) or 0,
        failed=status.get("failed", 0) or 0,
        complete="Complete" in conds,
        failed_reason=(failed.get("reason") or "Failed") if failed else None,
        failed_message=failed.get("message") if failed else None,
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        queued=QUEUE_LABEL in (meta.get("labels") or {}),
        created=meta.get("creationTimestamp"),
        uid=meta.get("uid", ""),
        parallelism=spec.get("parallelism"),
    )


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def job_index(namespace: str, labels: dict, body: Any, **_: Any) -> dict:
    STATE.job_owners[(namespace, body["metadata"]["name"])] = (labels.get(LABEL_KIND), labels.get(LABEL_NAME))
    return {(namespace, labels.get(LABEL_KIND), labels.get(LABEL_NAME)): _job_state(body)}


def _pod_state(body: Any) -> PodState:
    status = body.get("status") or {}
    exit_code = reason = message = waiting = finished = None
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        term = state.get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term:
            exit_code, reason, message = term.get("exitCode"), term.get("reason"), term.get("message")
            finished = term.get("finishedAt") or finished
        if state.get("waiting"):
            waiting = state["waiting"].get("reason")
            message = message or state["waiting"].get("message")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and not waiting:
            waiting, message = cond.get("reason") or "Unschedulable", cond.get("message")
    labels = body["metadata"].get("labels") or {}
    return PodState(
        name=body["metadata"]["name"], job=labels.get(LABEL_JOB, ""), phase=status.get("phase", "Pending"),
        exit_code=exit_code, reason=reason, message=message, waiting_reason=waiting,
        server=labels.get(LABEL_COMPONENT) == COMPONENT_SERVER,
        created=body["metadata"].get("creationTimestamp"), finished=finished,
        deleting=bool(body["metadata"].get("deletionTimestamp")),
    )


@kopf.index("", "v1", "pods", labels=MANAGED)
async def pod_index(namespace: str, labels: dict, body: Any, **_: Any) -> dict:
    if LABEL_JOB not in labels and labels.get(LABEL_COMPONENT) != COMPONENT_SERVER:
        return {}
    return {(namespace, labels.get(LABEL_KIND), labels.get(LABEL_NAME)): _pod_state(body)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def deployment_index(namespace: str, labels: dict, body: Any, **_: Any) -> dict:
    status, meta = body.get("status") or {}, body["metadata"]
    annotations = meta.get("annotations") or {}
    failure = next((x for x in status.get("conditions") or [] if x.get("type") == "ReplicaFailure" and x.get("status") == "True"), None)
    return {
        (namespace, labels.get(LABEL_NAME), labels.get(LABEL_COMPONENT)): ServerState(
            name=meta["name"],
            spec_hash=annotations.get(ANNOTATION_SPEC_HASH),
            applied_at=annotations.get(ANNOTATION_APPLIED_AT),
            model_revision=annotations.get(ANNOTATION_MODEL_REVISION),
            current=status.get("observedGeneration") == meta.get("generation"),
            updated_available=updated_available(status),
            failure=(failure.get("reason") or "ReplicaFailure", failure.get("message") or "") if failure else None,
        )
    }


def _owner_job(body: Any) -> Optional[str]:
    return next((x["name"] for x in body["metadata"].get("ownerReferences") or []
                 if x.get("kind") == "Job" and x.get("apiVersion") == "batch/v1"), None)


@kopf.index(KUEUE_GROUP, KUEUE_VERSION, "workloads")
async def workload_index(namespace: str, body: Any, **_: Any) -> dict:
    job = _owner_job(body)
    if job is None:
        return {}
    return {(namespace, job): KueueWorkload(
        name=body["metadata"]["name"], active=(body.get("spec") or {}).get("active", True) is not False,
        waiting=kueue_waiting((body.get("status") or {}).get("conditions") or []))}


# --- event handlers: everything funnels into reconcile() -----------------------------------------


def _remember(kwargs: dict[str, Any]) -> dict[str, Any]:
    for key in ("dataset_index", "finetune_index", "eval_index", "job_index", "pod_index", "deployment_index", "workload_index"):
        STATE.indexes[key] = kwargs[key]
    return STATE.indexes


def _forget(key: Key) -> None:
    """Drop what is kept about a deleted resource."""
    STATE.parsed.pop(key, None)
    STATE.written.pop(key, None)


@kopf.on.event(GROUP, VERSION, "reasoningdatasets")
@kopf.on.event(GROUP, VERSION, "finetunejobs")
@kopf.on.event(GROUP, VERSION, "evalruns")
async def on_resource(event: dict, body: Any, namespace: str, name: str, **kwargs: Any) -> None:
    if event.get("type") == "DELETED":
        _forget((body["kind"], namespace, name))
    else:
        await reconcile(body["kind"], namespace, name, _remember(kwargs))


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("", "v1", "pods", labels=MANAGED)
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def on_child(namespace: str, labels: dict, **kwargs: Any) -> None:
    kind, name = labels.get(LABEL_KIND), labels.get(LABEL_NAME)
    if kind in INDEX_OF_KIND and name:
        await reconcile(kind, namespace, name, _remember(kwargs))
    if kwargs["event"].get("type") == "DELETED" and kwargs["body"].get("kind") == "Job":
        STATE.job_owners.pop((namespace, kwargs["body"]["metadata"]["name"]), None)


@kopf.on.event(KUEUE_GROUP, KUEUE_VERSION, "workloads")
async def on_workload(namespace: str, body: Any, **kwargs: Any) -> None:
    """Kueue admitted, queued or preempted a Job: its resource says so."""
    owner = STATE.job_owners.get((namespace, _owner_job(body) or ""))
    if owner is not None and owner[0] in INDEX_OF_KIND and owner[1]:
        await reconcile(owner[0], namespace, owner[1], _remember(kwargs))


async def _resync_forever() -> None:
    """Reconcile everything now and then: a safety net for failed applies and missed events."""
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        indexes = STATE.indexes
        if not indexes:
            continue
        counts: Counter = Counter()
        for kind, key in INDEX_OF_KIND.items():
            for (ns, name), store in list(indexes[key].items()):
                for body in store:
                    counts[(kind, (body.get("status") or {}).get("phase") or "Unknown")] += 1
                try:
                    await reconcile(kind, ns, name, indexes, cascade=False)
                except Exception:  # logged in reconcile; keep resyncing the others
                    pass
        metrics.set_phase_counts(dict(counts))


# --- reconcile -----------------------------------------------------------------------------------


def _one(index: Any, key: Any) -> Optional[dict[str, Any]]:
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def _all(index: Any, key: Any) -> list[Any]:
    store = index.get(key)
    return list(store) if store is not None else []


def _freshest(key: Key, indexed: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The newest known copy of a resource, and whether it is exactly what the operator last wrote.

    Until the watch delivers the operator's own status patch, the index holds the copy that reconcile
    started from, and the patch's answer is newer. Once the index has moved on, it is the truth again.
    """
    written = STATE.written.get(key)
    if written is None:
        return indexed, False
    version = indexed["metadata"].get("resourceVersion")
    if version == written.seen:
        return written.body, False
    del STATE.written[key]
    return indexed, version == written.body["metadata"].get("resourceVersion")


async def reconcile(kind: str, namespace: str, name: str, indexes: dict[str, Any], cascade: bool = True) -> None:
    key = (kind, namespace, name)
    lock = STATE.locks.setdefault(key, asyncio.Lock())
    async with lock:
        indexed = _one(indexes[INDEX_OF_KIND[kind]], (namespace, name))
        if indexed is None or indexed["metadata"].get("deletionTimestamp"):
            STATE.locks.pop(key, None)
            return
        body, own_write = _freshest(key, indexed)
        # The watch event of the operator's own status patch: that reconcile saw everything this one would
        # (child events since then reconciled from the patch's answer), so only the dependents follow.
        if not own_write:
            started = time.perf_counter()
            metrics.RECONCILES.labels(kind=kind).inc()
            try:
                await reconcile_resource(kind, body, indexes)
            except Exception as exc:
                metrics.ERRORS.labels(kind=kind).inc()
                log.exception("reconcile of %s %s/%s failed: %s", kind, namespace, name, exc)
                raise
            finally:
                metrics.LATENCY.labels(kind=kind).observe(time.perf_counter() - started)
    if not cascade:
        return
    # Dependents follow: datasets feed fine-tunes, fine-tunes feed evaluations.
    if kind == "ReasoningDataset":
        for (ns, finetune), store in list(indexes["finetune_index"].items()):
            if ns == namespace and any(((x.get("spec") or {}).get("datasetRef") or {}).get("name") == name for x in store):
                await reconcile("FineTuneJob", ns, finetune, indexes)
    elif kind == "FineTuneJob":
        for (ns, evaluation), store in list(indexes["eval_index"].items()):
            if ns == namespace and any(((x.get("spec") or {}).get("model") or {}).get("fineTuneJob") == name for x in store):
                await reconcile("EvalRun", ns, evaluation, indexes)
    elif kind == "EvalRun":  # datasets whose samplers use this EvalRun's server, evaluations of its selection
        for (ns, dataset), store in list(indexes["dataset_index"].items()):
            if ns == namespace and any(name in contract.sampler_eval_runs(x.get("spec") or {}) for x in store):
                await reconcile("ReasoningDataset", ns, dataset, indexes)
        for (ns, evaluation), store in list(indexes["eval_index"].items()):
            if ns == namespace and evaluation != name and any(((x.get("spec") or {}).get("model") or {}).get("evalRun") == name for x in store):
                await reconcile("EvalRun", ns, evaluation, indexes, cascade=False)
            elif ns == namespace and evaluation != name and any(  # relative gates waiting for this baseline
                    any(g.get("baseline") == name for g in (x.get("spec") or {}).get("gates") or []) for x in store):
                await reconcile("EvalRun", ns, evaluation, indexes, cascade=False)


def _requeue(kind: str, namespace: str, name: str, delay: float) -> None:
    """Reconcile again after `delay` seconds (once per resource): for what no watch event will announce."""
    key = (kind, namespace, name)
    if key in STATE.requeued:
        return
    STATE.requeued.add(key)

    async def later() -> None:
        await asyncio.sleep(delay)
        STATE.requeued.discard(key)
        if STATE.indexes:
            await reconcile(kind, namespace, name, STATE.indexes, cascade=False)

    asyncio.get_running_loop().create_task(later())


def _parse(kind: str, body: dict[str, Any]) -> _Parsed:
    """Validate what the user wrote; status is the operator's and its pods', never rejected.

    The model (as written and with its defaults filled in) and its spec on the wire are kept per resource
    until its generation changes: status, label and child events revalidate nothing. The model's metadata
    is therefore that of the validated generation; the decisions read only its name and namespace (labels
    and annotations come from the current body).
    """
    meta = body["metadata"]
    key = (kind, meta["namespace"], meta["name"])
    uid, generation = meta.get("uid", ""), meta.get("generation")
    parsed = STATE.parsed.get(key)
    if parsed is None or (parsed.uid, parsed.generation) != (uid, generation):
        try:
            valid = KINDS[kind].model_validate({**body, "status": None})
            parsed = _Parsed(uid, generation, valid, contract.with_defaults(valid), valid.spec.to_wire())  # type: ignore[attr-defined]
        except ValidationError as exc:
            parsed = _Parsed(uid, generation, exc.with_traceback(None), None, {})
        STATE.parsed[key] = parsed
    return parsed


# --- gather ----------------------------------------------------------------------------------------


async def _creation_problem(kind: str, body: dict[str, Any], job_name: str, jobs: list[JobState],
                            pods: list[PodState], now: str) -> Optional[tuple[str, str]]:
    """Kubernetes' reason when the current Job has no pod because the API refused to create it (Pod
    Security, quota, an invalid label: FailedCreate events), asking only after a grace period; and a
    reconcile is scheduled so the answer shows within seconds even when no watch event arrives."""
    job = next((j for j in jobs if j.name == job_name), None)
    if job is None or job.suspended or job.complete or job.failed_reason or any(x.job == job_name for x in pods):
        return None
    meta = body["metadata"]
    if not needs_creation_check(job, pods, now):
        _requeue(kind, meta["namespace"], meta["name"], POD_CREATION_GRACE + 1)
        return None
    kube = STATE.kube
    assert kube is not None
    try:
        events = await kube.list_events(meta["namespace"], f"involvedObject.uid={job.uid}")
    except Exception as exc:  # the check is a diagnosis: never let it stop the reconcile
        log.warning("could not read the events of Job %s: %s", job_name, exc)
        return None
    _requeue(kind, meta["namespace"], meta["name"], 10)
    return creation_failure(events)


async def gather(kind: str, body: dict[str, Any], parsed: _Parsed, indexes: dict[str, Any]) -> Observed:
    """What a decision needs, from the indexes (and a Job's events when its pods may be refused)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    resource = parsed.model
    assert isinstance(resource, Resource) and parsed.defaulted is not None

    def lookup(other_kind: str, other_name: str) -> Optional[dict[str, Any]]:
        return _one(indexes[INDEX_OF_KIND[other_kind]], (namespace, other_name))

    resolution = resolution_of(body, resource, parsed.spec, lookup, STATE.settings)
    children = (namespace, kind, name)
    jobs, pods = _all(indexes["job_index"], children), _all(indexes["pod_index"], children)
    jobs = [replace(job, kueue=_one(indexes["workload_index"], (namespace, job.name))) if job.queued else job for job in jobs]
    now = now_iso()
    job_name = child_name(name, resolution.revision)
    return Observed(
        body=body, resource=parsed.defaulted, spec=parsed.spec, resolution=resolution, settings=STATE.settings, now=now,
        jobs=jobs, pods=pods,
        server=_one(indexes["deployment_index"], (namespace, name_label(name), COMPONENT_SERVER)) if kind == "EvalRun" else None,
        sandbox=_one(indexes["deployment_index"], (namespace, name_label(name), COMPONENT_SANDBOX)),
        creation_problem=await _creation_problem(kind, body, job_name, jobs, [x for x in pods if not x.server], now),
    )


async def reconcile_resource(kind: str, body: dict[str, Any], indexes: dict[str, Any]) -> None:
    """Gather what was observed, let the kind's pure function decide, apply its plan."""
    parsed = _parse(kind, body)
    if isinstance(parsed.model, ValidationError):
        await apply(body, kind, decide_invalid(body, parsed.model, now_iso()))
        return
    await apply(body, kind, DECIDERS[kind](await gather(kind, body, parsed, indexes)))


# --- apply -----------------------------------------------------------------------------------------

# What goes with a server's or sandbox's Deployment when it is removed (found by its component's labels).
COMPANIONS = {COMPONENT_SERVER: ("Service",), COMPONENT_SANDBOX: ("Service", "NetworkPolicy")}


async def apply(body: dict[str, Any], kind: str, plan: Plan) -> None:
    """Apply a plan: the server and sandbox, evictions, children, (un)suspended and resized Jobs, (de)activated
    Kueue Workloads, deleted revisions, the status (only what changed), events, metrics and a later look."""
    kube = STATE.kube
    assert kube is not None
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    for component, server in ((COMPONENT_SERVER, plan.server), (COMPONENT_SANDBOX, plan.sandbox)):
        for obj in server.apply:
            await kube.apply(obj)
        if server.delete:
            await kube.delete("Deployment", namespace, server.delete)
            for child_kind in COMPANIONS[component]:
                await kube.delete_by_labels(child_kind, namespace, selector_string(component_selector(kind, name, component)))
    for pod in plan.evict:
        await kube.evict(namespace, pod)
    for obj in plan.create:  # ConfigMap and Service before the Job that needs them
        if await kube.create(obj):
            metrics.CHILDREN_CREATED.labels(kind=obj["kind"]).inc()
    for job, suspend in plan.suspend_jobs.items():
        await kube.patch("Job", namespace, job, {"spec": {"suspend": suspend}})
    for workload, active in plan.activate_workloads.items():
        await kube.patch("Workload", namespace, workload, {"spec": {"active": active}}, api_version=f"{KUEUE_GROUP}/{KUEUE_VERSION}")
    for job, parallelism in plan.parallelism_jobs.items():
        await kube.patch("Job", namespace, job, {"spec": {"parallelism": parallelism}})
    for revision in plan.delete_revisions:
        for child_kind in ("Job", "ConfigMap", "Service"):
            await kube.delete_by_labels(child_kind, namespace, selector_string(revision_selector(kind, name, revision)))
    current = body.get("status") or {}
    diff = {key: value for key, value in plan.status.items() if current.get(key) != value}
    if diff:
        patched = await kube.patch_status(kind, namespace, name, diff)
        STATE.written[(kind, namespace, name)] = _Written(meta.get("resourceVersion", ""), _snapshot(patched))
    for type_, reason, message in plan.events:
        kopf.event(body, type=type_, reason=reason, message=message)
    if plan.loss is not None:
        metrics.TRAIN_LOSS.labels(namespace=namespace, finetunejob=name).set(plan.loss)
    for benchmark, score in plan.scores.items():
        metrics.EVAL_SCORE.labels(namespace=namespace, evalrun=name, benchmark=benchmark).set(score)
    if plan.requeue_after is not None:
        _requeue(kind, namespace, name, plan.requeue_after)
