"""The test runner that executes inside the sandbox (standard library only; run as `python -I -S harness.py`).

It reads one job as JSON on stdin: ``{"program", "mode": "stdin"|"functional"|"script", "fn_name", "tests":
[{"input", "output"}], "timeout", "memory_bytes", "output_bytes", "file_bytes", "nproc", "nofile",
"stop_on_failure", "preamble", "keep_output"}``, sets the limits on itself before any untrusted code runs, then runs each
test in a forked child (own process group; address-space, CPU and file-size limits; stdin from a memory
file, stdout and stderr into capped pipes; every other descriptor closed), kills the child's group at the
wall-clock limit and writes one JSON object with a verdict per test to its stdout.

The harness makes itself non-dumpable, so a program (same uid) cannot open its descriptors or memory
through /proc; a program that kills the harness fails its tests (no result comes back). Output comparison
follows LiveCodeBench (lcb_runner/evaluation/testing_util.py): stdin tests compare whitespace-stripped lines,
exactly or as decimals token by token; functional tests compare the returned value with the JSON output,
tuples read as lists; script tests (the test is code run after the program, e.g. HumanEval's asserts)
pass when the program exits cleanly.
"""

import json
import os
import resource
import select
import signal
import sys
import time

PASSED, WRONG, RUNTIME, TIMEOUT, MEMORY, OUTPUT = (
    "passed", "wrong_answer", "runtime_error", "timeout", "memory_limit", "output_limit")
EXIT_MEMORY, EXIT_RUNTIME, EXIT_NO_FUNCTION = 71, 72, 73
SNIPPET = 300


def _set_limit(kind, value):
    soft, hard = resource.getrlimit(kind)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (value, value))


def _child(job, test, stdin_fd, out_w, err_w, value_w):
    os.setpgid(0, 0)
    os.dup2(stdin_fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    keep = {0, 1, 2, value_w}
    for fd in os.listdir("/proc/self/fd"):  # the harness's result pipe among them
        if int(fd) not in keep:
            try:
                os.close(int(fd))
            except OSError:
                pass
    _set_limit(resource.RLIMIT_AS, job["memory_bytes"])
    _set_limit(resource.RLIMIT_CPU, int(job["timeout"]) + 1)
    _set_limit(resource.RLIMIT_FSIZE, job["file_bytes"])
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    try:
        source = job.get("preamble", "") + job["program"]
        if job["mode"] == "script":  # the test is code run after the program (HumanEval/MBPP asserts)
            source += "\n" + test["input"] + "\n"
        code = compile(source, "solution.py", "exec")
        namespace = {"__name__": "__main__"}
        if job["mode"] == "functional":
            namespace["__name__"] = "solution"
            exec(code, namespace)
            owner = namespace.get("Solution")
            target = getattr(owner(), job["fn_name"], None) if owner else namespace.get(job["fn_name"])
            if target is None:
                sys.stderr.write(f"no function {job['fn_name']} in the program\n")
                sys.stderr.flush()
                os._exit(EXIT_NO_FUNCTION)
            args = [json.loads(line) for line in test["input"].split("\n") if line.strip()]
            value = target(*args)
            if isinstance(value, tuple):
                value = list(value)
            os.write(value_w, json.dumps(value).encode())
        else:
            exec(code, namespace)
        sys.stdout.flush()
    except MemoryError:
        os._exit(EXIT_MEMORY)
    except SystemExit as exc:
        try:
            sys.stdout.flush()
        except BaseException:
            pass
        os._exit(0 if exc.code in (None, 0) else EXIT_RUNTIME)
    except BaseException as exc:  # noqa: BLE001 - every failure of the program is its runtime error
        try:
            sys.stdout.flush()
            sys.stderr.write(f"{type(exc).__name__}: {exc}"[:SNIPPET] + "\n")
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(EXIT_MEMORY if isinstance(exc, MemoryError) else EXIT_RUNTIME)
    os._exit(0)


def _collect(pid, pipes, deadline, cap):
    """Read the child's pipes until EOF, the deadline or the output cap; returns (data, why-stopped)."""
    data = {fd: bytearray() for fd in pipes}
    open_fds = set(pipes)
    stopped = None
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            stopped = TIMEOUT
            break
        ready, _, _ = select.select(list(open_fds), [], [], left)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                continue
            data[fd] += chunk
            if len(data[fd]) > cap:
                stopped = OUTPUT
        if stopped:
            break
    return data, stopped


def _lines(text):
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line):
    from decimal import Decimal, InvalidOperation  # only when lines differ: most tests never need it

    try:
        return [Decimal(token) for token in line.split()]
    except InvalidOperation:
        return None


