"""Code benchmarks: layouts, extraction rules, release windows, protocols, and EvalRuns graded in the sandbox
(against a real server process that returns programs, and `reasonops run` on the tiny model)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from reasonops.evaluate.protocols import protocol

from reasonops import codebench
from reasonops.benchmarks import load_benchmark
from reasonops.contract import WorkloadDocument, read_document
from reasonops.errors import WorkloadError
from reasonops.evaluate import config_from_resource, grade_main, main
from reasonops.evaluate.recipe import benchmark_run
from reasonops.api.v1alpha1 import BenchmarkSpec
from reasonops.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "operator")}


@pytest.fixture(scope="module")
def coder() -> Iterator[str]:
    """A real OpenAI-compatible server process answering every code-demo problem with its reference program."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "code_server.py"), "correct"], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout is not None
    port = proc.stdout.readline().split()[1]
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=10)


def _doc(output: Path, spec: dict[str, Any], endpoint: str) -> WorkloadDocument:
    return read_document({"apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun", "metadata": {"name": "coder"},
                          "spec": {"output": {"path": str(output.parent)}, **spec}, "revision": "r1", "output": str(output),
                          "outputLocation": str(output), "context": {"endpoint": endpoint}})


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------


def _lcb_row(private: str, **extra: Any) -> dict[str, Any]:
    return {"question_id": "q1", "question_content": "Print the sum.", "contest_date": "2024-09-01T00:00:00", "starter_code": "",
            "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
            "private_test_cases": private, "metadata": "{}", **extra}


PRIVATE = [{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}]


def test_livecodebench_private_tests_in_every_form():
    sandbox = Sandbox()
    as_json = codebench.read_lcb_row(_lcb_row(json.dumps(PRIVATE)), 0)
    assert as_json.code.private[0].output == "10\n" and as_json.released == "2024-09-01"
    compressed = codebench.read_lcb_row(_lcb_row(codebench.encode_private(PRIVATE)), 0)
    assert compressed.code.private == as_json.code.private  # zlib of JSON: no pickle, read here
    # LiveCodeBench's own form: base64(zlib(pickle(json text))), decoded in the sandbox only
    pickled = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(PRIVATE)))).decode()
    lcb = codebench.read_lcb_row(_lcb_row(pickled), 0)
    assert lcb.code.private_encoded == pickled
    decoded = codebench.decode_private([compressed, lcb], sandbox)
    assert [d.code.private for d in decoded] == [as_json.code.private] * 2
    assert codebench.content_hash(decoded[:1]) == codebench.content_hash([as_json])

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/reasonops-pwned",))

    evil = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    with pytest.raises(WorkloadError, match="refused global"):
        codebench.decode_private([codebench.read_lcb_row(_lcb_row(evil), 0)], sandbox)
    assert not os.path.exists("/tmp/reasonops-pwned")


def test_functional_row_needs_a_function_name():
    row = _lcb_row("[]", public_test_cases=json.dumps([{"input": "[1]", "output": "1", "testtype": "functional"}]))
    with pytest.raises(WorkloadError, match="func_name"):
        codebench.read_lcb_row(row, 3)
    item = codebench.read_lcb_row({**row, "metadata": json.dumps({"func_name": "f"})}, 3)
    assert item.code.mode == "functional" and item.code.preamble


def test_humaneval_and_mbpp_layouts():
    human = codebench.read_humaneval_row({"task_id": "HumanEval/0", "prompt": "def add(a, b):\n    \"\"\"Add.\"\"\"\n",
                                          "test": "def check(f):\n    assert f(1, 2) == 3\n", "entry_point": "add"}, 0)
    mbpp = codebench.read_mbpp_row({"task_id": 2, "text": "Write a function double(x).", "test_list": ["assert double(2) == 4"],
                                    "test_setup_code": ""}, 0)
    sandbox = Sandbox()
    protocol = codebench.code_protocol("custom")
    good = codebench.grade_programs(sandbox, protocol, [("```python\ndef add(a, b):\n    return a + b\n```", human.code),
                                                        ("```python\ndef double(x):\n    return 2 * x\n```", mbpp.code)])
    bad = codebench.grade_programs(sandbox, protocol, [("```python\ndef add(a, b):\n    return a - b\n```", human.code)])
    assert [g.grade.correct for g in good] == [True, True]
    assert bad[0].grade.correct is False and bad[0].execution["verdict"] == "runtime_error"


def test_extraction_rules():
    text = "Think.\n```python\nprint(1)\n```\nAlso:\n```bash\nls\n```\nFinal:\n```python\nprint(2)\n```\nDone."
    assert codebench.last_python_block(text) == "print(2)"
    assert codebench.last_python_block("```bash\nls\n```") is None
    assert codebench.last_python_block("no code") is None
    assert codebench.lcb_block(text) == "print(2)"
    assert codebench.lcb_block("```python\nx = 1") is None
    assert codebench.skythought_block("```python\nprint(3)\n```") == "print(3)\n"
    assert codebench.skythought_block("```\nprint(4)\n```\n```bash\nls\n```") == "ls\n"  # any language, as SkyThought


def test_release_window():
    items = load_benchmark("code-demo")
    assert len(items) == 12
    window = load_benchmark("code-demo", released_from="2025-01-01", released_until="2025-06-01")
    assert [i.released for i in window] == ["2025-01-12", "2025-03-08", "2025-04-19", "2025-06-01"]
    with pytest.raises(WorkloadError, match="no release date"):
        load_benchmark("demo", released_from="2025-01-01")
    with pytest.raises(WorkloadError, match="not a date"):
        codebench.in_window(items, "2025-13-45", None, "code-demo")


