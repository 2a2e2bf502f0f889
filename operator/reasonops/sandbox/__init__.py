"""Execution of untrusted programs (model-written code) against test cases.

One `Sandbox.run` is one process tree, started in its own session, that never shares the workload's
credentials or environment, nor (under bubblewrap, the default) its network or files:

- **Isolation tool: bubblewrap** (`bwrap`, Debian/Ubuntu package ``bubblewrap``), the unprivileged sandbox
  that Flatpak uses. It gives each execution new user, PID, network, IPC, UTS and mount namespaces: only
  loopback networking, a root file system holding just the read-only system directories (/usr, /bin,
  /lib…) and the interpreter, the private temporary directory as /tmp and cwd, a fresh /proc and /dev,
  nothing of /var, /home, /root, /etc or the workload's volumes (so no ServiceAccount token, no hub token),
  all capabilities dropped, and every process killed when the harness ends (PID namespace). It was chosen
  over hand-written namespace code (``unshare`` plus mounts) because it is small, audited and does the
  mount set-up that is easy to get wrong. `hidden_paths` (default: the ServiceAccount and secrets
  directories) are covered with an empty tmpfs should they lie under a bound directory.
- **No isolation without an explicit opt-out.** Where bubblewrap is missing or does not work (it is run
  once to check: user namespaces may be denied, e.g. in an unprivileged container), creating a `Sandbox`
  refuses with one line naming the two ways on: install bubblewrap, or opt out with
  ``REASONOPS_SANDBOX_ISOLATION=unconfined`` (``--isolation unconfined`` on `reasonops grade` and
  `reasonops sandbox-serve`). `decide_isolation` is that decision, for every caller: curation's code
  verification, eval's code benchmarks, `reasonops grade` and the sandbox service.
- **Opt-out, ``unconfined``**: bubblewrap still where it works; otherwise the same process limits, session,
  scrubbed environment and private cwd, without namespaces: no network or file system isolation on the host.
  The sandbox pod opts out in its spec because the pod itself is the boundary there (no ServiceAccount
  token mounted, read-only root, all capabilities dropped, egress denied by the chart's NetworkPolicy,
  optionally gVisor/Kata), see `reasonops.controller.sandbox_builders`.
- In both modes, when the workload runs as root the execution runs unprivileged, so it can neither write the
  workload's files nor signal its processes: as uid/gid 65534 (nobody) under bubblewrap, whose user
  namespace gives each execution its own process count; in the fallback as a uid of its own from
  `SLOT_UIDS` (the process limit counts per uid), whose processes are all killed when it ends. A non-root
  workload without bubblewrap (the sandbox pod without user namespaces) runs executions as its own uid:
  they share the process limit, so a fork bomb can hold up concurrent executions until its wall-clock kill.

Inside, `harness.py` sets the limits (processes, open files, file size) on itself, then runs each test case
in a forked child with its own process group, address-space and CPU limits, a wall-clock limit that kills
the group, and capped stdout/stderr pipes. The host side caps what it reads from the harness and kills the
whole tree at an overall deadline. Verdicts per test case: passed, wrong_answer, runtime_error, timeout,
memory_limit, output_limit (and skipped after a failure with ``stop_on_failure``).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..api import common as reasons
from ..contract import SANDBOX_UNCONFINED, Env
from ..errors import WorkloadError

log = logging.getLogger("reasonops.sandbox")

ISOLATION_ENV = Env.SANDBOX_ISOLATION
BWRAP, UNCONFINED = "bwrap", SANDBOX_UNCONFINED  # the values of ISOLATION_ENV and `--isolation`
ISOLATIONS = (BWRAP, UNCONFINED)
PYTHON_ENV = "REASONOPS_SANDBOX_PYTHON"
DEFAULT_HIDDEN = ("/var/run/secrets", "/run/secrets")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
NOBODY = 65534
# Without user namespaces the process limit counts per uid across the node, so as root each concurrent
# execution gets a uid of its own from this range (and whatever it leaves behind is killed by uid).
SLOT_UIDS = range(200000, 200256)
_free_uids: "queue.Queue[int]" = queue.Queue()
for _uid in SLOT_UIDS:
    _free_uids.put(_uid)
HARNESS = (Path(__file__).parent / "harness.py").read_text()
VERDICTS = ("passed", "wrong_answer", "runtime_error", "timeout", "memory_limit", "output_limit", "skipped")
RESULT_CAP = 8 << 20  # bytes read back from the harness (at least twice the output limit)


@dataclass(frozen=True)
class Limits:
    """Per test case unless said otherwise."""

    timeout: float = 6.0  # wall-clock seconds (LiveCodeBench's default); CPU seconds are capped at timeout + 1
    memory_mb: int = 1024  # address space
    output_bytes: int = 1 << 20  # stdout (and stderr) kept; more is an output_limit verdict
    file_mb: int = 16  # largest file the program may write
    nproc: int = 64  # processes of the execution (fork bombs stop here)
    nofile: int = 64  # open files


@dataclass(frozen=True)
class TestCase:
    input: str
    output: str


@dataclass
class TestOutcome:
    verdict: str
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "seconds": self.seconds, "stdout": self.stdout, "stderr": self.stderr}


@dataclass
class Execution:
    """The outcome of one program against its tests; `error` is set when the harness gave no result."""

    tests: list[TestOutcome] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.tests) and all(t.verdict == "passed" for t in self.tests)

    @property
    def verdict(self) -> str:
        """The first failing verdict (or passed); "sandbox_error" when the harness gave no result."""
        if self.error is not None:
            return "sandbox_error"
        return next((t.verdict for t in self.tests if t.verdict != "passed"), "passed")

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "error": self.error, "tests": [t.to_dict() for t in self.tests]}


@dataclass(frozen=True)
class Job:
    program: str
    tests: Sequence[TestCase]
    mode: str = "stdin"  # "functional": call fn_name (a method of class Solution, or a function); "script": run the test code after it
    fn_name: str | None = None
    preamble: str = ""  # prepended to the program (LiveCodeBench's imports for functional problems)
    keep_output: bool = False  # return the whole stdout (up to Limits.output_bytes), not a snippet


class Sandbox:
    def __init__(self, limits: Limits | None = None, *, isolation: str | None = None,
                 hidden_paths: Iterable[str] = DEFAULT_HIDDEN, python: str | None = None,
                 stop_on_failure: bool = True) -> None:
        self.limits = limits or Limits()
        self.hidden_paths = tuple(hidden_paths)
        self.stop_on_failure = stop_on_failure
        self._drop = os.geteuid() == 0
        self.python = python or os.environ.get(PYTHON_ENV) or _sandbox_python(self._drop)
        wanted = isolation or os.environ.get(ISOLATION_ENV) or BWRAP
        self.bwrap = shutil.which("bwrap")  # found once, run by this path
        self.isolation = decide_isolation(wanted, _bwrap_problem(self))

    # ---------------------------------------------------------------------------------------------

    def run(self, program: str, tests: Sequence[TestCase], *, mode: str = "stdin", fn_name: str | None = None,
            preamble: str = "") -> Execution:
        return self.run_job(Job(program, tests, mode, fn_name, preamble))

    def describe(self) -> dict[str, Any]:
        """What a result records about where its programs ran."""
        limits = self.limits
        return {"isolation": self.isolation, "python": self.python, "timeoutSeconds": limits.timeout,
                "memoryMB": limits.memory_mb, "outputBytes": limits.output_bytes, "processes": limits.nproc}

    def run_many(self, jobs: Sequence[Job], workers: int | None = None, limits: Limits | None = None) -> list[Execution]:
        """Jobs run concurrently (default: one per CPU core), results in input order."""
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            return list(pool.map(lambda job: self.run_job(job, limits), jobs))

    def run_job(self, job: Job, limits: Limits | None = None) -> Execution:
        if job.mode not in ("stdin", "functional", "script"):
            raise ValueError(f"unknown test mode {job.mode!r}")
        if job.mode == "functional" and not job.fn_name:
            raise ValueError("functional tests need fn_name")
        limits = limits or self.limits
        payload = json.dumps({
            "program": job.program, "mode": job.mode, "fn_name": job.fn_name, "preamble": job.preamble,
            "tests": [{"input": t.input, "output": t.output} for t in job.tests],
            "timeout": limits.timeout, "memory_bytes": limits.memory_mb << 20, "output_bytes": limits.output_bytes,
            "file_bytes": limits.file_mb << 20, "nproc": limits.nproc, "nofile": limits.nofile,
            "stop_on_failure": self.stop_on_failure, "keep_output": job.keep_output,
        }).encode()
        deadline = len(job.tests) * (limits.timeout + 0.5) + 10.0
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="reasonops-sbx-"))
        uid = None if not self._drop else NOBODY if self.isolation == BWRAP else _free_uids.get()
        try:
            if uid is not None:
                os.chown(work, uid, uid)
            os.chmod(work, 0o700)
            cap = max(RESULT_CAP, 2 * limits.output_bytes)
            raw, error = self._execute(self._command(work), work, payload, deadline, cap, uid)
        finally:
            if uid is not None and uid != NOBODY:
                _kill_uid(uid)
                _free_uids.put(uid)
            shutil.rmtree(work, ignore_errors=True)
        seconds = round(time.monotonic() - started, 4)
        if error is None:
            try:
                tests = [TestOutcome(t["verdict"], t.get("seconds", 0.0), t.get("stdout", ""), t.get("stderr", ""))
                         for t in json.loads(raw)["tests"]]
                if len(tests) == len(job.tests) and all(t.verdict in VERDICTS for t in tests):
                    return Execution(tests, None, seconds)
                error = "harness returned a malformed result"
            except (ValueError, KeyError, TypeError):
                error = "harness returned no result (killed by the program?)"
        return Execution([TestOutcome("runtime_error") for _ in job.tests], error, seconds)

    # ---------------------------------------------------------------------------------------------

    def _command(self, work: Path) -> list[str]:
        interpreter = [self.python, "-I", "-S", "-c", HARNESS]
        if self.isolation == UNCONFINED:
            return interpreter
        return [*bwrap_args(str(self.bwrap), work, self.python, self.hidden_paths), *interpreter]

    def _execute(self, command: list[str], work: Path, payload: bytes, deadline: float, cap: int,
                 uid: int | None) -> tuple[bytes, str | None]:
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp" if self.isolation == BWRAP else str(work), "LANG": "C.UTF-8"}
        ids: dict[str, Any] = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
        try:
            proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work, env=env,
                start_new_session=True, close_fds=True, **ids,
            )
        except OSError as exc:
            return b"", f"cannot start the sandbox: {exc}"
        writer = threading.Thread(target=_feed, args=(proc, payload), daemon=True)
        writer.start()
        out, err, why = _read_capped(proc, time.monotonic() + deadline, cap)
        _kill_group(proc)
        proc.wait()
        writer.join(timeout=1)
        if why:
            return b"", why
        if proc.returncode != 0 and not out:
            return b"", f"sandbox exited with {proc.returncode}: {err.decode('utf-8', 'replace').strip()[-300:]}"
        return out, None


def bwrap_args(bwrap: str, work: Path, python: str, hidden: Sequence[str]) -> list[str]:
    """bubblewrap's command line: new namespaces, read-only system directories, `work` as /tmp and cwd."""
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    bound: list[str] = []
    for directory in SYSTEM_DIRS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            args += ["--ro-bind", directory, directory]
            bound.append(directory)
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    if not any(prefix == d or prefix.startswith(d + "/") for d in bound):
        args += ["--ro-bind", prefix, prefix]
        bound.append(prefix)
    args += ["--proc", "/proc", "--dev", "/dev", "--bind", str(work), "/tmp", "--chdir", "/tmp"]
    for path in hidden:
        real = os.path.realpath(path)
        if any(real.startswith(d + "/") for d in bound) and os.path.isdir(real):
            args += ["--tmpfs", real]
    return args


