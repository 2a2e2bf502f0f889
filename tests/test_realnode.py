"""The whole chain in real containers on a real node, as it runs for a user.

The chart is installed with `helm install` and its operator image runs as a pod under the chart's
ServiceAccount and RBAC; every workload runs in the CPU workload image on the real kubelet node
(hack/cluster.sh up --real-node), in a namespace that enforces Pod Security `restricted`, reading and
writing a local PersistentVolume. Nothing is simulated: pods that fail here fail for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from conftest import KUBECTL, REAL_NODE_LABEL, ROOT, TOOLS_BIN, RealCluster
from reasonops import serving

pytestmark = [pytest.mark.realnode, pytest.mark.timeout(1800)]

API = "reasonops.io/v1alpha1"
HELM = TOOLS_BIN / "helm"
UID = 1000
POOL = ROOT / "operator" / "reasonops" / "data" / "demo_pool.jsonl"


@dataclass
class Release:
    cluster: RealCluster
    ns: str
    volume: Path  # the host directory behind the claim `data`
    operator_ns: str = "reasonops-system"

    def get(self, kind: str, name: str, ns: str | None = None) -> dict:
        proc = self.cluster.kubectl("get", kind, name, "-n", ns or self.ns, "-o", "json", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else {}

    def items(self, kind: str, selector: str = "", ns: str | None = None) -> list[dict]:
        args = ["get", kind, "-n", ns or self.ns, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.cluster.kubectl(*args).stdout)["items"]

    def apply(self, *docs: dict) -> None:
        # JSON, not YAML: PyYAML writes "1e-3" unquoted, which kubectl's YAML 1.2 reads as a number.
        self.cluster.kubectl("apply", "-n", self.ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}))

    def delete(self, kind: str, *names: str) -> None:
        """Remove what a test no longer needs (the real node has two CPUs for every pod of the module)."""
        self.cluster.kubectl("delete", kind, *names, "-n", self.ns, "--ignore-not-found", "--wait=false")

    def diagnostics(self) -> str:
        """What a person would look at: the operator's log, the namespace's pods and events."""
        c = self.cluster
        out = [c.kubectl("logs", "-n", self.operator_ns, "deploy/reasonops", "--tail=60", check=False).stdout,
               c.kubectl("get", "pods", "-n", self.ns, "-o", "wide", check=False).stdout,
               c.kubectl("get", "events", "-n", self.ns, "--sort-by=.lastTimestamp", check=False).stdout[-4000:]]
        return "\n".join(out)

    def wait_for(self, what: str, fn: Callable[[], Any], timeout: float = 300) -> Any:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                last = fn()
                if last:
                    return last
            except (subprocess.CalledProcessError, KeyError, IndexError, TypeError) as exc:
                last = exc
            time.sleep(2)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}\n{self.diagnostics()}")

    def wait_condition(self, kind: str, name: str, type_: str, status: str = "True", timeout: float = 600) -> dict:
        def check():
            obj = self.get(kind, name)
            failed = cond(obj, "Failed")
            if type_ != "Failed" and failed.get("status") == "True":  # no point waiting longer
                raise AssertionError(f"{kind}/{name} failed: {failed.get('reason')}: {failed.get('message')}\n{self.diagnostics()}")
            return cond(obj, type_).get("status") == status and obj
        return self.wait_for(f"{kind}/{name} {type_}={status}", check, timeout)


def cond(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def resources(c: RealCluster, **extra) -> dict:
    """The pods' placement on the real node, and their sizes: small requests, so that the pods a test runs at once
    fit on the node's cores, and a limit of all of them (cpuLimit), so that a pod alone is not throttled at its
    request (vLLM's start at 250m took minutes)."""
    return {**c.placement, "cpuLimit": str(os.cpu_count() or 1), **extra}


def helm(c: RealCluster, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(HELM), "--kubeconfig", c.kubeconfig, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"helm {' '.join(args[:2])} failed:\n{proc.stderr}\n{proc.stdout}"
    return proc


def local_volume(c: RealCluster, ns: str, claim: str, path: Path) -> list[dict]:
    """A `local` PersistentVolume on the real node and its claim, bound to each other."""
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{ns}-{claim}"},
          "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                   "persistentVolumeReclaimPolicy": "Retain", "local": {"path": str(path)},
                   "claimRef": {"namespace": ns, "name": claim},
                   "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                       {"key": REAL_NODE_LABEL, "operator": "In", "values": ["true"]}]}]}}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": ns},
           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": f"{ns}-{claim}",
                    "resources": {"requests": {"storage": "10Gi"}}}}
    return [pv, pvc]


def chown_tree(path: Path) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, UID, UID)


