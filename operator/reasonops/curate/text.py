"""Text helpers shared by the curation stages: normalisation and hashed word n-grams.

Normalisation is NFKC, but characters whose compatibility form would change a formula's meaning
(superscripts, subscripts, vulgar fractions, double-struck letters) are first rewritten as LaTeX, so
`x²` becomes `x^{2}` rather than `x2` and `ℝ` becomes `\\mathbb{R}` rather than `R`. Line structure is
kept (steps of a chain are lines and paragraphs); runs of spaces collapse.

Near-duplicate detection and decontamination work on hashed word n-grams of a whole corpus at once
(`Corpus`): words are lower-cased `\\w+` runs, each distinct word gets a stable 64-bit hash, and n-gram
hashes are rolled in numpy, so 100k problems take a second or two instead of a Python loop per gram.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from itertools import chain
from typing import Iterator, Sequence

import numpy as np

_SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱ", "0123456789+-=()ni"))
_SUBSCRIPTS = dict(zip("₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₒₓ", "0123456789+-=()aeox"))
_FRACTIONS = {"½": (1, 2), "⅓": (1, 3), "⅔": (2, 3), "¼": (1, 4), "¾": (3, 4), "⅕": (1, 5), "⅖": (2, 5),
              "⅗": (3, 5), "⅘": (4, 5), "⅙": (1, 6), "⅚": (5, 6), "⅛": (1, 8), "⅜": (3, 8), "⅝": (5, 8),
              "⅞": (7, 8)}
_DOUBLE_STRUCK = {"ℕ": "N", "ℤ": "Z", "ℚ": "Q", "ℝ": "R", "ℂ": "C", "ℙ": "P"}

_LATEX_SAFE = {ord(c): f"^{{{v}}}" for c, v in _SUPERSCRIPTS.items()}
_LATEX_SAFE.update({ord(c): f"_{{{v}}}" for c, v in _SUBSCRIPTS.items()})
_LATEX_SAFE.update({ord(c): f"\\frac{{{a}}}{{{b}}}" for c, (a, b) in _FRACTIONS.items()})
_LATEX_SAFE.update({ord(c): f"\\mathbb{{{v}}}" for c, v in _DOUBLE_STRUCK.items()})
_INVISIBLE = {ord(c): None for c in "\u200b\u200c\u200d\u2060\ufeff\u00ad"}

_MANY_NEWLINES = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+")
_DIGIT = re.compile(r"\d")


_UNTIDY = ("  ", "\t", "\r", "\n ", " \n", "\n\n\n", "\x0b", "\x0c")


def normalize(text: str) -> str:
    """Unicode (LaTeX-aware NFKC) and whitespace normalisation; keeps line breaks."""
    if text.isascii() and not any(s in text for s in _UNTIDY) and text == text.strip():
        return text  # most rows: substring tests in C are far cheaper than rebuilding the text
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text.translate(_LATEX_SAFE).translate(_INVISIBLE))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # str.split() collapses every kind of whitespace in C, far faster than a regex over each line
    text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
    return (_MANY_NEWLINES.sub("\n\n", text) if "\n\n\n" in text else text).strip()


def words(text: str) -> list[str]:
    """Lower-cased word tokens used by dedupe and decontamination (punctuation and LaTeX markup ignored)."""
    return _WORD.findall(text.lower())


def _word_hashes(tokens: Sequence[str], with_digits: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Stable 64-bit hash per token (hashing each distinct word once) and, with_digits, which tokens hold a
    digit (a regex per distinct word: `\\d`, Unicode decimal digits)."""
    import pandas as pd  # a dependency of `datasets`; its factorize and siphash are vectorised

    if not tokens:
        return np.zeros(0, dtype=np.uint64), (np.zeros(0, dtype=bool) if with_digits else None)
    codes, uniques = pd.factorize(np.asarray(tokens, dtype=object), sort=False)
    unique_hashes = pd.util.hash_array(np.asarray(uniques, dtype=object), categorize=False)
    digits = None
    if with_digits:
        digits = np.fromiter((_DIGIT.search(u) is not None for u in uniques), dtype=bool, count=len(uniques))[codes]
    return unique_hashes[codes].astype(np.uint64, copy=False), digits


