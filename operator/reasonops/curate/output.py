"""The written dataset: rows, manifest, report, perturbed variants, and an atomic write.

Layout of a revision directory (a local path or an fsspec URI):

    data.jsonl  data.parquet   chat rows: {id, messages: [system, user, assistant], answer, source,
                               teacher, score, solveRate}
    manifest.json              revision (= contentHash, sha256 of data.jsonl), per-stage counts and drop
                               reasons, sources and their revisions, teachers, solve rates, token lengths
                               (and the assistant turn's length histogram), the resolved spec
    report.md                  the same for people, with a length histogram
    report.html                the funnel, length and difficulty histograms as plots (reasonops.report)
    dropped.jsonl              every dropped problem: {id, stage, reason, detail}
                               (manifest and report also give each source's rows read and samples kept)
    variants/<name>/           data.jsonl, data.parquet and manifest.json of each perturbation
    _COMPLETE                  written last: a reader must ignore a directory without it

A local dataset is written into a temporary sibling (`.<name>.tmp-<random>`) and renamed into place,
so the directory either holds a complete dataset or does not exist. An object store has no rename:
there the files are written first and `_COMPLETE` last, after removing a stale marker.

Token lengths use spec.tokenizer when given (`transformers.AutoTokenizer`, counted on the plain turn
texts, without chat-template markup). Without a tokenizer, or when it cannot be loaded, they are an
estimate of one token per 4 characters (the usual figure for English text under BPE tokenizers; LaTeX-
heavy text runs somewhat higher), and the manifest says which method was used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from ..api import common as reasons
from ..errors import WorkloadError
from .records import Problem

log = logging.getLogger("reasonops.curate")

COMPLETE_MARKER = "_COMPLETE"
CHARS_PER_TOKEN = 4


def build_rows(problems: list[Problem], system_prompt: str) -> list[dict[str, Any]]:
    """One chat row per problem, from its best chain: the row's own system prompt, else `system_prompt`
    (no system turn where the one that applies is empty), the question, the chain."""
    rows = []
    for problem in problems:
        chain = problem.best_chain
        assert chain is not None, "problems without a chain are dropped before output"
        system = problem.system if problem.system is not None else system_prompt
        rows.append({
            "id": problem.id,
            "messages": [
                *([{"role": "system", "content": system}] if system else []),
                {"role": "user", "content": problem.question},
                {"role": "assistant", "content": chain.text},
            ],
            "answer": problem.answer,
            "source": problem.source,
            "teacher": chain.teacher,
            "score": chain.score,
            "solveRate": problem.solve_rate,
        })
    return rows


def encode_jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _parquet_schema():
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([("id", pa.string()), ("messages", pa.list_(message)), ("answer", pa.string()),
                      ("source", pa.string()), ("teacher", pa.string()), ("score", pa.float64()),
                      ("solveRate", pa.float64())])


class RowsWriter:
    """Writes chat rows as they come to data.jsonl and data.parquet files, hashing and measuring them."""

    def __init__(self, jsonl: Path, parquet: Path, tokenizer: str | None) -> None:
        import pyarrow.parquet as pq

        self.jsonl, self.parquet = jsonl, parquet
        self._jsonl = jsonl.open("wb")
        self._parquet = pq.ParquetWriter(parquet, _parquet_schema())
        self._hash = hashlib.sha256()
        self._count, self.method = _counter(tokenizer)
        self.lengths: dict[str, list[int]] = {"user": [], "assistant": [], "total": []}
        self.count = 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        if not rows:
            return
        data = encode_jsonl(rows)
        self._jsonl.write(data)
        self._hash.update(data)
        self._parquet.write_table(pa.Table.from_pylist(rows, schema=_parquet_schema()))
        turns = {role: [next((m["content"] for m in r["messages"] if m["role"] == role), "") for r in rows]
                 for role in ("system", "user", "assistant")}  # a row without a system prompt counts none
        counted = {role: self._count(texts) for role, texts in turns.items()}
        self.lengths["user"] += counted["user"]
        self.lengths["assistant"] += counted["assistant"]
        self.lengths["total"] += [sum(parts) for parts in zip(*counted.values())]
        self.count += len(rows)

    def close(self) -> tuple[str, int, str, dict[str, list[int]]]:
        """Content hash (sha256 of data.jsonl), rows, token-length method and lengths."""
        self._jsonl.close()
        self._parquet.close()
        return self._hash.hexdigest(), self.count, self.method, self.lengths


# ------------------------------------------------------------------------------------------------
# Token lengths
# ------------------------------------------------------------------------------------------------


def _counter(tokenizer: str | None):
    def estimate(texts: list[str]) -> list[int]:
        return [math.ceil(len(t) / CHARS_PER_TOKEN) for t in texts]

    if not tokenizer:
        return estimate, f"estimate: characters / {CHARS_PER_TOKEN}"
    try:
        from transformers import AutoTokenizer

        loaded = AutoTokenizer.from_pretrained(tokenizer)
    except Exception as exc:  # offline, gated, not a tokenizer: statistics are not worth failing the run
        log.warning("tokenizer %s unavailable (%s); token lengths are estimated", tokenizer, exc)
        return estimate, f"estimate: characters / {CHARS_PER_TOKEN} (tokenizer {tokenizer} unavailable)"

    def exact(texts: list[str]) -> list[int]:
        return [len(ids) for ids in loaded(texts, add_special_tokens=False)["input_ids"]]

    return exact, f"tokenizer: {tokenizer}"


def length_stats(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def pct(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"count": len(values), "total": sum(values), "mean": round(sum(values) / len(values), 1),
            "min": ordered[0], "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": ordered[-1]}


def histogram_bins(values: list[int], bins: int = 10) -> dict[str, Any]:
    """Equal-width integer bins over the values: each bin's first value ("starts", the last bin ending at
    "end", the maximum) and its count; the manifest keeps them for the HTML report's length histogram."""
    if not values:
        return {"starts": [], "counts": [], "end": None}
    low, high = min(values), max(values)
    step = max(1, math.ceil((high - low + 1) / bins))
    counts = Counter(min((v - low) // step, bins - 1) for v in values)
    starts = [low + b * step for b in range(bins) if low + b * step <= high]
    return {"starts": starts, "counts": [counts.get(b, 0) for b in range(len(starts))], "end": high}


def histogram(values: list[int], bins: int = 10, width: int = 40) -> str:
    """A text histogram, one line per bin: range, count and a bar."""
    if not values:
        return "(no samples)"
    binned = histogram_bins(values, bins)
    starts, counts = binned["starts"], binned["counts"]
    ends = [start - 1 for start in starts[1:]] + [binned["end"]]
    peak = max(counts)
    return "\n".join(f"{start:>7}-{end:<7} {count:>7}  {'#' * round(width * count / peak)}"
                     for start, end, count in zip(starts, ends, counts))


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def render_report(manifest: dict[str, Any], drops: list[dict[str, Any]], assistant_lengths: list[int]) -> str:
    """The report; `drops` needs to hold only the first 50 contaminated drops (the counts come from the manifest)."""
    lines = [f"# Dataset {manifest['name']}", "",
             f"- samples: {manifest['samples']:,}", f"- revision (content hash): `{manifest['revision']}`",
             f"- resource revision: `{manifest.get('resourceRevision')}`", "", "## Stages", "",
             "| stage | kind | input | kept | dropped | reasons |", "|---|---|---:|---:|---:|---|"]
    for s in manifest["stages"]:
        reasons = ", ".join(f"{r} {n:,}" for r, n in s["reasons"].items()) or "-"
        lines.append(f"| {s['stage']} | {s['kind']} | {s['input']:,} | {s['kept']:,} | {s['dropped']:,} | {reasons} |")
    lines += ["", "## Sources", "", "| source | kind | location | revision | rows read | samples in the dataset |",
              "|---|---|---|---|---:|---:|"]
    lines += [f"| {s['name']} | {s['kind']} | {s['location']} | `{s['revision']}` | {s['rows']:,} | {s['samples']:,} |"
              for s in manifest["sources"]]
    lines += ["", "## Teachers", ""]
    lines += [f"- {name}: {count:,} samples" for name, count in manifest["teachers"].items()] or ["- none"]
    if manifest["solveRates"]:
        lines += ["", "## Solve rates (difficulty passes)", ""]
        lines += [f"- {stage}: mean {info['mean']}, problems by solved share {info['distribution']}"
                  for stage, info in manifest["solveRates"].items()]
    tokens = manifest["tokenLengths"]
    lines += ["", "## Lengths", "", f"Method: {tokens['method']}.", "",
              "| part | mean | p50 | p90 | p99 | max | total |", "|---|---:|---:|---:|---:|---:|---:|"]
    for part in ("user", "assistant", "total"):
        st = tokens[part]
        if st.get("count"):
            lines.append(f"| {part} | {st['mean']} | {st['p50']} | {st['p90']} | {st['p99']} | {st['max']} | {st['total']:,} |")
    lines += ["", "Assistant turn length (tokens), samples per bin:", "", "```", histogram(assistant_lengths), "```"]
    contaminated = [d for d in drops if d["reason"] == "contaminated"]
    total = sum(s["reasons"].get("contaminated", 0) for s in manifest["stages"])
    if contaminated:
        lines += ["", "## Benchmark overlap (dropped)", ""]
        lines += [f"- `{d['id']}` matched {d['detail']}" for d in contaminated[:50]]
        if total > 50:
            lines.append(f"- ... {total - 50:,} more in dropped.jsonl")
    if manifest["variants"]:
        lines += ["", "## Perturbed variants", "", "| variant | type | fraction | seed | samples |", "|---|---|---|---:|---:|"]
        lines += [f"| variants/{v['name']} | {v['type']} | {v['fraction']} | {v['seed']} | {v['samples']:,} |" for v in manifest["variants"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# Where the dataset goes
# ------------------------------------------------------------------------------------------------


def _is_local(location: str) -> bool:
    return "://" not in location or location.startswith("file://")


class DatasetSink:
    """Writes a dataset revision to a local directory or an fsspec URI, never leaving a half-written one."""

    def __init__(self, location: str) -> None:
        self.location = location.rstrip("/")
        self.local = _is_local(location)
        self.path = Path(self.location.removeprefix("file://")) if self.local else None

    def check_writable(self) -> None:
        """Fail now, not after hours of generation, when the output cannot be written."""
        probe = f".reasonops-probe-{uuid.uuid4().hex[:8]}"
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                (self.path.parent / probe).write_bytes(b"")
                (self.path.parent / probe).unlink()
            else:
                fs, root = self._fs()
                fs.pipe_file(f"{root}/{probe}", b"")
                fs.rm_file(f"{root}/{probe}")
        except Exception as exc:  # permissions, read-only volume, missing bucket, credentials
            raise WorkloadError(reasons.REASON_OUTPUT_UNWRITABLE, f"cannot write to {self.location}: {type(exc).__name__}: {exc}") from exc

    def work_dir(self) -> Path:
        """A local directory for resume caches that survives a pod restart when the output is a volume."""
        if self.path is not None:
            return self.path.parent / f".{self.path.name}.work"
        base = Path(os.environ.get("REASONOPS_WORK_DIR") or Path.home() / ".cache" / "reasonops" / "curate")
        return base / hashlib.sha256(self.location.encode()).hexdigest()[:16]

    def shard_location(self) -> str:
        """Where the pods of a sharded run exchange their shards: next to the output, on the same volume or store."""
        return f"{self.location}.shards"

    def remove_shard_location(self) -> None:
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.shard_location())
        if fs.exists(root):
            fs.rm(root, recursive=True)

    def write(self, files: dict[str, bytes | Path]) -> None:
        """Files by name: their contents, or a local file to copy (large ones are never held in memory)."""
        try:
            if self.path is not None:
                self._write_local(files)
            else:
                self._write_remote(files)
        except OSError as exc:
            raise WorkloadError(reasons.REASON_OUTPUT_UNWRITABLE, f"writing {self.location} failed: {exc}") from exc

    def _write_local(self, files: dict[str, bytes | Path]) -> None:
        assert self.path is not None
        tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            for name, data in {**files, COMPLETE_MARKER: _marker(files)}.items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as fh:
                    if isinstance(data, Path):
                        with data.open("rb") as source:
                            shutil.copyfileobj(source, fh, 1 << 20)
                    else:
                        fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
            old = None
            if self.path.exists():  # a rerun of the same revision replaces the earlier copy
                old = self.path.parent / f".{self.path.name}.old-{uuid.uuid4().hex[:8]}"
                self.path.rename(old)
            tmp.rename(self.path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _write_remote(self, files: dict[str, bytes | Path]) -> None:
        fs, root = self._fs()
        marker = f"{root}/{COMPLETE_MARKER}"
        if fs.exists(marker):
            fs.rm_file(marker)
        for name, data in files.items():
            if isinstance(data, Path):
                fs.put_file(str(data), f"{root}/{name}")
            else:
                fs.pipe_file(f"{root}/{name}", data)
        fs.pipe_file(marker, _marker(files))

    def _fs(self):
        import fsspec

        return fsspec.core.url_to_fs(self.location)


def _marker(files: dict[str, bytes | Path]) -> bytes:
    listing = {name: _sha256(data) for name, data in sorted(files.items())}
    return json.dumps({"files": listing}, indent=1).encode()


def _sha256(data: bytes | Path) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
