"""Per kind, one pure function from what was observed to a plan: `decide_dataset`, `decide_finetune`,
`decide_eval` (and `decide_invalid` for a spec the API would refuse).

What was observed (`Observed`) is gathered by the handlers from their watch indexes: the resource as last
seen, validated and with every default filled in (`contract.with_defaults`), its spec as written (what the
revision hashes), its inputs resolved by `contract.resolve` (the resolution `reasonops run` shares), its
Jobs and pods, its server and sandbox Deployments, and Kubernetes' reason when a Job's pods are refused.
The plan (`policy.Plan`) says everything the handlers then do: the children to create, Jobs to suspend,
resize or delete, the server and sandbox to apply or delete, pods to evict, the status with every
condition's reason and message, the events, and when to look again. Nothing here calls the API.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pydantic import ValidationError

from .. import contract, limits
from ..api import common
from ..api.common import validation_problems
from ..api.v1alpha1 import EvalRun, FineTuneJob, ReasoningDataset, Resource
from ..gates import describe_failure, judge_gates, select_checkpoint
from . import builders
from .policy import (
    RESULT_DECIMALS,
    RESULT_FIELDS,
    TERMINAL,
    JobState,
    Plan,
    PodState,
    ServerPlan,
    ServerState,
    checkpoint_reports,
    checkpoint_results,
    condition,
    current_results,
    group_restart,
    plan_run,
    plan_server,
    server_problem,
    with_condition,
)
from .sandbox_builders import build_sandbox_children
from .settings import Settings

SERVER_STARTUP_BUDGET = 1800.0  # seconds: the startup probe's budget (failureThreshold × period) with slack
SERVER_RECHECK_SECONDS = 15.0  # a starting server's budget runs out without a watch event


@dataclass(frozen=True)
class Observed:
    """What one reconcile knows about a resource."""

    body: dict[str, Any]  # the resource as last observed: metadata and status are read from here
    resource: Resource  # validated, every static default filled in (contract.with_defaults)
    spec: dict[str, Any]  # the spec on the wire as written: the input of the revision hash
    resolution: contract.Resolution  # its inputs, revision, output and pod context
    settings: Settings
    now: str
    jobs: list[JobState] = field(default_factory=list)
    pods: list[PodState] = field(default_factory=list)  # of its Jobs and (EvalRun) of its server
    server: Optional[ServerState] = None  # EvalRun: the server Deployment
    sandbox: Optional[ServerState] = None  # the sandbox Deployment of model-written code
    creation_problem: Optional[tuple[str, str]] = None  # why the current Job's pods are refused (FailedCreate)

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def generation(self) -> Optional[int]:
        return self.body["metadata"].get("generation")

    @property
    def job_name(self) -> str:
        return builders.child_name(self.name, self.resolution.revision)

    @property
    def job(self) -> Optional[JobState]:
        return next((j for j in self.jobs if j.name == self.job_name), None)

    @property
    def workload_pods(self) -> list[PodState]:
        return [x for x in self.pods if not x.server]


def resolution_of(body: dict[str, Any], resource: Resource, spec: dict[str, Any], lookup: contract.Lookup,
                  settings: Settings) -> contract.Resolution:
    """A resource's inputs as the operator resolves them (`contract.resolve`): a FineTuneJob keeps what it
    trained on while its spec is unchanged (retrainPolicy: Manual), an EvalRun's server is its Service."""
    meta = body["metadata"]
    return contract.resolve(
        resource, spec, lookup,
        pinned_dataset=pinned_dataset(body) if resource.kind == "FineTuneJob" else None,
        server_url=contract.endpoint_url(meta["name"], meta["namespace"], settings.server_port) if resource.kind == "EvalRun" else None,
    )


def document(observed: Observed) -> contract.WorkloadDocument:
    """The document of the current revision. Only built for a revision whose inputs are resolved (its output
    is decided by then: `contract.eval_output`)."""
    resolution = observed.resolution
    assert resolution.output is not None, "a revision runs only once its model, and so its output, is known"
    return contract.build_document(observed.resource, revision=resolution.revision, output=resolution.output,
                                   context=resolution.context)


