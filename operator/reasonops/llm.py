"""Model calls shared by curation and evaluation: an OpenAI-compatible HTTP client and vLLM offline.

Both generators take `GenerationRequest`s and return their `Completion`s by request id. Each sample is
generated on its own (n=1 per call, seed + index as its seed): per-response token counts are then exact
(OpenAI's `usage` only sums over choices), results do not depend on whether a server honours `n`, a
restarted run resumes sample by sample, and vLLM fans `n` out into separate sequences anyway, sharing
the prompt through its prefix cache.

Resume: with a `cache_path`, every finished sample is appended to a JSONL file as it arrives; a later run
with the same cache skips the samples already there. A cached sample is reused only for the same request
(same id, model, messages and sampling parameters).

API keys of endpoints come from Secrets the operator exposes to the pod as environment variables, named
by `api_key_env` (``REASONOPS_API_KEY_<SECRET>_<KEY>``, upper case, other characters as ``_``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol
from urllib.parse import urlparse

from .api import v1alpha1 as api
from .api.common import SecretKeyRef
from .api.v1alpha1 import ModelEndpoint, SamplerModel
from .api import common as reasons
from .errors import WorkloadError

log = logging.getLogger("reasonops.llm")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
DEFAULT_CONCURRENCY = api.ENDPOINT_CONCURRENCY  # the API names each default once
DEFAULT_TIMEOUT = float(api.ENDPOINT_TIMEOUT_SECONDS)
DEFAULT_MAX_RETRIES = api.ENDPOINT_MAX_RETRIES


@dataclass
class GenerationRequest:
    id: str
    messages: list[dict]
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None

    def sample_seed(self, index: int) -> int | None:
        return None if self.seed is None else self.seed + index


@dataclass
class Completion:
    request_id: str
    index: int
    text: str
    finish_reason: str
    completion_tokens: int
    prompt_tokens: int = 0
    cached: bool = field(default=False, compare=False)  # read from the resume cache (not stored in it)


OnResult = Callable[[str, list[Completion]], None]


class Generator(Protocol):
    def generate(self, requests: Iterable[GenerationRequest], *, on_result: OnResult | None = None) -> dict[str, list[Completion]]: ...

    def describe(self) -> dict[str, Any]: ...


# ------------------------------------------------------------------------------------------------
# The resume cache and the bookkeeping both generators share
# ------------------------------------------------------------------------------------------------


def _fingerprint(model: str, request: GenerationRequest) -> str:
    key = [model, request.messages, request.temperature, request.top_p, request.max_tokens, request.seed]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class ResponseCache:
    """An append-only JSONL file of finished samples. A torn last line (a killed pod) is skipped."""

    FSYNC_EVERY = 10.0  # seconds; a flush already survives a killed process, fsync guards a lost node

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: Any = None
        self._last_sync = 0.0
        self._lock = threading.Lock()
        self.unreadable = 0  # lines `load` skipped

    def load(self) -> dict[tuple[str, str], dict[int, Completion]]:
        found: dict[tuple[str, str], dict[int, Completion]] = {}
        if not self.path.exists():
            return found
        unreadable = 0
        with self.path.open("rb") as fh:
            for line in fh:
                try:
                    # surrogatepass: a lone surrogate a server sent (a valid JSON escape) round-trips.
                    row = json.loads(line.decode("utf-8", "surrogatepass"))
                    fingerprint = row.pop("fp")
                    completion = Completion(**row, cached=True)
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    unreadable += 1  # a torn line of a killed pod, or bytes that are not UTF-8: generated again
                    continue
                found.setdefault((completion.request_id, fingerprint), {})[completion.index] = completion
        if unreadable:
            log.warning("%s: skipped %d unreadable cache line(s); their samples are generated again", self.path, unreadable)
        self.unreadable = unreadable
        return found

    def append(self, completion: Completion, fingerprint: str) -> None:
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                torn = self.path.exists() and self.path.stat().st_size > 0 and not self._ends_with_newline()
                self._file = self.path.open("a", encoding="utf-8", errors="surrogatepass")
                if torn:
                    self._file.write("\n")
            row = {**asdict(completion), "fp": fingerprint}
            del row["cached"]
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._file.flush()
            if time.monotonic() - self._last_sync > self.FSYNC_EVERY:
                os.fsync(self._file.fileno())
                self._last_sync = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"


class _Collector:
    """Tracks which samples are missing, records finished ones, and reports finished requests."""

    def __init__(self, model: str, requests: Iterable[GenerationRequest], cache_path: str | Path | None, on_result: OnResult | None) -> None:
        self.requests = {r.id: r for r in requests}
        self.fingerprints = {r.id: _fingerprint(model, r) for r in self.requests.values()}
        self.cache = ResponseCache(cache_path) if cache_path else None
        self.on_result = on_result
        cached = self.cache.load() if self.cache else {}
        self.done: dict[str, dict[int, Completion]] = {
            rid: dict(cached.get((rid, self.fingerprints[rid]), {})) for rid in self.requests
        }
        self.missing = [(r, i) for r in self.requests.values() for i in range(r.n) if i not in self.done[r.id]]
        if self.cache and len(self.missing) < sum(r.n for r in self.requests.values()):
            log.info("resuming from %s: %d samples to generate", self.cache.path, len(self.missing))

    def announce_cached(self) -> None:
        for rid, request in self.requests.items():
            if len(self.done[rid]) == request.n:
                self._report(rid)

    def record(self, completion: Completion) -> None:
        rid = completion.request_id
        self.done[rid][completion.index] = completion
        if self.cache:
            self.cache.append(completion, self.fingerprints[rid])
        if len(self.done[rid]) == self.requests[rid].n:
            self._report(rid)

    def results(self) -> dict[str, list[Completion]]:
        if self.cache:
            self.cache.close()
        return {rid: [samples[i] for i in sorted(samples)] for rid, samples in self.done.items()}

    def _report(self, rid: str) -> None:
        if self.on_result:
            self.on_result(rid, [self.done[rid][i] for i in sorted(self.done[rid])])


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoints
# ------------------------------------------------------------------------------------------------


def api_base(url: str) -> str:
    """The API root: the URL as given, with /v1 added when it names only a host (http://host:8000)."""
    url = url.rstrip("/")
    return url + "/v1" if urlparse(url).path in ("", "/") else url


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def check_endpoint(base_url: str, api_key: str | None = None, timeout: float = 10.0) -> list[str]:
    """The model ids an endpoint serves; WorkloadError(reasons.REASON_ENDPOINT_UNREACHABLE) at once if it does not answer."""
    import httpx

    url = f"{api_base(base_url)}/models"
    try:
        response = httpx.get(url, headers=_headers(api_key), timeout=timeout)
    except httpx.HTTPError as exc:
        raise WorkloadError(reasons.REASON_ENDPOINT_UNREACHABLE, f"cannot reach {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        hint = " (is the URL the API root, e.g. http://host:8000/v1?)" if response.status_code == 404 else ""
        raise WorkloadError(reasons.REASON_ENDPOINT_UNREACHABLE, f"{url} answered HTTP {response.status_code}{hint}: {response.text[:300]}")
    try:
        return [str(m["id"]) for m in response.json()["data"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise WorkloadError(reasons.REASON_ENDPOINT_UNREACHABLE, f"{url} did not return an OpenAI model list: {response.text[:300]}") from exc


def _message_text(message: dict[str, Any]) -> str:
    """The assistant turn; a separate reasoning part (vLLM reasoning parsers, DeepSeek's API) goes first, in think tags."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return f"<think>\n{reasoning}\n</think>\n\n{content}" if reasoning else content


def chat_request_body(model: str, request: GenerationRequest, index: int) -> dict[str, Any]:
    """The /chat/completions body of sample `index` of a request (tests/test_vllm_parity.py checks it
    against vLLM's own request model)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": request.messages,
        "n": 1,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
    }
    seed = request.sample_seed(index)
    if seed is not None:
        body["seed"] = seed
    return body


def offline_sampling(request: GenerationRequest, index: int) -> dict[str, Any]:
    """vllm.SamplingParams' arguments for sample `index` of a request: what the server makes of its chat body."""
    return {"n": 1, "temperature": request.temperature, "top_p": request.top_p, "max_tokens": request.max_tokens,
            "seed": request.sample_seed(index)}


def chat_completion(request: GenerationRequest, index: int, data: dict[str, Any]) -> Completion:
    """The Completion of sample `index` from a /chat/completions response body."""
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    return Completion(
        request_id=request.id,
        index=index,
        text=_message_text(choice.get("message") or {}),
        finish_reason=choice.get("finish_reason") or "stop",
        completion_tokens=int(usage.get("completion_tokens") or 0),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
    )


def _run_coroutine(factory: Callable[[], Any]) -> Any:
    """Run a coroutine to completion from sync code, in a thread of its own when a loop already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


@dataclass
class Endpoint:
    """One replica serving the model: its URL, API key and requests in flight."""

    url: str
    api_key: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY


class OpenAIGenerator:
    """Chat completions from OpenAI-compatible servers, `concurrency` requests in flight per server.

    With several endpoints (replicas of one model), each has its own connection pool and workers, and
    all workers take the next sample from one shared queue: every replica gets requests, a faster one
    gets more, and no single keep-alive connection carries the whole stage.
    """

    def __init__(
        self,
        base_url: str | list[Endpoint],
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        cache_path: str | Path | None = None,
        backoff: float = 1.0,
    ) -> None:
        given = [Endpoint(base_url, api_key, concurrency)] if isinstance(base_url, str) else list(base_url)
        if not given:
            raise ValueError("OpenAIGenerator needs at least one endpoint")
        self.endpoints = [Endpoint(api_base(e.url), e.api_key, e.concurrency) for e in given]
        self.base_url = self.endpoints[0].url
        self.model = model
        self.api_key = self.endpoints[0].api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.cache_path = cache_path
        self.backoff = backoff  # seconds before the first retry; doubled each time, with jitter, capped

    def generate(self, requests: Iterable[GenerationRequest], *, on_result: OnResult | None = None) -> dict[str, list[Completion]]:
        collector = _Collector(self.model, requests, self.cache_path, on_result)
        collector.announce_cached()
        if collector.missing:
            _run_coroutine(lambda: self._generate(collector))
        return collector.results()

    def describe(self) -> dict[str, Any]:
        """What serves the model, as far as the server says (vLLM and reasonops.serve answer /version)."""
        import httpx

        info: dict[str, Any] = {"engine": "openai-compatible", "endpoint": self.base_url, "model": self.model}
        if len(self.endpoints) > 1:
            info["endpoints"] = [e.url for e in self.endpoints]
        root = self.base_url.removesuffix("/v1")
        try:
            models = httpx.get(f"{self.base_url}/models", headers=_headers(self.api_key), timeout=10).json()["data"]
            entry = next((m for m in models if m.get("id") == self.model), {})
            info["engine"] = entry.get("owned_by") or info["engine"]
            info["maxModelLen"] = entry.get("max_model_len")  # vLLM and reasonops.serve list it
            version = httpx.get(f"{root}/version", timeout=10)
            if version.status_code == 200:
                info.update({k: v for k, v in version.json().items() if k in ("version", "dtype", "engine")})
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.debug("no server details from %s: %s", root, exc)
        info["engineVersion"] = info.pop("version", None)
        return info

    async def _generate(self, collector: _Collector) -> None:
        import contextlib

        import httpx

        jobs: Iterator[tuple[GenerationRequest, int]] = iter(collector.missing)
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 30.0))
        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for endpoint in self.endpoints:
                limits = httpx.Limits(max_connections=endpoint.concurrency, max_keepalive_connections=endpoint.concurrency)
                clients.append(await stack.enter_async_context(
                    httpx.AsyncClient(headers=_headers(endpoint.api_key), limits=limits, timeout=timeout)))

            async def worker(client: Any, url: str) -> None:
                for request, index in jobs:  # one shared iterator: each sample is taken by one worker
                    collector.record(await self._sample(client, url, request, index))

            # workers start in turns over the endpoints, so even a short stage reaches every replica
            slots = min(max(e.concurrency for e in self.endpoints), len(collector.missing))
            tasks = [asyncio.create_task(worker(client, endpoint.url))
                     for k in range(slots) for endpoint, client in zip(self.endpoints, clients) if k < endpoint.concurrency]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                task.result()  # re-raise the first failure

    async def _sample(self, client: Any, base_url: str, request: GenerationRequest, index: int) -> Completion:
        data = await self._post(client, base_url, chat_request_body(self.model, request, index), f"{request.id}#{index}")
        return chat_completion(request, index, data)

    async def _post(self, client: Any, base_url: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        import httpx

        url = f"{base_url}/chat/completions"
        failure, unreachable = "", False
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                response = await client.post(url, json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out: worth another try
                failure = f"{type(exc).__name__}: {exc}"
                unreachable = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            else:
                if response.status_code == 200:
                    return response.json()
                if response.status_code not in RETRYABLE_STATUS:
                    raise WorkloadError(
                        reasons.REASON_GENERATION_FAILED, f"{url} rejected request {what}: HTTP {response.status_code}: {response.text[:500]}"
                    )
                failure, unreachable = f"HTTP {response.status_code}: {response.text[:200]}", False
                retry_after = _seconds(response.headers.get("retry-after"))
            if attempt < self.max_retries:
                await asyncio.sleep(retry_after if retry_after is not None else self._delay(attempt))
        reason = "EndpointUnreachable" if unreachable else "GenerationFailed"
        raise WorkloadError(reason, f"{url}: request {what} failed {self.max_retries + 1} times; last: {failure}")

    def _delay(self, attempt: int) -> float:
        return min(60.0, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: use our own backoff


# ------------------------------------------------------------------------------------------------
# vLLM in the pod
# ------------------------------------------------------------------------------------------------


class VLLMGenerator:
    """Offline generation with vLLM (GPU images only; imported when first used).

    Every missing sample of the call is submitted to the engine at once, so its scheduler batches
    continuously over the whole stage (no chunk waits on its longest sequence), and each sample is
    recorded (resume cache) as soon as it finishes. `close()` releases the engine and its GPU memory, so
    the next stage's model can load.
    """

    def __init__(
        self,
        model: str,
        *,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        dtype: str = "auto",
        seed: int = 0,
        cache_path: str | Path | None = None,
    ) -> None:
        self.model = model
        self.engine_args = {
            "model": model,
            "tensor_parallel_size": tensor_parallel_size,
            "max_model_len": max_model_len,
            "dtype": dtype,
            "seed": seed,
        }
        self.cache_path = cache_path
        self._llm: Any = None

    def generate(self, requests: Iterable[GenerationRequest], *, on_result: OnResult | None = None) -> dict[str, list[Completion]]:
        collector = _Collector(self.model, requests, self.cache_path, on_result)
        collector.announce_cached()
        if collector.missing:
            vllm, llm = self._engine()
            tokenizer = llm.get_tokenizer()
            jobs = {
                f"{r.id}#{i}": (
                    r, i,
                    tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True),
                    vllm.SamplingParams(**offline_sampling(r, i)),
                )
                for r, i in collector.missing
            }
            drain(llm.llm_engine, {key: (prompt, params) for key, (_, _, prompt, params) in jobs.items()},
                  lambda key, output: collector.record(_vllm_completion(jobs[key][0], jobs[key][1], output)))
        return collector.results()

    def close(self) -> None:
        """Release the engine (and with it the GPU memory) before another model loads."""
        if self._llm is None:
            return
        import gc

        self._llm = None
        gc.collect()
        try:
            import torch
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # an older vLLM: the collected engine frees its memory on its own
            pass

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"engine": "vllm", "model": self.model, "dtype": self.engine_args["dtype"]}
        try:
            import vllm

            info["engineVersion"] = vllm.__version__
        except ImportError:
            info["engineVersion"] = None
        if self._llm is not None:
            model_config = self._llm.llm_engine.model_config
            info["dtype"] = str(model_config.dtype).removeprefix("torch.")
            info["maxModelLen"] = model_config.max_model_len
        return info

    def _engine(self) -> tuple[Any, Any]:
        try:
            import vllm
        except ImportError as exc:
            raise WorkloadError(
                reasons.REASON_ENGINE_UNAVAILABLE, "vLLM is not installed here (GPU images only); use an endpoint (backend: server)"
            ) from exc
        if self._llm is None:
            self._llm = vllm.LLM(**{k: v for k, v in self.engine_args.items() if v is not None})
        return vllm, self._llm


def drain(engine: Any, jobs: dict[str, tuple[str, Any]], record: Callable[[str, Any], None]) -> None:
    """Submit every job (request id -> (prompt, sampling params)) to a vLLM engine, then step it until all
    are finished, recording each output the step it finishes in."""
    for key, (prompt, params) in jobs.items():
        engine.add_request(key, prompt, params)
    remaining = set(jobs)
    while remaining:
        outputs = engine.step()
        for output in outputs:
            if output.finished and output.request_id in remaining:
                remaining.discard(output.request_id)
                record(output.request_id, output)
        if not outputs and not engine.has_unfinished_requests():
            raise WorkloadError(reasons.REASON_GENERATION_FAILED, f"vLLM finished without {len(remaining)} requests (e.g. {min(remaining)})")


def _vllm_completion(request: GenerationRequest, index: int, output: Any) -> Completion:
    sample = output.outputs[0]
    return Completion(
        request_id=request.id,
        index=index,
        text=sample.text,
        finish_reason=sample.finish_reason or "stop",
        completion_tokens=len(sample.token_ids),
        prompt_tokens=len(output.prompt_token_ids or ()),
    )


# ------------------------------------------------------------------------------------------------
# From the API
# ------------------------------------------------------------------------------------------------


def api_key_env(ref: SecretKeyRef) -> str:
    """The environment variable through which the pod receives the API key held in `ref`."""
    from .contract import api_key_env as env_name  # the operator sets it; one naming rule

    return env_name(ref.name, ref.key)


def make_generator(
    sampler: SamplerModel, *, cache_path: str | Path | None = None, endpoint_override: str | list[str] | None = None,
    model_override: str | None = None,
) -> Generator:
    """A generator for a SamplerModel: its endpoint(s) (or `endpoint_override`, the URL or replica URLs the
    operator resolved for an `evalRun` reference, whose server answers to `model_override`) through HTTP,
    otherwise vLLM in this pod."""
    if endpoint_override:
        urls = [endpoint_override] if isinstance(endpoint_override, str) else list(endpoint_override)
        settings = [sampler.endpoint or ModelEndpoint(url=u) for u in urls]
        endpoints = [(u, s) for u, s in zip(urls, settings)]
    else:
        endpoints = [(e.url, e) for e in (sampler.endpoints or ([sampler.endpoint] if sampler.endpoint else []))]
    if sampler.evalRun and not endpoints:
        raise WorkloadError(reasons.REASON_ENDPOINT_UNREACHABLE, f"the endpoint of EvalRun {sampler.evalRun} was not resolved by the operator")
    if not endpoints:
        return VLLMGenerator(
            sampler.model, tensor_parallel_size=sampler.tensorParallelSize or 1, max_model_len=sampler.maxModelLen, cache_path=cache_path
        )
    replicas = [Endpoint(url, _api_key(settings), settings.concurrency or DEFAULT_CONCURRENCY) for url, settings in endpoints]
    first = endpoints[0][1]
    return OpenAIGenerator(
        replicas,
        model_override or sampler.model,
        timeout=float(first.timeoutSeconds or DEFAULT_TIMEOUT),
        max_retries=DEFAULT_MAX_RETRIES if first.maxRetries is None else first.maxRetries,
        cache_path=cache_path,
    )


def _api_key(endpoint: ModelEndpoint) -> str | None:
    if not endpoint.apiKeySecretRef:
        return None
    variable = api_key_env(endpoint.apiKeySecretRef)
    api_key = os.environ.get(variable)
    if not api_key:
        raise WorkloadError(
            reasons.REASON_API_KEY_MISSING,
            f"{variable} is not set (it carries key {endpoint.apiKeySecretRef.key} of Secret {endpoint.apiKeySecretRef.name})",
        )
    return api_key
