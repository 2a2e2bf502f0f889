"""Judging an EvalRun's results: its gates (used by the workload and the operator) and which checkpoint to select.

A gate names a benchmark, a minimum score and which bound must clear it: ``point`` (the score itself,
the default) or ``lower95`` (the lower end of the score's 95% interval, so that noise alone cannot pass a
gate: on AIME's 30 problems the standard error at p = 0.5 is about 0.09). Values are compared as the
decimals the results report, so a status reader reaches the same verdict from the same strings.
A gate on a benchmark without a result, or without the bound it asks for, fails and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

BOUNDS = {"point": "score", "lower95": "ciLow"}  # gate bound -> the result field it compares


@dataclass(frozen=True)
class GateOutcome:
    benchmark: str
    minScore: str
    bound: str
    score: str | None  # the value compared (the score, or its lower bound)
    passed: bool
    reason: str | None = None  # why a gate failed without a comparison

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def judge_gates(gates: Iterable[Any], results: Iterable[Any]) -> list[GateOutcome]:
    """One outcome per gate, in order. Gates and results are API models (Gate, BenchmarkResult) or their dicts."""
    by_benchmark = {_field(r, "benchmark"): r for r in results}
    outcomes = []
    for gate in gates:
        benchmark = _field(gate, "benchmark")
        bound = _field(gate, "bound") or "point"
        minimum = _decimal(_field(gate, "minScore"))
        threshold = str(_field(gate, "minScore"))
        result = by_benchmark.get(benchmark)
        if bound not in BOUNDS:
            outcomes.append(GateOutcome(benchmark, threshold, bound, None, False, f"unknown bound {bound!r} (point or lower95)"))
        elif minimum is None:
            outcomes.append(GateOutcome(benchmark, threshold, bound, None, False, "minScore is not a number"))
        elif result is None:
            outcomes.append(GateOutcome(benchmark, threshold, bound, None, False, f"{benchmark} was not evaluated"))
        else:
            value = _decimal(_field(result, BOUNDS[bound]))
            if value is None:
                outcomes.append(GateOutcome(benchmark, threshold, bound, None, False, f"{benchmark} has no {BOUNDS[bound]}"))
            else:
                outcomes.append(GateOutcome(benchmark, threshold, bound, str(_field(result, BOUNDS[bound])), value >= minimum))
    return outcomes


def select_checkpoint(checkpoints: Iterable[Any], benchmark: str, metric: str = "score") -> dict[str, Any] | None:
    """The checkpoint with the best value of `metric` (score, or lower95: the lower end of its 95% interval)
    on `benchmark`; ties go to the earlier checkpoint (the lower step: less training for the same result).

    `checkpoints` are mappings with name, step, location and results (BenchmarkResult dicts). A checkpoint
    without that benchmark's value is no candidate; None when no checkpoint has one.
    """
    key = BOUNDS["lower95" if metric == "lower95" else "point"]
    best: tuple[Decimal, int] | None = None
    chosen: dict[str, Any] | None = None
    for entry in checkpoints:
        result = next((r for r in _field(entry, "results") or [] if _field(r, "benchmark") == benchmark), None)
        value = _decimal(_field(result, key)) if result is not None else None
        if value is None:
            continue
        step = int(_field(entry, "step"))
        if best is None or value > best[0] or (value == best[0] and step < best[1]):
            best = (value, step)
            chosen = {"name": _field(entry, "name"), "step": step, "location": _field(entry, "location"),
                      "benchmark": benchmark, "metric": metric, "score": str(_field(result, key))}
    return chosen
