"""Load problem pools: hub datasets, JSONL/JSON/Parquet files or directories (local or fsspec URIs), inline rows.

Rows are mapped to question/solution/answer by the source's (or the spec's) field mapping; fields it
leaves unset are detected from the common layouts:

- LIMO `{question, solution, answer}` and MATH-style `{problem, solution, answer}`;
- ShareGPT `{system?, conversations: [{from, value}, ...]}` (first human turn, first gpt turn after it);
- OpenAI `{messages: [{role, content}, ...]}` (first user turn, first assistant turn after it).

JSONL and Parquet files are read a line or a row group at a time; a JSON document is read whole.
A row that cannot become a problem (not an object, bad JSON, invalid UTF-8, a missing, empty or
non-text question) is dropped with a counted reason. A source that cannot be reached at all fails the
run at once with WorkloadError(reasons.REASON_SOURCE_UNAVAILABLE).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator

from ..api.v1alpha1 import DataSource, FieldMapping
from ..api import common as reasons
from ..errors import WorkloadError
from ..grading import last_boxed
from .records import Chain, Problem, StageReport
from .text import normalize

log = logging.getLogger("reasonops.curate")

QUESTION_KEYS = ("question", "problem", "prompt", "query", "instruction", "input")
SOLUTION_KEYS = ("solution", "response", "output", "completion", "reasoning")
ANSWER_KEYS = ("answer", "final_answer", "expected_answer", "gold", "target")
ID_KEYS = ("id", "unique_id", "uid", "problem_id", "idx")
_USER_ROLES = ("human", "user")
_ASSISTANT_ROLES = ("gpt", "assistant", "model")
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


class RowError(Exception):
    """JSONL and Parquet files are read a line or a row group at a time; a JSON document is read whole.
A row that cannot become a problem; args are (reason, detail)."""


@dataclass
class SourceInfo:
    """What the manifest records about a loaded source."""

    name: str
    kind: str
    location: str
    revision: str | None
    rows: int = 0
    files: list[str] = field(default_factory=list)

    def to_manifest(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "location": self.location, "revision": self.revision,
                "rows": self.rows, "files": self.files[:20]}


def load_sources(sources: list[DataSource], default_fields: FieldMapping | None, report: StageReport,
                 progress: bool = False) -> tuple[list[Problem], list[SourceInfo]]:
    """Load every source in order into memory (small pools, tests); `iter_problems` streams."""
    problems: list[Problem] = []
    infos: list[SourceInfo] = []
    seen_ids: set[str] = set()
    for problem, index in iter_problems(sources, default_fields, report, infos, progress):
        if problem.id in seen_ids:  # ids must be unique in the output; the row index disambiguates
            problem.id = f"{problem.id}#{index}"
        seen_ids.add(problem.id)
        problems.append(problem)
    return problems, infos


def iter_problems(sources: list[DataSource], default_fields: FieldMapping | None, report: StageReport,
                  infos: list[SourceInfo], progress: bool = False) -> Iterator[tuple[Problem, int]]:
    """(problem, row index in its source) for every loadable row, in order; malformed rows become drops in
    `report`, and each source's SourceInfo is appended to `infos` once it has been read."""
    from tqdm.auto import tqdm

    for source in sources:
        info, rows = open_source(source)
        mapping = _merge_mapping(default_fields, source.fields)
        if source.codeTests:
            from .code import row_to_problem as code_row  # code problems carry tests instead of an answer
        for index, row in enumerate(tqdm(rows, desc=f"load {source.name}", disable=not progress, mininterval=10)):
            if source.limit is not None and index >= source.limit:
                break
            info.rows += 1
            report.input += 1
            try:
                problem = (code_row(row, source.codeTests, source.name, index) if source.codeTests
                           else row_to_problem(row, mapping, source.name, index))
            except RowError as exc:
                report.drop(f"{source.name}:{index}", *exc.args)
                continue
            report.kept += 1
            yield problem, index
        infos.append(info)
        log.info("source %s: %d rows from %s (revision %s)", source.name, info.rows, info.location, info.revision)


