"""Each kind's decision, from what was observed to a plan (no cluster), and the one input resolution that the
operator and `reasonops run` share."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from reasonops import contract, runner
from reasonops.api.v1alpha1 import EVAL_BACKOFF_LIMIT, FINETUNE_BACKOFF_LIMIT, KINDS
from reasonops.controller import decide
from reasonops.controller.labels import ANNOTATION_SPEC_HASH
from reasonops.controller.policy import JobState, Plan, PodState, ServerState
from reasonops.controller.settings import Settings
from reasonops.errors import WorkloadError

ROOT = Path(__file__).resolve().parents[1]
NOW = "2026-01-01T00:00:00Z"
SETTINGS = Settings()


def _body(kind: str, name: str, spec: dict[str, Any], status: Optional[dict[str, Any]] = None, generation: int = 1) -> dict[str, Any]:
    return {"apiVersion": "reasonops.io/v1alpha1", "kind": kind, "spec": spec, "status": status or {},
            "metadata": {"name": name, "namespace": "local", "uid": "local", "generation": generation}}


def _observe(body: dict[str, Any], others: Optional[dict[tuple[str, str], dict[str, Any]]] = None, **observed: Any) -> decide.Observed:
    """What the handlers' gatherer hands to the decision, for `body` and the resources `others` it may name."""
    resource = KINDS[body["kind"]].model_validate({**body, "status": None})
    spec = resource.spec.to_wire()
    resolution = decide.resolution_of(body, resource, spec, lambda kind, name: (others or {}).get((kind, name)), SETTINGS)
    return decide.Observed(body=body, resource=contract.with_defaults(resource), spec=spec, resolution=resolution,
                           settings=SETTINGS, now=NOW, **observed)


def _decide(observed: decide.Observed) -> Plan:
    return decide.DECIDERS[observed.body["kind"]](observed)


def _cond(plan: Plan, type_: str) -> dict[str, Any]:
    return next(x for x in plan.status["conditions"] if x["type"] == type_)


def _done(job_name: str, revision: str, failed: bool = False) -> JobState:
    if failed:
        return JobState(name=job_name, revision=revision, failed=1, failed_reason="BackoffLimitExceeded", failed_message="too many")
    return JobState(name=job_name, revision=revision, complete=True, succeeded=1)


def _pod(job_name: str, result: dict[str, Any], index: int = 0, phase: str = "Succeeded", exit_code: int = 0) -> PodState:
    return PodState(name=f"{job_name}-{index}", job=job_name, phase=phase, message=json.dumps(result), exit_code=exit_code)


DATASET = {"sources": [{"name": "s", "path": "/data/problems.jsonl"}], "output": {"path": "/out/data"}}
FINETUNE = {"baseModel": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "datasetRef": {"name": "ds"}, "output": {"path": "/out/models"}}
SUCCEEDED_DATASET = {"phase": "Succeeded", "output": {"revision": "d1", "location": "/out/data/ds/d1"}}


def _finetune_status(**extra: Any) -> dict[str, Any]:
    return {"phase": "Succeeded", "modelLocation": "/out/models/ft/f1/model", "modelRevision": "f1", **extra}


def _eval_spec(**spec: Any) -> dict[str, Any]:
    return {"model": {"fineTuneJob": "ft"}, "benchmarks": [{"name": "math500"}], **spec}


# --- ReasoningDataset --------------------------------------------------------------------------


def test_a_dataset_on_first_sight_creates_its_configmap_and_job():
    plan = _decide(_observe(_body("ReasoningDataset", "ds", DATASET)))
    assert [x["kind"] for x in plan.create] == ["ConfigMap", "Job"]
    assert plan.create[1]["spec"]["backoffLimit"] is not None  # the API's default, filled before anyone decides
    assert plan.status["phase"] == "Pending" and _cond(plan, "Progressing")["status"] == "True"
    assert plan.status["children"] == [{"kind": "ConfigMap", "name": plan.create[0]["metadata"]["name"]},
                                       {"kind": "Job", "name": plan.create[1]["metadata"]["name"]}]


def test_a_dataset_whose_sampler_names_an_evalrun_waits_for_its_server():
    spec = {**DATASET, "stages": [{"name": "gen", "generate": {"teachers": [{"name": "t", "sampler": {"model": "teacher", "evalRun": "teacher"}}]}}]}
    plan = _decide(_observe(_body("ReasoningDataset", "ds", spec)))
    assert plan.create == [] and plan.status["phase"] == "Waiting" and plan.status["reason"] == "EndpointNotFound"
    starting = _body("EvalRun", "teacher", _eval_spec(), {"endpoint": "http://t/v1", "conditions": [
        {"type": "Serving", "status": "False", "message": "server pod x: CrashLoopBackOff"}]})
    plan = _decide(_observe(_body("ReasoningDataset", "ds", spec), {("EvalRun", "teacher"): starting}))
    assert plan.status["reason"] == "WaitingForEndpoint" and "CrashLoopBackOff" in _cond(plan, "Ready")["message"]
    serving = {**starting, "status": {"endpoint": "http://t/v1", "conditions": [{"type": "Serving", "status": "True"}]}}
    observed = _observe(_body("ReasoningDataset", "ds", spec), {("EvalRun", "teacher"): serving})
    assert observed.resolution.context.endpoints == {"teacher": "http://t/v1"}
    assert observed.resolution.context.servedModelNames == {"teacher": "teacher"}  # the EvalRun's served name: its name
    assert [x["kind"] for x in _decide(observed).create] == ["ConfigMap", "Job"]


