"""Shared pytest fixtures.

Cluster tests run against the throwaway control plane of ``hack/cluster.sh`` (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok with simulated GPU nodes). Mark them
``@pytest.mark.cluster`` (``-m "not cluster"`` deselects them) and take one of:

``cluster`` (session)
    Started on first use with ``hack/cluster.sh up`` (the first run on a machine builds the tools,
    which takes long) and stopped with ``hack/cluster.sh down`` when the session ends. To reuse a
    cluster you started yourself, set ``KUBECONFIG_REASONOPS=<its kubeconfig>``; it is left running.
    Attributes: ``.kubeconfig`` (path, admin in group system:masters), ``.kubectl(*args, check=True,
    input=None)`` -> ``subprocess.CompletedProcess`` (text, captured), ``.env`` (``os.environ``
    with ``KUBECONFIG`` set, for subprocesses and kopf), ``.token_kubeconfig(token, path)`` (a
    kubeconfig that authenticates with a bearer token only, e.g. a ServiceAccount's, to test RBAC).

``namespace`` (function)
    A fresh namespace ``rt-<random>``; deleted afterwards without waiting.

``real_cluster`` (session, tests marked ``@pytest.mark.realnode``)
    Its own cluster with a real node (``hack/cluster.sh up --real-node``: kubelet, containerd, CNI
    bridge, CoreDNS, kube-proxy) beside the kwok nodes, and the CPU images of ``hack/images.sh``
    loaded into the node. Needs root; if the node cannot start, the test fails with the reason (it is
    never skipped). A :class:`RealCluster`: a ``Cluster`` plus ``.images`` (name → image reference,
    e.g. ``images["workload-cpu"]``), ``.dir`` (the cluster directory), and ``.placement`` (the
    nodeSelector and tolerations that put a pod on the real node, in ``spec.resources`` form).

Runs started by ``hack/test.sh`` (``REASONOPS_PHASES`` set) end with its phase table: the set-up steps and
each test module's wall time (tests/ci_phases.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci_phases import PhaseRecorder

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "hack" / "cluster.sh"
TOOLS_BIN = Path(os.environ.get("REASONOPS_TOOLS", Path.home() / ".cache" / "reasonops" / "tools")) / "bin"
KUBECTL = TOOLS_BIN / "kubectl"


def pytest_configure(config: pytest.Config) -> None:
    # hack/test.sh's phase table (tests/ci_phases.py): only in runs that it starts, kept by the process that reports
    # (under pytest-xdist the controller, not its workers).
    if os.environ.get("REASONOPS_PHASES") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(PhaseRecorder(Path(os.environ["REASONOPS_PHASES"])), "reasonops-phases")


# The modules that take longest, longest first (their wall times in the phase table of docs/benchmarks.md, CI
# section). hack/test.sh runs the suite on two pytest-xdist workers, a whole module at a time, in collection order
# (--dist loadfile --no-loadscope-reorder): with these first, one worker waits on the real node's pods while the
# other runs the rest, and the short modules fill in at the end (longest processing time first).
LONGEST_FIRST = (
    "test_realnode.py", "test_operator_e2e.py", "test_train_run.py", "test_demo.py", "test_run_checkpoints.py",
    "test_chart.py", "test_validation_e2e.py", "test_kueue.py", "test_operator_checkpoints.py", "test_curate_shards.py",
    "test_limits.py", "test_evaluate.py", "test_report_browser.py", "test_report.py", "test_llm.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; unlike its base class, the message includes kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.output}"


@dataclass(frozen=True)
class Cluster:
    kubeconfig: str

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                kubeconfig: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(KUBECTL), "--kubeconfig", kubeconfig or self.kubeconfig, *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def wait_established(self, *crds: str, timeout: float = 60) -> None:
        """Wait until CRDs serve. (`kubectl wait` exits with an accessor error while a just-created CRD has no
        status conditions yet, so it is retried until it can wait.)"""
        import time

        deadline = time.monotonic() + timeout
        for crd in crds:
            while True:
                proc = self.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s", check=False)
                if proc.returncode == 0:
                    break
                if time.monotonic() > deadline or "accessor error" not in proc.stderr:
                    raise KubectlError(proc.returncode, ["kubectl", "wait", crd], proc.stdout, proc.stderr)
                time.sleep(0.5)

    def token_kubeconfig(self, token: str, path: str | os.PathLike) -> str:
        """Writes a kubeconfig for this cluster whose only credential is `token`; returns its path.

        (Passing ``--token`` with the admin kubeconfig is not enough: its client certificate is
        still sent, and the apiserver authenticates the certificate first.)"""
        view = json.loads(self.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": view["clusters"],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "token", "context": {"cluster": view["clusters"][0]["name"], "user": "token"}}],
            "current-context": "token",
        }
        Path(path).write_text(json.dumps(config))  # JSON is valid kubeconfig YAML
        return str(path)


def _cluster_sh(command: str, cluster_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REASONOPS_CLUSTER_DIR": str(cluster_dir)}
    return subprocess.run([str(CLUSTER_SH), command, *args], env=env, capture_output=True, text=True)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    existing = os.environ.get("KUBECONFIG_REASONOPS")
    if existing:
        yield Cluster(kubeconfig=existing)
        return
    # A path that does not exist yet; hack/cluster.sh creates (and `down` removes) it.
    cluster_dir = tmp_path_factory.getbasetemp() / "cluster"
    proc = _cluster_sh("up", cluster_dir)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines or not lines[-1].startswith("KUBECONFIG="):
        _cluster_sh("down", cluster_dir)
        pytest.fail(f"hack/cluster.sh up failed (exit {proc.returncode}):\n{proc.stderr}\n{proc.stdout}",
                    pytrace=False)
    try:
        yield Cluster(kubeconfig=lines[-1].split("=", 1)[1])
    finally:
        down = _cluster_sh("down", cluster_dir)
        if down.returncode != 0:
            print(f"hack/cluster.sh down failed:\n{down.stderr}")


@pytest.fixture
def namespace(cluster: Cluster):
    name = f"rt-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


REAL_NODE_LABEL = "reasonops.io/real-node"


@dataclass(frozen=True)
class RealCluster(Cluster):
    dir: Path = Path()
    images: dict[str, str] | None = None

    # The real node is tainted so that only pods meant for it land there, and kwok's nodes carry
    # no such label, so these pods never land on a simulated node.
    placement = {
        "nodeSelector": [{"key": REAL_NODE_LABEL, "value": "true"}],
        "tolerations": [{"key": REAL_NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
    }


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster_dir = Path(os.environ.get("REASONOPS_REAL_CLUSTER_DIR") or tmp_path_factory.getbasetemp() / "real-cluster")
    proc = _cluster_sh("up", cluster_dir, "--real-node")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines or not lines[-1].startswith("KUBECONFIG="):
        _cluster_sh("down", cluster_dir)
        pytest.fail(f"the real node did not start (hack/cluster.sh up --real-node, exit {proc.returncode}):\n"
                    f"{proc.stderr[-6000:]}\n{proc.stdout[-2000:]}", pytrace=False)
    images = dict(line.split("=", 1) for line in (cluster_dir / "images").read_text().split())
    try:
        yield RealCluster(kubeconfig=lines[-1].split("=", 1)[1], dir=cluster_dir, images=images)
    finally:
        if not os.environ.get("REASONOPS_KEEP_REAL_CLUSTER"):
            down = _cluster_sh("down", cluster_dir)
            if down.returncode != 0:
                print(f"hack/cluster.sh down failed:\n{down.stderr}")
