"""Checkpoint selection on the local control plane (kube-apiserver + kwok): a FineTuneJob lists its exported
checkpoints, an EvalRun evaluates each in its own pod of an Indexed Job, records every checkpoint's scores,
selects the best (ties to the earlier), judges its gates on it, and a second EvalRun evaluates the selection.

kwok runs the pods; each checkpoint's pod "finishes" here with the result the workload would write to its
termination message, patched onto the pod's status (one result per pod: kwok's own stage gives every pod of a
Job the same one).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from test_operator_e2e import API, apply, cond, crds, dataset, finetune, get, items, operator, volumes, wait_for  # noqa: F401

pytestmark = pytest.mark.cluster
INDEX = "batch.kubernetes.io/job-completion-index"
HOLD = {"pod-complete.stage.kwok.x-k8s.io/delay": "600s"}  # the test finishes these pods itself


def finish(c, ns: str, pod: dict, result: dict) -> None:
    """The pod's workload exits 0 with `result` as its termination message."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    container = pod["spec"]["containers"][0]
    status = {"phase": "Succeeded", "containerStatuses": [{
        "name": container["name"], "image": container["image"], "imageID": "", "ready": False, "restartCount": 0, "started": False,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(result), "startedAt": now, "finishedAt": now}}}]}
    c.kubectl("patch", "pod", pod["metadata"]["name"], "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def scores(step: int, aime: float, low: float) -> dict:
    return {"checkpoint": {"name": f"step-{step}", "step": step}, "accuracy": aime,
            "results": [{"benchmark": "aime24", "score": f"{aime:.4f}", "ciLow": f"{low:.4f}", "ciHigh": "0.9", "problems": 30, "samples": 16},
                        {"benchmark": "math500", "score": "0.8000", "problems": 500, "samples": 1}]}


def exporting_finetune() -> dict:
    """FineTuneJob `ft` (on dataset `ds`) whose kwok pod reports the exported checkpoints of steps 4, 8 and 12."""
    trained = {"finalLoss": 0.3, "steps": 12, "checkpoints": [{"step": s, "epoch": f"{s // 4}.00"} for s in (4, 8, 12)]}
    return finetune("ft", "ds", numNodes=1, checkpoints={"everyEpochs": 1, "keep": 0, "export": True},
                    resources={"podAnnotations": {"reasonops.io/kwok-result": json.dumps(trained)}})


def held_selection(model: dict, **spec) -> dict:
    """EvalRun `pick` selecting on aime24 among `model`'s checkpoints; its pods run until the test ends."""
    return {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "pick"}, "spec": {
        "model": model, "backend": "offline", "benchmarks": [{"name": "aime24"}], "selection": {"benchmark": "aime24"},
        "resources": {"podAnnotations": HOLD}, **spec}}


