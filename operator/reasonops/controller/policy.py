"""Decide, from what was observed, what a resource's children and status should be.

Pure functions (no API calls) that the three kinds share; each kind's own decision (`decide.py`) calls them.
`plan_run` turns a resource, its current revision and the observed state of its Jobs and pods into a `Plan`
— objects to create, Jobs to suspend or resume, old revisions to delete, and the status to write;
`plan_server` decides a server's (or sandbox's) desired state. The handlers gather and apply.

The rules that matter most:
- one Job per revision, named after it, so a restarted operator never creates duplicates;
- a revision that finished (Succeeded or Failed) stays finished: when its Job is deleted, by hand or by
  a TTL, nothing is re-run (the history in status remembers it);
- a new revision supersedes a running one (its Job is deleted, freeing the GPUs);
- at most `history_limit` past revisions keep their children.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..api import common
from .labels import ANNOTATION_APPLIED_AT, ANNOTATION_SPEC_HASH, QUEUE_LABEL

TERMINAL = ("Succeeded", "Failed")
# Pod states that will not resolve by waiting: shown as the reason while the revision is pending.
STUCK = ("ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName", "CrashLoopBackOff",
         "CreateContainerConfigError", "CreateContainerError", "Unschedulable")
MAX_HISTORY = 20


@dataclass(frozen=True)
class KueueWorkload:
    """What the operator reads of the Workload that Kueue made for a queued Job."""

    name: str
    active: bool = True  # spec.active: false while the resource is suspended (Kueue then evicts and suspends)
    waiting: Optional[tuple[str, str]] = None  # Kueue's reason and message while it has no quota (`kueue_waiting`)


@dataclass(frozen=True)
class JobState:
    name: str
    revision: str
    suspended: bool = False
    active: int = 0
    ready: int = 0
    succeeded: int = 0
    failed: int = 0
    complete: bool = False
    failed_reason: Optional[str] = None
    failed_message: Optional[str] = None
    start_time: Optional[str] = None
    completion_time: Optional[str] = None
    queued: bool = False  # carries Kueue's queue label
    kueue: Optional[KueueWorkload] = None  # its Workload, once Kueue made one
    created: Optional[str] = None  # metadata.creationTimestamp
    uid: str = ""
    parallelism: Optional[int] = None  # spec.parallelism


@dataclass(frozen=True)
class PodState:
    name: str
    job: str
    phase: str
    exit_code: Optional[int] = None
    reason: Optional[str] = None
    message: Optional[str] = None
    waiting_reason: Optional[str] = None  # e.g. ImagePullBackOff, CrashLoopBackOff
    server: bool = False  # a pod of the EvalRun's server Deployment (not of a Job)
    created: Optional[str] = None  # metadata.creationTimestamp
    finished: Optional[str] = None  # when its container last terminated
    deleting: bool = False


def condition(
    previous: list[dict[str, Any]], type_: str, status: str, reason: str, message: str, generation: Optional[int], now: str
) -> dict[str, Any]:
    """A metav1.Condition; lastTransitionTime only moves when the status changes."""
    old = next((x for x in previous if x.get("type") == type_), None)
    changed = old is None or old.get("status") != status
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:4096],
        "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
        "observedGeneration": generation,
    }


def parse_result(message: Optional[str]) -> Optional[dict[str, Any]]:
    """A workload's JSON result from its termination message (None when absent or not JSON)."""
    if not message:
        return None
    try:
        value = json.loads(message.strip())
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def failure_detail(job: JobState, pods: list[PodState]) -> tuple[str, str]:
    """Reason and message of a failed revision, from the failing pod when one says why."""
    failed = [p for p in pods if p.job == job.name and p.phase == "Failed"]
    for pod in reversed(failed):
        result = parse_result(pod.message)
        if result and isinstance(result.get("error"), dict):
            err = result["error"]
            return str(err.get("reason") or common.REASON_FAILED), str(err.get("message") or "")
        if pod.message or pod.exit_code is not None:
            text = (pod.message or "").strip()
            detail = f"pod {pod.name} exited with code {pod.exit_code}" + (f" ({pod.reason})" if pod.reason else "")
            return common.REASON_FAILED, f"{detail}: {text[-1500:]}" if text else detail
    reason = job.failed_reason or common.REASON_FAILED
    return reason, job.failed_message or "the Job failed"


