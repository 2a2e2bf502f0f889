"""Hostile model-written programs in LiveCodeBench's layout, graded as a user grades them: `reasonops grade` as a
shell runs it, and the Python API that eval and curation call. Under bubblewrap they leave no trace on the
host; on a machine without it the run refuses before running anything, unless opted out
(REASONOPS_SANDBOX_ISOLATION=unconfined), and then runs with process limits only.

`python tests/test_hostile_programs.py` prints the results table of docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox_support import BWRAP_MODES, PATH_WITHOUT_BWRAP, without_bwrap  # noqa: E402

from reasonops.sandbox import SLOT_UIDS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET_ENV = "REASONOPS_HOSTILE_SECRET"
BOUND_SECONDS = 150  # twelve programs, two at a time, at most 6 s per test case each, on a loaded machine
# the programs' uids as root: bubblewrap's nobody, the fallback's slots (a concurrent run of the sandbox on the
# same machine, e.g. another pytest, shows up here too)
SANDBOX_UIDS = {True: {65534}, False: set(SLOT_UIDS)}

# name -> program; {port}, {outside}, {host_tmp}, {token} and {me} (a host process) are filled in per run.
PROGRAMS = {
    "loopback": "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'loopback')\nprint('reached 127.0.0.1')\n",
    "egress": "import socket\ns = socket.create_connection(('1.1.1.1', 53), timeout=2)\nprint('reached 1.1.1.1')\n",
    "write-outside": ("for path in ({outside!r}, {host_tmp!r}):\n    try:\n        open(path, 'w').write('pwned')\n"
                      "        print('wrote', path)\n    except OSError as exc:\n        print('refused', path, exc)\n"),
    "token": ("for path in ('/var/run/secrets/kubernetes.io/serviceaccount/token', {token!r}):\n    try:\n"
              "        print(open(path).read())\n    except OSError as exc:\n        print('refused', path, exc)\n"),
    "environment": ("import os\nseen = repr(dict(os.environ))\nfor pid in (os.getppid(), 1, {me}):\n    try:\n"
                    "        seen += open(f'/proc/{{pid}}/environ').read()\n    except OSError:\n        pass\nprint(seen)\n"),
    "fork-bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "memory-bomb": "xs = []\nwhile True:\n    xs.append(bytearray(1 << 26))\n",
    "kill-parent": ("import os, signal\nfor kill in (lambda: os.kill({me}, signal.SIGKILL), lambda: os.kill(os.getppid(), signal.SIGKILL),\n"
                    "             lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)):\n    try:\n        kill()\n"
                    "    except OSError as exc:\n        print('refused', exc)\n"),
    "stdout-flood": "import sys\nblock = 'x' * (1 << 20)\nwhile True:\n    sys.stdout.write(block)\n",
    "deep-recursion": "import sys\nsys.setrecursionlimit(10 ** 9)\ndef down(n):\n    return down(n + 1)\ndown(0)\n",
    "segfault": "import ctypes\nctypes.string_at(0)\n",
    "correct": "print('ok')\n",  # grading goes on after the hostile ones
}


@dataclass
class Host:
    """What the programs could reach on the host: a listener on 127.0.0.1, files, a token, a secret variable."""

    root: Path
    secret: str = field(default_factory=lambda: f"s3cret-{uuid.uuid4().hex}")
    received: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.outside = self.root / "outside.txt"
        self.host_tmp = Path(f"/tmp/reasonops-hostile-{uuid.uuid4().hex}")
        self.token = self.root / "serviceaccount" / "token"
        self.token.parent.mkdir(parents=True)
        self.token.write_text(f"token-{self.secret}")
        self.token.chmod(0o644)
        # a process of the host's, holding the secret in its environment, that the programs try to kill and read
        self.bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                                          env={**os.environ, SECRET_ENV: self.secret})
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(64) or b"(connected)")
                except OSError:
                    self.received.append(b"(connected)")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()
        self.bystander.kill()
        self.bystander.wait()
        for path in (self.outside, self.host_tmp):
            path.unlink(missing_ok=True)

    def program(self, name: str) -> str:
        return PROGRAMS[name].format(port=self.port, outside=str(self.outside), host_tmp=str(self.host_tmp),
                                     token=str(self.token), me=self.bystander.pid)

    def write_benchmark(self) -> tuple[Path, Path]:
        """A LiveCodeBench-layout benchmark (one stdin test per problem, printing "ok") and the responses."""
        case = json.dumps([{"input": "", "output": "ok\n", "testtype": "stdin"}])
        rows = [{"question_id": name, "question_content": f"Print ok ({name}).", "contest_date": "2024-09-01T00:00:00",
                 "starter_code": "", "public_test_cases": case, "private_test_cases": case, "metadata": "{}"} for name in PROGRAMS]
        benchmark = self.root / "livecodebench.jsonl"
        benchmark.write_text("".join(json.dumps(row) + "\n" for row in rows))
        responses = self.root / "responses.jsonl"
        responses.write_text("".join(json.dumps({"id": name, "response": f"```python\n{self.program(name)}```"}) + "\n"
                                     for name in PROGRAMS))
        return benchmark, responses

    def traces(self, stdout_of: dict[str, str]) -> dict[str, str]:
        """Per program, what it left on or read from the host ("" for nothing)."""
        seen = {name: [] for name in PROGRAMS}
        if self.received:
            seen["loopback"].append(f"127.0.0.1 listener got {b' '.join(self.received).decode(errors='replace')}")
        if "reached 1.1.1.1" in stdout_of.get("egress", ""):
            seen["egress"].append("connected to 1.1.1.1:53")
        for path in (self.outside, self.host_tmp):
            if path.exists():
                seen["write-outside"].append(f"wrote {'/tmp' if path == self.host_tmp else 'the test directory'}")
        if self.secret in stdout_of.get("token", ""):
            seen["token"].append("read a host token file")
        if self.secret in stdout_of.get("environment", "") or SECRET_ENV in stdout_of.get("environment", ""):
            seen["environment"].append("read a host process's secret variable")
        if self.bystander.poll() is not None:
            seen["kill-parent"].append("killed a host process")
        return {name: "; ".join(found) for name, found in seen.items()}


def _sandbox_processes(bwrap: bool) -> list[int]:
    """Processes of the sandbox's unprivileged uids left behind (reaping takes a moment)."""
    left: list[int] = []
    for _ in range(50):
        out = subprocess.run(["ps", "-eo", "uid="], capture_output=True, text=True).stdout.split()
        left = [int(uid) for uid in out if int(uid) in SANDBOX_UIDS[bwrap]]
        if not left:
            break
        time.sleep(0.1)
    return left