def test_every_kept_checkpoint_is_evaluated_and_the_best_is_selected_and_used(operator, volumes):
    c, ns = operator.cluster, volumes
    trained = {"finalLoss": 0.3, "steps": 12, "checkpoints": [{"step": 4, "epoch": "1.00"}, {"step": 8, "epoch": "2.00"}, {"step": 12, "epoch": "3.00"}]}
    ft = finetune("ft", "ds", numNodes=1, checkpoints={"everyEpochs": 1, "keep": 0, "export": True},
                  resources={"podAnnotations": {"reasonops.io/kwok-result": json.dumps(trained)}})
    selecting = {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "pick"}, "spec": {
        "model": {"fineTuneJob": "ft", "checkpoints": "all"}, "backend": "offline",
        "benchmarks": [{"name": "aime24"}, {"name": "math500"}],
        "selection": {"benchmark": "aime24"}, "gates": [{"benchmark": "aime24", "minScore": "0.6"}],
        "resources": {"gpus": 1, "podAnnotations": HOLD}}}
    promoted = {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "promoted"}, "spec": {
        "model": {"evalRun": "pick"}, "backend": "offline", "benchmarks": [{"name": "aime24"}],
        "output": {"volume": {"claimName": "models", "path": "promoted"}},
        "resources": {"podAnnotations": {"reasonops.io/kwok-result": json.dumps({"results": [{"benchmark": "aime24", "score": "0.7"}], "accuracy": 0.7})}}}}
    apply(c, ns, dataset("ds"), ft, selecting, promoted)

    # The downstream run waits, saying for what.
    waiting = wait_for("promoted waits", lambda: get(c, "evalrun", ns, "promoted").get("status", {}).get("reason") == "WaitingForSelection"
                       and get(c, "evalrun", ns, "promoted"), op=operator)
    assert "waiting for EvalRun 'pick' to select a checkpoint" in cond(waiting, "Ready")["message"]

    trained_ft = wait_for("trained", lambda: cond(f := get(c, "finetunejob", ns, "ft"), "Ready").get("status") == "True" and f, op=operator)
    run = trained_ft["status"]["modelLocation"].removesuffix("/model")
    assert trained_ft["status"]["checkpoints"] == [
        {"name": f"step-{s}", "step": s, "epoch": f"{e}.00", "location": f"{run}/checkpoints/step-{s}/model"} for s, e in ((4, 1), (8, 2), (12, 3))]

    # One pod per checkpoint; each reads which one from the document and its completion index.
    job = wait_for("checkpoint job", lambda: (j := items(c, "jobs", ns, "reasonops.io/name=pick")) and j[0], op=operator)
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 3)
    document = json.loads(get(c, "configmap", ns, job["metadata"]["name"])["data"]["resource.json"])
    assert [x["location"] for x in document["context"]["checkpoints"]] == [
        f"/mnt/pvc/{run.removeprefix('pvc://')}/checkpoints/step-{s}/model" for s in (4, 8, 12)]
    pods = wait_for("three pods running", lambda: len(p := [x for x in items(c, "pods", ns, f"reasonops.io/job={job['metadata']['name']}")
                                                           if x.get("status", {}).get("phase") == "Running"]) == 3 and p, op=operator)
    by_index = {int(p["metadata"]["annotations"][INDEX]): p for p in pods}
    env = {e["name"]: e.get("value") for e in by_index[0]["spec"]["containers"][0]["env"]}
    assert env["REASONOPS_CHECKPOINTS"] == "3"

    # step-8 and step-12 tie on aime24: the earlier is selected. Results arrive one by one.
    finish(c, ns, by_index[1], scores(8, 0.7, 0.52))
    partial = wait_for("first checkpoint scored", lambda: (e := get(c, "evalrun", ns, "pick")).get("status", {}).get("checkpoints")
                       and e["status"]["checkpoints"][1].get("results") and e, op=operator)
    assert partial["status"]["checkpoints"][0].get("results") is None and "selectedCheckpoint" not in partial["status"]
    finish(c, ns, by_index[2], scores(12, 0.7, 0.55))
    finish(c, ns, by_index[0], scores(4, 0.4, 0.23))

    ev = wait_for("selected", lambda: (e := get(c, "evalrun", ns, "pick")).get("status", {}).get("selectedCheckpoint") and e, timeout=90, op=operator)
    per = {x["name"]: x for x in ev["status"]["checkpoints"]}
    assert [x["name"] for x in ev["status"]["checkpoints"]] == ["step-4", "step-8", "step-12"]
    assert per["step-4"]["results"][0] == {"benchmark": "aime24", "score": "0.4000", "ciLow": "0.2300", "ciHigh": "0.9"}  # in short
    assert per["step-12"]["location"] == f"{run}/checkpoints/step-12/model" and per["step-12"]["epoch"] == "3.00"
    assert ev["status"]["selectedCheckpoint"] == {
        "name": "step-8", "step": 8, "location": f"{run}/checkpoints/step-8/model", "benchmark": "aime24", "metric": "score",
        "score": "0.7000", "modelRevision": trained_ft["status"]["revision"]}
    # Results, accuracy and gates are the selected checkpoint's.
    assert [r["score"] for r in ev["status"]["results"]] == ["0.7000", "0.8000"] and ev["status"]["accuracy"] == "0.7500"
    assert ev["status"]["results"][0]["problems"] == 30 and ev["status"]["results"][0]["samples"] == 16  # in full
    assert cond(ev, "Passed")["status"] == "True" and ev["status"]["modelLocation"] == f"{run}/checkpoints/step-8/model"
    assert ev["status"]["history"][0]["summary"] == "selected step-8: aime24 score 0.7000"

    # The downstream EvalRun evaluates the selected checkpoint.
    done = wait_for("promoted evaluated", lambda: cond(e := get(c, "evalrun", ns, "promoted"), "Ready").get("status") == "True" and e,
                    timeout=90, op=operator)
    assert done["status"]["modelLocation"] == f"{run}/checkpoints/step-8/model"
    ev_job = items(c, "jobs", ns, "reasonops.io/name=promoted")[0]
    promoted_doc = json.loads(get(c, "configmap", ns, ev_job["metadata"]["name"])["data"]["resource.json"])
    assert promoted_doc["context"]["modelLocation"] == f"/mnt/pvc/{run.removeprefix('pvc://')}/checkpoints/step-8/model"
    assert ev_job["spec"]["completionMode"] == "NonIndexed"  # one model, one pod

    # Retraining (a spec edit in git): the selection stays while the new run's checkpoints are rated.
    c.kubectl("patch", "finetunejob", "ft", "-n", ns, "--type=merge", "-p", '{"spec":{"hyperparameters":{"epochs":4}}}')
    retrained = wait_for("retrained", lambda: (f := get(c, "finetunejob", ns, "ft"))["status"].get("modelRevision") not in (None, trained_ft["status"]["revision"])
                         and f, timeout=90, op=operator)
    new_run = retrained["status"]["modelLocation"].removesuffix("/model")
    jobs = wait_for("second checkpoint job", lambda: len(j := items(c, "jobs", ns, "reasonops.io/name=pick")) == 2 and j, op=operator)
    new_job = next(j for j in jobs if j["metadata"]["name"] != job["metadata"]["name"])
    pods = wait_for("its pods", lambda: len(p := [x for x in items(c, "pods", ns, f"reasonops.io/job={new_job['metadata']['name']}")
                                                  if x.get("status", {}).get("phase") == "Running"]) == 3 and p, op=operator)
    ev = get(c, "evalrun", ns, "pick")
    assert ev["status"]["selectedCheckpoint"]["location"] == f"{run}/checkpoints/step-8/model"
    assert [x["location"] for x in ev["status"]["checkpoints"]][0] == f"{new_run}/checkpoints/step-4/model"
    assert cond(get(c, "evalrun", ns, "promoted"), "Ready")["status"] == "True"
    for pod in pods:
        step = (int(pod["metadata"]["annotations"][INDEX]) + 1) * 4
        finish(c, ns, pod, scores(step, 0.5 + step / 100, 0.4))
    ev = wait_for("new selection", lambda: (e := get(c, "evalrun", ns, "pick"))["status"]["selectedCheckpoint"]["modelRevision"]
                  == retrained["status"]["revision"] and e, timeout=90, op=operator)
    assert ev["status"]["selectedCheckpoint"]["location"] == f"{new_run}/checkpoints/step-12/model"
    wait_for("promoted follows", lambda: (e := get(c, "evalrun", ns, "promoted"))["status"].get("modelLocation") == f"{new_run}/checkpoints/step-12/model"
             and cond(e, "Ready").get("status") == "True", timeout=90, op=operator)


