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
from pydantic import ValidationError

from .api.common import validation_problems
from .api.v1alpha1 import KINDS, EvalRun, FineTuneJob, ReasoningDataset, Resource
from .controller import builders as b
from .errors import WorkloadError
from .progress import Reporter

log = logging.getLogger("reasonops.run")
ORDER = {"ReasoningDataset": 0, "FineTuneJob": 1, "EvalRun": 2}


def _workload(kind: str) -> Callable[[dict[str, Any], Reporter], dict[str, Any]]:
    """The workload entry of a kind, imported only when needed (each needs its own heavy extras)."""
    if kind == "ReasoningDataset":
        from . import curate

        return curate.run_resource
    if kind == "FineTuneJob":
        from . import train

        return train.run_resource
    from . import evaluate

    return evaluate.run_resource


def format_validation_error(kind: str, name: str, error: ValidationError) -> str:
    return f"{kind} {name!r} is invalid: " + "; ".join(validation_problems(error))


def parse_resource(doc: dict[str, Any]) -> Resource:
    if not isinstance(doc, dict):
        raise WorkloadError("InvalidSpec", f"a resource must be a mapping with apiVersion, kind, metadata and spec, not {type(doc).__name__}")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise WorkloadError("InvalidSpec", f"kind {kind!r} is not one of {', '.join(KINDS)}")
    name = (doc.get("metadata") or {}).get("name", "?")
    try:
        return KINDS[kind].model_validate(doc)
    except ValidationError as exc:
        raise WorkloadError("InvalidSpec", format_validation_error(kind, name, exc)) from None


def _one_line(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.YAMLError) and mark is not None:
        return f"{getattr(exc, 'problem', None) or 'invalid YAML'} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def load_file(path: str | Path) -> list[Resource]:
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise WorkloadError("InvalidSpec", f"cannot read {path}: {_one_line(exc)}") from None
    resources = [parse_resource(d) for d in docs]
    return sorted(resources, key=lambda r: ORDER[r.kind])


# --- in a pod ------------------------------------------------------------------------------------


def run_in_pod(resource_file: str) -> int:
    """Entry of every workload pod; the exit code and termination message tell the operator how it went."""
    reporter = Reporter.from_env()
    try:
        doc = json.loads(Path(resource_file).read_text())
        parse_resource(doc)
        if doc["kind"] == "FineTuneJob":
            from . import train

            if train.should_launch(doc, os.environ):  # several processes: torchrun re-enters `reasonops workload`
                train.check_master_reachable(os.environ)
                command = train.launch_command(doc, os.environ, resource_path=resource_file)
                log.info("launching %s", b.describe_command(command))
                sys.stdout.flush()
                os.execvp(command[0], command)
        result = _workload(doc["kind"])(doc, reporter)
    except WorkloadError as exc:
        log.error("%s", exc)
        reporter.finish({"error": exc.to_dict()}, message=exc.message)
        return 1
    except Exception as exc:  # an unexpected crash still says why in the termination message
        log.exception("workload crashed")
        reporter.finish({"error": {"reason": "WorkloadCrashed", "message": f"{type(exc).__name__}: {exc}"[:2000]}})
        return 2
    reporter.finish(result)
    return 0


# --- on a laptop ---------------------------------------------------------------------------------


def _local_state(output_root: Path, kind: str, name: str) -> Path:
    return output_root / "state" / f"{kind}-{name}.json"


def _read_state(output_root: Path, kind: str, name: str) -> Optional[dict[str, Any]]:
    path = _local_state(output_root, kind, name)
    return json.loads(path.read_text()) if path.exists() else None


