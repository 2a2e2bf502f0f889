"""Evaluation throughput: grading rate, and the client's request rate against a plain load generator.

1. Grading: N generated responses of realistic length (~8k tokens of reasoning text, then the answer, in
   varied forms) graded by `Grader` with 1 and 2 worker processes, beside math-verify called on each
   whole response (the naive way; measured on a sample, in the same run).
2. Degenerate mix: the same responses with 10% replaced by what looping reasoning models write until
   max_tokens (~100k characters each: repetition loops, unclosed boxes, a response cut inside its box,
   a boxed 100,000-digit number, many boxes, an endless list): responses/s of the whole mix with 2 workers, and the slowest single
   degenerate response graded on its own (target: >= 1,000 responses/s on 2 cores, none over 1 s).
3. Generation: the request rate `OpenAIGenerator` achieves against a local `vllm serve` (vLLM's CPU backend,
   REASONOPS_VLLM or `vllm` on PATH) with a tiny model, beside a plain asyncio load generator against the same
   server, alternated in the same run.

    python benchmarks/eval_throughput.py [--responses 10000] [--requests 256] [--part all|grading|degenerate|generation]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from reasonops.grading import Grader, extract_answer, fast_verdict
from reasonops.llm import GenerationRequest, OpenAIGenerator
from reasonops.local_vllm import load_test, running_vllm, small_model_options
from reasonops.tinymodel import build_servable_model

CHARS_PER_TOKEN = 4  # byte-level BPE on English and LaTeX math
_STEPS = (
    "First, note that {a} + {b} = {s}, so the sum is {s}.",
    "Wait, let me check this again: \\frac{{{a}}}{{{b}}} is not an integer, so we need another approach.",
    "Perhaps we can factor: x^2 - {s}x + {p} = (x - {a})(x - {b}), therefore the roots are {a} and {b}.",
    "Since {a} \\cdot {b} = {p}, we verify that the product matches the condition in the problem.",
    "Hmm, maybe it is easier to consider the case n = {a} separately, then generalise to n > {a}.",
    "Let me double-check the arithmetic: {p} divided by {a} gives {b}, which is consistent.",
)


def _reasoning(rng: random.Random, tokens: int) -> str:
    parts, size = [], 0
    while size < tokens * CHARS_PER_TOKEN:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        step = rng.choice(_STEPS).format(a=a, b=b, s=a + b, p=a * b)
        parts.append(step)
        size += len(step) + 1
    return " ".join(parts)


def _answer(rng: random.Random) -> tuple[str, str]:
    """(final part of the response, gold answer) in the mix of forms a math benchmark produces."""
    n, m = rng.randint(2, 999), rng.randint(2, 97)
    forms = [
        (0.40, f"so the answer is \\boxed{{{n}}}.", str(n)),                                  # integer, right
        (0.20, f"so the answer is \\boxed{{{n + 1}}}.", str(n)),                              # integer, wrong
        (0.08, f"\\boxed{{\\dfrac{{{n}}}{{{m}}}}}", f"\\frac{{{n}}}{{{m}}}"),                   # \dfrac vs \frac
        (0.05, f"\\boxed{{{n / 4}}}", f"\\frac{{{n}}}{{4}}"),                                  # decimal vs fraction
        (0.04, f"\\boxed{{\\left( {n}, {m} \\right)}}", f"({n},{m})"),                          # tuple spacing
        (0.04, f"\\boxed{{{n}^\\circ}}", str(n)),                                               # degrees
        (0.04, f"Thus, the final answer is ${m}$.", str(m)),                                    # no box
        (0.05, "and the computation continues with", str(n)),                                  # truncated, no answer
        (0.03, f"\\boxed{{\\frac{{\\sqrt{{{m}}}}}{{{m}}}}}", f"\\frac{{1}}{{\\sqrt{{{m}}}}}"),  # radicals: math-verify
        (0.03, f"\\boxed{{{m} + {n}x^2}}", f"{n}x^2+{m}"),                                      # reordered: math-verify
        (0.04, f"\\boxed{{\\text{{{rng.choice(['east', 'west', 'north'])}}}}}", "\\text{east}"),  # text
    ]
    pick = rng.random()
    for weight, tail, gold in forms:
        pick -= weight
        if pick <= 0:
            return tail, gold
    return forms[0][1], forms[0][2]


def make_responses(count: int, tokens: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    pool = [_reasoning(rng, tokens) for _ in range(64)]  # distinct texts, reused to keep generation quick
    items = []
    for i in range(count):
        tail, gold = _answer(rng)
        items.append((pool[i % len(pool)] + f" [{i}] " + tail, gold, "math"))
    return items


def grading(count: int, tokens: int) -> None:
    items = make_responses(count, tokens)
    chars = statistics.fmean(len(r) for r, _, _ in items)
    to_verify = sum(1 for r, g, k in items if (e := extract_answer(r, k)) is not None and fast_verdict(e, g, k) is None)
    print(f"grading: {count} responses, mean {chars:,.0f} characters (~{chars / CHARS_PER_TOKEN:,.0f} tokens); "
          f"{to_verify / count:.1%} need math-verify after the fast path")
    warm_up = [("\\boxed{\\sqrt{2}}", "\\frac{2}{\\sqrt{2}}", "math")]  # needs math-verify: starts the pool
    for workers in (1, 2):
        with Grader(workers=workers, timeout=5.0) as grader:
            start = time.perf_counter()
            grader.grade(warm_up)
            startup = time.perf_counter() - start
            start = time.perf_counter()
            results = grader.grade(items)
            seconds = time.perf_counter() - start
        correct = sum(1 for r in results if r.correct)
        print(f"  Grader workers={workers}: {count / seconds:,.0f} responses/s ({seconds:.2f} s; pool start-up {startup:.2f} s "
              f"before; {correct / count:.1%} correct, {sum(r.correct is None for r in results)} ungraded)")

    from math_verify import parse, verify

    sample = items[:100]
    start = time.perf_counter()
    for response, gold, _ in sample:
        verify(parse(f"${gold}$"), parse(response))
    seconds = time.perf_counter() - start
    print(f"  math-verify on each whole response (one process, {len(sample)} responses): {len(sample) / seconds:,.1f} responses/s")


DEGENERATE_CHARS = 100_000


def _degenerate(rng: random.Random, i: int) -> tuple[str, str, str]:
    """One response of ~100k characters of the kinds a model writes when it loops until max_tokens."""
    n = rng.randint(2, 999)
    size = DEGENERATE_CHARS
    kinds = [
        ("Wait, let me reconsider the problem. " * (size // 37), str(n)),  # a repetition loop, no answer
        ("\\boxed{" * (size // 7), str(n)),  # unclosed boxes
        ("Let me compute " + "\\frac{1}{2} + " * (size // 16) + " so \\boxed{" + str(n), str(n)),  # cut inside the box
        ("so \\boxed{" + "9" * size + "}", str(n)),  # a huge number
        (f"\\boxed{{{n}}} and then " * (size // 20), str(n)),  # many closed boxes, right answer last
        ("the answer is " + "1, " * (size // 3), str(n)),  # an endless list after an answer phrase
    ]
    text, gold = kinds[i % len(kinds)]
    return text, gold, "math"


def degenerate_mix(count: int, tokens: int, share: float = 0.1, rounds: int = 2) -> None:
    clean = make_responses(count, tokens)
    rng = random.Random(1)
    bad = set(rng.sample(range(count), int(count * share)))
    mixed = list(clean)
    for n, i in enumerate(sorted(bad)):
        mixed[i] = _degenerate(rng, n)
    chars = statistics.fmean(len(r) for r, _, _ in mixed)
    print(f"degenerate mix: {count} responses, {len(bad)} degenerate (~{DEGENERATE_CHARS:,} characters each), "
          f"mean {chars:,.0f} characters; beside the same responses without them, alternated")
    warm_up = [("\\boxed{\\sqrt{2}}", "\\frac{2}{\\sqrt{2}}", "math")]
    rates: dict[str, list[tuple[float, float]]] = {"clean": [], "mixed": []}
    with Grader(workers=2, timeout=5.0) as grader:
        grader.grade(warm_up)
        for r in range(rounds):
            for name in ("clean", "mixed") if r % 2 == 0 else ("mixed", "clean"):
                grader.close()  # a fresh pool each time: answers verified in one pass are not cached across passes
                grader.grade(warm_up)
                start, cpu = time.perf_counter(), time.process_time()
                results = grader.grade(clean if name == "clean" else mixed)
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                assert not any(x.correct is None for x in results)
                rates[name].append((count / seconds, cpu))
        worst, worst_kind = 0.0, -1
        for n in range(60):  # each degenerate kind ten times, graded alone
            item = _degenerate(rng, n)
            start_one = time.perf_counter()
            grader.grade([item])
            took = time.perf_counter() - start_one
            if took > worst:
                worst, worst_kind = took, n % 6
        nested = ("\\boxed{" + "\\text{" * (DEGENERATE_CHARS // 7) + "x" + "}" * (DEGENERATE_CHARS // 7 + 1), "5", "math")
        start_one = time.perf_counter()
        grader.grade([nested])
        nested_seconds = time.perf_counter() - start_one
    for name, runs in rates.items():
        print(f"  Grader workers=2, {name}: {', '.join(f'{rate:,.0f}' for rate, _ in runs)} responses/s "
              f"(CPU in the grading process: {', '.join(f'{cpu:.2f} s' for _, cpu in runs)})")
    print(f"  slowest degenerate response alone: {worst * 1000:.1f} ms (kind {worst_kind}); "
          f"14,000 nested \\text{{ in a box (not in the mix): {nested_seconds * 1000:.1f} ms")


def generation(requests: int, concurrency: int, max_tokens: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model = build_servable_model(Path(tmp) / "tiny")
        with running_vllm(small_model_options(model, "tiny")) as base_url:
            prompts = [f"Compute {i} times {i + 1}, step by step." for i in range(requests)]
            load_test(base_url, "tiny", prompts[:32], max_tokens=max_tokens, concurrency=concurrency)  # warm-up
            plain: list[float] = []
            harness: list[float] = []

            def run_plain() -> None:
                plain.append(load_test(base_url, "tiny", prompts, max_tokens=max_tokens, concurrency=concurrency)["requestsPerSecond"])

            def run_harness() -> None:
                batch = [
                    GenerationRequest(id=str(i), messages=[{"role": "user", "content": p}], max_tokens=max_tokens)
                    for i, p in enumerate(prompts)
                ]
                cache = Path(tmp) / f"cache-{len(harness)}.jsonl"  # a fresh cache: every request is generated
                generator = OpenAIGenerator(base_url, "tiny", concurrency=concurrency, cache_path=cache)
                start = time.perf_counter()
                generator.generate(batch)
                harness.append(requests / (time.perf_counter() - start))

            for r in range(rounds):  # alternate the order (ABBA) so that drift in a shared machine's load cancels
                for run in (run_plain, run_harness) if r % 2 == 0 else (run_harness, run_plain):
                    run()
    print(f"generation: {requests} requests x {rounds} rounds, {max_tokens} new tokens each, concurrency {concurrency}, "
          f"tiny model on vLLM's CPU backend")
    print(f"  plain load generator: {', '.join(f'{x:.1f}' for x in plain)} requests/s (mean {statistics.fmean(plain):.1f})")
    print(f"  OpenAIGenerator (retries, resume cache): {', '.join(f'{x:.1f}' for x in harness)} requests/s "
          f"(mean {statistics.fmean(harness):.1f})")
    print(f"  harness / load generator: {statistics.fmean(harness) / statistics.fmean(plain):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", type=int, default=10000)
    parser.add_argument("--tokens", type=int, default=8000, help="reasoning tokens per response")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--part", choices=["all", "grading", "degenerate", "generation"], default="all")
    args = parser.parse_args()
    if args.part in ("all", "grading"):
        grading(args.responses, args.tokens)
    if args.part in ("all", "degenerate"):
        degenerate_mix(args.responses, args.tokens)
    if args.part in ("all", "generation"):
        generation(args.requests, args.concurrency, args.max_tokens, args.rounds)


if __name__ == "__main__":
    main()
