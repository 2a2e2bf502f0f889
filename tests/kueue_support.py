"""Kueue's controller manager, for real, against the local control plane of ``hack/cluster.sh``.

``hack/build-tools.sh`` builds the manager (``sigs.k8s.io/kueue/cmd/kueue``) from the Go module proxy; this
module runs it as a process beside the control plane:

- Kueue's CRDs come from the module it was built from (``config/components/crd/bases`` in the Go module
  cache), with the conversion webhook that its kustomization adds to the CRDs served at two versions;
- its admission webhooks are the module's own ``config/components/webhook/manifests.yaml``, each
  ``clientConfig.service`` replaced by ``url: https://127.0.0.1:<port><path>`` and a ``caBundle`` of a CA
  made here (Kueue's internal certificate management is off; the serving certificate is ours);
- its configuration enables the integrations the operator's children use: ``batch/job`` (every
  workload Job), ``pod`` and ``deployment`` (an EvalRun's server and sandbox).

The manager runs in user and mount namespaces of its own (``unshare``): with its certificate management
off it reads a metrics certificate from the fixed path /etc/kueue/metrics/certs, which it finds there
through a read-only overlay of /etc (the machine's /etc is not touched).

``Kueue(cluster, directory).start()`` returns once the manager is ready (its webhook server serving) and
the webhook configurations are in place; ``stop()`` removes the webhook configurations first (they fail closed, so a stopped manager must not
leave them behind: the cluster is shared with the other test modules) and then ends the process.
The CRDs stay, like the operator's own.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from chart_support import TOOLS_BIN, free_port

ROOT = Path(__file__).resolve().parents[1]
KUEUE = TOOLS_BIN / "kueue"
NAMESPACE = "kueue-system"
# The frameworks the operator's children take part through (Kueue's names).
FRAMEWORKS = ["batch/job", "pod", "deployment"]
# Webhooks of the frameworks above and of Kueue's own kinds; the others' rules would match nothing here.
WEBHOOK_KINDS = {"job", "pod", "deployment", "workload", "clusterqueue", "cohort", "resourceflavor"}
# The CRDs that Kueue's kustomization gives a conversion webhook (served at v1beta1 and v1beta2).
CONVERTED = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")
WEBHOOK_CONFIGURATIONS = ("reasonops-test-kueue-mutating", "reasonops-test-kueue-validating")


def kueue_version() -> str:
    """The version hack/build-tools.sh builds: $KUEUE_VERSION, else the script's default."""
    if os.environ.get("KUEUE_VERSION"):
        return os.environ["KUEUE_VERSION"]
    script = (ROOT / "hack" / "build-tools.sh").read_text()
    found = re.search(r"^KUEUE_VERSION=\$\{KUEUE_VERSION:-(v[0-9.]+)\}", script, re.MULTILINE)
    assert found, "hack/build-tools.sh sets no KUEUE_VERSION"
    return found.group(1)


def module_dir() -> Path:
    cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    return Path(cache) / f"sigs.k8s.io/kueue@{kueue_version()}"


def make_certificates(directory: Path) -> bytes:
    """A CA and, signed by it, a serving certificate for 127.0.0.1 (tls.crt, tls.key); returns the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "openssl.cnf"
    config.write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
        "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
        "subjectKeyIdentifier = hash\n"
        "[server]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
        "subjectAltName = IP:127.0.0.1,DNS:localhost\n"
    )

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, capture_output=True, check=True)

    openssl("req", "-config", "openssl.cnf", "-nodes", "-newkey", "rsa:2048", "-x509", "-days", "30",
            "-extensions", "ca", "-subj", "/CN=reasonops-test-kueue-ca", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-config", "openssl.cnf", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", "/CN=127.0.0.1",
            "-keyout", "tls.key", "-out", "tls.csr")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "30",
            "-extfile", "openssl.cnf", "-extensions", "server", "-out", "tls.crt")
    return (directory / "ca.crt").read_bytes()


def client_config(path: str, port: int, ca: bytes) -> dict[str, Any]:
    return {"url": f"https://127.0.0.1:{port}{path}", "caBundle": base64.b64encode(ca).decode()}


def webhook_configurations(manifests: str, port: int, ca: bytes) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, pointed at the manager on this machine, for the kinds used here."""
    configurations = []
    for document, name in zip(yaml.safe_load_all(manifests), WEBHOOK_CONFIGURATIONS):
        hooks = []
        for hook in document["webhooks"]:
            # Names are m<kind>.kb.io / v<kind>.kb.io.
            if hook["name"].split(".")[0][1:] not in WEBHOOK_KINDS:
                continue
            hook = copy.deepcopy(hook)
            hook["clientConfig"] = client_config(hook["clientConfig"]["service"]["path"], port, ca)
            if hook["name"][1:].startswith(("pod.", "deployment.")):  # as Kueue's kustomization patches them
                hook["namespaceSelector"] = {"matchExpressions": [
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]}]}
            hooks.append(hook)
        configurations.append({**document, "metadata": {"name": name}, "webhooks": hooks})
    return configurations


