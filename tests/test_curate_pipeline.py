"""The whole model-free recipe on the bundled demo pool: output files, manifest, atomic writes, failures."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from reasonops.api.v1alpha1 import LIMO_SYSTEM_PROMPT, ReasoningDatasetSpec
from reasonops.contract import read_document
from reasonops.curate import CurateConfig, config_from_resource, main, run_resource
from reasonops.curate import output as output_module
from reasonops.errors import WorkloadError
from reasonops.progress import Reporter

# A pool with exact and near duplicates and copies of the demo benchmark's problems (the shipped demo pool
# is tuned for the demo's training instead).
DEMO_POOL = Path(__file__).resolve().parent / "data" / "curate_pool.jsonl"
PERTURBATIONS = ["shuffleSteps", "deleteSteps", "insertSteps", "wrongAnswer", "removeKeywords", "corruptDigits"]


def spec(**overrides: object) -> dict:
    base = {
        "sources": [{"name": "demo", "path": str(DEMO_POOL)}],
        "stages": [
            {"name": "dedupe", "dedupe": {}},
            {"name": "decontaminate", "decontaminate": {"benchmarks": ["demo"]}},
            {"name": "score", "score": {}},
            {"name": "top", "select": {"size": 30}},
        ],
        "output": {"path": "/unused"},
    }
    return {**base, **overrides}


def run(out: Path | str, **overrides: object) -> dict:
    return main(CurateConfig(spec=ReasoningDatasetSpec.model_validate(spec(**overrides)), output=str(out), progress=False))


def test_demo_pool_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo" / "rev1"
    result = run(out, perturbations=[{"name": p.lower(), "type": p} for p in PERTURBATIONS])
    counts = {c["stage"]: (c["kept"], c["dropped"]) for c in result["stageCounts"]}
    assert counts == {"load": (61, 0), "dedupe": (54, 7), "decontaminate": (50, 4), "score": (50, 0),
                      "top": (30, 20), "output": (30, 0)}
    assert result["samples"] == 30 and result["location"] == str(out)
    assert len(json.dumps(result)) < 3000

    data = (out / "data.jsonl").read_bytes()
    assert result["contentHash"] == hashlib.sha256(data).hexdigest()
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    assert rows[0]["messages"][0]["content"] == LIMO_SYSTEM_PROMPT
    assert set(rows[0]) == {"id", "messages", "answer", "source", "teacher", "score", "solveRate"}
    assert all("\\boxed{" in r["messages"][2]["content"] for r in rows)
    drops = [json.loads(line) for line in (out / "dropped.jsonl").read_text().splitlines()]
    unselected = [float(d["detail"].split()[-1]) for d in drops if d["reason"] == "not-selected"]
    assert len(unselected) == 20 and min(r["score"] for r in rows) >= max(unselected)  # the top 30 by score

    import pyarrow.parquet as pq

    assert pq.read_table(out / "data.parquet").to_pylist() == rows

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["revision"] == manifest["contentHash"] == result["contentHash"]
    dedupe = next(s for s in manifest["stages"] if s["stage"] == "dedupe")
    assert dedupe["reasons"] == {"exact-duplicate": 4, "near-duplicate": 3}
    assert manifest["sources"][0]["revision"].startswith("sha256:")
    assert manifest["teachers"] == {"(source solution)": 30}
    assert manifest["tokenLengths"]["method"].startswith("estimate") and manifest["tokenLengths"]["assistant"]["count"] == 30
    assert manifest["config"]["stages"][0]["name"] == "dedupe"
    report = (out / "report.md").read_text()
    assert "demo:demo-0" in report and "```" in report  # benchmark overlap and the length histogram
    assert json.loads((out / "_COMPLETE").read_text())["files"]["data.jsonl"] == result["contentHash"]

    for p in PERTURBATIONS:
        variant = out / "variants" / p.lower()
        variant_rows = [json.loads(line) for line in (variant / "data.jsonl").read_text().splitlines()]
        assert [r["id"] for r in variant_rows] == [r["id"] for r in rows]
        assert json.loads((variant / "manifest.json").read_text())["perturbation"]["type"] == p
    changed = {v["type"]: v["changed"] for v in manifest["variants"]}
    assert all(changed[p] > 0 for p in PERTURBATIONS), changed


def test_rerun_is_deterministic_and_replaces_atomically(tmp_path: Path) -> None:
    out = tmp_path / "rev"
    first = run(out)
    second = run(out)
    assert first["contentHash"] == second["contentHash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rev"]  # no temporary or old siblings left


def test_a_crash_while_writing_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "rev"

    def crash(self: object, rows: list) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(output_module.RowsWriter, "write", crash)
    with pytest.raises(OSError):
        run(out)
    real_open = open
    calls = {"n": 0}

    def failing_open(path, *args, **kwargs):  # fail the third file written into the temporary directory
        if ".tmp-" in str(path):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError("disk full")
        return real_open(path, *args, **kwargs)

    monkeypatch.undo()
    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(WorkloadError) as err:
        run(out)
    assert err.value.reason == "OutputUnwritable"
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor a temporary directory


def test_object_store_output_writes_the_marker_last(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file("memory://bucket/ds/rev/_COMPLETE", b"stale")
    written: list[str] = []
    pipe, put = fs.pipe_file, fs.put_file

    def record_pipe(path: str, data: bytes, **kwargs: object) -> None:
        written.append(path.rsplit("/", 1)[-1])
        pipe(path, data, **kwargs)

    def record_put(local: str, path: str, **kwargs: object) -> None:  # large files are copied, not held in memory
        written.append(path.rsplit("/", 1)[-1])
        put(local, path, **kwargs)

    fs.pipe_file, fs.put_file = record_pipe, record_put  # type: ignore[method-assign]  # a cached singleton
    try:
        result = run("memory://bucket/ds/rev")
    finally:
        del fs.pipe_file, fs.put_file
    assert written[-1] == "_COMPLETE" and "data.jsonl" in written
    assert result["location"] == "memory://bucket/ds/rev"
    assert fs.cat_file("memory://bucket/ds/rev/_COMPLETE") != b"stale"


def test_unwritable_output_fails_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(WorkloadError) as err:
        run(blocker / "ds" / "rev", sources=[{"name": "missing", "path": "/nonexistent.jsonl"}])
    assert err.value.reason == "OutputUnwritable"  # checked before the (missing) source is touched


def test_empty_result_is_an_error_not_an_empty_dataset(tmp_path: Path) -> None:
    out = tmp_path / "rev"
    pool = tmp_path / "pool.jsonl"
    pool.write_text(json.dumps({"question": "Alice has 10 apples and buys 2 more. How many apples does she have now?",
                                "solution": "\\boxed{12}"}) + "\n")
    with pytest.raises(WorkloadError) as err:
        run(out, sources=[{"name": "p", "path": str(pool)}])
    assert err.value.reason == "EmptyDataset" and "decontaminate" in err.value.message
    assert not out.exists()
    failed = tmp_path / "rev-failed"
    assert str(failed) in err.value.message
    drops = [json.loads(line) for line in (failed / "dropped.jsonl").read_text().splitlines()]
    assert [(d["stage"], d["reason"]) for d in drops] == [("decontaminate", "contaminated")]
    failure = json.loads((failed / "failure.json").read_text())
    assert failure["error"]["reason"] == "EmptyDataset" and failure["sources"][0]["rows"] == 1
    assert [s["stage"] for s in failure["stages"]] == ["load", "dedupe", "decontaminate"]
    assert "contaminated 1" in (failed / "report.md").read_text()


def test_report_says_what_each_source_contributed(tmp_path: Path) -> None:
    inline = [{"question": f"Inline question number {w} about apples?", "solution": f"So \\boxed{{{i}}}"}
              for i, w in enumerate(["one", "two", "three"])]
    result = run(tmp_path / "rev", sources=[{"name": "demo", "path": str(DEMO_POOL)}, {"name": "extra", "inline": inline}],
                 stages=[{"name": "dedupe", "dedupe": {}}])
    manifest = json.loads((tmp_path / "rev" / "manifest.json").read_text())
    by_source = {s["name"]: (s["rows"], s["samples"]) for s in manifest["sources"]}
    assert by_source == {"demo": (61, 54), "extra": (3, 3)} and result["samples"] == 57
    assert "| extra | inline | inline |" in (tmp_path / "rev" / "report.md").read_text()


def test_problems_without_solutions_are_dropped_at_output(tmp_path: Path) -> None:
    result = run(tmp_path / "rev", stages=[], sources=[{"name": "i", "inline": [
        {"question": "With a solution?", "solution": "Yes: \\boxed{1}"}, {"question": "Without one?"}]}])
    assert result["stageCounts"][-1] == {"stage": "output", "kept": 1, "dropped": 1}


def test_run_resource_reads_the_operator_document(tmp_path: Path) -> None:
    doc = {"apiVersion": "reasonops.io/v1alpha1", "kind": "ReasoningDataset",
           "metadata": {"name": "limo-demo", "namespace": "team", "uid": "u"},
           "spec": spec(systemPrompt="Think."), "revision": "3f9c0a1b2c3d", "output": str(tmp_path / "rev"),
           "outputLocation": str(tmp_path / "rev"), "context": {"endpoints": {"my-eval": "http://eval:8000/v1"}}}
    doc = read_document(doc)
    config = config_from_resource(doc)
    assert (config.name, config.revision, config.endpoints) == ("limo-demo", "3f9c0a1b2c3d", {"my-eval": "http://eval:8000/v1"})
    result = run_resource(doc, Reporter(min_interval=0))
    manifest = json.loads((tmp_path / "rev" / "manifest.json").read_text())
    assert manifest["resourceRevision"] == "3f9c0a1b2c3d" and manifest["name"] == "limo-demo"
    assert manifest["systemPrompt"] == "Think." and result["samples"] == 30
