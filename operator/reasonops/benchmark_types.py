"""What a benchmark is: its problems (`BenchmarkItem`), where they live (`HubSource`), how its rows read
and how it is prompted and graded (`BenchmarkDef`), and a protocol's sampling of it (`Sampling`).

The registry of benchmarks is `reasonops.benchmarks.REGISTRY`; the definitions here are what both the math
benchmarks (`benchmarks.py`) and the code benchmarks (`codebench.py`) are made of, so that neither imports
the other's module to define its own.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from .api import common as reasons
from .errors import WorkloadError

# Both math protocols: 32,768 new tokens. LIMO §4.2 (and eval/eval.sh --max_tokens 32768);
# SkyThought skythought/evals/cli.py SAMPLING_PARAMS_DEFAULT "temperature=0,top_p=1,max_tokens=32768".
MAX_TOKENS = 32768


@dataclass(frozen=True)
class Sampling:
    """The sampling of a protocol for one benchmark (evaluate/protocols.py, codebench.py)."""

    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = MAX_TOKENS
    seed: int | None = None
    note: str | None = None  # why the protocol changed what the spec asked for


@dataclass(frozen=True)
class BenchmarkItem:
    id: str
    question: str
    answer: str
    choices: tuple[str, ...] | None = None
    released: str | None = None  # ISO date the problem was published (release-date windows)
    code: Any = None  # a codebench.CodeProblem for code benchmarks


@dataclass(frozen=True)
class HubSource:
    id: str
    config: str | None = None
    split: str = "test"
    revision: str | None = None
    data_files: tuple[str, ...] | None = None  # JSON files of the hub repository, read directly (no loading script)


MATH_PROMPT = "{question}"
CHOICE_PROMPT = (
    "{question}\n\n{choices}\n\nAnswer with the letter of the correct choice, "
    "and put the letter within \\boxed{{}}."
)

# Field names of the known layouts, first match wins.
QUESTION_FIELDS = ("problem", "question", "Problem", "Question")
ANSWER_FIELDS = ("answer", "final_answer", "expected_answer", "Answer")
ID_FIELDS = ("id", "unique_id", "ID", "idx", "Record ID")

RowReader = Callable[[dict[str, Any], int], BenchmarkItem]


# ------------------------------------------------------------------------------------------------
# Reading rows
# ------------------------------------------------------------------------------------------------

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def answer_text(value: Any) -> str:
    """A gold answer as text: 27.0 → "27", lists joined by ", ", math delimiters ($…$) removed."""
    if isinstance(value, (list, tuple)):
        return ", ".join(answer_text(v) for v in value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return _UNESCAPED_DOLLAR.sub("", str(value)).strip()


def _first(row: dict[str, Any], names: tuple[str, ...], what: str, index: int) -> Any:
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"row {index} has no {what} (looked for {', '.join(names)})")


def _row_id(row: dict[str, Any], index: int) -> str:
    for name in ID_FIELDS:
        if row.get(name) not in (None, ""):
            return str(row[name])
    return str(index)


def read_math_row(row: dict[str, Any], index: int) -> BenchmarkItem:
    return BenchmarkItem(
        id=_row_id(row, index),
        question=str(_first(row, QUESTION_FIELDS, "question", index)).strip(),
        answer=answer_text(_first(row, ANSWER_FIELDS, "answer", index)),
    )


def read_gsm8k_row(row: dict[str, Any], index: int) -> BenchmarkItem:
    """GSM8K's answer is a worked solution ending in "#### 72"; the gold answer is what follows."""
    item = read_math_row(row, index)
    final = item.answer.rsplit("####", 1)[-1].strip().replace(",", "")
    return BenchmarkItem(id=item.id, question=item.question, answer=final)


def read_choice_row(row: dict[str, Any], index: int) -> BenchmarkItem:
    """A multiple-choice row: either {question, choices, answer: letter} or GPQA's hub layout.

    GPQA lists the correct answer first; the choices are shuffled with a seed derived from the row id so
    that the letter is fixed for a row but not always A.
    """
    if "choices" in row:
        choices = tuple(str(c).strip() for c in row["choices"])
        answer = str(_first(row, ANSWER_FIELDS, "answer", index)).strip().upper()
        question = str(_first(row, QUESTION_FIELDS, "question", index)).strip()
        return BenchmarkItem(_row_id(row, index), question, answer, choices)
    correct = str(_first(row, ("Correct Answer",), "correct answer", index)).strip()
    wrong = [str(row[f"Incorrect Answer {i}"]).strip() for i in (1, 2, 3)]
    row_id = _row_id(row, index)
    order = sorted(range(4), key=lambda i: hashlib.sha256(f"{row_id}:{i}".encode()).hexdigest())
    options = [correct, *wrong]
    choices = tuple(options[i] for i in order)
    letter = "ABCD"[order.index(0)]
    return BenchmarkItem(row_id, str(_first(row, QUESTION_FIELDS, "question", index)).strip(), letter, choices)


def _every_row(row: dict[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class BenchmarkDef:
    name: str
    description: str
    hub: HubSource | None
    kind: str = "math"  # the grading.extract_answer kind
    prompt: str = MATH_PROMPT
    problems: int | None = None  # the published size (protocols sample small benchmarks differently); None: not published
    read_row: RowReader = read_math_row
    # Rows of a hub dataset that belong to the benchmark (some hub sets hold several years).
    keep_row: Callable[[dict[str, Any]], bool] = _every_row

    def render(self, item: BenchmarkItem) -> str:
        """The user turn asking the question."""
        choices = "\n".join(f"{'ABCDEFGHIJ'[i]}) {c}" for i, c in enumerate(item.choices or ()))
        return self.prompt.format(question=item.question, choices=choices)
