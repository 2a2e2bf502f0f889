"""Gate judgement (reasonops.gates), a pure function shared by the workload and the operator."""

from __future__ import annotations

from reasonops.api.v1alpha1 import BenchmarkResult, Gate
from reasonops.gates import describe_failure, judge_gates, select_checkpoint

RESULTS = [
    {"benchmark": "aime24", "score": "0.5000", "stderr": "0.0928", "ciLow": "0.3315", "ciHigh": "0.6685"},
    {"benchmark": "math500", "score": "0.9000"},
]


def test_point_and_lower_bound() -> None:
    gates = [
        {"benchmark": "aime24", "minScore": "0.5"},  # the point estimate clears it exactly
        {"benchmark": "aime24", "minScore": "0.5", "bound": "lower95"},  # its interval does not
        {"benchmark": "aime24", "minScore": "0.33", "bound": "lower95"},
        {"benchmark": "math500", "minScore": "0.95"},
    ]
    outcomes = judge_gates(gates, RESULTS)
    assert [o.passed for o in outcomes] == [True, False, True, False]
    assert [o.score for o in outcomes] == ["0.5000", "0.3315", "0.3315", "0.9000"]
    assert outcomes[1].to_dict() == {"benchmark": "aime24", "minScore": "0.5", "bound": "lower95", "score": "0.3315", "passed": False}


def test_missing_results_fail_with_a_reason() -> None:
    outcomes = judge_gates(
        [{"benchmark": "gsm8k", "minScore": "0.1"}, {"benchmark": "math500", "minScore": "0.1", "bound": "lower95"}], RESULTS
    )
    assert [o.passed for o in outcomes] == [False, False]
    assert outcomes[0].reason == "gsm8k was not evaluated" and outcomes[1].reason == "math500 has no ciLow"


def test_api_models_are_accepted() -> None:
    gates = [Gate(benchmark="aime24", minScore="0.3", bound="lower95"), Gate(benchmark="aime24", minScore="0.6")]
    results = [BenchmarkResult(**RESULTS[0])]
    assert [o.passed for o in judge_gates(gates, results)] == [True, False]
    assert Gate(benchmark="aime24", minScore="0.3").bound in (None, "point")


def _ckpt(step: int, **scores: tuple[str, str | None]) -> dict:
    results = [{"benchmark": b, "score": s, **({"ciLow": low} if low else {})} for b, (s, low) in scores.items()]
    return {"name": f"step-{step}", "step": step, "location": f"pvc://m/ft/r/checkpoints/step-{step}/model", "results": results}


def test_select_checkpoint_takes_the_best_and_ties_go_to_the_earlier() -> None:
    checkpoints = [_ckpt(10, aime24=("0.40", "0.25")), _ckpt(20, aime24=("0.60", "0.30")),
                   _ckpt(30, aime24=("0.60", "0.42")), _ckpt(40, aime24=("0.55", "0.42"))]
    assert select_checkpoint(checkpoints, "aime24") == {
        "name": "step-20", "step": 20, "location": "pvc://m/ft/r/checkpoints/step-20/model",
        "benchmark": "aime24", "metric": "score", "score": "0.60"}
    # lower95: 30 and 40 tie on the bound; the earlier wins, whatever the listing order
    assert select_checkpoint(list(reversed(checkpoints)), "aime24", "lower95")["name"] == "step-30"
    # decimals compare as numbers, not strings
    assert select_checkpoint([_ckpt(1, aime24=("0.9", None)), _ckpt(2, aime24=("0.10", None))], "aime24")["name"] == "step-1"


def test_select_checkpoint_skips_missing_results() -> None:
    checkpoints = [{"name": "step-5", "step": 5, "location": "x", "results": None},
                   _ckpt(10, math500=("0.9", "0.8")), _ckpt(20, aime24=("0.2", None)), _ckpt(30, aime24=("bad", None))]
    assert select_checkpoint(checkpoints, "aime24")["name"] == "step-20"
    assert select_checkpoint(checkpoints, "aime24", "lower95") is None  # no aime24 interval anywhere
    assert select_checkpoint([], "aime24") is None


