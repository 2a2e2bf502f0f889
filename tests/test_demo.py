"""The README's first command: `reasonops demo` runs the whole chain locally, and the chain works: the model
fine-tuned on the curated chains scores far above its base on the demo benchmark. Curation output, chat
template, loss masking, export and serving all have to agree for the gain to appear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from browser_support import assert_every_plot_rendered
from vllm_support import engine_environment
from reasonops.demo import pretraining_texts
from reasonops.benchmarks import demo_items


def test_pretraining_never_shows_the_benchmark_nor_answers_a_chat_in_the_format():
    texts = pretraining_texts(4000, seed=0, chat=lambda messages: "CHAT\n" + "\n".join(m["content"] for m in messages))
    questions = {item.question for item in demo_items()}
    assert not any(q in t for t in texts for q in questions)
    chats = [t for t in texts if t.startswith("CHAT")]
    plain = [t for t in texts if not t.startswith("CHAT")]
    # The format is known from plain text but never used to answer: what the curated chains teach.
    assert chats and not any("\\boxed{" in t.replace("\\boxed{}", "") or "answer is" in t for t in chats)
    assert any("So the answer is $\\boxed{" in t for t in plain)


@pytest.mark.slow
def test_demo_fine_tuning_beats_the_base_model(tmp_path: Path):
    out = tmp_path / "demo"
    # Served by the real vLLM, as on a machine that has it (without it, by reasonops.serve: tests/test_llm.py holds
    # that server's answers to vLLM's).
    proc = subprocess.run([sys.executable, "-m", "reasonops", "demo", "--output", str(out)],
                          capture_output=True, text=True, timeout=1500, env={**os.environ, **engine_environment()})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "local OpenAI-compatible server" in proc.stdout  # says what differs from a cluster run
    assert proc.stdout.count("with vLLM's CPU engine (") == 2  # the base model and the fine-tuned one
    assert proc.stdout.count("POST /v1") == 0  # a story of the chain, not one line per request
    record = json.loads((out / "summary.json").read_text())
    summary = {s["name"]: s for s in record["summaries"]}
    dataset = summary["demo-dataset"]["result"]
    stages = {s["stage"]: s for s in dataset["stageCounts"]}
    assert dataset["samples"] == 24 and stages["decontaminate"]["dropped"] == 3
    rows = [json.loads(line) for line in (Path(dataset["location"]) / "data.jsonl").read_text().splitlines()]
    assert all("\\boxed{" in r["messages"][-1]["content"] for r in rows)
    model = Path(summary["demo-finetune"]["result"]["modelLocation"])
    assert (model / "config.json").exists() and list(model.glob("*.safetensors"))
    scores = record["scores"]
    assert scores["base"] == float(summary["demo-eval-base"]["result"]["results"][0]["score"]) <= 0.1
    assert scores["fineTuned"] == float(summary["demo-eval"]["result"]["results"][0]["score"])
    assert "reasonops demo — summary" in proc.stdout and f"demo pass@1 {scores['fineTuned']:.2f}" in proc.stdout
    # The point of the product: a few dozen curated chains make the model better (LIMO's hypothesis in miniature).
    assert scores["gain"] >= 0.30, f"fine-tuning gained {scores['gain']:+.2f} pass@1 over the base (< 0.30)"
    # It ends by pointing at one report of the whole chain, and at the paired comparison of its evaluations.
    report = out / "report.html"
    assert f"no network needed): {report}" in proc.stdout
    html = report.read_text()
    assert_every_plot_rendered(report, tmp_path / "browser-profile")  # opened in headless Chromium
    assert [s for s in ("run dataset", "run training", "run evaluation") if s in html] == ["run dataset", "run training", "run evaluation"]
    assert html.count('class="plot') == 3 + 3 + 2 * 2 and 'class="plot no-data"' not in html.split("run training")[1].split("run evaluation")[0]
    command = next(line for line in proc.stdout.splitlines() if "reasonops compare" in line).split(": ", 1)[1].split()
    compared = subprocess.run([sys.executable, "-m", "reasonops", *command[1:], "--json"], capture_output=True, text=True, timeout=120)
    assert compared.returncode == 0, compared.stderr
    (row,) = json.loads(compared.stdout)["benchmarks"]
    assert row["difference"] == pytest.approx(scores["gain"], abs=1e-3) and row["low"] <= row["difference"] <= row["high"]
