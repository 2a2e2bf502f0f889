"""Answer extraction, equivalence (fast path and math-verify) and the pass@k / maj@k metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from reasonops.grading import (
    NO_ANSWER,
    TIMEOUT,
    GradeResult,
    Grader,
    extract_answer,
    fast_verdict,
    grade_one,
    majority_correct,
    pass_at_k,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the result is \\boxed{42}.", "42"),
        ("first \\boxed{1}, then corrected: \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{x^{2}+\\frac{1}{\\sqrt{2}}}", "x^{2}+\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not close the box
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\\fbox{7}", "7"),
        ("hence \\boxed 5 is it", "5"),
        ("put your final answer within \\boxed{}. We get \\boxed{9}", "9"),
        ("answer \\boxed{3} and the echo \\boxed{}", "3"),  # an empty box is an echo of the prompt
        ("\\boxed{12} then a cut-off \\boxed{1", "12"),  # an unclosed last box is skipped
        ("\\boxed{4} then \\boxed{x \\boxed{" + "\\boxed{" * 50, "4"),  # a run of unclosed boxes is skipped
        ("\\boxed{4} then \\boxed 7 \\boxed{y \\boxed{", "7"),
        ("\\boxed{\\frac{1}{2}} \\boxed{ \\frac{1}{3}", "\\frac{1}{2}"),
        ("\\boxed{a \\boxed{b} c", "b"),  # the outer box never closes; the inner one does
        ("Thus, the final answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),
        ("The answer is 0.5.", "0.5"),
        ("Some work.\n**Answer:** 17\n", "17"),
        ("Answer: \\(x = 2\\)", "x = 2"),
        ("The total is 57 apples.", None),  # no silent last-number fallback
        ("", None),
    ],
)
def test_extract_math(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{B}", "B"),
        ("\\boxed{\\text{(C)}}", "C"),
        ("\\boxed{(d)}", "D"),
        ("\\boxed{A) 42}", "A"),
        ("Therefore the answer is (C).", "C"),
        ("Answer: D", "D"),
        ("\\boxed{42}", None),
        ("I think B or C", None),
    ],
)
def test_extract_choice(text: str, expected: str | None) -> None:
    assert extract_answer(text, "choice") == expected


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        extract_answer("\\boxed{1}", "code")


@pytest.mark.parametrize(
    "extracted, gold, verdict",
    [
        ("27", "27", True),
        ("27.0", "27", True),
        ("1,000", "1000", True),
        ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
        ("\\frac{1}{2}", "0.5", True),
        ("1/2", "\\frac12", None),  # \frac12 is not a simple fraction here: math-verify decides
        ("45^\\circ", "45", True),
        ("\\text{Evelyn}", "Evelyn", True),
        ("$204$", "204", True),
        ("3", "4", False),
        ("27.5", "27", False),
        ("3.1415926", "3.1415927", None),  # close decimals: left to math-verify's rounding
        ("\\sqrt{2}", "\\frac{2}{\\sqrt{2}}", None),
    ],
)
def test_fast_path(extracted: str, gold: str, verdict: bool | None) -> None:
    assert fast_verdict(extracted, gold) is verdict


@pytest.mark.parametrize(
    "response, gold, correct",
    [
        ("\\boxed{\\dfrac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", True),  # radicals
        ("\\boxed{3\\sqrt{13}}", "\\sqrt{117}", True),
        ("\\boxed{\\frac{\\pi}{2}}", "\\pi/2", True),
        ("\\boxed{[0,1)}", "[0, 1)", True),  # intervals
        ("\\boxed{(0,1]}", "[0,1)", False),
        ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),  # tuples
        ("\\boxed{2, 3}", "3, 2", True),  # unordered lists of answers
        ("\\boxed{x^2+1}", "1+x^2", True),
        ("\\boxed{x = 5}", "5", True),
        ("\\boxed{27 \\text{ miles}}", "27", True),  # units
        ("\\boxed{50\\%}", "50", True),
        ("\\boxed{\\$18.90}", "18.90", True),
        ("\\boxed{\\binom{2n}{n}}", "\\frac{(2n)!}{(n!)^2}", True),
        ("\\boxed{2n-1}", "2n-2", False),
        ("\\boxed{east}", "\\text{east}", True),  # text answers
        ("\\boxed{west}", "\\text{east}", False),
    ],
)
def test_grade_one_equivalence(response: str, gold: str, correct: bool) -> None:
    result = grade_one(response, gold)
    assert result.correct is correct, result
    assert result.reason is None


def test_grade_one_without_answer() -> None:
    assert grade_one("I could not finish the computation", "5") == GradeResult(False, None, NO_ANSWER)


def test_grade_one_choice() -> None:
    assert grade_one("The answer is (B).", "B", kind="choice").correct is True
    assert grade_one("\\boxed{C}", "B", kind="choice").correct is False


def test_grader_pool_matches_grade_one_and_times_out() -> None:
    items = [
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", "math"),
        ("\\boxed{7}", "7", "math"),
        ("no answer", "7", "math"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", "math"),  # a repeat is verified once
        ("\\boxed{B}", "B", "choice"),
        ("\\boxed{\\sqrt{3}}", "\\frac{3}{\\sqrt{3}}", "math"),
    ]
    with Grader(workers=1, timeout=5.0) as grader:
        results = grader.grade(items)
    assert [r.correct for r in results] == [True, True, False, True, True, True]
    assert results[2].reason == NO_ANSWER
    assert results[0].extracted == "\\frac{\\sqrt{2}}{2}"

    with Grader(workers=1, timeout=0.001) as grader:
        (slow,) = grader.grade([("\\boxed{\\binom{2n}{n}}", "\\frac{(2n)!}{(n!)^2}", "math")])
    assert slow == GradeResult(None, "\\binom{2n}{n}", TIMEOUT)


def test_grade_one_off_the_main_thread() -> None:
    # math-verify's SIGALRM timeouts cannot run here; grade_one must still answer.
    out: list[GradeResult] = []
    thread = threading.Thread(target=lambda: out.append(grade_one("\\boxed{\\sqrt{117}}", "3\\sqrt{13}")))
    thread.start()
    thread.join(120)
    assert out == [GradeResult(True, "\\sqrt{117}", None)]


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 1, 4, 1.0),
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (8, 0, 4, 0.0),
        (16, 3, 2, 1 - (13 * 12) / (16 * 15)),
    ],
)
def test_pass_at_k(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_k_above_n() -> None:
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def _samples(*answers: tuple[str | None, bool]) -> list[GradeResult]:
    return [GradeResult(correct, extracted) for extracted, correct in answers]


def test_majority_vote() -> None:
    samples = _samples(("1", False), ("2", True), ("2", True), ("3", False))
    assert majority_correct(samples, 1) is False
    assert majority_correct(samples, 2) is False  # a tie goes to the answer seen first
    assert majority_correct(samples, 3) is True
    assert majority_correct(samples, 4) is True


def test_majority_vote_groups_spellings_and_ignores_missing_answers() -> None:
    samples = _samples((None, False), ("\\dfrac{1}{2}", True), ("7", False), ("\\frac{1}{2}", True), (None, False))
    assert majority_correct(samples, 5) is True
    assert majority_correct(_samples((None, False), (None, False)), 2) is False


# --- what models really write ------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, gold, correct",
    [
        ("\\boxed{1}", "1-\\mathrm{e}^{-1}", False),  # math-verify alone reads only the prefix "1-"
        ("\\boxed{\\frac{\\mathrm{e}}{3}}", "\\frac{\\mathrm{e}}{2}", False),
        ("\\boxed{\\frac{\\mathrm{e}}{2}}", "\\frac{\\mathrm{e}}{2}", True),
        ("\\boxed{1-e^{-1}}", "1-\\mathrm{e}^{-1}", True),
        ("\\boxed{\\frac{e}{2}}", "\\frac{\\mathrm{e}}{2}", True),
        ("\\boxed{\\mathbf{3}+1}", "4", True),
        ("\\boxed{2}", "\\text{e}-1", False),
        ("\\boxed{32, 349}", "32349", False),  # a list of two numbers, not thirty-two thousand
        ("\\boxed{32,349}", "32349", True),
        ("\\boxed{349, 32}", "32, 349", True),
        ("\\boxed{1{,}000}", "1000", True),
    ],
)
def test_font_commands_and_lists(response: str, gold: str, correct: bool) -> None:
    result = grade_one(response, gold)
    assert result.correct is correct, result


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 5. Then 7 more are added, making 12 in all.", "5"),
        ("So the answer is 3, since 4 fails the condition.", "3"),
        ("Wait, the answer is actually 8", "8"),
        ("Final answer: 2, 3", "2, 3"),
        ("the answer is $\\frac{1}{2}$ because of symmetry", "\\frac{1}{2}"),
        ("The answer is 0.5.", "0.5"),
        ("\\boxed{32, 349}", "32, 349"),
        ("The result is 1,000.", None),  # no box and no answer phrase: not an answer by default
    ],
)
def test_fallback_extraction(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: $9$", "9"),
        ("The result is 1,000.", "1000"),
        ("We count 3 cases and 14 paths", "14"),
        ("\\boxed{7} although 9 appears later", "7"),
    ],
)
def test_unboxed_answers_where_the_protocol_allows_them(text: str, expected: str) -> None:
    assert extract_answer(text, extraction="last-number") == expected


def test_unboxed_choice_where_the_protocol_allows_it() -> None:
    assert extract_answer("Comparing them, option C fits best", "choice", extraction="last-number") == "C"
    assert extract_answer("Comparing them, option C fits best", "choice") is None
    with pytest.raises(ValueError):
        extract_answer("x", extraction="loose")


def test_extraction_is_linear_in_the_response_length() -> None:
    loop = "\\boxed{" * 14_000 + "x" * 2_000  # ~100k characters of unclosed boxes
    assert len(loop) >= 100_000
    start = time.perf_counter()
    assert extract_answer(loop) is None
    assert grade_one(loop, "5").reason == NO_ANSWER
    spaced = "\\boxed 1 " * 12_000
    assert extract_answer(spaced) == "1"
    assert time.perf_counter() - start < 1.0


def test_a_huge_boxed_number_is_graded_not_a_crash() -> None:
    huge = "\\boxed{" + "9" * 100_000 + "}"
    start = time.perf_counter()
    result = grade_one(huge, "5")
    assert result.correct is False and result.reason is None
    with Grader(workers=1) as grader:
        (pooled,) = grader.grade([(huge, "5", "math")])
    assert pooled.correct is False
    assert grade_one("\\boxed{" + "1" * 3000 + "}", "1" * 3000).correct is True  # long but exact
    assert time.perf_counter() - start < 1.0


def test_majority_vote_groups_equivalent_answers() -> None:
    # 0.5 and \frac{1}{2} are one vote (both right); 7 and 7.0 are one wrong vote.
    samples = _samples(("7", False), ("0.5", True), ("\\frac{1}{2}", True), ("7.0", False), ("3", False))
    assert majority_correct(samples, 4) is False  # 7 (2 votes) ties 1/2 (2 votes): the first seen wins
    assert majority_correct(samples + _samples(("\\dfrac12", True)), 6) is True
    wrong = _samples(("0.25", False), ("\\frac{1}{4}", False), ("1", True))
    assert majority_correct(wrong, 3) is False


def test_wrong_answers_vote_together_when_equivalent() -> None:
    # Three spellings of the same wrong answer outvote two right ones; only math-verify sees the first two as equal.
    answers = ["\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", "\\dfrac{\\sqrt{2}}{2}", "3"]
    with Grader(workers=1) as grader:
        (classes,) = grader.equivalence_classes([answers])
    assert classes[0] == classes[1] == classes[2] != classes[3]
    samples = _samples(("1", True), (answers[0], False), ("1.0", True), (answers[1], False), (answers[2], False))
    assert majority_correct(samples, 5, [None, classes[0], None, classes[1], classes[2]]) is False
    assert majority_correct(samples, 5) is True  # by spelling alone the wrong answers split 2 + 1


# --- defects found by public graders' test suites (tests/test_grading_public.py holds the whole suites) -------


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(workers=1) as pool:
        yield pool


def _grade(grader: Grader, response: str, gold: str, extraction: str = "strict") -> GradeResult:
    (result,) = grader.grade([(response, gold, "math")], extraction)
    return result


@pytest.mark.parametrize("extraction", ["boxed", "strict", "last-number"])
@pytest.mark.parametrize(
    "response, gold",
    [
        ("$$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$$", "(2, 2), (6, 2)"),
        ("\\boxed{1}, \\boxed{2}, \\boxed{3}", "\\{1,2,3\\}"),
        ("\\boxed{1} and \\boxed{2} and \\boxed{3}", "1, 2, 3"),
        ("the roots are \\[ \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}. \\]", "1, -2"),
        ("\\( y_1 = \\boxed{-2(x - 1)^2 + 5} \\) and \\( y_2 = \\boxed{3(x + 2)^2 - 2} \\)", "-2(x-1)^2+5, 3(x+2)^2-2"),
        ("$\\boxed{12 $ and $13 }$", "12, 13"),  # a box whose content crosses $ delimiters
        ("\\boxed{1000,99}", "1000.99"),  # decimal commas
        ("\\boxed{0.111}", "0,111"),
        ("\\boxed{1.22}", "1,22"),
    ],
)
def test_several_boxes_and_decimal_commas(grader: Grader, response: str, gold: str, extraction: str) -> None:
    result = _grade(grader, response, gold, extraction)
    assert result.correct is True, result


def test_order_counts_in_a_tuple_not_in_a_bare_list(grader: Grader) -> None:
    # docs/protocols.md: MATH's original grader compares "10, 4, -2" and "4, 10, -2" as strings; math-verify's
    # suite labels bare lists in another order right. Here a bare list is a set, a tuple is ordered.
    assert _grade(grader, "\\boxed{10, 4, -2}", "4, 10, -2").correct is True
    assert _grade(grader, "\\boxed{10, 4, -2}", "(4, 10, -2)").correct is False
    assert _grade(grader, "\\boxed{4, 10, -2}", "(4, 10, -2)").correct is True


def test_a_box_repeated_is_one_answer(grader: Grader) -> None:
    assert _grade(grader, "So the answer is $\\boxed{12}$ $\\boxed{12}$", "12") == GradeResult(True, "12")


def test_boxes_apart_are_not_one_answer(grader: Grader) -> None:
    assert _grade(grader, "first \\boxed{1}, then corrected: \\boxed{2}", "1, 2").correct is False
    assert _grade(grader, "\\boxed{1}, \\boxed{2}, \\boxed{3}", "1, 2").correct is False


@pytest.mark.parametrize(
    "response, gold",
    [
        ("Answer $9$", "9"),
        ("Answer \\[ 9 \\]", "9"),
        ("Answer \\( (9+1) \\)", "10"),
        ("Therefore $x \\geq 5$ is the solution.", "x \\geq 5"),
        ("The identity matrix is $ \\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix} $.", "\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}"),
        ("\\frac{10}{9}", "10/9"),  # a response that is only its answer
        ("The answer is 42, but I'm not boxing it", "42"),
    ],
)
def test_unboxed_answers_count_only_where_the_protocol_accepts_them(grader: Grader, response: str, gold: str) -> None:
    for extraction in ("strict", "last-number"):
        assert _grade(grader, response, gold, extraction).correct is True, (extraction, response)
    assert _grade(grader, response, gold, "boxed") == GradeResult(False, None, NO_ANSWER)  # LIMO reads only boxes


def test_inline_math_does_not_cross_lines(grader: Grader) -> None:
    assert _grade(grader, "Answer $ \n 9 \n $", "9").reason == NO_ANSWER


def test_a_final_answer_phrase_after_the_last_box_wins(grader: Grader) -> None:
    response = "so the interest is \\boxed{255}. Zaius has $10,455. Final Answer: The final answer is $10,455$. I hope it is correct."
    assert _grade(grader, response, "10455").correct is True
    assert _grade(grader, response, "10455", "boxed").correct is False  # LIMO reads the box


@pytest.mark.parametrize(
    "response, gold, correct",
    [
        ("Soucis : 2,74 $ a..", "2.74", True),
        ("the number is not 10 which is 1,000.99€", "1000.99", True),
        ("which gives 1 000", "1000", True),
        ("AZYUK2A", "2", False),  # not a number inside a word
        ("The total is 57 apples.", "57", True),
    ],
)
def test_last_number_reads_separators_and_skips_words(grader: Grader, response: str, gold: str, correct: bool) -> None:
    assert _grade(grader, response, gold, "last-number").correct is correct


@pytest.mark.parametrize("extraction", ["boxed", "strict", "last-number"])
def test_a_box_inside_an_unfinished_think_block_is_no_answer(grader: Grader, extraction: str) -> None:
    unfinished = "<think>\nLet me try 5: \\boxed{5}. Hmm, wait, maybe"
    assert _grade(grader, unfinished, "5", extraction) == GradeResult(False, None, NO_ANSWER)
    finished = "<think>\nfirst guess \\boxed{4}\n</think>\n\nThe answer is \\boxed{5}."
    assert _grade(grader, finished, "5", extraction).correct is True
    assert _grade(grader, "<think>\n\\boxed{5}\n</think>\n\nI am not sure.", "5", extraction).reason == NO_ANSWER
    sky_t1 = "<|begin_of_thought|>\n\\boxed{5} so far"  # SkyThought's system prompt asks for these markers
    assert _grade(grader, sky_t1, "5", extraction).reason == NO_ANSWER
    sky_t1 += "<|end_of_thought|>\n<|begin_of_solution|>\nThus \\boxed{5}.<|end_of_solution|>"
    assert _grade(grader, sky_t1, "5", extraction).correct is True


def test_a_worked_solution_as_gold_stands_for_its_boxed_answer(grader: Grader) -> None:
    solution = "This factors as $(n - 1)(n + 2) = 0,$ so the solutions are $n = \\boxed{1,-2}.$" + " " * 80
    assert _grade(grader, "\\[ \\boxed{-2} \\quad \\text{and} \\quad \\boxed{1}. \\]", solution).correct is True
    assert _grade(grader, "\\boxed{1}", solution).correct is False
