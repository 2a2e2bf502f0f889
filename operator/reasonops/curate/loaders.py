"""Load problem pools: hub datasets, JSONL/JSON/Parquet files or directories (local or fsspec URIs), inline rows.

The one reader of rows, for curation (`row_to_problem`) and training (`read_conversation`, `open_location`).
A row is read as a conversation: the columns the source's (or the spec's) field mapping names, and for
what it leaves unset, the first of these layouts that the row has (the README lists them with the
public datasets that use them):

- a thinking trajectory and an attempt (s1K-1.1 `deepseek_thinking_trajectory` + `deepseek_attempt`,
  s1K `thinking_trajectories` + `attempt`): the chain joins them; a short reference `solution` is the answer;
- ShareGPT `{system?, conversations: [{from, value}, ...]}` (Sky-T1, Bespoke-Stratos, OpenThoughts) and
  OpenAI `{messages: [{role, content}, ...]}` (NuminaMath-CoT, OpenR1-Math, plain chat): the turns from
  the first user turn on; the row's `system` column or system turn is its own system prompt;
- columns: LIMO `{question, solution, answer}`, MATH-style `{problem, solution, answer}` and the other
  names of QUESTION_KEYS, SOLUTION_KEYS, ANSWER_KEYS.

JSONL and Parquet files are read a line or a row group at a time; a JSON document (a list of rows, or an
object holding one) is read whole. A row that cannot become a problem (not an object, bad JSON, invalid
UTF-8, a missing, empty or non-text question, a named column it lacks) is dropped with a counted reason
whose detail names the columns looked for. A source that cannot be reached at all fails the run at once
with WorkloadError(reasons.REASON_SOURCE_UNAVAILABLE).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator

from ..api.v1alpha1 import SOLUTION_SEPARATOR, DataSource, FieldMapping
from ..api import common as reasons
from ..errors import WorkloadError
from ..grading import last_boxed
from . import code
from .records import Chain, Problem, RowError, StageReport
from .text import normalize

log = logging.getLogger("reasonops.curate")

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


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
        columns = columns_of(default_fields, source.fields)
        for index, row in enumerate(tqdm(rows, desc=f"load {source.name}", disable=not progress, mininterval=10)):
            if source.limit is not None and index >= source.limit:
                break
            info.rows += 1
            report.input += 1
            try:
                problem = (code.row_to_problem(row, source.codeTests, source.name, index) if source.codeTests
                           else row_to_problem(row, columns, source.name, index))
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
    return open_location(source.name, location, source.format, "uri" if source.uri else "path")


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


def open_location(name: str, location: str, declared: str | None = None, kind: str = "path") -> tuple[SourceInfo, Iterator[Any]]:
    """The rows of a file, or of every .jsonl/.json/.parquet file under a directory (local path or fsspec URI),
    parsed as they are read; an unparseable line or file comes as a RowError in its place."""
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
        raise WorkloadError(reasons.REASON_SOURCE_UNAVAILABLE, f"source {name}: cannot open {location}: {exc}") from exc
    if not files:
        raise WorkloadError(reasons.REASON_SOURCE_UNAVAILABLE, f"source {name}: no .jsonl, .json or .parquet files in {location}")
    info = SourceInfo(name, kind, location, None, files=list(files))
    digest = hashlib.sha256()

    def rows() -> Iterator[Any]:
        for path in files:
            fmt = _format_of(path, declared) or "jsonl"
            try:
                with fs.open(path, "rb", compression="infer") as fh:
                    yield from _parse(fh, fmt, lambda data: digest.update(data))
            except OSError as exc:
                raise WorkloadError(reasons.REASON_SOURCE_UNAVAILABLE, f"source {name}: cannot read {path}: {exc}") from exc
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


@dataclass(frozen=True)
class Columns:
    """A resolved field mapping: the columns (or nested paths) named for each part; None: detected."""

    question: str | None = None
    solution: tuple[str, ...] | None = None
    separator: str = SOLUTION_SEPARATOR
    answer: str | None = None
    system: str | None = None
    id: str | None = None

    @property
    def names_text(self) -> bool:
        """Whether the question or the chain comes from named columns (not from a detected conversation)."""
        return self.question is not None or self.solution is not None


def columns_of(default: FieldMapping | None, override: FieldMapping | None) -> Columns:
    """The spec's mapping, then the source's over it (a source naming solution or solutionParts replaces both)."""
    merged: dict[str, Any] = {}
    for mapping in (default, override):
        if mapping is None:
            continue
        values = mapping.model_dump(exclude_none=True)
        if "solution" in values or "solutionParts" in values:
            merged.pop("solution", None), merged.pop("solutionParts", None)
        merged.update(values)
    parts = merged.get("solutionParts") or ([merged["solution"]] if merged.get("solution") else None)
    return Columns(question=merged.get("question"), solution=tuple(parts) if parts else None,
                   separator=merged.get("separator", SOLUTION_SEPARATOR), answer=merged.get("answer"),
                   system=merged.get("system"), id=merged.get("id"))


@dataclass
class Conversation:
    """One row read as a conversation: the one reading of a row that curation and training share.

    `turns` are (role, text) pairs, role "user" or "assistant", from the row's first user turn on; a row of
    columns has two (the question, the chain) or one (no chain). `system` is the row's own system prompt.
    """

    turns: list[tuple[str, str]]
    system: str | None = None
    answer: str | None = None
    id: Any = None

    @property
    def question(self) -> str:
        return self.turns[0][1]

    @property
    def chain(self) -> str | None:
        """The first assistant turn after the question."""
        return next((text for role, text in self.turns[1:] if role == "assistant"), None)

    def messages(self, system_prompt: str | None) -> list[dict[str, str]]:
        """Chat messages: the row's system prompt, else `system_prompt` (none when empty), then the turns."""
        system = self.system if self.system is not None else system_prompt
        head = [{"role": "system", "content": system}] if system else []
        return head + [{"role": role, "content": text} for role, text in self.turns]


