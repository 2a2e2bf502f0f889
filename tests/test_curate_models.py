"""Difficulty filtering and chain generation over HTTP against the real `vllm serve` (tiny model).

The tiny random model answers almost always wrongly, so these tests assert on counts, recorded solve
rates and teachers, and on resume (a rerun with the same cache sends no new requests), not on accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasonops.api.v1alpha1 import DifficultyStage, GenerateStage, ReasoningDatasetSpec
from reasonops.curate import CurateConfig, main
from reasonops.curate.generate import ModelContext, difficulty_filter, generate_chains
from reasonops.curate.records import Problem, StageReport
from reasonops.errors import WorkloadError
from reasonops.grading import Grader

from vllm_support import requests_served, vllm_server

pytestmark = pytest.mark.slow
SAMPLING = {"maxTokens": 8, "temperature": "0.8", "seed": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from reasonops.tinymodel import build_servable_model

    model_dir = build_servable_model(tmp_path_factory.mktemp("model") / "tiny")
    with vllm_server(model_dir, "tiny") as url:
        yield url


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=1) as g:
        yield g


def pool() -> list[Problem]:
    return [Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i), "pool") for i in range(4)] + [Problem("bare", "No answer?", None, "pool")]


def sampler(url: str) -> dict:
    return {"model": "tiny", "endpoint": {"url": url, "concurrency": 4}}


def test_difficulty_records_solve_rates_and_resumes(server: str, grader: Grader, tmp_path: Path) -> None:
    stage = DifficultyStage.model_validate({"sampler": sampler(server), "attempts": 3, "minSolved": 0, "maxSolved": 3,
                                            "sampling": SAMPLING})
    ctx = ModelContext(system_prompt="Reason.", work_dir=tmp_path, grader=grader)
    before = requests_served(server)
    report = StageReport("coarse", "difficulty")
    kept = difficulty_filter(pool(), stage, "coarse", ctx, report)
    assert requests_served(server) - before == 4 * 3  # one request per attempt; the unanswerable problem is not sent
    assert [p.id for p in kept] == ["p0", "p1", "p2", "p3"] and report.reasons == {"no-reference-answer": 1}
    assert all(p.solve_rates["coarse"] in (0.0, 1 / 3, 2 / 3, 1.0) for p in kept)
    assert sum(report.info["problemsBySolvedCount"].values()) == 4

    after_first = requests_served(server)
    again = difficulty_filter(pool(), stage, "coarse", ctx, StageReport("coarse", "difficulty"))
    assert requests_served(server) == after_first  # everything came from the resume cache
    assert [p.solve_rates for p in again] == [p.solve_rates for p in kept]

    strict = DifficultyStage.model_validate({**stage.model_dump(exclude_none=True), "minSolved": 3})
    hard = StageReport("coarse", "difficulty")
    survivors = difficulty_filter(pool(), strict, "coarse", ctx, hard)  # same cached attempts, narrower window
    always = [p.id for p in kept if p.solve_rates["coarse"] == 1.0]
    assert [p.id for p in survivors] == always
    assert hard.reasons == {"no-reference-answer": 1, **({"too-hard": 4 - len(always)} if len(always) < 4 else {})}


def test_generation_keeps_teacher_labelled_chains(server: str, grader: Grader, tmp_path: Path) -> None:
    stage = GenerateStage.model_validate({
        "teachers": [{"name": "t-one", "sampler": sampler(server)}, {"name": "t-two", "sampler": sampler(server)}],
        "chainsPerProblem": 2, "sampling": SAMPLING, "keepIncorrect": True})
    ctx = ModelContext(system_prompt="Reason.", work_dir=tmp_path, grader=grader)
    report = StageReport("chains", "generate")
    kept = generate_chains(pool(), stage, "chains", ctx, report)
    teachers = report.info["teachers"]
    assert set(teachers) == {"t-one", "t-two"} and all(t["generated"] == 5 * 2 for t in teachers.values())
    # every chain hit the 8-token limit or finished; finished ones are kept with their teacher
    assert sum(t.get("kept", 0) + t.get("truncated", 0) for t in teachers.values()) == 20
    assert all(c.teacher in ("t-one", "t-two") for p in kept for c in p.chains)

    rejecting = GenerateStage.model_validate({**stage.model_dump(exclude_none=True), "keepIncorrect": False})
    strict = StageReport("chains", "generate")
    survivors = generate_chains(pool(), rejecting, "chains", ctx, strict)
    assert all(c.correct for p in survivors for c in p.chains)
    assert strict.reasons.get("no-reference-answer") == 1
    assert len(survivors) + strict.dropped == 5


def test_recipe_over_an_eval_run_endpoint_resumes_after_a_failure(server: str, tmp_path: Path) -> None:
    spec = ReasoningDatasetSpec.model_validate({
        "sources": [{"name": "i", "inline": [{"question": f"What is {i} times 3?", "answer": str(3 * i)} for i in range(3)]}],
        "stages": [
            {"name": "attempts", "difficulty": {"sampler": {"model": "tiny", "evalRun": "my-eval"}, "attempts": 2,
                                               "minSolved": 0, "maxSolved": 2, "sampling": SAMPLING}},
            {"name": "chains", "generate": {"teachers": [{"name": "tiny", "sampler": {"model": "tiny", "evalRun": "my-eval"}}],
                                            "chainsPerProblem": 1, "sampling": SAMPLING}},
        ],
        "output": {"path": "/unused"},
    })
    out = tmp_path / "ds" / "rev"
    config = CurateConfig(spec=spec, output=str(out), endpoints={"my-eval": server}, progress=False)
    before = requests_served(server)
    with pytest.raises(WorkloadError) as err:  # the tiny model gets nothing right: rejection sampling empties it
        main(config)
    assert err.value.reason == "EmptyDataset" and "chains" in err.value.message
    assert requests_served(server) - before == 3 * 2 + 3 * 1
    caches = sorted(p.name for p in (tmp_path / "ds" / ".rev.work").iterdir())
    assert caches == ["attempts.tiny.jsonl", "chains.tiny.jsonl"]
    lines = (tmp_path / "ds" / ".rev.work" / "attempts.tiny.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["request_id"].startswith("i:") for line in lines)

    middle = requests_served(server)
    with pytest.raises(WorkloadError):
        main(config)
    assert requests_served(server) == middle  # the rerun asked for nothing it already had


def test_unresolved_or_unreachable_endpoints_fail_before_work(tmp_path: Path) -> None:
    base = {"sources": [{"name": "i", "inline": [{"question": "Q?", "answer": "1"}]}], "output": {"path": "/unused"}}
    for sampler_spec, endpoints in (({"model": "m", "evalRun": "missing"}, {}),
                                    ({"model": "m", "endpoint": {"url": "http://127.0.0.1:9/v1"}}, {})):
        spec = ReasoningDatasetSpec.model_validate({**base, "stages": [
            {"name": "d", "difficulty": {"sampler": sampler_spec, "attempts": 1, "minSolved": 0, "maxSolved": 1}}]})
        with pytest.raises(WorkloadError) as err:
            main(CurateConfig(spec=spec, output=str(tmp_path / "rev"), endpoints=endpoints, progress=False))
        assert err.value.reason == "EndpointUnreachable"


def test_an_eval_run_sampler_asks_for_the_model_its_server_serves(server: str, tmp_path: Path) -> None:
    """The sampler's `model` is a label for an EvalRun; requests name what the server answers to (the context's
    servedModelNames, resolved by the operator)."""
    spec = ReasoningDatasetSpec.model_validate({
        "sources": [{"name": "i", "inline": [{"question": f"What is {i} plus 1?", "answer": str(i + 1)} for i in range(2)]}],
        "stages": [{"name": "attempts", "difficulty": {"sampler": {"model": "any-label", "evalRun": "my-eval"}, "attempts": 1,
                                                      "minSolved": 0, "maxSolved": 1, "sampling": SAMPLING}}],
        "output": {"path": "/unused"},
    })
    before = requests_served(server)
    config = CurateConfig(spec=spec, output=str(tmp_path / "ds" / "rev"), endpoints={"my-eval": server},
                          served_names={"my-eval": "tiny"}, progress=False)
    with pytest.raises(WorkloadError) as err:  # the attempts were answered; nothing has a chain to keep
        main(config)
    assert err.value.reason == "EmptyDataset" and requests_served(server) - before == 2
    wrong = CurateConfig(spec=spec, output=str(tmp_path / "ds2" / "rev"), endpoints={"my-eval": server}, progress=False)
    with pytest.raises(WorkloadError) as err:  # asking the server for "any-label" fails, and says so
        main(wrong)
    assert err.value.reason != "EmptyDataset"
