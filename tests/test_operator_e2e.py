"""The operator against a real control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok).

kwok runs the pods: they become Running and Ready, and pods of Jobs complete after a short delay. A
workload's result reaches the pod's termination message through the `reasonops.io/kwok-result` pod
annotation (see hack/kwok-stages.yaml), which tests set through `spec.resources.podAnnotations`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from chart_support import free_port

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[1]
API = "reasonops.io/v1alpha1"


class Operator:
    """`reasonops operator` as a subprocess, so a test can kill and restart it mid-flight."""

    def __init__(self, cluster, log_dir: Path) -> None:
        self.cluster, self.log_dir, self.proc, self.starts = cluster, log_dir, None, 0
        self.metrics_port = free_port()

    def start(self) -> None:
        self.starts += 1
        env = {
            **self.cluster.env,
            "REASONOPS_METRICS_PORT": str(self.metrics_port),
            "REASONOPS_WATCH_TIMEOUT": "30",
            "REASONOPS_RESYNC_SECONDS": "5",
            "REASONOPS_HISTORY_LIMIT": "2",
            "REASONOPS_WORKLOAD_SERVICE_ACCOUNT": "",
        }
        log = open(self.log_dir / f"operator-{self.starts}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reasonops", "operator", "--verbose"], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return "\n".join(p.read_text()[-4000:] for p in sorted(self.log_dir.glob("operator-*.log")))


@pytest.fixture(scope="module")
def crds(cluster):
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    for plural in ("reasoningdatasets", "finetunejobs", "evalruns"):
        cluster.wait_established(f"{plural}.reasonops.io")
    return cluster


@pytest.fixture(scope="module")
def operator(crds, tmp_path_factory):
    op = Operator(crds, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()


@pytest.fixture
def volumes(operator, namespace):
    """Claims `data` and `models`, bound to hostPath volumes (kwok never mounts them)."""
    c = operator.cluster
    for claim in ("data", "models"):
        pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{namespace}-{claim}"},
              "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                       "hostPath": {"path": f"/srv/{namespace}/{claim}"},
                       "claimRef": {"namespace": namespace, "name": claim}}}
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
               "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": f"{namespace}-{claim}",
                        "resources": {"requests": {"storage": "1Ti"}}}}
        c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pv, pvc]}))
    yield namespace
    c.kubectl("delete", "pv", f"{namespace}-data", f"{namespace}-models", "--wait=false", check=False)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, op: Operator | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (subprocess.CalledProcessError, KeyError, IndexError) as exc:  # not there yet
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last}\n{op.log() if op else ''}")


def get(cluster, kind: str, ns: str, name: str) -> dict:
    proc = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def items(cluster, kind: str, ns: str, selector: str = "") -> list[dict]:
    args = ["get", kind, "-n", ns, "-o", "json"] + (["-l", selector] if selector else [])
    return json.loads(cluster.kubectl(*args).stdout)["items"]


def apply(cluster, ns: str, *docs: dict) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))


def cond(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def dataset(name: str, *, result: dict | None = None, fail: str | None = None, delay: str | None = None, **spec) -> dict:
    annotations = {"reasonops.io/kwok-result": json.dumps(result or {"samples": 3, "contentHash": "h"})}
    if fail:
        annotations["reasonops.io/kwok-fail"] = fail
    if delay:
        annotations["pod-complete.stage.kwok.x-k8s.io/delay"] = delay
    body = {
        "sources": [{"name": "inline", "inline": [{"question": "1+1?", "answer": "2"}]}],
        "stages": [{"name": "select", "select": {"size": 2}}],
        "output": {"volume": {"claimName": "data", "path": "sets"}},
        "resources": {"podAnnotations": annotations},
        **spec,
    }
    return {"apiVersion": API, "kind": "ReasoningDataset", "metadata": {"name": name}, "spec": body}


def finetune(name: str, dataset_name: str, **spec) -> dict:
    body = {
        "baseModel": {"name": "Qwen/Qwen2.5-0.5B-Instruct"},
        "datasetRef": {"name": dataset_name},
        "numNodes": 2,
        "gpusPerNode": 2,
        "output": {"volume": {"claimName": "models", "path": "runs"}},
        "resources": {"podAnnotations": {"reasonops.io/kwok-result": json.dumps({"finalLoss": 0.42, "steps": 10})}},
        **spec,
    }
    return {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": name}, "spec": body}


def evalrun(name: str, ft_name: str, score: float = 0.6) -> dict:
    result = {"results": [{"benchmark": "aime24", "score": score, "problems": 30, "samples": 4}], "accuracy": score}
    return {
        "apiVersion": API, "kind": "EvalRun", "metadata": {"name": name},
        "spec": {
            "model": {"fineTuneJob": ft_name}, "protocol": "limo", "benchmarks": [{"name": "aime24"}],
            "serving": {"tensorParallelSize": 1},
            "gates": [{"benchmark": "aime24", "minScore": "0.5"}],
            "resources": {"podAnnotations": {"reasonops.io/kwok-result": json.dumps(result)}},
        },
    }


def test_dataset_finetune_eval_chain_reconciles_end_to_end(operator, volumes):
    c, ns = operator.cluster, volumes
    apply(c, ns, evalrun("ev", "ft"), finetune("ft", "ds"), dataset("ds", result={"samples": 3, "contentHash": "abc", "stageCounts": [{"stage": "select", "kept": 3, "dropped": 0}]}))

    ft = wait_for("FineTuneJob waits for its dataset", lambda: get(c, "finetunejob", ns, "ft").get("status", {}).get("reason") in ("WaitingForDataset", "Pending", "Running", "Succeeded") and get(c, "finetunejob", ns, "ft"), op=operator)
    ds = wait_for("dataset Ready", lambda: cond(get(c, "reasoningdataset", ns, "ds"), "Ready").get("status") == "True" and get(c, "reasoningdataset", ns, "ds"), op=operator)
    assert ds["status"]["selected"] == 3 and ds["status"]["output"]["contentHash"] == "abc"
    assert ds["status"]["output"]["location"].startswith("pvc://data/sets/ds/")
    assert ds["status"]["stageCounts"] == [{"stage": "select", "kept": 3, "dropped": 0}]
    assert ds["status"]["observedGeneration"] == ds["metadata"]["generation"]
    job = items(c, "jobs", ns, "reasonops.io/name=ds")[0]
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ReasoningDataset", "ds", True)
    assert cond(ds, "Progressing")["status"] == "False" and cond(ds, "Failed")["status"] == "False"

    ft = wait_for("fine-tune Ready", lambda: cond(get(c, "finetunejob", ns, "ft"), "Ready").get("status") == "True" and get(c, "finetunejob", ns, "ft"), op=operator)
    assert ft["status"]["datasetRevision"] == ds["status"]["revision"]
    assert ft["status"]["lastLoss"] == "0.4200"
    assert ft["status"]["modelLocation"].startswith("pvc://models/runs/ft/")
    ft_job = items(c, "jobs", ns, "reasonops.io/name=ft")[0]
    assert ft_job["spec"]["completionMode"] == "Indexed" and ft_job["spec"]["completions"] == 2
    svc = get(c, "service", ns, ft_job["metadata"]["name"])
    assert svc["spec"]["clusterIP"] == "None"
    pods = items(c, "pods", ns, f"reasonops.io/job={ft_job['metadata']['name']}")
    assert len(pods) == 2
    env = {e["name"]: e for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == f"{ft_job['metadata']['name']}-0.{ft_job['metadata']['name']}"
    assert env["NNODES"]["value"] == "2" and env["NPROC_PER_NODE"]["value"] == "2"
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert {p["spec"]["hostname"] for p in pods} == {f"{ft_job['metadata']['name']}-0", f"{ft_job['metadata']['name']}-1"}

    ev = wait_for("evaluation done", lambda: cond(get(c, "evalrun", ns, "ev"), "Passed").get("status") == "True" and get(c, "evalrun", ns, "ev"), timeout=90, op=operator)
    assert ev["status"]["results"][0]["benchmark"] == "aime24" and ev["status"]["accuracy"] == "0.6000"
    assert ev["status"]["gates"] == [{"benchmark": "aime24", "minScore": "0.5", "bound": "point", "passed": True, "score": "0.6"}]
    assert ev["status"]["endpoint"] == f"http://ev-server.{ns}.svc:8000/v1"
    assert cond(ev, "Serving")["status"] == "True"
    assert ev["status"]["modelRevision"] == ft["status"]["revision"]
    deployment = get(c, "deployment", ns, "ev-server")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["vllm", "serve"]
    # The printer columns show the headline numbers.
    table = c.kubectl("get", "reasonops", "-n", ns).stdout
    assert "0.6000" in table and "0.4200" in table


def test_gitops_change_retrains_and_reevaluates_and_finished_revisions_stay_finished(operator, volumes):
    c, ns = operator.cluster, volumes
    apply(c, ns, dataset("ds"), finetune("ft", "ds"), evalrun("ev", "ft", score=0.4))
    ev = wait_for("first evaluation", lambda: cond(get(c, "evalrun", ns, "ev"), "Passed").get("status") == "False" and get(c, "evalrun", ns, "ev"), timeout=90, op=operator)
    assert cond(ev, "Passed")["reason"] == "GatesFailed"
    first = {k: get(c, k, ns, n)["status"]["revision"] for k, n in (("reasoningdataset", "ds"), ("finetunejob", "ft"), ("evalrun", "ev"))}

    # A finished revision's Job deleted (by hand or TTL) is never re-created.
    ds_job = items(c, "jobs", ns, "reasonops.io/name=ds")[0]["metadata"]["name"]
    c.kubectl("delete", "job", ds_job, "-n", ns, "--wait=true")
    time.sleep(8)  # more than a resync period
    assert items(c, "jobs", ns, "reasonops.io/name=ds") == []
    assert get(c, "reasoningdataset", ns, "ds")["status"]["phase"] == "Succeeded"

    # Edit the dataset spec as a git commit would: a new revision flows down the chain.
    changed = dataset("ds", result={"samples": 2})
    changed["spec"]["stages"][0]["select"]["size"] = 1
    apply(c, ns, changed)
    ev = wait_for("re-evaluation", lambda: (e := get(c, "evalrun", ns, "ev"))["status"].get("revision") != first["evalrun"] and cond(e, "Passed").get("status") in ("True", "False") and e["status"]["phase"] == "Succeeded" and e, timeout=120, op=operator)
    ds = get(c, "reasoningdataset", ns, "ds")
    ft = get(c, "finetunejob", ns, "ft")
    assert ds["status"]["revision"] != first["reasoningdataset"] and ds["status"]["selected"] == 2
    assert ft["status"]["revision"] != first["finetunejob"] and ft["status"]["datasetRevision"] == ds["status"]["revision"]
    assert [h["revision"] for h in ft["status"]["history"]][1] == first["finetunejob"]
    assert ev["status"]["modelRevision"] == ft["status"]["revision"]
    # The operator never writes to spec: generation counts only our own edits.
    assert ds["metadata"]["generation"] == 2 and ft["metadata"]["generation"] == 1


def test_manual_retrain_policy_keeps_the_trained_dataset_revision(operator, volumes):
    c, ns = operator.cluster, volumes
    apply(c, ns, dataset("ds"), finetune("ft", "ds", retrainPolicy="Manual"))
    ft = wait_for("trained", lambda: cond(get(c, "finetunejob", ns, "ft"), "Ready").get("status") == "True" and get(c, "finetunejob", ns, "ft"), op=operator)
    changed = dataset("ds")
    changed["spec"]["stages"][0]["select"]["size"] = 1
    apply(c, ns, changed)
    wait_for("new dataset revision", lambda: (d := get(c, "reasoningdataset", ns, "ds"))["status"]["output"]["revision"] == d["status"]["revision"] != ft["status"]["datasetRevision"], op=operator)
    time.sleep(6)
    assert get(c, "finetunejob", ns, "ft")["status"]["revision"] == ft["status"]["revision"]
    assert len(items(c, "jobs", ns, "reasonops.io/name=ft")) == 1


def test_suspend_and_resume(operator, volumes):
    c, ns = operator.cluster, volumes
    apply(c, ns, dataset("ds", delay="600s", suspend=True))
    job = wait_for("suspended job", lambda: (j := items(c, "jobs", ns, "reasonops.io/name=ds")) and j[0], op=operator)
    assert job["spec"]["suspend"] is True
    ds = wait_for("Suspended status", lambda: (d := get(c, "reasoningdataset", ns, "ds"))["status"].get("phase") == "Suspended" and d, op=operator)
    assert cond(ds, "Suspended")["status"] == "True"
    c.kubectl("patch", "reasoningdataset", "ds", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for("running", lambda: get(c, "reasoningdataset", ns, "ds")["status"].get("phase") == "Running", op=operator)
    assert items(c, "jobs", ns, "reasonops.io/name=ds")[0]["spec"]["suspend"] is False
    c.kubectl("patch", "reasoningdataset", "ds", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for("suspended again", lambda: items(c, "jobs", ns, "reasonops.io/name=ds")[0]["spec"]["suspend"] is True, op=operator)
    assert get(c, "reasoningdataset", ns, "ds")["metadata"]["generation"] == 3  # only the user's edits


def test_kueue_label_creates_the_job_suspended_and_reports_queued(operator, volumes):
    c, ns = operator.cluster, volumes
    body = dataset("ds")
    body["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpu"}
    apply(c, ns, body)
    ds = wait_for("queued", lambda: (d := get(c, "reasoningdataset", ns, "ds"))["status"].get("reason") == "Queued" and d, op=operator)
    job = items(c, "jobs", ns, "reasonops.io/name=ds")[0]
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    # Kueue admits by unsuspending; the operator then follows the Job.
    c.kubectl("patch", "job", job["metadata"]["name"], "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for("admitted and done", lambda: get(c, "reasoningdataset", ns, "ds")["status"].get("phase") == "Succeeded", op=operator)


def test_a_failed_pod_surfaces_its_reason(operator, volumes):
    c, ns = operator.cluster, volumes
    error = json.dumps({"error": {"reason": "EmptyDataset", "message": "no problem survived the difficulty filter"}})
    apply(c, ns, dataset("ds", fail=error, backoffLimit=0))
    ds = wait_for("failed", lambda: (d := get(c, "reasoningdataset", ns, "ds"))["status"].get("phase") == "Failed" and d, op=operator)
    assert ds["status"]["reason"] == "EmptyDataset"
    assert cond(ds, "Failed")["message"] == "no problem survived the difficulty filter"
    assert cond(ds, "Ready")["status"] == "False"
    events = c.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=ds", "-o", "json").stdout
    assert "EmptyDataset" in events
    # The fine-tune that depends on it says so instead of looping.
    apply(c, ns, finetune("ft", "ds"))
    ft = wait_for("dataset failed", lambda: (f := get(c, "finetunejob", ns, "ft"))["status"].get("reason") == "DatasetFailed" and f, op=operator)
    assert "no problem survived" in cond(ft, "Ready")["message"]


def test_missing_references_give_a_clear_condition(operator, volumes):
    c, ns = operator.cluster, volumes
    apply(c, ns, finetune("ft", "nope"), evalrun("ev", "missing-ft"))
    ft = wait_for("not found", lambda: (f := get(c, "finetunejob", ns, "ft"))["status"].get("reason") == "DatasetNotFound" and f, op=operator)
    assert "'nope' does not exist" in cond(ft, "Ready")["message"]
    ev = wait_for("model not found", lambda: (e := get(c, "evalrun", ns, "ev"))["status"].get("reason") == "ModelNotFound" and e, op=operator)
    assert items(c, "jobs", ns) == [] and ev["status"]["phase"] == "Waiting"
    # The reference appears: the chain starts by itself.
    apply(c, ns, dataset("nope"))
    wait_for("trains once the dataset exists", lambda: cond(get(c, "finetunejob", ns, "ft"), "Ready").get("status") == "True", op=operator)


def test_cascade_deletion(operator, volumes):
    c, ns = operator.cluster, volumes
    apply(c, ns, dataset("ds", delay="600s"))
    wait_for("job", lambda: items(c, "jobs", ns, "reasonops.io/name=ds"), op=operator)
    assert items(c, "configmaps", ns, "reasonops.io/name=ds")
    c.kubectl("delete", "reasoningdataset", "ds", "-n", ns)
    wait_for("children collected", lambda: not items(c, "jobs", ns, "reasonops.io/name=ds") and not items(c, "configmaps", ns, "reasonops.io/name=ds"), op=operator)


def test_restarting_the_operator_mid_flight_creates_no_duplicates(operator, volumes):
    c, ns = operator.cluster, volumes
    apply(c, ns, *[dataset(f"ds{i}", delay="600s") for i in range(6)])
    time.sleep(0.5)
    operator.kill()  # mid-reconcile
    operator.start()
    wait_for("every dataset has its job", lambda: len(items(c, "jobs", ns)) >= 6, op=operator)
    operator.kill()
    operator.start()
    time.sleep(6)
    jobs = items(c, "jobs", ns)
    assert sorted(j["metadata"]["labels"]["reasonops.io/name"] for j in jobs) == [f"ds{i}" for i in range(6)]
    wait_for("statuses", lambda: all(get(c, "reasoningdataset", ns, f"ds{i}").get("status", {}).get("phase") == "Running" for i in range(6)), op=operator)


def test_workload_progress_reaches_status(operator, volumes):
    from reasonops.progress import Reporter

    c, ns = operator.cluster, volumes
    apply(c, ns, dataset("ds"), finetune("ft", "ds", resources={"podAnnotations": {"pod-complete.stage.kwok.x-k8s.io/delay": "600s"}}))
    ft = wait_for("training", lambda: (f := get(c, "finetunejob", ns, "ft"))["status"].get("phase") == "Running" and f, op=operator)
    os.environ["REASONOPS_STATUS_KUBECONFIG"] = c.kubeconfig
    try:
        reporter = Reporter("FineTuneJob", "ft", ns, ft["status"]["revision"], min_interval=0,
                            patcher=None)
        from reasonops.progress import _default_patcher

        reporter._patcher = _default_patcher("FineTuneJob", "ft", ns)
        reporter.update(step=5, totalSteps=50, loss="1.2345", latestCheckpoint="/mnt/pvc/models/runs/ft/x/checkpoints/step-5")
    finally:
        del os.environ["REASONOPS_STATUS_KUBECONFIG"]
    ft = wait_for("loss mirrored", lambda: (f := get(c, "finetunejob", ns, "ft"))["status"].get("lastLoss") == "1.2345" and f, op=operator)
    assert ft["status"]["progress"]["step"] == 5 and ft["status"]["latestCheckpoint"].endswith("step-5")


def test_metrics_endpoint(operator, volumes):
    apply(operator.cluster, volumes, dataset("ds"))
    wait_for("reconciled", lambda: get(operator.cluster, "reasoningdataset", volumes, "ds").get("status"), op=operator)
    text = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    assert 'reasonops_reconciles_total{kind="ReasoningDataset"}' in text
    assert "reasonops_reconcile_duration_seconds_bucket" in text


def test_examples_reconcile(operator, volumes):
    """The shipped examples are accepted by the API server and get their children."""
    c, ns = operator.cluster, volumes
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        c.kubectl("apply", "-n", ns, "-f", str(path))
    wait_for("dataset job", lambda: items(c, "jobs", ns, "reasonops.io/name=limo-math"), op=operator)
    ft = wait_for("fine-tune waits", lambda: (f := get(c, "finetunejob", ns, "limo-32b"))["status"].get("reason") == "WaitingForDataset" and f, op=operator)
    assert cond(ft, "Ready")["status"] == "False"


# --- decisions of the operator→pod contract, on the control plane -----------------------------------


def test_serving_edits_reach_the_server_and_gate_edits_rejudge_without_rerunning(operator, volumes):
    c, ns = operator.cluster, volumes
    apply(c, ns, dataset("ds"), finetune("ft", "ds"), evalrun("ev", "ft", score=0.6))
    ev = wait_for("passed", lambda: cond(e := get(c, "evalrun", ns, "ev"), "Passed").get("status") == "True" and e, timeout=90, op=operator)
    revision = ev["status"]["revision"]
    # spec.serving is how the server runs: the Deployment follows the edit, the benchmark does not re-run.
    c.kubectl("patch", "evalrun", "ev", "-n", ns, "--type=merge", "-p", '{"spec":{"serving":{"tensorParallelSize":1,"replicas":2}}}')
    wait_for("two replicas", lambda: get(c, "deployment", ns, "ev-server")["spec"]["replicas"] == 2, op=operator)
    # A stricter gate re-judges the stored results: same revision, same single Job, verdict flips.
    c.kubectl("patch", "evalrun", "ev", "-n", ns, "--type=merge", "-p", '{"spec":{"gates":[{"benchmark":"aime24","minScore":"0.9"}]}}')
    ev = wait_for("re-judged", lambda: cond(e := get(c, "evalrun", ns, "ev"), "Passed").get("reason") == "GatesFailed" and e, op=operator)
    assert ev["status"]["revision"] == revision and cond(ev, "Passed")["observedGeneration"] == ev["metadata"]["generation"]
    assert ev["status"]["gates"] == [{"benchmark": "aime24", "minScore": "0.9", "bound": "point", "passed": False, "score": "0.6"}]
    assert len(items(c, "jobs", ns, "reasonops.io/name=ev")) == 1


def test_keep_after_eval_false_removes_the_server_once(operator, volumes):
    c, ns = operator.cluster, volumes
    body = evalrun("ev", "ft")
    body["spec"]["serving"]["keepAfterEval"] = False
    apply(c, ns, dataset("ds"), finetune("ft", "ds"), body)
    wait_for("evaluated", lambda: cond(get(c, "evalrun", ns, "ev"), "Passed").get("status") == "True", timeout=90, op=operator)
    wait_for("server removed", lambda: not items(c, "deployments", ns, "reasonops.io/name=ev"), op=operator)
    created = lambda: [e for e in items(c, "events", ns) if e["involvedObject"].get("kind") == "ReplicaSet"  # noqa: E731
                       and e["reason"] == "SuccessfulCreate"]
    before = len(created())
    time.sleep(12)  # two resyncs and the watch events of the deletion
    assert not items(c, "deployments", ns, "reasonops.io/name=ev"), "the server was re-created"
    assert len(created()) == before
    ev = get(c, "evalrun", ns, "ev")
    assert cond(ev, "Serving")["reason"] == "ServerRemoved" and ev["status"]["phase"] == "Succeeded"


def test_pods_refused_at_creation_show_kubernetes_reason(operator, volumes):
    c, ns = operator.cluster, volumes
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    apply(c, ns, quota)
    started = time.monotonic()
    apply(c, ns, dataset("ds"))
    ds = wait_for("FailedCreate", lambda: (d := get(c, "reasoningdataset", ns, "ds"))["status"].get("reason") == "FailedCreate" and d,
                  timeout=30, op=operator)
    assert time.monotonic() - started < 30
    assert "exceeded quota" in cond(ds, "Ready")["message"] and cond(ds, "Progressing")["reason"] == "FailedCreate"


def test_a_sampler_naming_an_evalrun_gets_its_servers_endpoint(operator, volumes):
    c, ns = operator.cluster, volumes
    teacher = {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "teacher"}, "spec": {
        "model": {"name": "Qwen/Qwen2.5-7B-Instruct", "servedModelName": "qwen-7b"}, "benchmarks": [{"name": "aime24"}],
        "output": {"volume": {"claimName": "data", "path": "evals"}}, "serving": {"tensorParallelSize": 1},
        "resources": {"podAnnotations": {"reasonops.io/kwok-result": json.dumps({"results": [], "accuracy": 0})}}}}
    body = dataset("ds")
    body["spec"]["stages"].insert(0, {"name": "hard", "difficulty": {
        "sampler": {"model": "qwen-7b", "evalRun": "teacher"}, "attempts": 4, "minSolved": 0, "maxSolved": 2}})
    apply(c, ns, body)
    wait_for("waits for the server", lambda: (d := get(c, "reasoningdataset", ns, "ds"))["status"].get("reason") == "EndpointNotFound" and d, op=operator)
    assert items(c, "jobs", ns, "reasonops.io/name=ds") == []
    apply(c, ns, teacher)
    job = wait_for("curation starts", lambda: (j := items(c, "jobs", ns, "reasonops.io/name=ds")) and j[0], timeout=60, op=operator)
    document = json.loads(get(c, "configmap", ns, job["metadata"]["name"])["data"]["resource.json"])
    assert document["context"]["endpoints"] == {"teacher": f"http://teacher-server.{ns}.svc:8000/v1"}
    assert document["context"]["servedModelNames"] == {"teacher": "qwen-7b"}
    # The evaluation's own output is where its spec says, in the cluster as on a laptop.
    ev_job = wait_for("teacher job", lambda: (j := items(c, "jobs", ns, "reasonops.io/name=teacher")) and j[0], op=operator)
    env = {e["name"]: e.get("value") for e in ev_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REASONOPS_OUTPUT"].startswith("/mnt/pvc/data/evals/teacher/")


def test_a_pod_that_cannot_patch_status_says_so_with_an_event(operator, volumes, tmp_path):
    """A workload ServiceAccount allowed to post events but not to patch status: the failure is visible."""
    from reasonops.progress import Reporter, _default_patcher

    c, ns = operator.cluster, volumes
    apply(c, ns, dataset("ds", delay="600s"))
    wait_for("running", lambda: get(c, "reasoningdataset", ns, "ds").get("status", {}).get("phase") in ("Pending", "Running"), op=operator)
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "events-only"},
            "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "events-only"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "events-only"},
               "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": ns}]}
    c.kubectl("create", "serviceaccount", "limited", "-n", ns)
    apply(c, ns, role, binding)
    token = c.kubectl("create", "token", "limited", "-n", ns).stdout.strip()
    os.environ["REASONOPS_STATUS_KUBECONFIG"] = c.token_kubeconfig(token, tmp_path / "limited.kubeconfig")
    try:
        reporter = Reporter("ReasoningDataset", "ds", ns, "r", min_interval=0, patcher=_default_patcher("ReasoningDataset", "ds", ns))
        reporter.update(stage="dedupe", message="kept 3 of 3")  # never raises: progress is best effort
    finally:
        del os.environ["REASONOPS_STATUS_KUBECONFIG"]
    events = wait_for("event", lambda: [e for e in items(c, "events", ns) if e["reason"] == "StatusUpdateFailed"], op=operator)
    assert events[0]["involvedObject"]["name"] == "ds" and "403" in events[0]["message"]


def test_code_benchmarks_get_a_locked_down_sandbox_for_the_run_only(operator, volumes):
    c, ns = operator.cluster, volumes
    body = evalrun("ev", "ft")
    result = {"results": [{"benchmark": "code-demo", "score": "0.5", "problems": 12, "samples": 1}], "accuracy": 0.5}
    body["spec"].update(benchmarks=[{"name": "code-demo"}], gates=[],
                        sandbox={"runtimeClassName": "gvisor-test"},
                        resources={"podAnnotations": {"reasonops.io/kwok-result": json.dumps(result),
                                                      "pod-complete.stage.kwok.x-k8s.io/delay": "5s"}})
    # Without the RuntimeClass the sandbox's pods are refused, and the EvalRun says so in Kubernetes' words.
    apply(c, ns, dataset("ds"), finetune("ft", "ds"), body)
    ev = wait_for("refused sandbox", lambda: (e := get(c, "evalrun", ns, "ev"))["status"].get("reason") == "FailedCreate" and e, timeout=90, op=operator)
    assert 'RuntimeClass "gvisor-test" not found' in cond(ev, "Ready")["message"] and not items(c, "jobs", ns, "reasonops.io/name=ev")
    c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                                                   "metadata": {"name": "gvisor-test"}, "handler": "runsc"}))
    job = wait_for("benchmark job", lambda: (j := items(c, "jobs", ns, "reasonops.io/name=ev")) and j[0], timeout=90, op=operator)
    sandbox = get(c, "deployment", ns, "ev-sandbox")
    pod = sandbox["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["runtimeClassName"] == "gvisor-test"
    policy = get(c, "networkpolicy", ns, "ev-sandbox")
    assert not policy["spec"].get("egress") and "Egress" in policy["spec"]["policyTypes"]  # no egress rule: none allowed
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REASONOPS_SANDBOX_URL"] == f"http://ev-sandbox.{ns}.svc:8080"
    wait_for("evaluated", lambda: get(c, "evalrun", ns, "ev")["status"].get("phase") == "Succeeded", timeout=90, op=operator)
    wait_for("sandbox removed", lambda: not get(c, "deployment", ns, "ev-sandbox") and not get(c, "networkpolicy", ns, "ev-sandbox")
             and not get(c, "service", ns, "ev-sandbox"), op=operator)


def test_a_max_model_len_beyond_the_models_context_is_refused_before_any_server(operator, volumes):
    c, ns = operator.cluster, volumes
    ft = finetune("ft", "ds")
    ft["spec"]["resources"]["podAnnotations"]["reasonops.io/kwok-result"] = json.dumps({"finalLoss": 0.4, "steps": 2, "contextLength": 32768})
    ev = evalrun("ev", "ft")
    ev["spec"]["serving"]["maxModelLen"] = 40960
    apply(c, ns, dataset("ds"), ft, ev)
    ev = wait_for("refused", lambda: (e := get(c, "evalrun", ns, "ev"))["status"].get("reason") == "MaxModelLenTooLong" and e, timeout=90, op=operator)
    assert "exceeds the model's context of 32768" in cond(ev, "Ready")["message"]
    assert get(c, "finetunejob", ns, "ft")["status"]["contextLength"] == 32768
    assert not items(c, "deployments", ns, "reasonops.io/name=ev") and not items(c, "jobs", ns, "reasonops.io/name=ev")


def test_a_relative_gate_waits_for_its_baseline_and_judges_the_paired_difference(operator, volumes):
    """The operator observes the baseline EvalRun: waits while it is missing or running, then starts the gated run
    with the baseline's output mounted, and judges the comparison its pod reported (kwok stands in for the pod)."""
    c, ns = operator.cluster, volumes

    def offline(name: str, result: dict, **spec: Any) -> dict:
        return {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": name}, "spec": {
            "model": {"name": f"Qwen/{name}"}, "backend": "offline", "benchmarks": [{"name": "aime24"}],
            "output": {"volume": {"claimName": "models", "path": "evals"}},
            "resources": {"podAnnotations": {"reasonops.io/kwok-result": json.dumps(result)}}, **spec}}

    comparison = {"baseline": "base", "benchmark": "aime24", "problems": 30, "difference": "0.1000", "ciLow": "0.0333",
                  "ciHigh": "0.1667", "wins": 4, "losses": 1}
    tuned = offline("tuned", {"results": [{"benchmark": "aime24", "score": "0.6000"}], "comparisons": [comparison]},
                    gates=[{"benchmark": "aime24", "baseline": "base", "minDifference": "0", "bound": "lower95"}])
    apply(c, ns, tuned)
    ev = wait_for("baseline missing", lambda: (e := get(c, "evalrun", ns, "tuned")).get("status", {}).get("reason") == "BaselineNotFound" and e, op=operator)
    assert "EvalRun 'base' (a relative gate's baseline) does not exist" in cond(ev, "Ready")["message"]
    assert items(c, "jobs", ns, "reasonops.io/name=tuned") == []
    apply(c, ns, offline("base", {"results": [{"benchmark": "aime24", "score": "0.5000"}]}))
    ev = wait_for("gated run judged", lambda: cond(e := get(c, "evalrun", ns, "tuned"), "Passed").get("reason") == "GatesPassed" and e,
                  timeout=90, op=operator)
    base = get(c, "evalrun", ns, "base")
    assert ev["status"]["comparisons"] == [comparison]
    assert ev["status"]["gates"] == [{"benchmark": "aime24", "baseline": "base", "minDifference": "0", "bound": "lower95",
                                      "score": "0.0333", "passed": True}]
    (job,) = items(c, "jobs", ns, "reasonops.io/name=tuned")
    document = json.loads(get(c, "configmap", ns, job["metadata"]["name"])["data"]["resource.json"])
    assert document["context"]["baselines"] == [{"name": "base", "revision": base["status"]["revision"],
                                                 "location": f"/mnt/pvc/models/evals/base/{base['status']['revision']}"}]
    # A stricter minDifference re-judges the recorded comparison: no new revision, no new Job.
    c.kubectl("patch", "evalrun", "tuned", "-n", ns, "--type=json", "-p", '[{"op":"replace","path":"/spec/gates/0/minDifference","value":"0.05"}]')
    ev = wait_for("re-judged", lambda: cond(e := get(c, "evalrun", ns, "tuned"), "Passed").get("reason") == "GatesFailed" and e, op=operator)
    assert cond(ev, "Passed")["message"] == "aime24: lower 95% bound of the difference to EvalRun base 0.0333 < 0.05"
    assert len(items(c, "jobs", ns, "reasonops.io/name=tuned")) == 1


def test_an_export_reaches_the_pod_by_reference_and_its_location_the_status(operator, volumes):
    c, ns = operator.cluster, volumes
    export = {"uri": "s3://team-data/reasoning", "endpointUrl": "http://minio.storage:9000",
              "accessKeyIdSecretRef": {"name": "store", "key": "id"}, "secretAccessKeySecretRef": {"name": "store", "key": "secret"}}
    # kwok reports the result the pod would: where it published the dataset.
    apply(c, ns, dataset("exported", export=export, result={"samples": 3, "contentHash": "h",
                                                             "exportLocation": "s3://team-data/reasoning/exported/REV"}))
    ds = wait_for("dataset Ready", lambda: cond(d := get(c, "reasoningdataset", ns, "exported"), "Ready").get("status") == "True" and d,
                  op=operator)
    assert ds["status"]["output"]["exportLocation"] == "s3://team-data/reasoning/exported/REV"
    (pod,) = items(c, "pods", ns, "reasonops.io/name=exported")
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "store", "key": "id"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "store", "key": "secret"}}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.storage:9000"