def test_a_fine_tune_without_exported_checkpoints_is_named_as_the_reason(operator, volumes):
    c, ns = operator.cluster, volumes
    selecting = {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "pick"}, "spec": {
        "model": {"fineTuneJob": "ft", "checkpoints": "all"}, "backend": "offline", "benchmarks": [{"name": "aime24"}],
        "selection": {"benchmark": "aime24"}}}
    apply(c, ns, dataset("ds"), finetune("ft", "ds", numNodes=1), selecting)
    ev = wait_for("no checkpoints", lambda: (e := get(c, "evalrun", ns, "pick")).get("status", {}).get("reason") == "NoCheckpoints" and e,
                  timeout=90, op=operator)
    assert "set its spec.checkpoints.export: true" in cond(ev, "Ready")["message"]
    assert not items(c, "jobs", ns, "reasonops.io/name=pick")


def test_parallelism_limits_the_checkpoint_pods_and_an_edit_resizes_the_running_job(operator, volumes):
    c, ns = operator.cluster, volumes
    ft = exporting_finetune()
    selecting = held_selection({"fineTuneJob": "ft", "checkpoints": "all"}, parallelism=1)
    apply(c, ns, dataset("ds"), ft, selecting)

    job = wait_for("checkpoint job", lambda: (j := items(c, "jobs", ns, "reasonops.io/name=pick")) and j[0], timeout=120, op=operator)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (3, 1)
    pods = f"reasonops.io/job={job['metadata']['name']}"
    wait_for("one pod running", lambda: len(items(c, "pods", ns, pods)) == 1, op=operator)
    revision = get(c, "evalrun", ns, "pick")["status"]["revision"]

    # Two at a time now: the same Job (no new revision) gets the new count and starts a second pod.
    c.kubectl("patch", "evalrun", "pick", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"parallelism": 2}}))
    resized = wait_for("job resized", lambda: (j := get(c, "job", ns, job["metadata"]["name"]))["spec"]["parallelism"] == 2 and j, op=operator)
    assert resized["metadata"]["uid"] == job["metadata"]["uid"]
    wait_for("two pods", lambda: len(items(c, "pods", ns, pods)) == 2, op=operator)
    assert get(c, "evalrun", ns, "pick")["status"]["revision"] == revision
    assert len(items(c, "jobs", ns, "reasonops.io/name=pick")) == 1