def test_a_dataset_that_runs_code_waits_for_its_sandbox_and_removes_it_when_done():
    spec = {**DATASET, "sources": [{"name": "s", "path": "/data/taco.jsonl", "codeTests": "taco"}]}
    observed = _observe(_body("ReasoningDataset", "ds", spec))
    plan = _decide(observed)
    assert [x["kind"] for x in plan.sandbox.apply] == ["Deployment", "Service", "NetworkPolicy"]
    assert plan.create == [] and plan.status["reason"] == "WaitingForSandbox"
    done = _decide(_observe(_body("ReasoningDataset", "ds", spec), jobs=[_done(observed.job_name, observed.resolution.revision)],
                            sandbox=ServerState(name="ds-sandbox", current=True, updated_available=1)))
    assert done.status["phase"] == "Succeeded" and done.sandbox.delete == "ds-sandbox"


def test_a_succeeded_dataset_reports_its_output_in_canonical_form():
    observed = _observe(_body("ReasoningDataset", "ds", DATASET))
    job = observed.job_name
    result = {"location": f"/out/data/ds/{observed.resolution.revision}", "samples": 7, "contentHash": "h",
              "stageCounts": [{"stage": "dedupe", "kept": 7, "dropped": 1}]}
    plan = _decide(_observe(_body("ReasoningDataset", "ds", DATASET), jobs=[_done(job, observed.resolution.revision)], pods=[_pod(job, result)]))
    assert plan.status["output"] == {"revision": observed.resolution.revision, "location": result["location"], "contentHash": "h", "samples": 7}
    assert plan.status["selected"] == 7 and plan.status["stageCounts"] == [{"stage": "dedupe", "kept": 7, "dropped": 1}]
    assert _cond(plan, "Ready")["status"] == "True" and plan.status["history"][0]["summary"] == "7 samples"


def test_a_job_whose_pods_are_refused_shows_kubernetes_reason():
    observed = _observe(_body("ReasoningDataset", "ds", DATASET))
    job = JobState(name=observed.job_name, revision=observed.resolution.revision, created=NOW)
    plan = _decide(_observe(_body("ReasoningDataset", "ds", DATASET), jobs=[job],
                            creation_problem=("FailedCreate", "pods are forbidden: violates PodSecurity")))
    assert plan.status["reason"] == "FailedCreate" and "PodSecurity" in _cond(plan, "Ready")["message"]
    assert ("Warning", "FailedCreate", "pods are forbidden: violates PodSecurity") in plan.events


def test_suspend_creates_the_job_suspended_and_says_so():
    plan = _decide(_observe(_body("ReasoningDataset", "ds", {**DATASET, "suspend": True})))
    assert plan.create[1]["spec"]["suspend"] is True
    assert plan.status["phase"] == "Suspended" and _cond(plan, "Suspended")["status"] == "True"


# --- FineTuneJob -------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset,reason", [
    (None, "DatasetNotFound"),
    ({"phase": "Running", "reason": "Running"}, "WaitingForDataset"),
    ({"phase": "Failed", "conditions": [{"type": "Failed", "status": "True", "message": "no rows"}]}, "DatasetFailed"),
])
def test_a_finetune_waits_for_its_dataset_with_the_reason(dataset, reason):
    others = {} if dataset is None else {("ReasoningDataset", "ds"): _body("ReasoningDataset", "ds", DATASET, dataset)}
    plan = _decide(_observe(_body("FineTuneJob", "ft", FINETUNE), others))
    assert plan.create == [] and plan.status["phase"] == "Waiting" and plan.status["reason"] == reason
    assert "children" not in plan.status and plan.status["history"] == []


def test_a_finetune_trains_on_the_datasets_output_with_the_apis_backoff_limit():
    others = {("ReasoningDataset", "ds"): _body("ReasoningDataset", "ds", DATASET, SUCCEEDED_DATASET)}
    plan = _decide(_observe(_body("FineTuneJob", "ft", FINETUNE), others))
    configmap, service, job = plan.create
    assert job["spec"]["backoffLimit"] == FINETUNE_BACKOFF_LIMIT
    document = json.loads(configmap["data"]["resource.json"])
    assert (document["context"]["datasetLocation"], document["context"]["datasetRevision"]) == ("/out/data/ds/d1", "d1")
    assert plan.status["datasetRevision"] == "d1" and plan.status["history"][0]["location"].endswith("/model")


