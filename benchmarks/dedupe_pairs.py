"""Time of the dedupe stage alone, and how many candidate pairs its band keys give, on the first N problems
of a pool file (one JSON object with a "question" per line, e.g. the pool `curate_scale.py --pool` keeps).

    PYTHONPATH=operator python benchmarks/dedupe_pairs.py --pool /tmp/pool1m.jsonl --problems 300000

The questions are read into memory first (not timed); then `dedupe_rows` runs with the stage's defaults,
as the pipeline runs it, and prints its wall and CPU time and how many rows it kept. The pair counts are
taken from the band keys and number keys the stage computed (summed over the bands, before a pair seen in
several bands is counted once): pairs that share a band key, pairs that share a band key and the numbers
(the only ones the stage compares), and the longest run of one band key. Run it with PYTHONPATH pointing at
another checkout's `operator/` to time that code on the same problems.
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import islice

import numpy as np


def run_lengths(keys: np.ndarray) -> np.ndarray:
    values = np.sort(keys)
    starts = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    return np.diff(np.append(starts, len(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", required=True)
    parser.add_argument("--problems", type=int, default=300_000)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    import reasonops.curate.dedupe as dedupe
    from reasonops.api.v1alpha1 import DedupeStage
    from reasonops.curate.records import StageReport

    with open(args.pool) as fh:
        questions = [json.loads(line)["question"] for line in islice(fh, args.problems)]
    pairs: dict[str, int] = {}
    near = dedupe._near

    def counting_near(order, kept, bands, values, offsets, numbers, *rest):  # type: ignore[no-untyped-def]
        rows = np.flatnonzero(kept & (np.diff(offsets) > 0))
        started = time.perf_counter()
        band_pairs = number_pairs = longest = 0
        for band in range(bands.shape[1]):
            keys = bands[rows, band].astype(np.uint64)
            lengths = run_lengths(keys)
            band_pairs += int((lengths * (lengths - 1) // 2).sum())
            longest = max(longest, int(lengths.max()))
            lengths = run_lengths((keys << np.uint64(32)) | (numbers[rows] & np.uint64(0xFFFFFFFF)))
            number_pairs += int((lengths * (lengths - 1) // 2).sum())
        pairs.update(bandKeyPairs=band_pairs, sameNumbersPairs=number_pairs, longestRun=longest,
                     countingSeconds=round(time.perf_counter() - started, 2))  # left out of the stage's time below
        return near(order, kept, bands, values, offsets, numbers, *rest)

    dedupe._near = counting_near
    report = StageReport("dedupe", "dedupe")
    wall, cpu = time.perf_counter(), time.process_time()
    dedupe.dedupe_rows(np.arange(len(questions)), lambda rows: [questions[i] for i in rows], str, DedupeStage(), report)
    wall, cpu = time.perf_counter() - wall - pairs["countingSeconds"], time.process_time() - cpu - pairs["countingSeconds"]
    figures = {"problems": len(questions), "code": dedupe.__file__, "seconds": round(wall, 1), "cpuSeconds": round(cpu, 1),
               "kept": report.kept, **pairs}
    print(json.dumps(figures, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
