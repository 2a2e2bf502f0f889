"""kopf handlers: watch the three kinds and their children, reconcile level-based.

Every watch event of a resource, or of one of its Jobs, pods or Deployments, reconciles that resource
from in-memory indexes (no extra API reads): gather what exists → `policy.plan_run` decides → apply the
plan. Reconciles of one resource are serialised by a lock; a periodic resync catches anything missed.
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
import contextlib
import datetime as dt
import gc
import logging
import os
import time
from collections import Counter as _Counter
from dataclasses import dataclass
from typing import Any, Optional, TypeVar, Union

import kopf
from pydantic import ValidationError

from .. import contract as k
from ..api import common as c
from ..gates import judge_gates, select_checkpoint
from ..api.v1alpha1 import EvalRun, FineTuneJob, ReasoningDataset, Resource
from ..kube import AsyncKube
from . import builders as b
from . import sandbox_builders as sb
from . import metrics
from . import policy as p
from .policy import JobState, PodState, Plan, plan_run, with_condition, condition
from .settings import Settings

log = logging.getLogger("reasonops.operator")
GROUP, VERSION = c.GROUP, c.VERSION
MANAGED = {b.LABEL_MANAGED_BY: b.MANAGED_BY}
RESYNC_SECONDS = float(os.environ.get("REASONOPS_RESYNC_SECONDS", "60"))


Key = tuple[str, str, str]  # (kind, namespace, name) of a resource
R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class _Parsed:
    """A resource's validated spec for one generation (or why it is invalid)."""

    uid: str
    generation: Optional[int]
    model: Union[Resource, ValidationError]
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
    return {**dict(body), "metadata": {k: v for k, v in body["metadata"].items() if k != "managedFields"}}


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
        revision=(meta.get("labels") or {}).get(b.LABEL_REVISION, ""),
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
        queued=b.QUEUE_LABEL in (meta.get("labels") or {}),
        created=meta.get("creationTimestamp"),
        uid=meta.get("uid", ""),
        parallelism=spec.get("parallelism"),
    )


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def job_index(namespace: str, labels: dict, body: Any, **_: Any) -> dict:
    return {(namespace, labels.get(b.LABEL_KIND), labels.get(b.LABEL_NAME)): _job_state(body)}


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
        name=body["metadata"]["name"], job=labels.get(b.LABEL_JOB, ""), phase=status.get("phase", "Pending"),
        exit_code=exit_code, reason=reason, message=message, waiting_reason=waiting,
        server=labels.get(b.LABEL_COMPONENT) == "server",
        created=body["metadata"].get("creationTimestamp"), finished=finished,
        deleting=bool(body["metadata"].get("deletionTimestamp")),
    )


