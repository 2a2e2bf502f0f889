"""The GitOps example: overlays render to valid resources, the Argo CD and Flux manifests point at
them, and the Argo CD health script maps the operator's conditions to the right health."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from reasonops.api.v1alpha1 import KINDS
from reasonops import contract as k
from reasonops.controller import builders as b

from chart_support import HEALTH_LUA, argocd_health

ROOT = Path(__file__).resolve().parents[1]
GITOPS = ROOT / "examples" / "gitops"
KUBECTL = Path(os.environ.get("REASONOPS_TOOLS", Path.home() / ".cache" / "reasonops" / "tools")) / "bin" / "kubectl"
OVERLAYS = {"staging": "reasoner-staging", "production": "reasoner-prod"}


def kustomize(path: Path) -> list[dict[str, Any]]:
    if not KUBECTL.exists():
        pytest.skip(f"kubectl not built at {KUBECTL} (hack/build-tools.sh)")
    proc = subprocess.run([str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module", params=sorted(OVERLAYS))
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, kustomize(GITOPS / "overlays" / request.param)


def test_overlay_renders_valid_resources_into_its_namespace(overlay):
    name, docs = overlay
    kinds = sorted(d["kind"] for d in docs)
    evals = ["EvalRun", "EvalRun"] if name == "production" else ["EvalRun"]  # production: and the base model's
    assert kinds == [*evals, "FineTuneJob", "PersistentVolumeClaim", "PersistentVolumeClaim", "ReasoningDataset"]
    for doc in docs:
        assert doc["metadata"]["namespace"] == OVERLAYS[name]
        if doc["kind"] in KINDS:
            KINDS[doc["kind"]].model_validate(doc)  # the operator's own models: what it will accept


def test_overlay_references_resolve_within_the_render(overlay):
    _, docs = overlay
    datasets, jobs, evals = by_kind(docs, "ReasoningDataset"), by_kind(docs, "FineTuneJob"), by_kind(docs, "EvalRun")
    claims = set(by_kind(docs, "PersistentVolumeClaim"))
    (ft,) = jobs.values()
    ev = evals.pop("reasoner-eval")
    (ds,) = datasets.values()
    assert ft["spec"]["datasetRef"]["name"] in datasets
    assert ft["spec"]["retrainPolicy"] == "OnDatasetChange"
    assert ev["spec"]["model"]["fineTuneJob"] in jobs
    assert ev["spec"]["gates"], "the evaluation decides promotion through its gates"
    gated = {g["benchmark"] for g in ev["spec"]["gates"]}
    assert gated <= {x["name"] for x in ev["spec"]["benchmarks"]}, "every gate needs its benchmark run"
    for baseline in {g["baseline"] for g in ev["spec"]["gates"] if "baseline" in g}:  # relative gates: the same problems
        base = evals.pop(baseline)
        assert base["spec"]["benchmarks"] == ev["spec"]["benchmarks"] and base["spec"]["protocol"] == ev["spec"]["protocol"]
        assert base["spec"]["output"]["volume"]["claimName"] in claims
    assert not evals, "every other EvalRun is a baseline of reasoner-eval's gates"
    # Outputs go to claims the overlay creates, which GitOps must never prune.
    assert {ds["spec"]["output"]["volume"]["claimName"], ft["spec"]["output"]["volume"]["claimName"]} <= claims
    for pvc in by_kind(docs, "PersistentVolumeClaim").values():
        assert "Prune=false" in pvc["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
        assert pvc["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/prune"] == "disabled"
    # Decontamination covers what is evaluated: no benchmark problem can leak into training.
    decontaminated = next(s["decontaminate"]["benchmarks"] for s in ds["spec"]["stages"] if "decontaminate" in s)
    assert {x["name"] for x in ev["spec"]["benchmarks"]} <= set(decontaminated)


def test_staging_is_a_small_version_of_production():
    staging, production = (kustomize(GITOPS / "overlays" / o) for o in ("staging", "production"))
    s_ft, p_ft = by_kind(staging, "FineTuneJob")["reasoner"], by_kind(production, "FineTuneJob")["reasoner"]
    assert s_ft["spec"]["baseModel"]["name"] == "Qwen/Qwen2.5-1.5B-Instruct"
    assert p_ft["spec"]["baseModel"]["name"] == "Qwen/Qwen2.5-32B-Instruct"
    assert s_ft["spec"]["numNodes"] * s_ft["spec"]["gpusPerNode"] < p_ft["spec"]["numNodes"] * p_ft["spec"]["gpusPerNode"]
    s_ds, p_ds = by_kind(staging, "ReasoningDataset")["math-reasoning"], by_kind(production, "ReasoningDataset")["math-reasoning"]
    s_select = next(s["select"]["size"] for s in s_ds["spec"]["stages"] if "select" in s)
    p_select = next(s["select"]["size"] for s in p_ds["spec"]["stages"] if "select" in s)
    assert s_select < p_select
    # The JSON patch swapped the teacher and left the other stages as the base has them.
    assert [s["name"] for s in s_ds["spec"]["stages"]] == [s["name"] for s in p_ds["spec"]["stages"]]
    teacher = next(s for s in s_ds["spec"]["stages"] if "generate" in s)["generate"]["teachers"][0]["sampler"]
    assert teacher["model"].endswith("Qwen-7B") and teacher["tensorParallelSize"] == 1
    # Merge patches add to maps (resources keep memory) and production adds Kueue's label.
    assert p_ft["spec"]["resources"]["memory"] == "1600Gi" and p_ft["spec"]["resources"]["nodeSelector"]
    assert p_ft["metadata"]["labels"][b.QUEUE_LABEL] == "gpu-batch"
    assert b.QUEUE_LABEL not in s_ft["metadata"].get("labels", {})
    # Production's promotion also waits on beating the base model at the lower 95% bound (a relative gate).
    p_gates = by_kind(production, "EvalRun")["reasoner-eval"]["spec"]["gates"]
    assert {"benchmark": "aime24", "baseline": "base-eval", "minDifference": "0", "bound": "lower95"} in p_gates
    assert "base-eval" not in by_kind(staging, "EvalRun")
    # Different specs are different revisions: the same git history drives both environments independently.
    assert k.revision_of("ReasoningDataset", s_ds["spec"]) != k.revision_of("ReasoningDataset", p_ds["spec"])


def test_argocd_applications_and_flux_point_at_the_overlays():
    apps = list(yaml.safe_load_all((GITOPS / "argocd" / "application.yaml").read_text()))
    assert {a["metadata"]["name"] for a in apps} == {"reasoner-staging", "reasoner-production"}
    for app in apps:
        assert app["kind"] == "Application" and app["apiVersion"] == "argoproj.io/v1alpha1"
        path = ROOT / app["spec"]["source"]["path"]
        assert (path / "kustomization.yaml").exists(), path
        namespace = OVERLAYS[path.name]
        assert app["spec"]["destination"]["namespace"] == namespace
    staging = next(a for a in apps if a["metadata"]["name"] == "reasoner-staging")
    production = next(a for a in apps if a["metadata"]["name"] == "reasoner-production")
    assert staging["spec"]["syncPolicy"]["automated"]["prune"] is True
    assert "automated" not in production["spec"]["syncPolicy"], "production is promoted by hand"

    repo = yaml.safe_load((GITOPS / "flux" / "gitrepository.yaml").read_text())
    ks = yaml.safe_load((GITOPS / "flux" / "kustomization.yaml").read_text())
    assert ks["spec"]["sourceRef"] == {"kind": "GitRepository", "name": repo["metadata"]["name"]}
    assert (ROOT / ks["spec"]["path"] / "kustomization.yaml").exists()
    assert {e["kind"] for e in ks["spec"]["healthCheckExprs"]} == set(KINDS)
    evalrun = next(e for e in ks["spec"]["healthCheckExprs"] if e["kind"] == "EvalRun")
    assert "Passed" in evalrun["failed"] and "Passed" in evalrun["current"]


def test_argocd_configmap_carries_the_chart_health_script_for_each_kind():
    cm = yaml.safe_load((GITOPS / "argocd" / "argocd-cm-health.yaml").read_text())
    script = HEALTH_LUA.read_text()
    assert cm["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    assert cm["data"] == {f"resource.customizations.health.reasonops.io_{kind}": script for kind in KINDS}


# --- the Lua health check, run by the Lua 5.1 Argo CD embeds (gopher-lua implements 5.1) -----------


def _conditions(ready="False", progressing="False", failed="False", suspended="False", reason="Running",
                message="", passed: str | None = None, passed_reason="Pending", gen=1) -> list[dict]:
    def cond(type_, status, why, text=""):
        return {"type": type_, "status": status, "reason": why, "message": text, "observedGeneration": gen,
                "lastTransitionTime": "2025-01-01T00:00:00Z"}
    out = [
        cond("Ready", ready, reason, message),
        cond("Progressing", progressing, reason, message),
        cond("Failed", failed, reason if failed == "True" else "NotFailed", message if failed == "True" else ""),
        cond("Suspended", suspended, "Suspended" if suspended == "True" else "NotSuspended"),
    ]
    if passed is not None:
        out.append(cond("Passed", passed, passed_reason, {"GatesFailed": "aime24: 0.41 < 0.5", "GatesPassed": "2 gates passed"}.get(passed_reason, "")))
    return out


def _obj(kind: str, conditions: list[dict] | None, generation: int = 1, observed: int | None = 1) -> dict:
    obj: dict[str, Any] = {"apiVersion": "reasonops.io/v1alpha1", "kind": kind, "metadata": {"name": "x", "generation": generation}}
    if conditions is not None:
        obj["status"] = {"conditions": conditions, **({"observedGeneration": observed} if observed is not None else {})}
    return obj


CASES = [
    ("no status yet", _obj("ReasoningDataset", None), "Progressing", "operator"),
    ("running", _obj("FineTuneJob", _conditions(progressing="True", reason="Running", message="Job ft-1 is running (4 pods)")), "Progressing", "Running: Job ft-1"),
    ("queued by Kueue", _obj("FineTuneJob", _conditions(progressing="True", reason="Queued")), "Progressing", "Queued"),
    ("waiting for its dataset", _obj("FineTuneJob", _conditions(progressing="True", reason="WaitingForDataset")), "Progressing", "WaitingForDataset"),
    ("succeeded", _obj("ReasoningDataset", _conditions(ready="True", reason="Succeeded", message="800 samples")), "Healthy", "800 samples"),
    ("stale after a git change", _obj("ReasoningDataset", _conditions(ready="True", reason="Succeeded"), generation=2, observed=1), "Progressing", "generation 2"),
    ("failed", _obj("FineTuneJob", _conditions(failed="True", reason="BackoffLimitExceeded", message="pod ft-0 OOMKilled")), "Degraded", "BackoffLimitExceeded: pod ft-0 OOMKilled"),
    ("invalid spec", _obj("ReasoningDataset", _conditions(failed="True", reason="InvalidSpec", message="spec.stages.0: bad")), "Degraded", "InvalidSpec"),
    ("its dataset failed", _obj("FineTuneJob", _conditions(progressing="True", reason="DatasetFailed", message="EmptyDataset")), "Degraded", "DatasetFailed"),
    ("its model failed", _obj("EvalRun", _conditions(progressing="True", reason="ModelFailed"), ), "Degraded", "ModelFailed"),
    ("its fine-tune kept no servable checkpoints", _obj("EvalRun", _conditions(progressing="True", reason="NoCheckpoints")), "Degraded", "NoCheckpoints"),
    ("its baseline failed", _obj("EvalRun", _conditions(progressing="True", reason="BaselineFailed")), "Degraded", "BaselineFailed"),
    ("its baseline is unusable", _obj("EvalRun", _conditions(progressing="True", reason="BaselineUnusable")), "Degraded", "BaselineUnusable"),
    ("waiting for its baseline", _obj("EvalRun", _conditions(progressing="True", reason="WaitingForBaseline")), "Progressing", "WaitingForBaseline"),
    ("waiting for a selection", _obj("EvalRun", _conditions(progressing="True", reason="WaitingForSelection")), "Progressing", "WaitingForSelection"),
    ("suspended", _obj("FineTuneJob", _conditions(suspended="True", reason="Suspended")), "Suspended", "Suspended"),
    ("gates passed", _obj("EvalRun", _conditions(ready="True", reason="Succeeded", passed="True", passed_reason="GatesPassed")), "Healthy", "GatesPassed: 2 gates passed"),
    ("no gates", _obj("EvalRun", _conditions(ready="True", reason="Succeeded", passed="True", passed_reason="NoGates")), "Healthy", "NoGates"),
    ("a gate missed", _obj("EvalRun", _conditions(ready="True", reason="Succeeded", passed="False", passed_reason="GatesFailed")), "Degraded", "GatesFailed: aime24: 0.41 < 0.5"),
    ("evaluating", _obj("EvalRun", _conditions(progressing="True", reason="Running", passed="Unknown")), "Progressing", "Running"),
    ("results without a verdict", _obj("EvalRun", _conditions(ready="True", reason="Succeeded", passed="Unknown")), "Progressing", "verdict"),
    ("evaluation failed", _obj("EvalRun", _conditions(failed="True", reason="EndpointUnreachable", passed="False", passed_reason="Failed")), "Degraded", "EndpointUnreachable"),
]


@pytest.mark.parametrize("obj, status, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_argocd_health_script(obj, status, message):
    health, text = argocd_health(obj)
    assert health == status
    assert message in text


def test_argocd_health_script_conditions_are_the_operators():
    """The script names conditions and reasons; they must be the ones the operator writes."""
    from reasonops.api import common as c

    script = HEALTH_LUA.read_text()
    for name in (c.COND_READY, c.COND_PROGRESSING, c.COND_FAILED, c.COND_SUSPENDED, c.COND_PASSED,
                 c.REASON_DATASET_FAILED, c.REASON_MODEL_FAILED, c.REASON_NO_CHECKPOINTS):
        assert f'"{name}"' in script