def finished(body: dict[str, Any], revision: str, job: Optional[JobState]) -> bool:
    """Whether the current revision has finished (its history says so, or its Job just did)."""
    history = {h.get("revision"): h.get("phase") for h in (body.get("status") or {}).get("history") or []}
    return history.get(revision) in TERMINAL or bool(job and (job.complete or job.failed_reason))


def children(status: dict[str, Any], names: list[tuple[str, str]]) -> None:
    status["children"] = [{"kind": kind, "name": name} for kind, name in names]


def stuck(plan: Plan, problem: Optional[tuple[str, str]], generation: Optional[int]) -> None:
    """Show a problem that waiting will not cure in the conditions of a pending revision."""
    if problem is None or plan.status.get("phase") not in ("Pending", "Running"):
        return
    reason, message = problem
    status = plan.status
    status["reason"] = reason
    for type_ in (common.COND_READY, common.COND_PROGRESSING):
        old = next(x for x in status["conditions"] if x["type"] == type_)
        with_condition(status, {**old, "reason": reason, "message": message[:4096], "observedGeneration": generation})
    if not any(event[1] == reason for event in plan.events):
        plan.events.append(("Warning", reason, message[:1024]))


def sandbox(observed: Observed, done: bool) -> tuple[ServerPlan, Optional[tuple[str, str]]]:
    """The resource's sandbox service while its revision runs model-written code, removed when done; and
    why the Job should wait for it (not ready yet), else None."""
    resource = observed.resource
    wanted = contract.needs_sandbox(resource.kind, observed.spec)
    spec = getattr(resource.spec, "sandbox", None)
    plan = plan_server(
        wanted=wanted, finished=done, keep_after_eval=False,
        desired=lambda: build_sandbox_children(observed.body, observed.settings, spec), observed=observed.sandbox, now=observed.now,
    )
    if plan.ready or plan.delete or not wanted or done:
        return plan, None
    problem = server_problem(observed.sandbox if not plan.apply else None, [], observed.now, SERVER_STARTUP_BUDGET)
    return plan, problem or ("WaitingForSandbox", f"waiting for the sandbox {contract.sandbox_name(observed.name)} that runs model-written programs")


def decide_invalid(body: dict[str, Any], error: ValidationError, now: str) -> Plan:
    """A spec the API would refuse: Failed with every problem named; nothing runs."""
    problems = "; ".join(validation_problems(error, limit=5))
    generation = body["metadata"].get("generation")
    previous = (body.get("status") or {}).get("conditions") or []
    return Plan(status={
        "observedGeneration": generation, "phase": "Failed", "reason": common.REASON_INVALID_SPEC,
        "conditions": [
            condition(previous, common.COND_READY, "False", common.REASON_INVALID_SPEC, problems, generation, now),
            condition(previous, common.COND_FAILED, "True", common.REASON_INVALID_SPEC, problems, generation, now),
        ],
    })


# --- ReasoningDataset --------------------------------------------------------------------------


def decide_dataset(observed: Observed) -> Plan:
    dataset = observed.resource
    assert isinstance(dataset, ReasoningDataset)
    resolution, body = observed.resolution, observed.body
    revision, job_name, job = resolution.revision, observed.job_name, observed.job
    sandbox_plan, sandbox_wait = sandbox(observed, finished(body, revision, job))
    waiting = resolution.waiting
    if waiting is None and job is None:
        waiting = sandbox_wait
    output = resolution.output
    assert output is not None  # a dataset's output is its spec's
    plan = plan_run(
        body=body, revision=revision, jobs=observed.jobs, pods=observed.pods, job_name=job_name, now=observed.now,
        history_limit=observed.settings.history_limit, output_location=output, waiting=waiting,
        build_children=lambda suspend: builders.build_dataset_children(body, dataset, document(observed), observed.settings, suspend),
        summarize=lambda r: f"{r.get('samples')} samples" if "samples" in r else None,
    )
    plan.sandbox = sandbox_plan
    stuck(plan, observed.creation_problem, observed.generation)
    status = plan.status
    if waiting is None:
        children(status, [("ConfigMap", job_name), ("Job", job_name)])
    if plan.result is not None:
        result = plan.result
        location = document(observed).canonical(result["location"]) if result.get("location") else output
        written = {"revision": revision, "location": location, "contentHash": result.get("contentHash"), "samples": result.get("samples"),
                   "exportLocation": result.get("exportLocation")}
        status["output"] = {key: value for key, value in written.items() if value is not None}
        if result.get("samples") is not None:
            status["selected"] = int(result["samples"])
        if isinstance(result.get("stageCounts"), list):
            status["stageCounts"] = [
                {"stage": str(s.get("stage"))[:63], "kept": int(s.get("kept", 0)), "dropped": int(s.get("dropped", 0))}
                for s in result["stageCounts"][:32]
            ]
    return plan