def kueue_waiting(conditions: list[dict[str, Any]]) -> Optional[tuple[str, str]]:
    """Kueue's own reason and message for a Workload that waits: its QuotaReserved condition while that is
    False (Pending: no quota free yet, Inadmissible: e.g. no such LocalQueue, or the eviction that took the
    quota back). None while the Workload holds quota or Kueue has not looked at it yet."""
    reserved = next((x for x in conditions if x.get("type") == "QuotaReserved"), None)
    if reserved is None or reserved.get("status") != "False":
        return None
    return str(reserved.get("reason") or "Pending"), str(reserved.get("message") or "")


def job_phase(job: JobState, pods: list[PodState], user_suspended: bool) -> tuple[str, str, str]:
    """(phase, reason, message) of a revision from its Job and pods."""
    if job.complete:
        return "Succeeded", common.REASON_SUCCEEDED, f"Job {job.name} completed"
    if job.failed_reason:
        reason, message = failure_detail(job, pods)
        return "Failed", reason, message
    if job.suspended:
        if user_suspended:
            return "Suspended", common.REASON_SUSPENDED, "spec.suspend is true"
        if job.queued:
            waiting = job.kueue.waiting if job.kueue else None
            detail = f" ({waiting[0]}: {waiting[1]})" if waiting else ""
            return "Pending", common.REASON_QUEUED, f"Job {job.name} waits for admission by Kueue{detail}"
        return "Suspended", common.REASON_SUSPENDED, f"Job {job.name} is suspended"
    mine = [p for p in pods if p.job == job.name]
    stuck = next((p for p in mine if p.waiting_reason in STUCK), None)
    if stuck:
        return "Pending", stuck.waiting_reason or common.REASON_PENDING, f"pod {stuck.name}: {stuck.waiting_reason} {stuck.message or ''}".strip()
    if any(p.phase == "Running" for p in mine):
        return "Running", common.REASON_RUNNING, f"Job {job.name} is running ({len([p for p in mine if p.phase == 'Running'])} pods)"
    return "Pending", common.REASON_PENDING, f"Job {job.name} is waiting for its pods to start"


def succeeded_result(job: JobState, pods: list[PodState], progress: dict[str, Any], revision: str) -> dict[str, Any]:
    """The workload's result: the termination message of a succeeded pod, else what it put in status."""
    for pod in pods:
        if pod.job == job.name and pod.phase == "Succeeded":
            result = parse_result(pod.message)
            if result is not None:
                return result
    if progress.get("revision") == revision and isinstance(progress.get("result"), dict):
        return progress["result"]
    return {}


