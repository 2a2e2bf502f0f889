"""The lifecycle policy: from observed Jobs and pods to children and status (no cluster)."""

from __future__ import annotations

import json

from reasonops.controller.policy import JobState, PodState, evaluate_gates, plan_run

NOW = "2026-01-01T00:00:00Z"


def _body(status=None, suspend=False, generation=1):
    spec = {"suspend": True} if suspend else {}
    return {"metadata": {"name": "d", "namespace": "n", "generation": generation}, "spec": spec, "status": status or {}}


def _plan(body, jobs=(), pods=(), revision="r1", waiting=None, history_limit=2):
    return plan_run(
        body=body, revision=revision, jobs=list(jobs), pods=list(pods), job_name=f"d-{revision}", now=NOW,
        history_limit=history_limit, waiting=waiting, build_children=lambda s: [{"kind": "Job", "suspend": s}],
        summarize=lambda r: f"{r.get('samples')} samples",
    )


def _cond(status, type_):
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_first_sight_creates_the_job_and_sets_every_condition():
    plan = _plan(_body())
    assert plan.create == [{"kind": "Job", "suspend": False}]
    assert plan.status["phase"] == "Pending" and _cond(plan.status, "Ready")["status"] == "False"
    assert {c["type"] for c in plan.status["conditions"]} == {"Ready", "Progressing", "Failed", "Suspended"}
    assert plan.status["history"][0]["revision"] == "r1"


def test_running_then_succeeded_reads_the_result_from_the_termination_message():
    job = JobState(name="d-r1", revision="r1", active=1)
    running = _plan(_body(), [job], [PodState("p", "d-r1", "Running")])
    assert running.status["phase"] == "Running" and not running.create
    done = JobState(name="d-r1", revision="r1", complete=True, succeeded=1)
    pod = PodState("p", "d-r1", "Succeeded", exit_code=0, message=json.dumps({"samples": 800}))
    plan = _plan(_body(running.status), [done], [pod])
    assert plan.status["phase"] == "Succeeded" and plan.result == {"samples": 800}
    assert _cond(plan.status, "Ready")["status"] == "True"
    assert plan.status["history"][0]["summary"] == "800 samples"
    assert ("Normal", "Succeeded", "Job d-r1 completed") in plan.events


def test_a_failed_pod_surfaces_its_reason_and_message():
    job = JobState(name="d-r1", revision="r1", failed=3, failed_reason="BackoffLimitExceeded", failed_message="Job has reached the specified backoff limit")
    error = {"error": {"reason": "EmptyDataset", "message": "no problem survived the difficulty filter"}}
    plan = _plan(_body(), [job], [PodState("p", "d-r1", "Failed", exit_code=1, message=json.dumps(error))])
    assert plan.status["phase"] == "Failed" and plan.status["reason"] == "EmptyDataset"
    assert _cond(plan.status, "Failed")["message"] == "no problem survived the difficulty filter"
    plain = _plan(_body(), [job], [PodState("p", "d-r1", "Failed", exit_code=137, reason="OOMKilled", message="")])
    assert "exited with code 137 (OOMKilled)" in _cond(plain.status, "Failed")["message"]


def test_a_finished_revision_is_never_rerun_when_its_job_disappears():
    done = JobState(name="d-r1", revision="r1", complete=True)
    finished = _plan(_body(), [done], [PodState("p", "d-r1", "Succeeded", message='{"samples": 5}')]).status
    again = _plan(_body(finished), jobs=[], pods=[])
    assert again.create == [] and again.status["phase"] == "Succeeded"
    failed = _plan(_body(), [JobState(name="d-r1", revision="r1", failed_reason="BackoffLimitExceeded")]).status
    assert _plan(_body(failed)).create == []


def test_a_new_revision_supersedes_a_running_one_and_old_children_are_pruned():
    status = _plan(_body(), [JobState(name="d-r1", revision="r1", active=1)]).status
    plan = _plan(_body(status), [JobState(name="d-r1", revision="r1", active=1)], revision="r2")
    assert plan.create and "r1" in plan.delete_revisions
    assert [h["revision"] for h in plan.status["history"]] == ["r2", "r1"]
    assert plan.status["history"][1]["reason"] == "Superseded"
    # history limit 2: with r1..r4 finished, the children of r1 go
    history = [{"revision": f"r{i}", "phase": "Succeeded"} for i in (4, 3, 2, 1)]
    jobs = [JobState(name=f"d-r{i}", revision=f"r{i}", complete=True) for i in (1, 2, 3, 4)]
    pruned = _plan(_body({"history": history}), jobs, revision="r4")
    assert pruned.delete_revisions == ["r1"]


def test_suspend_is_mirrored_to_the_job_but_kueue_admission_is_left_to_kueue():
    job = JobState(name="d-r1", revision="r1", active=1)
    plan = _plan(_body(suspend=True), [job])
    assert plan.suspend_jobs == {"d-r1": True}
    suspended = JobState(name="d-r1", revision="r1", suspended=True)
    assert _plan(_body(suspend=True), [suspended]).status["phase"] == "Suspended"
    assert _plan(_body(), [suspended]).suspend_jobs == {"d-r1": False}
    queued = JobState(name="d-r1", revision="r1", suspended=True, queued=True)
    plan = _plan(_body(), [queued])
    assert plan.suspend_jobs == {} and plan.status["reason"] == "Queued"


def test_waiting_for_an_input_creates_nothing_and_records_no_revision():
    plan = _plan(_body(), waiting=("WaitingForDataset", "waiting for ReasoningDataset 'limo'"))
    assert plan.create == [] and plan.status["phase"] == "Waiting"
    assert plan.status["reason"] == "WaitingForDataset" and plan.status["history"] == []
    assert _cond(plan.status, "Progressing")["status"] == "True"


def test_condition_transition_time_moves_only_on_change():
    first = _plan(_body(), [JobState(name="d-r1", revision="r1", active=1)], [PodState("p", "d-r1", "Running")]).status
    later = plan_run(body=_body(first), revision="r1", jobs=[JobState(name="d-r1", revision="r1", active=1)],
                     pods=[PodState("p", "d-r1", "Running")], job_name="d-r1", now="2027-01-01T00:00:00Z",
                     history_limit=2, build_children=lambda s: []).status
    assert _cond(later, "Ready")["lastTransitionTime"] == NOW


def test_gates():
    results = [{"benchmark": "aime24", "score": "0.55"}, {"benchmark": "math500", "score": "0.8"}]
    out = evaluate_gates([{"benchmark": "aime24", "minScore": "0.5"}, {"benchmark": "math500", "minScore": "0.9"},
                          {"benchmark": "gpqa-diamond", "minScore": "0.1"}], results)
    assert [g["passed"] for g in out] == [True, False, False]
    assert "score" not in out[2]