def row_to_problem(row: Any, columns: Columns, source: str, index: int) -> Problem:
    """Turn one raw row into a Problem or raise RowError(reason, detail)."""
    conversation = read_conversation(row, columns)
    question = normalize(conversation.question)
    if not question:
        raise RowError("empty-question", None)
    solution = normalize(conversation.chain) if conversation.chain else None
    answer = conversation.answer
    if answer is None and solution:
        answer = last_boxed(solution)
    row_id = conversation.id
    problem_id = f"{source}:{row_id if row_id not in (None, '') else index}"
    chains = [Chain(text=solution, answer=last_boxed(solution) or answer)] if solution else []
    system = normalize(conversation.system) if conversation.system is not None else None
    return Problem(id=problem_id, question=question, answer=answer, source=source, chains=chains, system=system)


def read_conversation(row: Any, columns: Columns = Columns()) -> Conversation:
    """The conversation of one raw row, from the named columns and else the detected layout (module docstring);
    RowError(reason, detail) for a row that holds none."""
    if isinstance(row, RowError):
        raise row
    if not isinstance(row, dict):
        raise RowError("not-an-object", type(row).__name__)
    if columns.names_text:
        turns = _named_turns(row, columns)
    else:
        turns = _reasoning_trace(row) or _chat_turns(row) or _column_turns(row)
    system = _named_text(row, columns.system, "system") if columns.system else _detected_system(row)
    answer = _answer(row, columns.answer)
    if answer is None and not columns.answer and not columns.names_text:
        answer = _reference_answer(row)
    row_id = _path_value(row, columns.id, "id") if columns.id else _first(row, ID_KEYS)
    return Conversation(turns=turns, system=system, answer=answer, id=row_id)


# ------------------------------------------------------------------------------------------ layouts

# The layouts read without a mapping, in the order they are tried (the README's table lists them).
QUESTION_KEYS = ("question", "problem", "prompt", "query", "instruction", "input")
SOLUTION_KEYS = ("solution", "response", "output", "completion", "reasoning")
ANSWER_KEYS = ("answer", "final_answer", "expected_answer", "gold", "target")
ID_KEYS = ("id", "unique_id", "uid", "uuid", "problem_id", "idx")
# s1K and s1K-1.1: a thinking trajectory and the attempt written after it make the chain; `solution` is the
# reference (often only the answer). The DeepSeek-R1 traces of s1K-1.1 come first, as s1.1 was trained on them.
TRACE_COLUMNS = (("deepseek_thinking_trajectory", "deepseek_attempt"), ("gemini_thinking_trajectory", "gemini_attempt"),
                 ("thinking_trajectories", "attempt"))
# ShareGPT (Sky-T1, Bespoke-Stratos, OpenThoughts) and OpenAI chat (NuminaMath-CoT, OpenR1-Math, plain chat)
CHAT_KEYS = (("conversations", "from", "value"), ("messages", "role", "content"))
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
         "system": "system"}
SHORT_REFERENCE = 64  # a reference solution this short on one line is the answer itself (s1K's "48")


def _reasoning_trace(row: dict) -> list[tuple[str, str]] | None:
    question = row.get("question")
    for trace, attempt in TRACE_COLUMNS:
        if trace in row and attempt in row and isinstance(question, str):
            parts = [_joined(row[trace], trace), _joined(row[attempt], attempt)]
            chain = SOLUTION_SEPARATOR.join(p for p in parts if p)
            return [("user", question), ("assistant", chain)] if chain else [("user", question)]
    return None


