"""The EvalRun workload: generate answers to benchmark problems, grade them, score, check the gates.

Protocols (per-benchmark fields of the spec override them):

- ``limo``: pass@1 as in the LIMO paper: aime24, aime25 and amc23 get 4 samples at temperature 0.6,
  top_p 0.95; every other benchmark one greedy sample; 32,768 new tokens; seed 0.
- ``skythought``: one sample at temperature 0, top_p 1, 32,768 new tokens, seed 41 (SkyThought's CLI).
- ``custom``: one greedy sample, 32,768 new tokens, no seed; set the rest per benchmark.

The system prompt is LIMO's unless the spec sets one. Each sample is its own request, seeded with
seed + sample index. Scores: pass@1 is the mean correctness over all samples; unbiased pass@k for every
k up to the samples per problem; maj@k (majority vote over the first k answers). An ungraded sample
(a grader timeout) counts as incorrect and is reported.

Outputs under the revision's output directory:
``responses/<benchmark>.jsonl`` (one line per sample), ``summary.json`` (engine, sampling, scores, gates),
``report.md``, and ``generation-cache.jsonl``, where samples are appended as they arrive so that a
restarted pod only generates what is missing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import __version__, codebench
from ..api.v1alpha1 import LIMO_SYSTEM_PROMPT, BenchmarkSpec, EvalRunSpec, SandboxSpec
from ..benchmarks import GREEDY, BenchmarkDef, BenchmarkItem, benchmark_def, load_benchmark
from ..errors import WorkloadError
from ..grading import GradeResult, Grader, majority_correct, pass_at_k
from ..llm import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    GenerationRequest,
    Generator,
    OpenAIGenerator,
    VLLMGenerator,
    api_key_env,
    check_endpoint,
)
from ..progress import Reporter

log = logging.getLogger("reasonops.evaluate")

MAX_TOKENS = 32768
PROTOCOL_SEEDS = {"limo": 0, "skythought": 41, "livecodebench": None, "custom": None}
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
    system_prompt: str = LIMO_SYSTEM_PROMPT
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    gates: list[tuple[str, str]] = field(default_factory=list)  # (benchmark, minimum pass@1 as a decimal)
    grader_workers: int | None = None
    grade_timeout: float = 5.0
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    max_model_len: int | None = None
    benchmark_cache_dir: str | None = None
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
    execution: dict[str, Any] | None = None  # code benchmarks: the per-test outcomes


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


def benchmark_run(spec: BenchmarkSpec, protocol: str) -> BenchmarkRun:
    """The protocol's sampling for a benchmark, overridden by the fields the spec sets."""
    definition = benchmark_def(spec.name)
    preset = definition.limo if protocol == "limo" else GREEDY
    code_tokens = None
    if definition.kind == "code":
        code_protocol = codebench.code_protocol(protocol)
        preset, code_tokens = code_protocol.sampling, code_protocol.max_tokens
    return BenchmarkRun(
        name=spec.name,
        samples=spec.samples or preset.samples,
        temperature=float(spec.temperature) if spec.temperature is not None else preset.temperature,
        top_p=float(spec.topP) if spec.topP is not None else preset.top_p,
        max_tokens=spec.maxTokens or code_tokens or MAX_TOKENS,
        seed=spec.seed if spec.seed is not None else PROTOCOL_SEEDS[protocol],
        path=spec.path,
        limit=spec.limit,
        released_from=spec.releasedFrom,
        released_until=spec.releasedUntil,
    )


