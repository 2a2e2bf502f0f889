"""The operator→pod contract: one owner for each decision both sides make (no cluster)."""

from __future__ import annotations

import json

import pytest

from reasonops import contract
from reasonops.api.common import Location
from reasonops.api.v1alpha1 import EvalRun, FineTuneJob, ReasoningDataset


def _eval(**spec) -> EvalRun:
    base = {"model": {"fineTuneJob": "ft"}, "benchmarks": [{"name": "math500"}]}
    return EvalRun.model_validate({"metadata": {"name": "ev", "namespace": "team"}, "spec": {**base, **spec}})


def test_locations_translate_to_pod_paths_and_back():
    loc = Location.model_validate({"volume": {"claimName": "data", "path": "sets/"}})
    s = contract.location_string(loc, "limo", "abc")
    assert s == "pvc://data/sets/limo/abc"
    assert contract.pod_path(s) == "/mnt/pvc/data/sets/limo/abc" and contract.claim_of(s) == "data"
    assert contract.canonical(contract.pod_path(s)) == s
    assert contract.pod_path(s, "/home/me/out/volumes") == "/home/me/out/volumes/data/sets/limo/abc"
    assert contract.location_string(Location(uri="s3://bucket/p/"), "n", "r") == "s3://bucket/p/n/r"
    assert contract.claims_of(["pvc://b/x", "s3://x", None, "/p", "pvc://a/y", "pvc://b/z"]) == ["a", "b"]


def test_revision_ignores_how_a_run_is_scheduled_and_judged_but_not_what_it_produces():
    spec = {"sources": [{"name": "a", "path": "/x"}], "output": {"path": "/o"}}
    rev = contract.revision_of("ReasoningDataset", spec)
    assert rev == contract.revision_of("ReasoningDataset", {**spec, "suspend": True, "resources": {"gpus": 8}})
    assert rev != contract.revision_of("ReasoningDataset", {**spec, "stages": [{"name": "s", "select": {"size": 5}}]})
    assert contract.revision_of("FineTuneJob", spec, {"dataset": "r1"}) != contract.revision_of("FineTuneJob", spec, {"dataset": "r2"})
    ev = {"model": {"fineTuneJob": "ft"}, "benchmarks": [{"name": "aime24"}]}
    gated = {**ev, "gates": [{"benchmark": "aime24", "minScore": "0.5"}], "concurrency": 8, "serving": {"replicas": 2}, "parallelism": 2}
    # A gate, concurrency, serving or parallelism edit re-judges, re-serves or resizes; it does not re-run the benchmark.
    assert contract.revision_of("EvalRun", ev, {"model": "m"}) == contract.revision_of("EvalRun", gated, {"model": "m"})
    assert contract.revision_of("EvalRun", ev, {"model": "m"}) != contract.revision_of("EvalRun", {**ev, "protocol": "skythought"}, {"model": "m"})


def test_eval_output_is_the_specs_output_else_next_to_the_finetuned_model():
    model = "pvc://models/runs/ft/r1/model"
    assert contract.eval_output(_eval(), "e1", model) == "pvc://models/runs/ft/r1/evals/ev/e1"
    assert contract.eval_output(_eval(output={"uri": "s3://b/evals"}), "e1", model) == "s3://b/evals/ev/e1"
    endpoint = EvalRun.model_validate({"metadata": {"name": "ev"}, "spec": {
        "model": {"endpoint": {"url": "http://x/v1"}}, "benchmarks": [{"name": "math500"}], "output": {"path": "/r"}}})
    assert contract.eval_output(endpoint, "e1") == "/r/ev/e1"


def test_the_api_requires_an_output_when_no_default_applies():
    with pytest.raises(Exception, match="output is required"):
        EvalRun.model_validate({"metadata": {"name": "ev"}, "spec": {
            "model": {"endpoint": {"url": "http://x/v1"}}, "benchmarks": [{"name": "math500"}]}})


def test_gpu_counts_are_decided_once():
    ft = FineTuneJob.model_validate({"metadata": {"name": "f"}, "spec": {
        "baseModel": {"name": "m"}, "dataset": {"path": "/d"}, "output": {"path": "/o"}, "gpusPerNode": 0}})
    assert contract.training_world(ft.spec, 8) == (1, 0, 1)  # CPU: one process (the API refuses several nodes without GPUs)
    ft2 = ft.model_copy(update={"spec": ft.spec.model_copy(update={"gpusPerNode": None, "numNodes": 2})})
    assert contract.training_world(ft2.spec, 8) == (2, 8, 8)
    assert contract.eval_job_gpus(_eval().spec) == 0  # through the server: an HTTP client needs no GPU
    assert contract.eval_job_gpus(_eval(backend="offline", serving={"tensorParallelSize": 2}).spec) == 2
    assert contract.eval_job_gpus(_eval(resources={"gpus": 1}).spec) == 1
    assert contract.eval_job_gpus(_eval(backend="offline", serving={"engine": "cpu"}).spec) == 0