def _joined(value: Any, column: str) -> str | None:
    """A text column, or a list of texts (s1K's `thinking_trajectories`) joined."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return SOLUTION_SEPARATOR.join(value)
    raise RowError("wrong-type-solution", f"column {column} holds {type(value).__name__}")


def _chat_turns(row: dict) -> list[tuple[str, str]] | None:
    """The turns of a ShareGPT `conversations` or OpenAI `messages` list, from the first user turn on."""
    for key, role_key, text_key in CHAT_KEYS:
        turns = row.get(key)
        if not isinstance(turns, list):
            continue
        out: list[tuple[str, str]] = []
        for number, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise RowError(f"malformed-{key}", f"{key}[{number}] is not an object")
            role, text = ROLES.get(turn.get(role_key)), turn.get(text_key)
            if role is None:
                raise RowError(f"malformed-{key}", f"{key}[{number}].{role_key} is {turn.get(role_key)!r}, not one of "
                               f"{', '.join(ROLES)}")
            if not isinstance(text, str):
                raise RowError(f"malformed-{key}", f"{key}[{number}].{text_key} is {type(text).__name__}, not text")
            if role != "system" and (out or role == "user"):
                out.append((role, text))
        if out:
            return out
    return None


def _detected_system(row: dict) -> str | None:
    """A ShareGPT row's `system` column, or the system turn of its conversation."""
    if isinstance(row.get("system"), str):
        return row["system"]
    for key, role_key, text_key in CHAT_KEYS:
        turns = row.get(key)
        if isinstance(turns, list):
            return next((t.get(text_key) for t in turns if isinstance(t, dict) and t.get(role_key) == "system"
                         and isinstance(t.get(text_key), str)), None)
    return None


def _column_question(row: dict, looked_for: tuple[str, ...]) -> str:
    question = _first(row, QUESTION_KEYS)
    if question is None:
        raise RowError("missing-question", f"looked for {', '.join(looked_for)}; the row has {_columns(row)}")
    if not isinstance(question, str):
        raise RowError("wrong-type-question", type(question).__name__)
    return question


def _column_turns(row: dict) -> list[tuple[str, str]]:
    question = _column_question(row, QUESTION_KEYS + tuple(key for key, _, _ in CHAT_KEYS))
    solution = _first(row, SOLUTION_KEYS)
    if solution is not None and not isinstance(solution, str):
        raise RowError("wrong-type-solution", type(solution).__name__)
    return [("user", question), ("assistant", solution)] if solution else [("user", question)]


def _reference_answer(row: dict) -> str | None:
    """The answer of a reasoning-trace row (s1K): its reference `solution` when that is short, else its box."""
    if not any(t in row for t, _ in TRACE_COLUMNS) or not isinstance(row.get("solution"), str):
        return None
    reference = row["solution"].strip()
    boxed = last_boxed(reference)
    if boxed:
        return boxed
    return normalize(reference) if reference and len(reference) <= SHORT_REFERENCE and "\n" not in reference else None


# ------------------------------------------------------------------------------------ named columns


def _named_turns(row: dict, columns: Columns) -> list[tuple[str, str]]:
    question = _named_text(row, columns.question, "question") if columns.question else _column_question(row, QUESTION_KEYS)
    if question is None:
        raise RowError("missing-question", f"column {columns.question} (fields.question) is empty")
    parts = [_named_text(row, column, "solution") for column in columns.solution or ()]
    chain = columns.separator.join(p for p in parts if p)
    return [("user", question), ("assistant", chain)] if chain else [("user", question)]


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_PATH = re.compile(r"[^.\[\]]+(?:\[\d+\])*(?:\.[^.\[\]]+(?:\[\d+\])*)*")


def _path_value(row: dict, path: str, part: str) -> Any:
    """The value at a column or a nested path (`conversations[0].value`, `metadata.answer`); a column the row
    lacks drops it with RowError(missing-<part>) naming the column. A column whose name holds dots wins."""
    if path in row:
        return row[path]
    if _PATH.fullmatch(path):
        value: Any = row
        for key, position in _STEP.findall(path):
            if key and isinstance(value, dict) and key in value:
                value = value[key]
            elif position and isinstance(value, list) and int(position) < len(value):
                value = value[int(position)]
            else:
                break
        else:
            return value
    raise RowError(f"missing-{part}", f"column {path} (fields.{part}) is not in the row; the row has {_columns(row)}")


def _named_text(row: dict, path: str, part: str) -> str | None:
    value = _path_value(row, path, part)
    if part == "solution":
        return _joined(value, path)
    if value is not None and not isinstance(value, str):
        raise RowError(f"wrong-type-{part}", f"column {path} holds {type(value).__name__}")
    return value


def _columns(row: dict) -> str:
    names = list(row)
    return ", ".join(map(str, names[:12])) + (f" and {len(names) - 12} more" if len(names) > 12 else "") if names else "no columns"


def _first(row: dict, keys: Iterable[str]) -> Any:
    return next((row[k] for k in keys if k in row and row[k] is not None), None)


def _answer(row: dict, column: str | None) -> str | None:
    value = _path_value(row, column, "answer") if column else _first(row, ANSWER_KEYS)
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
