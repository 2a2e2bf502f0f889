"""The retraining loop of examples/gitops, driven from its own files on the local control plane.

A git repository holds a copy of `examples/gitops` plus one overlay of the test's own, `overlays/kwok`:
it puts the staging overlay into a fresh namespace and tells kwok what each simulated workload reports
(the `reasonops.io/kwok-result` pod annotation, see hack/kwok-stages.yaml). A sync is what Argo CD does
with `ServerSideApply=true`: take the commit, render the overlay with kustomize and apply it server-side
as the field manager `argocd-controller`. The operator is the chart's, installed as the example's README
says and running with the chart's RBAC only.

The loop is then walked as the README tells it, with its own commands: edit the dataset in git → sync →
new dataset revision → retrain → re-evaluate → the gate verdict in the Argo CD health of the EvalRun;
then a stricter gate in git turns the same model's evaluation Degraded, and the README's fail-fast
script refuses to promote it. After every sync, `kubectl diff` as Argo CD would run it shows no drift.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import yaml

from chart_support import CHART, HELM, TOOLS_BIN, ChartOperator, argocd_health, get, helm, wait_for

ROOT = Path(__file__).resolve().parents[1]
GITOPS = ROOT / "examples" / "gitops"
FIELD_MANAGER = "argocd-controller"  # Argo CD's field manager for server-side apply

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not HELM.exists(), reason=f"helm not built at {HELM} (hack/build-tools.sh)"),
]

# What the simulated workloads report. The staging overlay gates aime24 at 0.03 and math500 at 0.45.
EVAL_RESULT = {
    "results": [
        {"benchmark": "aime24", "score": 0.1, "problems": 30, "samples": 4},
        {"benchmark": "math500", "score": 0.62, "problems": 100, "samples": 1},
        {"benchmark": "amc23", "score": 0.4, "problems": 40, "samples": 4},
    ],
    "accuracy": 0.46,
}


def kwok_overlay(namespace: str, selected: int) -> str:
    """The test's overlay: staging in `namespace`, with kwok told what curation, training and
    evaluation report (curation takes 5 s, so a new revision is seen in progress)."""
    def annotations(kind: str, name: str, result: dict, extra: dict | None = None) -> dict:
        return {
            "target": {"group": "reasonops.io", "kind": kind, "name": name},
            "patch": yaml.safe_dump({
                "apiVersion": "reasonops.io/v1alpha1", "kind": kind, "metadata": {"name": name},
                "spec": {"resources": {"podAnnotations": {"reasonops.io/kwok-result": json.dumps(result), **(extra or {})}}},
            }),
        }
    return yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": namespace,
        "resources": ["../staging"],
        "patches": [
            annotations("ReasoningDataset", "math-reasoning", {"samples": selected, "contentHash": f"sha256-{selected}"},
                        {"pod-complete.stage.kwok.x-k8s.io/delay": "5s"}),
            annotations("FineTuneJob", "reasoner", {"finalLoss": 0.31, "steps": 120}),
            annotations("EvalRun", "reasoner-eval", EVAL_RESULT),
        ],
    }, sort_keys=False)


class Repo:
    """A git repository with the GitOps example plus the test's own overlay (`overlays/<overlay>`,
    rendered and synced), and the sync of a GitOps controller."""

    def __init__(self, path: Path, cluster, namespace: str, overlay: str = "kwok", kustomization: str | None = None) -> None:
        self.path, self.cluster, self.namespace, self.overlay = path, cluster, namespace, overlay
        shutil.copytree(GITOPS, path)
        (path / "overlays" / overlay).mkdir()
        (path / "overlays" / overlay / "kustomization.yaml").write_text(kustomization or kwok_overlay(namespace, selected=200))
        self.git("init", "-q", "-b", "main")
        self.commit("the pipeline")

    def git(self, *args: str) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
               "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
        return subprocess.run(["git", "-C", str(self.path), *args], env=env, check=True, capture_output=True, text=True).stdout

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def edit(self, relative: str, old: str, new: str) -> None:
        """A one-place text edit, as a person makes it in the file."""
        file = self.path / relative
        text = file.read_text()
        assert text.count(old) == 1, f"{old!r} is not in {relative} exactly once"
        file.write_text(text.replace(old, new))

    def render(self) -> str:
        """The overlay at HEAD, as a GitOps controller renders it: from the commit, not the work tree."""
        checkout = self.path.parent / f"checkout-{self.git('rev-parse', '--short', 'HEAD').strip()}"
        if not checkout.exists():  # a commit is checked out once; syncs and diffs of it reuse it
            archive = subprocess.run(["git", "-C", str(self.path), "archive", "HEAD"], check=True, capture_output=True).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(checkout, filter="data")
        return self.cluster.kubectl("kustomize", str(checkout / "overlays" / self.overlay)).stdout

    def sync(self) -> None:
        self.cluster.kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", input=self.render())

    def drift(self) -> str:
        """What Argo CD's server-side diff would report: empty when live objects match git."""
        proc = self.cluster.kubectl("diff", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-",
                                    input=self.render(), check=False)
        assert proc.returncode in (0, 1), proc.stderr  # 1: differences found; more: kubectl failed
        return proc.stdout


