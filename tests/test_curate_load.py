"""Loading problem pools: layouts, normalisation, malformed rows, unreachable sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasonops.api.v1alpha1 import DataSource, FieldMapping
from reasonops.curate.loaders import load_sources
from reasonops.curate.records import StageReport
from reasonops.curate.text import normalize
from reasonops.errors import WorkloadError


def load(*sources: dict, fields: dict | None = None):
    report = StageReport("load", "load")
    problems, infos = load_sources([DataSource.model_validate(s) for s in sources],
                                   FieldMapping.model_validate(fields) if fields else None, report)
    return problems, infos, report


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_common_layouts_are_detected(tmp_path: Path) -> None:
    rows = [
        {"question": "LIMO question?", "solution": "So \\boxed{4}.", "answer": "4"},
        {"problem": "MATH problem?", "solution": "Hence $\\boxed{\\frac{1}{2}}$.", "unique_id": "test/algebra/1.json"},
        {"system": "be brief", "conversations": [{"from": "human", "value": "ShareGPT question?"},
                                                 {"from": "gpt", "value": "It is \\boxed{7}."}]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "OpenAI question?"},
                      {"role": "assistant", "content": "Answer: \\boxed{9}"}]},
    ]
    problems, infos, report = load({"name": "mix", "path": str(write_jsonl(tmp_path / "mix.jsonl", rows))})
    assert [p.question for p in problems] == ["LIMO question?", "MATH problem?", "ShareGPT question?", "OpenAI question?"]
    assert [p.answer for p in problems] == ["4", "\\frac{1}{2}", "7", "9"]  # answers from the last \boxed{}
    assert problems[1].id == "mix:test/algebra/1.json" and problems[0].id == "mix:0"
    assert problems[2].chains[0].text == "It is \\boxed{7}." and problems[2].chains[0].teacher is None
    assert report.kept == 4 and report.dropped == 0
    assert infos[0].revision.startswith("sha256:") and infos[0].rows == 4


def test_field_mapping_from_spec_and_source(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "custom.jsonl", [{"q": "Custom?", "worked": "Done: \\boxed{3}", "gold": "3", "key": "k1"}])
    problems, _, _ = load({"name": "c", "path": str(path), "fields": {"id": "key"}},
                          fields={"question": "q", "solution": "worked", "answer": "gold"})
    assert (problems[0].id, problems[0].question, problems[0].answer) == ("c:k1", "Custom?", "3")
    assert problems[0].chains[0].text == "Done: \\boxed{3}"


def test_normalisation_keeps_latex_meaning_and_lines() -> None:
    assert normalize("x² + ½ of ℝ") == "x^{2} + \\frac{1}{2} of \\mathbb{R}"
    assert normalize("ｆｕｌｌ　ｗｉｄｔｈ\u200b") == "full width"  # NFKC and invisible characters
    assert normalize("  a \t b \r\n\n\n\n c  ") == "a b\n\nc"
    assert normalize("step 1\nstep 2") == "step 1\nstep 2"


def test_malformed_rows_are_dropped_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"question": "Fine?", "answer": "1"})
    lines = [
        good,
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"solution": "no question"}),
        json.dumps({"question": "   "}),
        json.dumps({"question": 42}),
        json.dumps({"question": "Q?", "answer": {"x": 1}}),
        json.dumps({"conversations": [{"from": "human", "value": ["list"]}]}),
        "",
    ]
    path.write_bytes("\n".join(lines).encode() + b"\n" + b'{"question": "bad \xff byte"}\n')
    problems, _, report = load({"name": "bad", "path": str(path)})
    assert [p.question for p in problems] == ["Fine?"]
    assert report.reasons == {
        "invalid-json": 1, "not-an-object": 1, "missing-question": 1, "empty-question": 1,
        "wrong-type-question": 1, "wrong-type-answer": 1, "malformed-conversations": 1, "invalid-utf8": 1,
    }
    assert report.input == 9 and report.kept == 1


def test_invalid_utf8_in_a_json_file_drops_only_that_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_bytes(b'[{"question": "ok?"}, {"question": "bad \xc3\x28"}]')
    problems, _, report = load({"name": "j", "path": str(path)})
    assert [p.question for p in problems] == ["ok?"] and report.reasons == {"invalid-utf8": 1}


def test_directories_parquet_json_and_limit(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = tmp_path / "pool"
    (pool / "sub").mkdir(parents=True)
    write_jsonl(pool / "a.jsonl", [{"question": f"A{i}?"} for i in range(3)])
    pq.write_table(pa.Table.from_pylist([{"problem": "P?", "answer": 27.0}]), pool / "sub" / "b.parquet")
    (pool / "c.json").write_text(json.dumps({"data": [{"question": "J?"}]}))
    (pool / "notes.txt").write_text("ignored")
    problems, infos, _ = load({"name": "dir", "path": str(pool)})
    assert sorted(p.question for p in problems) == ["A0?", "A1?", "A2?", "J?", "P?"]
    assert next(p for p in problems if p.question == "P?").answer == "27"  # AMC-style float
    assert len(infos[0].files) == 3
    limited, _, _ = load({"name": "dir", "path": str(pool / "a.jsonl"), "limit": 2})
    assert len(limited) == 2


def test_fsspec_uri_and_inline_rows() -> None:
    import fsspec

    with fsspec.open("memory://pools/remote.jsonl", "w") as fh:
        fh.write(json.dumps({"question": "Remote?", "solution": "\\boxed{5}"}) + "\n")
    problems, infos, _ = load({"name": "remote", "uri": "memory://pools/remote.jsonl"},
                              {"name": "inline", "inline": [{"question": "Inline?", "answer": "2"}]})
    assert [(p.source, p.question, p.answer) for p in problems] == [("remote", "Remote?", "5"), ("inline", "Inline?", "2")]
    assert [i.kind for i in infos] == ["uri", "inline"]


def test_hub_source_through_datasets(tmp_path: Path) -> None:
    # a local dataset directory exercises the same datasets.load_dataset call a hub id does, offline
    write_jsonl(tmp_path / "train.jsonl", [{"problem": "Hub?", "solution": "\\boxed{1}"}])
    problems, infos, _ = load({"name": "hub", "hub": {"id": str(tmp_path), "split": "train"}})
    assert problems[0].question == "Hub?" and infos[0].revision == "unpinned"


@pytest.mark.parametrize("source", [
    {"name": "missing", "path": "/nonexistent/pool.jsonl"},
    {"name": "missing", "uri": "memory://nowhere/pool.jsonl"},
    {"name": "missing", "hub": {"id": "/nonexistent/hub-dataset"}},
])
def test_unreachable_source_fails_fast(source: dict) -> None:
    with pytest.raises(WorkloadError) as err:
        load(source)
    assert err.value.reason == "SourceUnavailable" and "missing" in err.value.message


def test_duplicate_ids_are_made_unique(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ids.jsonl", [{"id": 1, "question": "A?"}, {"id": 1, "question": "B?"}])
    problems, _, _ = load({"name": "s", "path": str(path)})
    assert len({p.id for p in problems}) == 2