def plan_run(
    *,
    body: dict[str, Any],
    revision: str,
    jobs: list[JobState],
    pods: list[PodState],
    build_children: Callable[[bool], list[dict[str, Any]]],
    job_name: str,
    history_limit: int,
    now: str,
    waiting: Optional[tuple[str, str]] = None,
    summarize: Callable[[dict[str, Any]], Optional[str]] = lambda r: None,
    output_location: Optional[str] = None,
    parallelism: Optional[int] = None,
) -> Plan:
    """The common lifecycle of a revision-based resource (all three kinds). `parallelism` is what the
    current revision's Job should run at once where that may change while it runs (EvalRun spec.parallelism
    with model.checkpoints): a running Job gets it, unless Kueue admitted the Job with its own count."""
    meta, spec = body["metadata"], body.get("spec") or {}
    status = body.get("status") or {}
    generation = meta.get("generation")
    user_suspended = bool(spec.get("suspend"))
    history: list[dict[str, Any]] = [dict(h) for h in status.get("history") or []]
    entry = next((h for h in history if h.get("revision") == revision), None)
    job = next((j for j in jobs if j.name == job_name), None)
    plan = Plan()

    if job is None and entry is not None and entry.get("phase") in TERMINAL:
        phase, reason, message = entry["phase"], entry.get("reason") or entry["phase"], f"revision {revision} {entry['phase'].lower()}"
        if entry.get("phase") == "Failed" and status.get("revision") == revision:
            message = next((x.get("message", message) for x in status.get("conditions") or [] if x.get("type") == common.COND_FAILED), message)
    elif job is None and waiting is not None:
        phase, (reason, message) = "Waiting", waiting
    elif job is None:
        # A suspended resource with Kueue's queue label gets its Job when resumed: Kueue would admit it at once.
        if not (user_suspended and QUEUE_LABEL in (meta.get("labels") or {})):
            plan.create = build_children(user_suspended)
            plan.events.append(("Normal", "Created", f"Job {job_name} for revision {revision}"))
        phase = "Suspended" if user_suspended else "Pending"
        reason = common.REASON_SUSPENDED if user_suspended else common.REASON_PENDING
        message = "spec.suspend is true" if user_suspended else f"created Job {job_name} for revision {revision}"
    else:
        # A Job with Kueue's queue label is Kueue's to suspend and resume (it would undo the operator's flip):
        # spec.suspend deactivates its Workload instead, and Kueue evicts and suspends the Job itself.
        finished = job.complete or job.failed_reason
        if job.suspended != user_suspended and not job.queued and not finished:
            plan.suspend_jobs[job.name] = user_suspended
        if job.queued and job.kueue is not None and job.kueue.active == user_suspended and not finished:
            plan.activate_workloads[job.kueue.name] = not user_suspended
        if (parallelism is not None and job.parallelism is not None and job.parallelism != parallelism
                and not job.queued and not (job.complete or job.failed_reason)):
            plan.parallelism_jobs[job.name] = parallelism
        phase, reason, message = job_phase(job, pods, user_suspended)
        if phase == "Succeeded":
            plan.result = succeeded_result(job, pods, status.get("progress") or {}, revision)

    # History: the current revision first, then the ones before it. A revision still waiting for its
    # inputs has not started and gets no entry.
    previous_phase = entry.get("phase") if entry else None
    if not (phase == "Waiting" and entry is None):
        if entry is None:
            entry = {"revision": revision}
            for old in history:
                if old.get("phase") not in TERMINAL:
                    old.update(phase="Failed", reason="Superseded", completionTime=now)
            history.insert(0, entry)
        if not (previous_phase in TERMINAL and job is None):
            _update_entry(entry, phase, reason, job_name, job, now, output_location, plan.result, summarize)
        history = ([entry] + [h for h in history if h is not entry])[:MAX_HISTORY]
        if previous_phase != entry.get("phase") and (previous_phase is not None or entry["phase"] in TERMINAL):
            severity = "Warning" if entry["phase"] == "Failed" else "Normal"
            plan.events.append((severity, reason, message[:1024]))

    # Children of revisions beyond the history limit go; so does a superseded run.
    live = {j.revision for j in jobs}
    keep = {h["revision"] for h in history[: history_limit + 1]}
    superseded = {j.revision for j in jobs if j.revision != revision and not (j.complete or j.failed_reason)}
    plan.delete_revisions = sorted((live - keep) | superseded)

    conditions = status.get("conditions") or []
    ready = phase == "Succeeded"
    progressing = phase in ("Pending", "Running", "Waiting")
    plan.status = {
        "observedGeneration": generation,
        "revision": revision,
        "phase": phase,
        "reason": reason,
        "history": history,
        "conditions": [
            condition(conditions, common.COND_READY, "True" if ready else "False", reason, message, generation, now),
            condition(conditions, common.COND_PROGRESSING, "True" if progressing else "False", reason, message, generation, now),
            condition(conditions, common.COND_FAILED, "True" if phase == "Failed" else "False", reason if phase == "Failed" else "NotFailed", message if phase == "Failed" else "", generation, now),
            condition(conditions, common.COND_SUSPENDED, "True" if user_suspended else "False", common.REASON_SUSPENDED if user_suspended else "NotSuspended", "", generation, now),
        ],
        "startTime": (entry or {}).get("startTime"),
        "completionTime": (entry or {}).get("completionTime"),
    }
    return plan


def _update_entry(
    entry: dict[str, Any], phase: str, reason: str, job_name: str, job: Optional[JobState], now: str,
    output_location: Optional[str], result: Optional[dict[str, Any]], summarize: Callable[[dict[str, Any]], Optional[str]],
) -> None:
    entry.update(phase=phase if phase != "Waiting" else "Pending", reason=reason, job=job_name)
    if job is not None and job.start_time:
        entry.setdefault("startTime", job.start_time)
    if phase in TERMINAL:
        entry.setdefault("completionTime", (job.completion_time if job else None) or now)
    if output_location:
        entry["location"] = output_location
    summary = summarize(result) if result is not None else None
    if summary:
        entry["summary"] = summary[:256]


def with_condition(status: dict[str, Any], cond: dict[str, Any]) -> None:
    status["conditions"] = [x for x in status.get("conditions", []) if x["type"] != cond["type"]] + [cond]


# What of a workload's benchmark result goes to status (BenchmarkResult), and which of it are decimals.
RESULT_FIELDS = ("benchmark", "score", "problems", "samples", "truncated", "stderr", "ciLow", "ciHigh", "contentHash")
RESULT_DECIMALS = ("score", "truncated", "stderr", "ciLow", "ciHigh")
# What of each checkpoint's results status.checkpoints keeps (CheckpointScore): 64 checkpoints x 32 benchmarks stay small.
CHECKPOINT_SCORE_FIELDS = ("benchmark", "score", "stderr", "ciLow", "ciHigh")


# --- the model server of an EvalRun ----------------------------------------------------------------

