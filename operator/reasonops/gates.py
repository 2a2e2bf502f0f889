"""Judging an EvalRun's results: its gates (used by the workload and the operator) and which checkpoint to select.

A gate names a benchmark, a minimum score and which bound must clear it: ``point`` (the score itself,
the default) or ``lower95`` (the lower end of the score's 95% interval, so that noise alone cannot pass a
gate: on AIME's 30 problems the standard error at p = 0.5 is about 0.09). Values are compared as the
decimals the results report, so a status reader reaches the same verdict from the same strings.
A gate on a benchmark without a result, or without the bound it asks for, fails and says why.

A relative gate names a baseline EvalRun and a minimum difference instead of a minimum score: this run's
pass@1 minus the baseline's, paired over the same problems (`evaluate.compare`), or with ``lower95`` the
lower end of the paired 95% interval of that difference, must reach it. It is judged from the comparisons
the evaluation recorded (status.comparisons); a comparison that was refused (not the same problems under
the same protocol), or missing, fails the gate with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

BOUNDS = {"point": "score", "lower95": "ciLow"}  # gate bound -> the result field it compares
DIFFERENCE_BOUNDS = {"point": "difference", "lower95": "ciLow"}  # relative gate bound -> the comparison field


@dataclass(frozen=True)
class GateOutcome:
    benchmark: str
    minScore: str | None  # None for a relative gate
    bound: str
    score: str | None  # the value compared (the score, or its lower bound; relative: the difference or its lower bound)
    passed: bool
    reason: str | None = None  # why a gate failed without a comparison
    baseline: str | None = None  # relative gate: the baseline EvalRun
    minDifference: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def judge_gates(gates: Iterable[Any], results: Iterable[Any], comparisons: Iterable[Any] = ()) -> list[GateOutcome]:
    """One outcome per gate, in order. Gates, results and comparisons are API models (Gate, BenchmarkResult,
    PairedComparison) or their dicts; comparisons are only read by relative gates."""
    by_benchmark = {_field(r, "benchmark"): r for r in results}
    paired = {(_field(c, "baseline"), _field(c, "benchmark")): c for c in comparisons}
    outcomes = []
    for gate in gates:
        benchmark = _field(gate, "benchmark")
        bound = _field(gate, "bound") or "point"
        if _field(gate, "baseline"):
            outcomes.append(_judge_relative(gate, benchmark, bound, paired))
            continue
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


def _judge_relative(gate: Any, benchmark: str, bound: str, paired: Mapping[tuple[Any, Any], Any]) -> GateOutcome:
    baseline, threshold = str(_field(gate, "baseline")), str(_field(gate, "minDifference"))
    minimum = _decimal(_field(gate, "minDifference"))

    def failed(reason: str) -> GateOutcome:
        return GateOutcome(benchmark, None, bound, None, False, reason, baseline, threshold)

    if bound not in DIFFERENCE_BOUNDS:
        return failed(f"unknown bound {bound!r} (point or lower95)")
    if minimum is None:
        return failed("minDifference is not a number")
    comparison = paired.get((baseline, benchmark))
    if comparison is None:
        return failed(f"no paired comparison with EvalRun {baseline} on {benchmark}")
    if _field(comparison, "refused"):
        return failed(f"cannot compare with EvalRun {baseline}: {_field(comparison, 'refused')}")
    key = DIFFERENCE_BOUNDS[bound]
    value = _decimal(_field(comparison, key))
    if value is None:
        return failed(f"the comparison with EvalRun {baseline} on {benchmark} has no {key}")
    return GateOutcome(benchmark, None, bound, str(_field(comparison, key)), value >= minimum, None, baseline, threshold)


def describe_failure(outcome: Mapping[str, Any]) -> str:
    """A failed gate in words (the Passed condition's message): its reason, or the comparison that fell short."""
    if outcome.get("reason"):
        return f"{outcome['benchmark']}: {outcome['reason']}"
    lower = "lower 95% bound of " if outcome.get("bound") == "lower95" else ""
    if outcome.get("baseline"):
        return (f"{outcome['benchmark']}: {lower}the difference to EvalRun {outcome['baseline']} "
                f"{outcome['score']} < {outcome['minDifference']}")
    return f"{outcome['benchmark']}: {'lower 95% bound ' if lower else ''}{outcome['score']} < {outcome['minScore']}"


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
