"""Acceptance: `Grader` agrees with the labelled cases of public graders' test suites at least as often as plain
math-verify does, under every protocol, and on 97% of the responses with a box.

The cases (tests/data/grading_public.jsonl) are math-verify's own test vectors, inspect_ai's math scorer cases
and the tests of MATH's original grader (hendrycks/math), each with its source repository, path and commit. Where a protocol differs from a label on purpose (LIMO
reads only boxes), docs/protocols.md lists the case and the reason; this test reads that list, leaves those cases
out of the protocol's agreement, and fails when a listed case no longer differs (the list must stay exact).

Run with -s to print the figures recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import logging
import re
from functools import cache
from pathlib import Path

import pytest

from reasonops.evaluate.protocols import PROTOCOLS, protocol
from reasonops.grading import Grader

ROOT = Path(__file__).resolve().parent.parent
CASES = [json.loads(line) for line in (ROOT / "tests/data/grading_public.jsonl").read_text().splitlines()]
MIN_BOXED_AGREEMENT = 0.97
# docs/protocols.md: | `extraction` (protocols) | case ids | reason |
_EXCEPTION_ROW = re.compile(r"^\| `([\w-]+)` \([^)]*\) \| ([\d, ]+) \|", re.MULTILINE)


def _boxed(case: dict) -> bool:
    return "\\boxed" in case["response"] or "\\fbox" in case["response"]


def listed_exceptions() -> dict[str, set[int]]:
    listed: dict[str, set[int]] = {}
    for extraction, ids in _EXCEPTION_ROW.findall((ROOT / "docs/protocols.md").read_text()):
        listed.setdefault(extraction, set()).update(int(i) for i in ids.replace(" ", "").split(","))
    return listed


@cache
def math_verify_verdicts() -> tuple[bool, ...]:
    """Plain math-verify with its default extraction: the gold as $gold$ unless it has delimiters already."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    verdicts = []
    for case in CASES:
        gold = case["gold"] if "$" in case["gold"] or "\\boxed" in case["gold"] else f"${case['gold']}$"
        try:
            verdicts.append(bool(verify(parse(gold), parse(case["response"]))))
        except Exception:  # math-verify raising is a "no" from it
            verdicts.append(False)
    return tuple(verdicts)


@cache
def grader_verdicts(extraction: str) -> tuple[bool, ...]:
    with Grader(workers=2, timeout=10.0) as grader:
        results = grader.grade(((case["response"], case["gold"], "math") for case in CASES), extraction)
    return tuple(result.correct is True for result in results)


def agreement(verdicts: tuple[bool, ...], ids: list[int]) -> float:
    return sum(verdicts[i] == CASES[i]["label"] for i in ids) / len(ids)


def test_the_cases_name_their_public_source() -> None:
    assert len(CASES) >= 250
    assert [case["id"] for case in CASES] == list(range(len(CASES)))
    for case in CASES:
        source = case["source"]
        assert source["repository"] and source["path"] and re.fullmatch(r"[0-9a-f]{40}", source["commit"]), case
        assert isinstance(case["label"], bool)
    assert {case["source"]["repository"] for case in CASES} >= {"huggingface/Math-Verify", "UKGovernmentBEIS/inspect_ai", "hendrycks/math"}
    assert sum(map(_boxed, CASES)) >= 100


def test_the_listed_exceptions_name_known_extractions_and_cases() -> None:
    listed = listed_exceptions()
    assert listed, "docs/protocols.md lists no exceptions table"
    extractions = {protocol(name).extraction for name in PROTOCOLS}
    assert set(listed) <= extractions
    assert all(0 <= i < len(CASES) for ids in listed.values() for i in ids)


@pytest.mark.parametrize("name", PROTOCOLS)
def test_grading_agrees_with_public_labels_at_least_as_math_verify(name: str) -> None:
    extraction = protocol(name).extraction
    exceptions = listed_exceptions().get(extraction, set())
    verdicts = grader_verdicts(extraction)
    baseline = math_verify_verdicts()

    still_differing = {i for i in exceptions if verdicts[i] != CASES[i]["label"]}
    assert still_differing == exceptions, f"listed in docs/protocols.md but agreeing now: {sorted(exceptions - still_differing)}"

    kept = [i for i in range(len(CASES)) if i not in exceptions]
    boxed = [i for i in kept if _boxed(CASES[i])]
    ours, theirs = agreement(verdicts, kept), agreement(baseline, kept)
    ours_boxed, theirs_boxed = agreement(verdicts, boxed), agreement(baseline, boxed)
    print(f"\n{name} ({extraction}): {len(kept)} cases ({len(exceptions)} listed apart): grader {ours:.1%}, "
          f"math-verify {theirs:.1%}; boxed {len(boxed)}: grader {ours_boxed:.1%}, math-verify {theirs_boxed:.1%}")
    wrong = [i for i in kept if verdicts[i] != CASES[i]["label"]]
    assert ours >= theirs, f"disagreements: {wrong}"
    assert ours_boxed >= MIN_BOXED_AGREEMENT, f"disagreements: {wrong}"
