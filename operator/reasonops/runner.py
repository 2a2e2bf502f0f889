"""Run a workload: in a pod from the operator's resource document, or locally from a user's YAML.

    reasonops workload --resource /etc/reasonops/resource.json      # what the operator's pods run
    reasonops run examples/demo.yaml --output ./out                  # the same work on a laptop

Locally, every resource of the file runs in dependency order (datasets, then fine-tunes, then
evaluations); references between them resolve to the outputs of earlier local runs under --output,
exactly as the operator resolves them to the outputs of earlier revisions in a cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import yaml

from . import contract, objectstore
from .api import common as reasons
from .api.common import resolve_defaults
from .api.v1alpha1 import EvalRun, FineTuneJob, Resource
from .errors import Stopped, WorkloadError
from .progress import Reporter

log = logging.getLogger("reasonops.run")
ORDER = {"ReasoningDataset": 0, "FineTuneJob": 1, "EvalRun": 2}


def _workload(kind: str) -> Callable[[contract.WorkloadDocument, Reporter], dict[str, Any]]:
    """The workload entry of a kind, imported only when needed (each needs its own heavy extras)."""
    if kind == "ReasoningDataset":
        from . import curate

        return curate.run_resource
    if kind == "FineTuneJob":
        from . import train

        return train.run_resource
    from . import evaluate

    return evaluate.run_resource


def parse_resource(doc: dict[str, Any]) -> Resource:
    try:
        return contract.parse_resource(doc)
    except contract.InvalidDocument as exc:
        raise WorkloadError(reasons.REASON_INVALID_SPEC, str(exc)) from None


def _one_line(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.YAMLError) and mark is not None:
        return f"{getattr(exc, 'problem', None) or 'invalid YAML'} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def load_file(path: str | Path) -> list[Resource]:
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise WorkloadError(reasons.REASON_INVALID_SPEC, f"cannot read {path}: {_one_line(exc)}") from None
    resources = [parse_resource(d) for d in docs]
    # An EvalRun of another EvalRun's selected checkpoint, or with relative gates, runs after the EvalRuns it reads.
    return sorted(resources, key=lambda r: (ORDER[r.kind], _eval_depth(r, resources)))


def _eval_depth(res: Resource, resources: list[Resource], seen: frozenset[str] = frozenset()) -> int:
    """How many EvalRuns of the file an EvalRun waits for in a row (its model.evalRun, its gates' baselines)."""
    if not isinstance(res, EvalRun) or res.metadata["name"] in seen:
        return 0
    upstream = [res.spec.model.evalRun, *contract.baseline_names(res.spec)]
    evals = {r.metadata["name"]: r for r in resources if isinstance(r, EvalRun)}
    seen = seen | {res.metadata["name"]}
    return max((1 + _eval_depth(evals[name], resources, seen) for name in upstream if name in evals), default=0)


# --- in a pod ------------------------------------------------------------------------------------


def run_in_pod(resource_file: str) -> int:
    """Entry of every workload pod; the exit code and termination message tell the operator how it went.

    Only the reporting process (contract.is_reporting_process: rank 0) publishes results; any process that
    fails writes why to its container's termination message.
    """
    reporter = Reporter.from_env()
    reporting = contract.is_reporting_process(os.environ)
    try:
        try:
            doc = contract.read_document(Path(resource_file).read_text())
        except (OSError, contract.InvalidDocument) as exc:
            raise WorkloadError(reasons.REASON_INVALID_SPEC, str(exc)) from None
        if doc.kind == "FineTuneJob" and _launches_group(doc):
            return _launch_group(doc, resource_file, reporter, reporting)
        objectstore.register()
        result = _workload(doc.kind)(doc, reporter)
        if reporting:
            result = export_result(doc, result)
    except Stopped as exc:  # SIGTERM after the current step's checkpoint: the group restarts from it
        log.warning("%s", exc)
        _tell_launcher(exc)
        return contract.STOPPED_EXIT_CODE
    except WorkloadError as exc:
        log.error("%s", exc)
        _tell_launcher(exc)
        reporter.finish({"error": exc.to_dict()}, message=exc.message, publish=reporting)
        return 1
    except Exception as exc:  # an unexpected crash still says why in the termination message
        log.exception("workload crashed")
        _tell_launcher(exc)
        error = {"reason": reasons.REASON_WORKLOAD_CRASHED, "message": f"{type(exc).__name__}: {exc}"[:2000]}
        reporter.finish({"error": error}, publish=reporting)
        return 2
    if reporting:
        reporter.finish(result)
    return 0


def export_result(doc: contract.WorkloadDocument, result: dict[str, Any]) -> dict[str, Any]:
    """spec.export: publish the revision's dataset (pod 0's merged one) or final model, by the reporting
    process, once the workload succeeded; the result then says where (status.exportLocation)."""
    export = getattr(doc.spec, "export", None)
    if doc.kind == "FineTuneJob":
        source = result.get("modelLocation")
    else:
        source = result.get("location") if "samples" in result else None
    if export is None or not source:
        return result
    uri = contract.export_location(export, doc.metadata.name, doc.revision)
    log.info("publishing %s to %s", source, uri)
    return {**result, "exportLocation": objectstore.publish(str(source), uri)}


def _launches_group(doc: contract.WorkloadDocument) -> bool:
    from . import train

    return train.should_launch(doc, os.environ)


def _launch_group(doc: contract.WorkloadDocument, resource_file: str, reporter: Reporter, reporting: bool) -> int:
    """A pod of a job of several processes: torchrun's workers re-enter `reasonops workload` and report; this
    launcher only says whether they all finished (train.run_group). A finished run is not launched again: a
    pod replaced after the last write, or the peer of one, would otherwise wait at the rendezvous for indexes
    the Job already counts as done."""
    from . import train

    previous = train.finished_result(train.config_from_resource(doc).output)
    if previous is not None:
        log.info("the output already holds a finished model; nothing to launch")
        if reporting:
            reporter.finish(previous)
        return 0
    train.check_master_reachable(os.environ)
    command = train.launch_command(doc, os.environ, resource_path=resource_file)
    log.info("launching %s", " ".join(command))
    sys.stdout.flush()
    try:
        return train.run_group(command, train.topology(doc, os.environ).nproc_per_node)
    except WorkloadError as exc:  # torchrun ended 0 without its workers finishing: the group lost a peer
        log.error("%s", exc)
        reporter.finish({"error": exc.to_dict()}, message=exc.message, publish=reporting)
        return contract.PEER_LOST_EXIT_CODE


def _tell_launcher(exc: BaseException) -> None:
    """A torchrun worker that fails tells its pod's launcher whether only a lost peer caused it."""
    if "LOCAL_RANK" not in os.environ:
        return
    from .train import mark_worker_failed

    mark_worker_failed(exc)


# --- on a laptop ---------------------------------------------------------------------------------


def _local_state(output_root: Path, kind: str, name: str) -> Path:
    return output_root / "state" / f"{kind}-{name}.json"


def _read_state(output_root: Path, kind: str, name: str) -> Optional[dict[str, Any]]:
    path = _local_state(output_root, kind, name)
    return json.loads(path.read_text()) if path.exists() else None


def local_volume_root(output_root: Path) -> str:
    """Where `reasonops run` keeps what a cluster keeps on volume claims (pvc://CLAIM/... → here/CLAIM/...)."""
    return str(output_root / "volumes")


def _local_location(location: str, output_root: Path) -> str:
    """Relative paths of a local run are relative to --output."""
    if location.startswith("/") or "://" in location:
        return location
    return str(output_root / location)


def observed_state(kind: str, state: dict[str, Any], volume_root: str) -> dict[str, Any]:
    """An earlier local run as the operator observes the resource once it succeeded: its spec and the status
    its reconcile writes (locations canonical, as `contract.canonical` maps them back from `volume_root`), so
    that `contract.resolve` resolves a reference alike in a cluster and on a laptop."""
    result = state.get("result") or {}
    revision, location = state["revision"], contract.canonical(state["location"], volume_root)
    spec = state.get("spec") or {"baseModel": {"name": state.get("baseModel")}}
    status: dict[str, Any] = {"phase": "Succeeded", "revision": revision}
    if kind == "ReasoningDataset":
        status.update(output={"revision": revision, "location": location},
                      history=[{"revision": revision, "phase": "Succeeded", "location": location}])
    elif kind == "FineTuneJob":
        output = contract.canonical(state.get("output") or "", volume_root)
        status.update(modelLocation=location, modelRevision=revision, contextLength=result.get("contextLength"),
                      checkpoints=contract.exported_checkpoints(output, result.get("checkpoints")))
    else:  # an EvalRun: its output (a relative gate's baseline is read there), and the checkpoint it selected
        output = contract.canonical(state.get("output") or location, volume_root)
        status.update(history=[{"revision": revision, "phase": "Succeeded", "location": output}])
        if result.get("selectedCheckpoint"):
            selected = result["selectedCheckpoint"]
            status.update(selectedCheckpoint={**selected, "location": contract.canonical(selected["location"], volume_root)})
    return {"spec": spec, "status": status}


def local_document(res: Resource, output_root: Path) -> contract.WorkloadDocument:
    """The document the operator would hand to the pod, with references resolved to earlier local runs by
    the operator's own resolution (`contract.resolve`)."""
    res.metadata.setdefault("namespace", "local")

    def lookup(kind: str, name: str) -> Optional[dict[str, Any]]:
        state = _read_state(output_root, kind, name)
        return observed_state(kind, state, local_volume_root(output_root)) if state is not None else None

    resolution = contract.resolve(res, res.spec.to_wire(), lookup, place=lambda location: _local_location(location, output_root))
    if resolution.waiting is not None:
        reason, message = resolution.waiting
        raise WorkloadError(reason, f"{message} under {output_root}: put it in the same file or run it first")
    assert resolution.output is not None  # decided once the inputs are
    return contract.build_document(res, revision=resolution.revision, output=resolution.output, context=resolution.context,
                            volume_root=local_volume_root(output_root))


def record_local_run(output_root: Path, res: Resource, doc: contract.WorkloadDocument, result: dict[str, Any]) -> dict[str, Any]:
    """Keep what a finished local run produced, for the runs that reference it (`observed_state`)."""
    location = (result.get("selectedCheckpoint") or {}).get("location") or result.get("location") or result.get("modelLocation") or doc.output
    state = {"revision": doc.revision, "location": location, "output": doc.output, "result": result, "spec": res.spec.to_wire()}
    if isinstance(res, FineTuneJob):
        state["baseModel"] = res.spec.baseModel.name
    elif doc.context.baseModel:
        state["baseModel"] = doc.context.baseModel
    path = _local_state(output_root, res.kind, res.metadata["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1))
    return state


@contextlib.contextmanager
def _local_server(doc: contract.WorkloadDocument) -> Iterator[None]:
    """An EvalRun with a model directory and no endpoint gets a local OpenAI-compatible server: vLLM's (the CPU build,
    found as reasonops.local_vllm finds it) where it is installed, else reasonops.serve (pip cannot install vLLM's CPU
    build beside the workloads, and a laptop's first `reasonops demo` must run)."""
    ctx = doc.context
    if doc.kind != "EvalRun" or ctx.endpoint or doc.spec.backend == "offline":
        yield
        return
    from .local_vllm import installed_vllm, running_vllm, small_model_options

    res = doc.resource()
    assert isinstance(res, EvalRun)
    if not contract.serving_enabled(res.spec):
        raise WorkloadError(reasons.REASON_ENDPOINT_UNREACHABLE, "serving is disabled and spec.model sets no endpoint")
    name = contract.served_model_name(res)
    executable = installed_vllm()
    if executable:
        serving = resolve_defaults(res.spec).serving
        options = small_model_options(ctx.modelLocation, name, dtype=serving.dtype,
                                      **({"max_model_len": serving.maxModelLen} if serving.maxModelLen else {}))
        print(f"[reasonops] serving {ctx.modelLocation} with vLLM's CPU engine ({executable})", flush=True)
        server = running_vllm(options, executable=executable)
    else:
        from .serve import running_server

        print(f"[reasonops] serving {ctx.modelLocation} with the local OpenAI-compatible server (vLLM is not installed here;"
              " it serves the model in a cluster)", flush=True)
        server = running_server(ctx.modelLocation, served_model_name=name)
    with server as url:
        ctx.endpoint, ctx.servedModelName = url, name
        yield


def _evaluate_checkpoints(res: Resource, doc: contract.WorkloadDocument, reporter: Reporter) -> dict[str, Any]:
    """model.checkpoints on a laptop: each checkpoint in turn, as the Job's pod of its index would, then the
    selection and the gates on the selected checkpoint (the operator's status.checkpoints, selectedCheckpoint)."""
    from . import evaluate
    from .gates import judge_gates, select_checkpoint

    assert isinstance(res, EvalRun)
    rated = {}
    for index, target in enumerate(doc.context.checkpoints):
        print(f"[reasonops] checkpoint {target.name} (in a cluster: pod {index} of the Indexed Job)", flush=True)
        rated[target.name] = evaluate.run_resource(doc, reporter, env={"JOB_COMPLETION_INDEX": str(index)})
    checkpoints = [{**t.model_dump(exclude_none=True), "results": rated[t.name].get("results")} for t in doc.context.checkpoints]
    out: dict[str, Any] = {"checkpoints": checkpoints}
    selection = res.spec.selection
    chosen = select_checkpoint(checkpoints, selection.benchmark, selection.metric or "score") if selection else None
    if chosen is not None:
        out.update(selectedCheckpoint=chosen, results=rated[chosen["name"]]["results"], accuracy=rated[chosen["name"]].get("accuracy"))
        gates = [g.to_dict() for g in judge_gates(res.spec.gates or [], out["results"])]
        if gates:
            out["gates"] = gates
        print(f"[reasonops] selected {chosen['name']}: {chosen['benchmark']} {chosen['metric']} {chosen['score']}", flush=True)
    return out


def _print_gates(outcomes: list[dict[str, Any]]) -> None:
    """The verdict of an EvalRun's gates, as the operator's Passed condition says it."""
    from .gates import describe_failure

    failed = [describe_failure(g) for g in outcomes if not g.get("passed")]
    if failed:
        print(f"[reasonops] gates failed: {'; '.join(failed)}", flush=True)
    elif outcomes:
        print(f"[reasonops] {len(outcomes)} gates passed", flush=True)


def run_local(path: str | Path, output_root: str | Path, only: Optional[str] = None) -> list[dict[str, Any]]:
    """Run every resource of a YAML file locally; returns one summary per resource."""
    root = Path(output_root).resolve()
    if root.exists() and not root.is_dir():
        raise WorkloadError(reasons.REASON_INVALID_SPEC, f"--output {output_root} is a file, not a directory")
    root.mkdir(parents=True, exist_ok=True)
    os.environ[contract.Env.VOLUME_ROOT] = local_volume_root(root)  # pvc:// locations in specs, as build_document maps them
    objectstore.register()
    summaries = []
    for res in load_file(path):
        name = res.metadata["name"]
        if only and name != only:
            continue
        doc = local_document(res, root)
        print(f"[reasonops] {res.kind} {name}: revision {doc.revision} → {doc.output}", flush=True)
        for variable, ref in contract.tracking_env(doc.spec.tracking):
            if variable not in os.environ:  # in a cluster the pod gets it from the Secret key
                print(f"[reasonops] tracking: {variable} is not set here (in a cluster: key {ref.key!r} of Secret {ref.name!r})", flush=True)
        started = time.time()
        reporter = Reporter(res.kind, name, "local", doc.revision, min_interval=0)
        # An export's endpoint and region, as the operator sets them in the pod (the shell's own values win).
        os.environ.update({k: v for k, v in contract.export_environment(getattr(res.spec, "export", None)).items() if k not in os.environ})
        with _local_server(doc):
            result = _evaluate_checkpoints(res, doc, reporter) if doc.context.checkpoints else _workload(res.kind)(doc, reporter)
        result = export_result(doc, result)
        state = record_local_run(root, res, doc, result)
        _print_gates(result.get("gates") or [])
        summaries.append({"kind": res.kind, "name": name, "seconds": round(time.time() - started, 1), **state})
    return summaries