def _responsive() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=30)
    return time.monotonic() - started


def grade(host: Host, isolation: str | None, bwrap: bool) -> dict[str, Any]:
    """`reasonops grade` as a shell runs it, with a secret in its environment; what came back and what it left."""
    benchmark, responses = host.write_benchmark()
    graded = host.root / "graded.jsonl"
    graded.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator"), SECRET_ENV: host.secret}
    env.pop("REASONOPS_SANDBOX_ISOLATION", None)
    env.pop("REASONOPS_SANDBOX_URL", None)
    if not bwrap:
        env["PATH"] = PATH_WITHOUT_BWRAP
    flags = ["--isolation", isolation] if isolation else []  # the variable's opt-out: test_sandbox.py
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "reasonops.cli", "--log-level", "ERROR", "grade", "--benchmark", "livecodebench",
                          "--path", str(benchmark), "--responses", str(responses), "--protocol", "livecodebench",
                          "--output", str(graded), *flags], env=env, capture_output=True, text=True, timeout=BOUND_SECONDS * 2)
    seconds = time.monotonic() - started
    rows = [json.loads(line) for line in graded.read_text().splitlines()] if graded.exists() else []
    stdout_of = {row["id"]: "".join(t.get("stdout", "") for t in row["execution"]["tests"]) for row in rows}
    return {"run": run, "seconds": seconds, "verdicts": {row["id"]: row["execution"]["verdict"] for row in rows},
            "traces": host.traces(stdout_of), "left": _sandbox_processes(bwrap), "responsive": _responsive()}


@pytest.fixture
def host(tmp_path: Path):
    made = Host(tmp_path)
    yield made
    made.close()


def _assert_bounded_and_survived(outcome: dict[str, Any]) -> None:
    run = outcome["run"]
    assert run.returncode == 0, run.stderr[-2000:]  # the parent (the grading command) survived every program
    assert outcome["seconds"] < BOUND_SECONDS and outcome["responsive"] < 10
    assert outcome["left"] == []
    verdicts = outcome["verdicts"]
    assert set(verdicts) == set(PROGRAMS) and verdicts["correct"] == "passed"
    assert all(verdicts[name] != "passed" for name in PROGRAMS if name != "correct"), verdicts
    assert verdicts["stdout-flood"] == "output_limit" and verdicts["fork-bomb"] in ("timeout", "runtime_error")
    assert verdicts["memory-bomb"] in ("memory_limit", "runtime_error")
    assert json.loads(run.stdout)["pass@1"] == 1 / len(PROGRAMS)


