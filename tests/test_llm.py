"""The OpenAI-compatible client against the real `vllm serve` (vLLM's CPU backend, one server for the module), and
what vLLM's API answers that the client relies on."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from reasonops.api.common import SecretKeyRef
from reasonops.api.v1alpha1 import SamplerModel
from reasonops.errors import WorkloadError
from reasonops.llm import (
    GenerationRequest,
    OpenAIGenerator,
    VLLMGenerator,
    _message_text,
    api_base,
    api_key_env,
    check_endpoint,
    make_generator,
)
from reasonops.serve import running_server
from reasonops.tinymodel import build_servable_model

from vllm_support import requests_served, vllm_server

CONTEXT = 256  # the model's positions: the context vLLM derives and serves


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_servable_model(tmp_path_factory.mktemp("tiny"), max_positions=CONTEXT)


@pytest.fixture(scope="module")
def server(model: Path) -> Iterator[str]:
    with vllm_server(model, "tiny", max_model_len=None) as base_url:
        yield base_url


def _requests(count: int, **kwargs: object) -> list[GenerationRequest]:
    return [
        GenerationRequest(id=f"q{i}", messages=[{"role": "user", "content": f"What is {i} + {i}?"}], **kwargs)  # type: ignore[arg-type]
        for i in range(count)
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_check_endpoint(server: str) -> None:
    assert check_endpoint(server) == ["tiny"]
    assert check_endpoint(server.removesuffix("/v1")) == ["tiny"]  # a bare host gets /v1
    start = time.monotonic()
    with pytest.raises(WorkloadError) as err:
        check_endpoint(f"http://127.0.0.1:{_closed_port()}/v1")
    assert err.value.reason == "EndpointUnreachable" and time.monotonic() - start < 5


def test_api_base() -> None:
    assert api_base("http://h:8000") == "http://h:8000/v1"
    assert api_base("http://h:8000/v1/") == "http://h:8000/v1"
    assert api_base("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"


def test_generate_concurrently(server: str) -> None:
    before = requests_served(server)
    finished: list[str] = []
    generator = OpenAIGenerator(server, "tiny", concurrency=8)
    results = generator.generate(_requests(12, n=2, max_tokens=6, temperature=0.8, seed=3), on_result=lambda rid, c: finished.append(rid))
    assert sorted(finished) == sorted(results) == sorted(f"q{i}" for i in range(12))
    for rid, completions in results.items():
        assert [c.index for c in completions] == [0, 1]
        assert all(c.request_id == rid and c.finish_reason in ("length", "stop") for c in completions)
        assert all(c.completion_tokens <= 6 and c.prompt_tokens > 0 for c in completions)
    assert requests_served(server) - before == 24  # one request per sample


def test_seeds_reproduce_samples(server: str) -> None:
    generator = OpenAIGenerator(server, "tiny")
    request = _requests(1, n=2, max_tokens=8, temperature=1.0, seed=7)
    first, second = generator.generate(request)["q0"], generator.generate(request)["q0"]
    assert [c.text for c in first] == [c.text for c in second]
    assert first[0].text != first[1].text  # sample i uses seed + i


def test_resume_generates_only_what_is_missing(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache.jsonl"
    requests = _requests(8, max_tokens=5)
    full = OpenAIGenerator(server, "tiny", cache_path=cache).generate(requests)
    lines = cache.read_text().splitlines()
    assert len(lines) == 8
    # A killed run: half the samples made it to the cache, and the last line is torn.
    cache.write_text("\n".join(lines[:4]) + "\n" + lines[4][:20])
    before = requests_served(server)
    reported: list[str] = []
    resumed = OpenAIGenerator(server, "tiny", cache_path=cache).generate(requests, on_result=lambda rid, c: reported.append(rid))
    assert requests_served(server) - before == 4
    assert resumed == full and len(reported) == 8
    readable = []
    for line in cache.read_text().splitlines():
        try:
            readable.append(json.loads(line))
        except json.JSONDecodeError:
            assert line == lines[4][:20]  # only the torn line, and nothing was appended to it
    assert len(readable) == 8

    before = requests_served(server)
    OpenAIGenerator(server, "tiny", cache_path=cache).generate(_requests(8, max_tokens=4))  # other params: not reused
    assert requests_served(server) - before == 8


def test_unreachable_port_fails_fast() -> None:
    generator = OpenAIGenerator(f"http://127.0.0.1:{_closed_port()}/v1", "tiny", max_retries=2, backoff=0.05)
    start = time.monotonic()
    with pytest.raises(WorkloadError) as err:
        generator.generate(_requests(3))
    assert err.value.reason == "EndpointUnreachable" and "3 times" in err.value.message
    assert time.monotonic() - start < 5


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers the first `failures` posts with a transient error, then with a valid completion."""

    statuses: list[int] = []
    hits = 0

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        type(self).hits += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        status = self.statuses.pop(0) if self.statuses else 200
        body = {"error": "busy"} if status != 200 else {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "\\boxed{4}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5},
        }
        data = json.dumps(body).encode()
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def flaky() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Flaky.hits = 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_transient_errors_are_retried(flaky: str) -> None:
    _Flaky.statuses = [503, 429, 502]
    results = OpenAIGenerator(flaky, "m", max_retries=3, backoff=0.01).generate(_requests(1))
    assert _Flaky.hits == 4
    assert results["q0"][0].text == "\\boxed{4}" and results["q0"][0].completion_tokens == 5


