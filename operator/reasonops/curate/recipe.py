"""The ReasoningDataset workload: load problem pools, run the spec's stages in order, write the dataset.

    config = config_from_resource(doc)   # the resource document the operator mounts in the pod
    result = main(config)                # {"samples", "contentHash", "location", "stageCounts"}

Before any work the run checks that the output is writable, that every HTTP endpoint of a model stage
answers and that every decontamination benchmark loads, so a typo fails in seconds rather than after
hours of generation. Each stage logs one line of kept/dropped counts with reasons and reports it as
progress; a stage that leaves no problems ends the run with WorkloadError("EmptyDataset"), after
writing every drop so far (dropped.jsonl, failure.json, report.md) to `<output>-failed`, a sibling of
the revision directory, which stays absent.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..api.v1alpha1 import LIMO_SYSTEM_PROMPT, ReasoningDatasetSpec, SamplerModel, Stage
from ..benchmarks import BenchmarkItem
from ..errors import WorkloadError
from ..grading import Grader
from ..llm import api_key_env, check_endpoint
from ..progress import Reporter
from . import output
from .decontaminate import decontaminate, load_items
from .dedupe import dedupe
from .generate import ModelContext, difficulty_filter, generate_chains
from .loaders import SourceInfo, load_sources
from .perturb import Sample, perturb
from .records import Problem, StageReport
from .scoring import score, select

log = logging.getLogger("reasonops.curate")


@dataclass
class CurateConfig:
    """Everything a curation run needs; the spec is the API's ReasoningDatasetSpec, unchanged."""

    spec: ReasoningDatasetSpec
    output: str  # directory (or fsspec URI) of this revision
    name: str = "dataset"
    revision: str | None = None  # the resource revision (spec hash) this run works for
    endpoints: dict[str, str] = field(default_factory=dict)  # EvalRun name -> base URL, resolved by the operator
    workers: int | None = None  # CPU workers for grading and hashing (default: all cores)
    progress: bool = True  # tqdm bars on stderr


def config_from_resource(doc: dict[str, Any]) -> CurateConfig:
    if not doc.get("output"):
        raise WorkloadError("InvalidSpec", "the resource document has no output location")
    return CurateConfig(
        spec=ReasoningDatasetSpec.model_validate(doc["spec"]),
        output=str(doc["output"]),
        name=doc.get("metadata", {}).get("name", "dataset"),
        revision=doc.get("revision"),
        endpoints=dict((doc.get("context") or {}).get("endpoints") or {}),
    )


