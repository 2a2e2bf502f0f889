"""LIMO scoring, best chain per problem, top-N selection, and the perturbations."""

from __future__ import annotations

import random
import re

import pytest

from reasonops.api.v1alpha1 import Perturbation, ScoreStage, SelectStage
from reasonops.curate.perturb import (
    Sample, corrupt_digits, delete_steps, insert_steps, perturb, remove_keywords, shuffle_steps, split_steps, wrong_answer,
)
from reasonops.curate.records import Chain, Problem, StageReport
from reasonops.curate.scoring import ChainScorer, resolve_components, score, select

PLAIN = "We add the numbers. The sum is 12. The answer is \\boxed{12}."
REFLECTIVE = ("Perhaps we should add the numbers first. Let me check: 5 + 7 = 12, since 5 + 5 = 10 and 2 more is 12. "
              "Wait, verify again: therefore the sum is 12. Alternatively count up from 7. The answer is \\boxed{12}.")
CHAIN = "\n\n".join([
    "First, note that 3 + 4 = 7.", "Since 7 is odd, we might check 7 * 2 = 14.", "Therefore 14 - 4 = 10.",
    "Let me verify: 10 + 4 = 14.", "The answer is \\boxed{10}.",
])


def test_default_components_follow_limo() -> None:
    components = {c.name: c for c in resolve_components(None)}
    assert {n: c.weight for n, c in components.items()} == {"elaboration": 0.3, "verification": 0.2,
                                                            "exploration": 0.25, "granularity": 0.25}
    assert {"check", "verify"} <= set(components["verification"].keywords)
    assert {"perhaps", "might"} <= set(components["exploration"].keywords)
    assert {"therefore", "since"} <= set(components["granularity"].keywords)


def test_keywords_count_whole_words_phrases_and_inflections() -> None:
    scorer = ChainScorer(resolve_components(None))
    plain = scorer.raw("We add. Checkpoint, unchecked; done. Nothing else.")
    assert plain[1:] == [0, 0, 0]  # "checkpoint" and "unchecked" are not "check"
    tail = " the sum of the two numbers we found above, which is twelve"
    phrase = scorer.raw("Let me check" + tail)
    word = scorer.raw("Now check" + tail)
    assert phrase[1] == pytest.approx(word[1]) and word[1] > 0  # "let me check" counts once, not also as "check"
    assert scorer.raw("We checked it" + tail)[1] == pytest.approx(scorer.raw("We check it" + tail)[1])
    assert scorer.raw("Trying again, plugging back x" + tail)[1:3] == pytest.approx(scorer.raw("Try again, plug back x" + tail)[1:3])


def test_repeating_one_keyword_saturates_and_variety_counts_more() -> None:
    scorer = ChainScorer(resolve_components(None))
    filler = " ".join(["we add the numbers one by one and write the result down"] * 10)
    once, often = (scorer.raw(f"{filler} " + " ".join(["perhaps x is 3, step."] * n))[2] for n in (1, 15))
    varied = scorer.raw(filler + " perhaps x is 3. maybe y is 2. alternatively z is 1. suppose w is 4. consider v. "
                        "what if u is 5. could t be 6. possibly s is 7. try r. another way is q.")[2]
    assert once < often < 2 * once * 2.2 and often < varied


def test_scores_are_absolute_per_chain() -> None:
    batch_a = [Problem("p", "?", "12", "s", [Chain(REFLECTIVE)]), Problem("q", "?", "2", "s", [Chain(PLAIN)])]
    batch_b = [Problem("r", "?", "3", "s", [Chain("Thus \\boxed{3}.")]), Problem("p", "?", "12", "s", [Chain(REFLECTIVE)]),
               Problem("t", "?", "4", "s", [Chain(CHAIN * 5)]), Problem("u", "?", "5", "s", [Chain(STUFFED)])]
    first = score(batch_a, None, StageReport("score", "score"))[0].chains[0].score
    second = score(batch_b, None, StageReport("score", "score"))[1].chains[0].score
    alone = score([Problem("p", "?", "12", "s", [Chain(REFLECTIVE)])], None, StageReport("score", "score"))[0].chains[0].score
    assert first == second == alone and 0 < first < 1


STUFFED = ("We add the numbers. So so so so so so so so so so so so so so so so, then then then then then then then, "
           + "could try wait " * 12 + "The answer is \\boxed{12}.")


def test_keyword_stuffing_scores_below_a_reflective_chain() -> None:
    scorer = ChainScorer(resolve_components(None))
    assert scorer.score(STUFFED) < scorer.score(REFLECTIVE)
    sprinkled = " ".join(["So we then could try, wait, so then could try wait."] * 20) + " \\boxed{12}"
    assert scorer.score(sprinkled) < scorer.score(REFLECTIVE)
    assert scorer.score(PLAIN) < scorer.score(REFLECTIVE)