# Pod states of a server that waiting will not cure (OOMKilled: the last termination of a restarting pod).
SERVER_STUCK = STUCK + ("OOMKilled", "Error", "ContainerCannotRun", "RunContainerError")


@dataclass(frozen=True)
class ServerState:
    """The observed server Deployment of an EvalRun."""

    name: str
    spec_hash: Optional[str] = None
    applied_at: Optional[str] = None
    model_revision: Optional[str] = None
    current: bool = False  # the controller has acted on the latest spec (observedGeneration == generation)
    updated_available: int = 0  # available pods of the latest template (not the old ReplicaSet's)
    failure: Optional[tuple[str, str]] = None  # (reason, message) of a ReplicaFailure condition


def updated_available(status: dict[str, Any]) -> int:
    """Available pods of a Deployment's latest template. During a rolling update `availableReplicas` still
    counts the old ReplicaSet's pods (which serve the previous model), so only once no old pod is left
    (`replicas == updatedReplicas`) are the available ones the new template's."""
    replicas, updated = status.get("replicas", 0) or 0, status.get("updatedReplicas", 0) or 0
    return (status.get("availableReplicas", 0) or 0) if replicas == updated else 0


@dataclass
class ServerPlan:
    apply: list[dict[str, Any]] = field(default_factory=list)  # objects to server-side apply
    delete: Optional[str] = None  # Deployment to delete
    ready: bool = False  # a pod of the desired template serves


@dataclass
class Plan:
    """What a reconcile does (`decide.py` fills it, the handlers apply it)."""

    create: list[dict[str, Any]] = field(default_factory=list)
    suspend_jobs: dict[str, bool] = field(default_factory=dict)  # job name -> desired spec.suspend
    activate_workloads: dict[str, bool] = field(default_factory=dict)  # Kueue Workload name -> desired spec.active
    parallelism_jobs: dict[str, int] = field(default_factory=dict)  # job name -> desired spec.parallelism
    delete_revisions: list[str] = field(default_factory=list)  # revisions whose children go
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    result: Optional[dict[str, Any]] = None  # the workload's result, for the current revision
    server: ServerPlan = field(default_factory=ServerPlan)  # EvalRun: its model server
    sandbox: ServerPlan = field(default_factory=ServerPlan)  # the sandbox of model-written code
    evict: list[str] = field(default_factory=list)  # pods of a training group to restart (`group_restart`)
    requeue_after: Optional[float] = None  # seconds: look again although no watch event will come
    scores: dict[str, float] = field(default_factory=dict)  # benchmark -> score of fresh results (metrics)
    loss: Optional[float] = None  # the training loss last reported (metrics)


def objects_hash(objects: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(objects, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def plan_server(
    *, wanted: Optional[bool], finished: bool, keep_after_eval: bool,
    desired: Callable[[], list[dict[str, Any]]], observed: Optional[ServerState], now: str,
) -> ServerPlan:
    """What to do with an EvalRun's server, on every reconcile.

    - `wanted` None (the model is not known yet): leave whatever serves alone.
    - not wanted (an endpoint, offline, disabled): remove the server.
    - the current revision finished and `keepAfterEval` is false: remove it once, never re-create it.
    - otherwise: apply the desired objects when they differ from what was last applied (an edit of
      spec.serving reaches the Deployment); ready when a pod of that template is available.
    """
    plan = ServerPlan()
    if wanted is None:
        plan.ready = observed is not None and observed.current and observed.updated_available > 0
        return plan
    if not wanted or (finished and not keep_after_eval):
        plan.delete = observed.name if observed is not None else None
        return plan
    objects = desired()
    digest = objects_hash(objects)
    if observed is None or observed.spec_hash != digest:
        for obj in objects:
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations[ANNOTATION_SPEC_HASH] = digest
            annotations[ANNOTATION_APPLIED_AT] = now
        plan.apply = objects
        return plan
    plan.ready = observed.current and observed.updated_available > 0
    return plan


def server_problem(
    server: Optional[ServerState], pods: list[PodState], now: str, startup_budget: float,
) -> Optional[tuple[str, str]]:
    """Why the server is not ready, when waiting will not cure it (Kubernetes' own reason), else None."""
    if server is not None and server.failure is not None:
        return server.failure
    stuck = next((p for p in pods if (p.waiting_reason or p.reason) in SERVER_STUCK), None)
    if stuck is not None:
        reason = stuck.waiting_reason or stuck.reason or "ServerFailing"
        detail = f"server pod {stuck.name}: {reason}"
        if stuck.reason and stuck.reason != reason:
            detail += f" (last exit: {stuck.reason}, code {stuck.exit_code})"
        return reason, f"{detail} {stuck.message or ''}".strip()[:1024]
    if server is not None and server.applied_at and seconds_between(server.applied_at, now) > startup_budget:
        return "ServerStartTimeout", f"the server {server.name} was not ready within {int(startup_budget)} s of its start"
    return None


def seconds_between(earlier: str, later: str) -> float:
    import datetime as dt

    def parse(value: str) -> dt.datetime:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))

    try:
        return (parse(later) - parse(earlier)).total_seconds()
    except ValueError:
        return 0.0


