"""Recall and false drops of near-duplicate detection on short math problems, per shingle size and threshold.

    python benchmarks/dedupe_defaults.py [--benchmark-dir /work/shared/data/benchmarks] [--seed 0]

Development data only: the questions of the benchmark files (MATH500, AIME24, AMC23, OlympiadBench;
1,245 distinct texts). Positives: each 20–40-word question with one, and separately two, random word
edits (a word replaced by another word of the benchmark vocabulary, inserted, or deleted; the
edit kind drawn per edit). Negatives: the distinct questions themselves.

Per scheme (word n-gram shingles as `reasonops.curate.dedupe` builds them) and threshold it prints:
recall (share of edited copies whose exact shingle Jaccard to the original reaches the threshold) and
flagged (questions whose best Jaccard to any other distinct question reaches it). It then runs the
real `dedupe` stage (default settings unless --shingle/--threshold) on the questions plus all edited copies and prints how
many copies it caught and how many distinct questions it dropped, with the dropped pairs' kind.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from reasonops.api.v1alpha1 import DedupeStage  # noqa: E402
from reasonops.curate.dedupe import DEFAULT_SHINGLE, DEFAULT_THRESHOLD, dedupe  # noqa: E402
from reasonops.curate.records import Problem, StageReport  # noqa: E402
from reasonops.curate.text import normalize, words  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)


def questions(directory: Path) -> list[str]:
    texts = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            texts.append(normalize(row.get("problem") or row.get("question")))
    return list(dict.fromkeys(texts))


def edit(text: str, edits: int, rng: random.Random, vocabulary: list[str]) -> str:
    """Replace, insert or delete `edits` words that hold no digit (a changed number is a different problem)."""
    tokens = text.split()
    for _ in range(edits):
        wordy = [i for i, t in enumerate(tokens) if not any(c.isdigit() for c in t)]
        kind, at = rng.choice("rid"), rng.choice(wordy)
        if kind == "r":
            tokens[at] = rng.choice(vocabulary)
        elif kind == "i":
            tokens.insert(at, rng.choice(vocabulary))
        elif len(tokens) > 1:
            del tokens[at]
    return " ".join(tokens)


def shingles(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1))}


def jaccard(a: set, b: set) -> float:
    shared = len(a & b)
    return shared / (len(a) + len(b) - shared) if shared else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shingle", type=int, default=DEFAULT_SHINGLE, help="shingle size of the dedupe run")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="threshold of the dedupe run")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pool = questions(args.benchmark_dir)
    if not pool:
        parser.error(f"no benchmark questions in {args.benchmark_dir} (pass --benchmark-dir)")
    vocabulary = sorted({w for q in pool for w in q.split() if not any(c.isdigit() for c in w)})
    short = [q for q in pool if 20 <= len(q.split()) <= 40]
    copies = {k: [edit(q, k, rng, vocabulary) for q in short] for k in (1, 2)}
    print(f"{len(pool)} distinct questions, {len(short)} of 20-40 words; {len(short)} copies each with 1 and 2 edits")
    print("scheme      " + "  ".join(f"{t:>15}" for t in THRESHOLDS) + "   (recall 1-edit/2-edit, flagged)")
    for n in (1, 2, 3, 5):
        sets = [shingles(q, n) for q in pool]
        best = [0.0] * len(pool)
        for i in range(len(pool)):
            for j in range(i + 1, len(pool)):
                value = jaccard(sets[i], sets[j])
                best[i], best[j] = max(best[i], value), max(best[j], value)
        similarity = {k: [jaccard(shingles(q, n), shingles(c, n)) for q, c in zip(short, cs)] for k, cs in copies.items()}
        cells = []
        for t in THRESHOLDS:
            r1, r2 = (sum(v >= t for v in similarity[k]) / len(short) for k in (1, 2))
            cells.append(f"{r1:.3f}/{r2:.3f} {sum(b >= t for b in best):>3}")
        print(f"word {n}-gram " + "  ".join(cells))

    problems = [Problem(f"q{i}", q, None, "bench") for i, q in enumerate(pool)]
    index = {q: i for i, q in enumerate(pool)}
    for k, cs in copies.items():
        problems += [Problem(f"e{k}-{index[q]}", c, None, "copy") for q, c in zip(short, cs)]
    report = StageReport("dedupe", "dedupe")
    kept = {p.id for p in dedupe(problems, DedupeStage(shingleSize=args.shingle, threshold=str(args.threshold)), report, workers=2)}
    caught = {k: sum(not (f"q{index[q]}" in kept and f"e{k}-{index[q]}" in kept) for q in short) for k in (1, 2)}
    distinct_dropped = [d for d in report.drops if d.id.startswith("q") and d.detail and d.detail.split()[1].startswith("q")]
    print(f"\ndedupe with shingleSize {args.shingle}, threshold {args.threshold}:"
          f" caught {caught[1]}/{len(short)} one-edit and {caught[2]}/{len(short)} two-edit copies;"
          f" dropped {len(distinct_dropped)} of {len(pool)} distinct questions as duplicates of other distinct questions")
    for drop in distinct_dropped[:40]:
        other = drop.detail.split()[1]
        print(f"  {drop.id} {drop.detail}: {pool[int(drop.id[1:])][:90]!r} ~ {pool[int(other[1:])][:90]!r}")


if __name__ == "__main__":
    main()
