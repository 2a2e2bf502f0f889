"""Model stages on many pods: deterministic shards of the problems, exchanged through the output location.

A sharded run is an Indexed Job of N pods (N = spec.shards). Every pod runs the same deterministic
model-free stages up to the first model stage (cheap next to sampling), so all agree on the pool without
talking to each other. The per-problem stages from there on (difficulty, generate, score, decontaminate:
`segment`) run on the pod's own shard only: the problems whose stable id hash (blake2b, `store.id_hash`)
is congruent to the pod's index modulo N. Their samples go to per-shard resume caches in the work
directory next to the output (`<name>.shard-<i>-of-<N>.jsonl`, append-only, on the output volume), so a
restarted pod resumes its own shard without repeating finished samples.

A pod that has finished its shard publishes it under `<output>.shards/<i>-of-<N>/` (rows.jsonl,
dropped.jsonl, reports.json, then the `_DONE` marker last) and exits; pod 0 then waits for every marker
(at most REASONOPS_SHARD_WAIT_SECONDS, default 86400, then WorkloadError(reasons.REASON_SHARDS_INCOMPLETE) naming the
missing shards), merges the shards into its pool and runs the remaining stages and the output. A pod whose
shard is already published (a restart after publishing) does not run it again.

Shard index and count come from the environment: JOB_COMPLETION_INDEX (set by Kubernetes for an
Indexed Job) and REASONOPS_SHARDS (set by the operator; absent means 1).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..contract import Env
from ..api import common as reasons
from ..errors import WorkloadError
from .records import DropLog, StageReport
from .store import ProblemStore, decode

if TYPE_CHECKING:
    from ..api.v1alpha1 import Stage
    from ..progress import Reporter

MAX_SHARDS = 256
PER_PROBLEM = ("difficulty", "generate", "score", "decontaminate")
MODEL_STAGES = ("difficulty", "generate")
DONE = "_DONE"
POLL_SECONDS = 5.0


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def from_env(cls) -> "Shard":
        raw_count, raw_index = os.environ.get(Env.SHARDS) or "1", os.environ.get("JOB_COMPLETION_INDEX") or "0"
        try:
            count, index = int(raw_count), int(raw_index)
        except ValueError:
            raise WorkloadError(reasons.REASON_INVALID_SPEC, f"REASONOPS_SHARDS={raw_count!r} and JOB_COMPLETION_INDEX={raw_index!r} must be integers") from None
        if not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
            raise WorkloadError(reasons.REASON_INVALID_SPEC, f"shard {index} of {count}: need 1 <= shards <= {MAX_SHARDS} and 0 <= index < shards")
        return cls(index, count)


def segment(stages: list["Stage"]) -> tuple[int, int]:
    """[first, last) of the stages that run per shard: from the first model stage through the per-problem
    stages that follow it. Later stages (after a dedupe or select) run on pod 0 over the merged pool."""
    kinds = [s.kind() for s in stages]
    first = next((i for i, k in enumerate(kinds) if k in MODEL_STAGES), len(stages))
    last = first
    while last < len(stages) and kinds[last] in PER_PROBLEM:
        last += 1
    return first, last


def own_rows(store: ProblemStore, shard: Shard) -> np.ndarray:
    live = store.live()
    return live[store.columns["id_hash"][live] % np.uint64(shard.count) == np.uint64(shard.index)]


class Exchange:
    """The shards of one run under `location` (a path or fsspec URI shared by all pods)."""

    def __init__(self, location: str, shard: Shard) -> None:
        import fsspec

        self.location = location
        self.shard = shard
        self.fs, self.root = fsspec.core.url_to_fs(location)

    def _dir(self, index: int) -> str:
        return f"{self.root}/{index}-of-{self.shard.count}"

    def done(self, index: int) -> bool:
        return self.fs.exists(f"{self._dir(index)}/{DONE}")

    def publish(self, store: ProblemStore, own: np.ndarray, reports: list[StageReport]) -> None:
        """This pod's surviving rows, drops and stage counts; the marker last."""
        directory = self._dir(self.shard.index)
        self.fs.makedirs(directory, exist_ok=True)
        rows = own[store.alive[own]]
        scratch = store.path.parent / "shard-rows.jsonl"
        with scratch.open("wb") as fh:
            for i in rows.tolist():
                fh.write(store.raw(i))
        self.fs.put_file(str(scratch), f"{directory}/rows.jsonl")
        log = reports[0].log if reports else None
        if log is not None:
            self.fs.put_file(str(log.close()), f"{directory}/dropped.jsonl")
        summary = [{**r.to_manifest(), "counts": dict(r.counts)} for r in reports]
        self.fs.pipe_file(f"{directory}/reports.json", json.dumps(summary).encode())
        self.fs.pipe_file(f"{directory}/{DONE}", json.dumps({"rows": len(rows)}).encode())
        scratch.unlink()

    def wait(self, reporter: "Reporter", timeout: float | None = None) -> None:
        timeout = float(os.environ.get("REASONOPS_SHARD_WAIT_SECONDS") or 86400) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            missing = [i for i in range(self.shard.count) if not self.done(i)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise WorkloadError(reasons.REASON_SHARDS_INCOMPLETE, f"shards {', '.join(map(str, missing))} of {self.shard.count} did not"
                                    f" finish within {timeout:.0f}s (no {DONE} marker under {self.location})")
            reporter.update(message=f"waiting for shards {', '.join(map(str, missing))} of {self.shard.count}")
            time.sleep(POLL_SECONDS)

    def merge(self, store: ProblemStore, rows: np.ndarray, stages: list["Stage"], drops: DropLog,
              reporter: "Reporter") -> list[StageReport]:
        """Wait for every shard, then make `rows` (the pool the segment started from) its merged result."""
        self.wait(reporter)
        hashes = store.columns["id_hash"][rows]
        by_hash = np.argsort(hashes)
        store.alive[rows] = False
        reports = [StageReport(s.name, s.kind(), log=drops) for s in stages]
        for index in range(self.shard.count):
            directory = self._dir(index)
            with self.fs.open(f"{directory}/rows.jsonl", "rb") as fh:
                for line in fh:
                    problem = decode(line)
                    row = _row_of(hashes, by_hash, rows, problem.id)
                    store.put(row, problem)
                    store.alive[row] = True
            if self.fs.exists(f"{directory}/dropped.jsonl"):
                with self.fs.open(f"{directory}/dropped.jsonl", "rb") as fh:
                    for line in fh:
                        drops.write_line(line.decode("utf-8"))
            for report, summary in zip(reports, json.loads(self.fs.cat_file(f"{directory}/reports.json"))):
                part = StageReport(report.name, report.kind, input=summary["input"], kept=summary["kept"],
                                   info=summary.get("info", {}))
                part.counts.update(summary["counts"])
                report.absorb(part)
                report.seconds = max(report.seconds, summary["seconds"])
        return reports


def _row_of(hashes: np.ndarray, by_hash: np.ndarray, rows: np.ndarray, problem_id: str) -> int:
    from .store import id_hash

    key = np.uint64(id_hash(problem_id))
    at = int(np.searchsorted(hashes, key, sorter=by_hash))
    if at >= len(by_hash) or hashes[by_hash[at]] != key:
        raise WorkloadError(reasons.REASON_SHARDS_INCONSISTENT, f"a shard returned problem {problem_id}, which this pod's pool does not hold"
                            " (did the pods load different sources?)")
    return int(rows[by_hash[at]])
