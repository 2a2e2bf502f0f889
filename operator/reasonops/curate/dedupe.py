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
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from ..api import v1alpha1 as api
from ..api.common import decimal
from ..api.v1alpha1 import DedupeStage
from .records import Problem, StageReport, quality_key
from .text import Corpus, run_starts

log = logging.getLogger("reasonops.curate")

DEFAULT_THRESHOLD = float(api.DEDUPE_THRESHOLD)  # named in the API; the module docstring has the measurements
DEFAULT_SHINGLE = api.DEDUPE_SHINGLE_SIZE
DEFAULT_NUM_PERM = api.DEDUPE_NUM_PERM
SEED = 1
LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative): candidates are verified exactly anyway
_CHUNK = 1 << 16  # shingles per numpy block: 64k x 128 permutations x 4 bytes = 32 MiB


def dedupe(problems: list[Problem], stage: DedupeStage, report: StageReport,
           workers: int = 2, progress: bool = False) -> list[Problem]:
    """The stage on problems held in memory (tests, small pools); `dedupe_rows` does the work."""
    order = sorted(range(len(problems)), key=lambda i: quality_key(problems[i]), reverse=True)
    kept = dedupe_rows(np.array(order, dtype=np.int64), lambda rows: [problems[i].question for i in rows],
                       lambda i: problems[i].id, stage, report, workers=workers, progress=progress)
    return [problems[i] for i in np.sort(kept).tolist()]


def dedupe_rows(order: np.ndarray, questions: Callable[[np.ndarray], list[str]], ids: Callable[[int], str],
                stage: DedupeStage, report: StageReport, workers: int = 2, progress: bool = False,
                work_dir: Path | None = None, batch: int = 20_000) -> np.ndarray:
    """Rows that survive, of `order` (row numbers, best first); only compact per-row state stays in memory.

    The questions are read `batch` rows at a time; each row leaves an exact key, a number key, its band
    keys (uint32) and its shingle hashes, which go to a temporary file in `work_dir` (read back with pread) for the exact
    Jaccard checks of the candidate pairs.
    """
    threshold = decimal(stage.threshold, DEFAULT_THRESHOLD)
    shingle = stage.shingleSize or DEFAULT_SHINGLE
    num_perm = stage.numPerm or DEFAULT_NUM_PERM
    report.input = len(order)
    count = len(order)
    exact = np.zeros(count, dtype=np.uint64)
    numbers = np.zeros(count, dtype=np.uint64)
    sizes = np.zeros(count, dtype=np.int64)
    bands: np.ndarray | None = None
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="dedupe-") as tmp:
        shingle_file = Path(tmp) / "shingles.u32"
        with shingle_file.open("wb") as fh:
            for start in range(0, count, batch):
                rows = order[start : start + batch]
                texts = questions(rows)
                corpus = Corpus.build(texts, numbers=True)
                span = slice(start, start + len(rows))
                exact[span] = [_sequence_key(corpus, i, t) for i, t in enumerate(texts)]
                numbers[span] = corpus.number_keys  # the numbers: a changed one makes another problem
                shingles = ShingleSets(*shingle_hashes(corpus, shingle), len(corpus))
                keys = band_keys(minhash_signatures(shingles, num_perm, workers=workers), threshold, num_perm)
                if bands is None:
                    bands = np.zeros((count, keys.shape[1]), dtype=np.uint32)
                bands[span] = (keys ^ (keys >> np.uint64(32))).astype(np.uint32)
                sizes[span] = np.diff(shingles.offsets)
                fh.write(shingles.values.tobytes())
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        fd = os.open(shingle_file, os.O_RDONLY)

        def values(i: int) -> np.ndarray:
            # pread, not a memory map: mapped pages would count towards the process's memory, and the
            # candidates are spread over the whole file
            start, end = int(offsets[i]), int(offsets[i + 1])
            return np.frombuffer(os.pread(fd, 4 * (end - start), 4 * start), dtype=np.uint32)

        try:
            kept = _exact(order, exact, ids, report)
            dropped = _near(order, kept, bands, values, offsets, numbers, ids, threshold, report, progress)
        finally:
            os.close(fd)
    kept[dropped] = False
    report.kept = int(kept.sum())
    report.info = {"threshold": threshold, "shingleSize": shingle, "numPerm": num_perm, "numbersMustMatch": True}
    return order[kept]


