"""Answer extraction and equivalence, shared by curation (rejection sampling) and evaluation.

Extraction (`extract_answer`), on what follows the last ``</think>`` or ``<|end_of_thought|>`` (a block still
open at the end states no answer: the model ran out of tokens while thinking):

- ``kind="math"``: the last group of boxes: the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces
  matched, empty boxes skipped (models echo "put your answer within \\boxed{}"), joined by ", " with the boxes
  before it that only spacing, commas, "and"/"or" or delimiters separate (a several-part answer boxed part by
  part); ``\\boxed 5`` without braces is read up to the next space. ``extraction="boxed"`` (LIMO's protocol)
  stops there. Otherwise ("strict", the default) a "final answer is X" after the last box replaces it, and
  without a box these are tried on the last ``FALLBACK_WINDOW`` characters: "answer is X" (also "final
  answer: X", "the answer is actually X"), a line starting with "Answer: X" (X cut at the end of its sentence
  or at an explaining clause, "3, since ..."), the last math span ($..$, $$..$$, \\(..\\), \\[..\\]), and a
  response that is nothing but an answer. With ``extraction="last-number"`` (SkyThought's protocol) the last
  number of that window comes next; otherwise the last number of prose is *not* taken as its answer.
- ``kind="choice"`` (GPQA): a letter A–J, read from the last box, else (not under "boxed") from
  "answer is (B)" / "Answer: B" (with ``last-number``: else the last standalone capital A–D).

Extraction is linear in the response length (reasoning models loop until max_tokens): braces are
matched in one pass, and answers longer than ``MAX_VERIFY_CHARS`` never reach math-verify.

Equivalence: a fast path first (normalised string equality, exact numeric comparison), which settles
most items without leaving the process; the rest goes to math-verify, with font and text commands
(``\\mathrm{e}``, ``\\text{...}``) unwrapped on both sides first. math-verify's own timeouts use
SIGALRM, which only works in a main thread, so `Grader` runs it in worker processes (each task is the
main thread of its worker) under an interval timer per item, with a backstop in the parent for workers
that hang or die. A failure or timeout leaves the item ungraded (``correct=None``) with a reason.
"""

from __future__ import annotations

import atexit
import functools
import logging
import math
import multiprocessing
import multiprocessing.pool
import os
import re
import signal
import threading
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable, Sequence

FALLBACK_WINDOW = 2000

# Reasons of results that are not a plain verdict.
NO_ANSWER = "no_answer"
TIMEOUT = "timeout"
WORKER_LOST = "worker_lost"


@dataclass(frozen=True)
class GradeResult:
    correct: bool | None  # None: could not be graded (see reason)
    extracted: str | None
    reason: str | None = None