@kopf.index("", "v1", "pods", labels=MANAGED)
async def pod_index(namespace: str, labels: dict, body: Any, **_: Any) -> dict:
    if b.LABEL_JOB not in labels and labels.get(b.LABEL_COMPONENT) != "server":
        return {}
    return {(namespace, labels.get(b.LABEL_KIND), labels.get(b.LABEL_NAME)): _pod_state(body)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def deployment_index(namespace: str, labels: dict, body: Any, **_: Any) -> dict:
    status, meta = body.get("status") or {}, body["metadata"]
    annotations = meta.get("annotations") or {}
    failure = next((x for x in status.get("conditions") or [] if x.get("type") == "ReplicaFailure" and x.get("status") == "True"), None)
    return {
        (namespace, labels.get(b.LABEL_NAME), labels.get(b.LABEL_COMPONENT)): p.ServerState(
            name=meta["name"],
            spec_hash=annotations.get(p.ANNOTATION_SPEC_HASH),
            applied_at=annotations.get(p.ANNOTATION_APPLIED_AT),
            model_revision=annotations.get(p.ANNOTATION_MODEL_REVISION),
            current=status.get("observedGeneration") == meta.get("generation"),
            updated_available=p.updated_available(status),
            failure=(failure.get("reason") or "ReplicaFailure", failure.get("message") or "") if failure else None,
        )
    }


# --- event handlers: everything funnels into reconcile() -----------------------------------------


def _remember(kwargs: dict[str, Any]) -> dict[str, Any]:
    for key in ("dataset_index", "finetune_index", "eval_index", "job_index", "pod_index", "deployment_index"):
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
    kind, name = labels.get(b.LABEL_KIND), labels.get(b.LABEL_NAME)
    if kind in ("ReasoningDataset", "FineTuneJob", "EvalRun") and name:
        await reconcile(kind, namespace, name, _remember(kwargs))


async def _resync_forever() -> None:
    """Reconcile everything now and then: a safety net for failed applies and missed events."""
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        indexes = STATE.indexes
        if not indexes:
            continue
        counts: _Counter = _Counter()
        for kind, key in (("ReasoningDataset", "dataset_index"), ("FineTuneJob", "finetune_index"), ("EvalRun", "eval_index")):
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
        indexed = _one(indexes[{"ReasoningDataset": "dataset_index", "FineTuneJob": "finetune_index", "EvalRun": "eval_index"}[kind]], (namespace, name))
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
                await RECONCILERS[kind](body, indexes)
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
        for (ns, ft_name), store in list(indexes["finetune_index"].items()):
            if ns == namespace and any(((x.get("spec") or {}).get("datasetRef") or {}).get("name") == name for x in store):
                await reconcile("FineTuneJob", ns, ft_name, indexes)
    elif kind == "FineTuneJob":
        for (ns, ev_name), store in list(indexes["eval_index"].items()):
            if ns == namespace and any(((x.get("spec") or {}).get("model") or {}).get("fineTuneJob") == name for x in store):
                await reconcile("EvalRun", ns, ev_name, indexes)
    elif kind == "EvalRun":  # datasets whose samplers use this EvalRun's server, evaluations of its selection
        for (ns, ds_name), store in list(indexes["dataset_index"].items()):
            if ns == namespace and any(name in _sampler_eval_runs(x.get("spec") or {}) for x in store):
                await reconcile("ReasoningDataset", ns, ds_name, indexes)
        for (ns, ev_name), store in list(indexes["eval_index"].items()):
            if ns == namespace and ev_name != name and any(((x.get("spec") or {}).get("model") or {}).get("evalRun") == name for x in store):
                await reconcile("EvalRun", ns, ev_name, indexes, cascade=False)


def _sampler_eval_runs(spec: dict[str, Any]) -> list[str]:
    """Names of the EvalRuns whose servers a dataset's samplers use (from the spec on the wire)."""
    names = []
    for stage in spec.get("stages") or []:
        samplers = [(stage.get("difficulty") or {}).get("sampler") or {}]
        samplers += [t.get("sampler") or {} for t in (stage.get("generate") or {}).get("teachers") or []]
        names += [s["evalRun"] for s in samplers if s.get("evalRun")]
    return names


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


def _observed(indexes: dict[str, Any], kind: str, namespace: str, name: str) -> tuple[list[JobState], list[PodState]]:
    key = (namespace, kind, name)
    return _all(indexes["job_index"], key), _all(indexes["pod_index"], key)


def _parse(model: type[R], body: dict[str, Any]) -> tuple[R, dict[str, Any]]:
    """Validate what the user wrote; status is the operator's and its pods', never rejected.

    Returns the model and its spec on the wire, or raises ValidationError. Both are kept per resource
    until its generation changes: status, label and child events revalidate nothing. The model's
    metadata is therefore that of the validated generation; reconcilers read only its name (labels and
    annotations come from the current body).
    """
    meta = body["metadata"]
    key = (model.__name__, meta["namespace"], meta["name"])
    uid, generation = meta.get("uid", ""), meta.get("generation")
    parsed = STATE.parsed.get(key)
    if parsed is None or (parsed.uid, parsed.generation) != (uid, generation):
        try:
            valid = model.model_validate({**body, "status": None})
            parsed = _Parsed(uid, generation, valid, valid.spec.to_wire())  # type: ignore[attr-defined]
        except ValidationError as exc:
            parsed = _Parsed(uid, generation, exc.with_traceback(None), {})
        STATE.parsed[key] = parsed
    if isinstance(parsed.model, ValidationError):
        raise parsed.model.with_traceback(None)  # raised again per event: keep its traceback from growing
    assert isinstance(parsed.model, model)
    return parsed.model, parsed.spec


def _invalid(body: dict[str, Any], error: ValidationError) -> dict[str, Any]:
    problems = "; ".join(c.validation_problems(error, limit=5))
    gen, now = body["metadata"].get("generation"), now_iso()
    prev = (body.get("status") or {}).get("conditions") or []
    return {
        "observedGeneration": gen, "phase": "Failed", "reason": c.REASON_INVALID_SPEC,
        "conditions": [
            condition(prev, c.COND_READY, "False", c.REASON_INVALID_SPEC, problems, gen, now),
            condition(prev, c.COND_FAILED, "True", c.REASON_INVALID_SPEC, problems, gen, now),
        ],
    }


async def _apply(body: dict[str, Any], kind: str, plan: Plan, status: dict[str, Any]) -> None:
    """Apply a plan: create children, (un)suspend Jobs, delete old revisions, write status, post events."""
    kube = STATE.kube
    assert kube is not None
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    for obj in plan.create:  # ConfigMap and Service before the Job that needs them
        if await kube.create(obj):
            metrics.CHILDREN_CREATED.labels(kind=obj["kind"]).inc()
    for job, suspend in plan.suspend_jobs.items():
        await kube.patch("Job", ns, job, {"spec": {"suspend": suspend}})
    for job, parallelism in plan.parallelism_jobs.items():
        await kube.patch("Job", ns, job, {"spec": {"parallelism": parallelism}})
    for revision in plan.delete_revisions:
        selector = f"{b.LABEL_KIND}={kind},{b.LABEL_NAME}={name[:63]},{b.LABEL_REVISION}={revision}"
        for child_kind in ("Job", "ConfigMap", "Service"):
            await kube.delete_by_labels(child_kind, ns, selector)
    current = body.get("status") or {}
    diff = {k: v for k, v in status.items() if current.get(k) != v}
    if diff:
        patched = await kube.patch_status(kind, ns, name, diff)
        STATE.written[(kind, ns, name)] = _Written(meta.get("resourceVersion", ""), _snapshot(patched))
    for type_, reason, message in plan.events:
        kopf.event(body, type=type_, reason=reason, message=message)


def _children(plan_status: dict[str, Any], names: list[tuple[str, str]]) -> None:
    plan_status["children"] = [{"kind": k, "name": n} for k, n in names]


# --- Jobs whose pods are refused ------------------------------------------------------------------


async def _creation_problem(kind: str, body: dict[str, Any], job_name: str, jobs: list[JobState],
                            pods: list[PodState], now: str) -> Optional[tuple[str, str]]:
    """Kubernetes' reason when the current Job has no pod because the API refused to create it (Pod
    Security, quota, an invalid label: FailedCreate events), asking only after a grace period; and a
    reconcile is scheduled so the answer shows within seconds even when no watch event arrives."""
    job = next((j for j in jobs if j.name == job_name), None)
    if job is None or job.suspended or job.complete or job.failed_reason or any(x.job == job_name for x in pods):
        return None
    meta = body["metadata"]
    if not p.needs_creation_check(job, pods, now):
        _requeue(kind, meta["namespace"], meta["name"], p.POD_CREATION_GRACE + 1)
        return None
    kube = STATE.kube
    assert kube is not None
    try:
        events = await kube.list_events(meta["namespace"], f"involvedObject.uid={job.uid}")
    except Exception as exc:  # the check is a diagnosis: never let it stop the reconcile
        log.warning("could not read the events of Job %s: %s", job_name, exc)
        return None
    _requeue(kind, meta["namespace"], meta["name"], 10)
    return p.creation_failure(events)


def _stuck(plan: Plan, problem: Optional[tuple[str, str]], generation: Optional[int], now: str) -> None:
    """Show a problem that waiting will not cure in the conditions of a pending revision."""
    if problem is None or plan.status.get("phase") not in ("Pending", "Running"):
        return
    reason, message = problem
    status = plan.status
    status["reason"] = reason
    prev = status["conditions"]
    for type_ in (c.COND_READY, c.COND_PROGRESSING):
        old = next(x for x in prev if x["type"] == type_)
        with_condition(status, {**old, "reason": reason, "message": message[:4096], "observedGeneration": generation})
    if not any(e[1] == reason for e in plan.events):
        plan.events.append(("Warning", reason, message[:1024]))


# --- the sandbox of model-written code ---------------------------------------------------------------


async def _sandbox(body: dict[str, Any], res: Union[ReasoningDataset, EvalRun], spec: dict[str, Any], finished: bool,
                   indexes: dict[str, Any], now: str) -> Optional[tuple[str, str]]:
    """Keep the resource's sandbox service while its revision runs code, remove it when done; returns why the
    Job should wait (the sandbox is not ready yet), else None."""
    kube = STATE.kube
    assert kube is not None
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    observed: Optional[p.ServerState] = _one(indexes["deployment_index"], (ns, name[:63], sb.COMPONENT))
    plan = p.plan_server(
        wanted=k.needs_sandbox(res.kind, spec), finished=finished, keep_after_eval=False,
        desired=lambda: sb.build_sandbox_children(body, STATE.settings, res.spec.sandbox), observed=observed, now=now,
    )
    for obj in plan.apply:
        await kube.apply(obj)
    if plan.delete:
        await kube.delete("Deployment", ns, plan.delete)
        selector = f"{b.LABEL_KIND}={res.kind},{b.LABEL_NAME}={name[:63]},{b.LABEL_COMPONENT}={sb.COMPONENT}"
        for kind in ("Service", "NetworkPolicy"):
            await kube.delete_by_labels(kind, ns, selector)
    if plan.ready or plan.delete or not k.needs_sandbox(res.kind, spec) or finished:
        return None
    problem = p.server_problem(observed if not plan.apply else None, [], now, SERVER_STARTUP_BUDGET)
    return problem or ("WaitingForSandbox", f"waiting for the sandbox {k.sandbox_name(name)} that runs model-written programs")


# --- ReasoningDataset --------------------------------------------------------------------------


async def reconcile_dataset(body: dict[str, Any], indexes: dict[str, Any]) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    try:
        ds, spec = _parse(ReasoningDataset, body)
    except ValidationError as exc:
        await _apply(body, "ReasoningDataset", Plan(), _invalid(body, exc))
        return
    settings = STATE.settings
    revision = k.revision_of("ReasoningDataset", spec)
    waiting, urls, served = p.sampler_endpoints(_sampler_eval_runs(spec), lambda n: _one(indexes["eval_index"], (ns, n)))
    jobs, pods = _observed(indexes, "ReasoningDataset", ns, name)
    job_name = b.child_name(name, revision)
    now = now_iso()
    job = next((j for j in jobs if j.name == job_name), None)
    sandbox_wait = await _sandbox(body, ds, spec, _finished(body, revision, job), indexes, now)
    if waiting is None and job is None:
        waiting = sandbox_wait
    output = k.dataset_output(ds, revision)
    document = k.build_document(ds, revision=revision, output=output,
                                context=k.WorkloadContext(endpoints=urls, servedModelNames=served))
    plan = plan_run(
        body=body, revision=revision, jobs=jobs, pods=pods, job_name=job_name, now=now,
        history_limit=settings.history_limit, output_location=output, waiting=waiting,
        build_children=lambda suspend: b.build_dataset_children(body, ds, document, settings, suspend),
        summarize=lambda r: f"{r.get('samples')} samples" if "samples" in r else None,
    )
    _stuck(plan, await _creation_problem("ReasoningDataset", body, job_name, jobs, pods, now), meta.get("generation"), now)
    status = plan.status
    if waiting is None:
        _children(status, [("ConfigMap", job_name), ("Job", job_name)])
    if plan.result is not None:
        result = plan.result
        status["output"] = {
            "revision": revision, "location": document.canonical(result["location"]) if result.get("location") else output,
            "contentHash": result.get("contentHash"), "samples": result.get("samples"),
        }
        status["output"] = {k_: v for k_, v in status["output"].items() if v is not None}
        if result.get("samples") is not None:
            status["selected"] = int(result["samples"])
        if isinstance(result.get("stageCounts"), list):
            status["stageCounts"] = [
                {"stage": str(s.get("stage"))[:63], "kept": int(s.get("kept", 0)), "dropped": int(s.get("dropped", 0))}
                for s in result["stageCounts"][:32]
            ]
    await _apply(body, "ReasoningDataset", plan, status)


# --- FineTuneJob -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    """A resolved input of a revision (a dataset or a model), or why it is not available yet."""

    waiting: Optional[tuple[str, str]] = None
    revision: str = ""
    location: str = ""  # canonical
    secret: Optional[str] = None  # Secret with the credentials of its location
    base_model: Optional[str] = None  # a fine-tuned model's base (hub id): protocols choose prompts by it
    context_length: Optional[int] = None  # a fine-tuned model's context, as its training reported it
    checkpoints: tuple[k.CheckpointRef, ...] = ()  # model.checkpoints: the FineTuneJob's exported checkpoints


def _dataset_input(ft: FineTuneJob, body: dict[str, Any], indexes: dict[str, Any]) -> _Input:
    ns = body["metadata"]["namespace"]
    status = body.get("status") or {}
    if ft.spec.dataset is not None:
        loc = k.location_string(ft.spec.dataset)
        return _Input(revision=k.input_hash(loc), location=loc, secret=ft.spec.dataset.credentialsSecretRef)
    ref = ft.spec.datasetRef
    assert ref is not None
    ds = _one(indexes["dataset_index"], (ns, ref.name))
    secret = (((ds or {}).get("spec") or {}).get("output") or {}).get("credentialsSecretRef")
    unchanged = body["metadata"].get("generation") == status.get("observedGeneration")
    if ft.spec.retrainPolicy == "Manual" and unchanged and status.get("datasetRevision") and status.get("datasetLocation"):
        return _Input(revision=status["datasetRevision"], location=status["datasetLocation"], secret=secret)
    if ds is None:
        return _Input(waiting=(c.REASON_DATASET_NOT_FOUND, f"ReasoningDataset {ref.name!r} does not exist in namespace {ns}"))
    ds_status = ds.get("status") or {}
    if ref.revision:
        entry = next((h for h in ds_status.get("history") or [] if h.get("revision") == ref.revision), None)
        if entry and entry.get("phase") == "Succeeded" and entry.get("location"):
            return _Input(revision=ref.revision, location=entry["location"], secret=secret)
        return _Input(waiting=(c.REASON_WAITING_FOR_DATASET, f"revision {ref.revision} of ReasoningDataset {ref.name!r} has not succeeded"))
    out = ds_status.get("output") or {}
    if out.get("location") and out.get("revision"):
        return _Input(revision=out["revision"], location=out["location"], secret=secret)
    if ds_status.get("phase") == "Failed":
        detail = next((x.get("message", "") for x in ds_status.get("conditions") or [] if x.get("type") == c.COND_FAILED), "")
        return _Input(waiting=(c.REASON_DATASET_FAILED, f"ReasoningDataset {ref.name!r} failed: {detail}"))
    return _Input(waiting=(c.REASON_WAITING_FOR_DATASET, f"waiting for ReasoningDataset {ref.name!r} to become Ready ({ds_status.get('reason', 'Pending')})"))


async def reconcile_finetune(body: dict[str, Any], indexes: dict[str, Any]) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    try:
        ft, spec = _parse(FineTuneJob, body)
    except ValidationError as exc:
        await _apply(body, "FineTuneJob", Plan(), _invalid(body, exc))
        return
    settings = STATE.settings
    dataset = _dataset_input(ft, body, indexes)
    revision = k.revision_of("FineTuneJob", spec, {"dataset": dataset.revision or None})
    jobs, pods = _observed(indexes, "FineTuneJob", ns, name)
    job_name = b.child_name(name, revision)
    output = k.finetune_output(ft, revision)
    context = k.WorkloadContext(datasetLocation=dataset.location or None, datasetRevision=dataset.revision or None)
    document = k.build_document(ft, revision=revision, output=output, context=context)
    now = now_iso()
    plan = plan_run(
        body=body, revision=revision, jobs=jobs, pods=pods, job_name=job_name, now=now,
        history_limit=settings.history_limit, waiting=dataset.waiting, output_location=k.model_location(output),
        build_children=lambda suspend: b.build_finetune_children(
            body, ft, document, settings, suspend, input_locations=[dataset.location], input_secrets=[dataset.secret]),
        summarize=lambda r: f"loss {r['finalLoss']:.4g}" if isinstance(r.get("finalLoss"), (int, float)) else None,
    )
    _stuck(plan, await _creation_problem("FineTuneJob", body, job_name, jobs, pods, now), meta.get("generation"), now)
    job = next((j for j in jobs if j.name == job_name), None)
    restart = p.group_restart(job, pods) if job is not None else []
    for pod in restart:  # a failed node fails the group: its peers would hang in a collective
        await STATE.kube.evict(ns, pod)  # type: ignore[union-attr]
    if restart:
        plan.events.append(("Warning", "GroupRestart", f"a training pod failed: restarting its {len(restart)} peers from the latest checkpoint"))
    status = plan.status
    old = body.get("status") or {}
    if dataset.waiting is None:
        status.update(datasetRevision=dataset.revision, datasetLocation=dataset.location)
        _children(status, [("ConfigMap", job_name), ("Service", job_name), ("Job", job_name)])
    progress = old.get("progress") or {}
    if progress.get("revision") == revision:
        if progress.get("loss") is not None:
            status["lastLoss"] = str(progress["loss"])[:32]
            with contextlib.suppress(ValueError):
                metrics.TRAIN_LOSS.labels(namespace=ns, finetunejob=name).set(float(progress["loss"]))
        if progress.get("latestCheckpoint"):
            status["latestCheckpoint"] = document.canonical(str(progress["latestCheckpoint"]))[:1024]
    if job is not None:
        status["restarts"] = job.failed  # pod failures the Job counted: peers it lost to a restart are not
    if plan.result is not None:
        result = plan.result
        status["modelLocation"] = document.canonical(result["modelLocation"]) if result.get("modelLocation") else k.model_location(output)
        status["modelRevision"] = revision
        if isinstance(result.get("finalLoss"), (int, float)):
            status["lastLoss"] = f"{result['finalLoss']:.4f}"
        if result.get("droppedSamples") is not None:
            status["droppedSamples"] = int(result["droppedSamples"])
        if isinstance(result.get("contextLength"), int):
            status["contextLength"] = result["contextLength"]
        if result.get("latestCheckpoint"):
            status["latestCheckpoint"] = document.canonical(str(result["latestCheckpoint"]))
        status["checkpoints"] = k.exported_checkpoints(document.outputLocation, result.get("checkpoints")) or None
    await _apply(body, "FineTuneJob", plan, status)


# --- EvalRun -----------------------------------------------------------------------------------


def _model_input(ev: EvalRun, body: dict[str, Any], indexes: dict[str, Any]) -> _Input:
    ns = body["metadata"]["namespace"]
    model = ev.spec.model
    if model.fineTuneJob:
        ft = _one(indexes["finetune_index"], (ns, model.fineTuneJob))
        if ft is None:
            return _Input(waiting=(c.REASON_MODEL_NOT_FOUND, f"FineTuneJob {model.fineTuneJob!r} does not exist in namespace {ns}"))
        st = ft.get("status") or {}
        secret = (((ft.get("spec") or {}).get("output")) or {}).get("credentialsSecretRef")
        base = (((ft.get("spec") or {}).get("baseModel")) or {}).get("name")
        if st.get("modelLocation") and st.get("modelRevision"):
            kept = [k.CheckpointRef.model_validate({f: x.get(f) for f in k.CheckpointRef.model_fields}) for x in st.get("checkpoints") or []]
            checkpoints, problem = k.checkpoints_to_evaluate(model, kept)
            if problem:
                return _Input(waiting=(c.REASON_NO_CHECKPOINTS, problem))
            return _Input(revision=st["modelRevision"], location=st["modelLocation"], secret=secret, base_model=base,
                          context_length=st.get("contextLength"), checkpoints=tuple(checkpoints))
        if st.get("phase") == "Failed":
            return _Input(waiting=(c.REASON_MODEL_FAILED, f"FineTuneJob {model.fineTuneJob!r} failed"))
        return _Input(waiting=(c.REASON_WAITING_FOR_MODEL, f"waiting for FineTuneJob {model.fineTuneJob!r} to succeed ({st.get('reason', 'Pending')})"))
    if model.evalRun:
        upstream = _one(indexes["eval_index"], (ns, model.evalRun))
        if upstream is None:
            return _Input(waiting=(c.REASON_MODEL_NOT_FOUND, f"EvalRun {model.evalRun!r} does not exist in namespace {ns}"))
        selected = (upstream.get("status") or {}).get("selectedCheckpoint") or {}
        if not selected.get("location"):
            return _Input(waiting=(c.REASON_WAITING_FOR_SELECTION, f"waiting for EvalRun {model.evalRun!r} to select a checkpoint "
                                   f"({(upstream.get('status') or {}).get('reason', 'Pending')})"))
        ft = _one(indexes["finetune_index"], (ns, ((upstream.get("spec") or {}).get("model") or {}).get("fineTuneJob") or ""))
        ft_spec = (ft or {}).get("spec") or {}
        return _Input(revision=k.input_hash(selected["location"]), location=selected["location"],
                      secret=(ft_spec.get("output") or {}).get("credentialsSecretRef"), base_model=(ft_spec.get("baseModel") or {}).get("name"),
                      context_length=((ft or {}).get("status") or {}).get("contextLength"))
    if model.name:
        loc = k.location_string(model.volume, model.name) if model.volume else model.name
        return _Input(revision=k.input_hash(loc), location=loc, secret=model.volume.credentialsSecretRef if model.volume else None)
    assert model.endpoint is not None
    return _Input(revision=k.input_hash(f"{model.endpoint.url}|{model.servedModelName or ''}"))


def _finished(body: dict[str, Any], revision: str, job: Optional[JobState]) -> bool:
    """Whether the current revision has finished (its history says so, or its Job just did)."""
    history = {h.get("revision"): h.get("phase") for h in (body.get("status") or {}).get("history") or []}
    return history.get(revision) in p.TERMINAL or bool(job and (job.complete or job.failed_reason))


SERVER_STARTUP_BUDGET = 1800.0  # seconds: the startup probe's budget (failureThreshold × period) with slack


async def reconcile_eval(body: dict[str, Any], indexes: dict[str, Any]) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    generation = meta.get("generation")
    try:
        ev, spec = _parse(EvalRun, body)
    except ValidationError as exc:
        await _apply(body, "EvalRun", Plan(), _invalid(body, exc))
        return
    settings = STATE.settings
    kube = STATE.kube
    assert kube is not None
    model = _model_input(ev, body, indexes)
    waiting = model.waiting
    revision = k.revision_of("EvalRun", spec, {"model": model.revision or None})
    serving = k.serving_enabled(ev.spec)
    requested = ev.spec.serving.maxModelLen if ev.spec.serving else None
    too_long = k.check_max_model_len({"max_position_embeddings": model.context_length}, requested) if serving and model.context_length else None
    if waiting is None and too_long:  # vLLM would refuse to start: say so before any GPU is asked for
        waiting = (c.REASON_MAX_MODEL_LEN_TOO_LONG, too_long)
    now = now_iso()
    old = body.get("status") or {}
    prev_conditions = old.get("conditions") or []
    jobs, pods = _observed(indexes, "EvalRun", ns, name)
    job_name = b.child_name(name, revision)
    job = next((j for j in jobs if j.name == job_name), None)
    finished = _finished(body, revision, job)
    observed_server: Optional[p.ServerState] = _one(indexes["deployment_index"], (ns, name[:63], "server"))
    keep = not (ev.spec.serving and ev.spec.serving.keepAfterEval is False)
    server = p.plan_server(
        wanted=None if (serving and waiting is not None) else serving, finished=finished, keep_after_eval=keep,
        desired=lambda: b.build_eval_server(body, ev, model.location, model.revision, settings, input_secrets=[model.secret]),
        observed=observed_server, now=now,
    )
    for obj in server.apply:
        await kube.apply(obj)
    if server.delete:
        await kube.delete("Deployment", ns, server.delete)
        selector = f"{b.LABEL_KIND}=EvalRun,{b.LABEL_NAME}={name[:63]},{b.LABEL_COMPONENT}=server"
        await kube.delete_by_labels("Service", ns, selector)
    endpoint = k.endpoint_url(name, ns, settings.server_port) if serving else (ev.spec.model.endpoint.url if ev.spec.model.endpoint else None)
    problem = None
    if serving and waiting is None and not server.ready and not server.delete:
        problem = p.server_problem(observed_server if not server.apply else None, [x for x in pods if x.server], now, SERVER_STARTUP_BUDGET)
        if job is None and not finished:
            waiting = problem or (c.REASON_WAITING_FOR_SERVER, f"waiting for the model server {k.server_name(name)} to become ready")
        if not server.apply:
            _requeue("EvalRun", ns, name, 15)  # the startup budget runs out without a watch event
    sandbox_wait = await _sandbox(body, ev, spec, finished, indexes, now)
    if waiting is None and job is None and not finished:
        waiting = sandbox_wait
    context = k.WorkloadContext(
        modelLocation=model.location or None, modelRevision=model.revision or None, endpoint=endpoint or None,
        baseModel=model.base_model or (ev.spec.model.name if ev.spec.model.name else None),
        servedModelName=k.served_model_name(ev) if serving else (ev.spec.model.servedModelName or model.location or None),
        checkpoints=list(model.checkpoints),
    )
    output = k.eval_output(ev, revision, model.location) or f"{k.SCRATCH}/reasonops/{name}/{revision}"
    document = k.build_document(ev, revision=revision, output=output, context=context)
    plan = plan_run(
        body=body, revision=revision, jobs=jobs, pods=[x for x in pods if not x.server], job_name=job_name, now=now,
        history_limit=settings.history_limit, waiting=waiting, output_location=output,
        parallelism=b.eval_parallelism(ev.spec, len(model.checkpoints)),
        build_children=lambda suspend: b.build_eval_children(
            body, ev, document, settings, suspend, model_location=model.location, input_secrets=[model.secret]),
        # With model.checkpoints a pod's result is one checkpoint's: the history says what was selected instead.
        summarize=lambda r: f"accuracy {r['accuracy']:.3f}" if isinstance(r.get("accuracy"), (int, float)) and not model.checkpoints else None,
    )
    _stuck(plan, await _creation_problem("EvalRun", body, job_name, jobs, [x for x in pods if not x.server], now), generation, now)
    status = plan.status
    status.update(modelRevision=model.revision or None, modelLocation=model.location or None, endpoint=endpoint)
    if serving:
        if server.ready:
            serving_cond = ("True", c.REASON_SERVER_READY, endpoint or "")
        elif server.delete or (finished and not keep):
            serving_cond = ("False", c.REASON_SERVER_REMOVED, "serving.keepAfterEval is false: the server was removed after the evaluation")
        else:
            serving_cond = ("False", *(problem or (c.REASON_SERVER_STARTING, "the model server is starting")))
        with_condition(status, condition(prev_conditions, c.COND_SERVING, *serving_cond, generation, now))
    selection = ev.spec.selection
    if model.checkpoints:  # results and gates are the selected checkpoint's
        reports = p.checkpoint_reports(job_name, [x for x in pods if not x.server])
        per_checkpoint = p.checkpoint_results([t.model_dump() for t in model.checkpoints], reports, old, revision)
        status["checkpoints"] = per_checkpoint
        chosen = (select_checkpoint(per_checkpoint, selection.benchmark, selection.metric or "score")
                  if selection and status["phase"] == "Succeeded" else None)
        results = None
        if chosen:  # until then the previous selection stays (as a FineTuneJob's model does while it retrains)
            # Its results in full from its pod, else as stored, else its scores in short.
            results = (p.current_results(reports.get(chosen["name"]), status["phase"], old, revision)
                       or next(x["results"] for x in per_checkpoint if x["name"] == chosen["name"]))
            status["selectedCheckpoint"] = {**chosen, "modelRevision": model.revision}
            status["modelLocation"] = chosen["location"]
            for entry in status.get("history") or []:
                if entry.get("revision") == revision:
                    entry["summary"] = f"selected {chosen['name']}: {chosen['benchmark']} {chosen['metric']} {chosen['score']}"[:256]
    else:
        results = p.current_results(plan.result, status["phase"], old, revision)
    gates = ev.spec.gates or []
    if results is not None:
        results = [{k_: (str(v) if k_ in p.RESULT_DECIMALS else v) for k_, v in r.items() if k_ in p.RESULT_FIELDS} for r in results]
        status["results"] = results
        scores = [float(r["score"]) for r in results if r.get("score") is not None]
        status["accuracy"] = f"{sum(scores) / len(scores):.4f}" if scores else None
        if plan.result is not None:
            for r in results:
                with contextlib.suppress(ValueError, TypeError):
                    metrics.EVAL_SCORE.labels(namespace=ns, evalrun=name, benchmark=r["benchmark"]).set(float(r["score"]))
        outcome = [o.to_dict() for o in judge_gates(gates, results)]
        status["gates"] = outcome or None
        failed = [g for g in outcome if not g["passed"]]
        if not gates:
            passed = ("True", c.REASON_NO_GATES, "no gates configured")
        elif failed:
            passed = ("False", c.REASON_GATES_FAILED, "; ".join(
                f"{g['benchmark']}: {g['reason']}" if g.get("reason") else
                f"{g['benchmark']}: {'lower 95% bound ' if g['bound'] == 'lower95' else ''}{g['score']} < {g['minScore']}"
                for g in failed))
        else:
            passed = ("True", c.REASON_GATES_PASSED, f"{len(outcome)} gates passed")
        old_passed = next((x for x in prev_conditions if x.get("type") == c.COND_PASSED), None)
        if old_passed and old_passed.get("status") != passed[0] and old.get("revision") == revision:
            plan.events.append(("Normal" if passed[0] == "True" else "Warning", passed[1], passed[2][:1024]))
    elif status["phase"] == "Failed":
        passed = ("False", c.REASON_FAILED, "the evaluation failed")
    elif status["phase"] == "Succeeded" and model.checkpoints and selection:
        passed = ("False", c.REASON_NO_SELECTION, f"no checkpoint has a {selection.metric or 'score'} on {selection.benchmark}")
        status.update(results=None, gates=None, accuracy=None)
    elif status["phase"] == "Succeeded" and model.checkpoints:
        passed = ("True", c.REASON_NO_GATES, "no gates configured (per-checkpoint results in status.checkpoints)")
    else:
        passed = ("Unknown", c.REASON_PENDING, "no results yet")
        status.update(results=None, gates=None, accuracy=None)
    with_condition(status, condition(prev_conditions, c.COND_PASSED, *passed, generation, now))
    if waiting is None:
        _children(status, [("ConfigMap", job_name), ("Job", job_name)]
                  + ([("Deployment", k.server_name(name)), ("Service", k.server_name(name))] if serving and not server.delete and not (finished and not keep) else []))
    await _apply(body, "EvalRun", plan, status)


RECONCILERS = {"ReasoningDataset": reconcile_dataset, "FineTuneJob": reconcile_finetune, "EvalRun": reconcile_eval}