# --- Jobs whose pods cannot be created ---------------------------------------------------------------

POD_CREATION_GRACE = 5.0  # seconds a Job may have no pod before the operator asks the API why


def needs_creation_check(job: JobState, pods: list[PodState], now: str) -> bool:
    """A running Job with no pod after a grace period: its pods may be refused at creation (FailedCreate)."""
    if job.suspended or job.complete or job.failed_reason or not job.created:
        return False
    return not any(p.job == job.name for p in pods) and seconds_between(job.created, now) >= POD_CREATION_GRACE


def creation_failure(events: list[dict[str, Any]]) -> Optional[tuple[str, str]]:
    """Kubernetes' reason and message from the newest FailedCreate event of a Job, if any."""
    failed = [e for e in events if e.get("reason") == "FailedCreate"]
    if not failed:
        return None
    newest = max(failed, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return "FailedCreate", str(newest.get("message") or "the Job's pods could not be created")[:1024]


# --- results and gates ---------------------------------------------------------------------------------


def current_results(plan_result: Optional[dict[str, Any]], phase: str, old_status: dict[str, Any], revision: str) -> Optional[list[dict[str, Any]]]:
    """The benchmark results of the current revision: fresh from its pod, else those stored in status by an
    earlier reconcile of the same revision (so a gate edit re-judges them without running anything)."""
    if phase != "Succeeded":
        return None
    if plan_result is not None and isinstance(plan_result.get("results"), list):
        return [r for r in plan_result["results"][:32] if isinstance(r, dict)]
    if old_status.get("revision") == revision and isinstance(old_status.get("results"), list):
        return list(old_status["results"])
    return None


def checkpoint_reports(job_name: str, pods: list[PodState]) -> dict[str, dict[str, Any]]:
    """Checkpoint name -> the result its pod reported, for the succeeded pods of a per-checkpoint evaluation
    (each termination message names the checkpoint it rates)."""
    reported = {}
    for pod in pods:
        result = (parse_result(pod.message) if pod.job == job_name and pod.phase == "Succeeded" else None) or {}
        if isinstance(result.get("checkpoint"), dict) and isinstance(result.get("results"), list):
            reported[str(result["checkpoint"].get("name"))] = result
    return reported


def checkpoint_results(
    targets: list[dict[str, Any]], reported: dict[str, dict[str, Any]], old_status: dict[str, Any], revision: str,
) -> list[dict[str, Any]]:
    """status.checkpoints: each target (name, step, epoch, location) with the scores its pod reported
    (`checkpoint_reports`), else those an earlier reconcile of the same revision stored (the pods may be
    gone), else none yet."""
    stored = {entry.get("name"): entry.get("results") for entry in old_status.get("checkpoints") or []
              if old_status.get("revision") == revision}
    out = []
    for target in targets:
        result = reported.get(target["name"])
        scores = [{k: str(v) for k, v in r.items() if k in CHECKPOINT_SCORE_FIELDS}
                  for r in result["results"][:32] if isinstance(r, dict)] if result else stored.get(target["name"])
        out.append({**target, "results": scores or None})
    return out


# --- training groups ------------------------------------------------------------------------------------


def group_restart(job: JobState, pods: list[PodState]) -> list[str]:
    """Pods to delete so that a training group restarts together after one of its pods failed.

    torchrun's peers of a failed pod would wait in a collective until the process-group timeout; deleting
    them lets the Job re-create every index, and all resume from the latest checkpoint. Only pods that
    existed when the failure happened go (the replacements are newer); the Job's pod failure policy
    ignores these deletions (DisruptionTarget), so `backoffLimit` counts group restarts, not pods.
    """
    if job.complete or job.failed_reason or job.suspended:
        return []
    mine = [p for p in pods if p.job == job.name]
    failures = [p.finished or "" for p in mine if p.phase == "Failed" and not p.deleting]
    if not failures:
        return []
    latest = max(failures)
    return sorted(p.name for p in mine
                  if p.phase in ("Pending", "Running") and not p.deleting and (p.created or "") <= latest)