@pytest.fixture(scope="module")
def release(real_cluster: RealCluster, tmp_path_factory):
    c = real_cluster
    ns = f"rn-{uuid.uuid4().hex[:8]}"
    c.kubectl("create", "namespace", ns)
    c.kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
              "pod-security.kubernetes.io/enforce-version=latest")
    volume = c.dir / "volumes" / ns
    (volume / "pool").mkdir(parents=True)
    shutil.copy(POOL, volume / "pool" / "pool.jsonl")
    from reasonops.tinymodel import build_tiny_model
    # A shape vLLM's CPU backend serves (attention heads of 32 or more; docs/vllm-cpu): the served evaluation's model.
    build_tiny_model(volume / "models" / "base", hidden=64, heads=2, kv_heads=1)
    chown_tree(volume)
    c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": local_volume(c, ns, "data", volume)}))

    op_repo, op_tag = c.images["operator"].rsplit(":", 1)
    wl_repo, wl_tag = c.images["workload-cpu"].rsplit(":", 1)
    values = {
        "images": {"operator": {"repository": op_repo, "tag": op_tag, "pullPolicy": "Never"},
                   **{k: {"repository": wl_repo, "tag": wl_tag, "pullPolicy": "Never"} for k in ("curate", "train", "eval", "serve")}},
        "workloadServiceAccount": {"extraNamespaces": [ns]},
        "nodeSelector": {REAL_NODE_LABEL: "true"},
        "tolerations": [{"key": REAL_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "metrics": {"service": {"enabled": False}},
    }
    values_file = tmp_path_factory.mktemp("helm") / "values.yaml"
    values_file.write_text(json.dumps(values))  # JSON is YAML with every string quoted: a tag like 81920722430285e2 stays a string
    # Helm installs a chart's CRDs only once; on upgrade they are applied as a user would (kept clusters).
    c.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "charts" / "reasonops" / "crds"))
    # upgrade --install: a release left by an interrupted run on a kept cluster is taken over.
    helm(c, "upgrade", "--install", "reasonops", str(ROOT / "charts" / "reasonops"), "-n", "reasonops-system", "--create-namespace",
         "-f", str(values_file), "--wait", "--timeout", "240s")
    rel = Release(c, ns, volume)
    yield rel
    subprocess.run([str(HELM), "--kubeconfig", c.kubeconfig, "uninstall", "reasonops", "-n", "reasonops-system"],
                   capture_output=True, timeout=120)
    c.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def dataset(c: RealCluster, name: str, **spec) -> dict:
    body = {
        "sources": [{"name": "pool", "path": "/mnt/pvc/data/pool/pool.jsonl"}],
        "stages": [
            {"name": "dedupe", "dedupe": {"threshold": "0.8", "shingleSize": 3}},
            {"name": "decontaminate", "decontaminate": {"benchmarks": ["demo"], "ngram": 8, "threshold": "0.5"}},
            {"name": "select", "select": {"size": 16}},
        ],
        "output": {"volume": {"claimName": "data", "path": "datasets"}},
        "resources": resources(c, cpu="1", memory="1Gi"),
        "backoffLimit": 0,
        **spec,
    }
    return {"apiVersion": API, "kind": "ReasoningDataset", "metadata": {"name": name}, "spec": body}


def finetune(c: RealCluster, name: str, dataset_name: str, nodes: int = 1, **spec) -> dict:
    body = {
        "baseModel": {"name": "base", "volume": {"volume": {"claimName": "data", "path": "models"}}},
        "datasetRef": {"name": dataset_name},
        "method": "full",
        "hyperparameters": {"learningRate": "1e-3", "epochs": 2, "maxLength": 512, "globalBatchSize": 4, "warmupRatio": "0"},
        "deepspeed": {"zeroStage": 3},
        "attention": "sdpa",
        "numNodes": nodes,
        "gpusPerNode": 0,
        "distributedBackend": "gloo",
        "checkpoints": {"everyEpochs": 1, "keep": 2},
        "output": {"volume": {"claimName": "data", "path": "models"}},
        "resources": resources(c, cpu="500m", memory="2Gi"),
        "backoffLimit": 2,
        **spec,
    }
    return {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": name}, "spec": body}


def evalrun(c: RealCluster, name: str, ft_name: str, **spec) -> dict:
    body = {
        "model": {"fineTuneJob": ft_name},
        "protocol": "limo",
        "benchmarks": [{"name": "demo", "maxTokens": 24}],
        "concurrency": 4,
        # vLLM's CPU backend: 3.5-4.5 GB resident with its 1 GiB KV cache (docs/vllm-cpu). A CPU request of 250m:
        # the 2-core node runs the operator and a curation pod (1 CPU) beside it while it serves.
        "serving": {"engine": "cpu", "resources": resources(c, cpu="250m", memory=serving.cpu_server_memory())},
        "gates": [{"benchmark": "demo", "minScore": "0.0"}],
        "resources": resources(c, cpu="500m", memory="1Gi"),
        "backoffLimit": 0,
        **spec,
    }
    return {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": name}, "spec": body}


def base_model_evalrun(c: RealCluster, name: str) -> dict:
    """An EvalRun of the tiny base model on the volume: it depends on no training test."""
    doc = evalrun(c, name, "unused")
    doc["spec"]["model"] = {"name": "models/base", "volume": {"volume": {"claimName": "data", "path": ""}}}
    doc["spec"]["output"] = {"volume": {"claimName": "data", "path": "evals"}}
    return doc


def pods_on_real_node(rel: Release, selector: str) -> list[dict]:
    pods = rel.items("pods", selector)
    assert pods, f"no pods for {selector}"
    assert {p["spec"].get("nodeName") for p in pods} <= {"real-node", None}, [p["spec"].get("nodeName") for p in pods]
    return pods


# --- 1. the chart's operator as a pod ---------------------------------------------------------


def test_operator_runs_as_a_pod_under_the_charts_service_account(release: Release):
    c = release.cluster
    pods = release.items("pods", "app.kubernetes.io/name=reasonops", ns=release.operator_ns)
    pod = next(p for p in pods if p["status"].get("phase") == "Running")
    assert pod["spec"]["nodeName"] == "real-node"
    assert pod["spec"]["serviceAccountName"] == "reasonops"
    assert pod["spec"]["containers"][0]["image"] == c.images["operator"]
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])
    # The workload ServiceAccount may patch status and nothing more.
    sa = f"system:serviceaccount:{release.ns}:reasonops-workload"
    can = lambda *a: c.kubectl("auth", "can-i", *a, "-n", release.ns, "--as", sa, check=False).stdout.strip()
    assert can("patch", "reasoningdatasets.reasonops.io", "--subresource=status") == "yes"
    assert can("create", "pods") == "no" and can("get", "secrets") == "no"