# --- relative gates: judged from the recorded paired comparisons ----------------------------------------------

COMPARISONS = [
    {"baseline": "base", "benchmark": "aime24", "problems": 30, "difference": "0.1000", "ciLow": "0.0333", "ciHigh": "0.1667"},
    {"baseline": "base", "benchmark": "math500", "refused": "not the same problems under the same protocol: different protocol"},
]


def test_a_relative_gate_compares_the_difference_or_its_lower_bound() -> None:
    gates = [
        {"benchmark": "aime24", "baseline": "base", "minDifference": "0.1"},  # the point clears it exactly
        {"benchmark": "aime24", "baseline": "base", "minDifference": "0.05", "bound": "lower95"},  # its lower bound does not
        {"benchmark": "aime24", "baseline": "base", "minDifference": "0", "bound": "lower95"},  # better at 95%: LIMO's claim
        {"benchmark": "aime24", "baseline": "base", "minDifference": "-0.2"},  # a tolerated regression
    ]
    outcomes = judge_gates(gates, RESULTS, COMPARISONS)
    assert [o.passed for o in outcomes] == [True, False, True, True]
    assert outcomes[1].to_dict() == {"benchmark": "aime24", "baseline": "base", "minDifference": "0.05", "bound": "lower95",
                                     "score": "0.0333", "passed": False}


def test_a_relative_gate_without_a_usable_comparison_fails_with_the_reason() -> None:
    gates = [{"benchmark": "math500", "baseline": "base", "minDifference": "0"},
             {"benchmark": "aime24", "baseline": "other", "minDifference": "0"}]
    refused, missing = judge_gates(gates, RESULTS, COMPARISONS)
    assert not refused.passed and refused.reason == "cannot compare with EvalRun base: not the same problems under the same protocol: different protocol"
    assert not missing.passed and missing.reason == "no paired comparison with EvalRun other on aime24"
    # absolute gates ignore the comparisons, relative ones ignore the scores
    assert [o.passed for o in judge_gates([{"benchmark": "aime24", "minScore": "0.5"}], RESULTS, COMPARISONS)] == [True]


def test_failed_gates_in_words() -> None:
    relative = judge_gates([{"benchmark": "aime24", "baseline": "base", "minDifference": "0.05", "bound": "lower95"}], RESULTS, COMPARISONS)
    absolute = judge_gates([{"benchmark": "aime24", "minScore": "0.6"}], RESULTS)
    assert describe_failure(relative[0].to_dict()) == "aime24: lower 95% bound of the difference to EvalRun base 0.0333 < 0.05"
    assert describe_failure(absolute[0].to_dict()) == "aime24: 0.5000 < 0.6"


def test_a_gate_is_absolute_or_relative_never_both() -> None:
    from pydantic import ValidationError

    assert Gate(benchmark="aime24", baseline="base", minDifference="0.05").minScore is None
    for wrong, message in [({"minScore": "0.5", "baseline": "base", "minDifference": "0"}, "set exactly one of minScore"),
                           ({}, "set exactly one of minScore"),
                           ({"baseline": "base"}, "minDifference and baseline go together"),
                           ({"minScore": "0.5", "minDifference": "0.1"}, "minDifference and baseline go together"),
                           ({"baseline": "base", "minDifference": "1.5"}, "must be a number in [-1, 1]"),
                           ({"baseline": "Base", "minDifference": "0"}, "String should match pattern")]:
        try:
            Gate.model_validate({"benchmark": "aime24", **wrong})
        except ValidationError as exc:
            assert message in str(exc), (wrong, str(exc))
        else:
            raise AssertionError(f"{wrong} was accepted")