def open_source(source: DataSource) -> tuple[SourceInfo, Iterable[Any]]:
    if source.inline is not None:
        rows = [r.model_dump(exclude_none=True) for r in source.inline]
        digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
        return SourceInfo(source.name, "inline", "inline", digest), rows
    if source.hub is not None:
        return _open_hub(source)
    location = source.path or source.uri
    assert location is not None, "DataSource validation guarantees one of hub, path, uri or inline"
    return _open_files(source, location)


def _open_hub(source: DataSource) -> tuple[SourceInfo, Iterable[Any]]:
    """A hub dataset; HF_DATASETS_CACHE and HF_HUB_OFFLINE select an offline cache as usual."""
    import datasets

    hub = source.hub
    assert hub is not None
    try:
        ds = datasets.load_dataset(hub.id, hub.config, split=hub.split, revision=hub.revision)
    except Exception as exc:  # the hub client raises many types (connection, not found, offline cache miss)
        raise WorkloadError(reasons.REASON_SOURCE_UNAVAILABLE, f"source {source.name}: cannot load hub dataset {hub.id}"
                            f" (config {hub.config}, split {hub.split}, revision {hub.revision}): {exc}") from exc
    if hub.revision is None:
        log.warning("source %s: hub dataset %s is not pinned to a revision; upstream changes can move it",
                    source.name, hub.id)
    if source.limit is not None:
        ds = ds.select(range(min(source.limit, len(ds))))
    location = f"hub://{hub.id}" + (f"/{hub.config}" if hub.config else "") + f"[{hub.split}]"
    return SourceInfo(source.name, "hub", location, hub.revision or "unpinned"), ds


def _open_files(source: DataSource, location: str) -> tuple[SourceInfo, Iterator[Any]]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(location)
        if fs.isdir(root):
            files = sorted(p for p in fs.find(root) if _format_of(p, None) is not None)
        elif fs.exists(root):
            files = [root]
        else:
            raise FileNotFoundError(location)
    except Exception as exc:  # missing path, unknown protocol, missing s3fs, credentials, network
        raise WorkloadError(reasons.REASON_SOURCE_UNAVAILABLE, f"source {source.name}: cannot open {location}: {exc}") from exc
    if not files:
        raise WorkloadError(reasons.REASON_SOURCE_UNAVAILABLE, f"source {source.name}: no .jsonl, .json or .parquet files in {location}")
    info = SourceInfo(source.name, "uri" if source.uri else "path", location, None, files=list(files))
    digest = hashlib.sha256()

    def rows() -> Iterator[Any]:
        for path in files:
            fmt = _format_of(path, source.format) or "jsonl"
            try:
                with fs.open(path, "rb", compression="infer") as fh:
                    yield from _parse(fh, fmt, lambda data: digest.update(data))
            except OSError as exc:
                raise WorkloadError(reasons.REASON_SOURCE_UNAVAILABLE, f"source {source.name}: cannot read {path}: {exc}") from exc
            info.revision = "sha256:" + digest.hexdigest()[:16]  # content hash of the files read so far

    return info, rows()


def _format_of(path: str, declared: str | None) -> str | None:
    if declared:
        return declared
    name = path.lower()
    for ext in _COMPRESSIONS:
        name = name.removesuffix(ext)
    return next((fmt for ext, fmt in _FORMATS.items() if name.endswith(ext)), None)


def _decode(data: bytes) -> tuple[str, bool]:
    """Text and whether it holds invalid UTF-8 (kept as surrogates so only the affected rows drop)."""
    try:
        return data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff"), True


def _parse(fh: IO[bytes], fmt: str, seen: Callable[[bytes], None]) -> Iterator[Any]:
    """Rows of one open file, JSONL line by line; an unparseable line or file yields a RowError in its place.

    `seen` receives the bytes as they are read (the content hash of the source).
    """
    if fmt == "jsonl":
        for number, line in enumerate(fh, start=1):
            seen(line)
            if number == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                yield RowError("invalid-utf8", f"line {number}")
                continue
            try:
                yield json.loads(text)
            except ValueError as exc:
                yield RowError("invalid-json", f"line {number}: {exc}"[:200])
        return
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for block in iter(lambda: fh.read(1 << 20), b""):
            seen(block)
        fh.seek(0)
        try:
            batches = pq.ParquetFile(fh).iter_batches(batch_size=10_000)
            for batch in batches:
                yield from batch.to_pylist()
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            yield RowError("unreadable-file", str(exc)[:200])
        return
    data = fh.read()  # a JSON document is parsed whole
    seen(data)
    text, invalid = _decode(data)
    try:
        document = json.loads(text)
    except ValueError as exc:
        yield RowError("invalid-json", str(exc)[:200])
        return
    for number, row in enumerate(_json_rows(document), start=1):
        yield RowError("invalid-utf8", f"row {number}") if invalid and _has_surrogates(row) else row