# --- 2. curation from a pool file on a PersistentVolume ------------------------------------------


def test_dataset_curates_a_pool_file_on_a_persistent_volume(release: Release):
    c = release.cluster
    release.apply(dataset(c, "pool"))
    ds = release.wait_condition("reasoningdataset", "pool", "Ready", timeout=600)
    written = release.volume / "datasets" / "pool" / ds["status"]["revision"]
    rows = [json.loads(line) for line in (written / "data.jsonl").read_text().splitlines()]
    assert len(rows) == ds["status"]["selected"] > 0
    counts = {s["stage"]: s for s in ds["status"]["stageCounts"]}
    assert counts["decontaminate"]["dropped"] > 0  # the demo pool holds benchmark problems on purpose
    pods = pods_on_real_node(release, "reasonops.io/name=pool")
    assert pods[0]["spec"]["serviceAccountName"] == "reasonops-workload"
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    # The location a consumer resolves, not the path inside the pod that wrote it.
    assert ds["status"]["output"]["location"] == f"pvc://data/datasets/pool/{ds['status']['revision']}"


def test_pod_settings_bring_an_env_var_from_a_secret_and_an_extra_volume_the_workload_reads(release: Release):
    """spec.resources.env and volumes on a real kubelet: the curation pod reads its pool from a ConfigMap mounted
    as an extra volume, and gets a variable from a Secret (a missing Secret would stop the container starting)."""
    c = release.cluster
    release.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra-pool"}, "data": {"pool.jsonl": POOL.read_text()}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "extra-secret"}, "stringData": {"note": "from-a-secret"}},
    )
    doc = dataset(c, "podsettings", sources=[{"name": "pool", "path": "/extra/pool.jsonl"}])
    doc["spec"]["resources"].update(
        env=[{"name": "EXTRA_NOTE", "valueFrom": {"secretKeyRef": {"name": "extra-secret", "key": "note"}}}],
        volumes=[{"name": "extra", "configMap": {"name": "extra-pool"}}],
        volumeMounts=[{"name": "extra", "mountPath": "/extra", "readOnly": True}],
    )
    release.apply(doc)
    ds = release.wait_condition("reasoningdataset", "podsettings", "Ready", timeout=600)
    assert ds["status"]["selected"] > 0  # read from the extra volume: no other copy of the pool is in the pod
    pod = pods_on_real_node(release, "reasonops.io/name=podsettings")[0]
    container = pod["spec"]["containers"][0]
    assert {"name": "EXTRA_NOTE", "valueFrom": {"secretKeyRef": {"name": "extra-secret", "key": "note"}}} in container["env"]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    release.delete("reasoningdataset", "podsettings")


# --- 3. training: one node, two nodes ----------------------------------------------------------


def test_finetune_on_one_node_writes_the_model_to_the_volume(release: Release):
    c = release.cluster
    if not release.get("reasoningdataset", "pool"):
        release.apply(dataset(c, "pool"))
    release.apply(finetune(c, "ft1", "pool", nodes=1))
    ft = release.wait_condition("finetunejob", "ft1", "Ready", timeout=900)
    model = release.volume / ft["status"]["modelLocation"].removeprefix("pvc://data/").removeprefix("/mnt/pvc/data/")
    assert (model / "config.json").exists() and list(model.glob("*.safetensors"))
    assert float(ft["status"]["lastLoss"]) > 0
    pods_on_real_node(release, "reasonops.io/name=ft1")