def _feed(proc: subprocess.Popen, payload: bytes) -> None:
    try:
        assert proc.stdin is not None
        proc.stdin.write(payload)
        proc.stdin.close()
    except OSError:  # the harness died before reading its job
        pass


def _read_capped(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
    """stdout and stderr of `proc` until both close, at most `cap` bytes each, until `deadline`."""
    assert proc.stdout is not None and proc.stderr is not None
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    with selectors.DefaultSelector() as selector:
        for stream in buffers:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), "sandbox overall deadline exceeded"
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = buffers[key.fileobj]  # type: ignore[index]
                buffer += chunk
                if len(buffer) > cap:
                    return b"", b"", "sandbox result over its size limit"
    return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_uid(uid: int) -> None:
    """Kill every process of `uid` (escapees of the session of a fallback execution): kill -1 as that uid."""
    try:
        subprocess.run(["/bin/sh", "-c", "kill -9 -1 2>/dev/null"], user=uid, group=uid, extra_groups=[],
                       env={"PATH": "/usr/bin:/bin"}, cwd="/", timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        pass


def _world_executable(path: str) -> bool:
    """Whether uid 65534 can execute `path` (every parent directory searchable by others)."""
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & 0o001:
            return False
        return all(p.stat().st_mode & 0o001 for p in real.parents)
    except OSError:
        return False


def _sandbox_python(dropping: bool) -> str:
    """The interpreter of the programs: this one, unless the unprivileged user cannot run it."""
    candidates = [sys.executable, "/usr/local/bin/python3", "/usr/bin/python3"]
    for candidate in candidates:
        if os.path.exists(candidate) and (not dropping or _world_executable(candidate)):
            return os.path.realpath(candidate)
    raise RuntimeError("no Python interpreter the sandbox user can execute; set " + PYTHON_ENV)


def decide_isolation(wanted: str, bwrap_problem: str | None) -> str:
    """How programs run: "bwrap" where bubblewrap works, "unconfined" only when opted out; else refuse.

    `bwrap_problem` is why bubblewrap cannot isolate here (None: it works).
    """
    if wanted not in ISOLATIONS:
        raise WorkloadError(reasons.REASON_INVALID_ARGUMENT,
                            f"sandbox isolation must be {' or '.join(ISOLATIONS)}, not {wanted!r} (${ISOLATION_ENV}, --isolation)")
    if bwrap_problem is None:
        return BWRAP
    if wanted == UNCONFINED:
        log.warning("%s; %s=%s: model-written code runs with process limits only (no network or file system "
                    "isolation)", bwrap_problem, ISOLATION_ENV, UNCONFINED)
        return UNCONFINED
    raise WorkloadError(reasons.REASON_SANDBOX_UNAVAILABLE, (
        f"refusing to run model-written code without isolation: {bwrap_problem}; install bubblewrap "
        f"(apt-get install bubblewrap, with unprivileged user namespaces allowed), or opt out explicitly with "
        f"{ISOLATION_ENV}={UNCONFINED} (--isolation {UNCONFINED}) to run it with process limits only"))


_probed: dict[tuple[str | None, str, bool], str | None] = {}
_probe_lock = threading.Lock()


def _bwrap_problem(sandbox: Sandbox) -> str | None:
    """Why bubblewrap cannot isolate this sandbox's programs (None: a trial run worked); probed once per setup."""
    key = (sandbox.bwrap, sandbox.python, sandbox._drop)
    with _probe_lock:
        if key not in _probed:
            _probed[key] = _probe_bwrap(sandbox) if key[0] else "bubblewrap (bwrap) is not installed"
    return _probed[key]


def _probe_bwrap(sandbox: Sandbox) -> str | None:
    work = Path(tempfile.mkdtemp(prefix="reasonops-sbx-probe-"))
    try:
        if sandbox._drop:
            os.chown(work, NOBODY, NOBODY)
        ids: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if sandbox._drop else {}
        result = subprocess.run([*bwrap_args(str(sandbox.bwrap), work, sandbox.python, ()), sandbox.python, "-I", "-S", "-c", "pass"],
                                capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"}, cwd=work, **ids)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap does not work here ({exc})"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if result.returncode == 0:
        return None
    said = result.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"bubblewrap does not work here ({said[-1] if said else f'exit {result.returncode}'}; are user namespaces allowed?)"
