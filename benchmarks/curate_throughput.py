"""Throughput and accuracy of the model-free curation stages on a generated 100k-problem pool.

    python benchmarks/curate_throughput.py [--problems 100000] [--benchmark-dir /work/shared/data/benchmarks]
                                           [--http] [--json results.json]

The pool (written to a temporary directory first, not timed) holds synthetic word problems of 50–120
words with worked solutions, plus planted items:

- near-duplicates (10%): a copy of a pool problem with its case, spacing and punctuation changed, or one
  word replaced, inserted or deleted (or a 1–3 word phrase appended);
- contaminations (1%): distinct MATH500, AIME24, AMC23 and OlympiadBench questions, verbatim,
  re-formatted, or with an instruction sentence added before or after.

The pipeline (`reasonops.curate.main`: load, normalise, dedupe, decontaminate against the four
benchmarks, score, select 10%, write the dataset) runs in a fresh child process, which reports its wall
time and peak RSS. Recall counts a planted duplicate as caught when it and its original did not both
survive deduplication (keep-best may keep either), among plants whose true word-shingle Jaccard
similarity to the original reaches the stage's default threshold (the definition of a near-duplicate;
the others are reported separately). A false drop is a clean problem removed by dedupe or decontamination.

--http also measures the request rate the curation HTTP client (`reasonops.llm`) reaches against the
local `vllm serve` (vLLM's CPU backend, REASONOPS_VLLM or `vllm` on PATH) with a tiny random model, next to a
plain load generator.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BENCHMARKS = ("math500", "aime24", "amc23", "olympiadbench")
DEFAULT_BENCHMARK_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
from reasonops.curate.dedupe import DEFAULT_SHINGLE as SHINGLE  # noqa: E402  # the stage's defaults
from reasonops.curate.dedupe import DEFAULT_THRESHOLD as THRESHOLD  # noqa: E402

PHRASES = (
    "What is the value of", "Find the number of", "Compute the sum of all", "How many positive integers",
    "Express your answer as a common fraction.", "Determine the smallest possible value of",
    "Let $n$ be a positive integer such that", "In triangle $ABC$,", "Suppose that",
)
KEYWORDS = ("therefore", "since", "thus", "check", "verify", "perhaps", "might", "wait", "so", "because")


def _vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]
    words = {"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(size * 2)}
    return sorted(words)[:size]


def _problem(rng: random.Random, vocab: list[str]) -> str:
    parts: list[str] = []
    target = rng.randint(50, 120)
    while sum(len(p.split()) for p in parts) < target:
        if rng.random() < 0.25:
            parts.append(rng.choice(PHRASES))
        # Zipf-like choice: common words recur across problems as in real text
        sentence = [vocab[min(int(rng.paretovariate(1.1)) - 1, len(vocab) - 1)] if rng.random() < 0.5 else rng.choice(vocab)
                    for _ in range(rng.randint(6, 18))]
        if rng.random() < 0.5:
            sentence.insert(rng.randrange(len(sentence)), f"${rng.randint(2, 999)}x^{rng.randint(2, 5)}$")
        parts.append(" ".join(sentence).capitalize() + ".")
    return " ".join(parts)


def _solution(rng: random.Random, vocab: list[str], answer: int) -> str:
    steps = []
    for _ in range(rng.randint(3, 8)):
        words = [rng.choice(vocab) for _ in range(rng.randint(8, 25))]
        for _ in range(rng.randint(0, 3)):
            words.insert(rng.randrange(len(words)), rng.choice(KEYWORDS))
        steps.append(" ".join(words).capitalize() + f" ${rng.randint(1, 99)} + {rng.randint(1, 99)}$.")
    return "\n\n".join(steps + [f"The answer is $\\boxed{{{answer}}}$."])


def _near_duplicate(rng: random.Random, text: str, vocab: list[str]) -> str:
    words = text.split(" ")
    kind = rng.choice(("format", "replace", "insert", "delete", "append"))
    if kind == "format":
        return re.sub(r"\.", " .", text.upper() if rng.random() < 0.5 else text.lower()).replace(" ", "  ")
    i = rng.randrange(len(words))
    if kind == "replace":
        words[i] = rng.choice(vocab)
    elif kind == "insert":
        words.insert(i, rng.choice(vocab))
    elif kind == "delete":
        del words[i]
    else:
        words.append(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 3))) + ".")
    return " ".join(words)


def _contamination(rng: random.Random, question: str) -> str:
    kind = rng.choice(("verbatim", "format", "prefix", "suffix"))
    if kind == "format":
        return "  ".join(question.split()).replace(",", " ,")
    if kind == "prefix":
        return "Solve the following problem carefully. " + question
    if kind == "suffix":
        return question + " Give your answer in simplest form."
    return question


def _shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i : i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}


def _jaccard(a: str, b: str) -> float:
    x, y = _shingles(a), _shingles(b)
    return len(x & y) / len(x | y)


def build_pool(path: Path, problems: int, benchmark_dir: Path, seed: int = 0) -> dict:
    """Write the pool; return the planted items: {near: {id: (original, jaccard)}, contaminated: [ids]}."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
    from reasonops.benchmarks import load_benchmark

    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    items = [item for name in BENCHMARKS for item in load_benchmark(name, path=str(benchmark_dir))]
    contaminated = rng.sample(items, min(len(items), problems // 100))
    near_count = problems // 10
    clean_count = problems - near_count - len(contaminated)
    rows, near, planted_contamination = [], {}, []
    for i in range(clean_count):
        rows.append({"id": f"p{i}", "question": _problem(rng, vocab), "solution": _solution(rng, vocab, i), "answer": str(i)})
    for j in range(near_count):
        original = rows[rng.randrange(clean_count)]
        text = _near_duplicate(rng, original["question"], vocab)
        row_id = f"d{j}"
        near[row_id] = (original["id"], _jaccard(text, original["question"]))
        rows.append({"id": row_id, "question": text, "solution": _solution(rng, vocab, j), "answer": str(j)})
    for k, item in enumerate(contaminated):
        row_id = f"c{k}"
        planted_contamination.append(row_id)
        rows.append({"id": row_id, "question": _contamination(rng, item.question),
                     "solution": _solution(rng, vocab, k), "answer": item.answer})
    rng.shuffle(rows)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return {"near": near, "contaminated": planted_contamination}


def run_pipeline(pool: str, out: str, benchmark_dir: str, select: int) -> dict:
    """Runs in the child process: the timed pipeline, with its peak RSS."""
    import logging

    from reasonops.api.v1alpha1 import ReasoningDatasetSpec
    from reasonops.curate import CurateConfig, main

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    spec = ReasoningDatasetSpec.model_validate({
        "sources": [{"name": "pool", "path": pool}],
        "stages": [
            {"name": "dedupe", "dedupe": {}},
            {"name": "decontaminate", "decontaminate": {"benchmarks": list(BENCHMARKS), "benchmarkPath": benchmark_dir}},
            {"name": "score", "score": {}},
            {"name": "select", "select": {"size": select}},
        ],
        "output": {"path": out},
    })
    start = time.perf_counter()
    result = main(CurateConfig(spec=spec, output=out, progress=False))
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": round(seconds, 2), "cpuSeconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peakRssMiB": round(usage.ru_maxrss / 1024, 1), "loadAverage": round(os.getloadavg()[0], 1), "result": result}


def evaluate(planted: dict, out: Path, problems: int) -> dict:
    drops = [json.loads(line) for line in (out / "dropped.jsonl").open()]
    removed = {d["id"].split(":", 1)[1]: d for d in drops if d["stage"] in ("dedupe", "decontaminate")}
    in_scope = {k: v for k, v in planted["near"].items() if v[1] >= THRESHOLD}
    caught = sum(1 for dup, (original, _) in in_scope.items() if dup in removed or original in removed)
    contaminated = planted["contaminated"]
    # a planted copy may go as a duplicate of another copy of the same question (benchmarks overlap);
    # what counts is that none reaches the dataset
    caught_contamination = sum(1 for c in contaminated if c in removed)
    by_reason = Counter(removed[c]["reason"] for c in contaminated if c in removed)
    # an original may rightly go when its planted copy is better (keep-best), so originals are not clean
    originals = {original for original, _ in planted["near"].values()}
    clean = [f"p{i}" for i in range(problems - len(planted["near"]) - len(contaminated))]
    false_drops = [p for p in clean if p in removed and p not in originals]
    return {
        "nearDuplicatesPlanted": len(planted["near"]),
        "nearDuplicatesInScope": len(in_scope),
        "nearDuplicateRecall": round(caught / max(len(in_scope), 1), 4),
        "belowThresholdPlants": len(planted["near"]) - len(in_scope),
        "belowThresholdCaught": sum(1 for dup, (o, j) in planted["near"].items() if j < THRESHOLD and (dup in removed or o in removed)),
        "contaminationsPlanted": len(contaminated),
        "contaminationRecall": round(caught_contamination / max(len(contaminated), 1), 4),
        "contaminationsCaughtBy": dict(by_reason),
        "falseDrops": len(false_drops),
        "falseDropRate": round(len(false_drops) / max(len(clean), 1), 5),
        "falseDropExamples": [removed[p] for p in false_drops[:5]],
    }


def http_rate(requests: int = 64, concurrency: int = 16, max_tokens: int = 8) -> dict:
    """Request rate of the curation client against the local CPU server (tiny random model)."""
    from reasonops.api.v1alpha1 import SamplerModel
    from reasonops.llm import GenerationRequest, make_generator
    from reasonops.local_vllm import load_test, running_vllm, small_model_options
    from reasonops.tinymodel import build_servable_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_servable_model(Path(tmp) / "tiny")
        with running_vllm(small_model_options(model_dir, "tiny")) as url:
            sampler = SamplerModel.model_validate({"model": "tiny", "endpoint": {"url": url, "concurrency": concurrency}})
            prompts = [f"What is {i} + {i}?" for i in range(requests)]
            load_test(url, "tiny", prompts[:8], max_tokens=max_tokens, concurrency=concurrency)  # warm up
            generator = make_generator(sampler)
            batch = [GenerationRequest(id=str(i), messages=[{"role": "user", "content": p}], max_tokens=max_tokens)
                     for i, p in enumerate(prompts)]
            start = time.perf_counter()
            generator.generate(batch)
            client = requests / (time.perf_counter() - start)
            plain = load_test(url, "tiny", prompts, max_tokens=max_tokens, concurrency=concurrency)["requestsPerSecond"]
    return {"requests": requests, "concurrency": concurrency, "maxTokens": max_tokens,
            "clientRequestsPerSecond": round(client, 1), "plainLoadGeneratorRequestsPerSecond": round(plain, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=100_000)
    parser.add_argument("--benchmark-dir", default=os.environ.get("REASONOPS_BENCHMARK_DIR", str(DEFAULT_BENCHMARK_DIR)))
    parser.add_argument("--select", type=int, default=None, help="top-N kept by select (default 10%% of the pool)")
    parser.add_argument("--http", action="store_true", help="also measure the HTTP client's request rate")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--child", nargs=3, metavar=("POOL", "OUT", "SELECT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_pipeline(args.child[0], args.child[1], args.benchmark_dir, int(args.child[2]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        pool, out = Path(tmp) / "pool.jsonl", Path(tmp) / "out" / "dataset"
        started = time.perf_counter()
        planted = build_pool(pool, args.problems, Path(args.benchmark_dir))
        print(f"pool of {args.problems:,} problems written in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        select = args.select or args.problems // 10
        child = subprocess.run([sys.executable, __file__, "--benchmark-dir", args.benchmark_dir, "--child", str(pool), str(out), str(select)],
                               capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"pipeline failed:\n{child.stderr[-3000:]}")
        figures = {"problems": args.problems, "cpus": os.cpu_count(), **json.loads(child.stdout.splitlines()[-1]),
                   **evaluate(planted, out, args.problems)}
        figures["problemsPerSecond"] = round(args.problems / figures["seconds"])
        figures["stageSeconds"] = {s["stage"]: s["seconds"] for s in json.loads((out / "manifest.json").read_text())["stages"]}
    if args.http:
        figures["http"] = http_rate()
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