# ------------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------------

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
_BARE_BOX = re.compile(r"\\(?:boxed|fbox) +[^\s{$]")  # \boxed 5
_TOKEN = re.compile(r"[^\s$]+")
_BOX_DOLLAR = re.compile(r"(?<!\\)\$")
# What may stand between the boxes of one several-part answer.
_BOX_JOINER = re.compile(
    r"(?:\s|[,;&$]|\\[()\[\]]|\\q?quad\b|\\[,;:! ]|\b(?:and|or)\b"
    r"|\\text\s*\{(?:\s|,|\b(?:and|or|for|parts?)\b|\(\w\))*\}"  # \text{and}, \text{ for part (a) and }
    r"|[A-Za-z](?:_\{?\w+\}?)?\s*=)*"  # y_2 =
)
MAX_JOINED_BOXES = 20
# Math spans, left to right: display $$..$$ and \[..\] may cross lines, inline $..$ and \(..\) may not; \$ is a dollar sign.
_MATH_SPAN = re.compile(
    r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\(([^\n]+?)\\\)|(?<!\\)\$((?:\\.|[^$\n\\])+?)\$",
    re.DOTALL,
)
_FINAL_ANSWER = re.compile(r"final answer is\s*:?\s*(.+)", re.IGNORECASE)
# Think blocks, (open, close): DeepSeek-R1/QwQ's and Sky-T1's (SkyThought's system prompt). The answer is stated
# after the last one; a block that never closed (the model ran out of tokens while thinking) states none.
THINK_BLOCKS = (("<think>", "</think>"), ("<|begin_of_thought|>", "<|end_of_thought|>"))
_ANSWER_PHRASE = re.compile(
    r"\banswer\s*(?:is|:|=)\s*[:=]?\s*(?:(?:actually|indeed|simply|just|thus|therefore|then|now|clearly|exactly|precisely)\s+)*(.+)",
    re.IGNORECASE,
)
_ANSWER_LINE = re.compile(r"^[\s>*#_]*answer\s*[*_]*\s*:[*_]*\s*(.+)$", re.IGNORECASE | re.MULTILINE)
# The first sentence of what follows "the answer is": up to a full stop (not a decimal point), a semicolon,
# or a clause that explains it ("3, since 4 fails"); commas between values are kept ("2, 3").
_SENTENCE_END = re.compile(
    r"(?<!\\)\.(?:\s|$)|;|,?\s+(?:since|because|as|which|where|when|so|but|given|for|while|then|and then)\b|\n",
    re.IGNORECASE,
)
# A number not inside a word (AZYUK2A): thousands by commas or spaces (1,000 or 1 000), a decimal point or
# comma, or a simple fraction (2/3); units may follow (1,000.99m²).
_LAST_NUMBER = re.compile(
    r"(?<![\w.,/])-?(?:(?:[1-9]\d{0,2}(?:(?:,| )\d{3})+(?![\d,])|\d+)(?:[.,]\d+)?(?:/\d+)?|\.\d+)"
)
# A response that is nothing but an answer ("-5", "\\frac{10}{9}", "x=2"): one line without words.
_BARE_ANSWER_CHARS = 100
_WORD = re.compile(r"(?<![\\\w])[A-Za-z]{3,}")
_TEXT_GROUP = re.compile(r"\\(?:text|mathrm|mbox)\s*\{[^{}]*\}")  # 10\text{ units}: a unit, not prose
_CHOICE_LETTER = re.compile(r"^\(?([A-J])\)?(?:$|[\s.:)])", re.IGNORECASE)
_CHOICE_PHRASE = re.compile(r"answer\s*(?:is|:)\s*:?\s*[*_]*\s*\(?([A-J])\b", re.IGNORECASE)
_LONE_LETTER = re.compile(r"\b([A-D])\b")

# Extraction modes: which fallbacks apply when a response has no box.
BOXED = "boxed"  # the box only (LIMO's eval/utils/parser.py)
STRICT = "strict"  # then the answer phrases and the last math span (this project's default)
LAST_NUMBER = "last-number"  # then the last number of the response (SkyThought, see docs/protocols.md)
EXTRACTIONS = (BOXED, STRICT, LAST_NUMBER)


def _group_end(text: str, start: int, stop: int) -> int | None:
    """The index of the '}' closing the '{' at text[start], if it closes before `stop`."""
    if text.find("}", start, stop) < 0:
        return None
    depth = 0
    for match in _BRACE_TOKEN.finditer(text, start, stop):  # escaped characters (\{, \}) are skipped whole
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return match.start()
    return None


