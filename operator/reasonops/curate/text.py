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
from typing import Sequence

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

_SPACES = re.compile(r"[^\S\n]+")
_SPACE_AROUND_NEWLINE = re.compile(r" *\n *")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """Unicode (LaTeX-aware NFKC) and whitespace normalisation; keeps line breaks."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text.translate(_LATEX_SAFE).translate(_INVISIBLE))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", text)
    return _MANY_NEWLINES.sub("\n\n", text).strip()


def words(text: str) -> list[str]:
    """Lower-cased word tokens used by dedupe and decontamination (punctuation and LaTeX markup ignored)."""
    return _WORD.findall(text.lower())


def _word_hashes(tokens: Sequence[str]) -> np.ndarray:
    """Stable 64-bit hash per token (hashing each distinct word once)."""
    import pandas as pd  # a dependency of `datasets`; its factorize and siphash are vectorised

    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    codes, uniques = pd.factorize(np.asarray(tokens, dtype=object), sort=False)
    unique_hashes = pd.util.hash_array(np.asarray(uniques, dtype=object), categorize=False)
    return unique_hashes[codes].astype(np.uint64, copy=False)


_ROLL = np.uint64(1099511628211)  # FNV prime: mixes positions so "a b" and "b a" differ


@dataclass
class Corpus:
    """Word hashes of many documents in one flat array; document i spans offsets[i]:offsets[i+1]."""

    hashes: np.ndarray
    offsets: np.ndarray

    @classmethod
    def build(cls, texts: Sequence[str]) -> "Corpus":
        tokenised = [words(t) for t in texts]
        lengths = np.fromiter((len(t) for t in tokenised), dtype=np.int64, count=len(tokenised))
        offsets = np.zeros(len(tokenised) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(_word_hashes(list(chain.from_iterable(tokenised))), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def ngrams(self, n: int, whole_if_shorter: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every word n-gram and the document each belongs to.

        A document shorter than n words contributes one gram of all its words (when whole_if_shorter),
        so short texts still compare by their full content; an empty document contributes nothing.
        """
        h = self.hashes
        total = len(h)
        count = max(total - n + 1, 0)
        grams = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(n):
                grams = grams * _ROLL + h[j : j + count]
        doc_of = np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)
        starts = np.arange(count, dtype=np.int64)
        valid = doc_of[:count] == doc_of[starts + n - 1] if count else np.zeros(0, dtype=bool)
        gram_hashes, gram_docs = grams[valid], doc_of[:count][valid]
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

    def sequence_hash(self, i: int) -> np.uint64:
        """Rolling hash of document i's whole word sequence (equal to its n-gram hash for n = its length)."""
        value = np.uint64(0)
        with np.errstate(over="ignore"):
            for w in self.hashes[self.offsets[i] : self.offsets[i + 1]]:
                value = value * _ROLL + w
        return value