def stdio_equal(got, expected):
    a, b = _lines(got), _lines(expected)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x != y:
            dx, dy = _decimals(x), _decimals(y)
            if dx is None or dx != dy:
                return False
    return True


def run_test(job, test):
    stdin_fd = os.memfd_create("stdin")
    if job["mode"] != "script":
        os.write(stdin_fd, test["input"].encode())
    os.lseek(stdin_fd, 0, 0)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    value_r, value_w = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            _child(job, test, stdin_fd, out_w, err_w, value_w)
        finally:
            os._exit(EXIT_RUNTIME)
    for fd in (stdin_fd, out_w, err_w, value_w):
        os.close(fd)
    data, stopped = _collect(pid, (out_r, err_r, value_r), started + job["timeout"], job["output_bytes"])
    try:
        os.killpg(pid, signal.SIGKILL)  # the child's group: what it forked goes with it
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    seconds = round(time.monotonic() - started, 4)
    for fd in (out_r, err_r, value_r):
        os.close(fd)
    stdout = data[out_r].decode("utf-8", "replace")
    stderr = data[err_r][-SNIPPET:].decode("utf-8", "replace")
    if stopped is None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        stopped = TIMEOUT if sig in (signal.SIGXCPU, signal.SIGKILL) else RUNTIME
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    if stopped:
        verdict = stopped
    elif code == EXIT_MEMORY:
        verdict = MEMORY
    elif code != 0:
        verdict = RUNTIME
    elif job["mode"] == "script":
        verdict = PASSED
    elif job["mode"] == "functional":
        try:
            verdict = PASSED if json.loads(data[value_r] or b"null") == json.loads(test["output"]) else WRONG
        except ValueError:
            verdict = WRONG
        stdout = data[value_r].decode("utf-8", "replace")
    else:
        verdict = PASSED if stdio_equal(stdout, test["output"]) else WRONG
    keep = len(stdout) if job.get("keep_output") else SNIPPET
    return {"verdict": verdict, "seconds": seconds, "exit": code, "stdout": stdout[:keep], "stderr": stderr}


def main():
    job = json.loads(sys.stdin.buffer.read())
    result_fd = os.dup(1)
    os.set_inheritable(result_fd, False)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    try:
        import ctypes  # PR_SET_DUMPABLE 0: no access to this process through /proc or ptrace

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        pass
    _set_limit(resource.RLIMIT_NPROC, job["nproc"])
    _set_limit(resource.RLIMIT_NOFILE, job["nofile"])
    _set_limit(resource.RLIMIT_FSIZE, max(job["file_bytes"], max((len(t["input"]) for t in job["tests"]), default=0) * 4 + 1))
    results = []
    for test in job["tests"]:
        if results and job["stop_on_failure"] and results[-1]["verdict"] != PASSED:
            results.append({"verdict": "skipped", "seconds": 0.0})
            continue
        try:
            results.append(run_test(job, test))
        except OSError as exc:  # fork refused (the process limit), pipes, memory
            results.append({"verdict": RUNTIME, "seconds": 0.0, "stderr": f"harness: {exc}"[:SNIPPET]})
    with os.fdopen(result_fd, "wb") as out:
        out.write(json.dumps({"tests": results}).encode())


if __name__ == "__main__":
    main()