def _last_box(text: str, end: int) -> tuple[str, int, int] | None:
    """(content, start, end) of the last non-empty, closed \\boxed{} or \\fbox{} of text[:end].

    Linear in `end`, for responses that loop on boxes until max_tokens: each command is searched
    backwards once, and a group is scanned only up to the brace of a later unclosed group (a group
    still open there stays open to the end, since the later one never closes).
    """
    found = {command: text.rfind(command, 0, end) for command in _BOX_COMMANDS}
    stop = end
    while True:
        command = max(found, key=found.__getitem__)
        pos = found[command]
        if pos < 0:
            return None
        found[command] = text.rfind(command, 0, pos)
        i = pos + len(command)
        if text[i : i + 1].isalpha():  # \boxeds or \fboxed: another command
            continue
        j = i
        while j < end and text[j] == " ":
            j += 1
        if text[j : j + 1] == "{" and j < end:
            close = _group_end(text, j, stop)
            if close is None:
                stop = j
                last_close = text.rfind("}", 0, j)
                if not _BARE_BOX.search(text, last_close + 1, j):
                    # No box opened after the last '}' before this one can close either: skip them at once.
                    found = {c: text.rfind(c, 0, last_close + 1) if last_close >= 0 else -1 for c in found}
                continue
            # A '$' inside a box is a math delimiter the model closed and reopened ($\boxed{12 $ and $13}$).
            content = _BOX_DOLLAR.sub(" ", text[j + 1 : close]).strip()
            box_end = close + 1
        else:
            token = _TOKEN.match(text, j, end) if j > i else None  # \boxed 5
            content = token.group(0) if token else ""
            box_end = -1  # a bare box never joins others
        if content:
            return content, pos, box_end


def last_boxed(text: str) -> str | None:
    """The content of the last non-empty, closed \\boxed{} or \\fbox{} of text."""
    box = _last_box(text, len(text))
    return box[0] if box else None


def boxed_answer(text: str) -> tuple[str, int] | None:
    """The answer stated in the last group of boxes of text, and where that group ends; None without a box.

    A several-part answer is often boxed part by part (``\\boxed{(2, 2)} \\quad\\text{and}\\quad \\boxed{(6, 2)}``,
    ``\\boxed{1}, \\boxed{2}``): boxes separated only by spacing, commas, "and"/"or", math delimiters or a
    part's name (``y_2 =``) form one answer, their contents joined by ", " (a list math-verify reads as a set).
    """
    box = _last_box(text, len(text))
    if box is None:
        return None
    parts = [box]
    while len(parts) < MAX_JOINED_BOXES and parts[0][2] >= 0:
        earlier = _last_box(text, parts[0][1])
        if earlier is None or earlier[2] < 0 or not _BOX_JOINER.fullmatch(text, earlier[2], parts[0][1]):
            break
        parts.insert(0, earlier)
    end = parts[-1][2] if parts[-1][2] >= 0 else parts[-1][1]
    return ", ".join(dict.fromkeys(part[0] for part in parts)), end  # a box repeated is one answer


def _last_math(text: str) -> str | None:
    """The content of the last math span of text: $..$, $$..$$, \\(..\\) or \\[..\\] (inline spans on one line)."""
    spans = [m.group(m.lastindex or 0) for m in _MATH_SPAN.finditer(text)]
    spans = [span.strip() for span in spans if span and span.strip()]
    return spans[-1] if spans else None


def _clean_fallback(value: str) -> str | None:
    value = _SENTENCE_END.split(value.strip(), maxsplit=1)[0]
    value = value.strip().strip("*_").strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if value.startswith(left) and value.endswith(right) and len(value) > len(left) + len(right) - 1:
            value = value[len(left) : len(value) - len(right)].strip()
    return value.rstrip(".,:").strip() or None


def _phrase_answer(text: str) -> str | None:
    tail = text[-FALLBACK_WINDOW:]
    for pattern in (_ANSWER_PHRASE, _ANSWER_LINE):
        matches = list(pattern.finditer(tail))
        if matches:
            answer = _clean_fallback(matches[-1].group(1))
            if answer:
                return answer
    return None


def _last_number(text: str) -> str | None:
    numbers = _LAST_NUMBER.findall(text[-FALLBACK_WINDOW:])
    if not numbers:
        return None
    number = numbers[-1]
    if _SPACED_THOUSANDS.match(number):
        return number.replace(",", "").replace(" ", "")
    return number.replace(",", ".")  # what is left of a comma is a decimal comma (1000,99)