def local_document(res: Resource, output_root: Path) -> dict[str, Any]:
    """The document the operator would hand to the pod, with references resolved to earlier local runs."""
    name = res.metadata["name"]
    spec = res.spec.to_wire()
    context: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    if isinstance(res, FineTuneJob):
        if res.spec.dataset is not None:
            context["datasetLocation"] = b.location_string(res.spec.dataset)
        else:
            ref = res.spec.datasetRef
            state = _read_state(output_root, "ReasoningDataset", ref.name)
            if state is None:
                raise WorkloadError("DatasetNotFound", f"ReasoningDataset {ref.name!r} has not been run under {output_root}; put it in the same file or run it first")
            context.update(datasetLocation=state["location"], datasetRevision=state["revision"])
        inputs["dataset"] = context.get("datasetRevision") or context["datasetLocation"]
    elif isinstance(res, EvalRun):
        model = res.spec.model
        if model.fineTuneJob:
            state = _read_state(output_root, "FineTuneJob", model.fineTuneJob)
            if state is None:
                raise WorkloadError("ModelNotFound", f"FineTuneJob {model.fineTuneJob!r} has not been run under {output_root}; put it in the same file or run it first")
            context.update(modelLocation=state["location"], modelRevision=state["revision"])
        elif model.name:
            context["modelLocation"] = b.location_string(model.volume, model.name) if model.volume else model.name
        if model.endpoint:
            context["endpoint"] = model.endpoint.url
        inputs["model"] = context.get("modelRevision") or context.get("modelLocation") or context.get("endpoint")
    revision = b.revision_of(spec, inputs)
    out_base = b.location_string(res.spec.output, name, revision) if getattr(res.spec, "output", None) else str(output_root / name / revision)
    if not (out_base.startswith("/") or "://" in out_base):
        out_base = str(output_root / out_base)
    meta = {"name": name, "namespace": res.metadata.get("namespace", "local"), "uid": "local"}
    return {"apiVersion": res.apiVersion, "kind": res.kind, "metadata": meta, "spec": spec,
            "revision": revision, "output": out_base, "context": context}


@contextlib.contextmanager
def _local_server(doc: dict[str, Any]) -> Iterator[None]:
    """An EvalRun with a model directory and no endpoint gets a local OpenAI-compatible server."""
    ctx = doc["context"]
    if doc["kind"] != "EvalRun" or ctx.get("endpoint") or doc["spec"].get("backend") == "offline":
        yield
        return
    from .serve import start_server

    model_dir = ctx.get("modelLocation")
    if model_dir and os.path.isdir(model_dir) and (Path(model_dir) / "config.json").exists():
        model_dir = str(model_dir)
    print(f"[reasonops] serving {model_dir} with the local OpenAI-compatible server (vLLM serves it in a cluster)", flush=True)
    process, url = start_server(model_dir, served_model_name=doc["metadata"]["name"])
    ctx.update(endpoint=url, servedModelName=doc["metadata"]["name"])
    try:
        yield
    finally:
        process.terminate()
        with contextlib.suppress(Exception):
            process.wait(timeout=20)


def run_local(path: str | Path, output_root: str | Path, only: Optional[str] = None) -> list[dict[str, Any]]:
    """Run every resource of a YAML file locally; returns one summary per resource."""
    root = Path(output_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    summaries = []
    for res in load_file(path):
        name = res.metadata["name"]
        if only and name != only:
            continue
        doc = local_document(res, root)
        print(f"[reasonops] {res.kind} {name}: revision {doc['revision']} → {doc['output']}", flush=True)
        started = time.time()
        reporter = Reporter(res.kind, name, "local", doc["revision"], min_interval=0)
        with _local_server(doc):
            result = _workload(res.kind)(doc, reporter)
        location = result.get("location") or result.get("modelLocation") or doc["output"]
        state = {"revision": doc["revision"], "location": location, "result": result}
        _local_state(root, res.kind, name).parent.mkdir(parents=True, exist_ok=True)
        _local_state(root, res.kind, name).write_text(json.dumps(state, indent=1))
        summaries.append({"kind": res.kind, "name": name, "seconds": round(time.time() - started, 1), **state})
    return summaries
