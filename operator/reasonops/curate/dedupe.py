"""Exact and near-duplicate removal that keeps the best member of every duplicate cluster.

Exact duplicates share the same word sequence after normalisation (case, spacing and punctuation are
ignored). Near-duplicates are pairs with the same numbers (the multiset of digit-bearing words: a
changed number makes a different problem, as in templated pools) whose word-shingle sets have a
Jaccard similarity of at least the threshold.

Defaults: word 2-shingles and threshold 0.6, chosen for problem statements, which are short. A one-word
edit of an n-word text changes about 2 of its n-1 bigrams (Jaccard (n-3)/(n+1): 0.81 at 20 words),
two edits about 4 (0.65 at 20 words, 0.81 at 40), while 5-shingles fall to 0.5-0.7 after one edit.
Measured on the 1,245 questions of MATH500, AIME24, AMC23 and OlympiadBench (benchmarks/dedupe_defaults.py,
docs/benchmarks.md): one- and two-word edits of the 462 questions of 20-40 words are caught 462/462
and 461/462 times (5-shingles at 0.8: 142 and 42), and none of the 1,245 distinct questions is dropped.
A problem under ~10 words that differs from another by one word only ("sum" for "product") is a
near-duplicate under these defaults; raise the threshold for pools of such very short problems.

Candidates come from MinHash-LSH with the band layout datasketch's `MinHashLSH` chooses, tuned to miss
few true pairs (false-negative weight 0.95: at 128 permutations and threshold 0.6 a pair at 0.6 is a
candidate with probability ~0.96, at 0.65 ~0.99; with the default weights only ~0.40 and ~0.60); every
candidate is then checked with the exact Jaccard similarity of the two shingle sets, so the looser
index costs a few extra set comparisons and never a wrong drop.

Problems are visited best first (`records.quality_key`: has a chain, has an answer, more correct
chains, higher score, longer chain); each is dropped when an already kept problem duplicates it, and
kept otherwise. So every dropped problem names the better problem that stands in for it, and no
chain of pairwise similarities can drop two problems that are not themselves similar.

The signatures are datasketch's `affine32` MinHash scheme computed for the whole corpus at once in
numpy (a per-document `MinHash.update_batch` costs ~30 µs), and band keys are hashed in numpy too
(`MinHashLSH.insert`/`query` cost ~60 µs per document in Python, 6 s per 100k problems); a test
checks the signatures equal datasketch's own for the same shingle hashes.
"""

from __future__ import annotations

import hashlib
import logging
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..api.common import decimal
from ..api.v1alpha1 import DedupeStage
from .records import Problem, StageReport, quality_key
from .text import Corpus, run_starts

log = logging.getLogger("reasonops.curate")

DEFAULT_THRESHOLD = 0.6  # see the module docstring for the measurements behind both
DEFAULT_SHINGLE = 2
DEFAULT_NUM_PERM = 128
SEED = 1
LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative): candidates are verified exactly anyway
_NUMBER = re.compile(r"\w*\d\w*")
_CHUNK = 1 << 16  # shingles per numpy block: 64k x 128 permutations x 4 bytes = 32 MiB


def dedupe(problems: list[Problem], stage: DedupeStage, report: StageReport,
           workers: int = 2, progress: bool = False) -> list[Problem]:
    threshold = decimal(stage.threshold, DEFAULT_THRESHOLD)
    shingle = stage.shingleSize or DEFAULT_SHINGLE
    num_perm = stage.numPerm or DEFAULT_NUM_PERM
    report.input = len(problems)
    order = sorted(range(len(problems)), key=lambda i: quality_key(problems[i]), reverse=True)
    corpus = Corpus.build([p.question for p in problems])

    survivors = _exact(problems, corpus, order, report)
    shingles = ShingleSets(*shingle_hashes(corpus, shingle), len(corpus))
    signatures = minhash_signatures(shingles, num_perm, workers=workers)
    numbers = [number_key(p.question) for p in problems]
    dropped = _near(problems, signatures, shingles, numbers, [i for i in order if i in survivors],
                    threshold, num_perm, report, progress)
    kept = [p for i, p in enumerate(problems) if i in survivors and i not in dropped]
    report.kept = len(kept)
    report.info = {"threshold": threshold, "shingleSize": shingle, "numPerm": num_perm}
    return kept


def _exact(problems: list[Problem], corpus: Corpus, order: list[int], report: StageReport) -> set[int]:
    """Indices surviving exact deduplication (the best of each group of equal word sequences)."""
    first: dict[bytes | str, int] = {}
    survivors: set[int] = set()
    for i in order:
        start, end = corpus.offsets[i], corpus.offsets[i + 1]
        key: bytes | str = corpus.hashes[start:end].tobytes() if end > start else problems[i].question
        if key in first:
            report.drop(problems[i].id, "exact-duplicate", f"of {problems[first[key]].id}")
        else:
            first[key] = i
            survivors.add(i)
    return survivors