def test_finetune_on_two_nodes_meets_over_the_headless_service(release: Release):
    c = release.cluster
    if not release.get("reasoningdataset", "pool"):
        release.apply(dataset(c, "pool"))
    release.apply(finetune(c, "ft2", "pool", nodes=2))
    ft = release.wait_condition("finetunejob", "ft2", "Ready", timeout=900)
    model = release.volume / ft["status"]["modelLocation"].removeprefix("pvc://data/").removeprefix("/mnt/pvc/data/")
    assert (model / "config.json").exists() and list(model.glob("*.safetensors"))
    pods = pods_on_real_node(release, "reasonops.io/name=ft2")
    assert len({p["metadata"]["name"] for p in pods}) >= 2
    logs = "".join(c.kubectl("logs", "-n", release.ns, p["metadata"]["name"], check=False).stdout for p in pods)
    assert "gloo" in logs.lower() or "world_size" in logs.lower() or "rendezvous" in logs.lower(), logs[-3000:]


# --- 4. a training pod killed or deleted mid-run -----------------------------------------------


def apply_paused(release: Release, ft_doc: dict, step: int, index: int) -> dict:
    """Apply the FineTuneJob `ft_doc` with the test-only pause (train.preemption.PAUSE_AT_STEP): the pod of `index`
    (one process per pod: rank `index`) stands still after `step` and its checkpoint, if one is due, until it is
    signalled or killed; its peer waits for it in the next collective. Returns that pod once it says it paused, so
    that a kill or a deletion lands at that step, mid-run, without a race. The pause's variables reach the pods
    as a user's would: the keys of the Secret that output.credentialsSecretRef names become their environment."""
    from reasonops.train.preemption import PAUSE_AT_STEP, PAUSE_RANK

    c, name = release.cluster, ft_doc["metadata"]["name"]
    if not release.get("reasoningdataset", "pool"):
        release.apply(dataset(c, "pool"))
    c.kubectl("create", "secret", "generic", f"{name}-pause", "-n", release.ns,
              f"--from-literal={PAUSE_AT_STEP}={step}", f"--from-literal={PAUSE_RANK}={index}")
    ft_doc["spec"]["output"]["credentialsSecretRef"] = f"{name}-pause"
    release.apply(ft_doc)

    def paused():
        pods = release.items("pods", f"reasonops.io/name={name},batch.kubernetes.io/job-completion-index={index}")
        return next((p for p in pods if p["status"].get("phase") == "Running" and f"{PAUSE_AT_STEP}={step}" in
                     c.kubectl("logs", "-n", release.ns, p["metadata"]["name"], check=False).stdout), None)
    return release.wait_for(f"pod {index} paused after step {step}", paused, timeout=600)


def sigkill_container(pod: dict) -> list[int]:
    """SIGKILL every process of the pod's container from the node, as the kernel's OOM killer or a crash leaves a
    pod: no SIGTERM, no time to stop. (A deletion, even forced, is a SIGTERM first: the kubelet gives at least 2 s,
    in which the paused rank may stop cleanly with STOPPED_EXIT_CODE, which the Job does not count as a failure.)
    The pod's processes are those in its container's cgroup (the kubelet's cgroupfs layout, v1 or v2)."""
    import signal

    uid = pod["metadata"]["uid"]
    (status,) = pod["status"]["containerStatuses"]
    container = status["containerID"].split("://", 1)[1]
    patterns = [f"{parent}/{qos}pod{uid}/{container}/cgroup.procs"
                for parent in ("*/kubepods", "kubepods") for qos in ("", "*/")]
    files = [f for pattern in patterns for f in Path("/sys/fs/cgroup").glob(pattern)]
    pids = sorted({int(pid) for f in files for pid in f.read_text().split()})
    assert pids, f"no processes in the cgroup of container {container} of pod {pod['metadata']['name']}"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def job_logs(release: Release, name: str) -> str:
    """The logs of every pod of the FineTuneJob `name` that still exists."""
    return "".join(release.cluster.kubectl("logs", "-n", release.ns, p["metadata"]["name"], check=False).stdout
                   for p in release.items("pods", f"reasonops.io/name={name}"))


def loss_curve_steps(release: Release, name: str, ft: dict) -> list[int]:
    """Every line of the finished run's loss curve, in order: a step done twice shows twice."""
    log = release.volume / "models" / name / ft["status"]["modelRevision"] / "train_log.jsonl"
    return [json.loads(line)["step"] for line in log.read_text().splitlines()]


