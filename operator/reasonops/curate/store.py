"""The problem pool on disk: rows in an append-only JSONL file, compact per-row state in numpy arrays.

A pool of millions of problems does not fit in memory as Python objects (~9.5 KB per problem with its
solution), so the curation stages keep only what they decide by in memory: each row's file offset, whether
it is still in the pool, and the few numbers of its quality key (`records.quality_key`): about 40 bytes
per row. Texts are read back in batches when a stage needs them. A stage that changes a problem (scoring,
the model stages) appends the new version and repoints the row, so the file only grows by what changed.

Problem ids must be unique in the output: a later row that repeats an id gets `#<row index in its
source>` appended, as when the whole pool was held in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .records import Chain, Problem

BATCH = 20_000  # problems per batch read back; ~200 MB of Python objects at worst
_BLOCK = 65_536  # rows per numpy block while loading


def _encode(problem: Problem) -> bytes:
    chains = [[c.text, c.teacher, c.answer, c.correct, c.score] for c in problem.chains]
    row = {"i": problem.id, "q": problem.question, "a": problem.answer, "s": problem.source, "c": chains,
           "r": problem.solve_rates}
    if problem.tests is not None:  # a code problem: its tests travel with it
        row["t"] = dataclasses.asdict(problem.tests)
    if problem.system is not None:  # the row's own system prompt
        row["y"] = problem.system
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "surrogatepass")


def decode(line: bytes) -> Problem:
    row = json.loads(line.decode("utf-8", "surrogatepass"))
    problem = Problem(row["i"], row["q"], row["a"], row["s"], [Chain(*c) for c in row["c"]], row["r"], system=row.get("y"))
    if row.get("t") is not None:
        problem.tests = _code_problem(row["t"])
    return problem


def _code_problem(raw: dict) -> "Any":
    from ..codebench import CodeProblem
    from ..sandbox import TestCase

    return CodeProblem(**{**raw, "public": tuple(TestCase(**t) for t in raw.get("public") or ()),
                          "private": tuple(TestCase(**t) for t in raw.get("private") or ())})


def id_hash(problem_id: str) -> int:
    """A stable 64-bit hash of a problem id (the same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(problem_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class ProblemStore:
    """Rows of the pool in `directory/rows.jsonl`; `alive` marks those still in the pool."""

    _COLUMNS = {"offset": np.int64, "size": np.int32, "id_hash": np.uint64, "has_chain": np.bool_, "has_answer": np.bool_,
                "correct": np.int16, "score": np.float64, "length": np.int32}

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "rows.jsonl"
        self._out = self.path.open("wb")
        self._fd = os.open(self.path, os.O_RDONLY)
        self._end = 0
        # rows being loaded: Python values for the last few thousand, numpy blocks for the rest
        # (a Python int or float per value would cost ~35 bytes instead of 1-8)
        self._pending: dict[str, list] = {name: [] for name in [*self._COLUMNS, "source_index"]}
        self._blocks: dict[str, list[np.ndarray]] = {name: [] for name in self._pending}
        self.columns: dict[str, np.ndarray] = {}
        self.alive = np.zeros(0, dtype=bool)

    # --- loading -------------------------------------------------------------------------------

    def append(self, problem: Problem, source_index: int) -> None:
        self._write(problem, self._pending, None)
        self._pending["source_index"].append(source_index)
        if len(self._pending["source_index"]) >= _BLOCK:
            self._flush_pending()

    def _flush_pending(self) -> None:
        for name, values in self._pending.items():
            self._blocks[name].append(np.array(values, dtype=self._COLUMNS.get(name, np.int64)))
            values.clear()

    def seal(self) -> None:
        """End of loading: the columns from the loaded blocks, and unique ids."""
        self._flush_pending()
        merged = {name: np.concatenate(blocks) for name, blocks in self._blocks.items()}
        self._pending, self._blocks = {}, {}
        source_index = merged.pop("source_index")
        self.columns = merged
        self.alive = np.ones(len(self.columns["offset"]), dtype=bool)
        hashes = self.columns["id_hash"].copy()
        order = np.argsort(hashes, kind="stable")  # equal ids stay in load order: the first keeps its id
        repeated = order[1:][hashes[order][1:] == hashes[order][:-1]]
        for i in np.sort(repeated).tolist():
            problem = self.read(i)
            problem.id = f"{problem.id}#{source_index[i]}"
            self.put(i, problem)

    # --- reading and updating ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.alive)

    def live(self) -> np.ndarray:
        return np.flatnonzero(self.alive)

    def read(self, i: int) -> Problem:
        return decode(self.raw(i))

    def raw(self, i: int) -> bytes:
        """Row i as its JSONL line (what `append` and `put` wrote)."""
        self._out.flush()
        return os.pread(self._fd, int(self.columns["size"][i]), int(self.columns["offset"][i]))

    def batches(self, indices: np.ndarray, batch: int = BATCH) -> Iterator[tuple[np.ndarray, list[Problem]]]:
        """The problems at `indices`, in that order, `batch` at a time."""
        for start in range(0, len(indices), batch):
            chunk = indices[start : start + batch]
            yield chunk, [self.read(int(i)) for i in chunk]

    def put(self, i: int, problem: Problem) -> None:
        """Replace row i by a changed problem (appended; the row points at the new version)."""
        self._write(problem, self.columns, i)

    def quality_order(self, indices: np.ndarray) -> np.ndarray:
        """`indices` best first by `records.quality_key`, earlier rows first among equals."""
        c = self.columns
        keys = [c[name][indices] for name in ("has_chain", "has_answer", "correct", "score", "length")]
        # np.lexsort sorts ascending by the last key first: negate for "larger is better", index breaks ties
        order = np.lexsort([indices, *[-k.astype(np.float64) for k in reversed(keys)]])
        return indices[order]

    def close(self) -> None:
        self._out.close()
        os.close(self._fd)

    def _write(self, problem: Problem, columns: dict, i: int | None) -> None:
        data = _encode(problem)
        self._out.write(data)
        best = problem.best_chain
        values = {"offset": self._end, "size": len(data), "id_hash": id_hash(problem.id), "has_chain": best is not None,
                  "has_answer": problem.answer is not None, "correct": sum(1 for c in problem.chains if c.correct),
                  "score": best.score if best is not None and best.score is not None else -np.inf,
                  "length": len(best.text) if best is not None else 0}
        self._end += len(data)
        for name, value in values.items():
            if i is None:
                columns[name].append(value)
            else:
                columns[name][i] = value
