"""The sandbox as an HTTP execution service (`reasonops sandbox-serve`), and its client.

In a cluster the workload pod never runs model-written code itself: the operator starts a sandbox
Deployment and Service for the resource (`controller/sandbox_builders.py`: no ServiceAccount token, read-only
root, no capabilities, ingress only from that resource's workload pods, no egress), and the workload finds
it in ``$REASONOPS_SANDBOX_URL``. Without that variable (`reasonops run`, tests) programs run in a local
`Sandbox`.

    POST /v1/run  {"jobs": [{program, tests: [[input, output], ...], mode, fn_name, preamble, keep_output}],
                   "limits": {timeout, memory_mb, output_bytes, file_mb, nproc, nofile}}
              ->  {"executions": [{"tests": [{verdict, seconds, stdout, stderr}], "error", "seconds"}]}
    GET  /healthz
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from ..api import common as reasons
from ..errors import WorkloadError
from ..contract import Env
from . import Execution, Job, Limits, Sandbox, TestCase, TestOutcome

log = logging.getLogger("reasonops.sandbox")

SANDBOX_URL_ENV = Env.SANDBOX_URL  # set by the operator (contract.Env)
BATCH = 32  # jobs per request
MAX_REQUEST = 2 << 30


def job_to_wire(job: Job) -> dict[str, Any]:
    return {"program": job.program, "tests": [[t.input, t.output] for t in job.tests], "mode": job.mode,
            "fn_name": job.fn_name, "preamble": job.preamble, "keep_output": job.keep_output}


def job_from_wire(data: dict[str, Any]) -> Job:
    return Job(str(data["program"]), tuple(TestCase(str(i), str(o)) for i, o in data["tests"]), str(data.get("mode", "stdin")),
               data.get("fn_name"), str(data.get("preamble") or ""), bool(data.get("keep_output")))


def execution_to_wire(execution: Execution) -> dict[str, Any]:
    return {"tests": [dataclasses.asdict(t) for t in execution.tests], "error": execution.error, "seconds": execution.seconds}


def execution_from_wire(data: dict[str, Any]) -> Execution:
    return Execution([TestOutcome(**t) for t in data["tests"]], data.get("error"), float(data.get("seconds", 0.0)))


# ------------------------------------------------------------------------------------------------
# Server
# ------------------------------------------------------------------------------------------------


def make_app(sandbox: Sandbox, workers: int):
    from aiohttp import web

    pool = ThreadPoolExecutor(max_workers=workers)

    async def run(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            jobs = [job_from_wire(j) for j in body["jobs"]]
            limits = Limits(**body["limits"]) if body.get("limits") else None
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        loop = asyncio.get_running_loop()
        try:
            futures = [loop.run_in_executor(pool, sandbox.run_job, job, limits) for job in jobs]
            executions = await asyncio.gather(*futures)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"executions": [execution_to_wire(e) for e in executions]})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"isolation": sandbox.isolation})

    app = web.Application(client_max_size=MAX_REQUEST)
    app.router.add_post("/v1/run", run)
    app.router.add_get("/healthz", healthz)
    return app


def serve(host: str, port: int, workers: int, isolation: str | None = None) -> None:
    """`reasonops sandbox-serve`: run the service until stopped."""
    from aiohttp import web

    sandbox = Sandbox(isolation=isolation)
    log.info("sandbox service on %s:%d, isolation %s, %d workers", host, port, sandbox.isolation, workers)
    web.run_app(make_app(sandbox, workers), host=host, port=port, print=None)


# ------------------------------------------------------------------------------------------------
# Client
# ------------------------------------------------------------------------------------------------


class RemoteSandbox:
    """`Sandbox.run_many` over HTTP; an unreachable service is the run's error, not the programs' failure."""

    isolation = "remote"

    def __init__(self, url: str, limits: Limits | None = None, timeout: float = 3600.0) -> None:
        self.url = url.rstrip("/")
        self.limits = limits or Limits()
        self.timeout = timeout

    def describe(self) -> dict[str, Any]:
        limits = self.limits
        return {"isolation": "remote", "url": self.url, "timeoutSeconds": limits.timeout, "memoryMB": limits.memory_mb,
                "outputBytes": limits.output_bytes, "processes": limits.nproc}

    def run_many(self, jobs: Sequence[Job], workers: int | None = None, limits: Limits | None = None) -> list[Execution]:
        batches = [list(jobs[i:i + BATCH]) for i in range(0, len(jobs), BATCH)]
        with ThreadPoolExecutor(max_workers=workers or 8) as pool:
            results = list(pool.map(lambda b: self._post(b, limits or self.limits), batches))
        return [e for batch in results for e in batch]

    def _post(self, jobs: list[Job], limits: Limits) -> list[Execution]:
        body = json.dumps({"jobs": [job_to_wire(j) for j in jobs], "limits": dataclasses.asdict(limits)}).encode()
        request = urllib.request.Request(f"{self.url}/v1/run", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise WorkloadError(reasons.REASON_SANDBOX_UNAVAILABLE, f"sandbox service {self.url}: {exc}") from exc
        return [execution_from_wire(e) for e in data["executions"]]


def sandbox_for(limits: Limits) -> Sandbox | RemoteSandbox:
    """The remote sandbox named by $REASONOPS_SANDBOX_URL, else a local one."""
    url = os.environ.get(SANDBOX_URL_ENV)
    return RemoteSandbox(url, limits) if url else Sandbox(limits)
