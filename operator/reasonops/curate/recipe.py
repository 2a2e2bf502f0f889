"""The ReasoningDataset workload: load problem pools, run the spec's stages in order, write the dataset.

    config = config_from_resource(doc)   # the resource document the operator mounts in the pod
    result = main(config)                # {"samples", "contentHash", "location", "stageCounts"}

Before any work the run checks that the output is writable, that every HTTP endpoint of a model stage
answers and that every decontamination benchmark loads, so a typo fails in seconds rather than after
hours of generation. Each stage logs one line of kept/dropped counts with reasons and reports it as
progress; a stage that leaves no problems ends the run with WorkloadError(reasons.REASON_EMPTY_DATASET), after
writing every drop so far (dropped.jsonl, failure.json, report.md) to `<output>-failed`, a sibling of
the revision directory, which stays absent.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..api.v1alpha1 import LIMO_SYSTEM_PROMPT, ReasoningDatasetSpec, SamplerModel, Stage
from ..benchmark_types import BenchmarkItem
from .. import tracking
from ..contract import WorkloadDocument
from ..api import common as reasons
from ..errors import WorkloadError
from ..grading import Grader
from ..llm import api_key_env, check_endpoint
from ..progress import Reporter
from ..report import REPORT_FILE, dataset_section, page
from . import output, sharding
from .decontaminate import DEFAULT_NGRAM, BenchmarkIndex, decontaminate, load_items
from .dedupe import dedupe_rows
from .generate import ModelContext, difficulty_filter, generate_chains
from .loaders import SourceInfo, iter_problems
from .perturb import Sample, perturb
from .records import DropLog, StageReport
from .scoring import score, select_rows
from .store import BATCH, ProblemStore

log = logging.getLogger("reasonops.curate")


@dataclass
class CurateConfig:
    """Everything a curation run needs; the spec is the API's ReasoningDatasetSpec, unchanged."""

    spec: ReasoningDatasetSpec
    output: str  # directory (or fsspec URI) of this revision
    name: str = "dataset"
    revision: str | None = None  # the resource revision (spec hash) this run works for
    # EvalRun name -> base URL (or the URLs of its replicas), resolved by the operator
    endpoints: dict[str, str | list[str]] = field(default_factory=dict)
    served_names: dict[str, str] = field(default_factory=dict)  # EvalRun name -> its served model name
    workers: int | None = None  # CPU workers for grading and hashing (default: all cores)
    progress: bool = True  # tqdm bars on stderr
    shard: sharding.Shard | None = None  # this pod's shard of the model stages (default: from the environment)


def config_from_resource(doc: WorkloadDocument) -> CurateConfig:
    """The CurateConfig of a resolved ReasoningDataset document (see docs/architecture.md)."""
    assert isinstance(doc.spec, ReasoningDatasetSpec), f"a ReasoningDataset document, not a {doc.kind}"
    if not doc.output:
        raise WorkloadError(reasons.REASON_INVALID_SPEC, "the resource document has no output location")
    return CurateConfig(
        spec=doc.spec,
        output=doc.output,
        name=doc.metadata.name,
        revision=doc.revision,
        endpoints=dict(doc.context.endpoints),
        served_names=dict(doc.context.servedModelNames),
    )


def run_resource(doc: WorkloadDocument, reporter: Reporter) -> dict[str, Any]:
    result = main(config_from_resource(doc), reporter=reporter)
    # Tracked once the dataset is written: the revision's directory is replaced as a whole when it is.
    with tracking.start(doc) as tracker:  # pod 0 of a sharded run only; nothing without spec.tracking
        tracker.params({key: value for key, value in doc.spec.to_wire().items() if key not in ("tracking", "resources")})
        for step, values in enumerate(funnel_metrics(result)):
            tracker.metrics(values, step)
        for name in ("manifest.json", "report.md", REPORT_FILE):
            tracker.artifact(Path(doc.output) / name)
    return result


