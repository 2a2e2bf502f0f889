"""Code benchmarks: problems graded by running their tests in the sandbox (`reasonops.sandbox`).

Layouts read (each row becomes a `BenchmarkItem` whose `code` is a `CodeProblem`):

- **LiveCodeBench** code generation (``livecodebench/code_generation_lite``; read from
  lcb_runner/benchmarks/code_generation.py at commit 28fef95): ``question_content``, ``starter_code``,
  ``platform``, ``difficulty``, ``contest_date`` (the release date), ``public_test_cases`` and
  ``private_test_cases`` (JSON lists of ``{input, output, testtype}``; ``testtype`` ``stdin`` or
  ``functional``), ``metadata`` (JSON with ``func_name``). LiveCodeBench stores most private tests as
  base64 of zlib of a *pickle* of the JSON text. Pickle is never loaded in this process: such tests are
  decoded in the sandbox, by an unpickler that refuses every global (so only strings, numbers and
  containers can come out), when the problem is about to be graded.
- **TACO/APPS** ``input_output`` (JSON ``{inputs, outputs, fn_name?}``) — used by curation, `curate/code.py`.
- **HumanEval** (``prompt``, ``test``, ``entry_point``) and **MBPP** (``text``, ``test_list``,
  ``test_setup_code``): the tests are code run after the program ("script" tests).

``code-demo`` is built in: twelve easy problems (eight stdin, four functional) with public and private
tests and release dates, for tests and local runs without downloads.

Protocols (per benchmark fields of the EvalRun spec override the sampling):

- ``livecodebench`` — LiveCodeBench's own defaults (lcb_runner/runner/parser.py, commit 28fef95): 10
  samples, temperature 0.2, top_p 0.95, 2,000 new tokens, 6 s per test; its generic system message and
  question template (lcb_runner/prompts/code_generation.py); code = the lines between the last two ``` lines
  (lcb_runner/utils/extraction_utils.py); public and private tests.
- ``skythought`` — SkyThought's evaluation (skythought/evals, commit 0d190f1): one sample at temperature 0,
  top_p 1, 32,768 tokens, seed 41 (cli.py); its stdin / non-stdin templates (tasks/livecodebench/
  livecodebench.yaml), no system prompt; code = the last fenced block of any language, cut at a further
  fence (livecodebench_handler.py, util/common.py has_code); 6 s per test; private tests only.
  One deviation: for functional problems the starter code is appended to the prompt (SkyThought's template
  leaves it out, and the graded function name is only in the starter code).
- ``limo`` / ``custom`` on a code benchmark: LiveCodeBench's prompt, one greedy sample, the last fenced block
  tagged python (or untagged), 6 s per test, all tests.

pass@1 / pass@k use `grading.pass_at_k`, the same unbiased estimator as math.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .benchmark_types import BenchmarkDef, BenchmarkItem, HubSource, Sampling
from .api import common as reasons
from .errors import WorkloadError
from .grading import GradeResult
from .sandbox import Execution, Job, Limits, Sandbox, TestCase

# Imports made available to functional (LeetCode-style) solutions, which use List, Optional, deque… freely.
FUNCTIONAL_PREAMBLE = (
    "from typing import *\nfrom collections import *\nfrom itertools import *\nfrom functools import *\n"
    "from heapq import *\nfrom bisect import *\nfrom math import *\nimport collections, heapq, bisect, math, "
    "itertools, functools, string, re, sys\nsys.setrecursionlimit(50000)\n"
)


@dataclass(frozen=True)
class CodeProblem:
    mode: str  # stdin | functional | script
    public: tuple[TestCase, ...] = ()
    private: tuple[TestCase, ...] = ()
    fn_name: str | None = None
    starter_code: str = ""
    platform: str | None = None
    difficulty: str | None = None
    private_encoded: str | None = None  # LiveCodeBench's compressed private tests, decoded in the sandbox
    preamble: str = ""

    def tests(self, which: str = "all") -> tuple[TestCase, ...]:
        if self.private_encoded is not None:
            raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, "private tests are still encoded (decode_private first)")
        return self.private if which == "private" and self.private else self.public + self.private


# ------------------------------------------------------------------------------------------------
# Reading rows
# ------------------------------------------------------------------------------------------------


def _json_field(row: dict[str, Any], name: str, index: int, default: Any = None) -> Any:
    value = row.get(name, default)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"row {index}: {name} is not JSON: {exc}") from exc
    return value


def _lcb_tests(cases: Any, index: int, what: str) -> tuple[tuple[TestCase, ...], set[str]]:
    if not isinstance(cases, list) or not all(isinstance(c, dict) and "input" in c and "output" in c for c in cases):
        raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"row {index}: {what} is not a list of {{input, output}} objects")
    return tuple(TestCase(str(c["input"]), str(c["output"])) for c in cases), {str(c.get("testtype", "stdin")) for c in cases}


def _plain_private(raw: Any) -> Any:
    """Private tests that need no unpickling: a list, JSON text, or base64 of zlib of JSON; else None."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    try:
        data = zlib.decompress(base64.b64decode(raw))
    except (ValueError, zlib.error):
        return None
    return json.loads(data) if data[:1] in (b"[", b"{") else None


