"""`reasonops grade` and `reasonops serve` run as a shell runs them: the console script in a subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from reasonops.benchmarks import demo_items
from reasonops.tinymodel import build_tiny_model

SCRIPT = Path(sys.executable).with_name("reasonops")  # the console script installed beside this Python


def _reasonops(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "operator")}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_every_command_prints_its_help() -> None:
    """`reasonops --help` and each command's: argparse formats help texts with %, so a bare "95%" in one of them
    made `reasonops --help` a traceback (TypeError) until this test."""
    proc = _reasonops("--help")
    assert proc.returncode == 0, proc.stderr
    commands = set(re.search(r"\{([a-z,-]+)\}", proc.stdout).group(1).split(","))
    assert {"run", "demo", "compare", "report", "grade", "operator"} <= commands, proc.stdout
    for command in sorted(commands):
        sub = _reasonops(command, "--help")
        assert sub.returncode == 0 and "usage: reasonops " + command in sub.stdout, (command, sub.stderr[-2000:])


def test_grade_help_lists_its_options() -> None:
    proc = _reasonops("grade", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--benchmark", "--responses", "--path", "--workers", "--output"):
        assert option in proc.stdout


def test_grade_takes_its_options(tmp_path: Path) -> None:
    items = demo_items()[:2]
    responses = tmp_path / "r.jsonl"
    responses.write_text(
        json.dumps({"id": items[0].id, "response": f"\\boxed{{{items[0].answer}}}"}) + "\n"
        + json.dumps({"id": items[1].id, "response": "\\boxed{-1}"}) + "\n"
    )
    proc = _reasonops("grade", "--benchmark", "demo", "--responses", str(responses), "--workers", "1",
                      "--output", str(tmp_path / "graded.jsonl"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["benchmark"] == "demo" and summary["pass@1"] == pytest.approx(0.5)
    assert len((tmp_path / "graded.jsonl").read_text().splitlines()) == 2


def test_grade_errors_are_one_line(tmp_path: Path) -> None:
    proc = _reasonops("grade", "--benchmark", "nope", "--responses", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "UnknownBenchmark" in proc.stderr
    proc = _reasonops("grade", "--benchmark", "demo")
    assert proc.returncode == 2 and "--responses" in proc.stderr


def test_serve_takes_its_options(tmp_path: Path) -> None:
    """`reasonops serve` where vLLM is installed (here: $REASONOPS_VLLM) serves with vLLM's CPU engine, the port it
    picked for --port 0 in --port-file, until SIGTERM."""
    from reasonops.tinymodel import build_servable_model
    from vllm_support import engine_environment

    model = build_servable_model(tmp_path / "tiny")
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "operator"), **engine_environment()}
    process = subprocess.Popen(
        [str(SCRIPT), "serve", "--model", str(model), "--port", "0", "--port-file", str(port_file),
         "--served-model-name", "cli-tiny"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    try:
        deadline = time.monotonic() + 600
        models = None
        while time.monotonic() < deadline and models is None:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            if port_file.exists() and port_file.read_text():
                try:
                    models = httpx.get(f"http://127.0.0.1:{port_file.read_text()}/v1/models", timeout=5).json()
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        assert models is not None and [m["id"] for m in models["data"]] == ["cli-tiny"]
        assert models["data"][0]["owned_by"] == "vllm"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0
    assert "with vLLM's CPU engine" in process.stderr.read().decode()
    with pytest.raises(httpx.HTTPError):  # the server went with it
        httpx.get(f"http://127.0.0.1:{port_file.read_text()}/v1/models", timeout=5)


def test_serve_without_a_model_is_refused() -> None:
    proc = _reasonops("serve", "--port", "0")
    assert proc.returncode == 2 and "--model" in proc.stderr


def test_grade_counts_text_that_is_not_utf8(tmp_path: Path) -> None:
    items = demo_items()[:3]
    responses = tmp_path / "r.jsonl"
    responses.write_bytes(
        json.dumps({"id": items[0].id, "response": f"\\boxed{{{items[0].answer}}}"}).encode() + b"\n"
        + b'{"id": "' + items[1].id.encode() + b'", "response": "caf\xe9 \\\\boxed{' + items[1].answer.encode() + b'}"}\n'
        + json.dumps({"id": items[2].id, "response": "\ud800 lone \\boxed{1}"}).encode() + b"\n"  # an escaped lone surrogate
    )
    graded = tmp_path / "graded.jsonl"
    proc = _reasonops("grade", "--benchmark", "demo", "--responses", str(responses), "--workers", "1", "--output", str(graded))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "2 response(s) held text that is not valid UTF-8" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["invalidText"] == 2 and summary["pass@1"] == pytest.approx(2 / 3)
    rows = [json.loads(line) for line in graded.read_text(encoding="utf-8").splitlines()]
    assert [r["correct"] for r in rows] == [True, True, False] and "\ufffd" in rows[2]["response"]
    assert list(tmp_path.glob("*.tmp")) == []


def test_grade_on_what_models_write(tmp_path: Path) -> None:
    bench = tmp_path / "math500.jsonl"
    golds = ["1-\\mathrm{e}^{-1}", "\\frac{\\mathrm{e}}{2}", "32349", "5", "5", "0.5"]
    bench.write_text("".join(json.dumps({"id": f"p{i}", "problem": "?", "answer": g}) + "\n" for i, g in enumerate(golds)))
    responses = [
        "so \\boxed{1}",  # wrong: math-verify alone read only the prefix of the gold answer
        "\\boxed{\\frac{\\mathrm{e}}{3}}",  # wrong
        "\\boxed{32, 349}",  # a list, not 32349
        "\\boxed{" * 14_000,  # a loop of unclosed boxes: no answer, and quickly
        "\\boxed{" + "9" * 100_000 + "}",  # graded, no int-string error
        "The answer is 0.5. Then 7 more steps follow.",
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "response": r}) + "\n" for i, r in enumerate(responses)))
    graded = tmp_path / "graded.jsonl"
    # custom: strict extraction, which reads "The answer is 0.5" (limo reads only boxes)
    proc = _reasonops("grade", "--benchmark", "math500", "--path", str(bench), "--responses", str(path),
                      "--workers", "1", "--output", str(graded), "--protocol", "custom")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in graded.read_text().splitlines()]
    assert [r["correct"] for r in rows] == [False, False, False, False, False, True]
    assert rows[3]["reason"] == "no_answer" and rows[5]["extracted"] == "0.5"
    summary = json.loads(proc.stdout)
    assert summary["pass@1"] == pytest.approx(1 / 6) and summary["stderr"] == pytest.approx(1 / 6)  # sample variance 1/6 over 6 problems
    assert 0 < summary["ci95"][0] < 1 / 6 < summary["ci95"][1]


def test_grade_with_skythoughts_extraction(tmp_path: Path) -> None:
    items = demo_items()[:1]
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"id": items[0].id, "response": f"The result is {items[0].answer}."}) + "\n")
    limo = json.loads(_reasonops("grade", "--benchmark", "demo", "--responses", str(path)).stdout)
    sky = json.loads(_reasonops("grade", "--benchmark", "demo", "--responses", str(path), "--protocol", "skythought").stdout)
    assert (limo["pass@1"], sky["pass@1"]) == (0.0, 1.0)