def _sequence_key(corpus: Corpus, i: int, text: str) -> int:
    """64-bit key of a question's word sequence (of its text when it has no words)."""
    start, end = corpus.offsets[i], corpus.offsets[i + 1]
    data = corpus.hashes[start:end].tobytes() if end > start else text.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _exact(order: np.ndarray, keys: np.ndarray, ids: Callable[[int], str], report: StageReport) -> np.ndarray:
    """Which positions of `order` survive exact deduplication (the best of each group of equal keys)."""
    by_key = np.argsort(keys, kind="stable")  # positions are ranks, so the first of a run is its best
    sorted_keys = keys[by_key]
    repeat = np.concatenate(([False], sorted_keys[1:] == sorted_keys[:-1]))
    first = by_key[np.maximum.accumulate(np.where(~repeat, np.arange(len(keys)), 0))]
    kept = np.ones(len(keys), dtype=bool)
    for position, keeper in sorted(zip(by_key[repeat].tolist(), first[repeat].tolist())):
        report.drop(ids(int(order[position])), "exact-duplicate", f"of {ids(int(order[keeper]))}")
        kept[position] = False
    return kept


def _near(order: np.ndarray, kept: np.ndarray, bands: np.ndarray | None, values: Callable[[int], np.ndarray], offsets: np.ndarray,
          numbers: np.ndarray, ids: Callable[[int], str], threshold: float, report: StageReport,
          progress: bool) -> np.ndarray:
    """Positions dropped as near-duplicates of a better kept position (with the same numbers)."""
    from tqdm.auto import tqdm

    later, better = candidate_pairs(np.flatnonzero(kept & (np.diff(offsets) > 0)), bands, numbers)
    dropped = np.zeros(len(order), dtype=bool)
    if not len(later):
        return dropped
    firsts = np.flatnonzero(np.concatenate(([True], later[1:] != later[:-1])))
    bounds = np.append(firsts, len(later))
    for k in tqdm(range(len(firsts)), desc="near-duplicates", disable=not progress, mininterval=10):
        position = int(later[firsts[k]])
        mine = values(position)
        best = max(((_jaccard(mine, values(j)), -j) for j in better[bounds[k]:bounds[k + 1]].tolist() if not dropped[j]),
                   default=None)
        if best is not None and best[0] >= threshold:
            report.drop(ids(int(order[position])), "near-duplicate", f"of {ids(int(order[-best[1]]))} (jaccard {best[0]:.2f})")
            dropped[position] = True
    return dropped


def candidate_pairs(candidates: np.ndarray, bands: np.ndarray | None, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(later, better) positions that share a band key and their numbers, each pair once, sorted by later
    then better (positions are ranks: the smaller is the better).

    Rows are grouped by band key and number key together, so a band key that a template's wording gives
    thousands of problems with different numbers yields no pairs: pairing within runs of the band key
    alone grows with the square of the pool (a run of 1,321 rows at 400k problems, 4.2M pairs, of which
    0.74M have the same numbers). The pairs of a run are made in numpy, not one by one."""
    none = np.zeros(0, dtype=np.int64)
    if bands is None or not len(candidates):
        return none, none
    numbers_low = numbers[candidates] & np.uint64(0xFFFFFFFF)
    found: list[np.ndarray] = []
    for band in range(bands.shape[1]):
        keys = (bands[candidates, band].astype(np.uint64) << np.uint64(32)) | numbers_low
        by_key = np.argsort(keys, kind="stable")
        sorted_keys = keys[by_key]
        _, starts = run_starts(sorted_keys)
        lengths = np.diff(np.append(starts, len(keys)))
        multi = lengths > 1
        if not multi.any():
            continue
        # every member of a run pairs with each member before it in the run (stable sort: the better ones)
        starts, lengths = starts[multi], lengths[multi]
        members = _ranges(starts + 1, lengths - 1)  # sorted indexes of every member but a run's first
        run_of = np.repeat(starts, lengths - 1)
        counts = members - run_of
        later_sorted = np.repeat(members, counts)
        better_sorted = _ranges(run_of, counts)
        later_pos = candidates[by_key[later_sorted]]
        better_pos = candidates[by_key[better_sorted]]
        same = numbers[later_pos] == numbers[better_pos]  # the low 32 bits matched; all 64 must
        found.append((later_pos[same].astype(np.int64) << 32) | better_pos[same].astype(np.int64))
    if not found:
        return none, none
    pairs = np.unique(np.concatenate(found))
    return pairs >> 32, pairs & 0xFFFFFFFF


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of arange(start, start + length) for each pair (lengths may be 0)."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - np.repeat(offsets - starts, lengths)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared)


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