def test_a_new_dataset_revision_supersedes_the_running_training():
    others = {("ReasoningDataset", "ds"): _body("ReasoningDataset", "ds", DATASET, SUCCEEDED_DATASET)}
    before = _observe(_body("FineTuneJob", "ft", FINETUNE), others)
    running = JobState(name=before.job_name, revision=before.resolution.revision, active=1)
    first = _decide(_observe(_body("FineTuneJob", "ft", FINETUNE), others, jobs=[running]))
    newer = {("ReasoningDataset", "ds"): _body("ReasoningDataset", "ds", DATASET, {**SUCCEEDED_DATASET, "output": {"revision": "d2", "location": "/out/data/ds/d2"}})}
    after = _observe(_body("FineTuneJob", "ft", FINETUNE, first.status), newer, jobs=[running])
    plan = _decide(after)
    assert after.resolution.revision != before.resolution.revision
    assert before.resolution.revision in plan.delete_revisions and [x["kind"] for x in plan.create] == ["ConfigMap", "Service", "Job"]
    assert plan.status["history"][1]["reason"] == "Superseded"


def test_manual_retrain_keeps_the_dataset_it_trained_on_until_its_spec_changes():
    spec = {**FINETUNE, "retrainPolicy": "Manual"}
    trained = {"observedGeneration": 1, "datasetRevision": "d1", "datasetLocation": "/out/data/ds/d1"}
    newer = {("ReasoningDataset", "ds"): _body("ReasoningDataset", "ds", DATASET, {"output": {"revision": "d2", "location": "/x/d2"}})}
    assert _observe(_body("FineTuneJob", "ft", spec, trained), newer).resolution.input.revision == "d1"
    assert _observe(_body("FineTuneJob", "ft", spec, trained, generation=2), newer).resolution.input.revision == "d2"


def test_a_failed_training_says_why_from_its_pod():
    others = {("ReasoningDataset", "ds"): _body("ReasoningDataset", "ds", DATASET, SUCCEEDED_DATASET)}
    observed = _observe(_body("FineTuneJob", "ft", FINETUNE), others)
    job = observed.job_name
    error = {"error": {"reason": "OutputUnwritable", "message": "cannot write /out/models"}}
    plan = _decide(_observe(_body("FineTuneJob", "ft", FINETUNE), others, jobs=[_done(job, observed.resolution.revision, failed=True)],
                            pods=[_pod(job, error, phase="Failed", exit_code=1)]))
    assert plan.status["phase"] == "Failed" and _cond(plan, "Failed") | {"lastTransitionTime": None} == {
        "type": "Failed", "status": "True", "reason": "OutputUnwritable", "message": "cannot write /out/models",
        "observedGeneration": 1, "lastTransitionTime": None}


def test_a_succeeded_training_reports_its_model_and_checkpoints():
    others = {("ReasoningDataset", "ds"): _body("ReasoningDataset", "ds", DATASET, SUCCEEDED_DATASET)}
    observed = _observe(_body("FineTuneJob", "ft", FINETUNE), others)
    job, revision = observed.job_name, observed.resolution.revision
    output = f"/out/models/ft/{revision}"
    result = {"modelLocation": f"{output}/model", "finalLoss": 0.25, "contextLength": 4096, "checkpoints": [{"step": 10, "epoch": "1.00"}]}
    plan = _decide(_observe(_body("FineTuneJob", "ft", FINETUNE), others, jobs=[_done(job, revision)], pods=[_pod(job, result)]))
    assert plan.status["modelLocation"] == f"{output}/model" and plan.status["modelRevision"] == revision
    assert plan.status["lastLoss"] == "0.2500" and plan.status["contextLength"] == 4096
    assert plan.status["checkpoints"] == [{"name": "step-10", "step": 10, "epoch": "1.00", "location": f"{output}/checkpoints/step-10/model"}]


def test_an_exported_dataset_and_model_say_where_in_status():
    exported = {**DATASET, "export": {"uri": "s3://team/exports"}}
    observed = _observe(_body("ReasoningDataset", "ds", exported))
    job, revision = observed.job_name, observed.resolution.revision
    result = {"location": f"/out/data/ds/{revision}", "samples": 7, "exportLocation": f"s3://team/exports/ds/{revision}"}
    plan = _decide(_observe(_body("ReasoningDataset", "ds", exported), jobs=[_done(job, revision)], pods=[_pod(job, result)]))
    assert plan.status["output"]["exportLocation"] == f"s3://team/exports/ds/{revision}"
    others = {("ReasoningDataset", "ds"): _body("ReasoningDataset", "ds", DATASET, SUCCEEDED_DATASET)}
    spec = {**FINETUNE, "export": {"uri": "s3://team/exports"}}
    observed = _observe(_body("FineTuneJob", "ft", spec), others)
    job, revision = observed.job_name, observed.resolution.revision
    result = {"modelLocation": f"/out/models/ft/{revision}/model", "exportLocation": f"s3://team/exports/ft/{revision}"}
    plan = _decide(_observe(_body("FineTuneJob", "ft", spec), others, jobs=[_done(job, revision)], pods=[_pod(job, result)]))
    assert plan.status["exportLocation"] == f"s3://team/exports/ft/{revision}"