def readme_scripts() -> list[str]:
    """The shell blocks of the README's "Waiting in scripts" section, in order."""
    text = (GITOPS / "README.md").read_text()
    section = text.split("## Waiting in scripts", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def run_script(cluster, script: str, namespace: str, timeout_s: int = 120) -> subprocess.CompletedProcess:
    """A README script with its namespace and hour-long timeouts made the test's."""
    script = re.sub(r"--timeout=\d+[hm]", f"--timeout={timeout_s}s", script)
    script = re.sub(r"^NS=.*$", "", script, flags=re.M)
    env = {**cluster.env, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-euo", "pipefail", "-c", f"NS={namespace}\n{script}"], env=env,
                          capture_output=True, text=True, timeout=timeout_s * 6)


def bind_claims(cluster, namespace: str, rendered: str) -> list[str]:
    """A bound volume for each claim of the render (a CSI driver's job in a real cluster)."""
    names = []
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc["kind"] != "PersistentVolumeClaim":
            continue
        claim, name = doc["metadata"]["name"], f"{namespace}-{doc['metadata']['name']}"
        pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
              "spec": {"capacity": {"storage": doc["spec"]["resources"]["requests"]["storage"]},
                       "accessModes": doc["spec"]["accessModes"], "storageClassName": "",
                       "hostPath": {"path": f"/srv/{namespace}/{claim}"}, "claimRef": {"namespace": namespace, "name": claim}}}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(pv))
        names.append(name)
    return names


def jobs_of(cluster, namespace: str, name: str) -> list[str]:
    out = cluster.kubectl("get", "jobs", "-n", namespace, "-l", f"reasonops.io/name={name}", "-o", "json").stdout
    return sorted(j["metadata"]["name"] for j in json.loads(out)["items"])


@pytest.fixture
def pipeline(cluster, namespace, tmp_path):
    """The operator from the chart (namespace `namespace`) and the example's repository, whose
    pipeline lives in a namespace of its own, with the workload ServiceAccount the chart puts there."""
    c = cluster
    pipeline_ns = f"{namespace}-staging"
    c.kubectl("create", "namespace", pipeline_ns)
    release = f"rt{uuid.uuid4().hex[:6]}"
    helm("install", release, str(CHART), "-n", namespace, "--kubeconfig", c.kubeconfig,
         "--set", f"workloadServiceAccount.extraNamespaces={{{pipeline_ns}}}", env=c.env)
    operator = ChartOperator(c, namespace, release, tmp_path)
    repo = Repo(tmp_path / "repo", c, pipeline_ns)
    volumes = bind_claims(c, pipeline_ns, repo.render())
    operator.start()
    try:
        yield repo, operator
    finally:
        operator.stop()
        helm("uninstall", release, "-n", namespace, "--kubeconfig", c.kubeconfig, check=False, env=c.env)
        c.kubectl("delete", "namespace", pipeline_ns, "--wait=false", check=False)
        if volumes:
            c.kubectl("delete", "pv", *volumes, "--wait=false", check=False)