def _json_rows(document: Any) -> list[Any]:
    """A JSON file is a list of rows, {"data": [...]}-style (one list value) or columns {"q": [...], ...}."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        lists = [v for v in document.values() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in lists[0]):
            return lists[0]
        if lists and len(lists) == len(document) and len({len(v) for v in lists}) == 1:
            return [dict(zip(document, values)) for values in zip(*document.values())]
        return [document]
    return [document]


def _has_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_surrogates(k) or _has_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    return False


def _merge_mapping(default: FieldMapping | None, override: FieldMapping | None) -> dict[str, str]:
    merged: dict[str, str] = {}
    for mapping in (default, override):
        if mapping is not None:
            merged.update(mapping.model_dump(exclude_none=True))
    return merged


def row_to_problem(row: Any, mapping: dict[str, str], source: str, index: int) -> Problem:
    """Turn one raw row into a Problem or raise RowError(reason, detail)."""
    if isinstance(row, RowError):
        raise row
    if not isinstance(row, dict):
        raise RowError("not-an-object", type(row).__name__)
    question, solution = _from_conversation(row) if not mapping.get("question") else (None, None)
    question = _text_field(row, "question", mapping.get("question"), QUESTION_KEYS, question)
    if question is None:
        raise RowError("missing-question", None)
    if not question:
        raise RowError("empty-question", None)
    solution = _text_field(row, "solution", mapping.get("solution"), SOLUTION_KEYS, solution) or None
    answer = _answer_field(row, mapping.get("answer"))
    if answer is None and solution is not None:
        answer = last_boxed(solution)
    row_id = _first(row, (mapping["id"],) if mapping.get("id") else ID_KEYS)
    problem_id = f"{source}:{row_id if row_id not in (None, '') else index}"
    chains = [Chain(text=solution, answer=last_boxed(solution) or answer)] if solution else []
    return Problem(id=problem_id, question=question, answer=answer, source=source, chains=chains)


def _first(row: dict, keys: Iterable[str]) -> Any:
    return next((row[k] for k in keys if k in row and row[k] is not None), None)


def _text_field(row: dict, name: str, column: str | None, keys: tuple[str, ...], detected: str | None) -> str | None:
    value = row.get(column) if column else (detected if detected is not None else _first(row, keys))
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowError(f"wrong-type-{name}", type(value).__name__)
    return normalize(value)


def _answer_field(row: dict, column: str | None) -> str | None:
    value = row.get(column) if column else _first(row, ANSWER_KEYS)
    if isinstance(value, bool):
        raise RowError("wrong-type-answer", "bool")
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # AMC-style 27.0 means 27
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        value = ", ".join(str(v) for v in value)
    if not isinstance(value, str):
        raise RowError("wrong-type-answer", type(value).__name__)
    return normalize(value).strip("$ ") or None


def _from_conversation(row: dict) -> tuple[str | None, str | None]:
    """Question and solution from ShareGPT `conversations` or OpenAI `messages`; (None, None) otherwise."""
    for key, role_key, text_key in (("conversations", "from", "value"), ("messages", "role", "content")):
        turns = row.get(key)
        if not isinstance(turns, list):
            continue
        question = solution = None
        for turn in turns:
            if not isinstance(turn, dict):
                raise RowError(f"malformed-{key}", "turn is not an object")
            role, text = turn.get(role_key), turn.get(text_key)
            if question is None and role in _USER_ROLES:
                question = text
            elif question is not None and role in _ASSISTANT_ROLES:
                solution = text
                break
        for value in (question, solution):
            if value is not None and not isinstance(value, str):
                raise RowError(f"malformed-{key}", f"turn text is {type(value).__name__}")
        return question, solution
    return None, None
