"""The chart installed on the local control plane, with the operator run as its Deployment would run it.

kwok runs pods there, so the operator's own pod cannot do anything; `ChartOperator` runs the operator
here as a subprocess, with a token of the chart's ServiceAccount and the environment and arguments of
the chart's Deployment, so that what it may do is exactly what the chart grants.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "reasonops"
TOOLS_BIN = Path(os.environ.get("REASONOPS_TOOLS", Path.home() / ".cache" / "reasonops" / "tools")) / "bin"
HELM = TOOLS_BIN / "helm"
HEALTH_LUA = CHART / "argocd" / "health.lua"


def helm(*args: str, check: bool = True, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, input=input, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, fn: Callable[[], Any], timeout: float, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except subprocess.CalledProcessError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last}\n{log()}")


class ChartOperator:
    """The operator as the chart's Deployment would run it, but here: its args, its env, its token."""

    def __init__(self, cluster, namespace: str, release: str, workdir: Path) -> None:
        self.cluster, self.namespace, self.release, self.workdir = cluster, namespace, release, workdir
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def start(self) -> None:
        deployment = json.loads(self.cluster.kubectl("get", "deployment", f"{self.release}-reasonops", "-n", self.namespace, "-o", "json").stdout)
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        token = self.cluster.kubectl("create", "token", pod["serviceAccountName"], "-n", self.namespace, "--duration=1h").stdout.strip()
        kubeconfig = self.cluster.token_kubeconfig(token, self.workdir / "operator.kubeconfig")
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        env.update({
            "REASONOPS_METRICS_PORT": str(free_port()),  # ports of this machine, not of a pod
            "REASONOPS_RESYNC_SECONDS": "5", "REASONOPS_WATCH_TIMEOUT": "30",
            "HOME": os.environ.get("HOME", "/tmp"),
        })
        args = list(container["args"])
        args[args.index("--liveness") + 1] = f"http://127.0.0.1:{free_port()}/healthz"
        log = self.workdir / f"operator-{len(self.logs)}.log"
        self.logs.append(log)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reasonops", *args, "--verbose"],
            env={**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"}, **env, "KUBECONFIG": kubeconfig},
            stdout=log.open("w"), stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self, run: int | None = None) -> str:
        """The log of one start of the operator (0, 1, ..., -1: the latest), or of all of them."""
        return self.logs[run].read_text() if run is not None else "\n".join(p.read_text() for p in self.logs)

    def denials(self, run: int) -> set[tuple[str, str]]:
        """(verb, resource) of every request RBAC refused in one run, from the API server's message."""
        return set(DENIED.findall(self.log(run)))

    def diagnose(self, namespace: str | None = None) -> str:
        """What a failed wait needs: the resources' conditions (in `namespace`, by default the
        operator's) and the operator's warnings."""
        namespace = namespace or self.namespace
        table = self.cluster.kubectl("get", "reasoningdatasets,finetunejobs,evalruns,jobs,pods,deployments", "-n",
                                     namespace, "-o", "wide", check=False).stdout
        conditions = self.cluster.kubectl(
            "get", "reasoningdatasets,finetunejobs,evalruns", "-n", namespace, "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}: {.status.conditions}{\"\\n\"}{end}", check=False).stdout
        warnings = [line for line in self.log().splitlines() if "WARNING" in line or "ERROR" in line or "Forbidden" in line]
        return f"{table}\n{conditions}\noperator warnings:\n" + "\n".join(warnings[-40:])


# The API server's wording when RBAC refuses a request (quotes may be JSON-escaped in the log).
DENIED = re.compile(r'cannot ([a-z]+) resource \\*"([a-z./]+)\\*"')


def get(cluster, kind: str, ns: str, name: str) -> dict:
    proc = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def cond(obj: dict, type_: str) -> str:
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), "")


def argocd_health(obj: dict) -> tuple[str, str]:
    """(status, message) of an object as Argo CD sees it through the chart's health script, run by the
    Lua 5.1 Argo CD embeds (gopher-lua implements 5.1)."""
    import pytest

    lua51 = pytest.importorskip("lupa.lua51", reason="lupa (pip install lupa) embeds Lua 5.1")
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = dict(lua.execute(HEALTH_LUA.read_text()))
    return result["status"], result.get("message", "")
