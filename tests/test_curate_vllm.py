"""In-pod vLLM without vLLM: the whole stage is submitted at once and each sample is recorded as it finishes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reasonops.errors import WorkloadError
from reasonops.llm import GenerationRequest, _Collector, _vllm_completion, drain


@dataclass
class Output:
    request_id: str
    finished: bool
    outputs: list = field(default_factory=list)
    prompt_token_ids: list = field(default_factory=lambda: [1, 2])


@dataclass
class Sample:
    text: str
    finish_reason: str = "stop"
    token_ids: list = field(default_factory=lambda: [7])


class Engine:
    """Finishes requests in an order of its own, a few per step, as a continuously batching scheduler does."""

    def __init__(self, per_step: int = 3, lose: int = 0) -> None:
        self.queue: list[str] = []
        self.added_before_first_step = 0
        self.steps = 0
        self.per_step = per_step
        self.lose = lose

    def add_request(self, request_id: str, prompt: str, params: object) -> None:
        self.queue.append(request_id)

    def step(self) -> list[Output]:
        if self.steps == 0:
            self.added_before_first_step = len(self.queue)
            self.queue = self.queue[self.lose :]
        self.steps += 1
        ordered = sorted(self.queue, reverse=True)
        done, self.queue = ordered[: self.per_step], ordered[self.per_step :]
        running = [Output(q, finished=False) for q in self.queue[:1]]  # unfinished outputs are skipped
        return running + [Output(d, True, [Sample(f"out {d}")]) for d in done]

    def has_unfinished_requests(self) -> bool:
        return bool(self.queue)


def test_the_whole_stage_is_submitted_and_samples_persist_as_they_finish(tmp_path: Path) -> None:
    requests = [GenerationRequest(id=f"q{i}", messages=[{"role": "user", "content": str(i)}], n=2) for i in range(5)]
    collector = _Collector("m", requests, tmp_path / "cache.jsonl", None)
    jobs = {f"{r.id}#{i}": (r, i) for r, i in collector.missing}
    engine = Engine()
    lines_per_step = []

    def record(key: str, output: Output) -> None:
        collector.record(_vllm_completion(*jobs[key], output))
        lines_per_step.append((engine.steps, len((tmp_path / "cache.jsonl").read_text().splitlines())))

    drain(engine, {k: (f"prompt {k}", None) for k in jobs}, record)
    assert engine.added_before_first_step == 10  # not chunks: everything is queued before the first step
    assert lines_per_step[0] == (1, 1) and lines_per_step[-1] == (4, 10)  # on disk the step each one finished
    results = collector.results()
    assert [c.text for c in results["q3"]] == ["out q3#0", "out q3#1"]
    cached = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert {(c["request_id"], c["index"]) for c in cached} == {(f"q{i}", j) for i in range(5) for j in range(2)}


def test_requests_the_engine_drops_fail_clearly() -> None:
    with pytest.raises(WorkloadError) as err:
        drain(Engine(lose=2), {f"k{i}": ("p", None) for i in range(4)}, lambda key, output: None)
    assert err.value.reason == "GenerationFailed" and "2 requests" in err.value.message
