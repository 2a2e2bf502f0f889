"""Experiment tracking of a workload's run: MLflow, TensorBoard and Weights & Biases behind one small interface.

    with tracking.start(doc) as tracker:          # a no-op without spec.tracking, and on every process but rank 0
        tracker.params({"learning_rate": 1e-5})   # once, before or after the metrics
        tracker.metrics({"train/loss": 0.9}, step=1)
        tracker.artifact(Path("summary.json"))    # a file of the output, uploaded where the backend keeps files

Each backend's library is imported only when the spec names it (the operator image installs none of them).
A backend that fails (a server that does not answer, a refused token) is logged once with the reason and
dropped: the work goes on, and its results are in the output whatever the tracker saw. Runs of one chain
carry the same tags (`chain_tags`), so a tracker's search finds a dataset, the fine-tunes trained on it and
their evaluations. Where files go and which variables carry credentials is the contract's
(`contract.tracking_dir`, `contract.tracking_env`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol

from .api.v1alpha1 import CheckpointRef, EvalRunSpec, FineTuneJobSpec, MlflowTracking, WandbTracking
from .contract import WorkloadDocument, is_reporting_process, tracking_dir

log = logging.getLogger("reasonops.tracking")

TAG_PREFIX = "reasonops.io/"
KIND_TAGS = {"ReasoningDataset": "dataset", "FineTuneJob": "finetunejob", "EvalRun": "evalrun"}
PARAM_VALUE_LIMIT = 500  # characters of a parameter's value (MLflow stores up to 6000; the UI shows far less)
MLFLOW_BATCH = 100  # parameters per log_batch request (MLflow's limit)
MLFLOW_STATE = "mlflow.json"  # under the run's tracking state directory: the run a restarted pod continues
# MLflow's client retries an unreachable server for about four minutes by default; a tracker is not worth
# that wait at every start. Defaults only: the pod's env (spec.resources.env) or the shell sets others.
MLFLOW_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                          "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


# --- what a run is called and tagged with -----------------------------------------------------------


def chain_tags(doc: WorkloadDocument, checkpoint: Optional[CheckpointRef] = None) -> dict[str, str]:
    """Tags naming the resource, its revision and its inputs, with the same keys on every kind: the run of a
    ReasoningDataset and of a FineTuneJob trained on it share `reasonops.io/dataset` and `-revision`; a
    FineTuneJob and the EvalRuns of its model share `reasonops.io/finetunejob` and `-revision`."""
    own = KIND_TAGS[doc.kind]
    tags = {"kind": doc.kind, "name": doc.metadata.name, "namespace": doc.metadata.namespace,
            "revision": doc.revision, own: doc.metadata.name, f"{own}-revision": doc.revision}
    spec, context = doc.spec, doc.context
    if isinstance(spec, FineTuneJobSpec):
        tags.update({"dataset": spec.datasetRef.name if spec.datasetRef else None, "dataset-revision": context.datasetRevision,
                     "base-model": spec.baseModel.name, "base-model-revision": spec.baseModel.revision, "preset": spec.preset})
    elif isinstance(spec, EvalRunSpec):
        tags.update({"finetunejob": spec.model.fineTuneJob, "finetunejob-revision": context.modelRevision if spec.model.fineTuneJob else None,
                     "model-revision": context.modelRevision, "base-model": context.baseModel, "selected-by": spec.model.evalRun,
                     "protocol": spec.protocol})
    if checkpoint is not None:
        tags.update({"checkpoint": checkpoint.name, "checkpoint-step": str(checkpoint.step)})
    return {TAG_PREFIX + key: str(value)[:PARAM_VALUE_LIMIT] for key, value in tags.items() if value}


def run_name(doc: WorkloadDocument, checkpoint: Optional[CheckpointRef] = None) -> str:
    """`<name>-<revision>`, and `-<checkpoint>` for one checkpoint of a per-checkpoint evaluation."""
    return "-".join(x for x in (doc.metadata.name, doc.revision, checkpoint.name if checkpoint else "") if x)


def run_id(doc: WorkloadDocument, checkpoint: Optional[CheckpointRef] = None) -> str:
    """A stable id for backends that take one (W&B): a restarted pod continues the same run."""
    key = "/".join((doc.metadata.namespace, doc.kind, doc.metadata.name, doc.revision, checkpoint.name if checkpoint else ""))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def flat_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as flat `a.b` parameters; lists as JSON, every value as text within PARAM_VALUE_LIMIT."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        elif value is not None:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:PARAM_VALUE_LIMIT]
    return out


def metric_key(name: str) -> str:
    """A metric name every backend accepts (MLflow's: letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


# --- backends ----------------------------------------------------------------------------------------


class Backend(Protocol):
    name: str

    def params(self, params: Mapping[str, str]) -> None: ...
    def metrics(self, values: Mapping[str, float], step: int) -> None: ...
    def artifact(self, path: Path) -> None: ...
    def finish(self, failed: bool) -> None: ...


class MlflowBackend:
    """A run on an MLflow tracking server (credentials: MLFLOW_TRACKING_TOKEN or _USERNAME/_PASSWORD, read by the
    client itself). A restarted pod continues the run its state file names (a local output only)."""

    name = "mlflow"

    def __init__(self, settings: MlflowTracking, name: str, tags: Mapping[str, str], state: Optional[Path]) -> None:
        from mlflow.tracking import MlflowClient

        for variable, value in MLFLOW_CLIENT_DEFAULTS.items():
            os.environ.setdefault(variable, value)
        self.client = MlflowClient(tracking_uri=settings.trackingUri)
        self.run_id, self.resumed = self._previous(state), False
        if self.run_id is not None:
            self.client.update_run(self.run_id, status="RUNNING")
            self.resumed = True
        else:
            run = self.client.create_run(self._experiment(settings.experiment), run_name=name, tags=dict(tags))
            self.run_id = run.info.run_id
            if state is not None:
                state.parent.mkdir(parents=True, exist_ok=True)
                state.write_text(json.dumps({"runId": self.run_id, "trackingUri": settings.trackingUri}))

    def _previous(self, state: Optional[Path]) -> Optional[str]:
        from mlflow.exceptions import MlflowException

        if state is None or not state.is_file():
            return None
        try:
            previous = json.loads(state.read_text()).get("runId")
            return self.client.get_run(previous).info.run_id if previous else None
        except (ValueError, MlflowException):  # another server, or the run was deleted: start a new one
            return None

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # created by another run meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        if self.resumed:  # logged by the first attempt; a parameter cannot change in MLflow
            return
        items = [Param(key[:250], value) for key, value in params.items()]
        for first in range(0, len(items), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=items[first:first + MLFLOW_BATCH])

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])

    def artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


