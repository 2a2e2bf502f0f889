"""Drop problems that overlap evaluation benchmarks (word n-gram overlap of the question text).

A problem is contaminated by a benchmark item when they share at least `threshold` (default 0.5) of the
problem's distinct word n-grams (default n = 13), or of the item's: the second direction catches a
benchmark question copied whole into a longer problem (e.g. behind an instruction sentence). Texts are compared as lower-cased word sequences after
the same normalisation as the pool, so case, spacing, punctuation and LaTeX markup do not hide a copy.
Texts shorter than n words are compared whole:

- an item shorter than n words ("Simplify $\\sqrt{242}$.") contaminates a problem that contains its full
  word sequence and adds fewer than n words of its own (an instruction sentence, say), since such a
  problem shares no n-gram with anything but the item;
- a problem shorter than n words is contaminated when its full word sequence occurs in an item.

Every drop names the benchmark item it matched (`benchmark:item-id`) and the share of shared n-grams.
The benchmarks come from the shared registry (`reasonops.benchmarks.load_benchmark`), the same one
EvalRun uses, so curation checks exactly what evaluation measures.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..api import v1alpha1 as api
from ..api.common import decimal
from ..api.v1alpha1 import DecontaminateStage
from ..benchmarks import FILE_SUFFIXES, BenchmarkItem, load_benchmark
from .records import Problem, StageReport
from .text import Corpus, member, normalize, run_starts

log = logging.getLogger("reasonops.curate")

DEFAULT_NGRAM = api.DECONTAMINATE_NGRAM  # the API names each default once
DEFAULT_THRESHOLD = float(api.DECONTAMINATE_THRESHOLD)


@dataclass(frozen=True)
class Match:
    benchmark: str
    item_id: str
    share: float

    def __str__(self) -> str:
        return f"{self.benchmark}:{self.item_id} ({self.share:.0%} shared)"


def load_items(stage: DecontaminateStage) -> list[tuple[str, BenchmarkItem]]:
    """The items of every benchmark the stage names (raises WorkloadError when one cannot be loaded).

    A benchmark without a file in `benchmarkPath` (e.g. the built-in `demo`) is resolved by the
    registry as usual ($REASONOPS_BENCHMARK_DIR, built in, hub).
    """
    return [(name, item) for name in stage.benchmarks
            for item in load_benchmark(name, path=_file_for(stage.benchmarkPath, name))]


def _file_for(path: str | None, name: str) -> str | None:
    if path is None or not Path(path).is_dir():
        return path
    return path if any((Path(path) / f"{name}{suffix}").is_file() for suffix in FILE_SUFFIXES) else None


class BenchmarkIndex:
    """Hashed word n-grams of benchmark items, for matching many problems at once."""

    def __init__(self, items: list[tuple[str, BenchmarkItem]], n: int = DEFAULT_NGRAM) -> None:
        self.items = items
        self.n = n
        self.corpus = Corpus.build([normalize(item.question) for _, item in items])
        grams, owners = self.corpus.ngrams(n, whole_if_shorter=False)
        self.gram_items: dict[int, set[int]] = defaultdict(set)
        for gram, owner in zip(grams.tolist(), owners.tolist()):
            self.gram_items[gram].add(owner)
        self.gram_keys = np.sort(np.fromiter(self.gram_items, dtype=np.uint64, count=len(self.gram_items)))
        self.item_grams = Counter(item for owners in self.gram_items.values() for item in owners)
        # items shorter than n words, by length: hash of the whole word sequence -> items
        self.short_items: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, length in enumerate(self.corpus.lengths.tolist()):
            if 0 < length < n:
                self.short_items[length][int(self.corpus.sequence_hash(i))].append(i)

    def match(self, questions: list[str], threshold: float) -> dict[int, Match]:
        """Index of each contaminated question -> its best-matching benchmark item."""
        corpus = Corpus.build(questions)
        found: dict[int, Match] = {}
        for matches in (self._long(corpus, threshold), self._short_items(corpus), self._short_problems(corpus)):
            for i, match in matches.items():
                if i not in found or match.share > found[i].share:
                    found[i] = match
        return found

    def _match(self, item: int, share: float) -> Match:
        benchmark, entry = self.items[item]
        return Match(benchmark, entry.id, share)

    def _long(self, corpus: Corpus, threshold: float) -> dict[int, Match]:
        """Problems of at least n words against items of at least n words: the larger share of shared n-grams."""
        grams, docs = corpus.ngrams(self.n, whole_if_shorter=False)
        hit_docs = run_starts(docs[member(grams, self.gram_keys)])[0]
        bounds = np.searchsorted(docs, np.stack([hit_docs, hit_docs + 1]))
        found = {}
        for doc, start, end in zip(hit_docs.tolist(), bounds[0].tolist(), bounds[1].tolist()):
            own = set(grams[start:end].tolist())
            shared = Counter(item for gram in own for item in self.gram_items.get(gram, ()))
            share, item = max((max(n / len(own), n / self.item_grams[item]), -item) for item, n in shared.items())
            if share >= threshold:
                found[doc] = self._match(-item, share)
        return found

    def _short_items(self, corpus: Corpus) -> dict[int, Match]:
        """Items shorter than n words found whole inside a problem that adds fewer than n words to them."""
        found: dict[int, Match] = {}
        lengths = corpus.lengths
        for length, grams, docs in corpus.ngram_passes(sorted(self.short_items)):
            by_hash = self.short_items[length]
            hits = np.isin(grams, np.fromiter(by_hash, dtype=np.uint64, count=len(by_hash)))
            for gram, doc in zip(grams[hits].tolist(), docs[hits].tolist()):
                share = float(length / lengths[doc])
                if lengths[doc] - length < self.n and (doc not in found or share > found[doc].share):
                    found[doc] = self._match(by_hash[gram][0], share)
        return found

    def _short_problems(self, corpus: Corpus) -> dict[int, Match]:
        """Problems shorter than n words whose whole word sequence occurs in an item."""
        found = {}
        lengths = corpus.lengths
        short = np.nonzero((lengths > 0) & (lengths < self.n))[0]
        for length in np.unique(lengths[short]).tolist():
            grams, owners = self.corpus.ngrams(length, whole_if_shorter=False)
            first_owner = dict(zip(grams.tolist()[::-1], owners.tolist()[::-1]))  # earliest item wins
            for doc in short[lengths[short] == length].tolist():
                item = first_owner.get(int(corpus.sequence_hash(doc)))
                if item is not None:
                    found[doc] = self._match(item, 1.0)
        return found


def decontaminate(problems: list[Problem], stage: DecontaminateStage, items: list[tuple[str, BenchmarkItem]],
                  report: StageReport, index: BenchmarkIndex | None = None) -> list[Problem]:
    """Drop contaminated problems; `index` (of these items, built once) serves many batches of a pool."""
    n = stage.ngram or DEFAULT_NGRAM
    threshold = decimal(stage.threshold, DEFAULT_THRESHOLD)
    report.input = len(problems)
    matches = (index or BenchmarkIndex(items, n)).match([p.question for p in problems], threshold)
    for i in sorted(matches):
        report.drop(problems[i].id, "contaminated", str(matches[i]))
    kept = [p for i, p in enumerate(problems) if i not in matches]
    report.kept = len(kept)
    report.info = {
        "ngram": n, "threshold": threshold,
        "benchmarks": dict(Counter(name for name, _ in items)),
        "matchedBenchmarks": dict(Counter(m.benchmark for m in matches.values())),
    }
    return kept