def test_offline_and_endpoint_evaluations_need_no_server():
    assert contract.serving_enabled(_eval().spec)
    assert not contract.serving_enabled(_eval(backend="offline").spec)
    assert not contract.serving_enabled(_eval(serving={"enabled": False}, model={"endpoint": {"url": "http://x/v1"}}, output={"path": "/r"}).spec)


@pytest.mark.parametrize("env, reports", [
    ({}, True), ({"RANK": "0"}, True), ({"RANK": "3", "NODE_RANK": "0"}, False),
    ({"NODE_RANK": "1"}, False), ({"NODE_RANK": "0", "WORLD_SIZE": "16"}, True),
    ({"JOB_COMPLETION_INDEX": "2"}, False), ({"JOB_COMPLETION_INDEX": "2", contract.Env.CHECKPOINTS: "3"}, True),
])
def test_only_the_first_process_reports(env, reports):
    assert contract.is_reporting_process(env) is reports


def test_documents_round_trip_and_translate_locations_for_the_pod():
    ds = ReasoningDataset.model_validate({"metadata": {"name": "d", "namespace": "team", "uid": "u"}, "spec": {
        "sources": [{"name": "p", "path": "/x"}], "output": {"volume": {"claimName": "data"}}}})
    doc = contract.build_document(ds, revision="r1", output=contract.dataset_output(ds, "r1"),
                           context=contract.WorkloadContext(endpoints={"srv": "http://s/v1"}))
    assert doc.output == "/mnt/pvc/data/d/r1" and doc.outputLocation == "pvc://data/d/r1"
    again = contract.read_document(doc.to_json())
    assert again == doc and isinstance(again.resource(), ReasoningDataset)
    with pytest.raises(contract.InvalidDocument, match="spec.sources"):
        contract.read_document({**doc.as_dict(), "spec": {"output": {"path": "/o"}}})
    with pytest.raises(contract.InvalidDocument, match="unexpected|Extra"):
        contract.read_document({**doc.as_dict(), "surprise": 1})
    for broken, problem in ((b"[1]", "JSON object"), ("{", "not JSON"), ({**doc.as_dict(), "kind": "Pod"}, "'Pod' is not one of"),
                            ({**doc.as_dict(), "spec": "x"}, "spec")):
        with pytest.raises(contract.InvalidDocument, match=problem):
            contract.read_document(broken)


def test_the_document_carries_the_typed_spec_on_the_wire_as_written():
    """The pod reads a typed spec with the API's static defaults (validated once, on reading), and the wire form is
    the spec's: a document written by hand, without the defaults, reads as the operator's own."""
    from reasonops.api import v1alpha1 as api

    ev = _eval()
    doc = contract.build_document(ev, revision="e1", output="/o/ev/e1")
    wire = json.loads(doc.to_json())
    assert wire["spec"] == doc.spec.to_wire() and wire["spec"]["serving"]["tensorParallelSize"] == api.TENSOR_PARALLEL_SIZE
    written = {**wire, "spec": ev.spec.to_wire()}  # no defaults filled
    assert "serving" not in written["spec"]
    read = contract.read_document(json.dumps(written))
    assert isinstance(read.spec, api.EvalRunSpec) and read == doc and read.resource().spec is read.spec
    with pytest.raises(ValueError, match="spec of a FineTuneJob document is a EvalRunSpec"):
        contract.WorkloadDocument.model_validate({**wire, "kind": "FineTuneJob", "spec": read.spec})


def test_the_pod_gets_the_spec_with_the_apis_static_defaults_filled_in():
    """One owner for each default: the API's. The pod reads the values the operator decided with."""
    from reasonops.api import v1alpha1 as api

    ft = FineTuneJob.model_validate({"metadata": {"name": "ft", "namespace": "team"}, "spec": {
        "baseModel": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "dataset": {"path": "/d"},
        "output": {"path": "/o"}}})
    assert ft.spec.numNodes is None  # what the user wrote
    spec = contract.build_document(ft, revision="r1", output="/o/ft/r1").spec
    assert isinstance(spec, api.FineTuneJobSpec)
    assert spec.numNodes == api.NUM_NODES and spec.deepspeed.zeroStage == api.ZERO_STAGE
    assert spec.hyperparameters.seed == api.TRAINING_SEED
    assert spec.hyperparameters.learningRate is None  # the preset's to decide: no static default
    ev = _eval()
    assert contract.build_document(ev, revision="r1", output="/o/ev/r1").spec.serving.tensorParallelSize == api.TENSOR_PARALLEL_SIZE
    assert ft.spec.numNodes is None  # the resource itself is unchanged (its revision is of the spec as written)