def _math_answer(text: str, extraction: str) -> str | None:
    found = boxed_answer(text)
    if found is not None:
        answer, end = found
        if extraction != BOXED:
            # "The final answer is X" after the last box restates (or corrects) it.
            after = _FINAL_ANSWER.findall(text, end, end + FALLBACK_WINDOW)
            restated = _clean_fallback(after[-1]) if after else None
            return restated or answer
        return answer
    if extraction == BOXED:
        return None
    answer = _phrase_answer(text) or _last_math(text[-FALLBACK_WINDOW:]) or _bare_answer(text)
    if answer is None and extraction == LAST_NUMBER:
        answer = _last_number(text)
    return answer


def _bare_answer(text: str) -> str | None:
    value = text.strip()
    if not value or len(value) > _BARE_ANSWER_CHARS or "\n" in value or _WORD.search(_TEXT_GROUP.sub("", value)):
        return None
    return value


def _choice_letter(value: str) -> str | None:
    value = unwrap_commands(value).strip().strip("*_$").strip()
    match = _CHOICE_LETTER.match(value)
    return match.group(1).upper() if match else None


def final_part(text: str) -> str:
    """The part of a response that states its answer: what follows the last ``</think>`` (or Sky-T1's
    ``<|end_of_thought|>``); nothing when such a block is still open at the end."""
    for opening, closing in THINK_BLOCKS:
        close = text.rfind(closing)
        if close >= 0:
            text = text[close + len(closing) :]
        if opening in text:
            return ""
    return text


def extract_answer(text: str, kind: str = "math", extraction: str = STRICT) -> str | None:
    """The final answer stated in a response (see the module docstring for the rules), or None."""
    if kind not in ("math", "choice"):
        raise ValueError(f"unknown answer kind {kind!r} (math or choice)")
    if extraction not in EXTRACTIONS:
        raise ValueError(f"unknown extraction {extraction!r} ({' or '.join(EXTRACTIONS)})")
    text = final_part(text)
    if kind == "math":
        return _math_answer(text, extraction)
    boxed = last_boxed(text)
    if boxed is not None:
        return _choice_letter(boxed)
    if extraction == BOXED:
        return None
    tail = text[-FALLBACK_WINDOW:]
    matches = list(_CHOICE_PHRASE.finditer(tail))
    if not matches and extraction == LAST_NUMBER:
        matches = list(_LONE_LETTER.finditer(tail))
    return matches[-1].group(1).upper() if matches else None


# ------------------------------------------------------------------------------------------------
# Fast path: normalised strings and exact numbers
# ------------------------------------------------------------------------------------------------