def test_reflective_chain_outscores_a_plain_one() -> None:
    problem = Problem("p", "5 + 7?", "12", "s", [Chain(PLAIN), Chain(REFLECTIVE)])
    other = Problem("q", "1 + 1?", "2", "s", [Chain("Thus \\boxed{2}.")])
    report = StageReport("score", "score")
    kept = score([problem, other, Problem("none", "?", None, "s")], None, report)
    assert [p.id for p in kept] == ["p", "q"] and report.reasons == {"no-chain": 1}
    assert [c.text for c in kept[0].chains] == [REFLECTIVE]  # the best chain per problem
    assert 0 <= kept[1].chains[0].score <= 1


def test_components_are_configurable() -> None:
    stage = ScoreStage.model_validate({"components": [
        {"name": "elaboration", "weight": "0"}, {"name": "verification", "weight": "1", "keywords": ["plain"]},
        {"name": "exploration", "weight": "0"}, {"name": "granularity", "weight": "0"}]})
    problem = Problem("p", "?", "12", "s", [Chain(REFLECTIVE), Chain("A plain plain chain \\boxed{12}.")])
    kept = score([problem], stage, StageReport("score", "score"))
    assert kept[0].chains[0].text.startswith("A plain")


def test_select_keeps_the_top_n_and_breaks_ties_by_order() -> None:
    problems = [Problem(f"p{i}", "?", "1", "s", [Chain("x", score=s)]) for i, s in enumerate([0.2, 0.9, 0.5, 0.9])]
    report = StageReport("top", "select")
    kept = select(problems, SelectStage(size=2), report)
    assert [p.id for p in kept] == ["p1", "p3"]
    assert [d.id for d in report.drops] == ["p2", "p0"] and report.reasons == {"not-selected": 2}


def test_select_without_a_score_stage_scores_with_defaults() -> None:
    problems = [Problem("plain", "?", "12", "s", [Chain(PLAIN)]), Problem("reflective", "?", "12", "s", [Chain(REFLECTIVE)])]
    report = StageReport("top", "select")
    assert [p.id for p in select(problems, SelectStage(size=1), report)] == ["reflective"]
    assert report.info["scoredWithDefaults"] is True


def rng() -> random.Random:
    return random.Random(0)


def test_step_perturbations_keep_the_final_answer_last() -> None:
    steps, sep = split_steps(CHAIN)
    assert len(steps) == 5 and sep == "\n\n"
    shuffled = shuffle_steps(CHAIN, rng(), 1.0)
    assert sorted(shuffled.split("\n\n")) == sorted(steps) and shuffled.endswith(steps[-1]) and shuffled != CHAIN
    deleted = delete_steps(CHAIN, rng(), 0.5).split("\n\n")
    assert len(deleted) == 3 and deleted[-1] == steps[-1]
    inserted = insert_steps(CHAIN, rng(), 0.4, ["Foreign step A.", "Foreign step B."]).split("\n\n")
    assert len(inserted) == 7 and inserted[-1] == steps[-1]


def test_content_perturbations() -> None:
    assert wrong_answer(CHAIN, rng(), []) != CHAIN and "\\boxed{10}" not in wrong_answer(CHAIN, rng(), [])
    symbolic = "So it is \\boxed{\\frac{1}{2}}."
    assert wrong_answer(symbolic, rng(), ["\\frac{1}{2}", "\\sqrt{2}"]) == "So it is \\boxed{\\sqrt{2}}."
    stripped = remove_keywords(CHAIN, rng(), 1.0)
    assert not re.search(r"\b(since|might|check|therefore|verify)\b", stripped, re.IGNORECASE)
    corrupted = corrupt_digits(CHAIN, rng(), 1.0)
    assert corrupted.endswith("\\boxed{10}.")  # the stated answer is left to wrongAnswer
    body_digits = [(a, b) for a, b in zip(CHAIN[:-12], corrupted[:-12]) if a.isdigit()]
    assert body_digits and all(a != b for a, b in body_digits)


def test_perturb_is_seeded_per_sample() -> None:
    samples = [Sample(f"s{i}", CHAIN.replace("10", str(10 + i)), str(10 + i)) for i in range(4)]
    spec = Perturbation(name="shuffled", type="shuffleSteps", seed=3)
    first = perturb(samples, spec)
    assert perturb(samples, spec) == first
    assert perturb(samples[1:], spec) == first[1:]  # a sample's variant does not depend on the others
