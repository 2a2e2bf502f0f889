"""The EvalRun workload: generate answers to benchmark problems, grade them, score, check the gates.

Protocols (`protocols.py`, each value with its source; docs/protocols.md has the table; per-benchmark
fields of the spec override them):

- ``limo``: LIMO §4.2: one greedy sample per problem, except benchmarks under 50 problems (aime24,
  aime25, amc23): 16 samples at temperature 0.7 and unbiased pass@1; 32,768 new tokens; seed 0; LIMO's
  system prompt; only boxed answers and "the answer is X" count.
- ``skythought``: SkyThought's evaluation code: its per-model system prompts and user templates, its
  per-task prompt templates, temperature 0, top_p 1, seed 41, 32,768 tokens, the last number as a
  fallback answer.
- ``custom``: one greedy sample, 32,768 new tokens, no seed, LIMO's system prompt; set the rest per benchmark.

More than one sample at temperature 0 is collapsed to one, with a note in the summary. Each sample is its
own request, seeded with seed + sample index. Scores: pass@1 is the mean over problems of c/n; unbiased
pass@k for every k up to the samples per problem; maj@k (majority vote over the first k answers, grouped
by equivalence). Every score has its standard error and 95% interval over problems (`stats.py`). An
ungraded sample (a grader timeout) counts as incorrect and is reported. Gates are judged by
`reasonops.gates.judge_gates`, the function the operator uses too.

Provenance (summary.json, and in short in the result): the model's location and revision, the engine, its
version, dtype, tensor parallel size and maximum length, the sampling sent, the chat template's hash,
each benchmark's content hash, the seeds, and how many responses came from the resume cache. It reads
the resource document's `context`: ``endpoint``, ``modelLocation``, ``modelRevision``, ``servedModelName``
and ``baseModel`` (the hub id of a fine-tuned model's base, for SkyThought's per-model prompts); each
may be missing.

Outputs under the revision's output directory:
``responses/<benchmark>.jsonl`` (one line per sample, with its messages and seed), ``summary.json``,
``report.md``, ``report.html`` (the scores with their intervals and pass@k as plots: reasonops.report), and ``generation-cache.jsonl``, where samples are appended as they arrive so that a
restarted pod only generates what is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import statistics
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import __version__, codebench
from ..api.v1alpha1 import BenchmarkSpec, EvalRunSpec, SandboxSpec
from ..contract import InvalidDocument, WorkloadDocument, document_for_checkpoint
from ..benchmark_types import MAX_TOKENS, BenchmarkDef, BenchmarkItem
from ..benchmarks import benchmark_def, load_benchmark, load_benchmark_with_source
from ..api import common as reasons
from ..errors import WorkloadError
from ..gates import judge_gates
from ..limits import model_context, request_max_tokens
from ..grading import STRICT, GradeResult, Grader, majority_correct, pass_at_k
from ..llm import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Completion,
    GenerationRequest,
    Generator,
    OpenAIGenerator,
    VLLMGenerator,
    api_key_env,
    check_endpoint,
)
from ..progress import Reporter
from ..report import REPORT_FILE, write_report_quietly
from .. import objectstore, tracking
from ..tracking import flat_params
from ..local_vllm import running_vllm
from ..serving import ServerOptions
from .protocols import PROTOCOLS, Protocol, protocol, sampling_for
from .stats import estimate

log = logging.getLogger("reasonops.evaluate")

CACHE_FILE = "generation-cache.jsonl"


@dataclass(frozen=True)
class BenchmarkRun:
    """One benchmark with its effective sampling."""

    name: str
    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = MAX_TOKENS
    seed: int | None = None
    path: str | None = None
    limit: int | None = None
    note: str | None = None  # what the protocol changed (n collapsed at temperature 0)
    released_from: str | None = None  # release-date window (code benchmarks: LiveCodeBench's contamination control)
    released_until: str | None = None


@dataclass
class EvalConfig:
    name: str
    output: str
    model: str  # the served model name (server backend), or a model directory or hub id (offline)
    benchmarks: list[BenchmarkRun]
    backend: str = "server"
    endpoint: str | None = None
    api_key_env: str | None = None  # environment variable holding the endpoint's API key
    protocol: str = "limo"
    system_prompt: str | None = None  # None: the protocol's
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    gates: list[dict[str, Any]] = field(default_factory=list)  # {benchmark, minScore, bound} or {benchmark, baseline, minDifference, bound}
    baselines: list[Any] = field(default_factory=list)  # contract.BaselineRef of the relative gates' baselines
    grader_workers: int | None = None
    grade_timeout: float = 5.0
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    engine: str = "vllm"  # offline: vllm, or cpu (vLLM's CPU backend, `vllm serve` in the pod)
    benchmark_cache_dir: str | None = None
    model_location: str | None = None  # from the context: where the model's files are
    model_revision: str | None = None
    model_id: str | None = None  # the hub id that selects SkyThought's per-model prompts
    sandbox: SandboxSpec | None = None  # limits of code benchmarks' executions


@dataclass
class Response:
    benchmark: str
    problem_id: str
    sample: int
    text: str
    finish_reason: str = "stop"
    completion_tokens: int = 0
    prompt_tokens: int = 0
    grade: GradeResult | None = None
    invalid_text: bool = False  # the text held bytes or surrogates that are not UTF-8 (replaced)
    seed: int | None = None
    messages: list[dict] | None = None  # the chat messages sent (the server applies the chat template)
    cached: bool | None = None  # whether it came from the resume cache
    vote_class: int | None = None  # equivalence class among the problem's wrong answers (maj@k)
    execution: dict[str, Any] | None = None  # code benchmarks: the per-test outcomes


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


def benchmark_run(spec: BenchmarkSpec, chosen: Protocol) -> BenchmarkRun:
    """The protocol's sampling for a benchmark, overridden by the fields the spec sets."""
    sampling = sampling_for(spec, benchmark_def(spec.name), chosen)
    return BenchmarkRun(
        name=spec.name, samples=sampling.samples, temperature=sampling.temperature, top_p=sampling.top_p,
        max_tokens=sampling.max_tokens, seed=sampling.seed, path=spec.path, limit=spec.limit, note=sampling.note,
        released_from=spec.releasedFrom, released_until=spec.releasedUntil,
    )