# --- FineTuneJob -------------------------------------------------------------------------------


def pinned_dataset(body: dict[str, Any]) -> Optional[tuple[str, str]]:
    """What a FineTuneJob trained on, while its spec is unchanged (`retrainPolicy: Manual` keeps it)."""
    status = body.get("status") or {}
    unchanged = body["metadata"].get("generation") == status.get("observedGeneration")
    if unchanged and status.get("datasetRevision") and status.get("datasetLocation"):
        return status["datasetRevision"], status["datasetLocation"]
    return None


def decide_finetune(observed: Observed) -> Plan:
    finetune = observed.resource
    assert isinstance(finetune, FineTuneJob)
    resolution, body = observed.resolution, observed.body
    dataset = resolution.input
    revision, job_name, job = resolution.revision, observed.job_name, observed.job
    output = resolution.output
    assert output is not None  # a fine-tune's output is its spec's
    plan = plan_run(
        body=body, revision=revision, jobs=observed.jobs, pods=observed.pods, job_name=job_name, now=observed.now,
        history_limit=observed.settings.history_limit, waiting=resolution.waiting, output_location=contract.model_location(output),
        build_children=lambda suspend: builders.build_finetune_children(
            body, finetune, document(observed), observed.settings, suspend,
            input_locations=[dataset.location], input_secrets=[dataset.secret]),
        summarize=lambda r: f"loss {r['finalLoss']:.4g}" if isinstance(r.get("finalLoss"), (int, float)) else None,
    )
    stuck(plan, observed.creation_problem, observed.generation)
    plan.evict = group_restart(job, observed.pods) if job is not None else []
    if plan.evict:  # a failed node fails the group: its peers would hang in a collective
        plan.events.append(("Warning", "GroupRestart", f"a training pod failed: restarting its {len(plan.evict)} peers from the latest checkpoint"))
    status = plan.status
    old = body.get("status") or {}
    if resolution.waiting is None:
        status.update(datasetRevision=dataset.revision, datasetLocation=dataset.location)
        children(status, [("ConfigMap", job_name), ("Service", job_name), ("Job", job_name)])
    progress = old.get("progress") or {}
    if progress.get("revision") == revision:
        if progress.get("loss") is not None:
            status["lastLoss"] = str(progress["loss"])[:32]
            with contextlib.suppress(ValueError):
                plan.loss = float(progress["loss"])
        if progress.get("latestCheckpoint"):
            status["latestCheckpoint"] = document(observed).canonical(str(progress["latestCheckpoint"]))[:1024]
    if job is not None:
        status["restarts"] = job.failed  # pod failures the Job counted: peers it lost to a restart are not
    if plan.result is not None:
        result = plan.result
        written = document(observed)
        status["modelLocation"] = written.canonical(result["modelLocation"]) if result.get("modelLocation") else contract.model_location(output)
        status["modelRevision"] = revision
        status["exportLocation"] = str(result["exportLocation"])[:1024] if result.get("exportLocation") else None
        if isinstance(result.get("finalLoss"), (int, float)):
            status["lastLoss"] = f"{result['finalLoss']:.4f}"
        if result.get("droppedSamples") is not None:
            status["droppedSamples"] = int(result["droppedSamples"])
        if isinstance(result.get("contextLength"), int):
            status["contextLength"] = result["contextLength"]
        if result.get("latestCheckpoint"):
            status["latestCheckpoint"] = written.canonical(str(result["latestCheckpoint"]))
        status["checkpoints"] = contract.exported_checkpoints(written.outputLocation, result.get("checkpoints")) or None
    return plan


# --- EvalRun -----------------------------------------------------------------------------------