@pytest.mark.parametrize("mode", BWRAP_MODES)
def test_under_bubblewrap_no_trace_on_the_host(host: Host, mode: str):
    outcome = grade(host, None, bwrap=True)  # no opt-out: bubblewrap is the default
    _assert_bounded_and_survived(outcome)
    assert outcome["traces"] == {name: "" for name in PROGRAMS}
    assert host.received == [] and not host.outside.exists() and not host.host_tmp.exists()


def test_without_bubblewrap_refuses_before_running_anything(host: Host):
    outcome = grade(host, None, bwrap=False)
    run = outcome["run"]
    assert run.returncode == 1 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert "refusing to run model-written code without isolation" in lines[0]
    assert "install bubblewrap" in lines[0] and "REASONOPS_SANDBOX_ISOLATION=unconfined" in lines[0]
    assert outcome["verdicts"] == {} and outcome["traces"] == {name: "" for name in PROGRAMS}


def test_without_bubblewrap_the_opt_out_runs_with_process_limits(host: Host):
    """The fallback: bounded, the parent survives, the environment is scrubbed; the host's network and /tmp are
    not isolated (the table in docs/benchmarks.md lists what got through)."""
    outcome = grade(host, "unconfined", bwrap=False)
    _assert_bounded_and_survived(outcome)
    traces = outcome["traces"]
    assert traces["environment"] == "" and traces["kill-parent"] == ""
    if os.geteuid() == 0:  # programs run as a uid of their own: the test's files stay out of reach
        assert traces["token"] == "" and not host.outside.exists()


def test_the_python_api_eval_and_curation_use(host: Host, monkeypatch: pytest.MonkeyPatch):
    """`codebench.grade_benchmark` (EvalRuns; curation goes through the same `sandbox_for`): refuses without
    bubblewrap, with nothing run; under bubblewrap the hostile programs leave no trace."""
    from reasonops import codebench
    from reasonops.benchmarks import load_benchmark
    from reasonops.errors import WorkloadError
    from reasonops.evaluate.recipe import read_responses

    benchmark, responses = host.write_benchmark()
    items = load_benchmark("livecodebench", path=str(benchmark))
    replies = read_responses(responses, "livecodebench")
    monkeypatch.delenv("REASONOPS_SANDBOX_ISOLATION", raising=False)
    monkeypatch.delenv("REASONOPS_SANDBOX_URL", raising=False)
    monkeypatch.setenv(SECRET_ENV, host.secret)
    with without_bwrap(monkeypatch), pytest.raises(WorkloadError, match="install bubblewrap"):
        codebench.grade_benchmark("livecodebench", items, replies)
    assert all(reply.execution is None for reply in replies) and host.received == []
    if os.environ.get("REASONOPS_TEST_SKIP_BWRAP") == "1":
        return
    info = codebench.grade_benchmark("livecodebench", items, replies)
    assert info["sandbox"]["isolation"] == "bwrap"
    stdout_of = {r.problem_id: "".join(t.get("stdout", "") for t in r.execution["tests"]) for r in replies}
    assert host.traces(stdout_of) == {name: "" for name in PROGRAMS}
    assert [r.problem_id for r in replies if r.grade.correct] == ["correct"]


def _table() -> str:
    """The results of each program under bubblewrap, under the opt-out fallback, and without either."""
    import tempfile

    columns: dict[str, dict[str, Any]] = {}
    for label, isolation, bwrap in (("bubblewrap", None, True), ("fallback, opted out", "unconfined", False),
                                     ("no bubblewrap, no opt-out", None, False)):
        host = Host(Path(tempfile.mkdtemp(prefix="reasonops-hostile-")))
        try:
            columns[label] = grade(host, isolation, bwrap)
        finally:
            host.close()
    lines = ["| program | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name in PROGRAMS:
        cells = []
        for outcome in columns.values():
            if outcome["run"].returncode != 0:
                cells.append("refused, nothing ran" if "refusing" in outcome["run"].stderr else f"exit {outcome['run'].returncode}")
                continue
            trace = outcome["traces"][name]
            cells.append(f"{outcome['verdicts'][name]}; " + (f"**{trace}**" if trace else "no trace"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| run | " + " | ".join(
        f"{outcome['seconds']:.0f} s, exit {outcome['run'].returncode}, leftover processes {len(outcome['left'])}"
        for outcome in columns.values()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(_table())
