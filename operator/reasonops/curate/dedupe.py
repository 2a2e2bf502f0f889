"""Exact and near-duplicate removal that keeps the best member of every duplicate cluster.

Exact duplicates share the same word sequence after normalisation (case, spacing and punctuation are
ignored). Near-duplicates are found with MinHash-LSH (datasketch's `MinHashLSH` index): a candidate
pair counts only when the signatures' estimated Jaccard similarity of word shingles reaches the
threshold.

Problems are visited best first (`records.quality_key`: has a chain, has an answer, more correct
chains, higher score, longer chain); each is dropped when an already kept problem duplicates it, and
kept otherwise. So every dropped problem names the better problem that stands in for it, and no
chain of pairwise similarities can drop two problems that are not themselves similar.

The signatures are datasketch's `affine32` MinHash scheme computed for the whole corpus at once in
numpy (a per-document `MinHash.update_batch` costs ~30 µs, which dominates at 100k problems); a
test checks they equal datasketch's own for the same shingle hashes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..api.common import decimal
from ..api.v1alpha1 import DedupeStage
from .records import Problem, StageReport, quality_key
from .text import Corpus

log = logging.getLogger("reasonops.curate")

DEFAULT_THRESHOLD = 0.8
DEFAULT_SHINGLE = 5
DEFAULT_NUM_PERM = 128
SEED = 1
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
    signatures, has_shingles = minhash_signatures(corpus, shingle, num_perm, workers=workers)
    dropped = _near(problems, signatures, has_shingles, [i for i in order if i in survivors],
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


def _near(problems: list[Problem], signatures: np.ndarray, has_shingles: np.ndarray, order: list[int],
          threshold: float, num_perm: int, report: StageReport, progress: bool) -> set[int]:
    """Indices dropped as near-duplicates of a better kept problem."""
    from datasketch import LeanMinHash, MinHashLSH
    from tqdm.auto import tqdm

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    dropped: set[int] = set()
    for i in tqdm(order, desc="near-duplicates", disable=not progress, mininterval=10):
        if not has_shingles[i]:
            continue
        sketch = LeanMinHash(seed=SEED, hashvalues=signatures[i], scheme="affine32")
        candidates = lsh.query(sketch)
        if candidates:
            similarity = (signatures[candidates] == signatures[i]).mean(axis=1)
            best = int(np.argmax(similarity))
            if similarity[best] >= threshold:
                report.drop(problems[i].id, "near-duplicate",
                            f"of {problems[candidates[best]].id} (jaccard~{similarity[best]:.2f})")
                dropped.add(i)
                continue
        lsh.insert(i, sketch, check_duplication=False)
    return dropped


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


def minhash_signatures(corpus: Corpus, shingle: int, num_perm: int, seed: int = SEED,
                       workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures (n x num_perm, uint32) of every document, and which documents have shingles."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    values, docs = shingle_hashes(corpus, shingle)
    mixed = _fmix32(values)
    signatures = np.full((len(corpus), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)

    def block(start: int) -> tuple[np.ndarray, np.ndarray]:
        chunk_docs = docs[start : start + _CHUNK]
        permuted = mixed[start : start + _CHUNK, None] * a + b  # wraps modulo 2^32 like the affine32 scheme
        owners, firsts = np.unique(chunk_docs, return_index=True)
        return owners, np.minimum.reduceat(permuted, firsts, axis=0)

    # numpy releases the GIL in these kernels, so threads use both cores without copying the corpus
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for owners, minima in pool.map(block, range(0, len(mixed), _CHUNK)):
            np.minimum(signatures[owners], minima, out=minima)  # a document can span two blocks
            signatures[owners] = minima
    has_shingles = np.zeros(len(corpus), dtype=bool)
    has_shingles[docs] = True
    return signatures, has_shingles
