"""The records that flow through the curation stages and the per-stage accounting of what was dropped."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("reasonops.curate")


class RowError(Exception):
    """A row that cannot become a problem or a training sample; args are (reason, detail).

    Raised by the loaders of both kinds of rows (`loaders`, `code`); shared here so neither imports the other.
    """


@dataclass
class Chain:
    """One reasoning chain for a problem: the source solution or a teacher's generation."""

    text: str
    teacher: str | None = None  # None: the solution that came with the source
    answer: str | None = None
    correct: bool | None = None
    score: float | None = None


@dataclass
class Problem:
    id: str
    question: str
    answer: str | None
    source: str
    chains: list[Chain] = field(default_factory=list)
    solve_rates: dict[str, float] = field(default_factory=dict)  # difficulty stage name -> share solved
    tests: Any = None  # code problems: a codebench.CodeProblem, graded by running its tests (curate/code.py)
    system: str | None = None  # the row's own system prompt; None: the dataset's applies

    @property
    def gold(self) -> Any:
        """What a response is graded against: the tests of a code problem, else the reference answer."""
        return self.tests if self.tests is not None else self.answer

    @property
    def solve_rate(self) -> float | None:
        """The solve rate of the last difficulty pass (the one that decided last)."""
        return next(reversed(self.solve_rates.values())) if self.solve_rates else None

    @property
    def best_chain(self) -> Chain | None:
        if not self.chains:
            return None
        return max(self.chains, key=lambda c: (c.score if c.score is not None else float("-inf"), len(c.text)))


def quality_key(problem: Problem) -> tuple:
    """Sort key of 'better' members of a duplicate cluster (larger is better).

    A problem with a chain beats one without, then one with a reference answer, then one with more
    correct chains, a higher chain score, and finally a longer chain.
    """
    best = problem.best_chain
    return (
        best is not None,
        problem.answer is not None,
        sum(1 for c in problem.chains if c.correct),
        best.score if best is not None and best.score is not None else float("-inf"),
        len(best.text) if best is not None else 0,
    )


@dataclass
class Drop:
    id: str
    reason: str
    detail: str | None = None


DROP_EXAMPLES = 5  # dropped ids kept per reason for the summary, the manifest and the status

# stage info entries that count rows (and add up over parts of the pool); the others describe settings
COUNTED_INFO = frozenset({"ungraded", "chainsScored", "problemsBySolvedCount", "teachers", "matchedBenchmarks"})


def merge_info(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Stage info of two parts of the pool: counted entries add up (nested too), the others are taken from b."""
    merged = dict(a)
    for key, value in b.items():
        merged[key] = _add(merged[key], value) if key in COUNTED_INFO and key in merged else value
    return merged


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _add(a[k], b[k]) if k in a and k in b else (a[k] if k in a else b[k]) for k in {**a, **b}}
    return a + b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else b


class DropLog:
    """Every drop of a run as JSONL lines in a file, so a pool of millions keeps only counts in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", encoding="utf-8")
        self.contaminated: list[dict[str, Any]] = []  # the first few, for the report

    def write(self, stage: str, drop: Drop) -> None:
        row = {"id": drop.id, "stage": stage, "reason": drop.reason, "detail": drop.detail}
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        if drop.reason == "contaminated" and len(self.contaminated) < 51:
            self.contaminated.append(row)

    def write_line(self, line: str) -> None:
        """A drop another pod recorded (a JSONL line of its log)."""
        self._file.write(line if line.endswith("\n") else line + "\n")
        if '"contaminated"' in line and len(self.contaminated) < 51:
            self.contaminated.append(json.loads(line))

    def close(self) -> Path:
        if not self._file.closed:
            self._file.close()
        return self.path


@dataclass
class StageReport:
    """What one stage kept and dropped, and why. With a DropLog the drops go to its file, not `drops`."""

    name: str
    kind: str
    input: int = 0
    kept: int = 0
    drops: list[Drop] = field(default_factory=list)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    log: DropLog | None = None
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> the first few dropped ids
    details: dict[str, str] = field(default_factory=dict)  # reason -> the detail of its first drop

    @property
    def dropped(self) -> int:
        return sum(self.counts.values())

    @property
    def reasons(self) -> dict[str, int]:
        return dict(self.counts.most_common())

    def drop(self, problem_id: str, reason: str, detail: str | None = None) -> None:
        self.counts[reason] += 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < DROP_EXAMPLES:
            ids.append(problem_id)
        if detail and reason not in self.details:
            self.details[reason] = detail
        if self.log is not None:
            self.log.write(self.name, Drop(problem_id, reason, detail))
        else:
            self.drops.append(Drop(problem_id, reason, detail))

    def absorb(self, part: "StageReport") -> None:
        """Add the counts of the same stage run over another part of the pool (a batch or a shard)."""
        self.input += part.input
        self.kept += part.kept
        self.counts.update(part.counts)
        for reason, ids in part.examples.items():
            self.examples[reason] = (self.examples.get(reason, []) + ids)[:DROP_EXAMPLES]
        for reason, detail in part.details.items():
            self.details.setdefault(reason, detail)
        self.drops.extend(part.drops)
        self.info = merge_info(self.info, part.info)

    def explain(self, reason: str) -> str:
        """One drop reason with its count, its first few rows and the detail of the first (what was looked for)."""
        text = f"{reason}: {self.counts[reason]:,}"
        ids = self.examples.get(reason)
        if ids:
            text += f" (rows {', '.join(ids)}{', ...' if self.counts[reason] > len(ids) else ''})"
        detail = self.details.get(reason)
        return f"{text}: {detail}" if detail else text

    def summary(self) -> str:
        reasons = "; ".join(self.explain(r) for r in self.reasons)
        return f"kept {self.kept:,} of {self.input:,}, dropped {self.dropped:,}" + (f" ({reasons})" if reasons else "")

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stage": self.name, "kind": self.kind, "input": self.input, "kept": self.kept,
            "dropped": self.dropped, "reasons": self.reasons, "seconds": round(self.seconds, 3),
        }
        if self.examples:
            out["dropExamples"] = {r: {"rows": self.examples.get(r, []), "detail": self.details.get(r)} for r in self.reasons}
        if self.info:
            out["info"] = self.info
        return out