def test_results_always_fit_the_termination_message_as_valid_json():
    small = {"samples": 3, "location": "/x"}
    assert json.loads(contract.encode_result(small)) == small
    big = {"results": [{"benchmark": f"b{i}", "score": "0.5", "problems": 500} for i in range(32)],
           "accuracy": 0.5, "provenance": {"x": "y" * 5000}}
    text = contract.encode_result(big)
    assert len(text.encode()) <= contract.TERMINATION_LIMIT
    value = json.loads(text)
    assert value["truncated"] is True and "provenance" not in value and len(value["results"]) == 32
    huge = {"results": [{"benchmark": f"b{i}", "score": "0.5", "detail": "z" * 400} for i in range(32)]}
    value = json.loads(contract.encode_result(huge))
    assert 1 <= len(value["results"]) < 32
    error = {"error": {"reason": "Crashed", "message": "é" * 10000}}
    value = json.loads(contract.encode_result(error))
    assert value["error"]["reason"] == "Crashed" and len(contract.encode_result(error).encode()) <= contract.TERMINATION_LIMIT


def test_secret_env_names_follow_one_rule():
    assert contract.api_key_env("openai", "api-key") == "REASONOPS_API_KEY_OPENAI_API_KEY"


def test_the_pod_reads_every_volume_location_as_a_path():
    ds = {"sources": [{"name": "a", "uri": "pvc://pools/a.jsonl"}, {"name": "b", "uri": "s3://x/b.jsonl"}],
          "stages": [{"name": "dc", "decontaminate": {"benchmarks": ["aime24"], "benchmarkPath": "pvc://bench/math"}}],
          "output": {"path": "/o"}}
    out = contract.spec_for_pod("ReasoningDataset", ds)
    assert out["sources"][0] == {"name": "a", "path": "/mnt/pvc/pools/a.jsonl"} and out["sources"][1]["uri"] == "s3://x/b.jsonl"
    assert out["stages"][0]["decontaminate"]["benchmarkPath"] == "/mnt/pvc/bench/math"
    assert ds["sources"][0]["uri"] == "pvc://pools/a.jsonl"  # the spec itself is untouched
    ReasoningDataset.model_validate({"metadata": {"name": "d"}, "spec": out})  # still a valid spec
    ft = {"baseModel": {"name": "qwen-7b", "volume": {"volume": {"claimName": "weights", "path": "hub"}}},
          "dataset": {"path": "/d"}, "output": {"path": "/o"}}
    assert contract.spec_for_pod("FineTuneJob", ft)["baseModel"] == {"name": "/mnt/pvc/weights/hub/qwen-7b"}
    ev = {"model": {"fineTuneJob": "f"}, "benchmarks": [{"name": "aime24", "path": "pvc://bench/aime24.jsonl"}]}
    assert contract.spec_for_pod("EvalRun", ev, "/tmp/v")["benchmarks"][0]["path"] == "/tmp/v/bench/aime24.jsonl"


def test_locations_a_pod_reports_map_back_to_canonical_form():
    ds = ReasoningDataset.model_validate({"metadata": {"name": "d", "namespace": "team"}, "spec": {
        "sources": [{"name": "p", "path": "/x"}], "output": {"volume": {"claimName": "data"}}}})
    doc = contract.build_document(ds, revision="r1", output=contract.dataset_output(ds, "r1"))
    assert doc.canonical("/mnt/pvc/data/d/r1") == "pvc://data/d/r1"
    assert doc.canonical("/mnt/pvc/data/d/r1/model") == "pvc://data/d/r1/model"
    assert doc.canonical("checkpoints/step-8") == "pvc://data/d/r1/checkpoints/step-8"
    assert doc.canonical("/mnt/pvc/other/x") == "pvc://other/x" and doc.canonical("s3://b/k") == "s3://b/k"