def test_permanent_errors_are_not_retried(flaky: str) -> None:
    _Flaky.statuses = [400]
    with pytest.raises(WorkloadError) as err:
        OpenAIGenerator(flaky, "m", max_retries=3, backoff=0.01).generate(_requests(1))
    assert err.value.reason == "GenerationFailed" and "HTTP 400" in err.value.message and _Flaky.hits == 1

    _Flaky.statuses = [500, 500]
    with pytest.raises(WorkloadError) as err:
        OpenAIGenerator(flaky, "m", max_retries=1, backoff=0.01).generate(_requests(1))
    assert err.value.reason == "GenerationFailed" and "HTTP 500" in err.value.message


def test_reasoning_parts_are_kept() -> None:
    assert _message_text({"content": "\\boxed{1}", "reasoning_content": "think"}) == "<think>\nthink\n</think>\n\n\\boxed{1}"
    assert _message_text({"content": None}) == ""


def test_make_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = {"model": "m", "endpoint": {"url": "http://h:8000/v1", "concurrency": 7, "maxRetries": 0}}
    generator = make_generator(SamplerModel.model_validate(endpoint))
    assert isinstance(generator, OpenAIGenerator)
    assert (generator.endpoints[0].concurrency, generator.max_retries, generator.timeout) == (7, 0, 3600.0)
    assert isinstance(make_generator(SamplerModel.model_validate({"model": "m", "evalRun": "e"}), endpoint_override="http://s/v1"), OpenAIGenerator)
    with pytest.raises(WorkloadError, match="EvalRun e"):
        make_generator(SamplerModel.model_validate({"model": "m", "evalRun": "e"}))

    secret = {"model": "m", "endpoint": {"url": "http://h/v1", "apiKeySecretRef": {"name": "openai", "key": "api-key"}}}
    assert api_key_env(SecretKeyRef(name="openai", key="api-key")) == "REASONOPS_API_KEY_OPENAI_API_KEY"
    with pytest.raises(WorkloadError) as err:
        make_generator(SamplerModel.model_validate(secret))
    assert err.value.reason == "ApiKeyMissing" and "REASONOPS_API_KEY_OPENAI_API_KEY" in err.value.message
    monkeypatch.setenv("REASONOPS_API_KEY_OPENAI_API_KEY", "sk-test")
    assert make_generator(SamplerModel.model_validate(secret)).api_key == "sk-test"  # type: ignore[attr-defined]

    offline = make_generator(SamplerModel.model_validate({"model": "/models/x", "tensorParallelSize": 2}))
    assert isinstance(offline, VLLMGenerator) and offline.engine_args["tensor_parallel_size"] == 2


def test_vllm_missing_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    with pytest.raises(WorkloadError) as err:
        VLLMGenerator("/models/x", cache_path=tmp_path / "c.jsonl").generate(_requests(1))
    assert err.value.reason == "EngineUnavailable"


# --- what vLLM's API answers, and what the client makes of it ---------------------------------------------


def _chat(server: str, **body: object) -> httpx.Response:
    payload = {"model": "tiny", "messages": [{"role": "user", "content": "What is 2 + 2?"}], **body}
    return httpx.post(f"{server}/chat/completions", json=payload, timeout=60)


def test_server_chat_completion(server: str) -> None:
    data = _chat(server, n=3, max_tokens=4, temperature=0.9, seed=1).json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert all(c["finish_reason"] in ("stop", "length") for c in data["choices"])
    usage = data["usage"]
    assert 3 <= usage["completion_tokens"] <= 12 and usage["prompt_tokens"] > 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    greedy = [_chat(server, max_tokens=6, temperature=0).json()["choices"][0]["message"]["content"] for _ in range(2)]
    assert greedy[0] == greedy[1]