def member(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """values that occur in sorted_keys (np.isin sorts both sides; this sorts neither, ~2.5x faster)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(values), dtype=bool)
    positions = np.searchsorted(sorted_keys, values)
    positions[positions == len(sorted_keys)] = 0
    return sorted_keys[positions] == values


def run_starts(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and where each run starts (np.unique is slow on large arrays)."""
    if len(sorted_values) == 0:
        return sorted_values, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    return sorted_values[starts], starts


def _multiset_sums(hashes: np.ndarray, selected: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per document, the sum (mod 2**64) of its selected tokens' hashes: a multiset hash, order-free."""
    with np.errstate(over="ignore"):
        running = np.concatenate(([np.uint64(0)], np.cumsum(np.where(selected, hashes, np.uint64(0)), dtype=np.uint64)))
        return running[offsets[1:]] - running[offsets[:-1]]


_ROLL = np.uint64(1099511628211)  # FNV prime: mixes positions so "a b" and "b a" differ


@dataclass
class Corpus:
    """Word hashes of many documents in one flat array; document i spans offsets[i]:offsets[i+1]."""

    hashes: np.ndarray
    offsets: np.ndarray
    # Per document (build(numbers=True)): a key of the multiset of its digit-bearing words ("12", "3x",
    # "x2"), 0 when it has none; equal multisets give equal keys, in any order.
    number_keys: np.ndarray | None = None

    @classmethod
    def build(cls, texts: Sequence[str], batch: int = 10_000, numbers: bool = False) -> "Corpus":
        """With `numbers`, also each document's number key (`number_keys`)."""
        # in batches: a list of 100k tokenised texts as Python strings would take gigabytes
        hashes, lengths, digits = [], [], []
        for start in range(0, len(texts), batch):
            tokenised = [words(t) for t in texts[start : start + batch]]
            lengths.append(np.fromiter((len(t) for t in tokenised), dtype=np.int64, count=len(tokenised)))
            batch_hashes, batch_digits = _word_hashes(list(chain.from_iterable(tokenised)), with_digits=numbers)
            hashes.append(batch_hashes)
            digits.append(batch_digits)
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        if texts:
            np.cumsum(np.concatenate(lengths), out=offsets[1:])
        corpus = cls(np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64), offsets)
        if numbers:
            corpus.number_keys = _multiset_sums(corpus.hashes, np.concatenate(digits) if digits else np.zeros(0, dtype=bool), offsets)
        return corpus

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def ngrams(self, n: int, whole_if_shorter: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every word n-gram and the document each belongs to (sorted by document).

        A document shorter than n words contributes one gram of all its words (when whole_if_shorter),
        so short texts still compare by their full content; an empty document contributes nothing.
        """
        gram_hashes, gram_docs = next(self.ngram_passes([n]))[1:]
        if not whole_if_shorter:
            return gram_hashes, gram_docs
        short = np.nonzero((self.lengths < n) & (self.lengths > 0))[0]
        if len(short) == 0:
            return gram_hashes, gram_docs
        whole = np.array([self.sequence_hash(int(i)) for i in short], dtype=np.uint64)
        hashes = np.concatenate([gram_hashes, whole])
        docs = np.concatenate([gram_docs, short])
        order = np.argsort(docs, kind="stable")
        return hashes[order], docs[order]

    def ngram_passes(self, sizes: list[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(n, gram hashes, their documents) for each n in sizes, ascending, in one rolling pass.

        The hash of an (n+1)-gram extends that of the n-gram at the same position, so all sizes up
        to the largest cost one pass over the corpus instead of one per size.
        """
        h, total = self.hashes, len(self.hashes)
        doc_of = np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)
        wanted = set(sizes)
        grams = np.zeros(total, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for n in range(1, max(sizes, default=0) + 1):
                count = max(total - n + 1, 0)
                grams = grams[:count] * _ROLL + h[n - 1 : n - 1 + count]
                if n in wanted:
                    valid = doc_of[:count] == doc_of[n - 1 : n - 1 + count]
                    yield n, grams[valid], doc_of[:count][valid]

    def sequence_hash(self, i: int) -> np.uint64:
        """Rolling hash of document i's whole word sequence (equal to its n-gram hash for n = its length)."""
        value = np.uint64(0)
        with np.errstate(over="ignore"):
            for w in self.hashes[self.offsets[i] : self.offsets[i + 1]]:
                value = value * _ROLL + w
        return value
