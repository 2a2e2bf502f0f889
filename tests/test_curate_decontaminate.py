"""Decontamination against the shared benchmark registry (the built-in demo, and the real sets when present)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reasonops.api.v1alpha1 import DecontaminateStage
from reasonops.benchmarks import BenchmarkItem, demo_items, load_benchmark
from reasonops.curate.decontaminate import BenchmarkIndex, decontaminate, load_items
from reasonops.curate.records import Problem, StageReport
from reasonops.errors import WorkloadError

SHARED_BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
needs_shared = pytest.mark.skipif(not (SHARED_BENCHMARKS / "aime24.jsonl").is_file(), reason="no shared benchmark files")


def problems(*questions: str) -> list[Problem]:
    return [Problem(f"p{i}", q, None, "pool") for i, q in enumerate(questions)]


def run(pool: list[Problem], **stage: object) -> tuple[list[str], StageReport]:
    spec = DecontaminateStage.model_validate(stage)
    report = StageReport("decontaminate", "decontaminate")
    kept = decontaminate(pool, spec, load_items(spec), report)
    return [p.id for p in kept], report


def test_demo_benchmark_items_are_dropped_and_named() -> None:
    demo = demo_items()
    pool = problems(
        demo[0].question,                                    # verbatim
        demo[5].question.upper().replace(" ", "  "),         # case and spacing changed
        "Alice has 3 apples and buys 4 more. How many pears does she have now?",  # same template, other item
        "A completely different problem about the roots of a quadratic equation.",
    )
    kept, report = run(pool, benchmarks=["demo"])
    assert kept == ["p2", "p3"]
    assert report.reasons == {"contaminated": 2}
    assert [d.detail for d in report.drops] == ["demo:demo-0 (100% shared)", "demo:demo-5 (100% shared)"]
    assert report.info["matchedBenchmarks"] == {"demo": 2}


def test_share_counts_both_directions_and_respects_threshold() -> None:
    item = BenchmarkItem("b1", " ".join(f"w{i}" for i in range(30)), "1")
    index = BenchmarkIndex([("bench", item)], n=13)
    embedded = "Solve the following problem and explain every step carefully please. " + item.question
    half = " ".join(f"w{i}" for i in range(15)) + " " + " ".join(f"v{i}" for i in range(15))
    found = index.match([embedded, half, "w0 w1 w2"], threshold=0.5)
    assert set(found) == {0, 2}  # the embedded copy, and a short problem found whole inside the item
    assert found[0].share == 1.0 and found[2].item_id == "b1"
    assert set(index.match([half], threshold=0.1)) == {0}  # 3 of 18 of its 13-grams are shared


def test_short_benchmark_items_match_only_problems_adding_little_to_them() -> None:
    item = BenchmarkItem("short", "Compute $\\dbinom{8}{4}$.", "70")
    index = BenchmarkIndex([("bench", item)], n=13)
    suffixed = "Compute $\\dbinom{8}{4}$. Give your answer in simplest form, as an integer."  # 9 more words
    long_problem = "In a long story about committees " + "and more words " * 10 + "compute dbinom 8 4 here"
    found = index.match([suffixed, long_problem], threshold=0.5)
    assert list(found) == [0] and found[0].item_id == "short"


def test_unknown_benchmark_fails_before_work() -> None:
    with pytest.raises(WorkloadError) as err:
        load_items(DecontaminateStage(benchmarks=["no-such-benchmark"]))
    assert err.value.reason == "UnknownBenchmark"


@needs_shared
def test_real_aime_and_math500_items_are_caught() -> None:
    aime = load_benchmark("aime24", path=str(SHARED_BENCHMARKS))
    math500 = load_benchmark("math500", path=str(SHARED_BENCHMARKS))
    pool = problems(
        aime[3].question,
        "Solve the following problem. " + math500[10].question,
        math500[42].question.replace("$", " $ "),
        "Find all real x with x^2 = 4, and explain why there are exactly two of them in a few lines.",
    )
    kept, report = run(pool, benchmarks=["aime24", "math500", "demo"], benchmarkPath=str(SHARED_BENCHMARKS))
    assert kept == ["p3"]
    details = [d.detail for d in report.drops]
    assert details[0].startswith(f"aime24:{aime[3].id} ") and details[1].startswith(f"math500:{math500[10].id} ")
    assert report.info["benchmarks"] == {"aime24": len(aime), "math500": len(math500), "demo": len(demo_items())}
