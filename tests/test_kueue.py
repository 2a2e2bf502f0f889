"""The operator under a real Kueue (tests/kueue_support.py): quota, queueing, priorities and preemption.

Kueue's manager (built by hack/build-tools.sh) runs beside the local control plane with its webhooks; a
ClusterQueue of examples/kueue/queues.yaml holds 6 GPUs of the kwok GPU nodes. Every FineTuneJob here
carries the LocalQueue's label and a WorkloadPriorityClass; kwok runs the pods (a long `pod-complete`
delay keeps one running).

Throughout, a watch on the namespace's Jobs records every change of `spec.suspend` with the field
manager that made it: the operator creates its Jobs suspended and then leaves them to Kueue.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from chart_support import TOOLS_BIN
from kueue_support import Kueue
from test_operator_e2e import Operator, apply, cond, crds, dataset, evalrun, finetune, get, items, volumes, wait_for  # noqa: F401

pytestmark = pytest.mark.cluster
LOW, HIGH = "batch-low", "training-high"  # examples/kueue/queues.yaml
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kueue" / "queues.yaml"
GPU_QUOTA = 6


@pytest.fixture(scope="module")
def kueue(cluster, tmp_path_factory):
    manager = Kueue(cluster, tmp_path_factory.mktemp("kueue"))
    try:
        manager.start()
        yield manager
    finally:
        manager.stop()


# Kueue first: its CRDs exist when the operator starts (it watches Workloads).
@pytest.fixture(scope="module")
def operator(kueue, crds, tmp_path_factory):  # noqa: F811
    op = Operator(crds, tmp_path_factory.mktemp("operator"))
    op.start()
    yield op
    op.stop()


def queues(ns: str, gpus: int = GPU_QUOTA) -> list[dict[str, Any]]:
    """examples/kueue/queues.yaml (a ResourceFlavor of the GPU nodes, a ClusterQueue with GPU quota, the
    LocalQueue `gpu-batch` and two priorities), its cluster-scoped queue objects renamed for the test's
    namespace and given `gpus` GPUs, so that the tests share no quota."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for doc in docs:
        if doc["kind"] in ("ResourceFlavor", "ClusterQueue"):
            doc["metadata"]["name"] = f"{ns}-{doc['metadata']['name']}"
        if doc["kind"] == "ClusterQueue":
            doc["spec"]["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": ns}}
            flavor = doc["spec"]["resourceGroups"][0]["flavors"][0]
            flavor["name"] = f"{ns}-{flavor['name']}"
            next(r for r in flavor["resources"] if r["name"] == "nvidia.com/gpu")["nominalQuota"] = gpus
        if doc["kind"] == "LocalQueue":
            doc["spec"]["clusterQueue"] = f"{ns}-{doc['spec']['clusterQueue']}"
    return docs


def queued_finetune(name: str, priority: str, *, nodes: int = 1, gpus: int = 4, runs_for: str = "2s") -> dict[str, Any]:
    body = finetune(name, "ds", numNodes=nodes, gpusPerNode=gpus)
    body["spec"]["resources"]["podAnnotations"]["pod-complete.stage.kwok.x-k8s.io/delay"] = runs_for
    body["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpu-batch", "kueue.x-k8s.io/priority-class": priority}
    return body


class SuspendWatch:
    """`kubectl get jobs --watch`: every change of a Job's spec.suspend (by the name of its FineTuneJob), with
    the field manager that made it (the newest managedFields entry that owns f:spec.f:suspend)."""

    def __init__(self, cluster, ns: str) -> None:
        self.flips: list[tuple[str, bool, Optional[str]]] = []
        self.proc = subprocess.Popen(
            [str(TOOLS_BIN / "kubectl"), "--kubeconfig", cluster.kubeconfig, "get", "jobs", "-n", ns, "--watch",
             "--output-watch-events", "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        decoder, buffer, seen = json.JSONDecoder(), "", {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            buffer += line
            try:
                event, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                continue
            buffer = buffer.lstrip()[end:]
            job = event["object"]
            # The Job's FineTuneJob (its label), so that the flips read by resource.
            name, suspend = job["metadata"]["labels"]["reasonops.io/name"], bool(job["spec"].get("suspend"))
            if name in seen and seen[name] != suspend:
                self.flips.append((name, suspend, suspend_manager(job)))
            seen[name] = suspend

    def stop(self) -> list[tuple[str, bool, Optional[str]]]:
        self.proc.terminate()
        self.proc.wait(10)
        self.thread.join(10)
        return self.flips


def suspend_manager(job: dict[str, Any]) -> Optional[str]:
    owners = [entry for entry in job["metadata"].get("managedFields") or []
              if "f:suspend" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})]
    return max(owners, key=lambda entry: entry.get("time") or "")["manager"] if owners else None


