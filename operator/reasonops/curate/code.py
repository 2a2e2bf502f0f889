"""Code problems in curation: sources with tests, and grading a chain by running its final program.

A source with ``codeTests`` yields problems whose `tests` is a `codebench.CodeProblem` (and whose
`answer` is None). Layouts:

- ``taco`` — TACO and APPS: ``question``, ``input_output`` (JSON ``{"inputs": [...], "outputs": [...],
  "fn_name"?}``; stdin inputs/outputs as text or lists of lines, call-based inputs as argument lists and
  outputs as values, a one-element list unwrapped as TACO's checker accepts it), ``starter_code``;
- ``livecodebench`` — LiveCodeBench's code-generation rows (`codebench.read_lcb_row`).

The question a teacher sees is the problem followed by the format the grader needs (stdin/stdout, or the
starter code). A chain is correct when the last fenced python block of its text passes every test of the
problem in the sandbox (`reasonops.sandbox`, or the sandbox service in a cluster); that verdict drives the
generate stage's rejection sampling and the difficulty stage's solve rate exactly as a math answer does.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ..codebench import FUNCTIONAL_PREAMBLE, CodeProblem, code_protocol, decode_codes, grade_programs, limits_for, read_lcb_row
from ..errors import WorkloadError
from ..grading import GradeResult
from ..sandbox import TestCase
from .records import Problem, RowError
from .text import normalize

STDIN_FORMAT = ("Read the input from standard input and write the answer to standard output. "
                "Give your final program in a ```python code block.")
STARTER_FORMAT = "Complete this starter code and give your final solution in a ```python code block:\n```python\n{starter}\n```"


def row_to_problem(row: Any, layout: str, source: str, index: int) -> Problem:
    """One code row as a Problem with tests; RowError(reason, detail) for a row that is not one."""
    if not isinstance(row, dict):
        raise RowError("not-an-object", type(row).__name__)
    if layout == "livecodebench":
        try:
            item = read_lcb_row(row, index)
        except WorkloadError as exc:
            raise RowError("bad-code-tests", exc.message) from None
        question, code, row_id = item.question, item.code, item.id
    else:
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise RowError("missing-question", None)
        code = taco_tests(row.get("input_output"), str(row.get("starter_code") or ""))
        row_id = row.get("id", row.get("problem_id", index))
    if not code.public and not code.private and code.private_encoded is None:
        raise RowError("no-tests", None)
    return Problem(id=f"{source}:{row_id}", question=prompt(normalize(question), code), answer=None, source=source, tests=code)


def taco_tests(raw: Any, starter: str) -> CodeProblem:
    try:
        spec = json.loads(raw) if isinstance(raw, str) else raw
        inputs, outputs = spec["inputs"], spec["outputs"]
    except (ValueError, TypeError, KeyError):
        raise RowError("bad-code-tests", "input_output is not JSON with inputs and outputs") from None
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise RowError("bad-code-tests", "inputs and outputs are not lists of the same length")
    fn_name = spec.get("fn_name")
    if fn_name:
        tests = tuple(TestCase("\n".join(json.dumps(a) for a in (args if isinstance(args, list) else [args])),
                               json.dumps(out[0] if isinstance(out, list) and len(out) == 1 else out))
                      for args, out in zip(inputs, outputs))
        return CodeProblem("functional", tests, fn_name=str(fn_name), starter_code=starter, preamble=FUNCTIONAL_PREAMBLE)
    tests = tuple(TestCase(_text(i), _text(o)) for i, o in zip(inputs, outputs))
    return CodeProblem("stdin", tests, starter_code=starter)


def _text(value: Any) -> str:
    return "\n".join(str(v) for v in value) if isinstance(value, list) else str(value)


def prompt(question: str, code: CodeProblem) -> str:
    if code.mode == "functional" and code.starter_code:
        return f"{question}\n\n{STARTER_FORMAT.format(starter=code.starter_code.rstrip())}"
    return f"{question}\n\n{STDIN_FORMAT}"


class CodeGrader:
    """Grades chains of code problems in the sandbox (created on first use)."""

    def __init__(self, spec: Any = None) -> None:
        self.spec = spec
        self._sandbox: Any = None

    def grade(self, texts: Sequence[str], codes: Sequence[CodeProblem]) -> list[GradeResult]:
        from ..sandbox.service import sandbox_for

        protocol = code_protocol("default")
        if self._sandbox is None:
            self._sandbox = sandbox_for(limits_for(protocol, self.spec))
        decoded = decode_codes(list(codes), [f"problem {i}" for i in range(len(codes))], self._sandbox)
        return [g.grade for g in grade_programs(self._sandbox, protocol, list(zip(texts, decoded)))]
