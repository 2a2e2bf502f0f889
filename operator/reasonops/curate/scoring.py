"""LIMO's rule-based chain score, best chain per problem, and top-N selection.

A chain's score is the weighted sum of four components, each an absolute value in [0, 1] computed from
the chain alone, so the same chain scores the same in every run and batch:

=============  ======  ==========================================================================
component      weight  measured as
=============  ======  ==========================================================================
elaboration    0.30    length: w / (w + 400) for w words (400 words -> 0.5, 2,000 -> 0.83)
verification   0.20    self-verification keywords
exploration    0.25    exploratory keywords
granularity    0.25    connective keywords ("adaptive granularity")
=============  ======  ==========================================================================

A keyword component is 1 - exp(-E / 8), where E sums log2(1 + count) over the component's keywords:
each keyword has diminishing returns, so using many different ones counts more than repeating one
(a keyword used once adds 1, used 15 times 4). Stuffing is discounted three more ways:

- immediate repeats of a word count once ("so so so" is one "so", for the length too);
- a phrase is matched before its words ("let me check" counts once, not also as "check"), and
  inflections count as their keyword ("checked", "verifies", "trying" are "check", "verify", "try");
- when keywords make up more than 25% of the chain's words (natural reflective text stays well under
  that), every keyword component is scaled by (0.25 / that share)^2, and keyword words count towards
  the length only up to that share.

Default keywords (case-insensitive whole words, with inflections):

- verification: check, verify, verification, double-check, recheck, confirm, wait, let me check,
  sanity check, plug back, substitute back, indeed
- exploration: perhaps, might, maybe, alternatively, possibly, suppose, what if, let's try, let me try,
  another approach, another way, could, consider, try
- granularity: therefore, since, thus, hence, because, so, consequently, it follows, this means,
  which gives, which means, then

The paper gives the weights and two keywords per component; the rest of the lists, and the saturation
constants, are ours. Scores lie in [0, sum of weights] (1 with the defaults).

`ScoreStage.components` overrides the weight (and, when given, the keyword list) of the components it
names; the others keep their defaults. A weight of "0" switches a component off.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..api.common import decimal
from ..api.v1alpha1 import ScoreStage, SelectStage
from .records import Chain, Problem, StageReport

if TYPE_CHECKING:
    from .store import ProblemStore

ELABORATION_HALF = 400  # words at which elaboration reaches 0.5
KEYWORD_SCALE = 8.0  # E at which a keyword component reaches 1 - 1/e
NATURAL_SHARE = 0.25  # keyword share of the words above which a chain counts as stuffed


@dataclass(frozen=True)
class Component:
    name: str
    weight: float
    keywords: tuple[str, ...] = ()


DEFAULT_COMPONENTS: tuple[Component, ...] = (
    Component("elaboration", 0.30),
    Component("verification", 0.20, (
        "check", "verify", "verification", "double-check", "recheck", "confirm", "wait", "let me check",
        "sanity check", "plug back", "substitute back", "indeed")),
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


def inflections(word: str) -> set[str]:
    """The word and its regular English inflections (-s, -es, -ed, -ing, y -> ies/ied, e dropped, consonant doubled)."""
    forms = {word, word + "s", word + "es", word + "ed", word + "ing"}
    if word.endswith("e"):
        forms |= {word + "d", word[:-1] + "ing"}
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        forms |= {word[:-1] + "ies", word[:-1] + "ied"}
    if len(word) >= 3 and word[-1] not in "aeiouwxy" and word[-2] in "aeiou" and word[-3] not in "aeiou":
        forms |= {word + word[-1] + "ed", word + word[-1] + "ing"}
    return forms


def phrase_forms(keyword: str) -> list[tuple[str, ...]]:
    """Token tuples a keyword matches: every word of a phrase may be inflected ("plugging back")."""
    forms: list[tuple[str, ...]] = [()]
    for word in _tokens(keyword):
        forms = [f + (v,) for f in forms for v in sorted(inflections(word))]
    return [f for f in forms if f]


class ChainScorer:
    """Absolute component values of a chain and their weighted score (see the module docstring)."""

    def __init__(self, components: list[Component]) -> None:
        self.components = components
        # keyword forms as token tuples, indexed by their first token: one dict lookup per distinct word
        self._forms: dict[str, list[tuple[tuple[str, ...], int, int]]] = {}
        self._keywords: list[int] = []  # component index of each keyword
        for index, component in enumerate(components):
            for keyword in component.keywords:
                number = len(self._keywords)
                self._keywords.append(index)
                for form in phrase_forms(keyword):
                    self._forms.setdefault(form[0], []).append((form, number, index))
        for entries in self._forms.values():
            entries.sort(key=lambda e: -len(e[0]))  # longest phrase first: it wins over its words
        self._weights = np.array([c.weight for c in components])

    def raw(self, text: str) -> list[float]:
        """The components of one chain, each in [0, 1]."""
        words = _tokens(text)
        tokens = [t for t, previous in zip(words, [None, *words]) if t != previous]  # "so so so" -> "so"
        counts = [0] * len(self._keywords)
        keyword_words = free = 0  # free: first token not yet consumed by a matched phrase
        forms = self._forms
        for i in [i for i, t in enumerate(tokens) if t in forms]:
            if i < free:
                continue
            for form, number, _ in forms[tokens[i]]:
                if tuple(tokens[i : i + len(form)]) == form:
                    counts[number] += 1
                    keyword_words += len(form)
                    free = i + len(form)
                    break
        share = keyword_words / len(tokens) if tokens else 0.0
        stuffing = min(1.0, NATURAL_SHARE / share) ** 2 if share > 0 else 1.0
        # keyword words count towards the length only up to their natural share of it
        other = len(tokens) - keyword_words
        length = other + min(keyword_words, other * NATURAL_SHARE / (1 - NATURAL_SHARE))
        evidence = [0.0] * len(self.components)
        for number, count in enumerate(counts):
            if count:
                evidence[self._keywords[number]] += math.log2(1 + count)
        return [length / (length + ELABORATION_HALF) if c.name == "elaboration"
                else (1 - math.exp(-evidence[i] / KEYWORD_SCALE)) * stuffing
                for i, c in enumerate(self.components)]

    def score(self, text: str) -> float:
        return float(np.dot(self.raw(text), self._weights))


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
    for chain in chains:
        chain.score = round(scorer.score(chain.text), 6)
    for problem in kept:
        problem.chains = [problem.best_chain]  # type: ignore[list-item]  # kept problems have chains
    report.kept = len(kept)
    values = [p.chains[0].score for p in kept]
    report.info = {
        "chainsScored": len(chains),
        "components": [{"name": c.name, "weight": c.weight} for c in scorer.components],
        "scale": "absolute per chain",
        "meanScore": round(float(np.mean(values)), 4) if values else None,
    }
    return kept


def select(problems: list[Problem], stage: SelectStage, report: StageReport) -> list[Problem]:
    """Keep the `size` problems with the highest best-chain score (earlier problems win ties)."""
    report.input = len(problems)
    if any(c.score is None for p in problems for c in p.chains) or not all(p.chains for p in problems):
        scored = StageReport("score", "score")
        problems = score(problems, None, scored)  # no score stage ran: default LIMO scoring first
        for drop in scored.drops:
            report.drop(drop.id, drop.reason, drop.detail)
        report.info["scoredWithDefaults"] = True
    ranked = sorted(range(len(problems)), key=lambda i: _problem_score(problems[i]), reverse=True)
    chosen = set(ranked[: stage.size])
    for i in ranked[stage.size :]:
        report.drop(problems[i].id, "not-selected", f"score {_problem_score(problems[i]):.4f}")
    kept = [p for i, p in enumerate(problems) if i in chosen]
    report.kept = len(kept)
    report.info["size"] = stage.size
    return kept


def select_rows(store: "ProblemStore", rows: np.ndarray, stage: SelectStage, report: StageReport) -> None:
    """`select` over rows of a problem store, from the best-chain scores it keeps per row."""
    report.input = len(rows)
    if np.any(~store.columns["has_chain"][rows]) or np.any(np.isneginf(store.columns["score"][rows])):
        scored = StageReport(report.name, "score", log=report.log)
        for part, problems in store.batches(rows):  # no score stage ran: default LIMO scoring first
            kept = {id(p) for p in score(problems, None, scored)}
            for i, problem in zip(part.tolist(), problems):
                if id(problem) in kept:
                    store.put(i, problem)
                else:
                    store.alive[i] = False
        report.counts.update(scored.counts)
        report.info["scoredWithDefaults"] = True
        rows = rows[store.alive[rows]]
    scores = store.columns["score"][rows]
    ranked = rows[np.lexsort((rows, -scores))]  # highest score first, earlier rows win ties
    for i in ranked[stage.size :].tolist():
        report.drop(store.read(i).id, "not-selected", f"score {store.columns['score'][i]:.4f}")
        store.alive[i] = False
    report.kept = min(stage.size, len(ranked))
    report.info["size"] = stage.size


def _problem_score(problem: Problem) -> float:
    best = problem.best_chain
    return best.score if best is not None and best.score is not None else float("-inf")
