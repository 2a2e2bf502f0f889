"""Sandboxed test-case executions per second for short programs, and the sandbox's overhead over a bare
`subprocess.run` of the same program.

    PYTHONPATH=operator python benchmarks/sandbox_throughput.py [--workers 2] [--programs 40] [--tests 10]

Figures printed:
- throughput: programs of `--tests` test cases each, `--workers` executions at a time (targets: >= 100 test
  cases/s on 2 cores);
- overhead: one test case per execution, one at a time, against `subprocess.run([python, "-c", program])`
  with the same interpreter and input (target: <= 2x).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from reasonops.sandbox import Job, Sandbox, TestCase

PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"


def tests(n: int) -> list[TestCase]:
    return [TestCase(f"{i} {2 * i}\n", f"{3 * i}\n") for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--programs", type=int, default=40)
    parser.add_argument("--tests", type=int, default=10)
    parser.add_argument("--single", type=int, default=60, help="one-test executions for the overhead figure")
    parser.add_argument("--isolation", default=None)
    args = parser.parse_args()
    sandbox = Sandbox(isolation=args.isolation)
    print(f"isolation {sandbox.isolation}, interpreter {sandbox.python}")
    sandbox.run(PROGRAM, tests(1))  # warm caches

    jobs = [Job(PROGRAM, tests(args.tests)) for _ in range(args.programs)]
    started = time.perf_counter()
    results = sandbox.run_many(jobs, workers=args.workers)
    seconds = time.perf_counter() - started
    assert all(r.passed for r in results), [r.to_dict() for r in results if not r.passed][:1]
    cases = args.programs * args.tests
    print(f"throughput: {cases} test cases ({args.programs} programs x {args.tests}) with {args.workers} workers "
          f"in {seconds:.2f} s = {cases / seconds:.0f} test cases/s")

    started = time.perf_counter()
    singles = sandbox.run_many([Job(PROGRAM, tests(1)) for _ in range(args.single)], workers=args.workers)
    seconds = time.perf_counter() - started
    assert all(r.passed for r in singles)
    print(f"throughput, one test case per execution: {args.single / seconds:.0f} executions/s")

    sandboxed, bare = [], []
    case = tests(2)[1]
    for _ in range(args.single // 2):
        t = time.perf_counter()
        assert sandbox.run(PROGRAM, [case]).passed
        sandboxed.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = subprocess.run([sandbox.python, "-c", PROGRAM], input=case.input, capture_output=True, text=True)
        bare.append(time.perf_counter() - t)
        assert out.stdout == case.output
    s, b = statistics.median(sandboxed), statistics.median(bare)
    print(f"overhead: one test case per execution, median {s * 1000:.1f} ms sandboxed vs {b * 1000:.1f} ms bare "
          f"subprocess.run = {s / b:.2f}x")
    per_case = statistics.median(r.seconds for r in results) / args.tests
    print(f"amortised: {per_case * 1000:.1f} ms per test case in a {args.tests}-test execution = {per_case / b:.2f}x bare")


if __name__ == "__main__":
    main()