def manager_configuration(webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": FRAMEWORKS},
    }


class Kueue:
    """Kueue's manager as a process, with its CRDs and webhooks on the cluster."""

    def __init__(self, cluster: Any, directory: Path) -> None:
        self.cluster, self.directory, self.proc, self.log_file = cluster, directory, None, None
        self.webhook_port, self.health_port = free_port(), free_port()

    @property
    def log_path(self) -> Path:
        return self.directory / "kueue.log"

    def log(self) -> str:
        return self.log_path.read_text()[-6000:] if self.log_path.exists() else ""

    def start(self, timeout: float = 90) -> None:
        module = module_dir()
        certs = self.directory / "certs"
        ca = make_certificates(certs)
        self.install_crds(module, ca)
        self.cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        config = self.directory / "config.yaml"
        config.write_text(yaml.safe_dump(manager_configuration(self.webhook_port, self.health_port, certs)))
        # The metrics certificate's fixed path (read even with metrics off): ours, through the overlay.
        etc = self.directory / "etc"
        (etc / "kueue/metrics").mkdir(parents=True, exist_ok=True)
        (etc / "kueue/metrics/certs").symlink_to(certs, target_is_directory=True)
        self.log_file = open(self.log_path, "w")
        manager = [str(KUEUE), f"--config={config}", f"--kubeconfig={self.cluster.kubeconfig}",
                   # The visibility API server (an aggregated API on a fixed port) is not needed here.
                   "--feature-gates=VisibilityOnDemand=false", "--zap-log-level=3"]
        # The parent-death signal ends the manager with the test session, even one that was killed.
        self.proc = subprocess.Popen(
            ["setpriv", "--pdeathsig", "TERM", "unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
             'mount -t overlay overlay -o "lowerdir=$0:/etc" /etc && exec "$@"', str(etc), *manager],
            stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_ready(timeout)
        manifests = (module / "config/components/webhook/manifests.yaml").read_text()
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                             input=json.dumps({"apiVersion": "v1", "kind": "List",
                                               "items": webhook_configurations(manifests, self.webhook_port, ca)}))

    def install_crds(self, module: Path, ca: bytes) -> None:
        """The module's CRDs as they are, then the conversion webhook of those served at two versions."""
        bases = module / "config/components/crd/bases"
        self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(bases), timeout=180)
        conversion = {"spec": {"conversion": {"strategy": "Webhook", "webhook": {
            "clientConfig": client_config("/convert", self.webhook_port, ca), "conversionReviewVersions": ["v1"]}}}}
        for plural in CONVERTED:
            self.cluster.kubectl("patch", "crd", f"{plural}.kueue.x-k8s.io", "--type=merge", "-p", json.dumps(conversion))
        self.cluster.wait_established(*(f"{path.stem.split('_', 1)[1]}.kueue.x-k8s.io" for path in sorted(bases.glob("*.yaml"))))

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"Kueue's manager exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"Kueue's manager not ready within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        for kind, name in zip(("mutatingwebhookconfiguration", "validatingwebhookconfiguration"), WEBHOOK_CONFIGURATIONS):
            self.cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.log_file:
            self.log_file.close()
