"""Operator scale: 1,000 ReasoningDatasets at once against the local control plane.

    hack/cluster.sh up        # prints KUBECONFIG=...
    KUBECONFIG=... .venv/bin/python benchmarks/operator_scale.py --count 1000

Reports (1) the time until every resource has its Job and a status, with the operator running;
(2) the time a plain client needs to create the same children (ConfigMap + Job each) directly — the API
server's own cost, the yardstick; their ratio; and (3) the operator's peak RSS. Resources are created
suspended so the Jobs start no pods and both runs measure the same API work.
Targets: all within 60 s on 2 cores, at most 2x the direct creation time, peak RSS at most 200 MiB.

Both timed phases start on a quiet control plane: each namespace is deleted, and its deletion waited for,
outside the timed part (deleting 2,000 objects takes the namespace controller tens of seconds, which would
otherwise load the next phase). While the operator works, completion is checked cheaply: the number of
Jobs from a one-item list, and the statuses (a full list) only once every Job exists. Listing everything
every half second cost the API server, which shares the cores, about a third of a core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from reasonops.api.v1alpha1 import ReasoningDataset  # noqa: E402
from reasonops import contract as k  # noqa: E402
from reasonops.controller import builders as b  # noqa: E402
from reasonops.kube import Kube  # noqa: E402
from reasonops.controller.settings import Settings  # noqa: E402

WORKERS = 32


def dataset(name: str) -> dict:
    return {
        "apiVersion": "reasonops.io/v1alpha1", "kind": "ReasoningDataset",
        "metadata": {"name": name},
        "spec": {
            "sources": [{"name": "pool", "path": "/data/pool.jsonl"}],
            "stages": [{"name": "select", "select": {"size": 800}}],
            "output": {"volume": {"claimName": "data", "path": "sets"}},
            "suspend": True,
        },
    }


def kubectl(*args: str, input: str | None = None) -> str:
    tools = Path(os.environ.get("REASONOPS_TOOLS", Path.home() / ".cache/reasonops/tools")) / "bin/kubectl"
    return subprocess.run([str(tools), *args], input=input, capture_output=True, text=True, check=True).stdout


def create_all(kube: Kube, objects: list[dict]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(kube.create, objects))
    return time.perf_counter() - started


def count_jobs(kube: Kube, ns: str) -> int:
    """The number of Jobs in the namespace, from a one-item page (the API server counts the rest)."""
    data = kube._call("GET", f"/apis/batch/v1/namespaces/{ns}/jobs", query=[("limit", "1")])
    return len(data.get("items", [])) + (data.get("metadata", {}).get("remainingItemCount") or 0)


def count_with_status(kube: Kube, ns: str) -> int:
    data = kube._call("GET", f"/apis/reasonops.io/v1alpha1/namespaces/{ns}/reasoningdatasets", query=[("limit", "5000")])
    return sum(1 for item in data.get("items", []) if (item.get("status") or {}).get("phase"))


def delete_namespace(ns: str) -> None:
    """Delete the namespace and wait until it is gone, so that its deletion loads no timed phase."""
    kubectl("delete", "namespace", ns, "--wait=true", "--timeout=600s")


def direct(kube: Kube, count: int) -> float:
    """The same children the operator creates, created by a plain client (no owner)."""
    ns = f"direct-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    settings = Settings()
    objects: list[dict] = []
    for i in range(count):
        body = {**dataset(f"ds-{i}"), "metadata": {"name": f"ds-{i}", "namespace": ns, "uid": str(uuid.uuid4())}}
        ds = ReasoningDataset.model_validate(body)
        revision = k.revision_of("ReasoningDataset", ds.spec.to_wire())
        document = k.build_document(ds, revision=revision, output=k.dataset_output(ds, revision))
        for child in b.build_dataset_children(body, ds, document, settings, suspend=True):
            child["metadata"].pop("ownerReferences")
            objects.append(child)
    elapsed = create_all(kube, objects)
    delete_namespace(ns)
    return elapsed


def with_operator(kube: Kube, count: int, timeout: float) -> tuple[float, float, float]:
    ns = f"scale-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    env = {**os.environ, "REASONOPS_METRICS_PORT": "0", "REASONOPS_METRICS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "reasonops", "--log-level", "WARNING", "operator", "--namespace", ns],
                            env=env, stdout=subprocess.DEVNULL, stderr=open("/tmp/operator-scale.log", "w"))
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        p = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], p.memory_info().rss / 2**20)
            except psutil.Error:
                return
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    time.sleep(4)  # the operator is up and watching
    idle_rss = peak[0]
    objects = [{**dataset(f"ds-{i}"), "metadata": {"name": f"ds-{i}", "namespace": ns}} for i in range(count)]
    started = time.perf_counter()
    create_all(kube, objects)
    submitted = time.perf_counter() - started
    while time.perf_counter() - started < timeout:
        if count_jobs(kube, ns) >= count and count_with_status(kube, ns) >= count:
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    jobs = count_jobs(kube, ns)
    stop.set()
    proc.terminate()
    proc.wait(30)
    delete_namespace(ns)
    if jobs < count:
        print(f"only {jobs} of {count} resources got their Job within {timeout}s", file=sys.stderr)
    print(f"  resources submitted by the client in {submitted:.1f}s; operator idle RSS {idle_rss:.0f} MiB")
    return elapsed, peak[0], jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kube = Kube(os.environ.get("KUBECONFIG"), pool_size=WORKERS)
    direct_s = direct(kube, args.count)
    print(f"direct creation of {args.count} ConfigMaps + {args.count} Jobs: {direct_s:.1f}s")
    operator_s, peak_mib, jobs = with_operator(kube, args.count, args.timeout)
    print(f"operator: {jobs}/{args.count} resources with Job and status in {operator_s:.1f}s")
    print(f"ratio operator/direct: {operator_s / direct_s:.2f}x")
    print(f"operator peak RSS: {peak_mib:.0f} MiB")
    print(json.dumps({"count": args.count, "direct_s": round(direct_s, 2), "operator_s": round(operator_s, 2),
                      "ratio": round(operator_s / direct_s, 2), "peak_rss_mib": round(peak_mib)}))


if __name__ == "__main__":
    main()
