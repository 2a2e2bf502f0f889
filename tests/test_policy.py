"""The lifecycle policy: from observed Jobs and pods to children and status (no cluster)."""

from __future__ import annotations

import json

from reasonops.controller.policy import JobState, KueueWorkload, PodState, kueue_waiting, plan_run

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


def test_a_job_with_kueues_label_is_never_suspended_or_resumed_by_the_operator():
    # Kueue unsuspends what it admitted and suspends what it preempts; a flip of ours would be undone (a fight).
    admitted = JobState(name="d-r1", revision="r1", active=1, queued=True)
    assert _plan(_body(suspend=True), [admitted]).suspend_jobs == {}
    preempted = JobState(name="d-r1", revision="r1", suspended=True, queued=True)
    assert _plan(_body(), [preempted]).suspend_jobs == {} and _plan(_body(suspend=True), [preempted]).suspend_jobs == {}


def test_suspending_a_queued_resource_deactivates_its_kueue_workload():
    workload = KueueWorkload("job-d-r1-x")
    running = JobState(name="d-r1", revision="r1", active=1, queued=True, kueue=workload)
    assert _plan(_body(suspend=True), [running]).activate_workloads == {"job-d-r1-x": False}
    assert _plan(_body(), [running]).activate_workloads == {}
    inactive = JobState(name="d-r1", revision="r1", suspended=True, queued=True, kueue=KueueWorkload("job-d-r1-x", active=False))
    plan = _plan(_body(suspend=True), [inactive])
    assert plan.activate_workloads == {} and plan.status["phase"] == "Suspended"
    assert _plan(_body(), [inactive]).activate_workloads == {"job-d-r1-x": True}
    done = JobState(name="d-r1", revision="r1", complete=True, queued=True, kueue=workload)
    assert _plan(_body(suspend=True), [done]).activate_workloads == {}
    # Suspended from the start: no Job until resumed (Kueue would admit a new one before it could be deactivated).
    queued_body = _body(suspend=True)
    queued_body["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpu"}
    plan = _plan(queued_body)
    assert plan.create == [] and plan.events == [] and plan.status["phase"] == "Suspended"


def test_a_queued_job_shows_kueues_own_reason():
    waiting = ("Pending", "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor gpu, 2 more needed")
    job = JobState(name="d-r1", revision="r1", suspended=True, queued=True, kueue=KueueWorkload("job-d-r1-x", waiting=waiting))
    progressing = _cond(_plan(_body(), [job]).status, "Progressing")
    assert progressing["reason"] == "Queued"
    assert progressing["message"] == f"Job d-r1 waits for admission by Kueue (Pending: {waiting[1]})"


