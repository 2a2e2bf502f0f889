"""The public reasoning datasets' layouts, as files with their exact columns and nesting, curated by
`reasonops run` (as a shell runs it) and trained on (a FineTuneJob on the raw file), with no column mapping.

The columns are those of the datasets' cards on the Hugging Face hub: GAIR/LIMO, NovaSky-AI/Sky-T1_data_17k,
bespokelabs/Bespoke-Stratos-17k, open-thoughts/OpenThoughts-114k (default config), open-r1/OpenR1-Math-220k,
AI-MO/NuminaMath-CoT, simplescaling/s1K-1.1, and plain chat rows. The texts are written here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reasonops.api.v1alpha1 import LIMO_SYSTEM_PROMPT
from reasonops.tinymodel import build_tokenizer
from reasonops.train.data import IGNORE, prepare_samples, read_rows

from train_support import REPO

API = "reasonops.io/v1alpha1"
SKY_SYSTEM = ("Your role as an assistant involves thoroughly exploring questions through a systematic long thinking "
              "process before providing the final precise and accurate solutions.")
CHAT_SYSTEM = "You are a careful tutor."


def sky_solution(n: int) -> str:
    return (f"<|begin_of_thought|>\n\nAdd {n} and {n}.\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n"
            f"The sum is \\boxed{{{2 * n}}}.\n\n<|end_of_solution|>")


def sharegpt(n: int, tag: str) -> dict[str, Any]:
    """Sky-T1_data_17k, Bespoke-Stratos-17k and OpenThoughts-114k: system, conversations of from/value."""
    return {"system": SKY_SYSTEM, "conversations": [
        {"from": "user", "value": f"{tag}: what is {n} + {n}?"},
        {"from": "assistant", "value": sky_solution(n)}]}


def openr1(n: int) -> dict[str, Any]:
    trace = f"<think>\nI add {n} to itself.\n</think>\n\nSo the result is $\\boxed{{{2 * n}}}$."
    problem = f"OpenR1: double {n}."
    return {"problem": problem, "solution": f"Reference: {2 * n}.", "answer": str(2 * n), "problem_type": "Algebra",
            "question_type": "math-word-problem", "source": "olympiads", "uuid": f"uuid-{n}",
            "is_reasoning_complete": [True], "generations": [trace], "correctness_math_verify": [True],
            "correctness_llama": None, "finish_reasons": ["stop"], "correctness_count": 1,
            "messages": [{"content": problem, "role": "user"}, {"content": trace, "role": "assistant"}]}


def numina(n: int) -> dict[str, Any]:
    problem, solution = f"Numina: triple {n}.", f"Three times {n} is $\\boxed{{{3 * n}}}$."
    return {"source": "synthetic_math", "problem": problem, "solution": solution,
            "messages": [{"content": problem, "role": "user"}, {"content": solution, "role": "assistant"}]}


def s1k(n: int) -> dict[str, Any]:
    return {"solution": str(n * n), "question": f"s1K: square {n}.", "cot_type": "math", "source_type": "AI-MO/NuminaMath-CoT/aops_forum",
            "metadata": "{'problem': 'x'}", "gemini_thinking_trajectory": "Gemini thinks.", "gemini_attempt": "Gemini: 0",
            "deepseek_thinking_trajectory": f"Okay, {n} times {n}.", "deepseek_attempt": f"The square is $\\boxed{{{n * n}}}$.",
            "gemini_grade": "No", "gemini_grade_reason": "wrong", "deepseek_grade": "Yes", "deepseek_grade_reason": "right"}


def chat(n: int) -> dict[str, Any]:
    turns = [{"role": "user", "content": f"Chat: what is {n} - 1?"}, {"role": "assistant", "content": f"It is \\boxed{{{n - 1}}}."}]
    return {"messages": ([{"role": "system", "content": CHAT_SYSTEM}] if n % 2 else []) + turns}


# layout -> (rows, the expected (question, chain, answer, row's own system prompt or None) of each)
LAYOUTS: dict[str, tuple[list[dict], list[tuple[str, str, str, str | None]]]] = {
    "limo": ([{"question": f"LIMO: what is {n} * 2?", "solution": f"Doubling gives \\boxed{{{2 * n}}}.", "answer": str(2 * n)}
              for n in (1, 2, 3)],
             [(f"LIMO: what is {n} * 2?", f"Doubling gives \\boxed{{{2 * n}}}.", str(2 * n), None) for n in (1, 2, 3)]),
    **{tag: ([sharegpt(n, tag) for n in (1, 2, 3)],
             [(f"{tag}: what is {n} + {n}?", sky_solution(n), str(2 * n), SKY_SYSTEM) for n in (1, 2, 3)])
       for tag in ("sky-t1", "bespoke-stratos", "openthoughts")},
    "openr1-math": ([openr1(n) for n in (1, 2, 3)],
                    [(f"OpenR1: double {n}.", openr1(n)["messages"][1]["content"], str(2 * n), None) for n in (1, 2, 3)]),
    "numinamath-cot": ([numina(n) for n in (1, 2, 3)],
                       [(f"Numina: triple {n}.", numina(n)["solution"], str(3 * n), None) for n in (1, 2, 3)]),
    "s1k-1.1": ([s1k(n) for n in (2, 3, 4)],
                [(f"s1K: square {n}.", f"Okay, {n} times {n}.\n\nThe square is $\\boxed{{{n * n}}}$.", str(n * n), None)
                 for n in (2, 3, 4)]),
    "chat": ([chat(n) for n in (1, 2, 3)],
             [(f"Chat: what is {n} - 1?", f"It is \\boxed{{{n - 1}}}.", str(n - 1), CHAT_SYSTEM if n % 2 else None)
              for n in (1, 2, 3)]),
}
FORMATS = ("jsonl", "json", "parquet")


def write_layout(directory: Path, layout: str, fmt: str) -> Path:
    rows = LAYOUTS[layout][0]
    path = directory / f"{layout}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))  # a JSON list, as Sky-T1_data_17k.json is
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def reasonops_run(tmp_path: Path, docs: list[dict], name: str = "resources") -> subprocess.CompletedProcess:
    file = tmp_path / f"{name}.yaml"
    file.write_text(yaml.safe_dump_all(docs))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(file), "--output", str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


def dataset_doc(name: str, sources: list[dict], **spec: Any) -> dict:
    return {"apiVersion": API, "kind": "ReasoningDataset", "metadata": {"name": name},
            "spec": {"sources": sources, "stages": [], "output": {"path": "datasets"}, **spec}}


def output_rows(tmp_path: Path, name: str) -> dict[str, dict]:
    state = json.loads((tmp_path / "out" / "state" / f"ReasoningDataset-{name}.json").read_text())
    lines = (Path(state["output"]) / "data.jsonl").read_text().splitlines()
    return {row["id"]: row for row in map(json.loads, lines)}


@pytest.mark.slow
def test_every_layout_curates_as_it_is(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    sources = [{"name": f"{layout.replace('.', '-')}-{fmt}", "path": str(write_layout(files, layout, fmt))}
               for layout in LAYOUTS for fmt in FORMATS]
    docs = [dataset_doc("layouts", sources),
            dataset_doc("no-prompt", [{"name": "limo", "path": str(write_layout(files, "limo", "jsonl"))},
                                      {"name": "sky", "path": str(write_layout(files, "sky-t1", "json"))}], systemPrompt=""),
            dataset_doc("own-prompt", [{"name": "limo", "path": str(write_layout(files, "limo", "parquet"))}],
                        systemPrompt="Think first.")]
    proc = reasonops_run(tmp_path, docs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rows = output_rows(tmp_path, "layouts")
    assert len(rows) == 3 * sum(len(r) for r, _ in LAYOUTS.values())
    for layout, (_, expected) in LAYOUTS.items():
        for fmt in FORMATS:
            source = f"{layout.replace('.', '-')}-{fmt}"
            got = sorted((r for r in rows.values() if r["source"] == source), key=lambda r: r["id"])
            assert len(got) == len(expected), source
            for row, (question, chain, answer, system) in zip(got, expected):
                messages = row["messages"]
                assert [m["role"] for m in messages] == ["system", "user", "assistant"], source
                assert (messages[1]["content"], messages[2]["content"], row["answer"]) == (question, chain, answer), source
                # the row's own system prompt is kept; the spec's (LIMO's by default) applies where it has none
                assert messages[0]["content"] == (system or LIMO_SYSTEM_PROMPT), source

    bare = output_rows(tmp_path, "no-prompt")  # systemPrompt "" means none, but a row's own prompt stays
    assert all(r["messages"][0]["role"] == "user" for r in bare.values() if r["source"] == "limo")
    assert all(r["messages"][0] == {"role": "system", "content": SKY_SYSTEM} for r in bare.values() if r["source"] == "sky")
    assert all(r["messages"][0]["content"] == "Think first." for r in output_rows(tmp_path, "own-prompt").values())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_trains_on_assistant_tokens_only(tmp_path: Path, layout: str, fmt: str) -> None:
    tokenizer = build_tokenizer()
    samples, stats = prepare_samples(tokenizer, read_rows(str(write_layout(tmp_path, layout, fmt))), max_length=4096,
                                     overlong="drop", system_prompt="Spec prompt.")
    expected = LAYOUTS[layout][1]
    assert stats.kept == len(expected) and stats.bad == 0
    for sample, (question, chain, _, system) in zip(samples, expected):
        text = tokenizer.decode(sample.input_ids)
        labelled = tokenizer.decode([t for t in sample.labels if t != IGNORE])
        assert labelled == chain + "<|im_end|>"  # the chain and its end token, nothing else
        assert question in text and f"<|im_start|>system\n{system or 'Spec prompt.'}<|im_end|>" in text


@pytest.mark.slow
def test_finetunejob_on_raw_public_files(tmp_path: Path) -> None:
    """A FineTuneJob straight on LIMO's JSONL, Sky-T1's JSON list and Bespoke-Stratos' Parquet."""
    from reasonops.tinymodel import build_tiny_model

    base = build_tiny_model(tmp_path / "base", layers=1, hidden=16, seed=3)
    files = tmp_path / "files"
    files.mkdir()
    raw = {"limo": write_layout(files, "limo", "jsonl"), "sky": write_layout(files, "sky-t1", "json"),
           "stratos": write_layout(files, "bespoke-stratos", "parquet")}
    docs = [{"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": f"tiny-{name}"}, "spec": {
        "baseModel": {"name": str(base)}, "dataset": {"path": str(path)}, "output": {"path": "models"}, "preset": "none",
        "hyperparameters": {"learningRate": "1e-3", "epochs": 1, "globalBatchSize": 3, "microBatchSize": 1,
                            "maxLength": 512, "warmupRatio": "0", "seed": 7}}} for name, path in raw.items()]
    proc = reasonops_run(tmp_path, docs, "train")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in raw:
        state = json.loads((tmp_path / "out" / "state" / f"FineTuneJob-tiny-{name}.json").read_text())
        summary = json.loads((Path(state["output"]) / "training_summary.json").read_text())
        assert (summary["samples"]["kept"], summary["samples"]["bad"]) == (3, 0), summary["samples"]


def test_dropped_rows_say_why_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "nothing.jsonl"
    path.write_text("".join(json.dumps({"prob": f"P{n}", "sol": "x"}) + "\n" for n in range(7)))
    proc = reasonops_run(tmp_path, [dataset_doc("nothing", [{"name": "pool", "path": str(path)}])])
    assert proc.returncode != 0
    assert ("missing-question: 7 (rows pool:0, pool:1, pool:2, pool:3, pool:4, ...): looked for question, problem,"
            in proc.stderr), proc.stderr[-2000:]
    assert "the row has prob, sol" in proc.stderr
