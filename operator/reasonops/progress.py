"""Progress and results of a workload: to the log always, and to the resource's status in a cluster.

A workload pod knows which resource it works for from its environment (the operator sets
REASONOPS_KIND, REASONOPS_NAME, REASONOPS_NAMESPACE and REASONOPS_REVISION). There it patches
`status.progress` of that resource (throttled to one update per `min_interval` seconds) and, at the end,
writes its result both to `status.progress.result` and to the container's termination message, from
which the operator reads it. On a laptop the same calls only log.

    reporter = Reporter.from_env()
    reporter.update(stage="dedupe", message="kept 9,012 of 10,000")
    reporter.update(step=10, totalSteps=100, loss="1.234")
    reporter.finish({"samples": 800})
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import threading
import time
from typing import Any, Callable, Optional

from .api.v1alpha1 import KINDS
from .contract import TERMINATION_LOG, Env, encode_result

log = logging.getLogger("reasonops.progress")

MAX_MESSAGE = 1024


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class _StatusClient:
    """Merge-patches the resource's status; says so with an Event on the resource when that fails."""

    def __init__(self, kind: str, name: str, namespace: str) -> None:
        from .kube import Kube  # imported lazily: workloads on a laptop never need the client

        self.kind, self.name, self.namespace = kind, name, namespace
        self.client = Kube(os.environ.get(Env.STATUS_KUBECONFIG), pool_size=2)
        self.failures = 0

    def __call__(self, status: dict) -> None:
        try:
            self.client.patch_status(self.kind, self.namespace, self.name, status)
        except Exception as exc:
            self.failures += 1
            if self.failures in (1, 10, 100):  # visible without flooding: the first, then rarely
                reason = getattr(exc, "reason", None) or type(exc).__name__
                message = f"a workload pod could not update status ({self.failures} failures): {getattr(exc, 'status', '')} {reason}"
                try:
                    self.client.post_event(self.kind, self.namespace, self.name, "StatusUpdateFailed", message.strip())
                except Exception as event_exc:
                    log.warning("could not post an event either: %s", event_exc)
            raise


def _default_patcher(kind: str, name: str, namespace: str) -> Optional[Callable[[dict], None]]:
    """A function that merge-patches the resource's status, or None outside a cluster."""
    if not os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token") and not os.environ.get(Env.STATUS_KUBECONFIG):
        return None
    return _StatusClient(kind, name, namespace)


class Reporter:
    """Reports progress of one workload run (thread-safe, throttled, never raises)."""

    def __init__(
        self,
        kind: str | None = None,
        name: str | None = None,
        namespace: str | None = None,
        revision: str | None = None,
        min_interval: float = 10.0,
        patcher: Optional[Callable[[dict], None]] = None,
        termination_log: str = TERMINATION_LOG,
    ) -> None:
        self.kind, self.name, self.namespace, self.revision = kind, name, namespace, revision
        self.min_interval = min_interval
        self.termination_log = termination_log
        self._patcher = patcher
        self._state: dict[str, Any] = {}
        self._last_sent = 0.0
        self._pending = False
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, **kwargs: Any) -> "Reporter":
        kind, name, ns = (os.environ.get(k) for k in (Env.KIND, Env.NAME, Env.NAMESPACE))
        patcher = None
        if kind in KINDS and name and ns:
            try:
                patcher = _default_patcher(kind, name, ns)
            except Exception as exc:  # no client, no credentials: progress stays in the log
                log.warning("progress will not reach the resource status: %s", exc)
        return cls(kind, name, ns, os.environ.get(Env.REVISION), patcher=patcher, **kwargs)

    def update(self, *, force: bool = False, **fields: Any) -> None:
        """Record progress fields (stage, message, step, loss, ...); send them when the throttle allows."""
        if "message" in fields and fields["message"] is not None:
            fields["message"] = str(fields["message"])[:MAX_MESSAGE]
            log.info("%s%s", f"[{fields.get('stage') or self._state.get('stage') or '-'}] ", fields["message"])
        with self._lock:
            self._state.update({k: v for k, v in fields.items() if v is not None})
            self._pending = True
            due = force or time.monotonic() - self._last_sent >= self.min_interval
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            body = dict(self._state)
            self._pending = False
            self._last_sent = time.monotonic()
        self._send({"progress": self._progress(body)})

    def finish(self, result: dict[str, Any], message: str | None = None, publish: bool = True) -> None:
        """The final result: the termination message (read by the operator; valid JSON within 4 KiB, shrunk
        by dropping optional fields) and, when `publish`, status (in full)."""
        compact = encode_result(result)
        if '"truncated":true' in compact:
            log.warning("result shortened for the termination message (%d bytes in full)", len(json.dumps(result, default=str)))
        try:
            if os.path.isdir(os.path.dirname(self.termination_log)) and (
                os.path.exists(self.termination_log) or self.termination_log != TERMINATION_LOG
            ):
                with open(self.termination_log, "w", encoding="utf-8") as fh:
                    fh.write(compact)
        except OSError as exc:
            log.debug("no termination message written: %s", exc)
        if not publish:
            return
        with self._lock:
            if message:
                self._state["message"] = message[:MAX_MESSAGE]
            body = dict(self._state)
            self._pending = False
        progress = self._progress(body)
        progress["result"] = result
        self._send({"progress": progress})

    def _progress(self, body: dict[str, Any]) -> dict[str, Any]:
        out = {k: (v if isinstance(v, (int, str, bool, dict, list)) or v is None else str(v)) for k, v in body.items()}
        if self.revision:
            out["revision"] = self.revision
        out["updateTime"] = now_iso()
        return out

    def _send(self, status: dict[str, Any]) -> None:
        if self._patcher is None:
            return
        try:
            self._patcher(status)
        except Exception as exc:  # progress is best effort: never fail the workload because of it
            log.warning("could not update status of %s/%s: %s", self.namespace, self.name, exc)
