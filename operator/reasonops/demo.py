"""`reasonops demo`: the whole chain on this machine — no cluster, no GPU, no downloads — and the point of it:
a few dozen curated reasoning chains make a model better at its benchmark.

LIMO's hypothesis in miniature. A tiny model is first pre-trained on its domain (two-digit arithmetic word
problems, answered in chats with just the worked sum, never with a boxed answer), so it knows the arithmetic
but not the format the benchmark grades (`\\boxed{}`): like an instruct model before LIMO's chains. The bundled
resources (data/demo.yaml) then run through the same local runner as `reasonops run`: curate a problem pool
(dedupe, decontamination against the benchmark, scoring, selection of 24 chains) → fine-tune the base model
on them with DeepSpeed ZeRO-3 on CPU → serve the base and the fine-tuned model with a local OpenAI-compatible
server and evaluate both on the built-in `demo` benchmark. The fine-tuned model scores far above the base:
curation output, chat template, loss masking, export and serving all have to agree for that to happen.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import string
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

DIFFERENCES = [
    "runs every workload in this process instead of Kubernetes Jobs (the operator is not involved)",
    "trains on CPU with DeepSpeed ZeRO-3 over gloo instead of GPUs with NCCL, attention: sdpa",
    "serves the models with vLLM's CPU engine where it is installed, else with reasonops' small OpenAI-compatible server",
    "uses a tiny model pre-trained here for a minute on arithmetic word problems, instead of a hub model",
]

# The demo's domain: word problems whose answer is one operation on a two-digit and a one-digit number.
# The first phrasing of each kind is the built-in benchmark's (benchmarks.demo_items), the others the pool's.
PHRASINGS: dict[str, tuple[str, ...]] = {
    "+": ("Alice has {a} apples and buys {b} more. How many apples does she have now?",
          "A jar holds {a} sweets and Sam puts in {b} more. How many sweets are in the jar?",
          "Maria reads {a} pages on Monday and {b} pages on Tuesday. How many pages does she read in total?",
          "A shelf has {a} books. Ben adds {b} books. How many books are on the shelf?"),
    "-": ("Tom had {a} marbles and gave {b} of them away. How many marbles does he have left?",
          "A baker makes {a} rolls and sells {b}. How many rolls are left?",
          "There are {a} birds on a tree and {b} fly away. How many birds stay?",
          "Lena has {a} stickers and loses {b}. How many stickers does she keep?"),
    "*": ("A box holds {a} pencils. How many pencils are in {b} boxes?",
          "A train travels {a} kilometres every hour. How far does it travel in {b} hours?",
          "Each bag has {a} beads. How many beads are in {b} bags?",
          "A farmer plants {a} seeds in each row. How many seeds are in {b} rows?"),
}
OPERATIONS: dict[str, Callable[[int, int], int]] = {"+": lambda a, b: a + b, "-": lambda a, b: a - b,
                                                    "*": lambda a, b: a * b}

# The numbers of the domain: a two-digit number from this range and a factor from 2 to 6 (the benchmark's
# problems use them too; its questions themselves are held out of pre-training).
FIRST_NUMBERS = range(10, 90, 7)
SECOND_NUMBERS = range(2, 7)
# Pre-training: enough steps for the tiny model to know its arithmetic (measured: all 12 benchmark sums
# right as plain text from 400 steps on), under a minute on two idle cores.
PRETRAIN = {"steps": 500, "batch_size": 48, "learning_rate": 3e-3, "documents": 64_000, "seed": 0}
MODEL_SHAPE = {"layers": 3, "hidden": 128, "heads": 4, "kv_heads": 2, "vocab_size": 400, "max_positions": 512}
_QUIET = ("httpx", "httpcore", "urllib3", "aiohttp.access", "DeepSpeed", "deepspeed", "torch", "datasets",
          "transformers", "filelock", "asyncio", "reasonops.serve")


def pretraining_texts(count: int, seed: int, chat: Callable[[list[dict[str, str]]], str]) -> list[str]:
    """Documents of the domain: bare facts ("38 + 6 = 44.") and problems answered as a chat, rendered by
    `chat` (the tokenizer's template) with the LIMO system prompt, the answer being just the worked sum.

    The base model is thus an "instruct" model that knows its arithmetic, and has read the concluding
    phrase "So the answer is $\\boxed{..}$" in plain text, but never uses it when it answers in a chat,
    where the benchmark grades it: that is what the curated chains teach (the knowledge is there, a few
    examples elicit the format: LIMO's hypothesis in miniature). The benchmark's own questions never appear.
    """
    from .api.v1alpha1 import LIMO_SYSTEM_PROMPT
    from .benchmarks import demo_items

    held_out = {item.question for item in demo_items()}
    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < count:
        op = rng.choice(list(PHRASINGS))
        a, b = rng.choice(FIRST_NUMBERS), rng.choice(SECOND_NUMBERS)
        result = OPERATIONS[op](a, b)
        worked = f"{a} {op} {b} = {result}."
        if rng.random() < 0.5:  # plain text, sometimes with the concluding phrase (never in a chat)
            texts.append(f"{worked}\nSo the answer is $\\boxed{{{result}}}$." if rng.random() < 0.5 else worked)
            continue
        question = rng.choice(PHRASINGS[op]).format(a=a, b=b)
        if question not in held_out:
            texts.append(chat([{"role": "system", "content": LIMO_SYSTEM_PROMPT}, {"role": "user", "content": question},
                               {"role": "assistant", "content": worked}]))
    return texts


def build_base_model(directory: Path, progress: Callable[[int, float], None] | None = None) -> Path:
    """The demo's base model: a tiny Qwen2-style model with a digit-splitting tokenizer, pre-trained on the domain."""
    from .api.v1alpha1 import LIMO_SYSTEM_PROMPT
    from .tinymodel import build_tiny_model, pretrain

    staging = directory.with_name(f".tmp-{directory.name}")
    if staging.exists():
        shutil.rmtree(staging)
    facts = [f"{a} {op} {b} = {f(a, b)}." for op, f in OPERATIONS.items() for a in FIRST_NUMBERS for b in SECOND_NUMBERS]
    phrasings = [p.format(a=10, b=2) for group in PHRASINGS.values() for p in group]
    vocabulary = (facts + phrasings + [LIMO_SYSTEM_PROMPT, "So the answer is $\\boxed{12}$."]) * 4
    build_tiny_model(staging, seed=PRETRAIN["seed"], corpus=vocabulary, split_digits=True, **MODEL_SHAPE)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(staging)
    texts = pretraining_texts(PRETRAIN["documents"], PRETRAIN["seed"],
                              lambda messages: tokenizer.apply_chat_template(messages, tokenize=False))
    pretrain(staging, texts, steps=PRETRAIN["steps"], batch_size=PRETRAIN["batch_size"],
             learning_rate=PRETRAIN["learning_rate"], seed=PRETRAIN["seed"], on_step=progress)
    staging.rename(directory)  # only a finished model is reused by a later `--keep` run
    return directory


def render_resources(output: Path, base_model: Path) -> Path:
    template = resources.files("reasonops").joinpath("data/demo.yaml").read_text()
    pool = resources.files("reasonops").joinpath("data/demo_pool.jsonl")
    text = string.Template(template).substitute(POOL=str(pool), OUTPUT=str(output), BASE_MODEL=str(base_model))
    path = output / "demo.yaml"
    path.write_text(text)
    return path


def pass_at_1(summary: dict[str, Any], benchmark: str = "demo") -> float:
    """The pass@1 of `benchmark` in an EvalRun summary."""
    return next(float(r["score"]) for r in summary["result"]["results"] if r["benchmark"] == benchmark)


class _Story(logging.Handler):
    """Workload log lines as the demo tells them: indented, training steps as one progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno < logging.WARNING and not record.name.startswith("reasonops"):
            return
        if text.startswith("[train] step "):
            step, total = text.split()[2].split("/")
            loss = text.split(" loss ")[1].split()[0] if " loss " in text else "?"
            _bar(int(step), int(total), f"loss {loss}")
            return
        print(f"      {text}", flush=True)


def _bar(done: int, total: int, note: str = "") -> None:
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    print(f"\r      [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {note}", end=end, flush=True)


def _stage(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


def _quiet_logging() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_Story())
    root.setLevel(logging.INFO)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")


def main(output: str = "./reasonops-demo", keep: bool = False) -> int:
    from .runner import load_file, run_local

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    _quiet_logging()
    root = Path(output).resolve()
    if root.exists() and not keep and (root / "demo.yaml").exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    print("reasonops demo — curate, fine-tune and evaluate on this machine")
    print("differences from a cluster run:")
    for line in DIFFERENCES:
        print(f"  - {line}")

    base = root / "base-model"
    _stage(1, 5, "base model: a tiny Qwen2-style model learns two-digit arithmetic from plain text")
    if not (base / "config.json").exists():
        begun = time.time()
        build_base_model(base, lambda step, loss: step % 20 == 0 and _bar(step, PRETRAIN["steps"], f"loss {loss:.3f}"))
        print(f"      pre-trained in {time.time() - begun:.0f}s: {base}")
    else:
        print(f"      reusing {base}")
    manifest = render_resources(root, base)
    resources_in_order = load_file(manifest)
    stories = {
        "ReasoningDataset": "curate: dedupe, decontaminate against the benchmark, score and select chains",
        "FineTuneJob": "fine-tune the base model on the curated chains (DeepSpeed ZeRO-3, loss on assistant tokens)",
        "EvalRun": "evaluate {what} on the demo benchmark (served by a local OpenAI-compatible server)",
    }
    summaries = []
    for number, res in enumerate(resources_in_order, start=2):
        name = res.metadata["name"]
        what = "" if res.kind != "EvalRun" else "the fine-tuned model" if res.spec.model.fineTuneJob else "the base model"
        _stage(number, len(resources_in_order) + 1, stories[res.kind].format(what=what))
        summary = run_local(manifest, root, only=name)[0]
        print(f"      {_headline(summary)}  ({summary['seconds']:.0f}s)")
        summaries.append(summary)

    evals = {s["name"]: s for s in summaries if s["kind"] == "EvalRun"}
    base_score, tuned_score = pass_at_1(evals["demo-eval-base"]), pass_at_1(evals["demo-eval"])
    record = {"summaries": summaries, "scores": {"base": base_score, "fineTuned": tuned_score,
                                                  "gain": round(tuned_score - base_score, 4)}}
    (root / "summary.json").write_text(json.dumps(record, indent=1, default=str))
    print("\nreasonops demo — summary")
    print(f"  base model        demo pass@1 {base_score:.2f}")
    print(f"  fine-tuned model  demo pass@1 {tuned_score:.2f}   ({tuned_score - base_score:+.2f} from "
          f"{_chains(summaries)} curated chains)")
    print("\nwhere things are:")
    for s in summaries:
        print(f"  {s['kind']:<17} {s['name']:<15} {s['location']}")
    print(f"\nfinished in {time.time() - started:.0f}s; summary in {root / 'summary.json'}")
    from .report import write_report_quietly

    report = write_report_quietly(root)
    if report is not None:
        print(f"report with plots (open it in a browser, no network needed): {report}")
    print(f"paired comparison of the two evaluations: reasonops compare {evals['demo-eval-base']['output']} "
          f"{evals['demo-eval']['output']}")
    return 0


def _chains(summaries: list[dict[str, Any]]) -> Any:
    return next((s["result"].get("samples") for s in summaries if s["kind"] == "ReasoningDataset"), "?")


def _headline(summary: dict[str, Any]) -> str:
    result = summary.get("result") or {}
    if summary["kind"] == "ReasoningDataset":
        counts = ", ".join(f"{s['stage']} -{s['dropped']}" for s in result.get("stageCounts", []))
        return f"{result.get('samples')} chains ({counts})"
    if summary["kind"] == "FineTuneJob":
        loss = result.get("finalLoss")
        return f"{result.get('steps')} steps, final loss {loss:.3f}" if isinstance(loss, (int, float)) else "trained"
    return ", ".join(f"{r['benchmark']} pass@1 {float(r['score']):.2f}" for r in result.get("results", [])) or "evaluated"


if __name__ == "__main__":
    sys.exit(main())