@pytest.mark.timeout(600)
def test_gitops_example_retrains_and_reevaluates_on_a_dataset_change_in_git(pipeline):
    repo, operator = pipeline
    c, ns = repo.cluster, repo.namespace
    waits, handover, verdict = readme_scripts()

    def live(kind: str, name: str) -> dict:
        return get(c, kind, ns, name)

    def diagnose() -> str:
        return operator.diagnose(ns)

    # --- first sync: the pipeline from nothing, in whatever order the resources arrive ------------
    repo.sync()
    proc = run_script(c, waits, ns)
    assert proc.returncode == 0, f"{proc.stderr}\n{diagnose()}"
    ds, ft, ev = live("reasoningdataset", "math-reasoning"), live("finetunejob", "reasoner"), live("evalrun", "reasoner-eval")
    assert ds["status"]["selected"] == 200
    assert ft["status"]["datasetRevision"] == ds["status"]["output"]["revision"]
    assert ev["status"]["modelRevision"] == ft["status"]["modelRevision"]
    assert {g["benchmark"]: g["passed"] for g in ev["status"]["gates"]} == {"aime24": True, "math500": True}
    for obj in (ds, ft, ev):
        assert argocd_health(obj)[0] == "Healthy", (obj["kind"], argocd_health(obj), obj["status"])
        # Git's fields only: the operator adds no annotations or finalizers, so there is nothing to prune or diff.
        assert not obj["metadata"].get("finalizers")
        assert not any(k.startswith(("kopf.", "reasonops.io/")) for k in obj["metadata"].get("annotations") or {})
    assert repo.drift() == "", "live objects differ from git after the operator's work"
    first = {"dataset": ds["status"]["revision"], "output": ds["status"]["output"]["revision"],
             "model": ft["status"]["modelRevision"], "eval": ev["status"]["revision"]}

    # --- the loop: raise the selection in git (the README's step 1) -----------------------------
    repo.edit("overlays/staging/kustomization.yaml", "value: 200", "value: 400")
    # (what the simulated curation of the new recipe will report)
    (repo.path / "overlays" / "kwok" / "kustomization.yaml").write_text(kwok_overlay(ns, selected=400))
    repo.commit("staging: select 400 problems")
    repo.sync()

    # New dataset revision, curating; meanwhile the current model stays Ready and keeps its verdict.
    ds = wait_for("the new dataset revision in progress", lambda: (d := live("reasoningdataset", "math-reasoning"))
                  .get("status", {}).get("revision") not in (None, first["dataset"]) and d, 60, diagnose)
    assert ds["status"]["phase"] in ("Pending", "Running") and argocd_health(ds)[0] == "Progressing", (ds["status"], argocd_health(ds))
    ft = live("finetunejob", "reasoner")
    assert argocd_health(ft)[0] == "Healthy" and ft["status"]["modelRevision"] == first["model"]
    assert argocd_health(live("evalrun", "reasoner-eval"))[0] == "Healthy"

    # The README's hand-over script: dataset Ready → fine-tune on its revision → eval on the new model.
    proc = run_script(c, handover, ns)
    assert proc.returncode == 0, f"{proc.stderr}\n{diagnose()}"
    proc = run_script(c, verdict, ns)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{diagnose()}"
    assert re.search(r"^aime24\t0\.1\t0\.03\ttrue$", proc.stdout, flags=re.M), proc.stdout

    ds, ft, ev = live("reasoningdataset", "math-reasoning"), live("finetunejob", "reasoner"), live("evalrun", "reasoner-eval")
    assert ds["status"]["selected"] == 400 and ds["status"]["output"]["contentHash"] == "sha256-400"
    assert ds["status"]["output"]["revision"] != first["output"]
    assert first["dataset"] in {h["revision"] for h in ds["status"]["history"]}, "the old revision stays on record"
    assert ft["status"]["datasetRevision"] == ds["status"]["output"]["revision"]
    assert ft["status"]["modelRevision"] != first["model"], "the fine-tune retrained on the new dataset"
    assert ev["status"]["modelRevision"] == ft["status"]["modelRevision"] and ev["status"]["phase"] == "Succeeded"
    assert ev["status"]["revision"] != first["eval"], "the evaluation ran again, for the new model"
    assert [argocd_health(o)[0] for o in (ds, ft, ev)] == ["Healthy"] * 3
    assert len(jobs_of(c, ns, "reasoner")) == 2 and len(jobs_of(c, ns, "reasoner-eval")) == 2  # one per revision
    assert repo.drift() == "", "the retraining left git and the cluster apart"
    second_model = ft["status"]["modelRevision"]

    # --- a stricter gate in git: the same model re-evaluated, and not promoted ------------------
    repo.edit("overlays/staging/kustomization.yaml", '{benchmark: aime24, minScore: "0.03"}', '{benchmark: aime24, minScore: "0.50"}')
    repo.commit("staging: aime24 must reach 0.50")
    repo.sync()
    proc = run_script(c, verdict, ns)
    assert proc.returncode == 1, f"a missed gate must fail the script\n{proc.stdout}\n{proc.stderr}\n{diagnose()}"
    assert "gates failed: not promoting" in proc.stdout
    assert re.search(r"^aime24\t0\.1\t0\.50\tfalse$", proc.stdout, flags=re.M), proc.stdout
    ev = live("evalrun", "reasoner-eval")
    status, message = argocd_health(ev)
    assert status == "Degraded" and "GatesFailed" in message and "aime24" in message, (status, message)
    ft = live("finetunejob", "reasoner")
    assert ft["status"]["modelRevision"] == second_model and len(jobs_of(c, ns, "reasoner")) == 2, "a gate change does not retrain"
    assert repo.drift() == ""
    assert operator.denials(0) == set(), "the chart's RBAC refused the operator something"
