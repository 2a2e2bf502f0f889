"""The benchmark registry, shared by EvalRun and by ReasoningDataset decontamination.

Each benchmark names where its problems live on the Hugging Face hub, how to read its rows (both the hub
layout and the layout of the LIMO evaluation files: ``problem`` or ``question``, float answers such as
``27.0``, OlympiadBench answers wrapped in ``$…$``), how to prompt for it, how to grade it (``math`` or
``choice``) and its published size (the LIMO protocol samples benchmarks under 50 problems).

Hub revisions are not pinned (``revision=None``): the commits could not be checked from where this
registry was written, so a run records the revision it asked for, and a user who needs a fixed copy
passes ``revision=`` (or a file: ``path=`` / ``REASONOPS_BENCHMARK_DIR``).

``demo`` is built in code (a dozen arithmetic word problems with integer answers): the offline demo and
the tests use it without any download. Code benchmarks (``kind="code"``, graded in the sandbox) are
defined in `reasonops.codebench`; `REGISTRY` below is built from both, here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from . import codebench
from .api import common as reasons
from .benchmark_types import CHOICE_PROMPT, BenchmarkDef, BenchmarkItem, HubSource, read_choice_row, read_gsm8k_row
from .errors import WorkloadError

BENCHMARK_DIR_ENV = "REASONOPS_BENCHMARK_DIR"
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def _from_2023(row: dict[str, Any]) -> bool:
    # AI-MO/aimo-validation-amc holds AMC 2022 and 2023; rows without a url (local files) are kept.
    return "2023" in str(row.get("url", "2023"))


MATH_BENCHMARKS: tuple[BenchmarkDef, ...] = (
    BenchmarkDef("aime24", "AIME 2024 I and II (30 problems)", HubSource("HuggingFaceH4/aime_2024", split="train"),
                 problems=30),
    BenchmarkDef("aime25", "AIME 2025 I and II (30 problems)", HubSource("yentinglin/aime_2025", split="train"),
                 problems=30),
    BenchmarkDef("amc23", "AMC 2023 (40 problems)", HubSource("AI-MO/aimo-validation-amc", split="train"),
                 problems=40, keep_row=_from_2023),
    BenchmarkDef("math500", "MATH-500 subset of MATH (500 problems)", HubSource("HuggingFaceH4/MATH-500"), problems=500),
    BenchmarkDef("olympiadbench", "OlympiadBench math, English, open-ended (675 problems)",
                 HubSource("Hothan/OlympiadBench", config="OE_TO_maths_en_COMP", split="train"), problems=675),
    BenchmarkDef("minerva-math", "Minerva undergraduate STEM math (272 problems)",
                 HubSource("math-ai/minervamath"), problems=272),
    BenchmarkDef("gsm8k", "GSM8K grade-school math, test split (1,319 problems)",
                 HubSource("openai/gsm8k", config="main"), read_row=read_gsm8k_row, problems=1319),
    BenchmarkDef("gpqa-diamond", "GPQA Diamond, 4-way multiple choice (198 problems; gated on the hub)",
                 HubSource("Idavidrein/gpqa", config="gpqa_diamond", split="train"),
                 kind="choice", prompt=CHOICE_PROMPT, read_row=read_choice_row, problems=198),
    BenchmarkDef("demo", "12 built-in arithmetic word problems (no download)", None),
)


# ------------------------------------------------------------------------------------------------
# The built-in demo benchmark
# ------------------------------------------------------------------------------------------------

_DEMO_TEMPLATES: tuple[tuple[str, Callable[[int, int], int]], ...] = (
    ("Alice has {a} apples and buys {b} more. How many apples does she have now?", lambda a, b: a + b),
    ("A box holds {a} pencils. How many pencils are in {b} boxes?", lambda a, b: a * b),
    ("Tom had {a} marbles and gave {b} of them away. How many marbles does he have left?", lambda a, b: a - b),
    ("A train travels {a} kilometres every hour. How far does it travel in {b} hours?", lambda a, b: a * b),
)


def demo_items() -> list[BenchmarkItem]:
    """Twelve deterministic word problems with integer answers."""
    items = []
    for i in range(12):
        template, solve = _DEMO_TEMPLATES[i % len(_DEMO_TEMPLATES)]
        a, b = 10 + 7 * i, 2 + i % 5
        items.append(BenchmarkItem(id=f"demo-{i}", question=template.format(a=a, b=b), answer=str(solve(a, b))))
    return items


# The registry: every benchmark by name, math and code.
REGISTRY: dict[str, BenchmarkDef] = {b.name: b for b in (*MATH_BENCHMARKS, *codebench.CODE_BENCHMARK_DEFS)}

# Benchmarks built in code, used when no file is given.
BUILT_IN: dict[str, Callable[[], list[BenchmarkItem]]] = {"demo": demo_items, "code-demo": codebench.demo_items}


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL, JSON (a list, or {"data": [...]}) or Parquet file."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
            return data["data"] if isinstance(data, dict) else data
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"{path}:{number}: not JSON: {exc}") from exc
        return rows
    except (OSError, ValueError, KeyError) as exc:
        raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"cannot read {path}: {exc}") from exc


def _file_in(directory: Path, name: str) -> Path | None:
    return next((directory / f"{name}{s}" for s in FILE_SUFFIXES if (directory / f"{name}{s}").is_file()), None)


def _load_hub(source: HubSource, revision: str | None, cache_dir: str | None) -> list[dict[str, Any]]:
    import datasets

    if source.data_files:
        at = f"@{revision or source.revision}" if revision or source.revision else ""
        files = [f"hf://datasets/{source.id}{at}/{name}" for name in source.data_files]
        return list(datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache_dir))
    dataset = datasets.load_dataset(
        source.id, source.config, split=source.split, revision=revision or source.revision, cache_dir=cache_dir
    )
    return list(dataset)


def benchmark_def(name: str) -> BenchmarkDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WorkloadError(reasons.REASON_UNKNOWN_BENCHMARK, f"no benchmark {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def load_benchmark(
    name: str,
    *,
    path: str | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
    limit: int | None = None,
    released_from: str | None = None,
    released_until: str | None = None,
) -> list[BenchmarkItem]:
    """The problems of a benchmark, in their published order (the first `limit` of them), released inside
    [released_from, released_until] (ISO dates, inclusive) when a bound is given.

    Looked up in order: `path` (a file, or a directory holding <name>.jsonl/.json/.parquet), the directory
    in $REASONOPS_BENCHMARK_DIR, the built-in demo, then the hub (through `datasets`, which honours
    HF_HUB_OFFLINE and the cache in `cache_dir`).
    """
    return load_benchmark_with_source(name, path=path, cache_dir=cache_dir, revision=revision, limit=limit,
                                      released_from=released_from, released_until=released_until)[0]


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def items_hash(items: list[BenchmarkItem]) -> str:
    """A hash of the problems as evaluated (ids, questions, answers, choices)."""
    return _sha256(json.dumps([[i.id, i.question, i.answer, list(i.choices or ())] for i in items]).encode())


def load_benchmark_with_source(
    name: str,
    *,
    path: str | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
    limit: int | None = None,
    released_from: str | None = None,
    released_until: str | None = None,
) -> tuple[list[BenchmarkItem], dict[str, Any]]:
    """`load_benchmark`, and where the problems came from: {"source", "contentHash", "itemsHash", ...}.

    contentHash is the sha256 of the file read (for the hub: of its rows as JSON, with the dataset's
    fingerprint beside it); itemsHash that of the problems after `limit`.
    """
    definition = benchmark_def(name)
    looked: list[str] = []
    rows: list[dict[str, Any]] | None = None
    source: dict[str, Any] = {}
    file: Path | None = None
    if path:
        candidate = Path(path)
        file = _file_in(candidate, name) if candidate.is_dir() else candidate if candidate.is_file() else None
        if file is None:
            raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"{name}: no file at {path} (nor {name}.jsonl/.json/.parquet in it)")
        rows = read_rows(file)
    elif os.environ.get(BENCHMARK_DIR_ENV):
        directory = Path(os.environ[BENCHMARK_DIR_ENV])
        looked.append(f"{directory}/{name}.jsonl|.json|.parquet (${BENCHMARK_DIR_ENV})")
        file = _file_in(directory, name)
        rows = read_rows(file) if file else None
    if rows is not None and file is not None:
        source = {"source": str(file), "contentHash": _file_hash(file)}
    if rows is None and name in BUILT_IN:
        every = BUILT_IN[name]()
        items = every
        source = {"source": "built-in", "contentHash": items_hash(every)}
    else:
        if rows is None:
            rows = _hub_rows(definition, revision, cache_dir, looked)
            hub = definition.hub
            assert hub is not None
            source = {
                "source": f"hub:{hub.id}" + (f"/{hub.config}" if hub.config else "") + f":{hub.split}",
                "revision": revision or hub.revision,
                "contentHash": _sha256(json.dumps(rows, sort_keys=True, default=str).encode()),
            }
        items = _unique_ids([definition.read_row(row, i) for i, row in enumerate(r for r in rows if definition.keep_row(r))])
        if not items:
            raise WorkloadError(reasons.REASON_BENCHMARK_UNAVAILABLE, f"{name}: no problems found ({'; '.join(looked) or path})")
    if released_from or released_until:
        items = codebench.in_window(items, released_from, released_until, name)
        source["releaseWindow"] = {"from": released_from, "until": released_until}
    items = items[:limit] if limit else items
    return items, {**source, "itemsHash": items_hash(items)}


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _unique_ids(items: list[BenchmarkItem]) -> list[BenchmarkItem]:
    """Items with distinct ids: a repeated id gets its position appended (results are keyed by id)."""
    seen: set[str] = set()
    out = []
    for index, item in enumerate(items):
        if item.id in seen:
            item = dataclasses.replace(item, id=f"{item.id}-{index}")
        seen.add(item.id)
        out.append(item)
    return out


def _hub_rows(definition: BenchmarkDef, revision: str | None, cache_dir: str | None, looked: list[str]) -> list[dict[str, Any]]:
    assert definition.hub is not None  # only the built-in demo has no hub source
    hub = definition.hub
    looked.append(f"hub {hub.id} (config {hub.config}, split {hub.split}, revision {revision or hub.revision or 'latest'})")
    try:
        return _load_hub(hub, revision, cache_dir)
    except Exception as exc:  # datasets raises many types: offline, gated, missing, network
        raise WorkloadError(
            reasons.REASON_BENCHMARK_UNAVAILABLE,
            f"{definition.name}: looked at {'; '.join(looked)}: {type(exc).__name__}: {exc}"[:1000]
            + f". Mount the file and set path (or ${BENCHMARK_DIR_ENV}), or make the hub reachable.",
        ) from exc
