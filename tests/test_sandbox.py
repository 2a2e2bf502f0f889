"""Escape attempts against the sandbox: each is contained, counted as that program's failure, and the
programs after it are still evaluated. Runs with bubblewrap where it is usable and in the fallback mode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from reasonops.errors import WorkloadError
from reasonops.sandbox import SLOT_UIDS, Job, Limits, Sandbox, decide_isolation
from reasonops.sandbox import TestCase as Case
from sandbox_support import BWRAP_MODES, without_bwrap

GOOD = "a, b = map(int, input().split())\nprint(a + b)\n"
ADD = [Case("3 4\n", "7\n"), Case("10 -2\n", "8\n")]


ROOT = os.geteuid() == 0


@pytest.fixture(params=["unconfined", *BWRAP_MODES])
def sandbox(request, monkeypatch) -> Sandbox:
    """Under bubblewrap, and as on a machine without it with the explicit opt-out."""
    limits = Limits(timeout=1.0, memory_mb=256, nproc=32)
    if request.param == "unconfined":
        with without_bwrap(monkeypatch):
            made = Sandbox(limits, isolation="unconfined")
        assert made.isolation == "unconfined"
        return made
    return Sandbox(limits, isolation=request.param)


def _contained(sandbox: Sandbox, program: str, tests=ADD) -> list:
    """Run the escape, then a correct program in the same batch: the escape fails, the good one passes."""
    escape, good = sandbox.run_many([Job(program, tests), Job(GOOD, ADD)], workers=2)
    assert not escape.passed
    assert good.passed, good.to_dict()
    return escape


def test_verdicts(sandbox):
    assert sandbox.run(GOOD, ADD).passed
    assert sandbox.run("print(1)", ADD).verdict == "wrong_answer"
    assert sandbox.run("raise KeyError(1)", ADD).verdict == "runtime_error"
    assert sandbox.run("import sys; sys.exit(3)", ADD).verdict == "runtime_error"
    outcome = sandbox.run("print('1.50000')", [Case("", "1.5")])  # LiveCodeBench's decimal comparison
    assert outcome.passed
    functional = sandbox.run("class Solution:\n    def f(self, xs: List[int], k):\n        return (sum(xs) * k,)\n",
                             [Case("[1, 2]\n3", "[9]")], mode="functional", fn_name="f", preamble="from typing import *\n")
    assert functional.passed, functional.to_dict()
    assert sandbox.run("def g(): pass", [Case("1", "1")], mode="functional", fn_name="f").verdict == "runtime_error"


def test_infinite_loop(sandbox):
    started = time.monotonic()
    escape = _contained(sandbox, "while True:\n    pass\n")
    assert escape.tests[0].verdict == "timeout"
    assert escape.tests[1].verdict == "skipped"
    assert time.monotonic() - started < 8


def test_memory_bomb(sandbox):
    assert _contained(sandbox, "x = bytearray(1 << 34)\n").verdict == "memory_limit"
    assert _contained(sandbox, "xs = []\nwhile True:\n    xs.append(bytearray(1 << 25))\n").verdict == "memory_limit"


def test_fork_bomb(sandbox):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    escape = _contained(sandbox, bomb)
    assert escape.verdict in ("timeout", "runtime_error")
    if ROOT:  # the executions run as nobody: none of the bomb's processes may outlive it (reaping takes a moment)
        for _ in range(50):
            uids = subprocess.run(["ps", "-eo", "uid="], capture_output=True, text=True).stdout.split()
            left = [u for u in uids if int(u) == 65534 or int(u) in SLOT_UIDS]
            if not left:
                break
            time.sleep(0.1)
        assert left == []


def test_multi_gigabyte_stdout(sandbox):
    started = time.monotonic()
    escape = _contained(sandbox, "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(4096):\n    sys.stdout.write(block)\n")
    assert escape.verdict == "output_limit"
    assert len(escape.tests[0].stdout) <= 1000
    assert time.monotonic() - started < 8


def test_parent_environment_is_not_visible(sandbox, monkeypatch):
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("REASONOPS_TEST_TOKEN", secret)
    program = (
        "import os\nseen = repr(dict(os.environ))\n"
        "for pid in (os.getppid(), 1):\n"
        "    try:\n        seen += open(f'/proc/{pid}/environ').read()\n    except OSError:\n        pass\n"
        "print(seen)\n"
    )
    escape = _contained(sandbox, program, [Case("", secret)])
    assert escape.verdict == "wrong_answer"
    assert secret not in escape.tests[0].stdout
    assert "REASONOPS_TEST_TOKEN" not in escape.tests[0].stdout


def test_signalling_the_parent(sandbox):
    me = os.getpid()  # the workload (this test process): it must survive
    for program in ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
                    f"import os, signal\nos.kill({me}, signal.SIGTERM)\nprint(7)\n",
                    "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)\n"):
        escape = _contained(sandbox, program)
        assert escape.verdict in ("runtime_error", "sandbox_error", "wrong_answer")


def test_writing_outside_the_temporary_directory(sandbox, tmp_path):
    if sandbox.isolation == "unconfined" and not ROOT:
        pytest.skip("without namespaces or a uid change the file system is the pod's to protect")
    target = tmp_path / "outside.txt"
    host_tmp = f"/tmp/reasonops-escape-{uuid.uuid4().hex}"
    program = (
        f"import os\nfor path in ({str(target)!r}, {host_tmp!r}, 'inside.txt'):\n"
        "    try:\n        open(path, 'w').write('pwned')\n        print('wrote', path)\n    except OSError as e:\n        print('refused', path)\n"
    )
    escape = _contained(sandbox, program, [Case("", "nothing")])
    assert not target.exists()
    assert "wrote inside.txt" in escape.tests[0].stdout  # its own directory is writable
    if sandbox.isolation == "bwrap":
        assert not os.path.exists(host_tmp)  # /tmp inside is the private directory
    else:
        os.path.exists(host_tmp) and os.unlink(host_tmp)


def test_service_account_token_is_not_readable(sandbox, tmp_path):
    if sandbox.isolation == "unconfined" and not ROOT:
        pytest.skip("without namespaces or a uid change the pod must not mount a token")
    account = tmp_path / "serviceaccount"
    account.mkdir()
    token = account / "token"
    token.write_text("fake-token-value")
    token.chmod(0o644)
    contained = Sandbox(sandbox.limits, isolation=sandbox.isolation, hidden_paths=[str(account)])
    program = f"print(open({str(token)!r}).read())\n"
    escape, good = contained.run_many([Job(program, [Case("", "fake-token-value")]), Job(GOOD, ADD)])
    assert not escape.passed and good.passed
    assert "fake-token-value" not in escape.tests[0].stdout


@pytest.mark.parametrize("mode", BWRAP_MODES)
def test_network_is_unreachable(mode):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    port = server.getsockname()[1]
    accepted: list = []

    def accept() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    program = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')\n"
    escape = _contained(Sandbox(Limits(timeout=2.0), isolation=mode), program, [Case("", "connected")])
    thread.join()
    server.close()
    assert accepted == []
    assert escape.verdict == "runtime_error"


def test_bad_job_is_a_clear_error(monkeypatch):
    with without_bwrap(monkeypatch):
        unconfined = Sandbox(isolation="unconfined")
    with pytest.raises(ValueError, match="fn_name"):
        unconfined.run("pass", ADD, mode="functional")
    with pytest.raises(WorkloadError, match="isolation must be bwrap or unconfined, not 'docker'"):
        Sandbox(isolation="docker")


def test_isolation_decision():
    """bubblewrap where it works; without it, unconfined only when opted out, else a refusal naming both ways on."""
    assert decide_isolation("bwrap", None) == "bwrap"
    assert decide_isolation("unconfined", None) == "bwrap"
    assert decide_isolation("unconfined", "bubblewrap (bwrap) is not installed") == "unconfined"
    with pytest.raises(WorkloadError) as refused:
        decide_isolation("bwrap", "bubblewrap (bwrap) is not installed")
    message = refused.value.message
    assert "\n" not in message and "not installed" in message
    assert "install bubblewrap" in message and "REASONOPS_SANDBOX_ISOLATION=unconfined" in message
    with pytest.raises(WorkloadError, match="not 'none'"):  # the old silent fallback's name is not an opt-out
        decide_isolation("none", "bubblewrap (bwrap) is not installed")


def test_refuses_without_bubblewrap_unless_opted_out(monkeypatch):
    """What curation and eval call (`sandbox_for`): no bubblewrap and no opt-out is a refusal, not a log line."""
    from reasonops.sandbox.service import sandbox_for

    monkeypatch.delenv("REASONOPS_SANDBOX_ISOLATION", raising=False)
    monkeypatch.delenv("REASONOPS_SANDBOX_URL", raising=False)
    with without_bwrap(monkeypatch):
        with pytest.raises(WorkloadError, match="refusing to run model-written code without isolation"):
            sandbox_for(Limits())
        monkeypatch.setenv("REASONOPS_SANDBOX_ISOLATION", "unconfined")
        assert sandbox_for(Limits()).isolation == "unconfined"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_execution_service_over_http(monkeypatch):
    """`reasonops sandbox-serve` as its pod runs it, and the workload's client: verdicts come back, escapes stay contained."""
    from pathlib import Path

    import httpx

    from reasonops import codebench
    from reasonops.benchmarks import load_benchmark
    from reasonops.errors import WorkloadError
    from reasonops.sandbox.service import SANDBOX_URL_ENV, RemoteSandbox

    root = Path(__file__).resolve().parents[1]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "reasonops.cli", "sandbox-serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                            env={**os.environ, "PYTHONPATH": str(root / "operator")}, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        remote = RemoteSandbox(url, Limits(timeout=1.0))
        escape, good = remote.run_many([Job("while True:\n    pass\n", ADD), Job(GOOD, ADD)])
        assert escape.verdict == "timeout" and good.passed
        assert httpx.post(f"{url}/v1/run", content=b"not json").status_code == 400

        monkeypatch.setenv(SANDBOX_URL_ENV, url)
        items = load_benchmark("code-demo", limit=2)

        class Reply:
            def __init__(self, problem_id: str, text: str) -> None:
                self.problem_id, self.text, self.grade, self.execution = problem_id, text, None, None

        replies = [Reply(i.id, f"```python\n{codebench.DEMO_SOLUTIONS[i.id]}```") for i in items] + [Reply(items[0].id, "no code")]
        info = codebench.grade_benchmark("custom", items, replies)
        assert info["sandbox"]["isolation"] == "remote"
        assert [r.grade.correct for r in replies] == [True, True, False]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    with pytest.raises(WorkloadError, match="SandboxUnavailable|sandbox service"):
        RemoteSandbox(url).run_many([Job(GOOD, ADD)])