def test_listed_checkpoint_steps_are_evaluated_in_training_order_and_a_step_not_kept_is_named(operator, volumes):
    c, ns = operator.cluster, volumes
    ft = exporting_finetune()
    selecting = held_selection({"fineTuneJob": "ft", "checkpoints": "steps", "checkpointSteps": [12, 5]})
    apply(c, ns, dataset("ds"), ft, selecting)

    # Step 5 was never kept: the run waits, naming it and what was kept, and starts nothing.
    ev = wait_for("a step not kept", lambda: (e := get(c, "evalrun", ns, "pick")).get("status", {}).get("reason") == "NoCheckpoints" and e,
                  timeout=120, op=operator)
    assert cond(ev, "Ready")["message"] == ("FineTuneJob 'ft' kept no servable checkpoint at step 5 of model.checkpointSteps; "
                                            "it kept steps 4, 8, 12")
    assert not items(c, "jobs", ns, "reasonops.io/name=pick")

    # The list fixed: one pod per listed step, oldest first whatever the list's order.
    c.kubectl("patch", "evalrun", "pick", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"model": {"checkpointSteps": [12, 4]}}}))
    job = wait_for("checkpoint job", lambda: (j := items(c, "jobs", ns, "reasonops.io/name=pick")) and j[0], op=operator)
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 2)
    document = json.loads(get(c, "configmap", ns, job["metadata"]["name"])["data"]["resource.json"])
    assert [x["name"] for x in document["context"]["checkpoints"]] == ["step-4", "step-12"]
    ev = wait_for("listed in status", lambda: (e := get(c, "evalrun", ns, "pick")).get("status", {}).get("checkpoints") and e, op=operator)
    assert [x["name"] for x in ev["status"]["checkpoints"]] == ["step-4", "step-12"]