def config_from_resource(doc: WorkloadDocument) -> EvalConfig:
    """The EvalConfig of a resolved EvalRun document (see docs/architecture.md)."""
    spec, context, name = doc.spec, doc.context, doc.metadata.name
    assert isinstance(spec, EvalRunSpec), f"an EvalRun document, not a {doc.kind}"
    endpoint_spec = spec.model.endpoint
    backend = "server" if endpoint_spec else spec.backend
    serving = spec.serving
    model_id = context.baseModel or spec.model.name
    chosen = protocol(spec.protocol, model_id or "", spec.systemPrompt)
    config = EvalConfig(
        name=name,
        output=doc.output,
        model="",
        benchmarks=[benchmark_run(b, chosen) for b in spec.benchmarks],
        backend=backend,
        protocol=spec.protocol,
        system_prompt=spec.systemPrompt,
        concurrency=spec.concurrency or (endpoint_spec and endpoint_spec.concurrency) or DEFAULT_CONCURRENCY,
        gates=[g.to_wire() for g in spec.gates or []],
        baselines=list(context.baselines),
        dtype=serving.dtype,
        tensor_parallel_size=serving.tensorParallelSize,
        max_model_len=serving.maxModelLen,
        engine=serving.engine,
        model_location=context.modelLocation or None,
        model_revision=context.modelRevision or None,
        model_id=model_id,
        sandbox=spec.sandbox,
    )
    if backend == "server":
        config.endpoint = context.endpoint or (endpoint_spec.url if endpoint_spec else None)
        if not config.endpoint:
            raise WorkloadError(reasons.REASON_ENDPOINT_UNREACHABLE, "no endpoint to evaluate: the model is not served yet and spec.model sets none")
        config.model = spec.model.servedModelName or context.servedModelName or name
        if endpoint_spec:
            config.timeout = float(endpoint_spec.timeoutSeconds or DEFAULT_TIMEOUT)
            config.max_retries = DEFAULT_MAX_RETRIES if endpoint_spec.maxRetries is None else endpoint_spec.maxRetries
            if endpoint_spec.apiKeySecretRef:
                config.api_key_env = api_key_env(endpoint_spec.apiKeySecretRef)
    else:
        config.model = context.modelLocation or spec.model.name or ""
        if not config.model:
            raise WorkloadError(reasons.REASON_MODEL_NOT_FOUND, "no model to evaluate: the FineTuneJob has produced no model yet")
    return config


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def run_resource(doc: WorkloadDocument, reporter: Reporter, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One evaluation; with model.checkpoints, of the checkpoint this pod's completion index names
    (contract.document_for_checkpoint), whose result then says which checkpoint it rates."""
    try:
        document, target = document_for_checkpoint(doc, os.environ if env is None else env)
    except InvalidDocument as exc:
        raise WorkloadError(reasons.REASON_INVALID_SPEC, str(exc)) from None
    config = config_from_resource(document)
    with tracking.start(document, checkpoint=target, revision_output=doc.output) as tracker:
        tracker.params(tracking_params(config))
        result = main(config, reporter)
        tracker.params(flat_params(result.get("provenance") or {}, "provenance."))
        tracker.metrics(tracking_metrics(result), target.step if target is not None else 0)
        for name in ("summary.json", "report.md", REPORT_FILE):
            tracker.artifact(Path(document.output) / name)
    if target is not None:
        result["checkpoint"] = {"name": target.name, "step": target.step}
        parent = str(doc.output)
        if "://" not in parent:  # the checkpoint curve of those rated so far, above their directories
            write_report_quietly(parent)
    return result


def tracking_params(config: EvalConfig) -> dict[str, Any]:
    """What a tracker records of an evaluation once: the model, the protocol and each benchmark's sampling."""
    return {"model": config.model, "backend": config.backend, "protocol": config.protocol, "engine": config.engine,
            "benchmarks": {run.name: {"samples": run.samples, "temperature": run.temperature, "top_p": run.top_p,
                                      "max_tokens": run.max_tokens, "seed": run.seed, "limit": run.limit} for run in config.benchmarks}}


def tracking_metrics(result: dict[str, Any]) -> dict[str, float | None]:
    """Every benchmark's score with its 95% interval and standard error, and the mean accuracy, for a tracker
    (logged at the checkpoint's step where checkpoints are evaluated, so they make a curve)."""
    out: dict[str, float | None] = {"accuracy": result.get("accuracy")}
    for entry in result.get("results") or []:
        for key, field_name in (("score", "score"), ("ci_low", "ciLow"), ("ci_high", "ciHigh"), ("stderr", "stderr"),
                                ("truncated", "truncated")):
            value = entry.get(field_name)
            out[f"{entry['benchmark']}/{key}"] = float(value) if value is not None else None
    return out


def main(config: EvalConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the evaluation; write responses, summary.json and report.md; return the small status result."""
    with contextlib.ExitStack() as stack:  # holds the in-pod CPU engine's server (engine: cpu, offline) until the end
        return _evaluate(config, reporter or Reporter(), stack)


def _evaluate(config: EvalConfig, reporter: Reporter, stack: contextlib.ExitStack) -> dict[str, Any]:
    started = _now()
    output, upload = _local_output(config.output)
    output.mkdir(parents=True, exist_ok=True)

    reporter.update(stage="load", message=f"loading {len(config.benchmarks)} benchmark(s)", force=True)
    problems: dict[str, list[BenchmarkItem]] = {}
    sources: dict[str, dict[str, Any]] = {}
    for run in config.benchmarks:
        problems[run.name], sources[run.name] = load_benchmark_with_source(
            run.name, path=run.path, cache_dir=config.benchmark_cache_dir, limit=run.limit,
            released_from=run.released_from, released_until=run.released_until,
        )
    generator = _generator(config, output / CACHE_FILE, stack)
    engine = generator.describe()
    chosen = protocol(config.protocol, config.model_id or config.model, config.system_prompt)
    asked, context = config.benchmarks, _served_context(config, engine)
    config.benchmarks = [_within_context(run, context) for run in asked]
    capped = {a.name: {"requested": a.max_tokens, "sent": run.max_tokens} for a, run in zip(asked, config.benchmarks) if run is not a}

    requests = [
        GenerationRequest(
            id=_request_id(run.name, item.id),
            messages=_messages(chosen, benchmark_def(run.name), item, config.system_prompt),
            n=run.samples,
            temperature=run.temperature,
            top_p=run.top_p,
            max_tokens=run.max_tokens,
            seed=run.seed,
        )
        for run in config.benchmarks
        for item in problems[run.name]
    ]
    answered = 0

    def progress(request_id: str, completions: list) -> None:
        nonlocal answered
        answered += 1
        reporter.update(stage="generate", message=f"{answered}/{len(requests)} problems answered")

    reporter.update(stage="generate", message=f"generating {sum(r.n for r in requests)} responses", force=True)
    completions = generator.generate(requests, on_result=progress)

    reporter.update(stage="grade", message="grading", force=True)
    by_id = {r.id: r for r in requests}
    responses = {
        run.name: [
            _response(run.name, item.id, c, by_id[_request_id(run.name, item.id)])
            for item in problems[run.name]
            for c in completions[_request_id(run.name, item.id)]
        ]
        for run in config.benchmarks
    }
    code_runs = [run for run in config.benchmarks if benchmark_def(run.name).kind == "code"]
    executions = {run.name: codebench.grade_benchmark(config.protocol, problems[run.name], responses[run.name], config.sandbox,
                                                      (run.released_from, run.released_until)) for run in code_runs}
    with Grader(config.grader_workers, config.grade_timeout) as grader:
        for run in config.benchmarks:
            if run.name not in executions:
                grade_responses(grader, benchmark_def(run.name), problems[run.name], responses[run.name], chosen.extraction)

    scores = {run.name: score(problems[run.name], responses[run.name]) for run in config.benchmarks}
    for name, execution in executions.items():
        scores[name]["execution"] = execution
    results = benchmark_results(config.benchmarks, scores, sources)
    for run in config.benchmarks:
        write_responses(output / "responses" / f"{run.name}.jsonl", responses[run.name], problems[run.name])
    provenance = _provenance(config, engine, responses, capped)
    summary = _summary(config, chosen, engine, provenance, scores, sources, [], started)
    (output / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    comparisons = _relative_comparisons(config, output, reporter)
    gates = [g.to_dict() for g in judge_gates(config.gates, results, comparisons)]
    summary.update(gates=gates, gatesPassed=all(g["passed"] for g in gates))
    if comparisons:
        summary["comparisons"] = comparisons
    (output / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    (output / "report.md").write_text(report(summary))
    write_report_quietly(output)  # report.html: the scores and intervals as plots
    if upload:
        upload()
    result: dict[str, Any] = {
        "results": results,
        "accuracy": round(_mean(s["pass@1"] for s in scores.values()), 4),
        "provenance": _short_provenance(provenance),
    }
    if gates:
        result["gates"] = gates
    if comparisons:
        result["comparisons"] = comparisons
    reporter.update(stage="done", message=f"accuracy {result['accuracy']:.4f}", force=True)
    return result


def _relative_comparisons(config: EvalConfig, output: Path, reporter: Reporter) -> list[dict[str, Any]]:
    """The paired comparisons with the baselines that relative gates name (written output against each
    baseline's output, `compare.gate_comparisons`); none without relative gates."""
    pairs = [(g["baseline"], g["benchmark"]) for g in config.gates if g.get("baseline")]
    if not pairs:
        return []
    from .compare import Refused, gate_comparisons, load_output

    reporter.update(stage="compare", message=f"comparing with {len({name for name, _ in pairs})} baseline(s)", force=True)
    try:
        own = load_output(output)
    except Refused as exc:  # this run's own output was just written: unreadable means a broken volume
        raise WorkloadError(reasons.REASON_OUTPUT_UNWRITABLE, str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="reasonops-baselines-") as scratch:
        return gate_comparisons(own, config.baselines, pairs, Path(scratch))


def _response(benchmark: str, problem_id: str, completion: Completion, request: GenerationRequest) -> Response:
    text, invalid = clean_text(completion.text)
    return Response(
        benchmark, problem_id, completion.index, text, completion.finish_reason, completion.completion_tokens,
        completion.prompt_tokens, invalid_text=invalid, seed=request.sample_seed(completion.index),
        messages=request.messages, cached=completion.cached,
    )


def _generator(config: EvalConfig, cache: Path, stack: contextlib.ExitStack) -> Generator:
    if config.backend == "offline" and config.engine == "cpu":
        # Offline on a CPU node: the model in this pod, behind vLLM's CPU backend (`vllm serve`, found as
        # reasonops.local_vllm says) on localhost. Small models: eager mode (no compiler needed, starts sooner).
        # An object-store model is copied to local disk first (vLLM's CPU build reads files).
        if "://" in config.model:
            config.model = str(objectstore.model_copy(config.model))
        _check_local_model(config.model)
        config.dtype = CPU_DTYPE if config.dtype == "auto" else config.dtype  # what provenance records
        options = ServerOptions(config.model, CPU_SERVED_NAME, port=0, host="127.0.0.1", engine="cpu",
                                dtype=config.dtype, max_model_len=config.max_model_len, enforce_eager=True)
        url = stack.enter_context(running_vllm(options, log_path=cache.with_name("vllm-server.log")))
        return OpenAIGenerator(url, CPU_SERVED_NAME, concurrency=config.concurrency, timeout=config.timeout,
                               max_retries=config.max_retries, cache_path=cache)
    if config.backend == "server":
        assert config.endpoint  # set by config_from_resource, or by the caller of main
        api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        served = check_endpoint(config.endpoint, api_key)
        if config.model not in served:
            if len(served) != 1:
                raise WorkloadError(
                    reasons.REASON_MODEL_NOT_FOUND, f"{config.endpoint} does not serve {config.model!r} (it serves {', '.join(served) or 'nothing'}); set spec.model.servedModelName"
                )
            log.info("%s serves one model, %r: evaluating it", config.endpoint, served[0])
            config.model = served[0]
        return OpenAIGenerator(
            config.endpoint, config.model, api_key=api_key, concurrency=config.concurrency,
            timeout=config.timeout, max_retries=config.max_retries, cache_path=cache,
        )
    _check_local_model(config.model)
    return VLLMGenerator(
        config.model, tensor_parallel_size=config.tensor_parallel_size, max_model_len=config.max_model_len,
        dtype=config.dtype, cache_path=cache,
    )


CPU_SERVED_NAME = "model"  # what the in-pod CPU engine's server answers to
CPU_DTYPE = "float32"  # the CPU engine's dtype where the spec says auto: the small models it serves lose nothing


def _served_context(config: EvalConfig, engine: dict[str, Any]) -> int | None:
    """The context the model is served with: as the server lists it, the spec's maxModelLen, or (offline, before
    vLLM loads) what vLLM derives from the model's config.json; None where nobody says."""
    known = engine.get("maxModelLen") or config.max_model_len
    if known or config.backend == "server" or "://" in config.model:
        return known
    try:
        context = model_context(json.loads((Path(config.model) / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None
    return context.default if context else None


def _within_context(run: BenchmarkRun, context: int | None) -> BenchmarkRun:
    """The run with max_tokens capped to the served context (vLLM's server refuses more), saying so in its note."""
    sent = request_max_tokens(run.max_tokens, context)
    if sent == run.max_tokens:
        return run
    note = f"maxTokens {run.max_tokens} capped to the served context of {sent} tokens (an answer gets what its prompt leaves)"
    return replace(run, max_tokens=sent, note="; ".join(n for n in (run.note, note) if n))


def _check_local_model(model: str) -> None:
    """A model given as a path must be a non-empty directory (a hub id is left to vLLM)."""
    local = model.startswith(("/", "./", "../", "~")) or os.path.exists(model)
    path = Path(model).expanduser()
    if local and not (path.is_dir() and any(path.iterdir())):
        raise WorkloadError(reasons.REASON_MODEL_NOT_FOUND, f"model directory {model} is missing or empty")


def _request_id(benchmark: str, problem_id: str) -> str:
    return f"{benchmark}/{problem_id}"


def _messages(chosen: Protocol, definition: BenchmarkDef, item: BenchmarkItem, system_prompt: str | None = None) -> list[dict]:
    """The chat of one problem; code problems follow their code protocol (`system_prompt`: the spec's, if set)."""
    if definition.kind == "code":
        return codebench.messages(chosen.name, item, system_prompt)
    messages = [{"role": "system", "content": chosen.system_prompt}] if chosen.system_prompt else []
    return messages + [{"role": "user", "content": chosen.render(definition, item)}]


def _local_output(output: str) -> tuple[Path, Any]:
    """A local directory to write to, and for an object-store URI a function uploading it at the end.

    With a URI, resume across pods is lost (the cache lives on the pod's disk): give a volume for that.
    """
    if "://" not in output or output.startswith("file://"):
        return Path(output.removeprefix("file://")), None
    staging = Path(tempfile.gettempdir()) / "reasonops-eval" / hashlib.sha256(output.encode()).hexdigest()[:16]

    def upload() -> None:
        import fsspec

        fs, root = fsspec.core.url_to_fs(output)
        fs.put(str(staging) + "/", root, recursive=True)

    return staging, upload


# ------------------------------------------------------------------------------------------------
# Provenance
# ------------------------------------------------------------------------------------------------


def chat_template_hash(model_dir: str | None) -> str | None:
    """sha256 of the chat template a model directory ships (chat_template.jinja, else tokenizer_config.json's)."""
    if not model_dir or "://" in model_dir:
        return None
    directory = Path(model_dir)
    try:
        jinja = directory / "chat_template.jinja"
        if jinja.is_file():
            return "sha256:" + hashlib.sha256(jinja.read_bytes()).hexdigest()
        config = directory / "tokenizer_config.json"
        if config.is_file():
            template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
            if template:
                return "sha256:" + hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    except (OSError, ValueError) as exc:
        log.info("no chat template hash for %s: %s", model_dir, exc)
    return None


def _generation_defaults(model_dir: str | None) -> dict[str, Any] | None:
    """The model's generation_config.json sampling defaults: vLLM applies them to parameters a request leaves unset."""
    if not model_dir or "://" in model_dir:
        return None
    try:
        config = json.loads((Path(model_dir) / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
    return {k: config[k] for k in keys if k in config} or None


def _provenance(config: EvalConfig, engine: dict[str, Any], responses: dict[str, list[Response]],
                capped: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    model_dir = config.model_location or (config.model if config.backend == "offline" else None)
    return {
        "model": config.model,
        "modelLocation": config.model_location or (config.model if config.backend == "offline" else None),
        "modelRevision": config.model_revision,
        "endpoint": config.endpoint,
        "engine": engine.get("engine"),
        "engineVersion": engine.get("engineVersion"),
        "dtype": engine.get("dtype") or config.dtype,
        "tensorParallelSize": config.tensor_parallel_size,
        "maxModelLen": engine.get("maxModelLen") or config.max_model_len,
        "maxTokensCapped": capped or None,  # benchmark -> the max_tokens asked and sent (the served context)
        "chatTemplateHash": chat_template_hash(model_dir),
        "generationDefaults": _generation_defaults(model_dir),
        "responses": sum(len(r) for r in responses.values()),
        "cachedResponses": sum(1 for rs in responses.values() for r in rs if r.cached),
        "reasonopsVersion": __version__,
    }


def _short_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """What the status result carries (the termination message is small): no endpoint, no defaults."""
    keys = ("modelLocation", "modelRevision", "engine", "engineVersion", "dtype", "tensorParallelSize", "maxModelLen",
            "maxTokensCapped", "chatTemplateHash", "cachedResponses")
    return {k: provenance[k] for k in keys if provenance.get(k) is not None}


# ------------------------------------------------------------------------------------------------
# Grading and scores
# ------------------------------------------------------------------------------------------------


def grade_responses(
    grader: Grader, definition: BenchmarkDef, items: Sequence[BenchmarkItem], responses: list[Response], extraction: str = STRICT
) -> None:
    gold = {item.id: item.answer for item in items}
    grades = grader.grade(((r.text, gold[r.problem_id], definition.kind) for r in responses), extraction)
    for response, grade in zip(responses, grades):
        response.grade = grade
    # maj@k groups a problem's wrong answers by equivalence (the right ones are all the gold answer's group).
    wrong: dict[str, list[Response]] = {}
    for r in responses:
        if r.grade and r.grade.extracted is not None and not r.grade.correct:
            wrong.setdefault(r.problem_id, []).append(r)
    groups = [rs for rs in wrong.values() if len(rs) > 1]
    if definition.kind == "math" and groups:
        answers = [[r.grade.extracted for r in rs] for rs in groups]  # type: ignore[union-attr]  # filtered above
        for rs, classes in zip(groups, grader.equivalence_classes(answers)):  # type: ignore[arg-type]
            for r, number in zip(rs, classes):
                r.vote_class = number


def _percentile(values: Sequence[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else 0


def score(items: Sequence[BenchmarkItem], responses: Sequence[Response]) -> dict[str, Any]:
    """The metrics of one benchmark over the problems that have responses, each with its error bars.

    pass@1 is the mean over problems of c/n (equal to the mean over samples when every problem has n).
    """
    by_problem: dict[str, list[Response]] = {}
    for response in responses:
        by_problem.setdefault(response.problem_id, []).append(response)
    groups = [sorted(by_problem[item.id], key=lambda r: r.sample) for item in items if item.id in by_problem]
    if not groups:
        raise WorkloadError(reasons.REASON_INVALID_RESPONSES, "no responses to score")
    samples = min(len(g) for g in groups)
    grades = [[r.grade for r in g] for g in groups]
    correct = [sum(1 for grade in g if grade and grade.correct) for g in grades]
    flat = [r for g in groups for r in g]
    tokens = [r.completion_tokens for r in flat]
    pass1 = estimate([c / len(g) for g, c in zip(groups, correct)])
    pass_k = {k: estimate([pass_at_k(len(g), c, k) for g, c in zip(groups, correct)]) for k in range(1, samples + 1)}
    classes = [[r.vote_class for r in g] for g in groups]
    maj_k = {k: estimate([float(majority_correct(g, k, c)) for g, c in zip(grades, classes)]) for k in range(1, samples + 1)}  # type: ignore[arg-type]
    return {
        "problems": len(groups),
        "samples": samples,
        "responses": len(flat),
        "pass@1": pass1.score,
        "stderr": pass1.stderr,
        "ci95": [pass1.low, pass1.high],
        "pass@k": {str(k): e.score for k, e in pass_k.items()},
        "pass@kStderr": {str(k): e.stderr for k, e in pass_k.items()},
        "maj@k": {str(k): e.score for k, e in maj_k.items()},
        "maj@kStderr": {str(k): e.stderr for k, e in maj_k.items()},
        "tokens": {"mean": _mean(tokens), "p50": _percentile(tokens, 0.5), "p95": _percentile(tokens, 0.95)},
        "truncated": _mean(r.finish_reason == "length" for r in flat),
        "noAnswer": _mean(r.grade is not None and r.grade.extracted is None for r in flat),
        "ungraded": sum(1 for r in flat if r.grade is None or r.grade.correct is None),
        "invalidText": sum(1 for r in flat if r.invalid_text),
    }


def _mean(values: Iterable[float | bool | int]) -> float:
    values = list(values)
    return float(statistics.fmean(values)) if values else 0.0


def benchmark_results(
    runs: Sequence[BenchmarkRun], scores: dict[str, dict[str, Any]], sources: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The status results (BenchmarkResult): scores as 4-decimal strings, with error bars and the content hash."""
    out = []
    for run in runs:
        s = scores[run.name]
        entry = {
            "benchmark": run.name,
            "score": f"{s['pass@1']:.4f}",
            "stderr": f"{s['stderr']:.4f}",
            "ciLow": f"{s['ci95'][0]:.4f}",
            "ciHigh": f"{s['ci95'][1]:.4f}",
            "problems": s["problems"],
            "samples": s["samples"],
            "truncated": f"{s['truncated']:.4f}",
        }
        if sources.get(run.name, {}).get("contentHash"):
            # The first 16 hex digits: the termination message is small; summary.json has the whole hash.
            entry["contentHash"] = sources[run.name]["contentHash"][: len("sha256:") + 16]
        out.append(entry)
    return out


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------


def clean_text(text: str) -> tuple[str, bool]:
    """text with lone surrogates (valid JSON escapes, not valid UTF-8) replaced by U+FFFD; whether any were."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), True


def write_responses(path: Path, responses: Sequence[Response], items: Sequence[BenchmarkItem]) -> None:
    """The graded responses as JSONL, written to a temporary file that replaces `path` only when complete."""
    gold = {item.id: item.answer for item in items}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for r in responses:
                grade = r.grade or GradeResult(None, None, "not graded")
                row = {
                    "benchmark": r.benchmark, "id": r.problem_id, "sample": r.sample, "seed": r.seed, "messages": r.messages,
                    "response": r.text, "extracted": grade.extracted, "gold": gold[r.problem_id], "correct": grade.correct,
                    "reason": grade.reason, "completion_tokens": r.completion_tokens, "prompt_tokens": r.prompt_tokens,
                    "finish_reason": r.finish_reason, "cached": r.cached, "execution": r.execution,
                }
                fh.write(json.dumps({k: v for k, v in row.items() if v is not None or k in ("correct", "extracted")}, ensure_ascii=False) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_responses(path: str | Path, benchmark: str) -> list[Response]:
    """Responses from a JSONL file with at least "id" and "response" per line (as written by an EvalRun).

    Text that is not valid UTF-8 (bytes, or lone surrogates as JSON escapes) is kept with U+FFFD in their
    place, and counted: `Response.invalid_text` is set and the score reports how many.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise WorkloadError(reasons.REASON_INVALID_RESPONSES, f"cannot read {path}: {exc}") from exc
    responses: list[Response] = []
    samples: dict[str, int] = {}
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line, invalid = raw.decode("utf-8"), False
        except UnicodeDecodeError:
            line, invalid = raw.decode("utf-8", "replace"), True
        try:
            row = json.loads(line)
            problem_id, text = str(row["id"]), row["response"]
            if not isinstance(text, str):
                raise TypeError("response is not a string")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise WorkloadError(reasons.REASON_INVALID_RESPONSES, f"{path}:{number}: expected a JSON object with id and response ({exc})") from exc
        text, surrogates = clean_text(text)
        try:
            sample = int(row.get("sample", samples.get(problem_id, 0)))
            tokens = int(row.get("completion_tokens") or 0), int(row.get("prompt_tokens") or 0)
        except (TypeError, ValueError) as exc:
            raise WorkloadError(reasons.REASON_INVALID_RESPONSES, f"{path}:{number}: sample and token counts must be integers ({exc})") from exc
        samples[problem_id] = sample + 1
        responses.append(Response(
            benchmark, problem_id, sample, text, str(row.get("finish_reason") or "stop"), *tokens,
            invalid_text=invalid or surrogates,
        ))
    bad = sum(r.invalid_text for r in responses)
    if bad:
        log.warning("%s: %d response(s) held text that is not valid UTF-8 (replaced by U+FFFD)", path, bad)
    if not responses:
        raise WorkloadError(reasons.REASON_INVALID_RESPONSES, f"{path} holds no responses")
    return responses


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _summary(
    config: EvalConfig, chosen: Protocol, engine: dict[str, Any], provenance: dict[str, Any], scores: dict[str, dict[str, Any]],
    sources: dict[str, dict[str, Any]], gates: list[dict[str, Any]], started: str,
) -> dict[str, Any]:
    return {
        "name": config.name,
        "model": config.model,
        "backend": config.backend,
        "engine": engine,
        "protocol": config.protocol,
        "systemPrompt": chosen.system_prompt,
        "extraction": chosen.extraction,
        "reasonopsVersion": __version__,
        "startTime": started,
        "completionTime": _now(),
        "provenance": provenance,
        "benchmarks": [
            {
                "name": run.name,
                "kind": benchmark_def(run.name).kind,
                **sources[run.name],
                # What each request sent: n=1 per sample, seed + sample index (None: no seed sent).
                "sampling": {"samples": run.samples, "temperature": run.temperature, "topP": run.top_p,
                             "maxTokens": run.max_tokens, "seed": run.seed,
                             "seeds": None if run.seed is None else [run.seed + i for i in range(run.samples)],
                             **({"note": run.note} if run.note else {})},
                "scores": scores[run.name],
            }
            for run in config.benchmarks
        ],
        "accuracy": _mean(s["pass@1"] for s in scores.values()),
        "gates": gates,
        "gatesPassed": all(g["passed"] for g in gates),
    }


def _gate_minimum(gate: dict[str, Any]) -> str:
    if gate.get("baseline"):
        return f"difference to {gate['baseline']} ≥ {gate['minDifference']}"
    return str(gate.get("minScore"))


def report(summary: dict[str, Any]) -> str:
    """A Markdown report of a summary."""
    engine = summary["engine"]
    lines = [
        f"# Evaluation {summary['name']}",
        "",
        f"Model `{summary['model']}` via {engine.get('engine')} {engine.get('engineVersion') or ''} "
        f"(dtype {engine.get('dtype') or 'unknown'}), protocol {summary['protocol']}, reasonops {summary['reasonopsVersion']}.",
        "",
        "| benchmark | problems | samples | temp | top_p | max tokens | seed | pass@1 ± SE | 95% interval | pass@n | maj@n | truncated | no answer | tokens mean / p50 / p95 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in summary["benchmarks"]:
        s, p = b["scores"], b["sampling"]
        n = str(s["samples"])
        lines.append(
            f"| {b['name']} | {s['problems']} | {n} | {p['temperature']} | {p['topP']} | {p['maxTokens']} | {p['seed']} "
            f"| {s['pass@1']:.4f} ± {s['stderr']:.4f} | [{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}] "
            f"| {s['pass@k'][n]:.4f} | {s['maj@k'][n]:.4f} | {s['truncated']:.2%} | {s['noAnswer']:.2%} "
            f"| {s['tokens']['mean']:.0f} / {s['tokens']['p50']} / {s['tokens']['p95']} |"
        )
    notes = [f"- {b['name']}: {b['sampling']['note']}" for b in summary["benchmarks"] if b["sampling"].get("note")]
    lines += ["", f"Mean pass@1: **{summary['accuracy']:.4f}**", "", *notes, *([""] if notes else [])]
    if summary["gates"]:
        lines += ["| gate | minimum | bound | compared | passed |", "|---|---|---|---|---|"]
        lines += [f"| {g['benchmark']} | {_gate_minimum(g)} | {g['bound']} | {g.get('score') or g.get('reason')} | {'yes' if g['passed'] else 'no'} |"
                  for g in summary["gates"]]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# `reasonops grade`
# ------------------------------------------------------------------------------------------------


def add_grade_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `reasonops grade`."""
    parser.add_argument("--benchmark", required=True, help="benchmark of the registry")
    parser.add_argument("--responses", required=True, help="JSONL with id and response per line (e.g. responses/NAME.jsonl)")
    parser.add_argument("--path", help="benchmark file or directory instead of the hub")
    parser.add_argument("--workers", type=int, default=None, help="grader processes (default: CPU count)")
    parser.add_argument("--output", help="also write the graded responses here (JSONL)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="limo", help="whose answer extraction to use (default limo)")


def grade_main(argv: list[str] | None = None) -> int:
    """`reasonops grade --benchmark NAME --responses FILE [--path BENCH_FILE]`: score a responses file offline."""
    parser = argparse.ArgumentParser(prog="reasonops grade", description="Grade a responses file against a benchmark.")
    add_grade_arguments(parser)
    return grade_command(parser.parse_args(argv))


def grade_command(args: argparse.Namespace) -> int:
    definition = benchmark_def(args.benchmark)
    items = load_benchmark(args.benchmark, path=args.path)
    responses = read_responses(args.responses, args.benchmark)
    known = {item.id for item in items}
    unknown = sorted({r.problem_id for r in responses} - known)
    if unknown:
        raise WorkloadError(reasons.REASON_INVALID_RESPONSES, f"{args.responses}: ids not in {args.benchmark}: {', '.join(unknown[:5])}")
    if definition.kind == "code":
        codebench.grade_benchmark(args.protocol or "custom", items, responses)
    else:
        with Grader(args.workers) as grader:
            grade_responses(grader, definition, items, responses, protocol(args.protocol).extraction)
    if args.output:
        write_responses(Path(args.output), responses, items)
    print(json.dumps({"benchmark": args.benchmark, **score(items, responses)}, indent=2))
    return 0