def funnel_metrics(result: dict[str, Any]) -> list[dict[str, float | None]]:
    """The per-stage funnel for a tracker, one step per stage in order (load first): rows kept and dropped
    under common names (a curve over the stages) and under the stage's own, and the samples written last."""
    counts = result.get("stageCounts") or []
    steps: list[dict[str, float | None]] = [
        {"funnel/kept": c["kept"], "funnel/dropped": c["dropped"], f"stages/{c['stage']}/kept": c["kept"],
         f"stages/{c['stage']}/dropped": c["dropped"]} for c in counts]
    if steps:
        steps[-1]["samples"] = result.get("samples")
    return steps


def main(config: CurateConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    reporter = reporter or Reporter(min_interval=0)
    spec = config.spec
    sink = output.DatasetSink(config.output)
    sink.check_writable()
    benchmarks = _preflight(config)
    shard = config.shard or sharding.Shard.from_env()
    stages = list(spec.stages or [])
    first, last = sharding.segment(stages) if shard.count > 1 else (len(stages), len(stages))
    if shard.index != 0 and first == last:  # nothing to share out: pod 0 does it all
        return {"shard": shard.index, "shards": shard.count, "location": config.output}
    reports: list[StageReport] = []
    sources: list[SourceInfo] = []
    scratch = Path(tempfile.mkdtemp(prefix="reasonops-curate-"))  # the spilled pool: rebuilt by a restarted pod
    store = ProblemStore(scratch)
    drops = DropLog(scratch / "dropped.jsonl")
    try:
        load = _start(reporter, "load", "load", drops)
        for problem, index in iter_problems(spec.sources, spec.fields, load, sources, progress=config.progress):
            store.append(problem, index)
        store.seal()
        _finish(reporter, load, store, reports)

        with Grader(workers=config.workers) as grader:
            ctx = _model_context(config, sink, grader, reporter, shard)
            for stage in stages[:first]:
                _stage(stage, store, reporter, reports, benchmarks, ctx, config, drops)
            if first < last:
                exchange = sharding.Exchange(sink.shard_location(), shard)
                before = store.live()
                if not exchange.done(shard.index):
                    own = sharding.own_rows(store, shard)
                    exchange.publish(store, own, _run_shard(stages[first:last], store, own, reporter, benchmarks,
                                                            ctx, config, scratch))
                if shard.index != 0:
                    return {"shard": shard.index, "shards": shard.count, "location": config.output}
                for report in exchange.merge(store, before, stages[first:last], drops, reporter):
                    _finish(reporter, report, store, reports, merged=True)
            for stage in stages[last:]:
                _stage(stage, store, reporter, reports, benchmarks, ctx, config, drops)

        final = _start(reporter, "output", "output", drops)
        live = store.live()
        final.input = len(live)
        for i in live[~store.columns["has_chain"][live]].tolist():
            final.drop(store.read(i).id, "no-solution")
            store.alive[i] = False
        _finish(reporter, final, store, reports)
        manifest = _write_dataset(config, sink, store, reports, sources, drops, scratch)
    except WorkloadError as exc:
        if exc.reason != "EmptyDataset":
            raise
        where = _write_failure(config, exc, reports, sources, drops)
        raise WorkloadError(exc.reason, f"{exc.message}; dropped rows and reasons in {where}") from None
    finally:
        drops.close()
        store.close()
        shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(sink.work_dir(), ignore_errors=True)  # resume caches are not needed once the dataset exists
    if shard.count > 1:
        sink.remove_shard_location()
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
            if sampler.evalRun:
                resolved = config.endpoints.get(sampler.evalRun)
                if not resolved:
                    raise WorkloadError(reasons.REASON_ENDPOINT_UNREACHABLE, f"stage {stage.name}: the endpoint of EvalRun {sampler.evalRun} was not resolved")
                for url in [resolved] if isinstance(resolved, str) else resolved:
                    check_endpoint(url)
            for endpoint in sampler.endpoints or ([sampler.endpoint] if sampler.endpoint else []):
                ref = endpoint.apiKeySecretRef
                check_endpoint(endpoint.url, api_key=os.environ.get(api_key_env(ref)) if ref else None)
    return benchmarks


def _samplers(stage: Stage) -> list[SamplerModel]:
    if stage.difficulty is not None:
        return [stage.difficulty.sampler]
    if stage.generate is not None:
        return [t.sampler for t in stage.generate.teachers]
    return []


def _model_context(config: CurateConfig, sink: output.DatasetSink, grader: Grader, reporter: Reporter,
                   shard: sharding.Shard) -> ModelContext:
    def progress(message: str, done: int, total: int) -> None:
        if shard.count > 1:
            stage = message.split(" ", 1)[0].rstrip(":")
            reporter.update(message=f"shard {shard.index}: {message}",
                            shards={str(shard.index): {"stage": stage, "done": done, "total": total}})
        else:
            reporter.update(message=message)

    return ModelContext(
        system_prompt=LIMO_SYSTEM_PROMPT if config.spec.systemPrompt is None else config.spec.systemPrompt,
        work_dir=sink.work_dir(),
        grader=grader,
        endpoints=config.endpoints,
        served_names=config.served_names,
        progress=config.progress,
        on_progress=progress,
        cache_suffix=f".shard-{shard.index}-of-{shard.count}" if shard.count > 1 else "",
        sandbox=config.spec.sandbox,
    )


# Problems per batch of a model stage: a batch goes to the engine or endpoints as one submission
# (continuous batching over it), and bounds the texts held in memory.
MODEL_BATCH = 100_000


def _stage(stage: Stage, store: ProblemStore, reporter: Reporter, reports: list[StageReport],
           benchmarks: dict[str, list[tuple[str, BenchmarkItem]]], ctx: ModelContext, config: CurateConfig,
           drops: DropLog) -> None:
    report = _start(reporter, stage.name, stage.kind(), drops)
    _run_stage(stage, store, store.live(), report, benchmarks, ctx, config)
    _finish(reporter, report, store, reports)


def _run_stage(stage: Stage, store: ProblemStore, rows: np.ndarray, report: StageReport,
               benchmarks: dict[str, list[tuple[str, BenchmarkItem]]], ctx: ModelContext, config: CurateConfig) -> None:
    """Run one stage over `rows` of the store: kept rows stay alive (updated when the stage changed them)."""
    if stage.dedupe is not None:
        order = store.quality_order(rows)
        kept = dedupe_rows(order, lambda part: [store.read(int(i)).question for i in part], lambda i: store.read(i).id,
                           stage.dedupe, report, workers=config.workers or os.cpu_count() or 1,
                           progress=config.progress, work_dir=store.path.parent)
        store.alive[rows] = False
        store.alive[kept] = True
        return
    if stage.select is not None:
        select_rows(store, rows, stage.select, report)
        return
    batch = MODEL_BATCH if stage.difficulty is not None or stage.generate is not None else BATCH
    index = (BenchmarkIndex(benchmarks[stage.name], stage.decontaminate.ngram or DEFAULT_NGRAM)
             if stage.decontaminate is not None else None)
    for part, problems in store.batches(rows, batch):
        piece = StageReport(report.name, report.kind, log=report.log)
        if stage.decontaminate is not None:
            kept = decontaminate(problems, stage.decontaminate, benchmarks[stage.name], piece, index)
        elif stage.difficulty is not None:
            kept = difficulty_filter(problems, stage.difficulty, stage.name, ctx, piece)
        elif stage.generate is not None:
            kept = generate_chains(problems, stage.generate, stage.name, ctx, piece)
        else:
            kept = score(problems, stage.score, piece)
        report.absorb(piece)
        survivors = {id(p) for p in kept}
        for i, problem in zip(part.tolist(), problems):
            if id(problem) not in survivors:
                store.alive[i] = False
            elif stage.decontaminate is None:
                store.put(i, problem)
    if stage.score is not None and report.kept:
        report.info["meanScore"] = round(float(np.mean(store.columns["score"][rows][store.alive[rows]])), 4)


def _run_shard(stages: list[Stage], store: ProblemStore, own: np.ndarray, reporter: Reporter,
               benchmarks: dict[str, list[tuple[str, BenchmarkItem]]], ctx: ModelContext, config: CurateConfig,
               scratch: Path) -> list[StageReport]:
    """This pod's shard through the per-problem stages; their drops go to a log of the shard's own."""
    log = DropLog(scratch / "shard-dropped.jsonl")
    reports = []
    rows = own
    for stage in stages:
        report = _start(reporter, stage.name, stage.kind(), log)
        _run_stage(stage, store, rows, report, benchmarks, ctx, config)
        rows = rows[store.alive[rows]]
        report.kept = len(rows)
        report.seconds = time.monotonic() - report.seconds
        reports.append(report)
    log.close()
    return reports


def _start(reporter: Reporter, name: str, kind: str, drops: DropLog | None = None) -> StageReport:
    reporter.update(stage=name, message=f"{name}: started ({kind})", force=True)
    report = StageReport(name, kind, log=drops)
    report.seconds = time.monotonic()
    return report


def _finish(reporter: Reporter, report: StageReport, store: ProblemStore, reports: list[StageReport],
            merged: bool = False) -> None:
    if not merged:  # seconds holds the start time (merged shard reports carry their own counts and durations)
        report.seconds = time.monotonic() - report.seconds
        report.kept = int(store.alive.sum())
    reports.append(report)
    reporter.update(stage=report.name, message=f"{report.name}: {report.summary()} in {report.seconds:.1f}s", force=True)
    if not report.kept:
        counts = "; ".join(f"{r.name}: {r.summary()}" for r in reports)
        raise WorkloadError(reasons.REASON_EMPTY_DATASET, f"no problems left after stage {report.name} ({counts})")


# ------------------------------------------------------------------------------------------------
# Output files
# ------------------------------------------------------------------------------------------------


def _write_dataset(config: CurateConfig, sink: output.DatasetSink, store: ProblemStore, reports: list[StageReport],
                   sources: list[SourceInfo], drops: DropLog, scratch: Path) -> dict[str, Any]:
    """Stream the surviving rows into the dataset files (in `scratch`), then write them all atomically."""
    spec = config.spec
    system_prompt = LIMO_SYSTEM_PROMPT if spec.systemPrompt is None else spec.systemPrompt
    writer = output.RowsWriter(scratch / "data.jsonl", scratch / "data.parquet", spec.tokenizer)
    samples: list[Sample] = []
    contributed: Counter[str] = Counter()
    teachers: Counter[str] = Counter()
    rates: dict[str, Counter[float]] = {r.name: Counter() for r in reports if r.kind == "difficulty"}
    for _, problems in store.batches(store.live()):
        rows = output.build_rows(problems, system_prompt)
        writer.write(rows)
        for problem, row in zip(problems, rows):
            contributed[row["source"]] += 1
            teachers[row["teacher"] or "(source solution)"] += 1
            for name in rates.keys() & problem.solve_rates.keys():
                rates[name][problem.solve_rates[name]] += 1
            if spec.perturbations:  # perturbations mix steps across samples: their texts stay in memory
                samples.append(Sample(row["id"], row["messages"][-1]["content"], row["answer"]))
    digest, count, method, lengths = writer.close()
    files: dict[str, bytes | Path] = {"data.jsonl": writer.jsonl, "data.parquet": writer.parquet}
    variants = []
    for perturbation in spec.perturbations or []:
        texts = perturb(samples, perturbation)
        variant = output.RowsWriter(scratch / f"{perturbation.name}.jsonl", scratch / f"{perturbation.name}.parquet", None)
        for _, problems in store.batches(store.live()):
            rows = output.build_rows(problems, system_prompt)
            start = variant.count
            variant.write([{**r, "messages": [*r["messages"][:-1], {"role": "assistant", "content": t}]}
                           for r, t in zip(rows, texts[start : start + len(rows)])])
        variant_digest = variant.close()[0]
        info = {"name": perturbation.name, "type": perturbation.type, "fraction": perturbation.fraction or "0.67",
                "seed": perturbation.seed or 0, "samples": len(texts), "changed": sum(t != s.chain for t, s in zip(texts, samples)),
                "contentHash": variant_digest, "baseRevision": digest}
        files[f"variants/{perturbation.name}/data.jsonl"] = variant.jsonl
        files[f"variants/{perturbation.name}/data.parquet"] = variant.parquet
        files[f"variants/{perturbation.name}/manifest.json"] = _json({**info, "revision": info["contentHash"], "perturbation": info})
        variants.append(info)
    solve_rates = {name: {"mean": round(sum(r * n for r, n in c.items()) / sum(c.values()), 4) if c else None,
                          "distribution": dict(sorted(c.items()))} for name, c in rates.items()}
    manifest = {
        "name": config.name,
        "revision": digest,
        "contentHash": digest,
        "resourceRevision": config.revision,
        "createdAt": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "samples": count,
        "format": "chat messages (system, user, assistant)",
        "systemPrompt": system_prompt,
        "stages": [r.to_manifest() for r in reports],
        "sources": [{**s.to_manifest(), "samples": contributed.get(s.name, 0)} for s in sources],
        "teachers": dict(teachers.most_common()),
        "solveRates": solve_rates,
        "tokenLengths": {"method": method, **{part: output.length_stats(v) for part, v in lengths.items()},
                         "assistantHistogram": output.histogram_bins(lengths["assistant"])},
        "variants": variants,
        "config": spec.to_wire(),
        "files": sorted([*files, "manifest.json", "report.md", "dropped.jsonl"]),
    }
    files["dropped.jsonl"] = drops.close()
    files["manifest.json"] = _json(manifest)
    files["report.md"] = output.render_report(manifest, drops.contaminated, lengths["assistant"]).encode()
    html = _html_report(config.output, manifest)
    if html is not None:
        files[REPORT_FILE] = html
    sink.write(files)
    return manifest


def _html_report(location: str, manifest: dict[str, Any]) -> bytes | None:
    """report.html (the funnel, length and difficulty histograms); one that fails is logged, not fatal."""
    try:
        return page(f"Dataset {manifest['name']}", [dataset_section(location, manifest)]).encode()
    except Exception as exc:  # noqa: BLE001 - the dataset is written whatever happens to its report
        log.warning("no HTML report for %s: %s", location, exc)
        return None


def failure_location(output_location: str) -> str:
    """Where a run that produced no dataset records its drops: a sibling of the revision directory."""
    return output_location.rstrip("/") + "-failed"


def _write_failure(config: CurateConfig, error: WorkloadError, reports: list[StageReport], sources: list[SourceInfo],
                   drops: DropLog) -> str:
    """dropped.jsonl, failure.json and report.md of a run that left no problems, next to the output."""
    failure = {"name": config.name, "resourceRevision": config.revision, "error": {"reason": error.reason, "message": error.message},
               "stages": [r.to_manifest() for r in reports], "sources": [s.to_manifest() for s in sources]}
    lines = [f"# Dataset {config.name}: no dataset ({error.reason})", "", error.message, "",
             "| stage | kind | input | kept | dropped | reasons |", "|---|---|---:|---:|---:|---|"]
    for r in reports:
        reasons = ", ".join(f"{k} {n:,}" for k, n in r.reasons.items()) or "-"
        lines.append(f"| {r.name} | {r.kind} | {r.input:,} | {r.kept:,} | {r.dropped:,} | {reasons} |")
    location = failure_location(config.output)
    output.DatasetSink(location).write({"dropped.jsonl": drops.close(), "failure.json": _json(failure),
                                        "report.md": ("\n".join(lines) + "\n").encode()})
    return location


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False, default=str) + "\n").encode()