def serving_condition(server: ServerPlan, removed: bool, problem: Optional[tuple[str, str]], endpoint: Optional[str]) -> tuple[str, str, str]:
    """(status, reason, message) of an EvalRun's Serving condition."""
    if server.ready:
        return "True", common.REASON_SERVER_READY, endpoint or ""
    if removed:
        return "False", common.REASON_SERVER_REMOVED, "serving.keepAfterEval is false: the server was removed after the evaluation"
    return ("False", *(problem or (common.REASON_SERVER_STARTING, "the model server is starting")))


def gates_condition(gates: list[Any], outcome: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(status, reason, message) of the Passed condition of judged results."""
    failed = [g for g in outcome if not g["passed"]]
    if not gates:
        return "True", common.REASON_NO_GATES, "no gates configured"
    if failed:
        return "False", common.REASON_GATES_FAILED, "; ".join(describe_failure(g) for g in failed)
    return "True", common.REASON_GATES_PASSED, f"{len(outcome)} gates passed"


COMPARISON_FIELDS = ("baseline", "baselineRevision", "benchmark", "problems", "difference", "ciLow", "ciHigh", "wins", "losses", "refused")


def current_comparisons(plan_result: Optional[dict[str, Any]], phase: str, old_status: dict[str, Any], revision: str) -> list[dict[str, Any]]:
    """The paired comparisons with relative gates' baselines of the current revision: fresh from its pod, else
    those an earlier reconcile of the same revision stored (a minDifference edit re-judges them)."""
    if phase != "Succeeded":
        return []
    if plan_result is not None and isinstance(plan_result.get("results"), list):
        found = plan_result.get("comparisons")
    elif old_status.get("revision") == revision:
        found = old_status.get("comparisons")
    else:
        found = None
    return [{key: str(c[key])[:253] if key == "refused" else c[key] for key in COMPARISON_FIELDS if c.get(key) is not None}
            for c in (found if isinstance(found, list) else [])[:32] if isinstance(c, dict)]


def decide_eval(observed: Observed) -> Plan:
    evaluation = observed.resource
    assert isinstance(evaluation, EvalRun)
    resolution, body, settings, now = observed.resolution, observed.body, observed.settings, observed.now
    name, generation = observed.name, observed.generation
    model = resolution.input
    waiting = resolution.waiting
    spec = evaluation.spec
    serving = contract.serving_enabled(spec)
    too_long = limits.max_model_len_problem(spec.serving.maxModelLen, model.context_length) if serving else None
    if waiting is None and too_long:  # vLLM would refuse to start: say so before any GPU is asked for
        waiting = (common.REASON_MAX_MODEL_LEN_TOO_LONG, too_long)
    old = body.get("status") or {}
    previous_conditions = old.get("conditions") or []
    revision, job_name, job = resolution.revision, observed.job_name, observed.job
    done = finished(body, revision, job)
    keep = spec.serving.keepAfterEval is not False
    server = plan_server(
        wanted=None if (serving and waiting is not None) else serving, finished=done, keep_after_eval=keep,
        desired=lambda: builders.build_eval_server(body, evaluation, model.location, model.revision, settings, input_secrets=[model.secret]),
        observed=observed.server, now=now,
    )
    endpoint = resolution.context.endpoint
    problem = None
    requeue_after = None
    if serving and waiting is None and not server.ready and not server.delete:
        server_pods = [x for x in observed.pods if x.server]
        problem = server_problem(observed.server if not server.apply else None, server_pods, now, SERVER_STARTUP_BUDGET)
        if job is None and not done:
            waiting = problem or (common.REASON_WAITING_FOR_SERVER, f"waiting for the model server {contract.server_name(name)} to become ready")
        if not server.apply:
            requeue_after = SERVER_RECHECK_SECONDS
    sandbox_plan, sandbox_wait = sandbox(observed, done)
    if waiting is None and job is None and not done:
        waiting = sandbox_wait
    pods = observed.workload_pods
    plan = plan_run(
        body=body, revision=revision, jobs=observed.jobs, pods=pods, job_name=job_name, now=now,
        history_limit=settings.history_limit, waiting=waiting, output_location=resolution.output,
        parallelism=builders.eval_parallelism(spec, len(model.checkpoints)),
        build_children=lambda suspend: builders.build_eval_children(
            body, evaluation, document(observed), settings, suspend, model_location=model.location, input_secrets=[model.secret],
            baselines=resolution.baselines),
        # With model.checkpoints a pod's result is one checkpoint's: the history says what was selected instead.
        summarize=lambda r: f"accuracy {r['accuracy']:.3f}" if isinstance(r.get("accuracy"), (int, float)) and not model.checkpoints else None,
    )
    plan.server, plan.sandbox, plan.requeue_after = server, sandbox_plan, requeue_after
    stuck(plan, observed.creation_problem, generation)
    status = plan.status
    status.update(modelRevision=model.revision or None, modelLocation=model.location or None, endpoint=endpoint)
    removed = bool(server.delete) or (done and not keep)
    if serving:
        with_condition(status, condition(previous_conditions, common.COND_SERVING, *serving_condition(server, removed, problem, endpoint), generation, now))
    selection = spec.selection
    if model.checkpoints:  # results and gates are the selected checkpoint's
        reports = checkpoint_reports(job_name, pods)
        per_checkpoint = checkpoint_results([t.model_dump() for t in model.checkpoints], reports, old, revision)
        status["checkpoints"] = per_checkpoint
        chosen = (select_checkpoint(per_checkpoint, selection.benchmark, selection.metric)
                  if selection and status["phase"] == "Succeeded" else None)
        results = None
        if chosen:  # until then the previous selection stays (as a FineTuneJob's model does while it retrains)
            # Its results in full from its pod, else as stored, else its scores in short.
            results = (current_results(reports.get(chosen["name"]), status["phase"], old, revision)
                       or next(x["results"] for x in per_checkpoint if x["name"] == chosen["name"]))
            status["selectedCheckpoint"] = {**chosen, "modelRevision": model.revision}
            status["modelLocation"] = chosen["location"]
            for entry in status.get("history") or []:
                if entry.get("revision") == revision:
                    entry["summary"] = f"selected {chosen['name']}: {chosen['benchmark']} {chosen['metric']} {chosen['score']}"[:256]
    else:
        results = current_results(plan.result, status["phase"], old, revision)
    comparisons = current_comparisons(plan.result, status["phase"], old, revision) if results is not None else []
    gates = spec.gates or []
    if results is not None:
        results = [{key: (str(value) if key in RESULT_DECIMALS else value) for key, value in r.items() if key in RESULT_FIELDS} for r in results]
        status["results"] = results
        scores = [float(r["score"]) for r in results if r.get("score") is not None]
        status["accuracy"] = f"{sum(scores) / len(scores):.4f}" if scores else None
        if plan.result is not None:
            for r in results:
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    plan.scores[r["benchmark"]] = float(r["score"])
        outcome = [o.to_dict() for o in judge_gates(gates, results, comparisons)]
        status["gates"] = outcome or None
        status["comparisons"] = comparisons or None
        passed = gates_condition(gates, outcome)
        old_passed = next((x for x in previous_conditions if x.get("type") == common.COND_PASSED), None)
        if old_passed and old_passed.get("status") != passed[0] and old.get("revision") == revision:
            plan.events.append(("Normal" if passed[0] == "True" else "Warning", passed[1], passed[2][:1024]))
    elif status["phase"] == "Failed":
        passed = ("False", common.REASON_FAILED, "the evaluation failed")
    elif status["phase"] == "Succeeded" and model.checkpoints and selection:
        passed = ("False", common.REASON_NO_SELECTION, f"no checkpoint has a {selection.metric} on {selection.benchmark}")
        status.update(results=None, gates=None, accuracy=None)
    elif status["phase"] == "Succeeded" and model.checkpoints:
        passed = ("True", common.REASON_NO_GATES, "no gates configured (per-checkpoint results in status.checkpoints)")
    else:
        passed = ("Unknown", common.REASON_PENDING, "no results yet")
        status.update(results=None, gates=None, accuracy=None, comparisons=None)
    with_condition(status, condition(previous_conditions, common.COND_PASSED, *passed, generation, now))
    if waiting is None:
        server_children = [("Deployment", contract.server_name(name)), ("Service", contract.server_name(name))]
        children(status, [("ConfigMap", job_name), ("Job", job_name)] + (server_children if serving and not removed else []))
    return plan


DECIDERS: dict[str, Callable[[Observed], Plan]] = {
    "ReasoningDataset": decide_dataset, "FineTuneJob": decide_finetune, "EvalRun": decide_eval,
}
