"""Perturbed variants of the final chains, for the "structure, not content" ablations.

A chain is split into steps: paragraphs when it has at least three, otherwise lines, otherwise
sentences. The final step (the one holding the last \\boxed{}) stays last, so structural perturbations
never move or remove the stated answer. `fraction` (default 0.67) sets how much is affected:

- shuffleSteps: that share of the other steps is permuted among its own positions;
- deleteSteps: that share of the other steps is removed;
- insertSteps: that many steps (relative to the chain's step count) taken from other samples'
  chains are inserted at random positions before the final step;
- wrongAnswer: the last \\boxed{} answer is replaced by a wrong one: an integer answer moves by a
  random non-zero offset, any other answer becomes a different sample's answer (fraction unused);
- removeKeywords: that share of the score keywords (verification, exploration, granularity lists) is
  deleted;
- corruptDigits: that share of the digits outside the final \\boxed{} is replaced by other digits.

Randomness is seeded per sample from (seed, sample id), so a variant does not change when other
samples are added or removed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ..api import v1alpha1 as api
from ..api.common import decimal
from ..api.v1alpha1 import Perturbation
from ..grading import last_boxed
from .scoring import DEFAULT_COMPONENTS, phrase_forms

DEFAULT_FRACTION = float(api.PERTURBATION_FRACTION)  # named in the API


def keyword_pattern(keywords: list[str] | tuple[str, ...]) -> re.Pattern[str]:
    """One regex matching any keyword as whole words; longer phrases first so they win over their parts."""
    ordered = sorted({k.lower() for k in keywords}, key=len, reverse=True)
    alternatives = "|".join(r"\s+".join(re.escape(part) for part in k.split()) for k in ordered)
    return re.compile(rf"(?<![\w'-])(?:{alternatives})(?![\w'-])", re.IGNORECASE)



_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\\$])")
_KEYWORDS = keyword_pattern([" ".join(f) for c in DEFAULT_COMPONENTS for k in c.keywords for f in phrase_forms(k)])
_BOX_START = re.compile(r"\\(?:boxed|fbox)\b")


@dataclass
class Sample:
    """The parts of an output row a perturbation needs."""

    id: str
    chain: str
    answer: str | None


def split_steps(text: str) -> tuple[list[str], str]:
    """Steps of a chain and the separator to join them with."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    if len(paragraphs) >= 3:
        return paragraphs, "\n\n"
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) >= 3:
        return lines, "\n"
    return _SENTENCE_END.split(text), " "


def _final_index(steps: list[str]) -> int:
    return next((i for i in range(len(steps) - 1, -1, -1) if "\\boxed" in steps[i] or "\\fbox" in steps[i]), len(steps) - 1)


def _pick(rng: random.Random, population: list[int], fraction: float) -> list[int]:
    count = min(len(population), round(fraction * len(population)))
    return sorted(rng.sample(population, count))


def shuffle_steps(text: str, rng: random.Random, fraction: float) -> str:
    steps, sep = split_steps(text)
    final = _final_index(steps)
    chosen = _pick(rng, [i for i in range(len(steps)) if i != final], fraction)
    moved = [steps[i] for i in chosen]
    rng.shuffle(moved)
    for i, step in zip(chosen, moved):
        steps[i] = step
    return sep.join(steps)


def delete_steps(text: str, rng: random.Random, fraction: float) -> str:
    steps, sep = split_steps(text)
    final = _final_index(steps)
    doomed = set(_pick(rng, [i for i in range(len(steps)) if i != final], fraction))
    return sep.join(s for i, s in enumerate(steps) if i not in doomed)


def insert_steps(text: str, rng: random.Random, fraction: float, foreign: list[str]) -> str:
    steps, sep = split_steps(text)
    final = _final_index(steps)
    body, tail = steps[:final], steps[final:]
    for _ in range(round(fraction * len(steps)) if foreign else 0):
        body.insert(rng.randint(0, len(body)), rng.choice(foreign))
    return sep.join(body + tail)


def _answer_span(text: str) -> tuple[int, int] | None:
    """Start and end of the last \\boxed{} answer's text."""
    answer = last_boxed(text)
    boxes = list(_BOX_START.finditer(text))
    if answer is None or not boxes:
        return None
    for box in reversed(boxes):
        start = text.find(answer, box.end())
        if start >= 0:
            return start, start + len(answer)
    return None


def wrong_answer(text: str, rng: random.Random, other_answers: list[str]) -> str:
    span = _answer_span(text)
    if span is None:
        return text
    current = text[span[0] : span[1]]
    if re.fullmatch(r"-?\d+", current):
        wrong = str(int(current) + rng.choice([-1, 1]) * rng.randint(1, 10))
    else:
        choices = [a for a in other_answers if a != current]
        if not choices:
            return text
        wrong = rng.choice(choices)
    return text[: span[0]] + wrong + text[span[1] :]


def remove_keywords(text: str, rng: random.Random, fraction: float) -> str:
    hits = list(_KEYWORDS.finditer(text))
    doomed = set(_pick(rng, list(range(len(hits))), fraction))
    out, position = [], 0
    for i, hit in enumerate(hits):
        if i in doomed:
            out.append(text[position : hit.start()])
            position = hit.end()
    out.append(text[position:])
    return re.sub(r"[ \t]{2,}", " ", "".join(out))


def corrupt_digits(text: str, rng: random.Random, fraction: float) -> str:
    span = _answer_span(text)
    positions = [i for i, ch in enumerate(text) if ch.isdigit() and not (span and span[0] <= i < span[1])]
    chars = list(text)
    for i in _pick(rng, positions, fraction):
        chars[i] = rng.choice([d for d in "0123456789" if d != chars[i]])
    return "".join(chars)


def perturb(samples: list[Sample], perturbation: Perturbation) -> list[str]:
    """The perturbed chain of every sample, in order."""
    fraction = decimal(perturbation.fraction, DEFAULT_FRACTION)
    seed = perturbation.seed or 0
    answers = sorted({s.answer for s in samples if s.answer})
    out = []
    for index, sample in enumerate(samples):
        rng = random.Random(f"{seed}:{sample.id}")
        kind = perturbation.type
        if kind == "shuffleSteps":
            out.append(shuffle_steps(sample.chain, rng, fraction))
        elif kind == "deleteSteps":
            out.append(delete_steps(sample.chain, rng, fraction))
        elif kind == "insertSteps":
            donor = samples[(index + 1 + rng.randrange(max(len(samples) - 1, 1))) % len(samples)]
            steps = split_steps(donor.chain)[0] if donor is not sample else []
            foreign = [s for i, s in enumerate(steps) if i != _final_index(steps)]  # never a second answer
            out.append(insert_steps(sample.chain, rng, fraction, foreign))
        elif kind == "wrongAnswer":
            out.append(wrong_answer(sample.chain, rng, answers))
        elif kind == "removeKeywords":
            out.append(remove_keywords(sample.chain, rng, fraction))
        else:
            out.append(corrupt_digits(sample.chain, rng, fraction))
    return out
