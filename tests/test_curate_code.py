"""Code problems in a ReasoningDataset: TACO and LiveCodeBench sources, solve-rate filtering and rejection
sampling by running programs in the sandbox (against a real server process answering some problems with
passing programs and others with wrong or hostile ones), decontamination against code benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from reasonops import codebench
from reasonops.api.v1alpha1 import DecontaminateStage
from reasonops.benchmarks import load_benchmark
from reasonops.curate import code as code_rows
from reasonops.curate.decontaminate import decontaminate, load_items
from reasonops.curate.loaders import RowError
from reasonops.contract import read_document
from reasonops.curate.recipe import config_from_resource, main
from reasonops.curate.records import StageReport
from reasonops.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
PASSING = {"max-list", "reverse-word", "count-vowels", "fizzbuzz", "mean", "palindrome", "is-anagram"}  # see code_server.py


@pytest.fixture(scope="module")
def mixed() -> Iterator[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "code_server.py"), "mixed"], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    port = proc.stdout.readline().split()[1]
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=10)


def taco_rows() -> list[dict[str, Any]]:
    """The code-demo problems in TACO's layout (call-based outputs wrapped in a list, as TACO does)."""
    rows = []
    for item in load_benchmark("code-demo"):
        code = item.code
        tests = code.public + code.private
        if code.mode == "functional":
            io = {"fn_name": code.fn_name, "inputs": [[json.loads(x) for x in t.input.split("\n")] for t in tests],
                  "outputs": [[json.loads(t.output)] for t in tests]}
        else:
            io = {"inputs": [t.input for t in tests], "outputs": [t.output for t in tests]}
        rows.append({"id": item.id.removeprefix("code-demo-"), "question": item.question, "input_output": json.dumps(io),
                     "starter_code": code.starter_code})
    return rows


def test_taco_and_livecodebench_rows():
    rows = taco_rows()
    problem = code_rows.row_to_problem(rows[8], "taco", "taco", 8)
    assert problem.tests.mode == "functional" and problem.tests.fn_name == "twoSum" and problem.answer is None
    assert problem.tests.public[0].output == "[0, 1]" and "starter code" in problem.question
    stdin = code_rows.row_to_problem({**rows[0], "input_output": json.dumps({"inputs": [["1 2"]], "outputs": [["3"]]})}, "taco", "t", 0)
    assert stdin.tests.public[0].input == "1 2" and "standard input" in stdin.question
    for bad, reason in (({"question": "q", "input_output": "nope"}, "bad-code-tests"),
                        ({"question": "q", "input_output": json.dumps({"inputs": [], "outputs": []})}, "no-tests"),
                        ({"input_output": "{}"}, "missing-question")):
        with pytest.raises(RowError) as info:
            code_rows.row_to_problem(bad, "taco", "t", 0)
        assert info.value.args[0] == reason
    lcb = {"question_id": "x", "question_content": "Sum.", "public_test_cases": json.dumps([{"input": "1", "output": "1", "testtype": "stdin"}]),
           "private_test_cases": "[]", "metadata": "{}"}
    assert code_rows.row_to_problem(lcb, "livecodebench", "lcb", 0).tests.public[0].input == "1"


def test_decontamination_covers_code_benchmarks():
    items = load_items(DecontaminateStage(benchmarks=["code-demo"], ngram=5))
    copied = code_rows.row_to_problem(taco_rows()[4], "taco", "pool", 0)  # fizzbuzz, with the format sentence added
    fresh = code_rows.row_to_problem({"question": "Given a tree with n nodes and weighted edges, print the length of its longest path.",
                                      "input_output": json.dumps({"inputs": ["1"], "outputs": ["0"]})}, "taco", "pool", 1)
    report = StageReport("decontaminate", "decontaminate")
    kept = decontaminate([copied, fresh], DecontaminateStage(benchmarks=["code-demo"], ngram=5), items, report)
    assert [p.id for p in kept] == [fresh.id]
    assert report.drops[0].detail.startswith("code-demo:code-demo-fizzbuzz")


def test_dataset_keeps_only_test_passing_chains(mixed: str, tmp_path: Path):
    pool = tmp_path / "taco.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in taco_rows()))
    teacher = {"model": "coder", "endpoint": {"url": mixed}}
    spec = {
        "sources": [{"name": "taco", "path": str(pool), "codeTests": "taco"}],
        "stages": [
            {"name": "difficulty", "difficulty": {"sampler": teacher, "attempts": 2, "minSolved": 1, "maxSolved": 2}},
            {"name": "generate", "generate": {"teachers": [{"name": "coder", "sampler": teacher}], "chainsPerProblem": 2}},
            {"name": "score", "score": {}},
        ],
        "systemPrompt": "Solve the programming problem.",
        "sandbox": {"timeoutSeconds": "1"},
        "output": {"path": str(tmp_path / "out")},
    }
    doc = read_document({"kind": "ReasoningDataset", "metadata": {"name": "code"}, "spec": spec, "revision": "r1",
                         "output": str(tmp_path / "out"), "outputLocation": str(tmp_path / "out")})
    config = config_from_resource(doc)
    config.progress = False
    result = main(config)

    rows = [json.loads(line) for line in (tmp_path / "out" / "data.jsonl").read_text().splitlines()]
    assert {r["id"].removeprefix("taco:") for r in rows} == PASSING
    assert result["samples"] == len(PASSING)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stages = {s["stage"]: s for s in manifest["stages"]}
    assert stages["difficulty"]["reasons"] == {"too-hard": 12 - len(PASSING)}
    assert manifest["solveRates"]["difficulty"]["distribution"] == {"0.5": len(PASSING)}
    assert stages["generate"]["info"]["teachers"]["coder"] == {"generated": 14, "correct": 7, "kept": 7}
    # every kept chain's final program passes all of its problem's tests when run again
    problems = {r["id"]: code_rows.row_to_problem(r, "taco", "taco", 0).tests for r in taco_rows()}
    pairs = [(r["messages"][2]["content"], problems[r["id"].removeprefix("taco:")]) for r in rows]
    regraded = codebench.grade_programs(Sandbox(), codebench.code_protocol("default"), pairs)
    assert all(g.grade.correct for g in regraded)