# Font and text commands whose argument is kept as plain text. math-verify parses only a prefix of an
# expression holding them (`1-\mathrm{e}^{-1}` was read as 1), so both sides are unwrapped before it sees them.
# \mathbb and \mathcal change the meaning and are left alone.
_UNWRAP = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mathsf|mathtt|mathnormal|boldsymbol|bm|mbox|operatorname)\s*\{"
    r"|\\.|[{}]"
)
_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|\\displaystyle|\\left|\\right|\s+")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°")
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")  # 0,111 is a decimal comma
_SPACED_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:[, ]\d{3})+(?:\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
_DECIMAL = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
_FRACTION = re.compile(r"^([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}$|^([+-]?\d+)/([+-]?\d+)$")
_LIST_COMMA = re.compile(r",\s")

# Python refuses int() of more than 4,300 digits; answers longer than this are compared as strings only.
MAX_NUMBER_CHARS = 4000
# math-verify (sympy) on a huge expression takes seconds to minutes: longer answers are settled by the fast path.
MAX_VERIFY_CHARS = 1000


def unwrap_commands(value: str) -> str:
    """value without font/text commands around their arguments (\\mathrm{e} → e), nested ones too, in one pass."""
    if "\\" not in value:
        return value
    out: list[str] = []
    stack: list[bool] = []  # for each open brace: whether it belongs to an unwrapped command
    last = 0
    for match in _UNWRAP.finditer(value):
        token = match.group(0)
        if token == "{":
            stack.append(False)
            continue
        if token == "}":
            if stack and stack.pop():
                out.append(value[last : match.start()])
                last = match.end()
            continue
        if token.endswith("{") and len(token) > 2:
            out.append(value[last : match.start()])
            last = match.end()
            stack.append(True)
    out.append(value[last:])
    return "".join(out)


def normalize(answer: str) -> str:
    """A canonical spelling for string comparison: no spacing, delimiters, \\text, degree signs or \\dfrac."""
    value = answer.strip()
    if len(value) > 1 and value[0] == "$" and value[-1] == "$":
        value = value.strip("$")
    value = unwrap_commands(value)
    value = value.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    value = _DEGREES.sub("", value).replace("\\$", "")
    value = _SPACING.sub("", value)
    return value.rstrip(".")


def as_number(value: str, thousands: bool = True) -> Fraction | None:
    """An exact number for a normalised integer, decimal or simple fraction; None for anything else.

    `thousands=False` when the answer was written with ", " (a list such as "32, 349", not 32,349).
    """
    if len(value) > MAX_NUMBER_CHARS:
        return None
    if thousands and _THOUSANDS.match(value):
        value = value.replace(",", "")
    if _DECIMAL.match(value):
        return Fraction(value)
    match = _FRACTION.match(value)
    if not match:
        return None
    sign, num, den = (match.group(1), match.group(2), match.group(3)) if match.group(2) else ("", match.group(4), match.group(5))
    if int(den) == 0:
        return None
    return Fraction(int(num), int(den)) * (-1 if sign == "-" else 1)


def canonical(answer: str) -> str:
    """A key under which equal answers meet: the exact value of a number, else the normalised spelling."""
    value = normalize(answer)
    number = as_number(value, thousands=not _LIST_COMMA.search(answer))
    return f"={number}" if number is not None else value


def reference_answer(gold: str) -> str:
    """The gold answer to compare with: a worked solution (MATH's ``solution``: boxed, or longer than any answer
    math-verify could check) stands for the answer it states, read as `strict` reads a response."""
    if "\\boxed" in gold or "\\fbox" in gold or len(gold) > MAX_VERIFY_CHARS:
        return _math_answer(gold, STRICT) or gold
    return gold


def fast_verdict(extracted: str, gold: str, kind: str = "math") -> bool | None:
    """True or False when settled without math-verify; None when math-verify must decide."""
    if kind == "choice":
        return extracted.strip().upper() == (_choice_letter(gold) or gold.strip().upper())
    pred, ref = normalize(extracted), normalize(gold)
    if pred == ref:
        return True
    a = as_number(pred, thousands=not _LIST_COMMA.search(extracted))
    b = as_number(ref, thousands=not _LIST_COMMA.search(gold))
    # 1000,99 or 0,111 beside a plain number is a decimal comma; beside anything else it may be a list (1,2).
    if a is None and b is not None and _DECIMAL_COMMA.match(pred):
        a = Fraction(pred.replace(",", "."))
    elif b is None and a is not None and _DECIMAL_COMMA.match(ref):
        b = Fraction(ref.replace(",", "."))
    if a is None or b is None:
        # Too long for math-verify to finish in time (a looping response's box): only an equal spelling counts.
        return False if max(len(pred), len(ref)) > MAX_VERIFY_CHARS else None
    if a == b:
        return True
    # math-verify rounds floats to 6 decimals: only a clear difference is settled here.
    return False if abs(a - b) > Fraction(1, 10**4) * max(1, abs(a), abs(b)) else None


# ------------------------------------------------------------------------------------------------
# math-verify under a per-item timer (runs in a main thread: a worker process or the caller's)
# ------------------------------------------------------------------------------------------------


class _ItemTimeout(BaseException):  # BaseException: math-verify swallows Exception
    pass


def _raise_timeout(signum: int, frame: object) -> None:
    raise _ItemTimeout()


def _as_latex(answer: str) -> str:
    answer = unwrap_commands(answer)
    return f"${answer}$" if "$" not in answer else answer


@functools.cache
def _math_verify_functions() -> tuple[Callable[..., Any], Callable[..., Any]]:
    from math_verify import parse, verify

    # It warns once that its own timeouts are off; they are, on purpose (see _math_verify).
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return parse, verify


def _math_verify(extracted: str, gold: str, timeout: float) -> tuple[bool | None, str | None]:
    """(verdict, reason) from math-verify, with one interval timer around parsing and verifying."""
    parse, verify = _math_verify_functions()
    previous = signal.signal(signal.SIGALRM, _raise_timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        # math-verify's own SIGALRM timeouts are disabled (None): they would cancel this timer.
        gold_parsed = parse(_as_latex(gold), parsing_timeout=None)
        if not gold_parsed:
            return None, "gold answer not parseable"
        pred_parsed = parse(_as_latex(extracted), parsing_timeout=None)
        if not pred_parsed:
            return False, None
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)), None
    except _ItemTimeout:
        return None, TIMEOUT
    except Exception as exc:  # a grader bug or a sympy failure must not end the run
        return None, f"error: {type(exc).__name__}: {exc}"[:200]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _verify_chunk(chunk: Sequence[tuple[str, str]], timeout: float) -> list[tuple[bool | None, str | None]]:
    return [_math_verify(extracted, gold, timeout) for extracted, gold in chunk]