def read_lcb_row(row: dict[str, Any], index: int) -> BenchmarkItem:
    """A LiveCodeBench code-generation row; compressed private tests stay encoded until decode_private."""
    question = row.get("question_content")
    if not question:
        raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"row {index} has no question_content (not LiveCodeBench's layout)")
    public, types = _lcb_tests(_json_field(row, "public_test_cases", index, "[]"), index, "public_test_cases")
    private: tuple[TestCase, ...] = ()
    encoded = None
    raw_private = row.get("private_test_cases") or "[]"
    cases = _plain_private(raw_private)
    if cases is None:
        encoded = raw_private
    else:
        private, more = _lcb_tests(cases, index, "private_test_cases")
        types |= more
    metadata = _json_field(row, "metadata", index, "{}") or {}
    mode = "functional" if "functional" in types else "stdin"
    fn_name = metadata.get("func_name") if isinstance(metadata, dict) else None
    if mode == "functional" and not fn_name:
        raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"row {index}: functional tests but no metadata.func_name")
    released = str(row.get("contest_date") or "")[:10] or None
    code = CodeProblem(mode, public, private, fn_name, str(row.get("starter_code") or ""), row.get("platform"),
                       row.get("difficulty"), encoded, FUNCTIONAL_PREAMBLE if mode == "functional" else "")
    item_id = str(row.get("question_id") or index)
    return BenchmarkItem(item_id, str(question).strip(), f"{len(public) + len(private)} tests", released=released, code=code)


def read_humaneval_row(row: dict[str, Any], index: int) -> BenchmarkItem:
    try:
        prompt, test, entry = str(row["prompt"]), str(row["test"]), str(row["entry_point"])
    except KeyError as exc:
        raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"row {index} has no {exc.args[0]} (not HumanEval's layout)") from None
    code = CodeProblem("script", (), (TestCase(f"{test}\ncheck({entry})\n", ""),), entry)
    question = f"Complete the following Python function.\n\n```python\n{prompt}\n```"
    return BenchmarkItem(str(row.get("task_id") or index), question, "1 test", code=code)


def read_mbpp_row(row: dict[str, Any], index: int) -> BenchmarkItem:
    asserts = row.get("test_list")
    if not row.get("text") or not isinstance(asserts, list) or not asserts:
        raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"row {index} has no text or test_list (not MBPP's layout)")
    setup = str(row.get("test_setup_code") or "")
    tests = tuple(TestCase(f"{setup}\n{a}", "") for a in asserts)
    question = f"{str(row['text']).strip()}\nYour code should pass these tests:\n\n" + "\n".join(asserts)
    return BenchmarkItem(str(row.get("task_id") or index), question, f"{len(tests)} tests", code=CodeProblem("script", tests))


