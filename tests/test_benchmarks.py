"""The benchmark registry: layouts, local files, the built-in demo, and the errors users see."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasonops.benchmark_types import BenchmarkItem, answer_text
from reasonops.benchmarks import REGISTRY, demo_items, load_benchmark, load_benchmark_with_source
from reasonops.errors import WorkloadError
from reasonops.grading import grade_one

SHARED = Path("/work/shared/data/benchmarks")
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="the shared LIMO benchmark files are not mounted")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_registry_covers_the_published_benchmarks() -> None:
    expected = {"aime24", "aime25", "math500", "amc23", "olympiadbench", "gpqa-diamond", "minerva-math", "gsm8k", "demo"}
    code = {"livecodebench", "livecodebench-v2", "humaneval", "mbpp", "code-demo"}
    assert set(REGISTRY) == expected | code
    assert {n for n, d in REGISTRY.items() if d.kind == "code"} == code
    assert REGISTRY["gpqa-diamond"].kind == "choice"
    # The published sizes decide LIMO's sampling (under 50 problems: 16 samples).
    assert {n for n, d in REGISTRY.items() if d.problems is not None and d.problems < 50} == {"aime24", "aime25", "amc23"}
    assert REGISTRY["demo"].problems is None
    assert all(d.hub for n, d in REGISTRY.items() if n not in ("demo", "code-demo"))


def test_demo_is_deterministic_and_solvable() -> None:
    items = load_benchmark("demo")
    assert items == demo_items() and len(items) == 12
    assert len({i.id for i in items}) == 12
    assert all(i.answer.lstrip("-").isdigit() for i in items)
    assert items[0] == BenchmarkItem("demo-0", "Alice has 10 apples and buys 2 more. How many apples does she have now?", "12")
    assert load_benchmark("demo", limit=3) == items[:3]


@pytest.mark.parametrize(
    "value, text",
    [(27.0, "27"), (2.5, "2.5"), ("$2^{1009}$", "2^{1009}"), ("$69$,$84$", "69,84"), (["$1$", "$2$"], "1, 2"), ("\\$18.90", "\\$18.90"), (7, "7")],
)
def test_answer_text(value: object, text: str) -> None:
    assert answer_text(value) == text


@needs_shared
@pytest.mark.parametrize("name, rows", [("aime24", 30), ("amc23", 40), ("math500", 500), ("olympiadbench", 675)])
def test_limo_evaluation_files(name: str, rows: int) -> None:
    items = load_benchmark(name, path=str(SHARED))
    assert len(items) == rows
    assert len({i.id for i in items}) == rows
    assert all(i.question and i.answer for i in items)
    assert not any("$" in i.answer.replace("\\$", "") for i in items)


@needs_shared
def test_limo_layout_details() -> None:
    amc = load_benchmark("amc23", path=str(SHARED / "amc23.jsonl"))
    assert amc[0].answer == "27"  # stored as 27.0
    olympiad = {i.id: i for i in load_benchmark("olympiadbench", path=str(SHARED))}
    assert olympiad["1612"].answer == "2^{1009}"
    math500 = load_benchmark("math500", path=str(SHARED), limit=2)
    assert math500[0].id == "test/precalculus/807.json" and len(math500) == 2


@needs_shared
def test_gold_answers_grade_as_their_own_answers() -> None:
    items = load_benchmark("aime24", path=str(SHARED)) + load_benchmark("amc23", path=str(SHARED))
    assert all(grade_one(f"\\boxed{{{i.answer}}}", i.answer).correct for i in items)


def test_hub_layouts(tmp_path: Path) -> None:
    olympiad = _jsonl(tmp_path / "o.jsonl", [{"id": 7, "question": "Q", "final_answer": ["$\\frac{1}{2}$"]}])
    assert load_benchmark("olympiadbench", path=str(olympiad)) == [BenchmarkItem("7", "Q", "\\frac{1}{2}")]
    gsm8k = _jsonl(tmp_path / "g.jsonl", [{"question": "How many?", "answer": "3 + 4 = 7\nSo 1,207 in all.\n#### 1,207"}])
    assert load_benchmark("gsm8k", path=str(gsm8k)) == [BenchmarkItem("0", "How many?", "1207")]
    amc = _jsonl(tmp_path / "amc.jsonl", [
        {"id": 1, "problem": "old", "answer": 3.0, "url": "https://x/2022_AMC_12A_Problems/Problem_1"},
        {"id": 2, "problem": "new", "answer": 4.0, "url": "https://x/2023_AMC_12A_Problems/Problem_1"},
    ])
    assert [i.id for i in load_benchmark("amc23", path=str(amc))] == ["2"]  # AMC 2022 rows are not AMC 2023


def test_gpqa_layout_shuffles_choices_per_record(tmp_path: Path) -> None:
    rows = [
        {"Record ID": f"rec{i}", "Question": f"Q{i}?", "Correct Answer": "right",
         "Incorrect Answer 1": "w1", "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3"}
        for i in range(8)
    ]
    items = load_benchmark("gpqa-diamond", path=str(_jsonl(tmp_path / "gpqa.jsonl", rows)))
    assert all(i.choices and i.choices["ABCD".index(i.answer)] == "right" for i in items)
    assert len({i.answer for i in items}) > 1  # the correct answer is not always A
    assert items == load_benchmark("gpqa-diamond", path=str(tmp_path / "gpqa.jsonl"))
    prompt = REGISTRY["gpqa-diamond"].render(items[0])
    assert "Q0?" in prompt and "A) " in prompt and "D) " in prompt and "\\boxed{}" in prompt


def test_directory_env_and_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"problem": "P", "answer": "5", "unique_id": "u1"}]), tmp_path / "math500.parquet")
    (tmp_path / "aime24.json").write_text(json.dumps([{"problem": "A", "answer": "9"}]))
    assert load_benchmark("math500", path=str(tmp_path)) == [BenchmarkItem("u1", "P", "5")]
    monkeypatch.setenv("REASONOPS_BENCHMARK_DIR", str(tmp_path))
    assert load_benchmark("aime24") == [BenchmarkItem("0", "A", "9")]


def test_repeated_ids_are_made_unique(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "dup.jsonl", [{"id": 1, "problem": "a", "answer": 1}, {"id": 1, "problem": "b", "answer": 2}])
    assert [i.id for i in load_benchmark("math500", path=str(path))] == ["1", "1-1"]


def test_unknown_benchmark() -> None:
    with pytest.raises(WorkloadError) as err:
        load_benchmark("aime2024")
    assert err.value.reason == "UnknownBenchmark"
    assert "aime24" in err.value.message and "math500" in err.value.message


def test_unavailable_benchmark_names_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("REASONOPS_BENCHMARK_DIR", str(tmp_path))
    with pytest.raises(WorkloadError) as err:
        load_benchmark("gsm8k", cache_dir=str(tmp_path / "cache"))
    assert err.value.reason == "BenchmarkUnavailable"
    assert "openai/gsm8k" in err.value.message and str(tmp_path) in err.value.message
    with pytest.raises(WorkloadError) as err:
        load_benchmark("math500", path=str(tmp_path / "missing.jsonl"))
    assert err.value.reason == "BenchmarkUnavailable" and "missing.jsonl" in err.value.message


def test_malformed_file_reports_the_line(tmp_path: Path) -> None:
    path = tmp_path / "math500.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n{not json\n')
    with pytest.raises(WorkloadError) as err:
        load_benchmark("math500", path=str(path))
    assert err.value.reason == "BenchmarkUnavailable" and "math500.jsonl:2" in err.value.message


def test_the_source_of_what_was_loaded(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "aime24.jsonl"
    path.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answer": "4"}\n')
    items, source = load_benchmark_with_source("aime24", path=str(tmp_path), limit=1)
    assert len(items) == 1 and source["source"] == str(path)
    assert source["contentHash"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    _, full = load_benchmark_with_source("aime24", path=str(path))
    assert full["contentHash"] == source["contentHash"] and full["itemsHash"] != source["itemsHash"]
    _, demo = load_benchmark_with_source("demo")
    assert demo["source"] == "built-in" and demo["contentHash"].startswith("sha256:")
