"""The HTML report of the runs under a directory: which outputs it holds, one section per run, one page.

    reasonops report DIR [--output FILE]     # DIR/report.html by default

Kinds of output, recognised by their files: a fine-tune (train_log.jsonl or training_summary.json), an
evaluation (summary.json with benchmarks), an evaluation of several checkpoints (checkpoints/*/summary.json),
a dataset (manifest.json with stages). A directory holding several (the demo's, or `reasonops run`'s
--output) gets one page with a section for each. The sections are pure functions of the files' contents;
the page has no scripts, fonts or links to fetch: it opens offline, and every string from the data is escaped.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from . import plots

log = logging.getLogger("reasonops.report")

REPORT_FILE = "report.html"
MAX_DEPTH = 8  # below the directory given, e.g. <root>/volumes/<claim>/evals/<name>/<revision>/checkpoints/<checkpoint>
SKIPPED = {"model", "adapter", "responses", "variants", "state", "base-model"}  # never hold outputs


@dataclass
class Found:
    """The outputs found under a directory, each with its path relative to it."""

    training: list[Path] = field(default_factory=list)
    evaluations: list[Path] = field(default_factory=list)
    checkpoint_evaluations: list[Path] = field(default_factory=list)
    datasets: list[Path] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.training or self.evaluations or self.checkpoint_evaluations or self.datasets)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _kind(directory: Path) -> str | None:
    if (directory / "train_log.jsonl").is_file() or (directory / "training_summary.json").is_file():
        return "training"
    summary = _read_json(directory / "summary.json") if (directory / "summary.json").is_file() else None
    if isinstance(summary, dict) and isinstance(summary.get("benchmarks"), list):
        return "evaluation"
    if any(isinstance(_read_json(p), dict) for p in directory.glob("checkpoints/*/summary.json")):
        return "checkpoints"
    manifest = _read_json(directory / "manifest.json") if (directory / "manifest.json").is_file() else None
    if isinstance(manifest, dict) and isinstance(manifest.get("stages"), list):
        return "dataset"
    return None


def discover(root: Path) -> Found:
    """The outputs under root (root itself included), in a stable order; an output's inside is not searched."""
    found = Found()
    for directory, subdirectories, _ in os.walk(root):
        here = Path(directory)
        depth = len(here.relative_to(root).parts)
        kind = _kind(here)
        if kind is not None:
            {"training": found.training, "evaluation": found.evaluations, "checkpoints": found.checkpoint_evaluations,
             "dataset": found.datasets}[kind].append(here)
        if kind is not None or depth >= MAX_DEPTH:
            subdirectories.clear()
        else:
            subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED and not d.startswith("."))
    return found


# ------------------------------------------------------------------------------------------------
# Sections (pure: data in, HTML out)
# ------------------------------------------------------------------------------------------------


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in rows if v is not None)
    return f'<table class="facts">{cells}</table>'


def _section(kind: str, title: str, location: str, body: list[str]) -> str:
    return (f'<section class="run {kind}"><h2>{escape(title)}</h2><p class="where">{escape(location)}</p>'
            + "\n".join(body) + "</section>")


def training_section(location: str, steps: list[dict[str, Any]], summary: dict[str, Any] | None) -> str:
    """Loss, learning rate and throughput per optimizer step (train_log.jsonl), and the run's totals."""
    def curve(key: str) -> list[tuple[float, float]]:
        return [(row["step"], row[key]) for row in steps if isinstance(row.get(key), (int, float)) and "step" in row]

    summary = summary or {}
    config = summary.get("config") or {}
    facts = _table([("steps", summary.get("steps") or (steps[-1].get("step") if steps else None)),
                    ("final loss", summary.get("finalLoss")), ("tokens", summary.get("tokens")),
                    ("tokens/s", summary.get("tokensPerSecond")), ("MFU", summary.get("mfu")),
                    ("training seconds", summary.get("trainSeconds")), ("base model", config.get("model")),
                    ("dataset", config.get("dataset"))])
    return _section("training", f"Fine-tune {config.get('name') or Path(location).parent.name}", location, [
        facts,
        plots.line_plot("training loss", {"loss": curve("loss")}, "step", "loss"),
        plots.line_plot("learning rate", {"learning rate": curve("lr")}, "step", "learning rate"),
        plots.line_plot("throughput", {"tokens/s": curve("tokensPerSecond")}, "step", "tokens per second"),
    ])


def _benchmarks(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in summary.get("benchmarks") or [] if isinstance(b, dict) and isinstance(b.get("scores"), dict)]


def evaluation_section(location: str, summary: dict[str, Any]) -> str:
    """Scores with their 95% intervals per benchmark, and pass@k over k."""
    benchmarks = _benchmarks(summary)
    intervals = [(str(b.get("name")), s["pass@1"], *s["ci95"]) for b in benchmarks
                 for s in [b["scores"]] if isinstance(s.get("ci95"), list) and len(s["ci95"]) == 2]
    pass_k = {str(b.get("name")): [(int(k), v) for k, v in (b["scores"].get("pass@k") or {}).items() if str(k).isdigit()]
              for b in benchmarks}
    gates = summary.get("gates") or []
    facts = _table([("model", summary.get("model")), ("protocol", summary.get("protocol")),
                    ("mean pass@1", summary.get("accuracy")),
                    ("gates", None if not gates else "passed" if summary.get("gatesPassed") else "failed")])
    return _section("evaluation", f"Evaluation {summary.get('name') or ''}", location, [
        facts,
        plots.interval_plot("pass@1 with 95% interval", intervals, "pass@1"),
        plots.line_plot("pass@k", pass_k, "k (samples)", "pass@k", y_range=(0.0, 1.0)),
    ])


