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


def test_a_rows_own_system_prompt_is_kept(tmp_path: Path) -> None:
    rows = [
        {"system": "Sky-T1's prompt.", "conversations": [{"from": "user", "value": "ShareGPT?"},
                                                          {"from": "assistant", "value": "\\boxed{1}"}]},
        {"conversations": [{"from": "system", "value": "A system turn."}, {"from": "human", "value": "Turn?"},
                           {"from": "gpt", "value": "\\boxed{2}"}]},
        {"messages": [{"role": "system", "content": "Chat's prompt."}, {"role": "user", "content": "Chat?"},
                      {"role": "assistant", "content": "\\boxed{3}"}]},
        {"question": "LIMO?", "solution": "\\boxed{4}"},
    ]
    problems, _, _ = load({"name": "s", "path": str(write_jsonl(tmp_path / "s.jsonl", rows))})
    assert [p.system for p in problems] == ["Sky-T1's prompt.", "A system turn.", "Chat's prompt.", None]
    assert [p.question for p in problems] == ["ShareGPT?", "Turn?", "Chat?", "LIMO?"]


def test_s1k_chain_is_the_trajectory_and_the_attempt(tmp_path: Path) -> None:
    s1k_11 = {"solution": "48", "question": "How many?", "cot_type": "math", "source_type": "x", "metadata": "{}",
              "gemini_thinking_trajectory": "G.", "gemini_attempt": "G: 1",
              "deepseek_thinking_trajectory": "Let me count.", "deepseek_attempt": "There are $\\boxed{48}$."}
    s1k_10 = {"solution": "Long reference\nwith lines, no box.", "question": "Sum?", "cot_type": "math",
              "thinking_trajectories": ["First.", "Second."], "attempt": "So \\boxed{7}.", "cot": None}
    problems, _, _ = load({"name": "s1k", "path": str(write_jsonl(tmp_path / "s1k.jsonl", [s1k_11, s1k_10]))})
    assert problems[0].chains[0].text == "Let me count.\n\nThere are $\\boxed{48}$." and problems[0].answer == "48"
    assert problems[1].chains[0].text == "First.\n\nSecond.\n\nSo \\boxed{7}." and problems[1].answer == "7"


def test_mapping_joins_columns_and_names_nested_fields(tmp_path: Path) -> None:
    row = {"conversations": [{"value": "Nested question?"}, {"value": "ignored"}], "think": "Hmm.", "final": "\\boxed{5}",
           "meta": {"gold": 5, "prompt": "Own prompt."}}
    path = write_jsonl(tmp_path / "n.jsonl", [row])
    problems, _, report = load({"name": "n", "path": str(path), "fields": {
        "question": "conversations[0].value", "solutionParts": ["think", "final"], "separator": "\n",
        "answer": "meta.gold", "system": "meta.prompt"}})
    assert report.dropped == 0
    assert (problems[0].question, problems[0].chains[0].text) == ("Nested question?", "Hmm.\n\\boxed{5}")
    assert (problems[0].answer, problems[0].system) == ("5", "Own prompt.")
    # a source's solution replaces the spec's solutionParts
    problems, _, _ = load({"name": "n", "path": str(path), "fields": {"solution": "final"}},
                          fields={"question": "conversations[0].value", "solutionParts": ["think", "final"]})
    assert problems[0].chains[0].text == "\\boxed{5}"


def test_a_named_column_the_row_lacks_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"question": "Q?", "worked": "w"}, {"question": "R?"}])
    problems, _, report = load({"name": "m", "path": str(path),
                                "fields": {"solutionParts": ["worked", "conversations[1].value"]}})
    assert problems == [] and report.reasons == {"missing-solution": 2}
    assert report.examples["missing-solution"] == ["m:0", "m:1"]
    assert report.details["missing-solution"] == ("column conversations[1].value (fields.solution) is not in the row;"
                                                   " the row has question, worked")
    assert "missing-solution: 2 (rows m:0, m:1): column conversations[1].value" in report.summary()


def test_missing_question_names_the_columns_looked_for(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"text": "x", "label": 1}] * 7)
    _, _, report = load({"name": "q", "path": str(path)})
    assert report.reasons == {"missing-question": 7}
    explained = report.explain("missing-question")
    assert explained.startswith("missing-question: 7 (rows q:0, q:1, q:2, q:3, q:4, ...): looked for question, problem,")
    assert explained.endswith("conversations, messages; the row has text, label")
    assert report.to_manifest()["dropExamples"]["missing-question"]["rows"] == ["q:0", "q:1", "q:2", "q:3", "q:4"]


def test_solution_and_solution_parts_exclude_each_other() -> None:
    with pytest.raises(ValueError, match="set at most one of solution and solutionParts"):
        FieldMapping.model_validate({"solution": "a", "solutionParts": ["b"]})


@pytest.mark.parametrize("path", ["turns[5].value", "turns.value", "meta[0]", "turns[x]", "meta..gold"])
def test_a_nested_path_that_leads_nowhere_is_a_missing_column(tmp_path: Path, path: str) -> None:
    rows = [{"turns": [{"value": "Q?"}], "meta": {"gold": 1}, "question": "Q?"}]
    problems, _, report = load({"name": "p", "path": str(write_jsonl(tmp_path / "p.jsonl", rows)), "fields": {"answer": path}})
    assert problems == [] and report.reasons == {"missing-answer": 1}
    assert report.details["missing-answer"].startswith(f"column {path} (fields.answer) is not in the row")
