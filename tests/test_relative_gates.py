"""Relative gates through `reasonops run` as a shell runs it: a base and a better model (real OpenAI-compatible
server processes answering the demo benchmark, half right and all right) are evaluated, and EvalRuns gated on
beating the base pass or fail on the lower bound of the paired difference, or refuse an unpaired comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from reasonops.evaluate.compare import EvalOutput, benchmark_comparison

ROOT = Path(__file__).resolve().parents[1]
API = "reasonops.io/v1alpha1"


def _output(values: dict[str, float], protocol: str = "limo") -> EvalOutput:
    summary = {"protocol": protocol, "benchmarks": [{"name": "demo", "sampling": {"samples": 1, "seeds": [0]}}]}
    return EvalOutput("/x", summary, {"demo": values}, {"demo": {(problem, 0): 0 for problem in values}})


def test_a_benchmark_comparison_is_the_run_minus_its_baseline_or_why_not() -> None:
    base, better = _output({"p1": 0.0, "p2": 1.0, "p3": 0.0}), _output({"p1": 1.0, "p2": 1.0, "p3": 1.0})
    comparison = benchmark_comparison(base, better, "demo")
    assert comparison["difference"] == "0.6667" and (comparison["wins"], comparison["losses"], comparison["problems"]) == (2, 0, 3)
    assert float(comparison["ciLow"]) <= 0.6667 <= float(comparison["ciHigh"])
    assert "different protocol" in benchmark_comparison(base, _output({"p1": 1.0, "p2": 1.0, "p3": 1.0}, "skythought"), "demo")["refused"]
    assert benchmark_comparison(base, better, "aime24")["refused"] == "the baseline did not evaluate aime24 (it evaluated demo)"


def _server(mode: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "code_server.py"), mode], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{proc.stdout.readline().split()[1]}/v1"


@pytest.fixture(scope="module")
def models() -> Iterator[dict[str, str]]:
    """The base model (every other demo problem right) and the fine-tuned one (all right), served."""
    started = {"base": _server("mixed"), "tuned": _server("correct")}
    yield {name: url for name, (_, url) in started.items()}
    for proc, _ in started.values():
        proc.terminate()
        proc.wait(timeout=10)


def _eval(name: str, url: str, gates: list | None = None, **benchmark: object) -> dict:
    spec = {"model": {"endpoint": {"url": url, "concurrency": 4}}, "output": {"path": "evals"},
            "benchmarks": [{"name": "demo", "samples": 1, "temperature": "0", "maxTokens": 32, **benchmark}]}
    return {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": name}, "spec": {**spec, **({"gates": gates} if gates else {})}}


def test_reasonops_run_gates_a_model_on_beating_its_baseline(models: dict[str, str], tmp_path: Path) -> None:
    beats = {"benchmark": "demo", "baseline": "base", "minDifference": "0.2", "bound": "lower95"}
    docs = [  # the gated runs first: a file's order does not matter, a baseline runs before the runs it gates
        _eval("tuned", models["tuned"], [beats, {"benchmark": "demo", "minScore": "0.9"}]),
        _eval("tuned-strict", models["tuned"], [{**beats, "minDifference": "0.3"}]),
        _eval("tuned-fewer", models["tuned"], [beats], limit=6),
        _eval("base", models["base"]),
    ]
    file = tmp_path / "evals.yaml"
    file.write_text(yaml.safe_dump_all(docs))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(file), "--output", str(out)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "operator")}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = {p.stem.removeprefix("EvalRun-"): json.loads(p.read_text()) for p in (out / "state").glob("EvalRun-*.json")}
    assert state["base"]["result"]["results"][0]["score"] == "0.5000"
    assert state["tuned"]["result"]["results"][0]["score"] == "1.0000"

    # Half the problems gained, none lost: a difference of 0.5 whose paired 95% interval starts at 0.25.
    (comparison,) = state["tuned"]["result"]["comparisons"]
    assert comparison == {"baseline": "base", "baselineRevision": state["base"]["revision"], "benchmark": "demo", "problems": 12,
                          "difference": "0.5000", "ciLow": comparison["ciLow"], "ciHigh": comparison["ciHigh"], "wins": 6, "losses": 0}
    assert 0.2 <= float(comparison["ciLow"]) < 0.3 and float(comparison["ciHigh"]) > 0.5
    assert [g["passed"] for g in state["tuned"]["result"]["gates"]] == [True, True]
    # The same difference, not far enough from zero for a stricter bound: the point clears 0.3, the interval does not.
    (strict,) = state["tuned-strict"]["result"]["gates"]
    assert strict == {"benchmark": "demo", "baseline": "base", "minDifference": "0.3", "bound": "lower95",
                      "score": comparison["ciLow"], "passed": False}
    assert f"gates failed: demo: lower 95% bound of the difference to EvalRun base {comparison['ciLow']} < 0.3" in proc.stdout
    # Six problems against twelve are not a paired comparison: refused, and the gate fails saying so.
    (fewer,) = state["tuned-fewer"]["result"]["gates"]
    assert not fewer["passed"] and fewer["reason"].startswith("cannot compare with EvalRun base: not the same problems under the same protocol")
    assert "different problems (6 only in A" in fewer["reason"]
    # The evaluation's own output keeps the comparison next to its scores (what `reasonops compare` would print).
    summary = json.loads((Path(state["tuned"]["output"]) / "summary.json").read_text())
    assert summary["comparisons"] == [comparison] and summary["gatesPassed"] is True
    assert "difference to base ≥ 0.2" in (Path(state["tuned"]["output"]) / "report.md").read_text()

    # Later, alone in its own file: the baseline is the one run before under the same --output.
    later = tmp_path / "later.yaml"
    later.write_text(yaml.safe_dump(_eval("tuned-later", models["tuned"], [beats])))
    proc = subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(later), "--output", str(out)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "operator")}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "state" / "EvalRun-tuned-later.json").read_text())["result"]
    assert result["comparisons"] == [comparison] and result["gates"][0]["passed"] and "1 gates passed" in proc.stdout


def test_a_missing_baseline_is_named(models: dict[str, str], tmp_path: Path) -> None:
    file = tmp_path / "alone.yaml"
    file.write_text(yaml.safe_dump(_eval("tuned", models["tuned"], [{"benchmark": "demo", "baseline": "base", "minDifference": "0"}])))
    proc = subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(file), "--output", str(tmp_path / "out")], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "operator")}, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "EvalRun 'base' (a relative gate's baseline) does not exist" in proc.stderr and "run it first" in proc.stderr