@pytest.mark.parametrize("index", [1, 0], ids=["worker", "store-host"])
def test_training_pod_killed_mid_run_restarts_the_group_and_resumes(release: Release, index: int):
    """The processes of one pod of two are SIGKILLed after step 4 and its checkpoint (an OOM kill, a crash): the Job
    counts one failure, the operator restarts the group, and it resumes from step-4. Index 1 is a worker; index 0
    also hosts torchrun's store, whose loss once let the peer's torchrun exit 0 and the group could not re-form
    (issue #11; the launcher now fails such a pod: train.run_group)."""
    c = release.cluster
    name = f"ftk{index}"
    ft_doc = finetune(c, name, "pool", nodes=2)
    # 16 steps, a checkpoint every 4; the pod of `index` pauses after step 4 and its checkpoint.
    ft_doc["spec"]["hyperparameters"]["epochs"] = 4
    ft_doc["spec"]["checkpoints"] = {"everySteps": 4, "keep": 2}
    victim = apply_paused(release, ft_doc, step=4, index=index)
    assert list((release.volume / "models" / name).glob("*/checkpoints/step-4")), "the kill lands after a checkpoint"
    sigkill_container(victim)
    ft = release.wait_condition("finetunejob", name, "Ready", timeout=900)
    # One kill, one group restart: the peer's own failure (PEER_LOST_EXIT_CODE) and its eviction are not counted.
    assert ft["status"].get("restarts") == 1, ft["status"]
    logs = job_logs(release, name)
    assert "resum" in logs.lower(), logs[-3000:]
    # One loss curve, as an uninterrupted run writes it: every step once, none repeated after the resume.
    steps = loss_curve_steps(release, name, ft)
    assert steps and steps == list(range(1, len(steps) + 1)), steps


