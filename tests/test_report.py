"""HTML reports: the SVG plots (pure), the sections, and the reports the real workloads write and
`reasonops report` renders, as a shell runs it."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from reasonops.curate import output as curate_output
from reasonops.report import plots
from reasonops.report.render import (
    checkpoints_section, dataset_section, discover, evaluation_section, page, training_section, write_report_quietly,
)
from report_support import real_outputs

SCRIPT = Path(sys.executable).with_name("reasonops")
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>&'


def _parse(svg: str) -> ElementTree.Element:
    element = ElementTree.fromstring(svg)
    assert element.tag == f"{SVG}svg" and "plot" in element.get("class", "").split()
    return element


def _svgs(html: str) -> list[ElementTree.Element]:
    return [_parse(match) for match in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)]


def _points(element: ElementTree.Element) -> int:
    return len([c for c in element.iter(f"{SVG}circle") if c.get("class") == "point"])


# ---------------------------------------------------------------------------------------------- plots


def test_a_line_plot_has_one_point_per_step_and_parses() -> None:
    steps = [(step, 2.0 / step) for step in range(1, 38)]
    element = _parse(plots.line_plot("training loss", {"loss": steps}, "step", "loss"))
    assert _points(element) == 37 and element.get("data-points") == "37" and element.get("data-series-count") == "1"
    assert element.get("aria-label") == "training loss"


def test_series_are_counted_and_named() -> None:
    element = _parse(plots.line_plot("pass@k", {"aime24": [(1, 0.2), (2, 0.3)], "math500": [(1, 0.8)], "none": []}, "k", "pass@k"))
    assert element.get("data-series-count") == "2" and _points(element) == 3
    assert {g.get("data-name") for g in element.iter(f"{SVG}g")} == {"aime24", "math500"}


@pytest.mark.parametrize("svg", [
    plots.line_plot("empty", {}, "step", "loss"),
    plots.line_plot("empty", {"loss": []}, "step", "loss"),
    plots.line_plot("not numbers", {"loss": [(1, float("nan"))]}, "step", "loss"),
    plots.bar_plot("empty", [], "count"),
    plots.interval_plot("empty", [], "score"),
])
def test_an_empty_series_gives_a_no_data_panel(svg: str) -> None:
    element = _parse(svg)
    assert element.get("class") == "plot no-data" and element.get("data-series-count") == "0"
    assert any(t.text == "no data" for t in element.iter(f"{SVG}text"))


def test_strings_from_the_data_are_escaped() -> None:
    for svg in (plots.line_plot(HOSTILE, {HOSTILE: [(1, 1.0)]}, HOSTILE, HOSTILE),
                plots.bar_plot(HOSTILE, [(HOSTILE, 3)], HOSTILE),
                plots.interval_plot(HOSTILE, [(HOSTILE, 0.5, 0.4, 0.6)], HOSTILE),
                plots.no_data(HOSTILE, HOSTILE)):
        assert "<script" not in svg
        element = _parse(svg)
        assert element.get("aria-label") == HOSTILE  # escaped in the markup, the same text once parsed


def test_bars_and_intervals_have_one_mark_each() -> None:
    bars = _parse(plots.bar_plot("funnel", [("load", 61), ("dedupe", 54), ("top", 30)], "problems"))
    assert len([r for r in bars.iter(f"{SVG}rect") if r.get("class") == "bar"]) == 3
    widths = [float(r.get("width")) for r in bars.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert widths[0] > widths[1] > widths[2] > 0
    intervals = _parse(plots.interval_plot("scores", [("demo", 0.5, 0.3, 0.7), ("aime", 0.1, 0.0, 0.3)], "pass@1"))
    assert _points(intervals) == 2 and intervals.get("data-points") == "2"


def test_ticks_are_round_and_cover_the_range() -> None:
    assert plots.ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert plots.ticks(3, 97)[0] >= 3 and plots.ticks(3, 97)[-1] <= 97 and len(plots.ticks(3, 97)) >= 3
    assert plots.ticks(5.0, 5.0) == [5.0]


# ---------------------------------------------------------------------------------------------- sections


def test_histogram_bins_match_the_text_histogram() -> None:
    values = [3, 5, 9, 12, 40, 41, 41, 80]
    binned = curate_output.histogram_bins(values, bins=4)
    assert binned == {"starts": [3, 23, 43, 63], "counts": [4, 3, 0, 1], "end": 80}
    assert [line.split()[1] for line in curate_output.histogram(values, bins=4).splitlines()] == ["4", "3", "0", "1"]
    assert curate_output.histogram_bins([]) == {"starts": [], "counts": [], "end": None}


def test_sections_draw_their_data() -> None:
    steps = [{"step": s, "loss": 1 / s, "lr": 1e-3, "tokensPerSecond": 100.0 + s} for s in range(1, 6)]
    training = _svgs(training_section("/out/models/x/r1", steps, {"finalLoss": 0.2, "config": {"name": HOSTILE}}))
    assert [e.get("aria-label") for e in training] == ["training loss", "learning rate", "throughput"]
    assert [_points(e) for e in training] == [5, 5, 5]

    summary = {"name": HOSTILE, "protocol": "limo", "benchmarks": [
        {"name": HOSTILE, "scores": {"pass@1": 0.5, "ci95": [0.3, 0.7], "pass@k": {"1": 0.5, "2": 0.6, "4": 0.7}}},
        {"name": "demo", "scores": {"pass@1": 0.25, "ci95": [0.1, 0.5], "pass@k": {"1": 0.25}}}]}
    html = evaluation_section("/out/evals/e/r1", summary)
    assert "<script" not in html
    scores, pass_k = _svgs(html)
    assert scores.get("data-points") == "2" and pass_k.get("data-series-count") == "2" and _points(pass_k) == 4

    curve = _svgs(checkpoints_section("/out/evals/e/r1", [("step-2", summary), ("step-4", summary), ("step-6", summary)]))[0]
    assert curve.get("data-series-count") == "2" and _points(curve) == 6

    manifest = {"name": "d", "samples": 30, "stages": [
        {"stage": "load", "input": 61, "kept": 61}, {"stage": "dedupe", "input": 61, "kept": 54}, {"stage": "top", "input": 54, "kept": 30}],
        "tokenLengths": {"method": "estimate", "assistantHistogram": {"starts": [10, 20], "counts": [12, 18], "end": 29}},
        "solveRates": {"difficulty": {"mean": 0.4, "distribution": {"0.25": 10, "0.5": 20}}}}
    funnel, lengths, difficulty = _svgs(dataset_section("/out/datasets/d/r1", manifest))
    assert funnel.get("data-points") == "3" and lengths.get("data-points") == "2" and difficulty.get("data-points") == "2"
    old = _svgs(dataset_section("/out", {"name": "old", "stages": [], "tokenLengths": {}}))  # a manifest from before the histogram
    assert [e.get("class") for e in old] == ["plot no-data"] * 3


def test_the_page_fetches_nothing() -> None:
    html = page(HOSTILE, [evaluation_section("/x", {"benchmarks": []})])
    assert "<script" not in html and not re.search(r"(src|href)=", html) and "@import" not in html and "url(" not in html
    assert "default-src 'none'" in html


def test_a_report_that_cannot_be_written_does_not_fail_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="reasonops.report"):
        assert write_report_quietly(tmp_path / "missing") is None
    assert "no HTML report" in caplog.text


# ---------------------------------------------------------------------------------------------- real runs


def _reasonops(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "operator")}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.slow
def test_the_workloads_write_reports_and_reasonops_report_renders_them_all(tmp_path: Path) -> None:
    outputs = real_outputs(tmp_path)
    root, dataset, trained, evaluated = outputs.root, outputs.dataset, outputs.trained, outputs.evaluated

    # Each run wrote its own report next to its results.
    steps = len((trained / "train_log.jsonl").read_text().splitlines())
    loss = next(e for e in _svgs((trained / "report.html").read_text()) if e.get("aria-label") == "training loss")
    assert steps == 4 and _points(loss) == steps
    assert [e.get("data-kind") for e in _svgs((evaluated / "report.html").read_text())] == ["interval", "line"]
    assert _svgs((dataset / "report.html").read_text())[0].get("data-points") == "4"  # load, dedupe, top, output

    found = discover(root)
    assert (found.datasets, found.training, found.evaluations) == ([dataset], [trained], [evaluated])
    proc = _reasonops("report", str(root))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(root / "report.html")
    html = (root / "report.html").read_text()
    assert [kind for kind in re.findall(r'<section class="run (\w+)"', html)] == ["dataset", "training", "evaluation"]
    elements = _svgs(html)
    assert len(elements) == 3 + 3 + 2 and all(e.get("data-series-count") for e in elements)

    proc = _reasonops("report", str(outputs.unrelated))
    assert proc.returncode == 2 and "holds no training, evaluation or dataset output" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