def test_protocol_presets():
    lcb = benchmark_run(BenchmarkSpec(name="code-demo"), protocol("livecodebench"))
    assert (lcb.samples, lcb.temperature, lcb.top_p, lcb.max_tokens) == (10, 0.2, 0.95, 2000)
    sky = benchmark_run(BenchmarkSpec(name="code-demo"), protocol("skythought"))
    assert (sky.samples, sky.temperature, sky.top_p, sky.max_tokens, sky.seed) == (1, 0.0, 1.0, 32768, 41)
    item = load_benchmark("code-demo")[8]  # functional: two-sum
    assert "twoSum" in codebench.messages("skythought", item, None)[0]["content"]
    assert codebench.messages("livecodebench", item, None)[0]["content"] == codebench.LCB_SYSTEM
    assert codebench.messages("livecodebench", item, "Be brief.")[0]["content"] == "Be brief."
    assert codebench.code_protocol("skythought").tests == "private"


# ------------------------------------------------------------------------------------------------
# EvalRuns
# ------------------------------------------------------------------------------------------------


def test_correct_programs_score_one(coder: str, tmp_path: Path):
    spec = {"model": {"endpoint": {"url": coder}, "servedModelName": "coder"}, "protocol": "livecodebench",
            "benchmarks": [{"name": "code-demo", "samples": 2, "releasedFrom": "2024-06-01"}],
            "gates": [{"benchmark": "code-demo", "minScore": "1.0"}]}
    result = main(config_from_resource(_doc(tmp_path, spec, coder)))
    assert result["results"][0]["score"] == "1.0000" and result["results"][0]["problems"] == 9
    assert result["gates"][0]["passed"] is True
    summary = json.loads((tmp_path / "summary.json").read_text())
    scores = summary["benchmarks"][0]["scores"]
    assert scores["pass@k"] == {"1": 1.0, "2": 1.0}
    execution = scores["execution"]
    assert execution["releaseWindow"] == {"from": "2024-06-01", "until": None}
    assert execution["verdicts"] == {"passed": 18} and execution["protocol"] == "livecodebench"
    assert execution["sandbox"]["isolation"] in ("bwrap", "unconfined")
    rows = [json.loads(line) for line in (tmp_path / "responses" / "code-demo.jsonl").read_text().splitlines()]
    assert len(rows) == 18 and all(r["correct"] for r in rows)
    assert all(len(r["execution"]["tests"]) >= 2 and r["execution"]["verdict"] == "passed" for r in rows)

    # the same responses re-graded offline by `reasonops grade`, with one program broken
    rows[0]["response"] = "```python\nprint('wrong')\n```"
    responses = tmp_path / "edited.jsonl"
    responses.write_text("".join(json.dumps(r) + "\n" for r in rows))
    graded = tmp_path / "graded.jsonl"
    assert grade_main(["--benchmark", "code-demo", "--responses", str(responses), "--output", str(graded)]) == 0
    regraded = [json.loads(line) for line in graded.read_text().splitlines()]
    assert [r["correct"] for r in regraded].count(False) == 1
    assert regraded[0]["execution"]["verdict"] == "wrong_answer"


def test_reasonops_run_on_the_tiny_model(tmp_path: Path):
    """`reasonops run` as a shell runs it: the tiny random model, served by the real vLLM (its CPU build, which
    `reasonops run` starts where it is installed), writes no working code, and the run completes."""
    from vllm_support import engine_environment

    env = {**_env(), **engine_environment()}
    subprocess.run([sys.executable, "-m", "reasonops.cli", "tiny-model", "tiny-model"], cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    run = subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(ROOT / "examples" / "code" / "evalrun-code-demo.yaml"),
                          "--output", "out"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "with vLLM's CPU engine" in run.stdout, run.stdout[-2000:]
    summary = json.loads(next((tmp_path / "out").rglob("summary.json")).read_text())
    scores = summary["benchmarks"][0]["scores"]
    assert scores["problems"] == 9 and scores["responses"] == 18
    assert scores["pass@1"] == 0.0
    assert sum(scores["execution"]["verdicts"].values()) == 18
    assert summary["benchmarks"][0]["sampling"]["temperature"] == 0.2  # LiveCodeBench's preset, samples overridden


def test_livecodebench_from_a_mounted_file(tmp_path: Path):
    rows = [_lcb_row(json.dumps(PRIVATE), question_id=f"q{i}", contest_date=f"2024-0{i + 1}-01T00:00:00") for i in range(3)]
    path = tmp_path / "livecodebench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_benchmark("livecodebench", path=str(tmp_path), released_from="2024-02-01")
    assert [i.id for i in items] == ["q1", "q2"] and items[0].code.private[0].input == "5 5\n"
    with pytest.raises(WorkloadError, match="question_content"):
        path.write_text(json.dumps({"problem": "1+1", "answer": "2"}) + "\n")
        load_benchmark("livecodebench", path=str(path))


def test_the_operator_knows_every_code_benchmark():
    """contract.CODE_BENCHMARKS (what decides the sandbox) names exactly the registry's code benchmarks."""
    from reasonops import contract
    from reasonops.benchmarks import REGISTRY

    assert contract.CODE_BENCHMARKS == {n for n, d in REGISTRY.items() if d.kind == "code"}
