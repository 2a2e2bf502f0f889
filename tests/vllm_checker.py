"""vLLM's own answers for the parity tests, run by the interpreter of the real vLLM's environment (tests/vllm_support.py
starts it, one process per vLLM release for the whole test session): it imports vLLM and nothing of this project.

It reads one JSON question per line on stdin and writes one JSON answer per line on stdout:

- {"check": "about"}: the release ({"version", "file"}).
- {"check": "serve", "argv": ["vllm", "serve", ...], "env": {...}}: the argv through the parser of `vllm serve` (the one
  vllm/entrypoints/cli/serve.py builds), its checks, and `AsyncEngineArgs.from_cli_args`, as the server does at start.
  Every option must be one of the parser's own (argparse would take an abbreviation or a prefix of a renamed flag), and
  every environment variable one vLLM reads (vllm.envs). Answers {"error"} or {"args": the parsed values of the options
  given, "engine": the EngineArgs fields they set and those named in "fields" (unset ones too)}.
- {"check": "request", "endpoint": "chat" | "completion", "body": {...}, "max_model_len": N}: the body through the
  request model the server validates it with; fields it does not declare (vLLM keeps them silently), the values it
  read, the SamplingParams it makes of them, and its check of max_tokens against the served context (HTTP 400).
- {"check": "sampling_params", "kwargs": {...}}: `vllm.SamplingParams(**kwargs)` of the offline engine, its fields.
- {"check": "response", "content": ..., "reasoning": ..., "finish_reason": ..., "prompt_tokens": N,
  "completion_tokens": N}: a /chat/completions response body as vLLM's response models serialize it.
- {"check": "models", "id": ..., "max_model_len": N}: a /v1/models body as vLLM's ModelList serializes it.
- {"check": "context", "config": {...}, "max_model_len": N | null}: the context vLLM's ModelConfig derives for a
  config.json (with --max-model-len N), or its refusal.
- {"check": "engine_kwargs", "kwargs": {...}}: `vllm.LLM(**kwargs)`'s engine arguments, built without loading a model.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def _serve_parser() -> tuple[Any, Any]:
    """The `vllm serve` parser and its check, from the modules vllm/entrypoints/cli/serve.py imports them from.

    The serve module itself is not imported: the GPU release's imports its HTTP stack (orjson and more), which the
    CPU environment lacks. Where make_arg_parser lives changed between releases (launchers/ in 0.32, common/ in 0.33).
    """
    import vllm.entrypoints.cli as cli
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    source = Path(cli.__file__).with_name("serve.py").read_text(encoding="utf-8")
    sources = {alias.name: node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
               for alias in node.names}
    make_arg_parser = getattr(importlib.import_module(sources["make_arg_parser"]), "make_arg_parser")
    validate = getattr(importlib.import_module(sources["validate_parsed_serve_args"]), "validate_parsed_serve_args")
    # as vllm/entrypoints/cli/main.py and ServeSubcommand.subparser_init build it
    parser = FlexibleArgumentParser(prog="vllm")
    serve = make_arg_parser(parser.add_subparsers(dest="subparser").add_parser("serve"))
    return parser, (serve, validate)


_SERVE: tuple[Any, Any] | None = None
# The SamplingParams fields the client sets (reasonops.llm: chat_request_body, offline_sampling).
SAMPLING_FIELDS = ("n", "temperature", "top_p", "max_tokens", "seed")


def _options(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def check_serve(argv: list[str], env: dict[str, str], fields: list[str]) -> dict[str, Any]:
    global _SERVE
    import vllm.envs as envs
    from vllm.engine.arg_utils import AsyncEngineArgs

    if argv[:2] != ["vllm", "serve"]:
        return {"error": f"not a `vllm serve` command: {argv[:2]}"}
    unknown_env = sorted(name for name in env if name not in envs.environment_variables)
    if unknown_env:
        return {"error": f"environment variables vLLM does not read: {unknown_env}"}
    _SERVE = _SERVE or _serve_parser()
    parser, (serve, validate) = _SERVE
    unknown = [o for o in _options(argv) if o not in serve._option_string_actions]
    if unknown:
        return {"error": f"options `vllm serve` does not have: {unknown}"}
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv[1:])
        validate(args)
    except SystemExit:
        return {"error": stderr.getvalue().strip().splitlines()[-1]}
    except (ValueError, TypeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    args.model = args.model_tag  # what ServeSubcommand.cmd does first
    engine = AsyncEngineArgs.from_cli_args(args)
    destinations = {serve._option_string_actions[o].dest for o in _options(argv)} | {"model"}
    return {
        "args": {d: getattr(args, d) for d in sorted(destinations)},
        "engine": {d: getattr(engine, d) for d in sorted(destinations | set(fields)) if hasattr(engine, d)},
    }


def _request_model(endpoint: str) -> Any:
    if endpoint == "chat":
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        return ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    return CompletionRequest


def check_request(endpoint: str, body: dict[str, Any], max_model_len: int) -> dict[str, Any]:
    import pydantic
    from vllm.exceptions import VLLMValidationError

    model = _request_model(endpoint)
    declared = {name for name, field in model.model_fields.items()} | {
        field.alias for field in model.model_fields.values() if field.alias}
    try:
        request = model.model_validate(body)
    except pydantic.ValidationError as exc:
        return {"error": str(exc)}
    params = request.to_sampling_params(request.max_tokens, {})
    try:
        request.build_tok_params(SimpleNamespace(max_model_len=max_model_len))
        refused = None
    except VLLMValidationError as exc:  # the server's HTTP 400
        refused = str(exc)
    return {
        "undeclared": sorted(set(body) - declared),
        "values": {name: _plain(getattr(request, name)) for name in body if name in declared},
        "sampling": {name: getattr(params, name) for name in SAMPLING_FIELDS},
        "refused": refused,
    }


def _plain(value: Any) -> Any:
    """A request field as JSON (messages stay as given)."""
    return json.loads(json.dumps(value, default=lambda v: v.model_dump() if hasattr(v, "model_dump") else str(v)))


def offline_sampling(kwargs: dict[str, Any]) -> dict[str, Any]:
    from vllm import SamplingParams

    params = SamplingParams(**kwargs)
    return {"sampling": {name: getattr(params, name) for name in SAMPLING_FIELDS}}


def chat_response(question: dict[str, Any]) -> dict[str, Any]:
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionResponse,
        ChatCompletionResponseChoice,
        ChatMessage,
    )
    from vllm.entrypoints.serve.engine.protocol import UsageInfo

    prompt, completion = question["prompt_tokens"], question["completion_tokens"]
    message = ChatMessage(role="assistant", content=question["content"], reasoning=question.get("reasoning"))
    response = ChatCompletionResponse(
        model=question["model"],
        choices=[ChatCompletionResponseChoice(index=0, message=message, finish_reason=question["finish_reason"])],
        usage=UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
    )
    return {"body": json.loads(response.model_dump_json())}


def model_list(question: dict[str, Any]) -> dict[str, Any]:
    from vllm.entrypoints.serve.engine.protocol import ModelCard, ModelList

    card = ModelCard(id=question["id"], root=question["id"], max_model_len=question["max_model_len"])
    return {"body": json.loads(ModelList(data=[card]).model_dump_json())}


def check_context(config: dict[str, Any], max_model_len: int | None) -> dict[str, Any]:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.model_executor.models import registry

    # Architectures are inspected in this process, not in a fresh one each (vLLM does that only to keep CUDA
    # uninitialised in the server process; there is no GPU here): seconds instead of minutes for the table.
    registry._run_in_subprocess = lambda function: function()
    with tempfile.TemporaryDirectory() as model:
        (Path(model) / "config.json").write_text(json.dumps(config), encoding="utf-8")
        try:
            model_config = EngineArgs(model=model, skip_tokenizer_init=True, max_model_len=max_model_len).create_model_config()
        except ValueError as exc:  # pydantic's ValidationError is one
            return {"refused": str(exc)}
    return {"max_model_len": model_config.max_model_len}


def check_engine_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        return {"error": f"EngineArgs has no {unknown}"}
    engine = EngineArgs(**kwargs)
    return {"engine": {name: getattr(engine, name) for name in kwargs}}


def answer(question: dict[str, Any]) -> dict[str, Any]:
    check = question["check"]
    if check == "about":
        import vllm

        return {"version": vllm.__version__, "file": vllm.__file__}
    if check == "serve":
        return check_serve(question["argv"], question.get("env") or {}, question.get("fields") or [])
    if check == "request":
        return check_request(question["endpoint"], question["body"], question["max_model_len"])
    if check == "sampling_params":
        return offline_sampling(question["kwargs"])
    if check == "response":
        return chat_response(question)
    if check == "models":
        return model_list(question)
    if check == "context":
        return check_context(question["config"], question.get("max_model_len"))
    if check == "engine_kwargs":
        return check_engine_kwargs(question["kwargs"])
    return {"error": f"unknown check {check!r}"}


def main() -> None:
    # The answers get stdout to themselves: vLLM's logging and any print go to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    global _SERVE
    _SERVE = _serve_parser()  # the slow part of starting, done before the first question arrives
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = answer(json.loads(line))
        except Exception as exc:  # an answer the test shows, not a dead checker
            reply = {"error": f"{type(exc).__name__}: {exc}", "crashed": True}
        answers.write(json.dumps(reply, default=str) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
