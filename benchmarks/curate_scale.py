"""Peak memory and time of the model-free curation stages on a generated pool of millions of problems.

    python benchmarks/curate_scale.py --problems 1000000 [--benchmark-dir DIR] [--json results.json]
                                      [--pool PATH] [--gen-workers N]

The pool is generated straight to a JSONL file (not timed; nothing of it is kept in this process):
problems and solutions as in `curate_throughput.py`, with 10% near-duplicates of recent problems and
1% benchmark questions. `reasonops.curate.main` then runs in a fresh child process with the whole
model-free recipe (load and normalise, dedupe, decontaminate against MATH500/AIME24/AMC23/OlympiadBench,
score, select 1%, write the dataset), and reports its wall time, CPU time and peak RSS
(`ru_maxrss`). Recall and false drops are measured by `curate_throughput.py` on a smaller pool.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curate_throughput import (  # noqa: E402
    BENCHMARKS, DEFAULT_BENCHMARK_DIR, _contamination, _near_duplicate, _problem, _solution, _vocabulary, run_pipeline,
)


def write_pool(path: Path, problems: int, benchmark_dir: Path, seed: int = 0, workers: int = 1) -> None:
    """The pool as JSONL. With `workers` > 1, parts of it are generated in parallel processes (each with its
    own random stream, the same vocabulary) and appended in order: another pool than workers=1 makes, of the
    same kind (a 10M pool takes ~1 h in one process)."""
    if workers <= 1:
        _write_part(path, 0, problems, benchmark_dir, seed, None)
        return
    import multiprocessing

    bounds = [problems * k // workers for k in range(workers + 1)]
    parts = [path.with_name(f"{path.name}.part{k}") for k in range(workers)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.starmap(_write_part, [(parts[k], bounds[k], bounds[k + 1], benchmark_dir, seed, k) for k in range(workers)])
    parts[0].rename(path)
    with path.open("ab") as out:
        for part in parts[1:]:  # append and delete one part at a time: the disk holds the pool about once
            with part.open("rb") as fh:
                while chunk := fh.read(1 << 24):
                    out.write(chunk)
            part.unlink()


def _write_part(path: Path, start: int, stop: int, benchmark_dir: Path, seed: int, part: Optional[int]) -> None:
    from reasonops.benchmarks import load_benchmark

    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    if part is not None:
        rng = random.Random(f"{seed}-part-{part}")
    items = [item for name in BENCHMARKS for item in load_benchmark(name, path=str(benchmark_dir))]
    recent: list[str] = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(start, stop):
            draw = rng.random()
            if draw < 0.01:
                question, answer = _contamination(rng, rng.choice(items).question), "0"
            elif draw < 0.11 and recent:
                question, answer = _near_duplicate(rng, rng.choice(recent), vocab), str(i)
            else:
                question, answer = _problem(rng, vocab), str(i)
                recent.append(question)
                if len(recent) > 10_000:
                    recent.pop(rng.randrange(len(recent)))
            fh.write(json.dumps({"id": f"r{i}", "question": question, "solution": _solution(rng, vocab, i), "answer": answer}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=1_000_000)
    parser.add_argument("--benchmark-dir", default=os.environ.get("REASONOPS_BENCHMARK_DIR", str(DEFAULT_BENCHMARK_DIR)))
    parser.add_argument("--pool", help="reuse (or keep) the generated pool at this path")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--gen-workers", type=int, default=1, help="processes generating the pool (not timed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(args.pool) if args.pool else Path(tmp) / "pool.jsonl"
        if not pool.exists():
            started = time.perf_counter()
            write_pool(pool, args.problems, Path(args.benchmark_dir), workers=args.gen_workers)
            print(f"pool of {args.problems:,} problems ({pool.stat().st_size / 2**30:.2f} GiB) written in"
                  f" {time.perf_counter() - started:.0f}s", file=sys.stderr)
        out = Path(tmp) / "out" / "dataset"
        code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from curate_throughput import run_pipeline;"
                " print(json.dumps(run_pipeline(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))")
        child = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(pool), str(out),
                                args.benchmark_dir, str(max(1, args.problems // 100))], capture_output=True, text=True)
        if child.returncode != 0:
            sys.exit(f"pipeline failed:\n{child.stderr[-3000:]}")
        figures = {"problems": args.problems, "poolGiB": round(pool.stat().st_size / 2**30, 2), "cpus": os.cpu_count(),
                   **json.loads(child.stdout.splitlines()[-1])}
        figures["problemsPerSecond"] = round(args.problems / figures["seconds"])
        manifest = json.loads((out / "manifest.json").read_text())
        figures["stageSeconds"] = {s["stage"]: s["seconds"] for s in manifest["stages"]}
        figures["stageCounts"] = {s["stage"]: [s["kept"], s["dropped"]] for s in manifest["stages"]}
        del figures["result"]
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