def _step(name: str, index: int) -> int:
    match = re.search(r"(\d+)$", name)
    return int(match.group(1)) if match else index


def checkpoints_section(location: str, summaries: list[tuple[str, dict[str, Any]]]) -> str:
    """The checkpoint curve: each benchmark's pass@1 per checkpoint step (checkpoint names end in the step)."""
    curve: dict[str, list[tuple[float, float]]] = {}
    for index, (name, summary) in enumerate(summaries):
        for benchmark in _benchmarks(summary):
            curve.setdefault(str(benchmark.get("name")), []).append((_step(name, index), benchmark["scores"].get("pass@1")))
    last = summaries[-1][1] if summaries else {}
    return _section("checkpoints", f"Evaluation {last.get('name') or ''} of {len(summaries)} checkpoints", location, [
        _table([("checkpoints", ", ".join(name for name, _ in summaries)), ("protocol", last.get("protocol"))]),
        plots.line_plot("checkpoint curve (pass@1)", curve, "checkpoint step", "pass@1", y_range=(0.0, 1.0)),
    ])


def dataset_section(location: str, manifest: dict[str, Any]) -> str:
    """The funnel (problems kept after each stage), the length histogram and the difficulty histograms."""
    stages = [s for s in manifest.get("stages") or [] if isinstance(s, dict)]
    funnel = [(str(s.get("stage")), s.get("kept") or 0) for s in stages]  # the first, load: the rows read
    notes = [f"{value:,}" for _, value in funnel]
    lengths = (manifest.get("tokenLengths") or {})
    binned = lengths.get("assistantHistogram") or {}
    starts, counts = binned.get("starts") or [], binned.get("counts") or []
    ends = [start - 1 for start in starts[1:]] + [binned.get("end")]
    body = [
        _table([("samples", manifest.get("samples")), ("revision", manifest.get("revision")),
                ("token lengths", lengths.get("method"))]),
        plots.bar_plot("funnel: problems kept after each stage", funnel, "problems", notes),
        plots.bar_plot("assistant turn length (tokens)", [(f"{s}-{e}", c) for s, e, c in zip(starts, ends, counts)], "samples"),
    ]
    rates = manifest.get("solveRates") or {}
    if not rates:
        body.append(plots.no_data("difficulty (solve rates)", "no difficulty stage in this recipe"))
    for stage, info in rates.items():
        distribution = (info or {}).get("distribution") or {}
        bars = sorted(((float(rate), count) for rate, count in distribution.items()), key=lambda pair: pair[0])
        body.append(plots.bar_plot(f"difficulty: {stage} (problems by share of samples solved)",
                                   [(f"{rate:.2f}", count) for rate, count in bars], "problems"))
    return _section("dataset", f"Dataset {manifest.get('name') or ''}", location, body)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1340px; color: #222; }
section.run { border-top: 2px solid #ccc; margin-top: 1.5em; }
section.run h2 { margin-bottom: 0.1em; }
p.where { color: #666; font-size: 0.85em; margin-top: 0; word-break: break-all; }
svg.plot { margin: 0.4em 0.6em 0.4em 0; vertical-align: top; }
table.facts { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
table.facts th { text-align: left; padding: 0.1em 1em 0.1em 0; font-weight: normal; color: #555; }
"""


def page(title: str, sections: list[str]) -> str:
    """The whole document: inline style, inline SVG, nothing to fetch."""
    generated = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    body = "\n".join(sections) or '<p class="empty">No training, evaluation or dataset output was found here.</p>'
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body><h1>{escape(title)}</h1>"
            f'<p class="generated">generated {generated} by reasonops report</p>\n{body}\n</body></html>\n')


# ------------------------------------------------------------------------------------------------
# Gathering the files
# ------------------------------------------------------------------------------------------------


def _train_log(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill: the rest of the curve is still worth drawing
            if isinstance(row, dict):
                rows.append(row)
    return rows


def render(root: str | Path) -> str:
    """The report of every output found under root."""
    base = Path(root)
    found = discover(base)
    sections = []

    def where(path: Path) -> str:
        return str(path.resolve())

    for path in found.datasets:
        sections.append(dataset_section(where(path), _read_json(path / "manifest.json")))
    for path in found.training:
        summary = _read_json(path / "training_summary.json")
        sections.append(training_section(where(path), _train_log(path / "train_log.jsonl"), summary if isinstance(summary, dict) else None))
    for path in found.evaluations:
        sections.append(evaluation_section(where(path), _read_json(path / "summary.json")))
    for path in found.checkpoint_evaluations:
        rated = [(p.parent.name, _read_json(p)) for p in path.glob("checkpoints/*/summary.json")]
        rated = sorted(((n, s) for n, s in rated if isinstance(s, dict)), key=lambda pair: _step(pair[0], 0))
        sections.append(checkpoints_section(where(path), rated))
        sections += [evaluation_section(where(path / "checkpoints" / n), s) for n, s in rated]
    return page(f"reasonops report: {base.resolve().name}", sections)


def write_report(root: str | Path, output: str | Path | None = None) -> Path:
    """Render the report of root into output (default root/report.html), replacing it whole."""
    target = Path(output) if output else Path(root) / REPORT_FILE
    staging = target.with_name(f".{target.name}.tmp")
    staging.write_text(render(root), encoding="utf-8")
    staging.replace(target)
    return target


def write_report_quietly(root: str | Path) -> Path | None:
    """write_report for the end of a run: a report that cannot be written is logged, never fails the run."""
    try:
        path = write_report(root)
    except Exception as exc:  # noqa: BLE001 - the run's results are written; the report is a view of them
        log.warning("no HTML report for %s: %s", root, exc)
        return None
    log.info("report: %s", path)
    return path