def test_each_pod_of_a_checkpoint_evaluation_rates_the_checkpoint_of_its_index():
    ev = _eval(model={"fineTuneJob": "ft", "checkpoints": "all"}, backend="offline", selection={"benchmark": "math500"})
    ckpts = [contract.CheckpointRef(name=f"step-{s}", step=s, epoch=f"{s / 4:.2f}",
                                location=contract.checkpoint_model(f"pvc://models/runs/ft/r1/checkpoints/step-{s}")) for s in (4, 8)]
    doc = contract.build_document(ev, revision="e1", output="pvc://models/runs/ft/r1/evals/ev/e1",
                           context=contract.WorkloadContext(modelLocation="pvc://models/runs/ft/r1/model", checkpoints=ckpts))
    assert doc.context.checkpoints[1].location == "/mnt/pvc/models/runs/ft/r1/checkpoints/step-8/model"  # where the pod reads it
    mine, target = contract.document_for_checkpoint(contract.read_document(doc.to_json()), {"JOB_COMPLETION_INDEX": "1"})
    assert (target.name, target.step) == ("step-8", 8)
    assert mine.context.modelLocation == "/mnt/pvc/models/runs/ft/r1/checkpoints/step-8/model" and not mine.context.checkpoints
    assert mine.output == "/mnt/pvc/models/runs/ft/r1/evals/ev/e1/checkpoints/step-8"
    assert mine.outputLocation == "pvc://models/runs/ft/r1/evals/ev/e1/checkpoints/step-8"
    assert contract.document_for_checkpoint(doc, {})[1].name == "step-4"  # index 0 when run alone
    with pytest.raises(contract.InvalidDocument, match="JOB_COMPLETION_INDEX='2' names none of the 2 checkpoints"):
        contract.document_for_checkpoint(doc, {"JOB_COMPLETION_INDEX": "2"})
    plain = contract.build_document(_eval(), revision="e1", output="/o")
    assert contract.document_for_checkpoint(plain, {"JOB_COMPLETION_INDEX": "1"}) == (plain, None)


def test_exported_checkpoints_are_named_and_located_once_for_status_and_local_runs():
    reported = [{"step": s, "epoch": f"{s / 4:.2f}"} for s in range(4, 4 * 70 + 1, 4)] + [{"step": "x"}, "junk"]
    listed = contract.exported_checkpoints("pvc://models/runs/ft/r1/", reported)
    assert len(listed) == 64 and listed[-1] == {"name": "step-280", "step": 280, "epoch": "70.00",
                                                "location": "pvc://models/runs/ft/r1/checkpoints/step-280/model"}
    assert listed[0]["name"] == "step-28"  # the newest 64 are kept
    assert contract.exported_checkpoints("/out", None) == [] and contract.exported_checkpoints("/out", [{"step": 2}])[0]["epoch"] is None


def test_checkpoints_to_evaluate_are_every_kept_one_or_the_listed_steps_in_training_order():
    from reasonops.api.v1alpha1 import CheckpointRef, EvalModelRef

    kept = [CheckpointRef.model_validate(x) for x in contract.exported_checkpoints("/out", [{"step": s} for s in (100, 200, 300, 400)])]
    steps = lambda chosen: [x.step for x in chosen]
    chosen, problem = contract.checkpoints_to_evaluate(EvalModelRef(fineTuneJob="ft", checkpoints="all"), kept)
    assert steps(chosen) == [100, 200, 300, 400] and problem is None
    chosen, problem = contract.checkpoints_to_evaluate(EvalModelRef(fineTuneJob="ft", checkpoints="steps", checkpointSteps=[400, 200]), kept)
    assert steps(chosen) == [200, 400] and problem is None  # oldest first, as the FineTuneJob lists them
    assert chosen[0].location == "/out/checkpoints/step-200/model"
    chosen, problem = contract.checkpoints_to_evaluate(EvalModelRef(fineTuneJob="ft", checkpoints="steps", checkpointSteps=[500, 200, 150]), kept)
    assert chosen == [] and problem == ("FineTuneJob 'ft' kept no servable checkpoint at steps 150, 500 of model.checkpointSteps; "
                                        "it kept steps 100, 200, 300, 400")
    chosen, problem = contract.checkpoints_to_evaluate(EvalModelRef(fineTuneJob="ft", checkpoints="steps", checkpointSteps=[100]), [])
    assert chosen == [] and "kept no servable checkpoints: set its spec.checkpoints.export: true" in problem
    assert contract.checkpoints_to_evaluate(EvalModelRef(fineTuneJob="ft"), kept) == ([], None)  # its final model instead


def test_a_training_result_listing_the_most_checkpoints_status_keeps_fits_the_termination_message():
    from reasonops.api.v1alpha1 import MAX_CHECKPOINTS

    result = {"modelLocation": "/mnt/pvc/reasoning-models/runs/limo-32b/3f9c0a1b2c/model", "finalLoss": 0.123456, "steps": 999000,
              "droppedSamples": 12, "truncatedSamples": 3, "badSamples": 0, "latestCheckpoint": "checkpoints/step-999000",
              "tokens": 123456789012, "wallSeconds": 123456.7, "contextLength": 131072,
              "checkpoints": [{"step": 999000 - i * 1000, "epoch": f"{150 - i}.00"} for i in reversed(range(MAX_CHECKPOINTS))]}
    assert json.loads(contract.encode_result(result)) == result  # nothing dropped: the newest checkpoints reach status