def number_key(question: str) -> int:
    """A hash of the question's numbers (digit-bearing words, as a multiset): changing one changes the problem."""
    found = sorted(_NUMBER.findall(question.lower()))
    return int.from_bytes(hashlib.blake2b(" ".join(found).encode(), digest_size=8).digest(), "little") if found else 0


def _near(problems: list[Problem], signatures: np.ndarray, shingles: "ShingleSets", numbers: list[int],
          order: list[int], threshold: float, num_perm: int, report: StageReport, progress: bool) -> set[int]:
    """Indices dropped as near-duplicates of a better kept problem (with the same numbers)."""
    from tqdm.auto import tqdm

    keys = band_keys(signatures, threshold, num_perm).tolist()
    buckets: list[dict[int, list[int]]] = [{} for _ in keys[0]] if keys else []
    dropped: set[int] = set()
    for i in tqdm(order, desc="near-duplicates", disable=not progress, mininterval=10):
        if shingles.size(i) == 0:
            continue
        candidates = {j for band, key in enumerate(keys[i]) for j in buckets[band].get(key, ()) if numbers[j] == numbers[i]}
        best = max(((shingles.jaccard(i, j), j) for j in candidates), default=None)
        if best is not None and best[0] >= threshold:
            report.drop(problems[i].id, "near-duplicate", f"of {problems[best[1]].id} (jaccard {best[0]:.2f})")
            dropped.add(i)
        else:
            for band, key in enumerate(keys[i]):
                buckets[band].setdefault(key, []).append(i)
    return dropped


def band_keys(signatures: np.ndarray, threshold: float, num_perm: int) -> np.ndarray:
    """One 64-bit key per document and LSH band (documents x bands), bands as datasketch lays them out."""
    from datasketch import MinHashLSH

    layout = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
    multipliers = np.random.default_rng(SEED).integers(1, 2**63, size=layout.r, dtype=np.uint64) | np.uint64(1)
    keys = np.zeros((len(signatures), layout.b), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(layout.b):
            rows = signatures[:, band * layout.r : (band + 1) * layout.r].astype(np.uint64)
            keys[:, band] = (rows * multipliers).sum(axis=1)  # wraps modulo 2^64: a random linear hash
    return keys


class ShingleSets:
    """Each document's distinct shingle hashes, sorted, for exact Jaccard similarities."""

    def __init__(self, values: np.ndarray, docs: np.ndarray, count: int) -> None:
        # one uint64 sort of (document, value) instead of a two-key lexsort
        combined = np.sort((docs.astype(np.uint64) << np.uint64(32)) | values.astype(np.uint64), kind="stable")
        combined = run_starts(combined)[0]  # (a stable sort of uint64 is a radix sort)
        self.docs = (combined >> np.uint64(32)).astype(np.int64)
        self.values = (combined & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        self.offsets = np.searchsorted(self.docs, np.arange(count + 1))

    def size(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def get(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def jaccard(self, i: int, j: int) -> float:
        shared = len(np.intersect1d(self.get(i), self.get(j), assume_unique=True))
        return shared / (self.size(i) + self.size(j) - shared)


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, the pre-mix of datasketch's affine32 scheme."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def shingle_hashes(corpus: Corpus, shingle: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each document's word shingles (the values datasketch's hashfunc would return)."""
    grams, docs = corpus.ngrams(shingle)
    folded = ((grams >> np.uint64(32)) ^ grams).astype(np.uint32)
    return folded, docs


def minhash_signatures(shingles: ShingleSets, num_perm: int, seed: int = SEED, workers: int = 2) -> np.ndarray:
    """MinHash signatures (documents x num_perm, uint32); all-max for a document without shingles."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    docs = shingles.docs
    mixed = _fmix32(shingles.values)
    signatures = np.full((len(shingles.offsets) - 1, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)

    def block(start: int) -> tuple[np.ndarray, np.ndarray]:
        chunk = mixed[start : start + _CHUNK]
        owners, firsts = run_starts(docs[start : start + _CHUNK])
        # permutations x shingles, so the per-document minimum reduces along contiguous rows (30x faster)
        permuted = np.multiply(a[:, None], chunk[None, :])  # wraps modulo 2^32 like the affine32 scheme
        permuted += b[:, None]
        return owners, np.minimum.reduceat(permuted, firsts, axis=1).T

    # numpy releases the GIL in these kernels, so threads use both cores without copying the corpus
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for owners, minima in pool.map(block, range(0, len(mixed), _CHUNK)):
            np.minimum(signatures[owners], minima, out=minima)  # a document can span two blocks
            signatures[owners] = minima
    return signatures