def config_from_resource(doc: dict[str, Any]) -> EvalConfig:
    """The EvalConfig of a resolved EvalRun document (see docs/architecture.md)."""
    spec = EvalRunSpec.model_validate(doc["spec"])
    context = doc.get("context") or {}
    name = (doc.get("metadata") or {}).get("name") or "eval"
    protocol = spec.protocol or "limo"
    endpoint_spec = spec.model.endpoint
    backend = "server" if endpoint_spec else spec.backend or "server"
    serving = spec.serving
    config = EvalConfig(
        name=name,
        output=str(doc["output"]),
        model="",
        benchmarks=[benchmark_run(b, protocol) for b in spec.benchmarks],
        backend=backend,
        protocol=protocol,
        system_prompt=spec.systemPrompt or LIMO_SYSTEM_PROMPT,
        concurrency=spec.concurrency or (endpoint_spec and endpoint_spec.concurrency) or DEFAULT_CONCURRENCY,
        gates=[(g.benchmark, g.minScore) for g in spec.gates or []],
        dtype=(serving and serving.dtype) or "auto",
        tensor_parallel_size=(serving and serving.tensorParallelSize) or 1,
        max_model_len=serving and serving.maxModelLen,
        sandbox=spec.sandbox,
    )
    if backend == "server":
        config.endpoint = context.get("endpoint") or (endpoint_spec.url if endpoint_spec else None)
        if not config.endpoint:
            raise WorkloadError("EndpointUnreachable", "no endpoint to evaluate: the model is not served yet and spec.model sets none")
        config.model = spec.model.servedModelName or name
        if endpoint_spec:
            config.timeout = float(endpoint_spec.timeoutSeconds or DEFAULT_TIMEOUT)
            config.max_retries = DEFAULT_MAX_RETRIES if endpoint_spec.maxRetries is None else endpoint_spec.maxRetries
            if endpoint_spec.apiKeySecretRef:
                config.api_key_env = api_key_env(endpoint_spec.apiKeySecretRef)
    else:
        config.model = context.get("modelLocation") or spec.model.name or ""
        if not config.model:
            raise WorkloadError("ModelNotFound", "no model to evaluate: the FineTuneJob has produced no model yet")
    return config


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def run_resource(doc: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    return main(config_from_resource(doc), reporter)


def main(config: EvalConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run the evaluation; write responses, summary.json and report.md; return the small status result."""
    reporter = reporter or Reporter()
    started = _now()
    output, upload = _local_output(config.output)
    output.mkdir(parents=True, exist_ok=True)

    reporter.update(stage="load", message=f"loading {len(config.benchmarks)} benchmark(s)", force=True)
    problems = {
        run.name: load_benchmark(run.name, path=run.path, cache_dir=config.benchmark_cache_dir, limit=run.limit,
                                 released_from=run.released_from, released_until=run.released_until)
        for run in config.benchmarks
    }
    generator = _generator(config, output / CACHE_FILE)
    engine = generator.describe()

    requests = [
        GenerationRequest(
            id=_request_id(run.name, item.id),
            messages=_messages(config, benchmark_def(run.name), item),
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
    responses = {
        run.name: [
            Response(run.name, item.id, c.index, c.text, c.finish_reason, c.completion_tokens, c.prompt_tokens)
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
                grade_responses(grader, benchmark_def(run.name), problems[run.name], responses[run.name])

    scores = {run.name: score(problems[run.name], responses[run.name]) for run in config.benchmarks}
    for name, execution in executions.items():
        scores[name]["execution"] = execution
    gates = evaluate_gates(config.gates, scores)
    for run in config.benchmarks:
        write_responses(output / "responses" / f"{run.name}.jsonl", responses[run.name], problems[run.name])
    summary = _summary(config, engine, scores, gates, started)
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (output / "report.md").write_text(report(summary))
    if upload:
        upload()
    result = _result(config, scores, gates)
    reporter.update(stage="done", message=f"accuracy {result['accuracy']:.4f}", force=True)
    return result


def _generator(config: EvalConfig, cache: Path) -> Generator:
    if config.backend == "server":
        assert config.endpoint  # set by config_from_resource, or by the caller of main
        api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        served = check_endpoint(config.endpoint, api_key)
        if config.model not in served:
            if len(served) != 1:
                raise WorkloadError(
                    "ModelNotFound", f"{config.endpoint} does not serve {config.model!r} (it serves {', '.join(served) or 'nothing'}); set spec.model.servedModelName"
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


def _check_local_model(model: str) -> None:
    """A model given as a path must be a non-empty directory (a hub id is left to vLLM)."""
    local = model.startswith(("/", "./", "../", "~")) or os.path.exists(model)
    path = Path(model).expanduser()
    if local and not (path.is_dir() and any(path.iterdir())):
        raise WorkloadError("ModelNotFound", f"model directory {model} is missing or empty")


def _request_id(benchmark: str, problem_id: str) -> str:
    return f"{benchmark}/{problem_id}"


def _messages(config: EvalConfig, definition: BenchmarkDef, item: BenchmarkItem) -> list[dict]:
    system_prompt = config.system_prompt
    if definition.kind == "code":  # the code protocol's system prompt replaces the (default) LIMO one
        return codebench.messages(config.protocol, item, None if system_prompt == LIMO_SYSTEM_PROMPT else system_prompt)
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": definition.render(item)}]


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
# Grading and scores
# ------------------------------------------------------------------------------------------------


def grade_responses(grader: Grader, definition: BenchmarkDef, items: Sequence[BenchmarkItem], responses: list[Response]) -> None:
    gold = {item.id: item.answer for item in items}
    grades = grader.grade((r.text, gold[r.problem_id], definition.kind) for r in responses)
    for response, grade in zip(responses, grades):
        response.grade = grade


def _percentile(values: Sequence[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else 0


def score(items: Sequence[BenchmarkItem], responses: Sequence[Response]) -> dict[str, Any]:
    """The metrics of one benchmark over the problems that have responses."""
    by_problem: dict[str, list[Response]] = {}
    for response in responses:
        by_problem.setdefault(response.problem_id, []).append(response)
    groups = [sorted(by_problem[item.id], key=lambda r: r.sample) for item in items if item.id in by_problem]
    if not groups:
        raise WorkloadError("InvalidResponses", "no responses to score")
    samples = min(len(g) for g in groups)
    grades = [[r.grade for r in g] for g in groups]
    correct = [sum(1 for grade in g if grade and grade.correct) for g in grades]
    flat = [r for g in groups for r in g]
    tokens = [r.completion_tokens for r in flat]
    return {
        "problems": len(groups),
        "samples": samples,
        "responses": len(flat),
        "pass@1": sum(correct) / len(flat),
        "pass@k": {str(k): _mean(pass_at_k(len(g), c, k) for g, c in zip(groups, correct)) for k in range(1, samples + 1)},
        "maj@k": {str(k): _mean(majority_correct(g, k) for g in grades) for k in range(1, samples + 1)},  # type: ignore[arg-type]
        "tokens": {"mean": _mean(tokens), "p50": _percentile(tokens, 0.5), "p95": _percentile(tokens, 0.95)},
        "truncated": _mean(r.finish_reason == "length" for r in flat),
        "noAnswer": _mean(r.grade is not None and r.grade.extracted is None for r in flat),
        "ungraded": sum(1 for r in flat if r.grade is None or r.grade.correct is None),
    }


def _mean(values: Iterable[float | bool | int]) -> float:
    values = list(values)
    return float(statistics.fmean(values)) if values else 0.0


def evaluate_gates(gates: Iterable[tuple[str, str]], scores: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each gate with the pass@1 reached; a gate on a benchmark that was not run fails."""
    out = []
    for benchmark, minimum in gates:
        reached = scores[benchmark]["pass@1"] if benchmark in scores else None
        out.append({
            "benchmark": benchmark,
            "minScore": minimum,
            "score": None if reached is None else f"{reached:.4f}",
            "passed": reached is not None and reached >= float(minimum),
        })
    return out


def _result(config: EvalConfig, scores: dict[str, dict[str, Any]], gates: list[dict[str, Any]]) -> dict[str, Any]:
    results = [
        {
            "benchmark": run.name,
            "score": f"{scores[run.name]['pass@1']:.4f}",
            "problems": scores[run.name]["problems"],
            "samples": scores[run.name]["samples"],
            "truncated": f"{scores[run.name]['truncated']:.4f}",
        }
        for run in config.benchmarks
    ]
    result: dict[str, Any] = {"results": results, "accuracy": round(_mean(s["pass@1"] for s in scores.values()), 4)}
    if gates:
        result["gates"] = [{k: v for k, v in g.items() if v is not None} for g in gates]
    return result


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------


def write_responses(path: Path, responses: Sequence[Response], items: Sequence[BenchmarkItem]) -> None:
    gold = {item.id: item.answer for item in items}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in responses:
            grade = r.grade or GradeResult(None, None, "not graded")
            row = {
                "benchmark": r.benchmark, "id": r.problem_id, "sample": r.sample, "response": r.text,
                "extracted": grade.extracted, "gold": gold[r.problem_id], "correct": grade.correct, "reason": grade.reason,
                "completion_tokens": r.completion_tokens, "prompt_tokens": r.prompt_tokens, "finish_reason": r.finish_reason,
            }
            if r.execution is not None:
                row["execution"] = r.execution
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_responses(path: str | Path, benchmark: str) -> list[Response]:
    """Responses from a JSONL file with at least "id" and "response" per line (as written by an EvalRun)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise WorkloadError("InvalidResponses", f"cannot read {path}: {exc}") from exc
    responses: list[Response] = []
    samples: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            problem_id, text = str(row["id"]), row["response"]
            if not isinstance(text, str):
                raise TypeError("response is not a string")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise WorkloadError("InvalidResponses", f"{path}:{number}: expected a JSON object with id and response ({exc})") from exc
        sample = int(row.get("sample", samples.get(problem_id, 0)))
        samples[problem_id] = sample + 1
        responses.append(Response(
            benchmark, problem_id, sample, text, str(row.get("finish_reason") or "stop"),
            int(row.get("completion_tokens") or 0), int(row.get("prompt_tokens") or 0),
        ))
    if not responses:
        raise WorkloadError("InvalidResponses", f"{path} holds no responses")
    return responses


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _summary(config: EvalConfig, engine: dict[str, Any], scores: dict[str, dict[str, Any]], gates: list[dict[str, Any]], started: str) -> dict[str, Any]:
    return {
        "name": config.name,
        "model": config.model,
        "backend": config.backend,
        "engine": engine,
        "protocol": config.protocol,
        "systemPrompt": config.system_prompt,
        "reasonopsVersion": __version__,
        "startTime": started,
        "completionTime": _now(),
        "benchmarks": [
            {
                "name": run.name,
                "kind": benchmark_def(run.name).kind,
                "source": run.path or "registry",
                "sampling": {"samples": run.samples, "temperature": run.temperature, "topP": run.top_p,
                             "maxTokens": run.max_tokens, "seed": run.seed},
                "scores": scores[run.name],
            }
            for run in config.benchmarks
        ],
        "accuracy": _mean(s["pass@1"] for s in scores.values()),
        "gates": gates,
        "gatesPassed": all(g["passed"] for g in gates),
    }


def report(summary: dict[str, Any]) -> str:
    """A Markdown report of a summary."""
    engine = summary["engine"]
    lines = [
        f"# Evaluation {summary['name']}",
        "",
        f"Model `{summary['model']}` via {engine.get('engine')} {engine.get('engineVersion') or ''} "
        f"(dtype {engine.get('dtype') or 'unknown'}), protocol {summary['protocol']}, reasonops {summary['reasonopsVersion']}.",
        "",
        "| benchmark | problems | samples | temp | top_p | max tokens | seed | pass@1 | pass@n | maj@n | truncated | no answer | tokens mean / p50 / p95 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in summary["benchmarks"]:
        s, p = b["scores"], b["sampling"]
        n = str(s["samples"])
        lines.append(
            f"| {b['name']} | {s['problems']} | {n} | {p['temperature']} | {p['topP']} | {p['maxTokens']} | {p['seed']} "
            f"| {s['pass@1']:.4f} | {s['pass@k'][n]:.4f} | {s['maj@k'][n]:.4f} | {s['truncated']:.2%} | {s['noAnswer']:.2%} "
            f"| {s['tokens']['mean']:.0f} / {s['tokens']['p50']} / {s['tokens']['p95']} |"
        )
    lines += ["", f"Mean pass@1: **{summary['accuracy']:.4f}**", ""]
    if summary["gates"]:
        lines += ["| gate | min score | score | passed |", "|---|---|---|---|"]
        lines += [f"| {g['benchmark']} | {g['minScore']} | {g['score']} | {'yes' if g['passed'] else 'no'} |" for g in summary["gates"]]
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# `reasonops grade`
# ------------------------------------------------------------------------------------------------


def grade_main(argv: list[str] | None = None) -> int:
    """`reasonops grade --benchmark NAME --responses FILE [--path BENCH_FILE]`: score a responses file offline."""
    parser = argparse.ArgumentParser(prog="reasonops grade", description="Grade a responses file against a benchmark.")
    parser.add_argument("--benchmark", required=True, help="benchmark of the registry")
    parser.add_argument("--responses", required=True, help="JSONL with id and response per line (e.g. responses/NAME.jsonl)")
    parser.add_argument("--path", help="benchmark file or directory instead of the hub")
    parser.add_argument("--workers", type=int, default=None, help="grader processes (default: CPU count)")
    parser.add_argument("--output", help="also write the graded responses here (JSONL)")
    args = parser.parse_args(argv)

    definition = benchmark_def(args.benchmark)
    items = load_benchmark(args.benchmark, path=args.path)
    responses = read_responses(args.responses, args.benchmark)
    known = {item.id for item in items}
    unknown = sorted({r.problem_id for r in responses} - known)
    if unknown:
        raise WorkloadError("InvalidResponses", f"{args.responses}: ids not in {args.benchmark}: {', '.join(unknown[:5])}")
    if definition.kind == "code":
        codebench.grade_benchmark("custom", items, responses)
    else:
        with Grader(args.workers) as grader:
            grade_responses(grader, definition, items, responses)
    if args.output:
        write_responses(Path(args.output), responses, items)
    print(json.dumps({"benchmark": args.benchmark, **score(items, responses)}, indent=2))
    return 0