def status(c, ns: str, name: str) -> dict[str, Any]:
    """The FineTuneJob's status, with its Progressing condition's message as `message`."""
    body = get(c, "finetunejob", ns, name)
    return {**(body.get("status") or {}), "message": cond(body, "Progressing").get("message", "")}


def training_job(c, ns: str, name: str) -> dict[str, Any]:
    return items(c, "jobs", ns, f"reasonops.io/name={name}")[0]


def running_pods(c, ns: str, name: str) -> list[dict[str, Any]]:
    return [p for p in items(c, "pods", ns, f"reasonops.io/name={name}") if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def queues_and_dataset(operator, ns: str) -> "SuspendWatch":
    """The scenarios' start: the queues, a curated dataset "ds" to train on, and a watch on the Jobs' suspend."""
    c = operator.cluster
    apply(c, ns, *queues(ns))
    apply(c, ns, dataset("ds"))
    wait_for("dataset", lambda: get(c, "reasoningdataset", ns, "ds").get("status", {}).get("phase") == "Succeeded", op=operator)
    return SuspendWatch(c, ns)


def test_kueue_admits_queues_and_preempts_and_the_operator_never_flips_suspend(operator, volumes):
    c, ns = operator.cluster, volumes
    watch = queues_and_dataset(operator, ns)

    # 4 of 6 GPUs: admitted; Kueue unsuspends the training Job and its pod runs.
    apply(c, ns, queued_finetune("low-a", LOW, runs_for="600s"))
    wait_for("low-a running", lambda: status(c, ns, "low-a").get("phase") == "Running", op=operator)
    assert training_job(c, ns, "low-a")["spec"]["suspend"] is False and len(running_pods(c, ns, "low-a")) == 1

    # 4 more do not fit: queued, with Kueue's own reason in the status.
    apply(c, ns, queued_finetune("low-b", LOW))
    waiting = wait_for("low-b queued with Kueue's reason",
                       lambda: (s := status(c, ns, "low-b")).get("reason") == "Queued" and "nvidia.com/gpu" in s.get("message", "") and s,
                       op=operator)
    assert waiting["phase"] == "Pending" and "insufficient unused quota" in waiting["message"], waiting["message"]
    assert training_job(c, ns, "low-b")["spec"]["suspend"] is True and not items(c, "pods", ns, "reasonops.io/name=low-b")

    # A higher priority preempts low-a (the only admitted one): Kueue suspends its Job (the watch's flips).
    apply(c, ns, queued_finetune("high", HIGH))
    preempted = wait_for("low-a preempted", lambda: (s := status(c, ns, "low-a")).get("reason") == "Queued" and "(Pending: " in s["message"] and s,
                         op=operator)
    wait_for("high done", lambda: status(c, ns, "high").get("phase") == "Succeeded", op=operator)
    # Kueue's word: the preemption, or (once it looked again) the quota that high holds.
    assert preempted["phase"] == "Pending" and any(
        words in preempted["message"] for words in ("Preempted to accommodate a workload", "insufficient unused quota")), preempted["message"]
    # Quota frees: low-a, first in the queue (Kueue orders equal priorities by creation), runs again.
    wait_for("low-a back", lambda: status(c, ns, "low-a").get("phase") == "Running" and running_pods(c, ns, "low-a"), op=operator)
    assert status(c, ns, "low-b")["reason"] == "Queued"

    # A two-node fine-tune (2 x 2 GPUs) with 2 GPUs left: one pod would fit, but the gang waits whole.
    apply(c, ns, queued_finetune("gang", LOW, nodes=2, gpus=2))
    gang = wait_for("gang queued", lambda: (s := status(c, ns, "gang")).get("reason") == "Queued" and "nvidia.com/gpu" in s.get("message", "") and s,
                    op=operator)
    time.sleep(2)
    assert training_job(c, ns, "gang")["spec"]["suspend"] is True, gang
    assert not items(c, "pods", ns, "reasonops.io/name=gang")

    flips = watch.stop()
    # Admissions of low-a (twice) and high, and the preemption of low-a: all Kueue's, none the operator's.
    assert [(name, suspend) for name, suspend, _ in flips if name == "low-a"] == [("low-a", False), ("low-a", True), ("low-a", False)], flips
    assert ("high", False) in [(name, suspend) for name, suspend, _ in flips], flips
    assert {manager for _, _, manager in flips} == {"kueue"}, flips  # Kueue's field manager; the operator's is reasonops


def test_an_evalruns_server_takes_part_in_the_same_quota(operator, volumes):
    """The server's Deployment carries the queue label: Kueue's deployment and pod integrations gate each
    server pod until its GPU is admitted from the ClusterQueue's quota."""
    c, ns = operator.cluster, volumes
    apply(c, ns, *queues(ns, gpus=1))
    apply(c, ns, dataset("ds"), finetune("ft", "ds"))
    wait_for("fine-tune", lambda: get(c, "finetunejob", ns, "ft").get("status", {}).get("phase") == "Succeeded", op=operator)
    labels = {"kueue.x-k8s.io/queue-name": "gpu-batch", "kueue.x-k8s.io/priority-class": LOW}
    first, second = evalrun("ev-a", "ft"), evalrun("ev-b", "ft")
    for body in (first, second):
        body["metadata"]["labels"] = labels
    apply(c, ns, first)
    wait_for("ev-a evaluated", lambda: cond(get(c, "evalrun", ns, "ev-a"), "Passed").get("status") == "True", timeout=90, op=operator)
    pods = items(c, "pods", ns, "reasonops.io/name=ev-a,reasonops.io/component=server")
    assert pods[0]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-batch" and pods[0]["status"]["phase"] == "Running"
    # The first server keeps the only GPU (keepAfterEval): the second server's pod stays gated by Kueue.
    apply(c, ns, second)
    gated = wait_for("ev-b's server gated", lambda: [p for p in items(c, "pods", ns, "reasonops.io/name=ev-b,reasonops.io/component=server")
                                                    if {"name": "kueue.x-k8s.io/admission"} in (p["spec"].get("schedulingGates") or [])],
                     op=operator)
    time.sleep(2)
    assert not (get(c, "pod", ns, gated[0]["metadata"]["name"])["status"].get("phase") == "Running")
    assert cond(get(c, "evalrun", ns, "ev-b"), "Passed").get("status") != "True"
    # Deleting the first EvalRun frees the GPU: Kueue admits the second server and the evaluation runs.
    c.kubectl("delete", "evalrun", "ev-a", "-n", ns)
    wait_for("ev-b evaluated", lambda: cond(get(c, "evalrun", ns, "ev-b"), "Passed").get("status") == "True", timeout=90, op=operator)


def test_suspend_and_resume_go_through_kueue(operator, volumes):
    """spec.suspend of a queued FineTuneJob deactivates its Workload: Kueue evicts and suspends the Job, and
    admits it again on resume. A FineTuneJob suspended from the start gets its Job only when resumed."""
    c, ns = operator.cluster, volumes
    watch = queues_and_dataset(operator, ns)
    apply(c, ns, queued_finetune("ft", LOW, runs_for="600s"))
    wait_for("running", lambda: status(c, ns, "ft").get("phase") == "Running", op=operator)

    c.kubectl("patch", "finetunejob", "ft", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_for("suspended", lambda: status(c, ns, "ft").get("phase") == "Suspended" and training_job(c, ns, "ft")["spec"]["suspend"], op=operator)
    workload = items(c, "workloads", ns)[0]
    assert workload["spec"]["active"] is False
    wait_for("its pod gone", lambda: not running_pods(c, ns, "ft"), op=operator)

    c.kubectl("patch", "finetunejob", "ft", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for("running again", lambda: status(c, ns, "ft").get("phase") == "Running" and running_pods(c, ns, "ft"), op=operator)

    later = queued_finetune("later", LOW)
    later["spec"]["suspend"] = True
    apply(c, ns, later)
    wait_for("later suspended", lambda: status(c, ns, "later").get("phase") == "Suspended", op=operator)
    assert not items(c, "jobs", ns, "reasonops.io/name=later")
    c.kubectl("patch", "finetunejob", "later", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for("later queued", lambda: status(c, ns, "later").get("reason") == "Queued" and "nvidia.com/gpu" in status(c, ns, "later")["message"],
             op=operator)

    flips = watch.stop()
    assert [(name, suspend) for name, suspend, _ in flips] == [("ft", False), ("ft", True), ("ft", False)], flips
    assert {manager for _, _, manager in flips} == {"kueue"}, flips