def run_resource(doc: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    return main(config_from_resource(doc), reporter=reporter)


def main(config: CurateConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    reporter = reporter or Reporter(min_interval=0)
    spec = config.spec
    sink = output.DatasetSink(config.output)
    sink.check_writable()
    benchmarks = _preflight(config)
    reports: list[StageReport] = []

    sources: list[SourceInfo] = []
    try:
        load = _start(reporter, "load", "load")
        problems, sources = load_sources(spec.sources, spec.fields, load, progress=config.progress)
        _finish(reporter, load, problems, reports)

        with Grader(workers=config.workers) as grader:
            ctx = _model_context(config, sink, grader, reporter)
            for stage in spec.stages or []:
                report = _start(reporter, stage.name, stage.kind())
                problems = _run_stage(stage, problems, report, benchmarks, ctx, config)
                _finish(reporter, report, problems, reports)

        final = _start(reporter, "output", "output")
        final.input = len(problems)
        for problem in problems:
            if problem.best_chain is None:
                final.drop(problem.id, "no-solution")
        problems = [p for p in problems if p.best_chain is not None]
        _finish(reporter, final, problems, reports)
    except WorkloadError as exc:
        if exc.reason != "EmptyDataset":
            raise
        where = _write_failure(config, exc, reports, sources)
        raise WorkloadError(exc.reason, f"{exc.message}; dropped rows and reasons in {where}") from None

    files, manifest = _dataset_files(config, problems, reports, sources)
    sink.write(files)
    shutil.rmtree(sink.work_dir(), ignore_errors=True)  # resume caches are not needed once the dataset exists
    reporter.update(stage="output", message=f"wrote {manifest['samples']:,} samples to {config.output}", force=True)
    return {
        "samples": manifest["samples"],
        "contentHash": manifest["contentHash"],
        "location": config.output,
        "stageCounts": [{"stage": r.name, "kept": r.kept, "dropped": r.dropped} for r in reports],
    }


# ------------------------------------------------------------------------------------------------
# Stages
# ------------------------------------------------------------------------------------------------


def _preflight(config: CurateConfig) -> dict[str, list[tuple[str, BenchmarkItem]]]:
    """Check endpoints and load decontamination benchmarks before any long work; returns the benchmarks."""
    benchmarks = {}
    for stage in config.spec.stages or []:
        if stage.decontaminate is not None:
            benchmarks[stage.name] = load_items(stage.decontaminate)
        for sampler in _samplers(stage):
            url = config.endpoints.get(sampler.evalRun) if sampler.evalRun else (sampler.endpoint.url if sampler.endpoint else None)
            if sampler.evalRun and not url:
                raise WorkloadError("EndpointUnreachable", f"stage {stage.name}: the endpoint of EvalRun {sampler.evalRun} was not resolved")
            if url:
                ref = sampler.endpoint.apiKeySecretRef if sampler.endpoint else None
                check_endpoint(url, api_key=os.environ.get(api_key_env(ref)) if ref else None)
    return benchmarks


def _samplers(stage: Stage) -> list[SamplerModel]:
    if stage.difficulty is not None:
        return [stage.difficulty.sampler]
    if stage.generate is not None:
        return [t.sampler for t in stage.generate.teachers]
    return []


def _model_context(config: CurateConfig, sink: output.DatasetSink, grader: Grader, reporter: Reporter) -> ModelContext:
    return ModelContext(
        system_prompt=config.spec.systemPrompt or LIMO_SYSTEM_PROMPT,
        work_dir=sink.work_dir(),
        grader=grader,
        endpoints=config.endpoints,
        progress=config.progress,
        on_progress=lambda message: reporter.update(message=message),
    )


def _run_stage(stage: Stage, problems: list[Problem], report: StageReport,
               benchmarks: dict[str, list[tuple[str, BenchmarkItem]]], ctx: ModelContext, config: CurateConfig) -> list[Problem]:
    if stage.dedupe is not None:
        return dedupe(problems, stage.dedupe, report, workers=config.workers or os.cpu_count() or 1,
                      progress=config.progress)
    if stage.decontaminate is not None:
        return decontaminate(problems, stage.decontaminate, benchmarks[stage.name], report)
    if stage.difficulty is not None:
        return difficulty_filter(problems, stage.difficulty, stage.name, ctx, report)
    if stage.generate is not None:
        return generate_chains(problems, stage.generate, stage.name, ctx, report)
    if stage.score is not None:
        return score(problems, stage.score, report)
    assert stage.select is not None
    return select(problems, stage.select, report)


def _start(reporter: Reporter, name: str, kind: str) -> StageReport:
    reporter.update(stage=name, message=f"{name}: started ({kind})", force=True)
    report = StageReport(name, kind)
    report.seconds = time.monotonic()
    return report


def _finish(reporter: Reporter, report: StageReport, problems: list[Problem], reports: list[StageReport]) -> None:
    report.seconds = time.monotonic() - report.seconds
    report.kept = len(problems)
    reports.append(report)
    reporter.update(stage=report.name, message=f"{report.name}: {report.summary()} in {report.seconds:.1f}s", force=True)
    if not problems:
        counts = "; ".join(f"{r.name}: {r.summary()}" for r in reports)
        raise WorkloadError("EmptyDataset", f"no problems left after stage {report.name} ({counts})")


# ------------------------------------------------------------------------------------------------
# Output files
# ------------------------------------------------------------------------------------------------


def _dataset_files(config: CurateConfig, problems: list[Problem], reports: list[StageReport],
                   sources: list[SourceInfo]) -> tuple[dict[str, bytes], dict[str, Any]]:
    spec = config.spec
    rows = output.build_rows(problems, spec.systemPrompt or LIMO_SYSTEM_PROMPT)
    data = output.encode_jsonl(rows)
    digest = output.content_hash(data)
    method, lengths = output.token_lengths(rows, spec.tokenizer)
    files = {"data.jsonl": data, "data.parquet": output.encode_parquet(rows)}
    variants = []
    samples = [Sample(r["id"], r["messages"][2]["content"], r["answer"]) for r in rows]
    for perturbation in spec.perturbations or []:
        texts = perturb(samples, perturbation)
        variant_rows = [{**r, "messages": [*r["messages"][:2], {"role": "assistant", "content": t}]} for r, t in zip(rows, texts)]
        variant_data = output.encode_jsonl(variant_rows)
        info = {"name": perturbation.name, "type": perturbation.type, "fraction": perturbation.fraction or "0.67",
                "seed": perturbation.seed or 0, "samples": len(variant_rows), "changed": sum(t != s.chain for t, s in zip(texts, samples)),
                "contentHash": output.content_hash(variant_data), "baseRevision": digest}
        files[f"variants/{perturbation.name}/data.jsonl"] = variant_data
        files[f"variants/{perturbation.name}/data.parquet"] = output.encode_parquet(variant_rows)
        files[f"variants/{perturbation.name}/manifest.json"] = _json({**info, "revision": info["contentHash"], "perturbation": info})
        variants.append(info)
    solve_rates = {}
    for report in reports:
        if report.kind == "difficulty":
            rates = [p.solve_rates[report.name] for p in problems if report.name in p.solve_rates]
            solve_rates[report.name] = {"mean": round(sum(rates) / len(rates), 4) if rates else None,
                                        "distribution": dict(sorted(Counter(rates).items()))}
    drops = [{"id": d.id, "stage": r.name, "reason": d.reason, "detail": d.detail} for r in reports for d in r.drops]
    contributed = Counter(r["source"] for r in rows)
    manifest = {
        "name": config.name,
        "revision": digest,
        "contentHash": digest,
        "resourceRevision": config.revision,
        "createdAt": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "samples": len(rows),
        "format": "chat messages (system, user, assistant)",
        "systemPrompt": spec.systemPrompt or LIMO_SYSTEM_PROMPT,
        "stages": [r.to_manifest() for r in reports],
        "sources": [{**s.to_manifest(), "samples": contributed.get(s.name, 0)} for s in sources],
        "teachers": dict(Counter(r["teacher"] or "(source solution)" for r in rows).most_common()),
        "solveRates": solve_rates,
        "tokenLengths": {"method": method, **{part: output.length_stats(v) for part, v in lengths.items()}},
        "variants": variants,
        "config": spec.to_wire(),
        "files": sorted([*files, "manifest.json", "report.md", "dropped.jsonl"]),
    }
    files["dropped.jsonl"] = output.encode_jsonl(drops)
    files["manifest.json"] = _json(manifest)
    files["report.md"] = output.render_report(manifest, drops, lengths["assistant"]).encode()
    return files, manifest


def failure_location(output_location: str) -> str:
    """Where a run that produced no dataset records its drops: a sibling of the revision directory."""
    return output_location.rstrip("/") + "-failed"


def _write_failure(config: CurateConfig, error: WorkloadError, reports: list[StageReport], sources: list[SourceInfo]) -> str:
    """dropped.jsonl, failure.json and report.md of a run that left no problems, next to the output."""
    drops = [{"id": d.id, "stage": r.name, "reason": d.reason, "detail": d.detail} for r in reports for d in r.drops]
    failure = {"name": config.name, "resourceRevision": config.revision, "error": {"reason": error.reason, "message": error.message},
               "stages": [r.to_manifest() for r in reports], "sources": [s.to_manifest() for s in sources]}
    lines = [f"# Dataset {config.name}: no dataset ({error.reason})", "", error.message, "",
             "| stage | kind | input | kept | dropped | reasons |", "|---|---|---:|---:|---:|---|"]
    for r in reports:
        reasons = ", ".join(f"{k} {n:,}" for k, n in r.reasons.items()) or "-"
        lines.append(f"| {r.name} | {r.kind} | {r.input:,} | {r.kept:,} | {r.dropped:,} | {reasons} |")
    location = failure_location(config.output)
    output.DatasetSink(location).write({"dropped.jsonl": output.encode_jsonl(drops), "failure.json": _json(failure),
                                        "report.md": ("\n".join(lines) + "\n").encode()})
    return location


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False, default=str) + "\n").encode()
