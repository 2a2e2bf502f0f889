"""`reasonops compare A B`: the paired difference B − A of two evaluations, per benchmark, with its 95% interval.

    reasonops compare evals/base/<revision> evals/tuned/<revision> [--json]

Both runs answered the same problems, so the comparison is paired: each problem's value (its pass@1
estimate c/n over its samples: 0 or 1 with one sample) in B minus its value in A, averaged over problems.
The interval is a paired bootstrap over problems (the percentile interval of 10,000 resampled mean
differences, fixed seed 0, so the same two runs always print the same interval). A bootstrap rather than
McNemar's test because per-problem values are fractions whenever a benchmark takes several samples per
problem (LIMO's 16 on AIME), where McNemar's right/wrong table does not apply; with one sample per problem
both agree closely. The wins and losses columns are McNemar's discordant pairs (problems where B is better,
where A is).

The comparison is refused (exit code 2, one line) unless, per benchmark compared, both runs evaluated the
same problems (ids and content hash) with the same protocol, system prompt, answer extraction and sampling
(samples, temperature, top_p, maximum tokens, seeds): otherwise the difference would mix the models with
the conditions. Benchmarks that only one run evaluated are listed and left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

RESAMPLES = 10_000
SEED = 0
METHOD = (f"paired bootstrap over problems ({RESAMPLES:,} resamples, seed {SEED}, percentile interval); "
          "per-problem value: pass@1 over its samples")
# What must be equal for a paired comparison, from summary.json: run-wide, then per benchmark.
PROTOCOL_KEYS = ("protocol", "systemPrompt", "extraction")
SAMPLING_KEYS = ("samples", "temperature", "topP", "maxTokens", "seeds")


class Refused(Exception):
    """The two outputs cannot be compared (the message says why)."""


@dataclass(frozen=True)
class PairedDifference:
    problems: int
    score_a: float
    score_b: float
    difference: float  # B − A
    low: float  # 95% interval of the difference
    high: float
    wins: int  # problems where B scored higher
    losses: int  # problems where A scored higher


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> PairedDifference:
    """The mean of b − a over paired problems, with its paired-bootstrap 95% percentile interval."""
    import numpy

    if len(a) != len(b) or not a:
        raise ValueError(f"need the same non-zero number of values on both sides (got {len(a)} and {len(b)})")
    first, second = numpy.asarray(a, dtype=float), numpy.asarray(b, dtype=float)
    deltas = second - first
    count = len(deltas)
    rng = numpy.random.default_rng(seed)
    means = numpy.empty(resamples)
    chunk = max(1, 4_000_000 // count)  # bounded memory for benchmarks of many problems
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        means[start:start + rows] = deltas[rng.integers(0, count, size=(rows, count))].mean(axis=1)
    low, high = numpy.quantile(means, [0.025, 0.975])
    difference = float(deltas.mean())
    # Rounding noise must not put the point outside its own interval (all differences equal: a point).
    return PairedDifference(count, float(first.mean()), float(second.mean()), difference,
                            min(float(low), difference), max(float(high), difference),
                            int((deltas > 0).sum()), int((deltas < 0).sum()))


# ------------------------------------------------------------------------------------------------
# Reading an evaluation's output
# ------------------------------------------------------------------------------------------------


@dataclass
class EvalOutput:
    path: str
    summary: dict[str, Any]
    values: dict[str, dict[str, float]]  # benchmark -> problem id -> pass@1 over its samples
    seeds: dict[str, dict[tuple[str, int], Any]]  # benchmark -> (problem id, sample) -> seed sent


def load_output(directory: str | Path) -> EvalOutput:
    """summary.json and responses/<benchmark>.jsonl of an EvalRun's output directory."""
    root = Path(directory)
    summary_file = root / "summary.json"
    if not summary_file.is_file():
        nested = sorted(p.parent.name for p in root.glob("checkpoints/*/summary.json"))
        if nested:
            raise Refused(f"{root} holds the evaluations of {len(nested)} checkpoints; give one of them, "
                          f"e.g. {root / 'checkpoints' / nested[-1]}")
        raise Refused(f"{root} is not an evaluation's output (no summary.json; it holds summary.json and responses/)")
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
        names = [b["name"] for b in summary["benchmarks"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Refused(f"{summary_file} is not an evaluation summary: {exc}") from None
    values: dict[str, dict[str, float]] = {}
    seeds: dict[str, dict[tuple[str, int], Any]] = {}
    for name in names:
        values[name], seeds[name] = _per_problem(root / "responses" / f"{name}.jsonl")
    return EvalOutput(str(root), summary, values, seeds)


def _per_problem(path: Path) -> tuple[dict[str, float], dict[tuple[str, int], Any]]:
    correct: dict[str, list[bool]] = {}
    seeds: dict[tuple[str, int], Any] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise Refused(f"cannot read the per-problem results {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            problem, sample = str(row["id"]), int(row.get("sample", 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise Refused(f"{path}:{number}: not a graded response line ({exc})") from None
        correct.setdefault(problem, []).append(row.get("correct") is True)  # ungraded counts as wrong, as in the score
        seeds[(problem, sample)] = row.get("seed")
    return {problem: sum(flags) / len(flags) for problem, flags in correct.items()}, seeds


# ------------------------------------------------------------------------------------------------
# The comparison
# ------------------------------------------------------------------------------------------------


def _benchmark_entry(summary: dict[str, Any], name: str) -> dict[str, Any]:
    return next(b for b in summary["benchmarks"] if b["name"] == name)


def incomparable(a: EvalOutput, b: EvalOutput, benchmark: str) -> str | None:
    """Why `benchmark` of the two outputs cannot be compared pairwise, or None when it can."""
    for key in PROTOCOL_KEYS:
        if a.summary.get(key) != b.summary.get(key):
            return f"different {key}: {_short(a.summary.get(key))} in A, {_short(b.summary.get(key))} in B"
    entry_a, entry_b = _benchmark_entry(a.summary, benchmark), _benchmark_entry(b.summary, benchmark)
    hash_a, hash_b = entry_a.get("contentHash"), entry_b.get("contentHash")
    if hash_a and hash_b and hash_a != hash_b:
        return f"{benchmark}: different problem sets (content hash {hash_a[:23]} in A, {hash_b[:23]} in B)"
    for key in SAMPLING_KEYS:
        value_a, value_b = (entry_a.get("sampling") or {}).get(key), (entry_b.get("sampling") or {}).get(key)
        if value_a != value_b:
            return f"{benchmark}: different sampling {key}: {value_a} in A, {value_b} in B"
    ids_a, ids_b = set(a.values[benchmark]), set(b.values[benchmark])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        return (f"{benchmark}: different problems ({len(only_a)} only in A, e.g. {only_a[:3]}; "
                f"{len(only_b)} only in B, e.g. {only_b[:3]})")
    if a.seeds[benchmark] != b.seeds[benchmark]:
        return f"{benchmark}: the samples were generated with different seeds"
    return None


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compare(a: EvalOutput, b: EvalOutput) -> dict[str, Any]:
    """The per-benchmark paired differences of two outputs (raises Refused when they are not comparable)."""
    names_a = [x["name"] for x in a.summary["benchmarks"]]
    names_b = {x["name"] for x in b.summary["benchmarks"]}
    common = [name for name in names_a if name in names_b]
    if not common:
        raise Refused(f"the two runs evaluated no benchmark in common ({', '.join(names_a)} in A; {', '.join(sorted(names_b))} in B)")
    rows = []
    for name in common:
        reason = incomparable(a, b, name)
        if reason:
            raise Refused(f"not the same problems under the same protocol: {reason}")
        ids = sorted(a.values[name])
        result = paired_difference([a.values[name][i] for i in ids], [b.values[name][i] for i in ids])
        rows.append({"benchmark": name, **asdict(result)})
    return {
        "method": METHOD,
        "a": {"path": a.path, "model": a.summary.get("model"), "name": a.summary.get("name")},
        "b": {"path": b.path, "model": b.summary.get("model"), "name": b.summary.get("name")},
        "protocol": a.summary.get("protocol"),
        "benchmarks": rows,
        "notCompared": sorted(set(names_a) ^ names_b),
    }


# ------------------------------------------------------------------------------------------------
# Relative gates: an EvalRun against its baselines (the workload computes, `gates.judge_gates` judges)
# ------------------------------------------------------------------------------------------------


def benchmark_comparison(baseline: EvalOutput, run: EvalOutput, benchmark: str) -> dict[str, Any]:
    """A PairedComparison of `benchmark` (less the baseline's name): `run` minus `baseline`, or why they cannot
    be compared. Differences as 4-decimal strings, as scores are."""
    if benchmark not in baseline.values:
        evaluated = ", ".join(baseline.values) or "none"
        return {"benchmark": benchmark, "refused": f"the baseline did not evaluate {benchmark} (it evaluated {evaluated})"}
    reason = incomparable(baseline, run, benchmark)
    if reason:
        return {"benchmark": benchmark,
                "refused": f"not the same problems under the same protocol (A: the baseline, B: this run): {reason}"[:253]}
    ids = sorted(baseline.values[benchmark])
    paired = paired_difference([baseline.values[benchmark][i] for i in ids], [run.values[benchmark][i] for i in ids])
    return {"benchmark": benchmark, "problems": paired.problems, "difference": f"{paired.difference:.4f}",
            "ciLow": f"{paired.low:.4f}", "ciHigh": f"{paired.high:.4f}", "wins": paired.wins, "losses": paired.losses}


def fetch_output(location: str, scratch: Path) -> Path:
    """An evaluation output as a local directory: a path as is; an object-store URI (fsspec) downloaded into
    `scratch` (its summary.json and responses/). Raises Refused naming the location when it cannot be read."""
    if "://" not in location or location.startswith("file://"):
        return Path(location.removeprefix("file://"))
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(location)
        scratch.mkdir(parents=True, exist_ok=True)
        fs.get(f"{root.rstrip('/')}/summary.json", str(scratch / "summary.json"))
        fs.get(f"{root.rstrip('/')}/responses/", str(scratch / "responses") + "/", recursive=True)
    except Exception as exc:  # missing objects, credentials, network: the gate says which location
        raise Refused(f"cannot read the evaluation output {location}: {type(exc).__name__}: {exc}"[:400]) from None
    return scratch


def gate_comparisons(run: EvalOutput, baselines: Sequence[Any], pairs: Sequence[tuple[str, str]], scratch: Path) -> list[dict[str, Any]]:
    """The PairedComparisons the relative gates ask for: `pairs` (baseline name, benchmark), in order, once each.
    `baselines` name, revision and location (where this pod reads it) of each baseline EvalRun's output."""
    by_name = {entry.name: entry for entry in baselines}
    loaded: dict[str, EvalOutput | str] = {}
    out = []
    for name, benchmark in dict.fromkeys(pairs):
        entry = by_name.get(name)
        head = {"baseline": name, **({"baselineRevision": entry.revision} if entry is not None and entry.revision else {})}
        if entry is None:
            out.append({**head, "benchmark": benchmark, "refused": f"EvalRun {name} was not resolved as a baseline"})
            continue
        if name not in loaded:
            try:
                loaded[name] = load_output(fetch_output(entry.location, scratch / name))
            except Refused as exc:
                loaded[name] = str(exc)
        baseline = loaded[name]
        if isinstance(baseline, str):
            out.append({**head, "benchmark": benchmark, "refused": baseline[:253]})
        else:
            out.append({**head, **benchmark_comparison(baseline, run, benchmark)})
    return out


def render_text(comparison: dict[str, Any]) -> str:
    a, b = comparison["a"], comparison["b"]
    lines = [f"A: {a['path']}  ({a['name']}, model {a['model']})",
             f"B: {b['path']}  ({b['name']}, model {b['model']})",
             f"protocol {comparison['protocol']}; interval: {comparison['method']}", "",
             f"{'benchmark':<16} {'problems':>8} {'A':>7} {'B':>7} {'B - A':>8}  {'95% interval':<19} {'B better / A better':>19}"]
    for row in comparison["benchmarks"]:
        interval = f"[{row['low']:+.4f}, {row['high']:+.4f}]"
        lines.append(f"{row['benchmark']:<16} {row['problems']:>8} {row['score_a']:>7.4f} {row['score_b']:>7.4f} "
                     f"{row['difference']:>+8.4f}  {interval:<19} {row['wins']:>8} / {row['losses']}")
    if comparison["notCompared"]:
        lines += ["", f"not compared (evaluated by one run only): {', '.join(comparison['notCompared'])}"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `reasonops compare`."""
    parser.add_argument("a", metavar="A", help="the output directory of the first evaluation (the baseline)")
    parser.add_argument("b", metavar="B", help="the output directory of the second evaluation")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def command(args: argparse.Namespace) -> int:
    """Print the comparison; exit code 2 with one line on stderr when the outputs are unreadable or not comparable."""
    try:
        comparison = compare(load_output(args.a), load_output(args.b))
    except Refused as exc:
        print(f"error: cannot compare: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(comparison, indent=2, allow_nan=False) if args.json else render_text(comparison))
    return 0