def test_kueues_reason_is_its_quota_reserved_condition_while_false():
    pending = {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": "insufficient unused quota"}
    assert kueue_waiting([pending]) == ("Pending", "insufficient unused quota")
    assert kueue_waiting([{**pending, "reason": "Inadmissible", "message": "LocalQueue gpu doesn't exist"}]) == (
        "Inadmissible", "LocalQueue gpu doesn't exist")
    assert kueue_waiting([{**pending, "status": "True"}, {"type": "Admitted", "status": "True"}]) is None
    assert kueue_waiting([]) is None  # Kueue has not looked at it yet


def test_a_parallelism_edit_reaches_the_running_job_but_not_a_kueue_admitted_or_finished_one():
    def planned(job, parallelism=1):
        return plan_run(body=_body(), revision="r1", jobs=[job], pods=[], job_name="d-r1", now=NOW, history_limit=2,
                        build_children=lambda s: [], parallelism=parallelism).parallelism_jobs
    assert planned(JobState(name="d-r1", revision="r1", active=3, parallelism=3)) == {"d-r1": 1}
    assert planned(JobState(name="d-r1", revision="r1", active=1, parallelism=1)) == {}
    assert planned(JobState(name="d-r1", revision="r1", active=3, parallelism=3), parallelism=None) == {}
    assert planned(JobState(name="d-r1", revision="r1", active=3, parallelism=3, queued=True)) == {}
    assert planned(JobState(name="d-r1", revision="r1", complete=True, parallelism=3)) == {}


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


# --- the server of an EvalRun ---------------------------------------------------------------------

from reasonops.controller import policy  # noqa: E402
from reasonops.controller.labels import ANNOTATION_APPLIED_AT, ANNOTATION_SPEC_HASH  # noqa: E402


def _server_objects(replicas=1):
    return [{"kind": "Deployment", "metadata": {"name": "ev-server"}, "spec": {"replicas": replicas}},
            {"kind": "Service", "metadata": {"name": "ev-server"}, "spec": {}}]


def _applied(objects):
    """What the watch shows after the operator applied `objects` and the rollout finished."""
    plan = policy.plan_server(wanted=True, finished=False, keep_after_eval=True, desired=lambda: objects, observed=None, now=NOW)
    ann = plan.apply[0]["metadata"]["annotations"]
    return policy.ServerState(name="ev-server", spec_hash=ann[ANNOTATION_SPEC_HASH], applied_at=ann[ANNOTATION_APPLIED_AT],
                         current=True, updated_available=1)


def test_an_edit_of_spec_serving_reaches_the_deployment_and_nothing_else_is_reapplied():
    observed = _applied(_server_objects(replicas=1))
    same = policy.plan_server(wanted=True, finished=False, keep_after_eval=True, desired=lambda: _server_objects(1),
                         observed=observed, now=NOW)
    assert same.apply == [] and same.ready and same.delete is None
    edited = policy.plan_server(wanted=True, finished=False, keep_after_eval=True, desired=lambda: _server_objects(3),
                           observed=observed, now=NOW)
    assert [o["spec"].get("replicas") for o in edited.apply] == [3, None] and not edited.ready


def test_keep_after_eval_false_removes_the_server_once_and_never_recreates_it():
    observed = _applied(_server_objects())
    first = policy.plan_server(wanted=True, finished=True, keep_after_eval=False, desired=_server_objects, observed=observed, now=NOW)
    assert first.delete == "ev-server" and first.apply == []
    for _ in range(3):  # every later reconcile of the finished revision: nothing to create
        later = policy.plan_server(wanted=True, finished=True, keep_after_eval=False, desired=_server_objects, observed=None, now=NOW)
        assert later.apply == [] and later.delete is None


def test_offline_or_endpoint_runs_remove_a_server_and_unknown_models_leave_it_alone():
    observed = _applied(_server_objects())
    assert policy.plan_server(wanted=False, finished=False, keep_after_eval=True, desired=_server_objects,
                         observed=observed, now=NOW).delete == "ev-server"
    untouched = policy.plan_server(wanted=None, finished=False, keep_after_eval=True, desired=_server_objects, observed=observed, now=NOW)
    assert untouched.apply == [] and untouched.delete is None


def test_a_server_pod_that_cannot_start_is_named_with_kubernetes_reason():
    pods = [PodState("ev-server-1", "", "Pending", waiting_reason="ImagePullBackOff", message="no such image", server=True)]
    assert policy.server_problem(None, pods, NOW, 1800)[0] == "ImagePullBackOff"
    oom = [PodState("ev-server-1", "", "Running", exit_code=137, reason="OOMKilled", waiting_reason="CrashLoopBackOff", server=True)]
    reason, message = policy.server_problem(None, oom, NOW, 1800)
    assert reason == "CrashLoopBackOff" and "OOMKilled" in message
    refused = policy.ServerState(name="ev-server", failure=("FailedCreate", "pods is forbidden: violates PodSecurity"))
    assert policy.server_problem(refused, [], NOW, 1800) == ("FailedCreate", "pods is forbidden: violates PodSecurity")
    slow = policy.ServerState(name="ev-server", applied_at="2025-12-31T23:00:00Z")
    assert policy.server_problem(slow, [], NOW, 1800)[0] == "ServerStartTimeout"
    assert policy.server_problem(slow, [], NOW, 7200) is None


def test_jobs_whose_pods_are_refused_show_failed_create():
    job = JobState(name="d-r1", revision="r1", created="2025-12-31T23:59:58Z")
    assert not policy.needs_creation_check(job, [], NOW)  # inside the grace period
    old = JobState(name="d-r1", revision="r1", created="2025-12-31T23:59:00Z")
    assert policy.needs_creation_check(old, [], NOW)
    assert not policy.needs_creation_check(old, [PodState("x", "d-r1", "Pending")], NOW)
    events = [{"reason": "SuccessfulCreate", "message": "ok", "lastTimestamp": "2025-12-31T23:59:01Z"},
              {"reason": "FailedCreate", "message": "pods \"d-r1-x\" is forbidden: violates PodSecurity \"restricted\"",
               "lastTimestamp": "2025-12-31T23:59:30Z"}]
    assert policy.creation_failure(events) == ("FailedCreate", events[1]["message"])
    assert policy.creation_failure(events[:1]) is None


def test_stored_results_are_rejudged_without_running_the_revision_again():
    results = [{"benchmark": "aime24", "score": "0.4"}]
    fresh = policy.current_results({"results": results}, "Succeeded", {}, "r1")
    assert fresh == results
    # The Job is gone (TTL) and a gate changed: the results stored for this revision are judged again.
    assert policy.current_results(None, "Succeeded", {"revision": "r1", "results": results}, "r1") == results
    assert policy.current_results(None, "Succeeded", {"revision": "r0", "results": results}, "r1") is None
    assert policy.current_results(None, "Running", {"revision": "r1", "results": results}, "r1") is None


def test_a_failed_training_pod_restarts_its_whole_group_once():
    job = JobState(name="ft-r1", revision="r1", active=3, failed=1)
    pods = [PodState("ft-r1-0", "ft-r1", "Failed", exit_code=1, created="2026-01-01T00:00:00Z", finished="2026-01-01T00:05:00Z"),
            PodState("ft-r1-1", "ft-r1", "Running", created="2026-01-01T00:00:00Z"),
            PodState("ft-r1-2", "ft-r1", "Running", created="2026-01-01T00:00:01Z"),
            PodState("ft-r1-0-new", "ft-r1", "Pending", created="2026-01-01T00:05:01Z")]  # the Job's replacement
    assert policy.group_restart(job, pods) == ["ft-r1-1", "ft-r1-2"]
    # Once the peers are gone and replaced, nothing more is deleted.
    later = [pods[0]] + [PodState(f"ft-r1-{i}-new", "ft-r1", "Running", created="2026-01-01T00:05:02Z") for i in range(3)]
    assert policy.group_restart(job, later) == []
    assert policy.group_restart(JobState(name="ft-r1", revision="r1", complete=True), pods) == []


def test_training_jobs_do_not_count_deleted_peers_as_failures():
    from reasonops.controller.builders import build_job
    from reasonops.controller.settings import Settings

    body = {"kind": "FineTuneJob", "metadata": {"name": "ft", "namespace": "n", "uid": "u"}}
    job = build_job(body, Settings(), name="ft-r", labels={}, pod_spec={}, resources=None, suspend=False,
                    backoff_limit=3, active_deadline=None, completions=2)
    from reasonops.contract import PEER_LOST_EXIT_CODE

    assert job["spec"]["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [PEER_LOST_EXIT_CODE]}},
    ]


def test_a_rolling_update_is_ready_only_when_no_pod_of_the_old_template_is_left():
    # The new pod exists but is not ready; the old one (previous model) is still the available one.
    assert policy.updated_available({"replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}) == 0
    assert policy.updated_available({"replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}) == 0
    # The old pod is gone and the new one is available.
    assert policy.updated_available({"replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}) == 1
    assert policy.updated_available({"replicas": 1, "updatedReplicas": 1, "availableReplicas": 0}) == 0
    assert policy.updated_available({}) == 0


def test_checkpoint_results_come_from_each_pod_and_survive_the_pods():
    targets = [{"name": f"step-{s}", "step": s, "epoch": f"{s / 4:.2f}", "location": f"pvc://m/r/checkpoints/step-{s}/model"} for s in (4, 8, 12)]

    def pod(index: int, message: str, phase: str = "Succeeded", job: str = "ev-e1") -> PodState:
        return PodState(name=f"ev-e1-{index}", job=job, phase=phase, message=message)

    def result(step: int, score: float) -> str:
        return json.dumps({"checkpoint": {"name": f"step-{step}", "step": step},
                           "results": [{"benchmark": "aime24", "score": score, "ciLow": 0.1, "extra": "x"}]})

    pods = [pod(0, result(4, 0.25)), pod(1, result(8, 0.5), phase="Running"), pod(2, result(12, 0.5), job="ev-old"),
            pod(3, "not json"), pod(4, json.dumps({"results": []}))]
    reports = policy.checkpoint_reports("ev-e1", pods)
    assert list(reports) == ["step-4"] and reports["step-4"]["results"][0]["extra"] == "x"  # the pod's result in full
    first = policy.checkpoint_results(targets, reports, {}, "e1")
    assert [c["results"] for c in first] == [[{"benchmark": "aime24", "score": "0.25", "ciLow": "0.1"}], None, None]  # in short
    assert first[0]["location"] == "pvc://m/r/checkpoints/step-4/model" and first[0]["epoch"] == "1.00"
    # The pods of step-4 are gone; its results stay, step-8 has just finished.
    later = policy.checkpoint_results(targets, policy.checkpoint_reports("ev-e1", [pod(1, result(8, 0.5))]), {"revision": "e1", "checkpoints": first}, "e1")
    assert [c["results"][0]["score"] if c["results"] else None for c in later] == ["0.25", "0.5", None]
    # Results of another revision are not this one's.
    assert policy.checkpoint_results(targets, {}, {"revision": "e0", "checkpoints": later}, "e1")[1]["results"] is None