def test_execution_service_refuses_without_bubblewrap_unless_opted_out():
    """`reasonops sandbox-serve` without bubblewrap: one line and exit 1, not a service running code unconfined;
    `--isolation unconfined` (what the sandbox pod sets, by its variable) serves with process limits only."""
    from pathlib import Path

    import httpx

    from sandbox_support import PATH_WITHOUT_BWRAP

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "operator"), "PATH": PATH_WITHOUT_BWRAP}
    env.pop("REASONOPS_SANDBOX_ISOLATION", None)
    port = _free_port()
    command = [sys.executable, "-m", "reasonops.cli", "sandbox-serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()] and "install bubblewrap" in refused.stderr
    proc = subprocess.Popen([*command, "--isolation", "unconfined"], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert health.json() == {"isolation": "unconfined"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_bwrap_that_does_not_work_is_no_isolation(monkeypatch):
    """bubblewrap installed but unable to make namespaces (user namespaces denied, as in an unprivileged container)
    counts as missing: the trial run fails, and the refusal says why."""
    import shutil
    import tempfile
    from pathlib import Path

    from sandbox_support import PATH_WITHOUT_BWRAP

    denied = Path(tempfile.mkdtemp(prefix="reasonops-denied-bwrap-"))  # runnable by the sandbox's uid, as /usr/bin is
    denied.chmod(0o755)
    (denied / "bwrap").write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    (denied / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{denied}:{PATH_WITHOUT_BWRAP}")
    try:
        with pytest.raises(WorkloadError, match="bubblewrap does not work here .bwrap: setting up uid map: Permission denied"):
            Sandbox()
        assert Sandbox(isolation="unconfined").isolation == "unconfined"
    finally:
        shutil.rmtree(denied)
