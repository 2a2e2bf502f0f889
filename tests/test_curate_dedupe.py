"""Deduplication: datasketch-compatible signatures, exact and near duplicates, keep-best."""

from __future__ import annotations

import random

import numpy as np

from reasonops.api.v1alpha1 import DedupeStage
from reasonops.curate.dedupe import ShingleSets, dedupe, minhash_signatures, shingle_hashes
from reasonops.curate.records import Chain, Problem, StageReport
from reasonops.curate.text import Corpus

RNG = random.Random(3)
WORDS = [f"w{i}" for i in range(2000)]


def text(n: int = 60) -> str:
    return " ".join(RNG.choice(WORDS) for _ in range(n))


def problem(pid: str, question: str, solution: str | None = None, answer: str | None = None) -> Problem:
    return Problem(pid, question, answer, "s", [Chain(solution)] if solution else [])


def run(problems: list[Problem], **stage: object) -> tuple[list[str], StageReport]:
    report = StageReport("dedupe", "dedupe")
    kept = dedupe(problems, DedupeStage.model_validate(stage), report)
    return [p.id for p in kept], report


def test_signatures_equal_datasketch_minhash() -> None:
    from datasketch import MinHash

    corpus = Corpus.build([text(RNG.randint(0, 80)) for _ in range(40)] + ["", "two words"])
    values, docs = shingle_hashes(corpus, 5)
    shingles = ShingleSets(values, docs, len(corpus))
    signatures = minhash_signatures(shingles, 64)
    for doc in range(len(corpus)):
        if shingles.size(doc) == 0:
            continue
        reference = MinHash(num_perm=64, seed=1, hashfunc=lambda v: v)  # the 32-bit values are the hashes
        reference.update_batch([int(v) for v in values[docs == doc]])
        assert np.array_equal(reference.hashvalues, signatures[doc])


def test_exact_duplicates_keep_the_member_with_a_solution() -> None:
    base = "What is the sum of the first ten positive integers?"
    ids, report = run([
        problem("bare", base.upper()),
        problem("short", "  " + base.replace(" ", "   "), "It is \\boxed{55}.", "55"),
        problem("long", base + " ", "Pair 1+10, 2+9, ...: five pairs of 11, so \\boxed{55}.", "55"),
        problem("other", "What is the product of the first ten positive integers?"),
    ])
    assert ids == ["long", "other"]
    assert report.reasons == {"exact-duplicate": 2}
    assert {d.id: d.detail for d in report.drops} == {"bare": "of long", "short": "of long"}


def test_near_duplicates_are_dropped_for_the_best_member() -> None:
    original = text(80)
    words = original.split()
    edited = " ".join(words[:40] + ["changed"] + words[41:])  # one word replaced: Jaccard ~0.89
    unrelated = text(80)
    ids, report = run([
        problem("edited", edited, "A long careful solution with steps \\boxed{1}.", "1"),
        problem("original", original),
        problem("unrelated", unrelated),
    ])
    assert ids == ["edited", "unrelated"]
    drop = report.drops[0]
    assert (drop.id, drop.reason) == ("original", "near-duplicate") and drop.detail.startswith("of edited (jaccard 0.8")


def test_threshold_and_shingle_size_come_from_the_spec() -> None:
    original = text(40)
    words = original.split()
    edited = " ".join(words[:20] + ["x", "y"] + words[22:])  # two words replaced in 40: Jaccard ~0.63
    assert run([problem("a", original), problem("b", edited)])[0] == ["a", "b"]
    assert run([problem("a", original), problem("b", edited)], threshold="0.5")[0] == ["a"]
    assert run([problem("a", original), problem("b", edited)], shingleSize=1)[0] == ["a"]


def test_many_planted_near_duplicates_are_found_without_false_drops() -> None:
    originals = [text(RNG.randint(50, 90)) for _ in range(400)]
    copies = []
    for i, original in enumerate(originals[:100]):
        words = original.split()
        words[RNG.randrange(len(words))] = "edited"
        copies.append(problem(f"copy{i}", " ".join(words)))
    ids, report = run([problem(f"p{i}", t) for i, t in enumerate(originals)] + copies, numPerm=128)
    assert report.reasons == {"near-duplicate": 100}
    kept = set(ids)
    assert {f"p{i}" for i in range(100, 400)} <= kept  # nothing unrelated dropped
    assert all((f"p{i}" in kept) != (f"copy{i}" in kept) for i in range(100))  # exactly one of each pair
