"""Gate judgement (reasonops.gates), a pure function shared by the workload and the operator."""

from __future__ import annotations

from reasonops.api.v1alpha1 import BenchmarkResult, Gate
from reasonops.gates import judge_gates

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