def test_server_stop_and_length(server: str) -> None:
    sampled = {"max_tokens": 12, "temperature": 1.0, "seed": 5, "ignore_eos": True}
    long = _chat(server, **sampled).json()["choices"][0]
    assert long["finish_reason"] == "length"
    text = long["message"]["content"]
    stop = next(ch for ch in text[len(text) // 2 :] if ch.strip() and ch != "\ufffd")  # a string the same seed produces
    cut = _chat(server, stop=[stop], **sampled).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and stop not in cut["message"]["content"]
    assert text.startswith(cut["message"]["content"]) and len(cut["message"]["content"]) < len(text)


def test_server_models_health_and_errors(server: str) -> None:
    data = httpx.post(f"{server}/completions", json={"model": "tiny", "prompt": ["a", "b"], "n": 2, "max_tokens": 3}, timeout=60).json()
    assert len(data["choices"]) == 4 and data["object"] == "text_completion"
    assert _chat(server, model="other").status_code == 404
    assert _chat(server, n=0).status_code == 400
    assert httpx.get(server.removesuffix("/v1") + "/health").status_code == 200
    (model,) = httpx.get(f"{server}/models").json()["data"]
    assert (model["id"], model["owned_by"], model["max_model_len"]) == ("tiny", "vllm", CONTEXT)
    engine = OpenAIGenerator(server, "tiny").describe()
    assert engine["engine"] == "vllm" and engine["engineVersion"] and engine["maxModelLen"] == CONTEXT


def test_max_tokens_above_the_context_is_refused(server: str) -> None:
    """vLLM answers 400 to max_tokens > max_model_len, whatever the prompt; the client fails at once (no retry):
    the evaluation caps max_tokens to the context before asking (reasonops.limits.request_max_tokens)."""
    refused = _chat(server, max_tokens=CONTEXT + 1)
    assert refused.status_code == 400
    assert f"max_tokens={CONTEXT + 1} cannot be greater than max_model_len={CONTEXT}" in refused.json()["error"]["message"]
    with pytest.raises(WorkloadError) as err:
        OpenAIGenerator(server, "tiny", max_retries=3).generate(_requests(1, max_tokens=CONTEXT + 1))
    assert err.value.reason == "GenerationFailed" and "HTTP 400" in err.value.message and "max_model_len" in err.value.message


def test_answers_are_cut_to_what_the_prompt_leaves(server: str) -> None:
    """prompt + max_tokens beyond the context, max_tokens alone not: vLLM answers, cut to fit (finish_reason length),
    and the client keeps the cut answer as it is."""
    (request,) = _requests(1, max_tokens=CONTEXT, temperature=0.0)
    cut = _chat(server, messages=request.messages, max_tokens=CONTEXT, temperature=0, ignore_eos=True).json()
    assert cut["choices"][0]["finish_reason"] == "length"
    usage = cut["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] == CONTEXT and usage["completion_tokens"] < CONTEXT
    too_long_prompt = _chat(server, messages=[{"role": "user", "content": "2 + 2 " * CONTEXT}], max_tokens=1)
    assert too_long_prompt.status_code == 400  # a prompt beyond the context by itself is refused

    (completion,) = OpenAIGenerator(server, "tiny").generate([request])["q0"]
    assert completion.finish_reason in ("length", "stop") and completion.prompt_tokens == usage["prompt_tokens"]
    assert completion.prompt_tokens + completion.completion_tokens <= CONTEXT


def _limits(server: str) -> dict[str, object]:
    """How a server answers at the edges of its context: status codes, finish reasons, token counts."""
    prompt = [{"role": "user", "content": "What is 2 + 2?"}]
    cut = _chat(server, messages=prompt, max_tokens=CONTEXT, temperature=0, ignore_eos=True)
    refused = _chat(server, messages=prompt, max_tokens=CONTEXT + 1)
    long_prompt = _chat(server, messages=[{"role": "user", "content": "2 + 2 " * CONTEXT}], max_tokens=1)
    usage = cut.json()["usage"]
    return {
        "cut": (cut.status_code, cut.json()["choices"][0]["finish_reason"], usage["prompt_tokens"] + usage["completion_tokens"]),
        "max_tokens above the context": (refused.status_code, "max_model_len" in refused.json()["error"]["message"]),
        "prompt above the context": long_prompt.status_code,
        "unknown model": _chat(server, model="other").status_code,
        "models": [(m["id"], m["max_model_len"]) for m in httpx.get(f"{server}/models").json()["data"]],
    }


def test_the_laptop_server_answers_the_limits_as_vllm_does(server: str, model: Path) -> None:
    """reasonops.serve stays for `reasonops run` and the demo where vLLM cannot be installed (its docstring says
    why): where it answers, it answers as vLLM does."""
    answers = _limits(server)
    assert answers["cut"] == (200, "length", CONTEXT) and answers["max_tokens above the context"] == (400, True)
    assert answers["prompt above the context"] == 400 and answers["models"] == [("tiny", CONTEXT)]
    with running_server(model, served_model_name="tiny") as laptop:
        assert _limits(laptop) == answers