class TensorBoardBackend:
    """Event files in `directory` (one file per process, so several pods may share it); for an object-store
    output they are written locally and copied there at the end."""

    name = "tensorboard"

    def __init__(self, directory: str) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.remote = directory if "://" in directory else None
        local = tempfile.mkdtemp(prefix="reasonops-tensorboard-") if self.remote else directory
        Path(local).mkdir(parents=True, exist_ok=True)
        self.local = local
        self.writer = EventFileWriter(local, flush_secs=10)

    def _write(self, summary: Any, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

    def params(self, params: Mapping[str, str]) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        table = "| parameter | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in sorted(params.items()))
        self._write(text_pb("parameters", table), 0)

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        self._write(Summary(value=[Summary.Value(tag=key, simple_value=value) for key, value in values.items()]), step)

    def artifact(self, path: Path) -> None:
        """The output already holds the run's files."""

    def finish(self, failed: bool) -> None:
        self.writer.close()
        if self.remote:
            import fsspec

            fs, root = fsspec.core.url_to_fs(self.remote)
            fs.put(self.local.rstrip("/") + "/", root, recursive=True)


class WandbBackend:
    """A Weights & Biases run (WANDB_API_KEY, read by the client itself); offline, its files stay in `directory`."""

    name = "wandb"

    def __init__(self, settings: WandbTracking, name: str, identifier: str, group: str, tags: Mapping[str, str],
                 directory: str) -> None:
        import wandb

        Path(directory).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=settings.project, entity=settings.entity, name=name, id=identifier, resume="allow", group=group,
            mode=settings.mode or "online", dir=directory, config={"reasonops": dict(tags)},
            tags=[f"{key.removeprefix(TAG_PREFIX)}={value}"[:64] for key, value in tags.items()],
            settings=wandb.Settings(base_url=settings.baseUrl, silent=True, console="off", x_disable_stats=True)
            if settings.baseUrl else wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def params(self, params: Mapping[str, str]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def artifact(self, path: Path) -> None:
        self.run.save(str(path), base_path=str(path.parent), policy="now")

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


# --- the tracker ---------------------------------------------------------------------------------------


class Tracker:
    """The run in every configured backend. Numbers that are None are left out; a backend that raises is
    logged with the reason and dropped, the others go on. A context manager: the run ends FAILED on an error."""

    def __init__(self, backends: list[Backend]) -> None:
        self.backends = list(backends)

    def __bool__(self) -> bool:
        return bool(self.backends)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        self.end(failed=error is not None)

    def _each(self, what: str, *args: Any) -> None:
        for backend in list(self.backends):
            try:
                getattr(backend, what)(*args)
            except Exception as exc:  # a tracker is never worth the run: say why, then go on without it
                log.warning("experiment tracking: %s stopped at %s: %s: %s", backend.name, what, type(exc).__name__, exc)
                self.backends.remove(backend)

    def params(self, params: Mapping[str, Any]) -> None:
        self._each("params", flat_params(params))

    def metrics(self, values: Mapping[str, Optional[float]], step: int) -> None:
        numbers = {metric_key(k): float(v) for k, v in values.items() if v is not None}
        if numbers:
            self._each("metrics", numbers, step)

    def artifact(self, path: Path | str) -> None:
        if Path(path).is_file():
            self._each("artifact", Path(path))

    def end(self, failed: bool = False) -> None:
        self._each("finish", failed)
        self.backends = []


def start(doc: WorkloadDocument, *, checkpoint: Optional[CheckpointRef] = None, revision_output: Optional[str] = None,
          env: Optional[Mapping[str, str]] = None) -> Tracker:
    """The tracker of a document's run: its spec.tracking's backends on the reporting process (rank 0), none
    elsewhere. `checkpoint`: one checkpoint of a per-checkpoint evaluation (its own run, tagged with it, whose
    TensorBoard events go to the revision's directory `revision_output`, so the checkpoints make one curve)."""
    settings = doc.spec.tracking
    if settings is None or not is_reporting_process(os.environ if env is None else env):
        return Tracker([])
    name, tags = run_name(doc, checkpoint), chain_tags(doc, checkpoint)
    local = "://" not in doc.output
    wanted: list[tuple[str, Any]] = []
    if settings.mlflow is not None:
        state = Path(tracking_dir(doc.output, "state")) / MLFLOW_STATE if local else None
        wanted.append(("mlflow", lambda: MlflowBackend(settings.mlflow, name, tags, state)))
    if settings.tensorboard is not None and settings.tensorboard.enabled is not False:
        wanted.append(("tensorboard", lambda: TensorBoardBackend(tracking_dir(revision_output or doc.output, "tensorboard"))))
    if settings.wandb is not None:
        directory = tracking_dir(doc.output, "wandb") if local else tempfile.mkdtemp(prefix="reasonops-wandb-")
        wanted.append(("wandb", lambda: WandbBackend(settings.wandb, name, run_id(doc, checkpoint), run_name(doc), tags, directory)))
    backends: list[Backend] = []
    for backend_name, make in wanted:
        try:
            backends.append(make())
        except Exception as exc:  # see Tracker._each
            log.warning("experiment tracking: %s did not start: %s: %s", backend_name, type(exc).__name__, exc)
    if backends:
        log.info("experiment tracking: run %s in %s", name, ", ".join(b.name for b in backends))
    return Tracker(backends)