def decode_private(items: Sequence[BenchmarkItem], sandbox: Any) -> list[BenchmarkItem]:
    """Items whose compressed private tests are decoded (in the sandbox: the payload is a pickle)."""
    codes = decode_codes([item.code for item in items], [item.id for item in items], sandbox)
    return [item if code is item.code else _replace_code(item, code) for item, code in zip(items, codes)]


def decode_codes(codes: Sequence[CodeProblem | None], ids: Sequence[str], sandbox: Any) -> list[CodeProblem | None]:
    """The problems with LiveCodeBench's pickled private tests decoded by `_UNPICKLE` in the sandbox."""
    pending = [i for i, code in enumerate(codes) if code is not None and code.private_encoded is not None]
    out = list(codes)
    jobs = [Job(_UNPICKLE, (TestCase(codes[i].private_encoded, ""),), keep_output=True) for i in pending]
    for i, execution in zip(pending, sandbox.run_many(jobs, limits=DECODE_LIMITS) if jobs else []):
        outcome = execution.tests[0] if execution.tests else None
        if execution.error or outcome is None or outcome.verdict not in ("passed", "wrong_answer"):
            detail = execution.error or (outcome.stderr.strip() if outcome else "") or (outcome.verdict if outcome else "")
            raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"{ids[i]}: cannot decode the private tests: {detail}"[:500])
        private, _ = _lcb_tests(json.loads(outcome.stdout), i, "private_test_cases")
        out[i] = dataclasses.replace(codes[i], private=private, private_encoded=None)
    return out


def _replace_code(item: BenchmarkItem, code: CodeProblem) -> BenchmarkItem:
    return dataclasses.replace(item, answer=f"{len(code.public) + len(code.private)} tests", code=code)


DECODE_LIMITS = Limits(timeout=120, memory_mb=4096, output_bytes=1 << 30, file_mb=1024, nproc=4)

# Runs in the sandbox: base64 → zlib → pickle (no globals allowed) → JSON on stdout.
_UNPICKLE = """
import base64, io, json, pickle, sys, zlib
class NoGlobals(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused global {module}.{name}")
value = NoGlobals(io.BytesIO(zlib.decompress(base64.b64decode(sys.stdin.read())))).load()
if isinstance(value, bytes):
    value = value.decode()
if isinstance(value, str):
    value = json.loads(value)
sys.stdout.write(json.dumps(value))
"""


def encode_private(cases: list[dict[str, str]]) -> str:
    """LiveCodeBench's compressed form without pickle (zlib of the JSON text, base64); the loader reads both."""
    return base64.b64encode(zlib.compress(json.dumps(cases).encode())).decode()


def content_hash(items: Sequence[BenchmarkItem]) -> str:
    """sha256 over ids, questions and tests: two runs with the same hash graded the same problems."""
    digest = hashlib.sha256()
    for item in items:
        code = item.code
        tests = [] if code is None else [[t.input, t.output] for t in code.public + code.private]
        digest.update(json.dumps([item.id, item.question, item.released, tests]).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------
# Protocols: prompts and code extraction
# ------------------------------------------------------------------------------------------------

LCB_SYSTEM = ("You are an expert Python programmer. You will be given a question (problem specification) and will "
              "generate a correct Python program that matches the specification and passes all tests.")
LCB_WITH_STARTER = "You will use the following starter code to write the solution to the problem and enclose your code within delimiters."
LCB_WITHOUT_STARTER = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the sample "
    "inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, it reads the "
    "inputs, runs the algorithm and writes output to STDOUT."
)
SKY_STDIN = ("Generate an executable Python function generated from the given prompt. The function should take stdin "
             "as input and print the output. Simply call the function after the definition. {prompt}")
SKY_FUNCTIONAL = ("Generate an executable Python function generated from the given prompt. Return the function body "
                  "without invoking it at the final solution. {prompt}")


