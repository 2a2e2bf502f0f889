"""`reasonops compare`: the paired statistics (pure) and the command as a shell runs it, on outputs written by
the real evaluation code path (the tiny model behind the local server)."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from reasonops.contract import read_document
from reasonops.evaluate import config_from_resource, main
from reasonops.evaluate.compare import EvalOutput, Refused, compare, incomparable, paired_difference
from reasonops.tinymodel import build_servable_model

from vllm_support import vllm_server

SCRIPT = Path(sys.executable).with_name("reasonops")


# ---------------------------------------------------------------------------------------------- statistics


def test_identical_runs_differ_by_nothing() -> None:
    values = [1.0, 0.0, 1.0, 0.5, 0.25, 0.0, 1.0]
    result = paired_difference(values, values)
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.wins == result.losses == 0 and result.score_a == result.score_b == pytest.approx(statistics.fmean(values))


def test_b_better_on_many_problems_puts_the_interval_above_zero() -> None:
    a = [0.0] * 40
    b = [1.0] * 30 + [0.0] * 10
    result = paired_difference(a, b)
    assert result.difference == pytest.approx(0.75)
    assert 0 < result.low < 0.75 < result.high <= 1
    assert (result.wins, result.losses, result.problems) == (30, 0, 40)


def test_a_better_puts_the_interval_below_zero_and_a_draw_straddles_it() -> None:
    assert paired_difference([1.0] * 30 + [0.0] * 10, [0.0] * 40).high < 0
    draw = paired_difference([1.0, 0.0] * 20, [0.0, 1.0] * 20)
    assert draw.difference == 0 and draw.low < 0 < draw.high and draw.wins == draw.losses == 20


def test_the_pairing_matters() -> None:
    """The same scores, once with B better on every problem A got wrong (paired: a tight interval), once
    shuffled so the problems disagree: the paired interval of the first is far narrower."""
    a = [1.0] * 20 + [0.0] * 20
    b_paired = [1.0] * 20 + [1.0] * 10 + [0.0] * 10
    b_crossed = [0.0] * 10 + [1.0] * 10 + [1.0] * 20
    tight, loose = paired_difference(a, b_paired), paired_difference(a, b_crossed)
    assert tight.difference == loose.difference == pytest.approx(0.25)
    assert (tight.high - tight.low) < 0.75 * (loose.high - loose.low)


def test_the_interval_matches_the_exact_bootstrap_distribution() -> None:
    """Brute force: every one of the n^n equally likely resamples of n = 5 paired differences enumerated,
    the exact 2.5% and 97.5% quantiles of their means, against the Monte Carlo interval."""
    a = [0.0, 1.0, 0.5, 0.0, 0.25]
    b = [1.0, 1.0, 0.0, 0.75, 0.5]
    deltas = [y - x for x, y in zip(a, b)]
    means = sorted(statistics.fmean(deltas[i] for i in draw) for draw in itertools.product(range(5), repeat=5))

    def quantile(q: float) -> float:  # linear interpolation, as numpy's default
        position = q * (len(means) - 1)
        below = int(position)
        return means[below] + (means[min(below + 1, len(means) - 1)] - means[below]) * (position - below)

    result = paired_difference(a, b, resamples=40_000)
    assert result.difference == pytest.approx(statistics.fmean(deltas))
    assert result.low == pytest.approx(quantile(0.025), abs=0.03)
    assert result.high == pytest.approx(quantile(0.975), abs=0.03)


def test_the_spread_matches_the_standard_error_of_the_mean_difference() -> None:
    """An independent check: for many problems the bootstrap's interval is close to ± 1.96 SE of the mean
    difference (the plug-in standard deviation over √n)."""
    a = [float(i % 3 == 0) for i in range(300)]
    b = [float(i % 2 == 0) for i in range(300)]
    deltas = [y - x for x, y in zip(a, b)]
    stderr = statistics.pstdev(deltas) / len(deltas) ** 0.5
    result = paired_difference(a, b)
    assert (result.high - result.low) / 2 == pytest.approx(1.96 * stderr, rel=0.08)


def test_the_same_inputs_give_the_same_interval_and_bad_inputs_are_refused() -> None:
    a, b = [0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 1.0]
    assert paired_difference(a, b) == paired_difference(a, b)
    with pytest.raises(ValueError, match="same non-zero number"):
        paired_difference([1.0], [1.0, 0.0])
    with pytest.raises(ValueError):
        paired_difference([], [])


def _output(benchmarks: dict[str, dict[str, float]], protocol: str = "limo", seed: int | None = 0, **sampling: Any) -> EvalOutput:
    summary = {"name": "run", "model": "m", "protocol": protocol, "systemPrompt": "p", "extraction": "strict", "benchmarks": [
        {"name": name, "contentHash": "sha256:abc", "sampling": {"samples": 1, "temperature": 0.0, "topP": 1.0, "maxTokens": 8,
                                                                "seeds": [seed], **sampling}} for name in benchmarks]}
    return EvalOutput("/x", summary, benchmarks, {name: {(i, 0): seed for i in values} for name, values in benchmarks.items()})


def test_what_makes_two_outputs_incomparable() -> None:
    base = _output({"demo": {"p1": 0.0, "p2": 1.0}})
    assert incomparable(base, _output({"demo": {"p1": 1.0, "p2": 1.0}}), "demo") is None  # other scores: comparable
    assert "different protocol" in incomparable(base, _output({"demo": {"p1": 0.0, "p2": 1.0}}, protocol="skythought"), "demo")
    assert "sampling temperature: 0.0 in A, 0.7 in B" in incomparable(base, _output({"demo": {"p1": 0.0, "p2": 1.0}}, temperature=0.7), "demo")
    assert "different problems (1 only in A" in incomparable(base, _output({"demo": {"p1": 0.0, "p3": 1.0}}), "demo")
    other_seeds = _output({"demo": {"p1": 0.0, "p2": 1.0}})
    other_seeds.seeds["demo"][("p1", 0)] = 9
    assert "different seeds" in incomparable(base, other_seeds, "demo")


def test_compare_lists_what_only_one_run_evaluated_and_refuses_nothing_in_common() -> None:
    a = _output({"demo": {"p1": 0.0, "p2": 0.0}, "aime24": {"q": 1.0}})
    b = _output({"demo": {"p1": 1.0, "p2": 1.0}, "math500": {"r": 1.0}})
    result = compare(a, b)
    assert [row["benchmark"] for row in result["benchmarks"]] == ["demo"] and result["notCompared"] == ["aime24", "math500"]
    assert result["benchmarks"][0]["difference"] == 1.0
    with pytest.raises(Refused, match="no benchmark in common"):
        compare(_output({"aime24": {"q": 1.0}}), _output({"math500": {"r": 1.0}}))


# ---------------------------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = build_servable_model(tmp_path_factory.mktemp("tiny"), layers=1)
    with vllm_server(model, "tiny") as base_url:
        yield base_url


def _evaluate(server: str, output: Path, benchmark: dict[str, Any], protocol: str = "limo") -> Path:
    doc = {
        "apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun",
        "metadata": {"name": output.name, "namespace": "default", "uid": "u"},
        "spec": {"model": {"name": "tiny"}, "protocol": protocol, "benchmarks": [benchmark], "output": {"path": str(output.parent)}},
        "revision": "r1", "output": str(output), "outputLocation": str(output), "context": {"endpoint": server},
    }
    main(config_from_resource(read_document(doc)))
    return output


def _reasonops(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "operator")}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.slow
def test_compare_as_a_shell_runs_it(server: str, tmp_path: Path) -> None:
    bench = {"name": "demo", "maxTokens": 4, "samples": 2, "temperature": "0.7", "seed": 5}
    a = _evaluate(server, tmp_path / "base", bench)
    b = _evaluate(server, tmp_path / "tuned", bench)

    proc = _reasonops("compare", str(a), str(b))
    assert proc.returncode == 0, proc.stderr
    assert "paired bootstrap over problems" in proc.stdout
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("demo ")]
    assert line.split()[1] == "12"  # problems

    proc = _reasonops("compare", str(a), str(b), "--json")
    assert proc.returncode == 0, proc.stderr
    comparison = json.loads(proc.stdout)
    (row,) = comparison["benchmarks"]
    assert row["benchmark"] == "demo" and row["problems"] == 12
    assert row["low"] <= row["difference"] <= row["high"]
    assert row["difference"] == pytest.approx(row["score_b"] - row["score_a"])
    assert comparison["a"]["path"] == str(a) and comparison["notCompared"] == []

    # Swapped, the difference and interval change sign.
    swapped = json.loads(_reasonops("compare", str(b), str(a), "--json").stdout)["benchmarks"][0]
    assert swapped["difference"] == pytest.approx(-row["difference"]) and swapped["low"] == pytest.approx(-row["high"])


def _refused(a: Path, b: Path) -> str:
    proc = _reasonops("compare", str(a), str(b))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    return proc.stderr


@pytest.mark.slow
def test_compare_refuses_different_problems_protocols_and_sampling(server: str, tmp_path: Path) -> None:
    bench = {"name": "demo", "maxTokens": 4}
    a = _evaluate(server, tmp_path / "a", bench)
    fewer = _evaluate(server, tmp_path / "fewer", {**bench, "limit": 6})
    other_protocol = _evaluate(server, tmp_path / "sky", bench, protocol="skythought")
    other_sampling = _evaluate(server, tmp_path / "long", {**bench, "maxTokens": 5})

    assert "different problems (6 only in A" in _refused(a, fewer)
    assert "different protocol" in _refused(a, other_protocol)
    assert "different sampling maxTokens: 4 in A, 5 in B" in _refused(a, other_sampling)
    assert "not an evaluation's output" in _refused(a, tmp_path / "missing")
    (tmp_path / "grid" / "checkpoints" / "step-2").mkdir(parents=True)
    (tmp_path / "grid" / "checkpoints" / "step-2" / "summary.json").write_text("{}")
    assert "give one of them" in _refused(tmp_path / "grid", a)
