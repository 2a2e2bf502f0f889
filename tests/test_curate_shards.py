"""Model stages on many pods and many replicas: deterministic shards, per-shard resume, merge; spread requests.

Two real `vllm serve` processes (the same tiny random model) stand in for the replicas of a served
model; the pods of an Indexed Job are `main` calls with their shard index, as the runner makes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reasonops.api.v1alpha1 import ReasoningDatasetSpec, SamplerModel
from reasonops.curate import CurateConfig, main
from reasonops.curate.sharding import Exchange, Shard, segment
from reasonops.errors import WorkloadError
from reasonops.llm import GenerationRequest, make_generator
from reasonops.progress import Reporter

from vllm_support import requests_served as served, vllm_server

pytestmark = pytest.mark.slow
SAMPLING = {"maxTokens": 8, "temperature": "0.8", "seed": 1}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):
    from reasonops.tinymodel import build_servable_model

    model_dir = build_servable_model(tmp_path_factory.mktemp("model") / "tiny")
    first, second = sorted(os.sched_getaffinity(0))[:2]  # one core each: replicas of equal speed, as in a cluster
    with vllm_server(model_dir, "tiny", cpus=str(first)) as a, vllm_server(model_dir, "tiny", cpus=str(second)) as b:
        yield [a, b]


def test_requests_are_spread_over_replicas(servers: list[str]) -> None:
    before = [served(u) for u in servers]
    generator = make_generator(SamplerModel.model_validate({"model": "tiny", "endpoints": [{"url": u, "concurrency": 2} for u in servers]}))
    results = generator.generate([GenerationRequest(id=f"q{i}", messages=[{"role": "user", "content": f"{i} + {i}?"}],
                                                    n=2, max_tokens=4) for i in range(12)])
    assert sorted(results) == sorted(f"q{i}" for i in range(12)) and all(len(c) == 2 for c in results.values())
    sent = [served(u) - b for u, b in zip(servers, before)]
    # Both replicas served: each endpoint's two workers take a sample at the start, whatever the speeds (workers start
    # in turns over the endpoints); after that a faster replica takes more (in CI, under load: [2, 22]).
    assert sum(sent) == 24 and min(sent) >= 2, sent
    # an EvalRun's replicas resolved by the operator as a list of URLs
    before = [served(u) for u in servers]
    make_generator(SamplerModel.model_validate({"model": "tiny", "evalRun": "e"}), endpoint_override=servers).generate(
        [GenerationRequest(id=f"r{i}", messages=[{"role": "user", "content": "hi"}], max_tokens=2) for i in range(8)])
    assert all(served(u) > b for u, b in zip(servers, before))


def spec(servers: list[str]) -> ReasoningDatasetSpec:
    from reasonops.benchmarks import load_benchmark

    sampler = {"model": "tiny", "endpoints": [{"url": u, "concurrency": 2} for u in servers]}
    rows = [{"question": f"What is {i} times {i % 7 + 2}?", "answer": str(i * (i % 7 + 2)),
             "solution": f"It is \\boxed{{{i * (i % 7 + 2)}}}."} for i in range(20)]
    rows += [{"question": item.question, "answer": item.answer, "solution": f"\\boxed{{{item.answer}}}"}
             for item in load_benchmark("demo")[:4]]  # dropped by the decontaminate stage inside the shards
    return ReasoningDatasetSpec.model_validate({
        "sources": [{"name": "i", "inline": rows}],
        "stages": [
            {"name": "dedupe", "dedupe": {}},
            {"name": "attempts", "difficulty": {"sampler": sampler, "attempts": 2, "minSolved": 0, "maxSolved": 2,
                                               "sampling": SAMPLING}},
            {"name": "clean", "decontaminate": {"benchmarks": ["demo"]}},
            {"name": "score", "score": {}},
            {"name": "top", "select": {"size": 10}},
        ],
        "output": {"path": "/unused"},
    })


def run(servers: list[str], out: Path, shard: Shard) -> dict:
    return main(CurateConfig(spec=spec(servers), output=str(out), shard=shard, progress=False))


def test_the_per_problem_segment_starts_at_the_first_model_stage(servers: list[str]) -> None:
    stages = spec(servers).stages
    assert segment(stages) == (1, 4)  # difficulty, decontaminate, score; select runs on the merged pool


def test_sharded_run_equals_one_pod_and_resumes_per_shard(servers: list[str], tmp_path: Path) -> None:
    single = run(servers, tmp_path / "one" / "rev", Shard(0, 1))
    total = sum(served(u) for u in servers)

    out = tmp_path / "three" / "rev"
    shards = out.parent / "rev.shards"
    results = [run(servers, out, Shard(i, 3)) for i in (1, 2)]
    assert results == [{"shard": i, "shards": 3, "location": str(out)} for i in (1, 2)] and not out.exists()
    assert sorted(p.name for p in shards.iterdir()) == ["1-of-3", "2-of-3"]
    published = [json.loads((shards / f"{i}-of-3" / "_DONE").read_text())["rows"] for i in (1, 2)]
    assert all(n > 0 for n in published)
    sent = sum(served(u) for u in servers) - total

    # shard 2's pod is replaced before it published: it resumes from its own cache, asking for nothing new
    (shards / "2-of-3" / "_DONE").unlink()
    before = sum(served(u) for u in servers)
    assert run(servers, out, Shard(2, 3))["shard"] == 2
    assert sum(served(u) for u in servers) == before
    caches = sorted(p.name for p in (out.parent / ".rev.work").iterdir())
    assert caches == [f"attempts.tiny.shard-{i}-of-3.jsonl" for i in (1, 2)]

    merged = run(servers, out, Shard(0, 3))  # pod 0: its shard, then the merge and the global stages
    assert merged["contentHash"] == single["contentHash"] and merged["stageCounts"] == single["stageCounts"]
    assert {c["stage"]: c["kept"] for c in merged["stageCounts"]}["clean"] == 20, merged["stageCounts"]
    assert sum(served(u) for u in servers) - total == 2 * 24  # each sample once: 2 attempts per problem
    assert 0 < sent < 2 * 24  # shards 1 and 2 did only their part of it
    assert not shards.exists() and (out / "_COMPLETE").exists()
    dropped = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    single_dropped = [json.loads(line) for line in (tmp_path / "one" / "rev" / "dropped.jsonl").read_text().splitlines()]
    assert sorted(map(json.dumps, dropped)) == sorted(map(json.dumps, single_dropped))


def test_pod_zero_waits_a_bounded_time_for_missing_shards(tmp_path: Path) -> None:
    exchange = Exchange(str(tmp_path / "x.shards"), Shard(0, 4))
    with pytest.raises(WorkloadError) as err:
        exchange.wait(Reporter(min_interval=0), timeout=0)
    assert err.value.reason == "ShardsIncomplete" and "shards 0, 1, 2, 3 of 4" in err.value.message


def test_shard_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REASONOPS_SHARDS", "4")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert Shard.from_env() == Shard(3, 4)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "4")
    with pytest.raises(WorkloadError) as err:
        Shard.from_env()
    assert err.value.reason == "InvalidSpec"


def test_a_sharded_dataset_is_an_indexed_job_with_the_shard_count() -> None:
    import yaml

    from reasonops import contract as k
    from reasonops.api.v1alpha1 import ReasoningDataset
    from reasonops.controller import builders
    from reasonops.controller.settings import Settings

    body = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "reasoningdataset.yaml").read_text())
    body["metadata"].update(namespace="team", uid="uid-1")
    for shards, indexed in ((None, False), (4, True)):
        body["spec"]["shards"] = shards
        ds = k.with_defaults(ReasoningDataset.model_validate(body))
        document = k.build_document(ds, revision="rev1", output=k.dataset_output(ds, "rev1"))
        job = builders.build_dataset_children(body, ds, document, Settings(), suspend=False)[1]
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        if indexed:
            assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 4, 4)
            assert env["REASONOPS_SHARDS"] == "4"
        else:
            assert "completionMode" not in job["spec"] and "REASONOPS_SHARDS" not in env