def lcb_prompt(item: BenchmarkItem) -> str:
    code = item.code
    prompt = f"### Question:\n{item.question}\n\n"
    if code.mode == "script":
        prompt += "### Format: Write the complete Python code and enclose it within delimiters.\n```python\n# YOUR CODE HERE\n```\n\n"
    elif code.starter_code:
        prompt += f"### Format: {LCB_WITH_STARTER}\n```python\n{code.starter_code}\n```\n\n"
    else:
        prompt += f"### Format: {LCB_WITHOUT_STARTER}\n```python\n# YOUR CODE HERE\n```\n\n"
    return prompt + "### Answer: (use the provided format with backticks)\n\n"


def skythought_prompt(item: BenchmarkItem) -> str:
    code = item.code
    if code.mode == "stdin":
        return SKY_STDIN.format(prompt=item.question)
    return SKY_FUNCTIONAL.format(prompt=f"{item.question}\n\n```python\n{code.starter_code}\n```")


_FENCE = re.compile(r"^\s*```\s*([A-Za-z0-9_+-]*)\s*$")


def last_python_block(text: str) -> str | None:
    """The last fenced block tagged python/py/python3 or untagged (the default rule)."""
    blocks, current, tag = [], None, ""
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if current is None and (match or line.lstrip().startswith("```")):
            tag = match.group(1).lower() if match else line.strip()[3:].strip().lower()
            current = []
        elif current is not None and match and not match.group(1):
            blocks.append((tag, "\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    chosen = [body for tag, body in blocks if tag in ("", "python", "py", "python3")]
    return chosen[-1] if chosen and chosen[-1].strip() else None


def lcb_block(text: str) -> str | None:
    """LiveCodeBench: the lines between the last two lines containing ```."""
    lines = text.split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return None
    return "\n".join(lines[fences[-2] + 1:fences[-1]]) or None


_SKY_BLOCK = re.compile(r"```(?:[a-zA-Z]*)\n(.*?)```", re.DOTALL)


def skythought_block(text: str) -> str | None:
    """SkyThought: the last ```lang\\n…``` match, cut at a </code> or a further fence."""
    matches = _SKY_BLOCK.findall(text)
    if not matches:
        return None
    code = matches[-1].split("</code>")[0].replace("```python", "").split("```")[0].replace("<code>", "")
    return code or None


@dataclass(frozen=True)
class CodeProtocol:
    name: str
    render: Callable[[BenchmarkItem], str]
    extract: Callable[[str], str | None]
    system_prompt: str | None
    sampling: Sampling = Sampling()
    max_tokens: int | None = None  # None: the evaluation default
    timeout: float = 6.0
    tests: str = "all"  # or "private"


CODE_PROTOCOLS = {
    "livecodebench": CodeProtocol("livecodebench", lcb_prompt, lcb_block, LCB_SYSTEM,
                                  Sampling(samples=10, temperature=0.2, top_p=0.95), max_tokens=2000),
    "skythought": CodeProtocol("skythought", skythought_prompt, skythought_block, None, tests="private"),
    "default": CodeProtocol("default", lcb_prompt, last_python_block, LCB_SYSTEM),
}


def code_protocol(protocol: str) -> CodeProtocol:
    return CODE_PROTOCOLS.get(protocol, CODE_PROTOCOLS["default"])


# ------------------------------------------------------------------------------------------------
# Grading
# ------------------------------------------------------------------------------------------------


@dataclass
class CodeGrade:
    grade: GradeResult
    execution: dict[str, Any] = field(default_factory=dict)


def grade_programs(sandbox: Sandbox, protocol: CodeProtocol, pairs: Sequence[tuple[str, CodeProblem]]) -> list[CodeGrade]:
    """Grade (response, problem) pairs: extract the program, run the problem's tests in the sandbox."""
    programs = [protocol.extract(text) for text, _ in pairs]
    jobs = [(i, Job(p, problem.tests(protocol.tests), problem.mode, problem.fn_name, problem.preamble))
            for i, (p, (_, problem)) in enumerate(zip(programs, pairs)) if p]
    executions: dict[int, Execution] = dict(zip((i for i, _ in jobs), sandbox.run_many([j for _, j in jobs])))
    out = []
    for i, program in enumerate(programs):
        if not program:
            out.append(CodeGrade(GradeResult(False, None, "no_code"), {"verdict": "no_code", "tests": []}))
            continue
        execution = executions[i]
        record: dict[str, Any] = {"verdict": execution.verdict, "tests": [{"verdict": t.verdict, "seconds": t.seconds} for t in execution.tests]}
        failed = next((t for t in execution.tests if t.verdict != "passed"), None)
        if execution.error:
            record["error"] = execution.error
        elif failed is not None:
            record["firstFailure"] = {"verdict": failed.verdict, "stdout": failed.stdout, "stderr": failed.stderr}
        out.append(CodeGrade(GradeResult(execution.passed, program, execution.verdict), record))
    return out


def verdict_counts(executions: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for execution in executions:
        counts[execution["verdict"]] = counts.get(execution["verdict"], 0) + 1
    return dict(sorted(counts.items()))


def in_window(items: Sequence[BenchmarkItem], released_from: str | None, released_until: str | None, name: str) -> list[BenchmarkItem]:
    """Items released on or after `released_from` and on or before `released_until` (ISO dates)."""
    if not released_from and not released_until:
        return list(items)
    for bound in (released_from, released_until):
        if bound:
            try:
                _dt.date.fromisoformat(bound)
            except ValueError:
                raise WorkloadError(reasons.REASON_INVALID_SPEC, f"{name}: release window bound {bound!r} is not a date (YYYY-MM-DD)") from None
    undated = [item.id for item in items if not item.released]
    if undated:
        raise WorkloadError(reasons.REASON_INVALID_SPEC, f"{name}: a release window is set but {len(undated)} problem(s) have no release date (e.g. {undated[0]})")
    return [item for item in items
            if (not released_from or item.released >= released_from) and (not released_until or item.released <= released_until)]


# ------------------------------------------------------------------------------------------------
# The built-in code-demo benchmark: (id, date, question, mode, fn_name, starter, tests, solution)
# ------------------------------------------------------------------------------------------------

_S = "stdin"
_DEMO: tuple[tuple[str, str, str, str, str | None, str, list[tuple[str, str]], str], ...] = (
    ("sum-two", "2024-01-10", "Read two integers a and b on one line and print a + b.", _S, None, "",
     [("3 4\n", "7"), ("-5 5\n", "0"), ("1000000000 1000000000\n", "2000000000")],
     "a, b = map(int, input().split())\nprint(a + b)\n"),
    ("max-list", "2024-03-02", "The first line holds n, the second n integers. Print the largest of them.", _S, None, "",
     [("3\n1 9 4\n", "9"), ("1\n-7\n", "-7"), ("5\n2 2 2 2 2\n", "2")],
     "input()\nprint(max(map(int, input().split())))\n"),
    ("reverse-word", "2024-05-20", "Read one word and print it reversed.", _S, None, "",
     [("hello\n", "olleh"), ("a\n", "a"), ("abc\n", "cba")], "print(input().strip()[::-1])\n"),
    ("count-vowels", "2024-07-01", "Read a line of lowercase letters and spaces; print how many vowels (a, e, i, o, u) it has.",
     _S, None, "", [("hello world\n", "3"), ("xyz\n", "0"), ("aeiou\n", "5")],
     "print(sum(c in 'aeiou' for c in input()))\n"),
    ("fizzbuzz", "2024-09-15", "Read n and print the numbers 1..n, one per line, with multiples of 3 replaced by Fizz, "
     "of 5 by Buzz and of both by FizzBuzz.", _S, None, "",
     [("5\n", "1\n2\nFizz\n4\nBuzz"), ("15\n", "\n".join("FizzBuzz" if i % 15 == 0 else "Fizz" if i % 3 == 0 else "Buzz" if i % 5 == 0 else str(i) for i in range(1, 16)))],
     "for i in range(1, int(input()) + 1):\n    print('FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else 'Buzz' if i % 5 == 0 else i)\n"),
    ("factorial", "2024-11-30", "Read n (0 <= n <= 20) and print n!.", _S, None, "",
     [("0\n", "1"), ("5\n", "120"), ("20\n", "2432902008176640000")],
     "import math\nprint(math.factorial(int(input())))\n"),
    ("mean", "2025-01-12", "The first line holds n, the second n integers. Print their mean with two decimals.", _S, None, "",
     [("2\n1 2\n", "1.50"), ("3\n1 1 1\n", "1.00"), ("4\n1 2 3 5\n", "2.75")],
     "n = int(input())\nxs = list(map(int, input().split()))\nprint(f'{sum(xs) / n:.2f}')\n"),
    ("palindrome", "2025-03-08", "Read a word; print YES if it reads the same backwards, otherwise NO.", _S, None, "",
     [("level\n", "YES"), ("ab\n", "NO"), ("x\n", "YES")],
     "s = input().strip()\nprint('YES' if s == s[::-1] else 'NO')\n"),
    ("two-sum", "2025-04-19", "Given a list of integers nums and an integer target, return the indices [i, j] (i < j) of "
     "the two numbers that add up to target. Exactly one answer exists.", "functional", "twoSum",
     "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        ",
     [("[2, 7, 11, 15]\n9", "[0, 1]"), ("[3, 2, 4]\n6", "[1, 2]"), ("[3, 3]\n6", "[0, 1]")],
     "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n        seen = {}\n"
     "        for i, x in enumerate(nums):\n            if target - x in seen:\n                return [seen[target - x], i]\n"
     "            seen[x] = i\n"),
    ("count-evens", "2025-06-01", "Given a list of integers nums, return how many of them are even.", "functional", "countEvens",
     "class Solution:\n    def countEvens(self, nums: List[int]) -> int:\n        ",
     [("[1, 2, 3, 4]", "2"), ("[]", "0"), ("[0, -2, 5]", "2")],
     "class Solution:\n    def countEvens(self, nums: List[int]) -> int:\n        return sum(x % 2 == 0 for x in nums)\n"),
    ("is-anagram", "2025-08-23", "Given two strings s and t, return true if t is an anagram of s.", "functional", "isAnagram",
     "class Solution:\n    def isAnagram(self, s: str, t: str) -> bool:\n        ",
     [('"anagram"\n"nagaram"', "true"), ('"rat"\n"car"', "false"), ('"a"\n"a"', "true")],
     "class Solution:\n    def isAnagram(self, s: str, t: str) -> bool:\n        return sorted(s) == sorted(t)\n"),
    ("running-sum", "2025-10-05", "Given a list of integers nums, return the list of running sums.", "functional", "runningSum",
     "class Solution:\n    def runningSum(self, nums: List[int]) -> List[int]:\n        ",
     [("[1, 2, 3, 4]", "[1, 3, 6, 10]"), ("[5]", "[5]"), ("[1, -1, 1]", "[1, 0, 1]")],
     "class Solution:\n    def runningSum(self, nums: List[int]) -> List[int]:\n        out, total = [], 0\n"
     "        for x in nums:\n            total += x\n            out.append(total)\n        return out\n"),
)

DEMO_SOLUTIONS = {f"code-demo-{d[0]}": d[7] for d in _DEMO}  # reference programs (tests, the demo's fake model)


def demo_items() -> list[BenchmarkItem]:
    """Twelve built-in problems as LiveCodeBench rows (first test public, the rest private)."""
    rows = []
    for name, date, question, mode, fn_name, starter, tests, _ in _DEMO:
        cases = [{"input": i, "output": o, "testtype": mode} for i, o in tests]
        rows.append({
            "question_id": f"code-demo-{name}", "question_content": question, "contest_date": f"{date}T00:00:00",
            "starter_code": starter, "platform": "reasonops", "difficulty": "easy",
            "public_test_cases": json.dumps(cases[:1]), "private_test_cases": json.dumps(cases[1:]),
            "metadata": json.dumps({"func_name": fn_name} if fn_name else {}),
        })
    return [read_lcb_row(row, i) for i, row in enumerate(rows)]


LCB_FILES = ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl")

# The code benchmarks (benchmarks.REGISTRY holds them with the math ones; contract.CODE_BENCHMARKS names them).
CODE_BENCHMARK_DEFS: tuple[BenchmarkDef, ...] = (
    BenchmarkDef("livecodebench", "LiveCodeBench code generation, release_v6 (all releases; window with releasedFrom/Until)",
                 HubSource("livecodebench/code_generation_lite", data_files=LCB_FILES), kind="code", read_row=read_lcb_row),
    BenchmarkDef("livecodebench-v2", "LiveCodeBench code generation, release_v2 (511 problems; SkyThought's set)",
                 HubSource("livecodebench/code_generation_lite", data_files=LCB_FILES[:2]), kind="code", read_row=read_lcb_row),
    BenchmarkDef("humaneval", "HumanEval (164 Python functions)", HubSource("openai/openai_humaneval"), kind="code",
                 read_row=read_humaneval_row),
    BenchmarkDef("mbpp", "MBPP test split (500 Python problems)", HubSource("google-research-datasets/mbpp", config="full"),
                 kind="code", read_row=read_mbpp_row),
    BenchmarkDef("code-demo", "12 built-in code problems, stdin and functional (no download)", None, kind="code"),
)


def limits_for(protocol: CodeProtocol, spec: Any = None) -> Limits:
    """The per-test limits: the protocol's timeout, overridden by a SandboxSpec's fields."""
    timeout = float(spec.timeoutSeconds) if spec is not None and spec.timeoutSeconds is not None else protocol.timeout
    memory = spec.memoryMB if spec is not None and spec.memoryMB else Limits.memory_mb
    return Limits(timeout=timeout, memory_mb=memory)


def grade_benchmark(protocol_name: str, items: Sequence[BenchmarkItem], responses: Sequence[Any], sandbox_spec: Any = None,
                    window: tuple[str | None, str | None] = (None, None)) -> dict[str, Any]:
    """Grade an EvalRun's responses to a code benchmark in the sandbox.

    Sets `grade` and `execution` (the per-test outcomes) on every response; returns what the summary
    records: protocol, release window, content hash, sandbox, verdict counts.
    """
    from .sandbox.service import sandbox_for

    protocol = code_protocol(protocol_name)
    sandbox = sandbox_for(limits_for(protocol, sandbox_spec))
    decoded = {item.id: item for item in decode_private(items, sandbox)}
    grades = grade_programs(sandbox, protocol, [(r.text, decoded[r.problem_id].code) for r in responses])
    for response, graded in zip(responses, grades):
        response.grade, response.execution = graded.grade, graded.execution
    return {
        "protocol": protocol.name, "tests": protocol.tests,
        "releaseWindow": {"from": window[0], "until": window[1]},
        "contentHash": content_hash(list(decoded.values())),
        "sandbox": sandbox.describe(),
        "verdicts": verdict_counts([g.execution for g in grades]),
    }


def messages(protocol_name: str, item: BenchmarkItem, system_prompt: str | None) -> list[dict[str, str]]:
    """The chat of a code problem: the protocol's system prompt unless the spec sets one."""
    protocol = code_protocol(protocol_name)
    system = system_prompt if system_prompt is not None else protocol.system_prompt
    turns = [{"role": "system", "content": system}] if system else []
    return turns + [{"role": "user", "content": protocol.render(item)}]