def _warm_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent
    _math_verify("1", "1", 30.0)  # import sympy and the LaTeX parser before the first real item


def _local_verdict(extracted: str, gold: str, kind: str, timeout: float) -> GradeResult:
    fast = fast_verdict(extracted, gold, kind)
    if fast is not None:
        return GradeResult(fast, extracted)
    verdict, reason = _math_verify(extracted, gold, timeout)
    return GradeResult(verdict, extracted, reason)


def grade_one(response: str, gold: str, kind: str = "math", timeout: float = 5.0, extraction: str = STRICT) -> GradeResult:
    """Grade one response. In the main thread math-verify runs in-process; elsewhere in a shared pool."""
    extracted = extract_answer(response, kind, extraction)
    if extracted is None:
        return GradeResult(False, None, NO_ANSWER)
    if threading.current_thread() is threading.main_thread():
        return _local_verdict(extracted, reference_answer(gold) if kind == "math" else gold, kind, timeout)
    return _shared_grader(timeout).grade([(response, gold, kind)], extraction)[0]


# ------------------------------------------------------------------------------------------------
# The process pool
# ------------------------------------------------------------------------------------------------


class Grader:
    """Grades many responses: extraction and the fast path in-process, math-verify in worker processes.

    The pool starts on the first item that needs math-verify, so a benchmark of integer answers
    never pays for it. Identical (answer, gold) pairs are verified once.
    """

    CHUNK = 16

    def __init__(self, workers: int | None = None, timeout: float = 5.0) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.timeout = timeout
        self._pool: multiprocessing.pool.Pool | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._discard_pool()

    def grade(self, items: Iterable[tuple[str, str, str]], extraction: str = STRICT) -> list[GradeResult]:
        """Grade (response, gold, kind) triples; the results are in the same order."""
        results: list[GradeResult | None] = []
        pending: dict[tuple[str, str], list[int]] = {}
        for response, gold, kind in items:
            extracted = extract_answer(response, kind, extraction)
            if extracted is None:
                results.append(GradeResult(False, None, NO_ANSWER))
                continue
            if kind == "math":
                gold = reference_answer(gold)
            fast = fast_verdict(extracted, gold, kind)
            if fast is not None:
                results.append(GradeResult(fast, extracted))
                continue
            pending.setdefault((extracted, gold), []).append(len(results))
            results.append(None)
        if pending:
            with self._lock:
                verdicts = self._verify_all(list(pending))
            for key, (verdict, reason) in zip(pending, verdicts):
                for index in pending[key]:
                    results[index] = GradeResult(verdict, key[0], reason)
        return results  # type: ignore[return-value]  # every slot is filled above

    def equivalence_classes(self, groups: Sequence[Sequence[str]]) -> list[list[int]]:
        """For each group of answers (one problem's wrong answers), a class number per answer: two answers share
        a class when the fast path or math-verify finds them equal (transitively). One pool pass for all groups."""
        classes: list[list[int]] = []
        pending: dict[tuple[str, str], list[tuple[int, int, int]]] = {}  # pair -> (group, i, j)
        parents: list[list[int]] = []
        for g, answers in enumerate(groups):
            keys = [canonical(a) for a in answers]
            first = {key: keys.index(key) for key in keys}
            parents.append([first[key] for key in keys])  # equal spellings and values: already one class
            reps = sorted(set(first.values()))
            for x, i in enumerate(reps):
                for j in reps[x + 1 :]:
                    verdict = fast_verdict(answers[j], answers[i])
                    if verdict:
                        _union(parents[g], i, j)
                    elif verdict is None:
                        pending.setdefault((answers[j], answers[i]), []).append((g, i, j))
        if pending:
            with self._lock:
                verdicts = self._verify_all(list(pending))
            for spots, (verdict, _) in zip(pending.values(), verdicts):
                if verdict:
                    for g, i, j in spots:
                        _union(parents[g], i, j)
        for parent in parents:
            classes.append([_find(parent, i) for i in range(len(parent))])
        return classes

    def _start(self) -> multiprocessing.pool.Pool:
        if self._pool is None:
            # spawn, not fork: the caller may run threads (HTTP clients, progress reporters).
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(self.workers, initializer=_warm_worker)
        return self._pool

    def _verify_all(self, pairs: list[tuple[str, str]]) -> list[tuple[bool | None, str | None]]:
        chunks = [pairs[i : i + self.CHUNK] for i in range(0, len(pairs), self.CHUNK)]
        out: list[tuple[bool | None, str | None]] = []
        while chunks:
            pool = self._start()
            handles = [pool.apply_async(_verify_chunk, (chunk, self.timeout)) for chunk in chunks]
            done = 0
            for chunk, handle in zip(chunks, handles):
                done += 1
                # The timer inside the worker bounds each item; this backstop catches a worker stuck in C
                # code or killed (its task never returns): the chunk stays ungraded, the rest is resubmitted
                # to a fresh pool. The grace covers worker start-up (imports) on a busy machine.
                try:
                    out.extend(handle.get(timeout=self.timeout * len(chunk) + 60.0))
                except multiprocessing.TimeoutError:
                    self._discard_pool()
                    out.extend([(None, WORKER_LOST)] * len(chunk))
                    break
            chunks = chunks[done:]
        return out

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _union(parent: list[int], i: int, j: int) -> None:
    a, b = _find(parent, i), _find(parent, j)
    parent[max(a, b)] = min(a, b)