def test_training_pod_deleted_mid_run_checkpoints_its_step_and_the_group_resumes_from_it(release: Release):
    """`kubectl delete pod` with the job's own grace period (SIGTERM, then the grace period) of the worker pod of
    two, paused after step 6 with scheduled checkpoints every 4 steps: the deleted pod's rank and its peer, which
    gets no signal, agree in the next collective and both write step 6 (ZeRO-3: a partition each); both pods exit
    with STOPPED_EXIT_CODE, which the Job ignores (no restart counted), and the group the Job starts again resumes
    from step-6, not from the scheduled step-4: one loss curve, every step once."""
    from reasonops.contract import STOPPED_EXIT_CODE

    c, name = release.cluster, "ftdel"
    ft_doc = finetune(c, name, "pool", nodes=2)
    ft_doc["spec"]["hyperparameters"]["epochs"] = 3  # 12 steps
    ft_doc["spec"]["checkpoints"] = {"everySteps": 4, "keep": 4}  # step-4, step-8, step-12, and the stop's step-6
    victim = apply_paused(release, ft_doc, step=6, index=1)
    pod = victim["metadata"]["name"]
    assert victim["spec"]["terminationGracePeriodSeconds"] == 600, "training pods get a long grace period by default"
    # The deleted pod's object goes when its container ends: follow its log until then.
    follow = subprocess.Popen([str(KUBECTL), "--kubeconfig", c.kubeconfig, "logs", "-f", "-n", release.ns, pod],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deleted = time.monotonic()
    c.kubectl("delete", "pod", "-n", release.ns, pod, "--wait=false")
    try:
        stopped, _ = follow.communicate(timeout=300)
    finally:
        follow.kill()
    exited = time.monotonic() - deleted
    assert "stopping: checkpoint step-6 written in" in stopped, stopped[-3000:]
    assert f"(exit {STOPPED_EXIT_CODE}, not counted as a failure)" in stopped, stopped[-3000:]

    ft = release.wait_condition("finetunejob", name, "Ready", timeout=900)
    finished = time.monotonic() - deleted
    assert not ft["status"].get("restarts"), ft["status"]  # a stop on a signal is not a failure
    [peer] = [p for p in release.items("pods", f"reasonops.io/name={name},batch.kubernetes.io/job-completion-index=0")
              if p["status"].get("phase") == "Failed"]  # the first group's store host, which got no signal
    assert peer["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == STOPPED_EXIT_CODE
    peer_log = c.kubectl("logs", "-n", release.ns, peer["metadata"]["name"]).stdout
    assert "stopping: checkpoint step-6 written in" in peer_log, peer_log[-3000:]  # it saved its own partition
    logs = job_logs(release, name)
    assert "checkpoints/step-6 at step 6" in logs and "step-4 at step 4" not in logs, logs[-3000:]
    checkpoint = release.volume / "models" / name / ft["status"]["modelRevision"] / "checkpoints" / "step-6"
    assert (checkpoint / "_COMPLETE").exists()
    partitions = sorted(p.name for p in (checkpoint / "state").iterdir() if "optim_states" in p.name)
    assert len(partitions) == 2, partitions  # every rank wrote its own
    assert loss_curve_steps(release, name, ft) == list(range(1, 13)), "one loss curve: no step repeated or skipped"
    # The figures of docs/benchmarks.md: the stop checkpoint's time in each pod, its files, the deleted pod's exit.
    print("checkpoint on SIGTERM in the pods:", [line.strip() for line in (stopped + logs).splitlines()
                                                 if "written in" in line],
          {str(f.relative_to(checkpoint)): f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()},
          f"from the deletion: the pod's exit {exited:.1f}s, the resumed run finished {finished:.1f}s")


# --- 5. evaluation through the served model's Service (CPU engine) ------------------------------


def test_evalrun_serves_the_model_behind_its_service_and_reports_gates(release: Release):
    """The real `vllm serve` (vLLM's CPU backend, from the CPU workload image) answers the benchmark pod."""
    c = release.cluster
    release.apply(base_model_evalrun(c, "ev"))
    ev = release.wait_condition("evalrun", "ev", "Passed", timeout=900)
    assert ev["status"]["results"][0]["benchmark"] == "demo"
    assert ev["status"]["gates"][0]["passed"] is True
    deployment = release.get("deployment", "ev-server")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["vllm", "serve"]
    assert container["image"] == c.images["workload-cpu"]
    assert deployment["status"].get("readyReplicas") == 1 or ev["spec"].get("serving", {}).get("keepAfterEval") is False
    server = next(p for p in pods_on_real_node(release, "reasonops.io/name=ev") if "server" in p["metadata"]["name"])
    # It is vLLM that answers: its own metrics, from the port the chart's PodMonitor selects (`http`).
    assert [p["name"] for p in server["spec"]["containers"][0]["ports"]] == ["http"]
    assert served_requests(release, server) > 0
    started = server["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    ready = cond(server, "Ready")["lastTransitionTime"]
    print(f"\n[realnode] vllm serve pod: container started {started}, Ready {ready}")


def served_requests(release: Release, server: dict) -> float:
    """The requests the server pod's vLLM finished, from its /metrics (through the API server's pod proxy)."""
    port = server["spec"]["containers"][0]["ports"][0]["containerPort"]
    metrics = release.cluster.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{release.ns}/pods/{server['metadata']['name']}:{port}/proxy/metrics").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("vllm:request_success_total{"))


# --- 6. curation sampling from an EvalRun's served model ----------------------------------------


def served_evalrun(release: Release) -> dict:
    """The EvalRun `ev` of test 5 (applied here when that test did not run), once it passed."""
    if not release.get("evalrun", "ev"):
        release.apply(base_model_evalrun(release.cluster, "ev"))
    return release.wait_condition("evalrun", "ev", "Passed", timeout=900)


def test_dataset_difficulty_stage_samples_from_an_evalruns_served_model(release: Release):
    c = release.cluster
    served_evalrun(release)
    server = next(p for p in release.items("pods", "reasonops.io/name=ev") if "server" in p["metadata"]["name"]
                  and p["status"].get("phase") == "Running")
    requests = lambda: served_requests(release, server)  # the server's own count
    before = requests()
    doc = dataset(c, "sampled")
    doc["spec"]["stages"] = [
        {"name": "dedupe", "dedupe": {"threshold": "0.8", "shingleSize": 3}},
        # A random tiny model solves nothing: every problem stays (minSolved 0), each attempted twice.
        {"name": "difficulty", "difficulty": {"sampler": {"model": "served", "evalRun": "ev"}, "attempts": 2,
                                               "minSolved": 0, "maxSolved": 2, "sampling": {"maxTokens": 8}}},
        {"name": "select", "select": {"size": 8}},
    ]
    release.apply(doc)
    ds = release.wait_condition("reasoningdataset", "sampled", "Ready", timeout=600)
    counts = {s["stage"]: s for s in ds["status"]["stageCounts"]}
    attempted = counts["difficulty"]["kept"] + counts["difficulty"]["dropped"]
    assert attempted == counts["dedupe"]["kept"] > 0
    # The attempts went to the EvalRun's server, through its Service, from the curation pod.
    after = requests()
    assert after - before >= attempted, (before, after, attempted)
    pods_on_real_node(release, "reasonops.io/name=sampled")
    release.delete("evalrun", "ev")  # its server holds CPU the later tests need


# --- 7. status written by the pods themselves, under Pod Security `restricted` -------------------


def test_pods_patch_their_own_progress_with_the_workload_service_account(release: Release):
    c = release.cluster
    labels = release.get("namespace", release.ns, ns="")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    if not release.get("reasoningdataset", "pool"):
        release.apply(dataset(c, "pool"))
    ds = release.wait_condition("reasoningdataset", "pool", "Ready", timeout=600)
    # The operator never writes status.progress: the pod did, as the workload ServiceAccount
    # (its own field manager, kube.WORKLOAD_FIELD_MANAGER), for the current revision.
    obj = json.loads(c.kubectl("get", "reasoningdataset", "pool", "-n", release.ns, "-o", "json", "--show-managed-fields").stdout)
    owners = {m["manager"] for m in obj["metadata"]["managedFields"]
              if m.get("subresource") == "status" and "f:progress" in m["fieldsV1"].get("f:status", {})}
    assert owners == {"reasonops-workload"}, obj["metadata"]["managedFields"]
    progress = ds["status"]["progress"]
    assert progress["revision"] == ds["status"]["revision"]
    assert progress["result"]["samples"] == ds["status"]["selected"]
    pod = pods_on_real_node(release, "reasonops.io/name=pool")[0]
    assert pod["spec"]["serviceAccountName"] == "reasonops-workload"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    events = release.items("events")
    assert not [e for e in events if e.get("reason") == "StatusUpdateFailed"], [e["message"] for e in events]


# --- 8. failures surfaced with Kubernetes' reason ---------------------------------------------


def test_an_image_that_does_not_exist_is_surfaced(release: Release):
    c = release.cluster
    doc = dataset(c, "noimage")
    doc["spec"]["resources"]["image"] = "reasonops/does-not-exist:1"
    release.apply(doc)
    def surfaced():
        ds = release.get("reasoningdataset", "noimage")
        text = json.dumps((ds.get("status") or {}).get("conditions") or [])
        return ("ErrImageNeverPull" in text or "ImagePull" in text) and ds
    release.wait_for("the missing image in the dataset's conditions", surfaced, timeout=180)
    release.delete("reasoningdataset", "noimage")


def test_a_server_that_crash_loops_is_surfaced(release: Release):
    c = release.cluster
    doc = evalrun(c, "crash", "ft-missing-model")
    doc["spec"]["model"] = {"name": "no-such-model", "volume": {"volume": {"claimName": "data", "path": ""}}}
    doc["spec"]["output"] = {"volume": {"claimName": "data", "path": "evals"}}
    doc["spec"]["serving"]["resources"]["memory"] = "512Mi"
    release.apply(doc)
    def surfaced():
        ev = release.get("evalrun", "crash")
        text = json.dumps((ev.get("status") or {}).get("conditions") or [])
        return "CrashLoopBackOff" in text and ev
    release.wait_for("CrashLoopBackOff in the EvalRun's conditions", surfaced, timeout=300)
    release.delete("evalrun", "crash")


def test_a_pod_over_its_memory_limit_is_surfaced(release: Release):
    c = release.cluster
    release.apply(dataset(c, "oom", resources=resources(c, cpu="500m", memory="40Mi")))
    def surfaced():
        ds = release.get("reasoningdataset", "oom")
        text = json.dumps((ds.get("status") or {}).get("conditions") or [])
        return "OOMKilled" in text and ds
    release.wait_for("OOMKilled in the dataset's conditions", surfaced, timeout=300)
    release.delete("reasoningdataset", "oom")


# --- 9. the GitOps retraining loop of examples/gitops, in real containers ------------------------


def cpu_overlay(c: RealCluster, namespace: str, selected: int) -> str:
    """The staging overlay made to run on the real node: the shipped pool file, the tiny model on the
    models claim, CPU training and the CPU serving engine, the demo benchmark (nothing downloads)."""
    def replace(kind: str, name: str, **values) -> dict:
        return {"target": {"group": "reasonops.io", "kind": kind, "name": name},
                "patch": json.dumps([{"op": "add", "path": f"/spec/{k}", "value": v} for k, v in values.items()])}
    small = resources(c, cpu="500m", memory="2Gi")
    return yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": namespace,
        "resources": ["../staging"],
        "patches": [
            replace("ReasoningDataset", "math-reasoning", resources=small,
                    sources=[{"name": "pool", "path": "/mnt/pvc/reasoning-data/pool/pool.jsonl"}],
                    stages=[{"name": "dedupe", "dedupe": {"threshold": "0.8", "shingleSize": 3}},
                            {"name": "decontaminate", "decontaminate": {"benchmarks": ["demo"], "ngram": 8, "threshold": "0.5"}},
                            {"name": "select", "select": {"size": selected}}]),
            {"target": {"group": "reasonops.io", "kind": "ReasoningDataset", "name": "math-reasoning"},
             "patch": json.dumps([{"op": "remove", "path": "/spec/tokenizer"}])},
            replace("FineTuneJob", "reasoner", resources=small, numNodes=1, gpusPerNode=0, attention="sdpa",
                    baseModel={"name": "base", "volume": {"volume": {"claimName": "reasoning-models", "path": ""}}},
                    hyperparameters={"learningRate": "1e-3", "epochs": 1, "maxLength": 512, "globalBatchSize": 4, "warmupRatio": "0"},
                    deepspeed={"zeroStage": 3}),
            replace("EvalRun", "reasoner-eval", resources=resources(c, cpu="250m", memory="1Gi"),
                    benchmarks=[{"name": "demo", "maxTokens": 16}],
                    serving={"engine": "cpu", "resources": resources(c, cpu="250m", memory=serving.cpu_server_memory())},
                    gates=[{"benchmark": "demo", "minScore": "0"}]),
        ],
    }, sort_keys=False, width=1 << 20)  # one patch per line: the test edits it as text


def test_gitops_loop_retrains_and_reevaluates_in_real_containers(release: Release):
    from chart_support import argocd_health
    from test_gitops_loop import Repo, readme_scripts, run_script

    c, ns = release.cluster, release.ns
    claims = {}
    for claim in ("reasoning-data", "reasoning-models"):
        path = c.dir / "volumes" / f"{ns}-{claim}"
        path.mkdir(parents=True, exist_ok=True)
        claims[claim] = path
    (claims["reasoning-data"] / "pool").mkdir(exist_ok=True)
    shutil.copy(POOL, claims["reasoning-data"] / "pool" / "pool.jsonl")
    shutil.copytree(release.volume / "models" / "base", claims["reasoning-models"] / "base", dirs_exist_ok=True)
    for path in claims.values():
        chown_tree(path)
    for claim, path in claims.items():  # the claims come from git; their volumes are the cluster's
        pv = local_volume(c, ns, claim, path)[0]
        pv["spec"]["accessModes"] = ["ReadWriteMany"]
        pv["spec"]["capacity"]["storage"] = "2Ti"
        c.kubectl("apply", "-f", "-", input=json.dumps(pv))

    repo = Repo(c.dir / f"gitops-{ns}", c, ns, overlay="cpu", kustomization=cpu_overlay(c, ns, selected=12))
    waits, handover, verdict = readme_scripts()
    live = lambda kind, name: release.get(kind, name)

    repo.sync()
    proc = run_script(c, waits, ns, timeout_s=300)
    assert proc.returncode == 0, f"{proc.stderr}\n{release.diagnostics()}"
    ds, ft, ev = live("reasoningdataset", "math-reasoning"), live("finetunejob", "reasoner"), live("evalrun", "reasoner-eval")
    assert ds["status"]["selected"] == 12
    first = {"output": ds["status"]["output"]["revision"], "model": ft["status"]["modelRevision"], "eval": ev["status"]["revision"]}
    assert [argocd_health(o)[0] for o in (ds, ft, ev)] == ["Healthy"] * 3

    # The README's loop: edit the dataset in git, sync, and the chain follows on its own.
    repo.edit("overlays/cpu/kustomization.yaml", '"size": 12', '"size": 20')
    repo.commit("select 20 problems")
    repo.sync()
    proc = run_script(c, handover, ns, timeout_s=300)
    assert proc.returncode == 0, f"{proc.stderr}\n{release.diagnostics()}"
    proc = run_script(c, verdict, ns, timeout_s=300)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{release.diagnostics()}"
    ds, ft, ev = live("reasoningdataset", "math-reasoning"), live("finetunejob", "reasoner"), live("evalrun", "reasoner-eval")
    assert ds["status"]["selected"] == 20 and ds["status"]["output"]["revision"] != first["output"]
    assert ft["status"]["datasetRevision"] == ds["status"]["output"]["revision"]
    assert ft["status"]["modelRevision"] != first["model"], "the fine-tune retrained on the new dataset"
    assert ev["status"]["modelRevision"] == ft["status"]["modelRevision"] and ev["status"]["revision"] != first["eval"]
    model = claims["reasoning-models"] / ft["status"]["modelLocation"].removeprefix("pvc://reasoning-models/")
    assert (model / "config.json").exists(), ft["status"]["modelLocation"]
    assert repo.drift() == "", "the retraining left git and the cluster apart"
    pods_on_real_node(release, "reasonops.io/name=reasoner")


# --- 10. one real node per machine ------------------------------------------------------------


def test_a_second_real_node_waits_for_the_running_one_and_touches_nothing(real_cluster: RealCluster, tmp_path):
    other = tmp_path / "second-cluster"
    env = {**os.environ, "REASONOPS_CLUSTER_DIR": str(other), "REASONOPS_REAL_NODE_WAIT": "2"}
    started = time.monotonic()
    proc = subprocess.run([str(ROOT / "hack" / "cluster.sh"), "up", "--real-node"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert f"another real node still runs on this machine after 2s (cluster {os.path.realpath(real_cluster.dir)}" in proc.stderr, proc.stderr
    assert time.monotonic() - started >= 2, "it waited for the lock before giving up"
    assert not other.exists(), "nothing of the second cluster was made"
    nodes = real_cluster.kubectl("get", "node", "real-node", "-o", "json")
    ready = [c["status"] for c in json.loads(nodes.stdout)["status"]["conditions"] if c["type"] == "Ready"]
    assert ready == ["True"], "the running node kept its bridge and its kubelet"
