"""LIMO's rule-based chain score, best chain per problem, and top-N selection.

A chain's score is the weighted sum of four components:

=============  ======  ==========================================================================
component      weight  measured as
=============  ======  ==========================================================================
elaboration    0.30    length of the chain in words
verification   0.20    self-verification keywords per word
exploration    0.25    exploratory keywords per word
granularity    0.25    connective keywords ("adaptive granularity") per word
=============  ======  ==========================================================================

Default keywords (case-insensitive whole words; every occurrence of every keyword counts, so "let me
check" adds both that phrase and "check"):

- verification: check, checking, verify, verifying, verified, verification, double-check, recheck,
  confirm, confirms, wait, let me check, sanity check, plug back, substitute back, indeed
- exploration: perhaps, might, maybe, alternatively, possibly, suppose, what if, let's try, let me try,
  another approach, another way, could, consider, try
- granularity: therefore, since, thus, hence, because, so, consequently, it follows, this means,
  which gives, which means, then

The paper gives the weights and two keywords per component; the rest of the lists is ours. Each
component is turned into its percentile rank among all chains scored together (ties share the mid rank),
so the weights mix comparable scales and a single odd chain (a two-word "Check." has a huge keyword
density) cannot flatten a component for everyone else. Scores lie in [0, sum of weights].

`ScoreStage.components` overrides the weight (and, when given, the keyword list) of the components it
names; the others keep their defaults. A weight of "0" switches a component off.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..api.common import decimal
from ..api.v1alpha1 import ScoreStage, SelectStage
from .records import Chain, Problem, StageReport


@dataclass(frozen=True)
class Component:
    name: str
    weight: float
    keywords: tuple[str, ...] = ()


DEFAULT_COMPONENTS: tuple[Component, ...] = (
    Component("elaboration", 0.30),
    Component("verification", 0.20, (
        "check", "checking", "verify", "verifying", "verified", "verification", "double-check", "recheck",
        "confirm", "confirms", "wait", "let me check", "sanity check", "plug back", "substitute back", "indeed")),
    Component("exploration", 0.25, (
        "perhaps", "might", "maybe", "alternatively", "possibly", "suppose", "what if", "let's try",
        "let me try", "another approach", "another way", "could", "consider", "try")),
    Component("granularity", 0.25, (
        "therefore", "since", "thus", "hence", "because", "so", "consequently", "it follows", "this means",
        "which gives", "which means", "then")),
)


def resolve_components(stage: ScoreStage | None) -> list[Component]:
    overrides = {c.name: c for c in (stage.components or [])} if stage else {}
    resolved = []
    for default in DEFAULT_COMPONENTS:
        given = overrides.get(default.name)
        if given is None:
            resolved.append(default)
        else:
            keywords = tuple(given.keywords) if given.keywords is not None else default.keywords
            resolved.append(Component(default.name, decimal(given.weight), keywords))
    return resolved


_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def _tokens(text: str) -> list[str]:
    """Lower-cased words, keeping "double-check" and "let's" whole, as keywords are written."""
    return _TOKEN.findall(text.lower())


class ChainScorer:
    """Raw component values of chains and their weighted percentile score."""

    def __init__(self, components: list[Component]) -> None:
        self.components = components
        # keyword phrases as token tuples, indexed by their first token: one dict lookup per word
        self._phrases: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        for index, component in enumerate(components):
            for keyword in component.keywords:
                phrase = tuple(_tokens(keyword))
                if phrase:
                    self._phrases.setdefault(phrase[0], []).append((phrase, index))

    def raw(self, text: str) -> list[float]:
        """Words for elaboration, keyword hits per word for the other components."""
        tokens = _tokens(text)
        counts = [0] * len(self.components)
        frequency = Counter(tokens)  # counted in C; phrases are matched only where their first word occurs
        for first in frequency.keys() & self._phrases.keys():
            for phrase, index in self._phrases[first]:
                if len(phrase) == 1:
                    counts[index] += frequency[first]
                else:
                    counts[index] += sum(1 for i, t in enumerate(tokens) if t == first and tuple(tokens[i : i + len(phrase)]) == phrase)
        length = max(len(tokens), 1)
        return [float(length) if c.name == "elaboration" else counts[i] / length for i, c in enumerate(self.components)]

    def scores(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        raw = np.array([self.raw(t) for t in texts], dtype=np.float64)
        weights = np.array([c.weight for c in self.components])
        return _percentile_ranks(raw) @ weights


def _percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Column-wise mid-rank percentiles in (0, 1): the share of values below plus half the equal ones."""
    ranks = np.empty_like(values)
    for column in range(values.shape[1]):
        ordered = np.sort(values[:, column])
        below = np.searchsorted(ordered, values[:, column], side="left")
        through = np.searchsorted(ordered, values[:, column], side="right")
        ranks[:, column] = (below + through) / (2.0 * len(ordered))
    return ranks


def score(problems: list[Problem], stage: ScoreStage | None, report: StageReport) -> list[Problem]:
    """Score every chain, keep the best chain of each problem; problems without a chain are dropped."""
    report.input = len(problems)
    kept = []
    for problem in problems:
        if problem.chains:
            kept.append(problem)
        else:
            report.drop(problem.id, "no-chain")
    scorer = ChainScorer(resolve_components(stage))
    chains: list[Chain] = [c for p in kept for c in p.chains]
    for chain, value in zip(chains, scorer.scores([c.text for c in chains]).tolist()):
        chain.score = round(value, 6)
    for problem in kept:
        problem.chains = [problem.best_chain]  # type: ignore[list-item]  # kept problems have chains
    report.kept = len(kept)
    values = [p.chains[0].score for p in kept]
    report.info = {
        "chainsScored": len(chains),
        "components": [{"name": c.name, "weight": c.weight} for c in scorer.components],
        "meanScore": round(float(np.mean(values)), 4) if values else None,
    }
    return kept


def select(problems: list[Problem], stage: SelectStage, report: StageReport) -> list[Problem]:
    """Keep the `size` problems with the highest best-chain score (earlier problems win ties)."""
    report.input = len(problems)
    if any(c.score is None for p in problems for c in p.chains) or not all(p.chains for p in problems):
        scored = StageReport("score", "score")
        problems = score(problems, None, scored)  # no score stage ran: default LIMO scoring first
        report.drops.extend(scored.drops)
        report.info["scoredWithDefaults"] = True
    ranked = sorted(range(len(problems)), key=lambda i: _problem_score(problems[i]), reverse=True)
    chosen = set(ranked[: stage.size])
    for i in ranked[stage.size :]:
        report.drop(problems[i].id, "not-selected", f"score {_problem_score(problems[i]):.4f}")
    kept = [p for i, p in enumerate(problems) if i in chosen]
    report.kept = len(kept)
    report.info["size"] = stage.size
    return kept


def _problem_score(problem: Problem) -> float:
    best = problem.best_chain
    return best.score if best is not None and best.score is not None else float("-inf")