_SHARED: Grader | None = None


def _shared_grader(timeout: float) -> Grader:
    global _SHARED
    if _SHARED is None:
        _SHARED = Grader(workers=1, timeout=timeout)
        atexit.register(_SHARED.close)
    return _SHARED


# ------------------------------------------------------------------------------------------------
# Metrics over samples of one problem
# ------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for a problem with n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 < k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_correct(samples: Sequence[GradeResult], k: int, classes: Sequence[int | None] | None = None) -> bool:
    """maj@k of one problem: whether the most frequent answer among the first k samples is correct.

    Answers are grouped by equivalence: every correct answer is equivalent to the gold answer and so to each
    other (one vote however spelled); the others by `classes` (one class number per sample, from
    `Grader.equivalence_classes`) or, without it, by exact value (0.5 and \\frac{1}{2}) or normalised spelling.
    Samples without an answer do not vote; a tie goes to the answer seen first.
    """
    chosen = [(i, s) for i, s in enumerate(samples[:k]) if s.extracted is not None]
    if not chosen:
        return False

    def key(i: int, s: GradeResult) -> object:
        if s.correct:
            return None  # the gold answer's group
        return ("class", classes[i]) if classes is not None and classes[i] is not None else canonical(s.extracted)  # type: ignore[arg-type]

    keys = [key(i, s) for i, s in chosen]
    counts = Counter(keys)
    best = max(counts.values())
    winner = next(s for (_, s), k_ in zip(chosen, keys) if counts[k_] == best)
    return winner.correct is True