def test_a_failed_training_pod_restarts_its_group():
    spec = {**FINETUNE, "numNodes": 2}
    others = {("ReasoningDataset", "ds"): _body("ReasoningDataset", "ds", DATASET, SUCCEEDED_DATASET)}
    observed = _observe(_body("FineTuneJob", "ft", spec), others)
    job = JobState(name=observed.job_name, revision=observed.resolution.revision, active=1, failed=1)
    pods = [PodState(name="a", job=job.name, phase="Failed", finished="2026-01-01T00:00:05Z", created="2026-01-01T00:00:00Z"),
            PodState(name="b", job=job.name, phase="Running", created="2026-01-01T00:00:00Z")]
    plan = _decide(_observe(_body("FineTuneJob", "ft", spec), others, jobs=[job], pods=pods))
    assert plan.evict == ["b"] and plan.status["restarts"] == 1 and any(e[1] == "GroupRestart" for e in plan.events)


# --- EvalRun -----------------------------------------------------------------------------------


@pytest.mark.parametrize("finetune,reason", [
    (None, "ModelNotFound"),
    ({"phase": "Running", "reason": "Running"}, "WaitingForModel"),
    ({"phase": "Failed"}, "ModelFailed"),
])
def test_an_evaluation_waits_for_its_model_and_applies_nothing(finetune, reason):
    others = {} if finetune is None else {("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, finetune)}
    observed = _observe(_body("EvalRun", "ev", _eval_spec()), others)
    plan = _decide(observed)
    # No output exists before the model is known (no scratch fallback), so nothing is built or applied.
    assert observed.resolution.output is None
    assert plan.status["phase"] == "Waiting" and plan.status["reason"] == reason
    assert plan.create == [] and plan.server.apply == [] and plan.server.delete is None


def test_an_evaluation_starts_its_server_first_and_waits_for_it():
    others = {("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, _finetune_status())}
    plan = _decide(_observe(_body("EvalRun", "ev", _eval_spec()), others))
    assert [x["kind"] for x in plan.server.apply] == ["Deployment", "Service"] and plan.create == []
    assert plan.status["reason"] == "WaitingForServer"
    assert _cond(plan, "Serving")["reason"] == "ServerStarting" and _cond(plan, "Passed")["status"] == "Unknown"


def _applied_server(plan: Plan, ready: bool) -> ServerState:
    annotations = plan.server.apply[0]["metadata"]["annotations"]
    return ServerState(name="ev-server", spec_hash=annotations[ANNOTATION_SPEC_HASH], applied_at=NOW,
                       current=True, updated_available=1 if ready else 0)


def test_a_serving_evaluation_runs_once_its_server_is_ready():
    others = {("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, _finetune_status())}
    first = _decide(_observe(_body("EvalRun", "ev", _eval_spec()), others))
    plan = _decide(_observe(_body("EvalRun", "ev", _eval_spec()), others, server=_applied_server(first, ready=True)))
    configmap, job = plan.create
    assert job["spec"]["backoffLimit"] == EVAL_BACKOFF_LIMIT
    context = json.loads(configmap["data"]["resource.json"])["context"]
    assert context["endpoint"] == "http://ev-server.local.svc:8000/v1" and context["servedModelName"] == "ev"
    assert _cond(plan, "Serving") | {"lastTransitionTime": None} == {
        "type": "Serving", "status": "True", "reason": "ServerReady", "message": context["endpoint"],
        "observedGeneration": 1, "lastTransitionTime": None}
    assert {"kind": "Deployment", "name": "ev-server"} in plan.status["children"]


def test_a_crashing_server_is_named_in_the_serving_condition():
    others = {("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, _finetune_status())}
    first = _decide(_observe(_body("EvalRun", "ev", _eval_spec()), others))
    crashing = PodState(name="ev-server-x", job="", phase="Running", waiting_reason="CrashLoopBackOff", server=True)
    plan = _decide(_observe(_body("EvalRun", "ev", _eval_spec()), others, server=_applied_server(first, ready=False), pods=[crashing]))
    assert plan.status["reason"] == "CrashLoopBackOff" and _cond(plan, "Serving")["reason"] == "CrashLoopBackOff"
    assert plan.requeue_after == decide.SERVER_RECHECK_SECONDS


def test_a_too_long_max_model_len_waits_before_any_gpu_is_asked_for():
    others = {("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, _finetune_status(contextLength=4096))}
    plan = _decide(_observe(_body("EvalRun", "ev", _eval_spec(serving={"maxModelLen": 8192})), others))
    assert plan.status["reason"] == "MaxModelLenTooLong" and plan.server.apply == []


def _succeeded_eval(spec: dict[str, Any], scores: dict[str, str], status: Optional[dict[str, Any]] = None) -> Plan:
    others = {("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, _finetune_status())}
    observed = _observe(_body("EvalRun", "ev", spec, status), others)
    job, revision = observed.job_name, observed.resolution.revision
    result = {"results": [{"benchmark": b, "score": s, "problems": 10} for b, s in scores.items()], "accuracy": 0.5}
    return _decide(_observe(_body("EvalRun", "ev", spec, status), others, jobs=[_done(job, revision)], pods=[_pod(job, result)]))


def test_gates_pass_or_fail_on_the_results():
    gates = [{"benchmark": "math500", "minScore": "0.5"}]
    passed = _succeeded_eval(_eval_spec(gates=gates, backend="offline"), {"math500": "0.6"})
    assert _cond(passed, "Passed")["reason"] == "GatesPassed" and passed.status["accuracy"] == "0.6000"
    assert passed.scores == {"math500": 0.6}
    failed = _succeeded_eval(_eval_spec(gates=gates, backend="offline"), {"math500": "0.4"})
    assert _cond(failed, "Passed") | {"lastTransitionTime": None} == {
        "type": "Passed", "status": "False", "reason": "GatesFailed", "message": "math500: 0.4 < 0.5",
        "observedGeneration": 1, "lastTransitionTime": None}
    ungated = _succeeded_eval(_eval_spec(backend="offline"), {"math500": "0.4"})
    assert _cond(ungated, "Passed")["reason"] == "NoGates"


def test_a_gate_edit_rejudges_the_stored_results_with_an_event():
    gates = [{"benchmark": "math500", "minScore": "0.5"}]
    first = _succeeded_eval(_eval_spec(gates=gates, backend="offline"), {"math500": "0.6"})
    stricter = _succeeded_eval(_eval_spec(gates=[{"benchmark": "math500", "minScore": "0.7"}], backend="offline"), {"math500": "0.6"}, first.status)
    assert _cond(stricter, "Passed")["reason"] == "GatesFailed"
    assert ("Warning", "GatesFailed", "math500: 0.6 < 0.7") in stricter.events


def test_the_server_goes_after_the_evaluation_when_not_kept():
    spec = _eval_spec(serving={"keepAfterEval": False})
    others = {("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, _finetune_status())}
    observed = _observe(_body("EvalRun", "ev", spec), others)
    result = {"results": [{"benchmark": "math500", "score": "0.5"}]}
    plan = _decide(_observe(_body("EvalRun", "ev", spec), others, jobs=[_done(observed.job_name, observed.resolution.revision)],
                            pods=[_pod(observed.job_name, result)], server=ServerState(name="ev-server", current=True, updated_available=1)))
    assert plan.server.delete == "ev-server" and _cond(plan, "Serving")["reason"] == "ServerRemoved"
    assert {x["kind"] for x in plan.status["children"]} == {"ConfigMap", "Job"}


def _checkpointed(kept: list[dict[str, Any]], **model: Any) -> tuple[dict[str, Any], dict]:
    spec = _eval_spec(model={"fineTuneJob": "ft", **model}, backend="offline", selection={"benchmark": "math500"})
    return spec, {("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, _finetune_status(checkpoints=kept))}


KEPT = [{"name": f"step-{s}", "step": s, "epoch": str(s // 10), "location": f"/out/models/ft/f1/checkpoints/step-{s}/model"} for s in (10, 20)]


def test_no_kept_checkpoints_is_a_reason_to_wait():
    spec, others = _checkpointed([], checkpoints="all")
    plan = _decide(_observe(_body("EvalRun", "ev", spec), others))
    assert plan.status["reason"] == "NoCheckpoints" and "checkpoints.export: true" in _cond(plan, "Ready")["message"]
    spec, others = _checkpointed(KEPT, checkpoints="steps", checkpointSteps=[30])
    assert _decide(_observe(_body("EvalRun", "ev", spec), others)).status["reason"] == "NoCheckpoints"


def test_each_checkpoint_is_rated_by_its_pod_and_the_best_is_selected():
    spec, others = _checkpointed(KEPT, checkpoints="all")
    observed = _observe(_body("EvalRun", "ev", spec), others)
    job, revision = observed.job_name, observed.resolution.revision
    first = _decide(observed)
    assert first.create[1]["spec"]["completions"] == 2
    pods = [_pod(job, {"checkpoint": {"name": t["name"]}, "results": [{"benchmark": "math500", "score": score}]}, index)
            for index, (t, score) in enumerate(zip(KEPT, ("0.7", "0.6")))]
    plan = _decide(_observe(_body("EvalRun", "ev", spec), others, jobs=[_done(job, revision)], pods=pods))
    assert plan.status["selectedCheckpoint"]["name"] == "step-10" and plan.status["modelLocation"] == KEPT[0]["location"]
    assert [x["results"][0]["score"] for x in plan.status["checkpoints"]] == ["0.7", "0.6"]
    assert plan.status["history"][0]["summary"].startswith("selected step-10")


# --- relative gates: the baseline EvalRun is observed, waited for, mounted; the comparisons judged ----------

RELATIVE = [{"benchmark": "math500", "baseline": "base", "minDifference": "0.05", "bound": "lower95"}]
BASE_OUTPUT = "pvc://evals/base/b1"


def _baseline(phase: str = "Succeeded", revision: str = "b1", **spec: Any) -> dict[tuple[str, str], dict[str, Any]]:
    status = {"phase": phase, "revision": revision, "reason": phase,
              "history": [{"revision": revision, "phase": phase, **({"location": BASE_OUTPUT} if phase == "Succeeded" else {})}]}
    if phase == "Failed":
        status["conditions"] = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "the pod failed"}]
    base_spec = {"model": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "benchmarks": [{"name": "math500"}],
                 "output": {"volume": {"claimName": "evals", "path": "/"}, "credentialsSecretRef": "store"}, **spec}
    return {("EvalRun", "base"): _body("EvalRun", "base", base_spec, status),
            ("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, _finetune_status())}


@pytest.mark.parametrize("others,name,reason,words", [
    ({("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, _finetune_status())}, "ev", "BaselineNotFound", "'base' (a relative gate's baseline) does not exist"),
    (_baseline("Running"), "ev", "WaitingForBaseline", "waiting for EvalRun 'base' (a relative gate's baseline) to succeed (Running)"),
    (_baseline("Failed"), "ev", "BaselineFailed", "failed: the pod failed"),
    (_baseline(model={"fineTuneJob": "ft", "checkpoints": "all"}, backend="offline"), "ev", "BaselineUnusable", "a baseline must evaluate a single model"),
    (_baseline(), "base", "BaselineUnusable", "names this EvalRun itself"),
])
def test_a_relative_gate_waits_for_its_baseline_with_the_reason(others, name, reason, words):
    plan = _decide(_observe(_body("EvalRun", name, _eval_spec(gates=RELATIVE, backend="offline")), others))
    assert plan.status["reason"] == reason and words in _cond(plan, "Ready")["message"]
    assert plan.create == [] and _cond(plan, "Passed")["status"] == "Unknown"


def test_a_relative_gate_mounts_its_baselines_output_and_a_new_baseline_revision_is_a_new_revision():
    observed = _observe(_body("EvalRun", "ev", _eval_spec(gates=RELATIVE, backend="offline")), _baseline())
    configmap, job = _decide(observed).create
    context = json.loads(configmap["data"]["resource.json"])["context"]
    assert context["baselines"] == [{"name": "base", "revision": "b1", "location": "/mnt/pvc/evals/base/b1"}]
    pod = job["spec"]["template"]["spec"]
    assert "evals" in [(v.get("persistentVolumeClaim") or {}).get("claimName") for v in pod["volumes"]]
    assert {"secretRef": {"name": "store"}} in pod["containers"][0]["envFrom"]
    again = _observe(_body("EvalRun", "ev", _eval_spec(gates=RELATIVE, backend="offline")), _baseline(revision="b2"))
    assert again.resolution.revision != observed.resolution.revision
    absolute = _observe(_body("EvalRun", "ev", _eval_spec(backend="offline")), _baseline())
    assert absolute.resolution.baselines == () and absolute.resolution.context.baselines == []


def _compared(spec: dict[str, Any], comparisons: list[dict[str, Any]], status: Optional[dict[str, Any]] = None) -> Plan:
    observed = _observe(_body("EvalRun", "ev", spec, status), _baseline())
    job, revision = observed.job_name, observed.resolution.revision
    result = {"results": [{"benchmark": "math500", "score": "0.6", "problems": 30}], "comparisons": comparisons}
    return _decide(_observe(_body("EvalRun", "ev", spec, status), _baseline(), jobs=[_done(job, revision)], pods=[_pod(job, result)]))


def test_a_relative_gate_is_judged_on_the_paired_difference_and_recorded():
    comparison = {"baseline": "base", "baselineRevision": "b1", "benchmark": "math500", "problems": 30, "difference": "0.1333",
                  "ciLow": "0.0333", "ciHigh": "0.2333", "wins": 5, "losses": 1}
    failed = _compared(_eval_spec(gates=RELATIVE, backend="offline"), [comparison])
    assert failed.status["comparisons"] == [comparison]
    assert failed.status["gates"] == [{"benchmark": "math500", "baseline": "base", "minDifference": "0.05", "bound": "lower95",
                                       "score": "0.0333", "passed": False}]
    assert _cond(failed, "Passed")["message"] == "math500: lower 95% bound of the difference to EvalRun base 0.0333 < 0.05"
    # A threshold edit makes no new revision: the stored comparison is judged again.
    looser = [{**RELATIVE[0], "minDifference": "0.03"}]
    relaxed = _decide(_observe(_body("EvalRun", "ev", _eval_spec(gates=looser, backend="offline"), failed.status), _baseline()))
    assert _cond(relaxed, "Passed")["reason"] == "GatesPassed" and relaxed.status["comparisons"] == [comparison]
    assert ("Normal", "GatesPassed", "1 gates passed") in relaxed.events


def test_a_refused_comparison_fails_the_gate_and_says_why():
    refused = {"baseline": "base", "benchmark": "math500", "refused": "not the same problems under the same protocol: different protocol"}
    plan = _compared(_eval_spec(gates=RELATIVE, backend="offline"), [refused])
    assert _cond(plan, "Passed")["reason"] == "GatesFailed"
    assert _cond(plan, "Passed")["message"] == "math500: cannot compare with EvalRun base: " + refused["refused"]


def test_an_invalid_spec_fails_with_every_problem_named():
    body = _body("EvalRun", "ev", {"benchmarks": []})
    with pytest.raises(Exception) as error:
        KINDS["EvalRun"].model_validate(body)
    plan = decide.decide_invalid(body, error.value, NOW)
    assert plan.status["phase"] == "Failed" and _cond(plan, "Failed")["reason"] == "InvalidSpec" and plan.create == []


# --- the one input resolution: divergences decided once -------------------------------------------


def _resolve(spec: dict[str, Any], others: Optional[dict] = None, server_url: Optional[str] = None) -> contract.Resolution:
    res = KINDS["EvalRun"].model_validate(_body("EvalRun", "ev", spec))
    return contract.resolve(res, res.spec.to_wire(), lambda kind, name: (others or {}).get((kind, name)), server_url=server_url)


def test_the_served_model_name_is_the_servedmodelname_else_the_resource_name():
    """Not the model's location (which the operator used for an endpoint or offline): the server is started
    with this name, the workload asks for it, and the API documents the resource name as the default."""
    endpoint = {"model": {"endpoint": {"url": "http://vllm:8000/v1"}}, "benchmarks": [{"name": "math500"}], "output": {"path": "/o"}}
    assert _resolve(endpoint).context.servedModelName == "ev"
    named = {**endpoint, "model": {**endpoint["model"], "servedModelName": "qwen"}}
    assert _resolve(named).context.servedModelName == "qwen"
    served = {"model": {"name": "/models/m"}, "benchmarks": [{"name": "math500"}], "output": {"path": "/o"}}
    assert _resolve(served, server_url="http://ev-server/v1").context.servedModelName == "ev"
    offline = {**served, "backend": "offline"}  # the pod loads the weights from modelLocation: no name is asked for
    assert _resolve(offline).context.servedModelName is None and _resolve(offline).context.modelLocation == "/models/m"


def test_an_evaluation_next_to_its_model_has_no_output_before_the_model_exists():
    """The operator used /tmp/reasonops/<name>/<revision> (lost with the pod) where `reasonops run` asserted."""
    waiting = _resolve(_eval_spec())
    assert waiting.output is None and waiting.waiting[0] == "ModelNotFound"
    known = _resolve(_eval_spec(), {("FineTuneJob", "ft"): _body("FineTuneJob", "ft", FINETUNE, _finetune_status())})
    assert known.output == f"/out/models/ft/f1/evals/ev/{known.revision}"


def test_a_local_run_of_a_missing_reference_says_so(tmp_path):
    res = KINDS["EvalRun"].model_validate(_body("EvalRun", "ev", _eval_spec()))
    with pytest.raises(WorkloadError) as error:
        runner.local_document(res, tmp_path)
    assert error.value.reason == "ModelNotFound" and "put it in the same file or run it first" in error.value.message


# --- the same resources through the operator and `reasonops run` ----------------------------------


def _load(paths: list[Path], substitutions: dict[str, str]) -> list[dict[str, Any]]:
    bodies = []
    for path in paths:
        text = string.Template(path.read_text()).safe_substitute(substitutions)
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["metadata"].update(namespace="local", uid="local", generation=1)
                bodies.append(doc)
    order = {"ReasoningDataset": 0, "FineTuneJob": 1, "EvalRun": 2}
    return sorted(bodies, key=lambda b: (order[b["kind"]], bool(b["spec"].get("model", {}).get("evalRun"))))


def _workload_result(kind: str, doc: contract.WorkloadDocument) -> list[dict[str, Any]]:
    """What each pod of a revision reports (paths as the workload sees them): one result per pod."""
    if kind == "ReasoningDataset":
        return [{"location": doc.output, "samples": 3, "contentHash": "h"}]
    if kind == "FineTuneJob":
        return [{"modelLocation": f"{doc.output}/model", "finalLoss": 0.5, "contextLength": 65536,
                 "checkpoints": [{"step": 10, "epoch": "1.00"}, {"step": 20, "epoch": "2.00"}]}]
    benchmarks = [benchmark.name for benchmark in doc.spec.benchmarks]
    if doc.context.checkpoints:  # the later checkpoint scores higher
        return [{"checkpoint": {"name": t.name}, "results": [{"benchmark": b, "score": f"0.{index + 4}"} for b in benchmarks]}
                for index, t in enumerate(doc.context.checkpoints)]
    return [{"results": [{"benchmark": b, "score": "0.5"} for b in benchmarks], "accuracy": 0.5}]


def _local_result(res: Any, doc: contract.WorkloadDocument) -> dict[str, Any]:
    """What `reasonops run` keeps of a finished run: with checkpoints, the selection as the operator makes it."""
    reported = _workload_result(res.kind, doc)
    if not doc.context.checkpoints:
        return reported[0]
    best = doc.context.checkpoints[-1]
    return {"selectedCheckpoint": {**best.model_dump(exclude_none=True), "benchmark": res.spec.selection.benchmark},
            "results": reported[-1]["results"]}


def _comparable(doc: contract.WorkloadDocument, local_root: Path) -> dict[str, Any]:
    """The document less what differs by design: where a serving EvalRun's server answers (its Service, or the
    local server `run` starts with the run), and where a relative output path is (relative to the pod's working
    directory, or to --output)."""
    out = doc.as_dict()
    out["context"].pop("endpoint", None)
    for key in ("output", "outputLocation"):
        if not out[key].startswith("/") and "://" not in out[key]:
            out[key] = str(local_root / out[key])
    return out


@pytest.mark.parametrize("paths", [
    sorted((ROOT / "examples").glob("*.yaml")),
    sorted((ROOT / "examples" / "code").glob("*.yaml")),
    [ROOT / "operator" / "reasonops" / "data" / "demo.yaml"],
], ids=["examples", "examples-code", "demo"])
def test_the_operator_and_reasonops_run_hand_the_same_documents_to_the_workloads(paths, tmp_path):
    bodies = _load(paths, {"OUTPUT": str(tmp_path / "demo"), "POOL": str(tmp_path / "pool.jsonl"), "BASE_MODEL": str(tmp_path / "base")})
    volume_root = runner.local_volume_root(tmp_path / "local")
    observed_bodies: dict[tuple[str, str], dict[str, Any]] = {}
    compared = []
    for body in bodies:
        kind, name = body["kind"], body["metadata"]["name"]
        # The operator: resolve from what its indexes hold, then let the revision succeed as its pods report.
        observed = _observe(body, observed_bodies)
        res = runner.parse_resource(json.loads(json.dumps(body)))
        if observed.resolution.waiting is not None:  # a reference outside these files: both wait for it alike
            with pytest.raises(WorkloadError) as error:
                runner.local_document(res, tmp_path / "local")
            assert error.value.reason == observed.resolution.waiting[0]
            continue
        in_pod = decide.document(observed)
        jobs = [_done(observed.job_name, observed.resolution.revision)]
        pods = [_pod(observed.job_name, r, i) for i, r in enumerate(_workload_result(kind, in_pod))]
        plan = _decide(_observe(body, observed_bodies, jobs=jobs, pods=pods))
        observed_bodies[(kind, name)] = {**body, "status": plan.status}
        operator_document = contract.build_document(observed.resource, revision=observed.resolution.revision,
                                                    output=observed.resolution.output, context=observed.resolution.context,
                                                    volume_root=volume_root)
        # `reasonops run`: the same resource, references resolved to the earlier local runs.
        local_document = runner.local_document(res, tmp_path / "local")
        runner.record_local_run(tmp_path / "local", res, local_document, _local_result(res, local_document))
        assert _comparable(local_document, tmp_path / "local") == _comparable(operator_document, tmp_path / "local"), f"{kind} {name}"
        compared.append(kind)
        if kind == "EvalRun" and contract.serving_enabled(observed.resource.spec):
            # Where the server answers is the one difference: its Service, or the local server `run` starts.
            assert operator_document.context.endpoint == contract.endpoint_url(name, "local", SETTINGS.server_port)
            assert local_document.context.endpoint is None
    assert set(compared) >= {"ReasoningDataset", "EvalRun"} and len(compared) >= len(bodies) - 1, compared
