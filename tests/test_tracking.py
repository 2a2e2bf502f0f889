"""Experiment tracking (spec.tracking): a real MLflow server started here (SQLite store), read back with MLflow's
client; TensorBoard event files read back with TensorBoard's reader; W&B's offline run files. A tiny curation,
training and per-checkpoint evaluation are tracked, and their runs are linked by the chain's tags. Also the pure
parts: the API's refusals, the pod's env from Secret references, the tags, and a tracker that outlives a failing
backend."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml
from pydantic import ValidationError

from reasonops import contract, tracking
from reasonops.api.common import validation_problems
from reasonops.api.v1alpha1 import FineTuneJob, Tracking
from reasonops.contract import read_document
from reasonops.controller import builders
from reasonops.controller.settings import Settings
from reasonops.progress import Reporter
from reasonops.tinymodel import build_servable_model, build_tiny_model

from train_support import REPO, arithmetic_rows, losses, resource_doc, write_dataset
from vllm_support import engine_environment

POOL = Path(__file__).resolve().parent / "data" / "curate_pool.jsonl"
EXPERIMENT = "reasonops-tests"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` with a SQLite backend store and a local artifact store, as a platform team runs it."""
    assert importlib.util.find_spec("mlflow"), "the full mlflow (its server) comes with the dev extra: pip install -e '.[dev]'"
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (root / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not start in 180 s"
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module", autouse=True)
def wandb_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """W&B's own settings and caches in a scratch directory, never the user's."""
    home = tmp_path_factory.mktemp("wandb-home")
    saved = {k: os.environ.get(k) for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_SILENT")}
    os.environ.update(WANDB_CONFIG_DIR=str(home / "config"), WANDB_CACHE_DIR=str(home / "cache"),
                      WANDB_DATA_DIR=str(home / "data"), WANDB_SILENT="true")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _client(url: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def _runs(url: str, **tags: str) -> list[Any]:
    client = _client(url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    where = " and ".join(f"tags.`reasonops.io/{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([experiment.experiment_id], filter_string=where)


def _history(url: str, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in _client(url).get_metric_history(run_id, key)}


def _scalars(directory: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory))
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars(tag)}


def _wandb_run_file(output: Path) -> bytes:
    """The offline W&B run's log under an output. W&B ships no reader of it (`wandb sync` uploads it), so the
    tests look for what each history record holds: the metric's name and its value as JSON text."""
    files = sorted((output / "wandb").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0].read_bytes()


# --- the chain: curation, training, per-checkpoint evaluation ------------------------------------------------


def _tracking(url: str, **extra: Any) -> dict[str, Any]:
    return {"mlflow": {"trackingUri": url, "experiment": EXPERIMENT}, "tensorboard": {}, **extra}


@pytest.fixture(scope="module")
def curated(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from reasonops.curate import run_resource

    out = tmp_path_factory.mktemp("curate") / "rev"
    spec = {"sources": [{"name": "demo", "path": str(POOL)}],
            "stages": [{"name": "dedupe", "dedupe": {}}, {"name": "decontaminate", "decontaminate": {"benchmarks": ["demo"]}},
                       {"name": "score", "score": {}}, {"name": "top", "select": {"size": 30}}],
            "output": {"path": str(out.parent)}, "tracking": _tracking(mlflow_server)}
    doc = read_document({"apiVersion": "reasonops.io/v1alpha1", "kind": "ReasoningDataset",
                         "metadata": {"name": "curated", "namespace": "team", "uid": "u"}, "spec": spec,
                         "revision": "d1", "output": str(out), "outputLocation": str(out), "context": {}})
    return out, run_resource(doc, Reporter(min_interval=0))


@pytest.fixture(scope="module")
def trained(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from reasonops.train import run_resource

    root = tmp_path_factory.mktemp("train")
    base = build_tiny_model(root / "model", layers=2, hidden=32, seed=3)
    data = write_dataset(root / "data", arithmetic_rows(16))
    out = root / "out"
    raw = resource_doc(base, data, out, hyperparameters={"epochs": 1},
                       tracking=_tracking(mlflow_server, wandb={"project": "reasonops-tests", "mode": "offline"}))
    raw["spec"].pop("dataset")
    raw["spec"]["datasetRef"] = {"name": "curated"}
    raw["context"] = {"datasetLocation": str(data), "datasetRevision": "d1"}
    return out, run_resource(read_document(raw), Reporter(min_interval=0))


@pytest.fixture(scope="module")
def evaluated(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """Two checkpoints of FineTuneJob revision r1 (the tiny model stands for both), each in its own 'pod'."""
    from reasonops.evaluate import run_resource

    root = tmp_path_factory.mktemp("eval")
    model = build_servable_model(root / "model")  # the offline CPU engine serves it with vLLM's CPU backend
    out = root / "out"
    checkpoints = [{"name": f"step-{s}", "step": s, "location": str(model)} for s in (2, 4)]
    doc = read_document({
        "apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun", "metadata": {"name": "tiny-eval", "namespace": "team", "uid": "u"},
        "spec": {"model": {"fineTuneJob": "tiny", "checkpoints": "all"}, "backend": "offline", "serving": {"engine": "cpu"},
                 "benchmarks": [{"name": "demo", "maxTokens": 4, "limit": 3}], "output": {"path": str(root)},
                 "tracking": _tracking(mlflow_server)},
        "revision": "e1", "output": str(out), "outputLocation": str(out),
        "context": {"modelLocation": str(model), "modelRevision": "r1", "checkpoints": checkpoints},
    })
    with pytest.MonkeyPatch.context() as patch:
        for key, value in engine_environment().items():
            patch.setenv(key, value)
        results = [run_resource(doc, Reporter(min_interval=0), env={"JOB_COMPLETION_INDEX": str(i)}) for i in range(2)]
    return out, results


def test_training_logs_every_step_and_the_resolved_hyperparameters(mlflow_server, trained):
    out, result = trained
    curve = losses(out)
    assert sorted(curve) == [1, 2, 3, 4]
    (run,) = _runs(mlflow_server, finetunejob="tiny")
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-r1"
    params = run.data.params
    assert params["learning_rate"] == "0.003" and params["preset"] == "none" and params["epochs"] == "1"
    assert params["dataset_revision"] == "d1" and params["world_size"] == "1" and int(params["parameters"]) > 0
    tags = run.data.tags
    assert tags["reasonops.io/dataset"] == "curated" and tags["reasonops.io/dataset-revision"] == "d1"
    assert tags["reasonops.io/finetunejob-revision"] == "r1" and tags["reasonops.io/base-model"].endswith("model")
    loss = _history(mlflow_server, run.info.run_id, "train/loss")
    assert loss == pytest.approx(curve)
    for key in ("train/learning_rate", "train/grad_norm", "train/tokens_per_second", "train/step_seconds"):
        values = _history(mlflow_server, run.info.run_id, key)
        assert sorted(values) == [1, 2, 3, 4] and all(v > 0 for v in values.values()), key
    assert "train/mfu" not in run.data.metrics  # no peak FLOPs known on a CPU: left out, not logged as 0
    artifacts = {a.path for a in _client(mlflow_server).list_artifacts(run.info.run_id)}
    assert {"training_summary.json", "train_log.jsonl"} <= artifacts
    # TensorBoard: the same curve under the output, read with TensorBoard's own reader
    assert _scalars(out / "tensorboard", "train/loss") == pytest.approx(curve, rel=1e-6)
    # W&B offline: the run's files under the output hold every step
    logged = _wandb_run_file(out)
    assert b"train/grad_norm" in logged and all(json.dumps(loss).encode() in logged for loss in curve.values())
    assert result["steps"] == 4


def test_evaluation_logs_scores_with_intervals_per_checkpoint(mlflow_server, evaluated):
    out, results = evaluated
    runs = {r.data.tags["reasonops.io/checkpoint"]: r for r in _runs(mlflow_server, evalrun="tiny-eval")}
    assert sorted(runs) == ["step-2", "step-4"]
    for result, (name, step) in zip(results, (("step-2", 2), ("step-4", 4))):
        run, scored = runs[name], result["results"][0]
        assert run.info.status == "FINISHED" and run.data.tags["reasonops.io/finetunejob-revision"] == "r1"
        assert run.data.params["benchmarks.demo.samples"] == "1" and run.data.params["protocol"] == "limo"
        assert run.data.params["provenance.engine"] == "vllm"
        for key, field in (("score", "score"), ("ci_low", "ciLow"), ("ci_high", "ciHigh")):
            assert _history(mlflow_server, run.info.run_id, f"demo/{key}") == {step: pytest.approx(float(scored[field]))}
    # the pods share the revision's TensorBoard directory: the checkpoints make one curve
    assert sorted(_scalars(out / "tensorboard", "demo/score")) == [2, 4]


def test_curation_logs_the_funnel(mlflow_server, curated):
    out, result = curated
    (run,) = _runs(mlflow_server, dataset="curated", kind="ReasoningDataset")
    counts = result["stageCounts"]
    assert _history(mlflow_server, run.info.run_id, "funnel/kept") == {i: c["kept"] for i, c in enumerate(counts)}
    assert _history(mlflow_server, run.info.run_id, "stages/dedupe/dropped") == {1: counts[1]["dropped"]}
    assert run.data.metrics["samples"] == result["samples"] == 30
    assert "manifest.json" in {a.path for a in _client(mlflow_server).list_artifacts(run.info.run_id)}
    assert _scalars(out / "tensorboard", "funnel/kept") == {i: c["kept"] for i, c in enumerate(counts)}


def test_runs_of_one_chain_find_each_other_by_tags(mlflow_server, curated, trained, evaluated):
    """A dataset's revision finds the training on it; the training's revision finds its evaluations."""
    on_dataset = _runs(mlflow_server, **{"dataset-revision": "d1"})
    assert sorted(r.data.tags["reasonops.io/kind"] for r in on_dataset) == ["FineTuneJob", "ReasoningDataset"]
    on_model = _runs(mlflow_server, **{"finetunejob-revision": "r1"})
    assert sorted(r.data.tags["reasonops.io/kind"] for r in on_model) == ["EvalRun", "EvalRun", "FineTuneJob"]


def test_reasonops_run_honours_tracking_and_names_missing_credentials(tmp_path):
    """The CLI as a shell runs it: TensorBoard files of a local run, and the variable a Secret would fill."""
    manifest = {"apiVersion": "reasonops.io/v1alpha1", "kind": "ReasoningDataset", "metadata": {"name": "local-data"},
                "spec": {"sources": [{"name": "demo", "path": str(POOL)}], "stages": [{"name": "top", "select": {"size": 5}}],
                         "output": {"path": "datasets"},
                         "tracking": {"tensorboard": {}, "wandb": {"project": "p", "mode": "offline",
                                                                   "apiKeySecretRef": {"name": "wandb", "key": "api-key"}}}}}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(manifest))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO / "operator"), env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "reasonops.cli", "run", str(tmp_path / "data.yaml"), "--output", str(tmp_path / "out")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WANDB_API_KEY is not set here (in a cluster: key 'api-key' of Secret 'wandb')" in proc.stdout
    (revision,) = (tmp_path / "out" / "datasets" / "local-data").iterdir()
    assert sorted(_scalars(revision / "tensorboard", "funnel/kept")) == [0, 1, 2]
    assert b"funnel/kept" in _wandb_run_file(revision)


# --- pure parts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, problem", [
    ({}, ": set at least one of mlflow, tensorboard or wandb"),
    ({"mlflow": {"trackingUri": "mlflow:5000", "experiment": "e"}}, "mlflow.trackingUri: String should match pattern"),
    ({"mlflow": {"trackingUri": "https://bot:pw@m", "experiment": "e"}}, "mlflow.trackingUri: must not carry credentials"),
    ({"wandb": {"project": "p", "mode": "offline", "baseUrl": "https://k:pw@wandb.example"}}, "wandb.baseUrl: must not carry credentials"),
    ({"mlflow": {"trackingUri": "http://m", "experiment": "e", "token": "s3cret"}}, "mlflow.token: Extra inputs are not permitted"),
    ({"mlflow": {"trackingUri": "http://m", "experiment": "e", "usernameSecretRef": {"name": "m", "key": "u"}}},
     "mlflow.passwordSecretRef: usernameSecretRef and passwordSecretRef are set together"),
    ({"mlflow": {"trackingUri": "http://m", "experiment": "e", "tokenSecretRef": {"name": "m", "key": "t"},
                 "usernameSecretRef": {"name": "m", "key": "u"}, "passwordSecretRef": {"name": "m", "key": "p"}}},
     "mlflow.tokenSecretRef: set tokenSecretRef or usernameSecretRef and passwordSecretRef, not both"),
    ({"wandb": {"project": "p"}}, "wandb.apiKeySecretRef: mode online needs apiKeySecretRef"),
    ({"wandb": {"project": "p", "mode": "sometimes", "apiKeySecretRef": {"name": "w", "key": "k"}}}, "wandb.mode: Input should be"),
    ({"wandb": {"project": "a/b", "mode": "offline"}}, "wandb.project: String should match pattern"),
    ({"tensorboard": {"enabled": "yes"}}, "tensorboard.enabled: Input should be a valid boolean"),
])
def test_bad_tracking_specs_are_refused_by_name(spec, problem):
    with pytest.raises(ValidationError) as caught:
        Tracking.model_validate(spec)
    assert any(p.startswith(problem) for p in validation_problems(caught.value)), validation_problems(caught.value)


def test_the_crd_carries_the_same_rules():
    crd = yaml.safe_load((REPO / "crds" / "reasonops.io_finetunejobs.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["tracking"]
    rules = {rule["message"] for part in (schema, schema["properties"]["wandb"], schema["properties"]["mlflow"])
             for rule in part.get("x-kubernetes-validations", [])}
    assert "set at least one of mlflow, tensorboard or wandb" in rules
    assert any(message.startswith("mode online needs apiKeySecretRef") for message in rules)


FULL = {"mlflow": {"trackingUri": "https://mlflow.example", "experiment": "limo", "usernameSecretRef": {"name": "mlflow", "key": "user"},
                   "passwordSecretRef": {"name": "mlflow", "key": "password"}},
        "wandb": {"project": "limo", "apiKeySecretRef": {"name": "wandb", "key": "api-key"}}, "tensorboard": {}}


def test_credentials_go_by_the_names_their_clients_read():
    pairs = [(name, ref.name, ref.key) for name, ref in contract.tracking_env(Tracking.model_validate(FULL))]
    assert pairs == [("MLFLOW_TRACKING_USERNAME", "mlflow", "user"), ("MLFLOW_TRACKING_PASSWORD", "mlflow", "password"),
                     ("WANDB_API_KEY", "wandb", "api-key")]
    token = {"mlflow": {"trackingUri": "http://m", "experiment": "e", "tokenSecretRef": {"name": "m", "key": "t"}}}
    assert [n for n, _ in contract.tracking_env(Tracking.model_validate(token))] == ["MLFLOW_TRACKING_TOKEN"]
    assert contract.tracking_env(None) == [] and contract.tracking_env(Tracking.model_validate({"tensorboard": {}})) == []


def test_tracking_files_go_under_the_output():
    assert contract.tracking_dir("/mnt/pvc/runs/ft/r1/", "tensorboard") == "/mnt/pvc/runs/ft/r1/tensorboard"
    assert contract.tracking_dir("s3://b/ft/r1", "wandb") == "s3://b/ft/r1/wandb"
    assert contract.tracking_dir("/out", "state") == "/out/tracking"


def test_training_pods_get_tracking_credentials_only_by_secret_reference():
    body = yaml.safe_load((REPO / "examples" / "tracking.yaml").read_text())
    body["metadata"].update(namespace="team", uid="uid-1", generation=1)
    ft = contract.with_defaults(FineTuneJob.model_validate(body))
    document = contract.build_document(ft, revision="r", output=contract.finetune_output(ft, "r"),
                                       context=contract.WorkloadContext(datasetLocation="/data"))
    settings = Settings(train_image="train:1", curate_image="curate:1", eval_image="eval:1", serve_image="serve:1")
    children = builders.build_finetune_children(body, ft, document, settings, False)
    container = children[2]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_TRACKING_TOKEN"] == {"name": "MLFLOW_TRACKING_TOKEN",
                                            "valueFrom": {"secretKeyRef": {"name": "mlflow-credentials", "key": "token"}}}
    assert env["WANDB_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "wandb", "key": "api-key"}}
    # the document the pod reads names the Secret keys, never a value
    assert '"tokenSecretRef"' in children[0]["data"]["resource.json"] and "value" not in env["WANDB_API_KEY"]


def test_editing_tracking_makes_no_new_revision():
    spec = {"baseModel": {"name": "m"}, "datasetRef": {"name": "d"}, "output": {"path": "/o"}}
    assert contract.revision_of("FineTuneJob", spec) == contract.revision_of("FineTuneJob", {**spec, "tracking": FULL})


def _document(kind: str, spec: dict[str, Any], context: dict[str, Any] | None = None) -> contract.WorkloadDocument:
    return read_document({"apiVersion": "reasonops.io/v1alpha1", "kind": kind, "metadata": {"name": "n", "namespace": "team", "uid": "u"},
                          "spec": spec, "revision": "rev", "output": "/out", "outputLocation": "/out", "context": context or {}})


def test_chain_tags_use_the_same_keys_on_every_kind():
    finetune = _document("FineTuneJob", {"baseModel": {"name": "Qwen/Qwen2.5-7B", "revision": "abc"}, "datasetRef": {"name": "limo"},
                                         "output": {"path": "/o"}}, {"datasetRevision": "d9"})
    tags = tracking.chain_tags(finetune)
    assert {k: tags[k] for k in ("reasonops.io/dataset", "reasonops.io/dataset-revision", "reasonops.io/finetunejob",
                                 "reasonops.io/finetunejob-revision", "reasonops.io/base-model-revision")} == {
        "reasonops.io/dataset": "limo", "reasonops.io/dataset-revision": "d9", "reasonops.io/finetunejob": "n",
        "reasonops.io/finetunejob-revision": "rev", "reasonops.io/base-model-revision": "abc"}
    evaluation = _document("EvalRun", {"model": {"fineTuneJob": "ft"}, "benchmarks": [{"name": "demo"}]}, {"modelRevision": "rev"})
    assert tracking.chain_tags(evaluation)["reasonops.io/finetunejob"] == "ft"
    assert tracking.chain_tags(evaluation)["reasonops.io/finetunejob-revision"] == "rev"
    hub = _document("EvalRun", {"model": {"name": "Qwen/Qwen2.5-7B"}, "benchmarks": [{"name": "demo"}], "output": {"path": "/o"}},
                    {"modelRevision": "h1"})
    assert "reasonops.io/finetunejob-revision" not in tracking.chain_tags(hub)  # not a fine-tune: no link to one


def test_params_are_flat_text_and_metric_names_are_accepted_everywhere():
    assert tracking.flat_params({"a": {"b": 1, "c": None}, "d": [1, 2], "e": "x" * 900}) == {"a.b": "1", "d": "[1, 2]", "e": "x" * 500}
    assert tracking.metric_key("pass@1 (demo)") == "pass_1 _demo_"


class _Broken:
    name = "broken"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def params(self, params: Any) -> None:
        raise ConnectionError("server went away")

    def metrics(self, values: Any, step: int) -> None:
        self.calls.append("metrics")

    def artifact(self, path: Any) -> None: ...
    def finish(self, failed: bool) -> None: ...


class _Recorder(_Broken):
    name = "recorder"

    def params(self, params: Any) -> None:
        self.calls.append(f"params {sorted(params)}")

    def metrics(self, values: Any, step: int) -> None:
        self.calls.append(f"metrics {step} {values}")

    def finish(self, failed: bool) -> None:
        self.calls.append(f"finish failed={failed}")


def test_a_failing_backend_is_dropped_with_its_reason_and_the_others_go_on(caplog):
    broken, recorder = _Broken(), _Recorder()
    with pytest.raises(RuntimeError):
        with tracking.Tracker([broken, recorder]) as tracker:
            tracker.params({"lr": 1})
            tracker.metrics({"loss": 0.5, "mfu": None}, step=3)
            raise RuntimeError("the work failed")
    assert broken.calls == [] and "broken stopped at params: ConnectionError: server went away" in caplog.text
    assert recorder.calls == ["params ['lr']", "metrics 3 {'loss': 0.5}", "finish failed=True"]


def test_an_unreachable_server_costs_seconds_and_is_named(caplog, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    doc = read_document({"apiVersion": "reasonops.io/v1alpha1", "kind": "ReasoningDataset", "metadata": {"name": "n"},
                         "spec": {"sources": [{"name": "s", "path": "/p"}], "output": {"path": str(tmp_path)},
                                  "tracking": {"mlflow": {"trackingUri": f"http://127.0.0.1:{closed}", "experiment": "e"}, "tensorboard": {}}},
                         "revision": "r", "output": str(tmp_path / "r"), "outputLocation": str(tmp_path / "r")})
    started = time.monotonic()
    with tracking.start(doc) as tracker:
        assert [b.name for b in tracker.backends] == ["tensorboard"]  # the others go on
    assert time.monotonic() - started < 60  # MLflow's own default retries for about four minutes
    assert "experiment tracking: mlflow did not start: MlflowException" in caplog.text


def test_only_the_reporting_process_tracks():
    doc = _document("ReasoningDataset", {"sources": [{"name": "s", "path": "/p"}], "output": {"path": "/o"},
                                         "tracking": {"tensorboard": {}}})
    assert not tracking.start(doc, env={"RANK": "1"})
    assert not tracking.start(doc, env={"JOB_COMPLETION_INDEX": "2"})  # a curation shard other than pod 0
    assert not tracking.start(_document("ReasoningDataset", {"sources": [{"name": "s", "path": "/p"}], "output": {"path": "/o"}}))
