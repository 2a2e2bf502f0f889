"""The Helm chart: lint, rendered manifests for interesting values, schema errors, and a real install.

The cluster test installs the chart into the local control plane. kwok runs pods there, so the
operator's own pod cannot do anything; instead the operator runs here as a subprocess with a token
of the chart's ServiceAccount and the environment the chart's Deployment sets. It drives a dataset →
fine-tune → served evaluation chain to the end, which exercises every verb the operator uses; then
`kubectl auth can-i` shows that the grants stop there.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from reasonops.controller import builders
from reasonops.controller import labels as child_labels
from reasonops.controller.settings import Settings
from reasonops.progress import Reporter

from chart_support import CHART, HELM, ChartOperator, cond as _cond, get as _get, helm, wait_for as _wait_for

ROOT = Path(__file__).resolve().parents[1]
KUBE_VERSION = "1.34.0"  # `helm template` has no cluster to ask

needs_helm = pytest.mark.skipif(not HELM.exists(), reason=f"helm not built at {HELM} (hack/build-tools.sh)")
pytestmark = needs_helm

# The operator's rules, verb by verb. A change here is a change of the chart's security surface.
OPERATOR_RULES = {
    ("reasonops.io", "reasoningdatasets"): {"list", "watch"},
    ("reasonops.io", "finetunejobs"): {"list", "watch"},
    ("reasonops.io", "evalruns"): {"list", "watch"},
    ("reasonops.io", "reasoningdatasets/status"): {"patch"},
    ("reasonops.io", "finetunejobs/status"): {"patch"},
    ("reasonops.io", "evalruns/status"): {"patch"},
    ("batch", "jobs"): {"list", "watch", "create", "patch", "deletecollection"},
    ("", "pods"): {"list", "watch"},
    ("", "pods/eviction"): {"create"},  # the peers of a failed training pod (group restart), not counted as failures
    ("apps", "deployments"): {"list", "watch", "create", "patch", "delete"},
    ("", "services"): {"create", "patch", "deletecollection"},
    ("", "configmaps"): {"create", "deletecollection"},
    ("networking.k8s.io", "networkpolicies"): {"create", "patch", "deletecollection"},
    ("", "events"): {"create", "list"},  # list: why a Job's pods were refused (FailedCreate)
    ("kueue.x-k8s.io", "workloads"): {"list", "watch", "patch"},  # why a queued Job waits; spec.active to suspend it
}
CLUSTER_ONLY_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}
WORKLOAD_RULES = {
    **{("reasonops.io", k): {"get"} for k in ("reasoningdatasets", "finetunejobs", "evalruns")},
    **{("reasonops.io", f"{k}/status"): {"get", "patch"} for k in ("reasoningdatasets", "finetunejobs", "evalruns")},
    ("", "events"): {"create"},  # a failed status patch is reported as an Event
}


def render(values: dict[str, Any] | None = None, check: bool = True) -> Any:
    """The chart's manifests for these values (release `rel` in reasonops-system), or helm's result when check=False."""
    proc = helm("template", "rel", str(CHART), "-n", "reasonops-system", "--kube-version", KUBE_VERSION, "-f", "-",
                input=yaml.safe_dump(values or {}), check=check)
    if not check:
        return proc
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def find(docs: list[dict], kind: str, name: str | None = None, namespace: str | None = None) -> list[dict]:
    return [
        d for d in docs
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def one(docs: list[dict], kind: str, **kw: str) -> dict:
    found = find(docs, kind, **kw)
    assert len(found) == 1, f"expected one {kind} {kw}, found {[d['metadata'] for d in found]}"
    return found[0]


def rules_of(role: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def operator_container(docs: list[dict]) -> dict:
    deployment = one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


# --- lint and defaults ---------------------------------------------------------------------------


def test_sandbox_pods_are_closed_by_a_deny_all_network_policy_per_namespace():
    policies = [d for d in render({"watchNamespaces": ["a", "b"]}) if d["kind"] == "NetworkPolicy"]
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["a", "b", "reasonops-system"]
    spec = policies[0]["spec"]
    assert spec["podSelector"]["matchLabels"]["reasonops.io/component"] == "sandbox"
    assert spec["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in spec and "egress" not in spec
    assert not [d for d in render({"sandbox": {"denyAllNetworkPolicy": False}}) if d["kind"] == "NetworkPolicy"]


def test_helm_lint_is_clean():
    proc = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in proc.stdout


def test_every_value_is_documented_with_a_comment_starting_with_its_name():
    lines = (CHART / "values.yaml").read_text().splitlines()
    path: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("-") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0]
        path = [(ind, k) for ind, k in path if ind < indent] + [(indent, key)]
        if path[0][1] in ("images", "resources", "podSecurityContext", "securityContext") and len(path) > 2:
            continue  # leaves of Kubernetes objects and of the image triples are described by their parent
        if path[0][1] in ("resources", "podSecurityContext", "securityContext") and len(path) > 1:
            continue
        comment = []
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.insert(0, lines[j].strip())
            j -= 1
        dotted = ".".join(k for _, k in path)
        assert comment and comment[0].startswith(f"# {dotted}"), f"values.yaml: {dotted} needs a comment starting with its name"


def test_default_install_is_cluster_wide_with_a_least_privilege_cluster_role():
    docs = render()
    role = one(docs, "ClusterRole", name="rel-reasonops")
    assert rules_of(role) == {**OPERATOR_RULES, **CLUSTER_ONLY_RULES}
    binding = one(docs, "ClusterRoleBinding", name="rel-reasonops")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "rel-reasonops"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-reasonops", "namespace": "reasonops-system"}]
    assert one(docs, "ServiceAccount", name="rel-reasonops", namespace="reasonops-system")
    # Only the workload Role is namespaced; the operator has no Role of its own.
    assert [r["metadata"]["name"] for r in find(docs, "Role")] == ["rel-reasonops-workload"]
    assert not find(docs, "ServiceMonitor") and not find(docs, "PodMonitor")
    container = operator_container(docs)
    assert "--namespace" not in container["args"]


def test_no_rule_grants_secrets_nodes_wildcards_or_spec_writes():
    for values in (None, {"watchNamespaces": ["a"]}):
        for role in find(render(values), "ClusterRole") + find(render(values), "Role"):
            for (group, resource), verbs in rules_of(role).items():
                assert "*" not in verbs and resource != "*" and group != "*"
                assert resource not in ("secrets", "nodes", "pods/exec", "serviceaccounts/token")
                if group == "reasonops.io" and "/" not in resource:
                    assert verbs <= {"get", "list", "watch"}, f"{resource}: the spec is the user's, never written"
                if resource == "customresourcedefinitions":
                    assert verbs == {"list", "watch"}


def test_operator_deployment_is_hardened_single_replica_and_probed():
    docs = render()
    deployment = one(docs, "Deployment", name="rel-reasonops")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "rel-reasonops"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(docs)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["command"] == ["reasonops"] and container["args"][:2] == ["operator", "--liveness"]
    assert container["args"][2] == "http://0.0.0.0:8081/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    # A read-only root needs a writable /tmp for HOME.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert env_of(container)["HOME"] == "/tmp"


def test_default_images_and_settings_match_the_operator_defaults():
    env = env_of(operator_container(render()))
    defaults = Settings()
    assert env["REASONOPS_CURATE_IMAGE"] == defaults.curate_image
    assert env["REASONOPS_TRAIN_IMAGE"] == defaults.train_image
    assert env["REASONOPS_EVAL_IMAGE"] == defaults.eval_image
    assert env["REASONOPS_SERVE_IMAGE"] == defaults.serve_image
    assert env["REASONOPS_IMAGE_PULL_POLICY"] == defaults.image_pull_policy
    assert env["REASONOPS_HISTORY_LIMIT"] == str(defaults.history_limit)
    assert env["REASONOPS_METRICS_PORT"] == str(defaults.metrics_port)
    assert env["REASONOPS_DEFAULT_GPUS_PER_NODE"] == str(defaults.default_gpus_per_node)
    assert env["REASONOPS_NAMESPACES"] == ""
    assert "REASONOPS_TTL_SECONDS_AFTER_FINISHED" not in env and "REASONOPS_POD_ANNOTATIONS" not in env
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert operator_container(render())["image"] == f"ghcr.io/reasonops/operator:{chart['appVersion']}"
    # The settings the chart passes are the ones Settings.from_env reads.
    os_env = {k: v for k, v in env.items() if k.startswith("REASONOPS_")}
    from_env = _settings_from(os_env)
    assert from_env.workload_service_account == "reasonops-workload" and from_env.namespaces == ()


def test_every_default_image_is_built_by_a_non_root_dockerfile_in_images():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, image in values["images"].items():
        repository = image["repository"]
        assert repository.startswith("ghcr.io/reasonops/"), repository
        dockerfile = ROOT / "images" / f"{repository.rsplit('/', 1)[1]}.Dockerfile"
        text = dockerfile.read_text()
        assert "USER 1000:1000" in text, f"{dockerfile.name} must not run as root"
        assert (ROOT / "images" / f"{dockerfile.name}.dockerignore").exists()


def _settings_from(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return Settings.from_env()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_workload_service_account_is_minimal_and_named_for_the_operator():
    docs = render()
    sa = one(docs, "ServiceAccount", name="reasonops-workload", namespace="reasonops-system")
    assert sa["metadata"]["labels"]["app.kubernetes.io/component"] == "workload"
    role = one(docs, "Role", name="rel-reasonops-workload", namespace="reasonops-system")
    assert rules_of(role) == WORKLOAD_RULES
    binding = one(docs, "RoleBinding", name="rel-reasonops-workload", namespace="reasonops-system")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "reasonops-workload", "namespace": "reasonops-system"}]
    assert env_of(operator_container(docs))["REASONOPS_WORKLOAD_SERVICE_ACCOUNT"] == "reasonops-workload"


# --- interesting combinations ------------------------------------------------------------------------


def test_watch_namespaces_gives_roles_per_namespace_and_nothing_cluster_scoped():
    docs = render({"watchNamespaces": ["team-a", "team-b"]})
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    assert all(d["metadata"].get("namespace") for d in docs), "every object is namespaced"
    for ns in ("team-a", "team-b"):
        assert rules_of(one(docs, "Role", name="rel-reasonops", namespace=ns)) == OPERATOR_RULES
        binding = one(docs, "RoleBinding", name="rel-reasonops", namespace=ns)
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rel-reasonops", "namespace": "reasonops-system"}]
    # The operator needs no rights where it runs unless that namespace is listed.
    assert not find(docs, "Role", name="rel-reasonops", namespace="reasonops-system")
    container = operator_container(docs)
    assert container["args"][3:] == ["--namespace", "team-a", "--namespace", "team-b"]
    assert env_of(container)["REASONOPS_NAMESPACES"] == "team-a,team-b"
    # Workload pods need their ServiceAccount in each namespace they run in (and the release's).
    for ns in ("reasonops-system", "team-a", "team-b"):
        one(docs, "ServiceAccount", name="reasonops-workload", namespace=ns)
        assert rules_of(one(docs, "Role", name="rel-reasonops-workload", namespace=ns)) == WORKLOAD_RULES


def test_workload_service_account_in_extra_namespaces_without_duplicates():
    docs = render({"watchNamespaces": ["reasonops-system"], "workloadServiceAccount": {"extraNamespaces": ["lab", "reasonops-system"]}})
    namespaces = sorted(d["metadata"]["namespace"] for d in find(docs, "ServiceAccount", name="reasonops-workload"))
    assert namespaces == ["lab", "reasonops-system"]


def test_service_monitor_and_pod_monitors():
    docs = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}, "interval": "15s"},
                               "podMonitor": {"enabled": True}}})
    service = one(docs, "Service", name="rel-reasonops-metrics")
    monitor = one(docs, "ServiceMonitor", name="rel-reasonops")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    assert sorted(m["metadata"]["name"] for m in find(docs, "PodMonitor")) == ["rel-reasonops-servers", "rel-reasonops-training"]
    for pod_monitor in find(docs, "PodMonitor"):
        assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
        assert pod_monitor["spec"]["selector"]["matchLabels"][child_labels.LABEL_MANAGED_BY] == child_labels.MANAGED_BY


def _pods(docs: list[dict]) -> list[tuple[str, dict]]:
    """(what, pod template) of every pod a monitor may select: the operator's (from the chart) and the workload
    pods as the operator builds them from the examples."""
    from reasonops import contract
    from reasonops.api.v1alpha1 import EvalRun, FineTuneJob, ReasoningDataset

    settings = Settings()

    def example(name: str, kind: str) -> dict:
        body = next(d for d in yaml.safe_load_all((ROOT / "examples" / name).read_text()) if d and d["kind"] == kind)
        body["metadata"].update(namespace="team", uid="uid-1", generation=1)
        return body

    ft_body = example("finetunejob.yaml", "FineTuneJob")
    ft = contract.with_defaults(FineTuneJob.model_validate(ft_body))
    training = builders.build_finetune_children(ft_body, ft, contract.build_document(ft, revision="r1", output=contract.finetune_output(ft, "r1")), settings, False)
    ds_body = example("reasoningdataset.yaml", "ReasoningDataset")
    ds = contract.with_defaults(ReasoningDataset.model_validate(ds_body))
    curation = builders.build_dataset_children(ds_body, ds, contract.build_document(ds, revision="r1", output=contract.dataset_output(ds, "r1")), settings, suspend=False)
    ev_body = example("evalrun.yaml", "EvalRun")
    vllm_server = builders.build_eval_server(ev_body, contract.with_defaults(EvalRun.model_validate(ev_body)), "pvc://models/m", "r1", settings)
    ev_body["spec"]["serving"] = {"engine": "cpu"}
    cpu_server = builders.build_eval_server(ev_body, contract.with_defaults(EvalRun.model_validate(ev_body)), "pvc://models/m", "r1", settings)
    templates = [("operator", one(docs, "Deployment")["spec"]["template"])]
    for what, children in (("training", training), ("curation", curation), ("vLLM server", vllm_server), ("CPU server", cpu_server)):
        templates += [(what, c["spec"]["template"]) for c in children if c["kind"] in ("Job", "Deployment")]
    return templates


def _port_names(template: dict) -> set[str]:
    return {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", []) if "name" in p}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team"]}], ids=["cluster-wide", "namespaced"])
def test_every_monitor_selects_pods_that_have_its_port(values):
    """vLLM serves /metrics on its API port (`http`), training pods on `metrics`: each monitor must find pods, and
    every pod it finds must have the port it scrapes (a PodMonitor naming a missing port scrapes nothing)."""
    docs = render({**values, "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}})
    pods = _pods(docs)
    scraped = set()
    for monitor in find(docs, "PodMonitor"):
        selected = [(what, t) for what, t in pods if _selects(monitor["spec"]["selector"]["matchLabels"], t["metadata"]["labels"])]
        assert selected, f"{monitor['metadata']['name']} selects no pod"
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            for what, template in selected:
                assert endpoint["port"] in _port_names(template), f"{monitor['metadata']['name']}: the {what} pod has no port {endpoint['port']}"
        scraped |= {what for what, _ in selected}
    for monitor in find(docs, "ServiceMonitor"):
        services = [s for s in find(docs, "Service") if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert services, f"{monitor['metadata']['name']} selects no Service"
        for service in services:
            ports = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
            selected = [(what, t) for what, t in pods if _selects(service["spec"]["selector"], t["metadata"]["labels"])]
            assert selected
            for endpoint in monitor["spec"]["endpoints"]:
                assert endpoint["port"] in ports
                assert all(ports[endpoint["port"]] in _port_names(t) for _, t in selected)
            scraped |= {what for what, _ in selected}
    assert scraped >= {"operator", "training", "vLLM server"}


def test_grafana_dashboard_is_a_configmap_for_the_sidecar_when_enabled():
    assert not find(render(), "ConfigMap")
    docs = render({"dashboards": {"enabled": True, "annotations": {"grafana_folder": "ML"}}})
    configmap = one(docs, "ConfigMap", name="rel-reasonops-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "ML"}
    dashboard = json.loads(configmap["data"]["reasonops.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "reasonops.json").read_text())  # tests/test_dashboard.py checks its queries


def test_pod_monitors_follow_watch_namespaces():
    docs = render({"watchNamespaces": ["team-a"], "metrics": {"podMonitor": {"enabled": True}}})
    assert [m["spec"]["namespaceSelector"] for m in find(docs, "PodMonitor")] == [{"matchNames": ["team-a"]}] * 2


def test_workload_settings_reach_the_operator_environment():
    docs = render({
        "ttlSecondsAfterFinished": 0, "historyLimit": 1, "logLevel": "DEBUG",
        "images": {k: {"repository": f"registry.example/{k}", "tag": "v9", "pullPolicy": "Always"} for k in ("operator", "curate", "train", "eval", "serve")},
        "workloads": {"podAnnotations": {"sidecar.istio.io/inject": "false"}, "gpuNodeSelector": {"pool": "h200"},
                      "gpuTolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "REASONOPS_RESYNC_SECONDS", "value": "120"}],
    })
    container = operator_container(docs)
    env = env_of(container)
    assert env["REASONOPS_TTL_SECONDS_AFTER_FINISHED"] == "0"  # zero is a value, not "unset"
    assert env["REASONOPS_HISTORY_LIMIT"] == "1"
    assert env["REASONOPS_TRAIN_IMAGE"] == "registry.example/train:v9"
    assert env["REASONOPS_IMAGE_PULL_POLICY"] == "Always"
    assert json.loads(env["REASONOPS_POD_ANNOTATIONS"]) == {"sidecar.istio.io/inject": "false"}
    assert json.loads(env["REASONOPS_GPU_NODE_SELECTOR"]) == {"pool": "h200"}
    assert json.loads(env["REASONOPS_GPU_TOLERATIONS"])[0]["key"] == "nvidia.com/gpu"
    assert env["REASONOPS_RESYNC_SECONDS"] == "120"
    assert container["image"] == "registry.example/operator:v9" and container["imagePullPolicy"] == "Always"
    assert container["args"][-1] == "--verbose"
    digest = "sha256:" + "ab" * 32
    pinned = env_of(operator_container(render({"images": {"eval": {"repository": "r/eval", "tag": digest, "pullPolicy": "IfNotPresent"}}})))
    assert pinned["REASONOPS_EVAL_IMAGE"] == f"r/eval@{digest}"
    settings = _settings_from({k: v for k, v in env.items() if k.startswith("REASONOPS_")})
    assert settings.ttl_seconds_after_finished == 0 and settings.pod_annotations == {"sidecar.istio.io/inject": "false"}
    # Workload pods pull private images through their ServiceAccount.
    for sa in find(docs, "ServiceAccount"):
        assert sa["imagePullSecrets"] == [{"name": "regcred"}]


def test_rbac_and_service_account_can_be_brought_by_the_user():
    docs = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops-sa"},
                   "workloadServiceAccount": {"create": False, "name": "my-workloads"}})
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "NetworkPolicy"}  # the sandbox deny-all stays
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-sa"
    assert env_of(operator_container(docs))["REASONOPS_WORKLOAD_SERVICE_ACCOUNT"] == "my-workloads"


# --- wrong values fail at install, with a message -------------------------------------------------


@pytest.mark.parametrize("values, message", [
    ({"watchNamespaces": ["Team_A"]}, "watchNamespaces/0"),
    ({"logLevel": "chatty"}, "logLevel"),
    ({"images": {"train": {"repository": "x/train", "pullPolicy": "Sometimes"}}}, "images/train/pullPolicy"),
    ({"historyLimit": -1}, "historyLimit"),
    ({"historyLimit": "three"}, "historyLimit"),
    ({"ttlSecondsAfterFinished": "1h"}, "ttlSecondsAfterFinished"),
    ({"replicaCount": 2}, "replicaCount"),  # a single replica is a design decision, not a value
    ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "metrics/serviceMonitor/enabled"),
    ({"metrics": {"port": 70000}}, "metrics/port"),
    ({"workloads": {"gpuTolerations": [{"key": "k", "operator": "Maybe"}]}}, "workloads/gpuTolerations/0/operator"),
])
def test_schema_rejects_wrong_values_with_a_message(values, message):
    proc = render(values, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


def test_template_guards_reject_inconsistent_values():
    proc = render({"images": {"train": {"repository": "ghcr.io/reasonops/train", "pullPolicy": "Always"}}}, check=False)
    assert proc.returncode != 0 and "one pull policy to every workload pod" in proc.stderr
    proc = render({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}, check=False)
    assert proc.returncode != 0 and "metrics.service.enabled" in proc.stderr


def test_readme_and_notes_tell_how_to_upgrade_crds():
    # (The rendered NOTES are checked by the cluster test: helm renders them only for a cluster.)
    assert "kubectl apply --server-side -f charts/reasonops/crds/" in (CHART / "templates" / "NOTES.txt").read_text()
    readme = (CHART / "README.md").read_text()
    assert "kubectl apply --server-side -f charts/reasonops/crds/" in readme
    assert "leader election" in readme


# --- a real install --------------------------------------------------------------------------------


def _dataset(size: int) -> dict:
    result = {"samples": size, "contentHash": f"h{size}"}
    return {
        "apiVersion": "reasonops.io/v1alpha1", "kind": "ReasoningDataset", "metadata": {"name": "ds"},
        "spec": {
            "sources": [{"name": "inline", "inline": [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}]}],
            "stages": [{"name": "select", "select": {"size": size}}],
            # Object-store outputs need no claim (kwok never mounts volumes, but the scheduler wants claims).
            "output": {"uri": "s3://reasonops-test/sets"},
            "resources": {"podAnnotations": {"reasonops.io/kwok-result": json.dumps(result)}},
        },
    }


CHAIN = [
    {"apiVersion": "reasonops.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "ft"}, "spec": {
        "baseModel": {"name": "Qwen/Qwen2.5-0.5B-Instruct"}, "datasetRef": {"name": "ds"}, "gpusPerNode": 1,
        "output": {"uri": "s3://reasonops-test/runs"},
        "resources": {"podAnnotations": {"reasonops.io/kwok-result": json.dumps({"finalLoss": 0.5, "steps": 2})}}}},
    {"apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun", "metadata": {"name": "ev"}, "spec": {
        "model": {"fineTuneJob": "ft"}, "protocol": "limo", "benchmarks": [{"name": "aime24"}],
        "serving": {"tensorParallelSize": 1}, "gates": [{"benchmark": "aime24", "minScore": "0.5"}],
        "resources": {"podAnnotations": {"reasonops.io/kwok-result": json.dumps(
            {"results": [{"benchmark": "aime24", "score": 0.7, "problems": 30, "samples": 1}], "accuracy": 0.7})}}}},
]


def _apply(cluster, ns: str, *docs: dict) -> None:
    cluster.kubectl("apply", "-n", ns, "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))


def _can_i(cluster, account: str, *args: str) -> bool:
    proc = cluster.kubectl("auth", "can-i", *args, f"--as={account}", check=False)
    assert proc.stdout.strip() in ("yes", "no"), proc.stderr
    return proc.stdout.strip() == "yes"


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_helm_install_runs_the_chain_with_only_the_charts_rights_and_upgrades(cluster, namespace, tmp_path, monkeypatch):
    c, ns = cluster, namespace
    release = f"rt{uuid.uuid4().hex[:6]}"  # cluster-scoped names are per release: tests may share a cluster
    env = c.env
    notes = helm("install", release, str(CHART), "-n", ns, "--kubeconfig", c.kubeconfig, env=env).stdout
    assert f"watches every namespace (ClusterRole {release}-reasonops)" in notes
    assert f"ServiceAccount reasonops-workload, created in: {ns}." in notes
    operator = ChartOperator(c, ns, release, tmp_path)
    try:
        operator_sa = f"system:serviceaccount:{ns}:{release}-reasonops"
        workload_sa = f"system:serviceaccount:{ns}:reasonops-workload"

        # The rights stop where the operator's work stops.
        assert _can_i(c, operator_sa, "create", "jobs.batch", "-n", ns)
        assert _can_i(c, operator_sa, "patch", "reasoningdatasets.reasonops.io", "--subresource=status", "-n", ns)
        for denied in (("get", "secrets", "-n", ns), ("list", "secrets", "-A"), ("list", "nodes"), ("create", "pods", "-n", ns),
                       ("delete", "customresourcedefinitions.apiextensions.k8s.io"), ("create", "customresourcedefinitions.apiextensions.k8s.io"),
                       ("update", "reasoningdatasets.reasonops.io", "-n", ns), ("patch", "finetunejobs.reasonops.io", "-n", ns),
                       ("delete", "evalruns.reasonops.io", "-n", ns), ("create", "rolebindings.rbac.authorization.k8s.io", "-n", ns),
                       ("create", "serviceaccounts", "--subresource=token", "-n", ns)):
            assert not _can_i(c, operator_sa, *denied), f"the operator must not be able to {' '.join(denied)}"
        assert _can_i(c, workload_sa, "patch", "finetunejobs.reasonops.io", "--subresource=status", "-n", ns)
        assert _can_i(c, workload_sa, "get", "evalruns.reasonops.io", "-n", ns)
        for denied in (("patch", "finetunejobs.reasonops.io", "-n", ns), ("list", "reasoningdatasets.reasonops.io", "-n", ns),
                       ("get", "secrets", "-n", ns), ("create", "jobs.batch", "-n", ns), ("get", "pods", "-n", ns)):
            assert not _can_i(c, workload_sa, *denied), f"a workload must not be able to {' '.join(denied)}"

        # The chain runs end to end with the chart's rights: Jobs, ConfigMaps, the headless Service,
        # the served model (server-side apply creates a Deployment and a Service), status, events.
        operator.start()
        _apply(c, ns, _dataset(2), *CHAIN)
        ev = _wait_for("EvalRun Passed", lambda: _cond(e := _get(c, "evalrun", ns, "ev"), "Passed") == "True" and e, 120, operator.diagnose)
        assert _get(c, "deployment", ns, "ev-server")["metadata"]["labels"][child_labels.LABEL_MANAGED_BY] == child_labels.MANAGED_BY
        assert ev["status"]["accuracy"] == "0.7000"
        events = json.loads(c.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
        assert any(e["involvedObject"]["kind"] == "ReasoningDataset" for e in events), "kopf could not post events"

        # A workload's own identity can report progress to its resource (progress.py's code path).
        token = c.kubectl("create", "token", "reasonops-workload", "-n", ns, "--duration=10m").stdout.strip()
        workload_kubeconfig = c.token_kubeconfig(token, tmp_path / "workload.kubeconfig")
        for key, value in {"REASONOPS_STATUS_KUBECONFIG": workload_kubeconfig, "REASONOPS_KIND": "FineTuneJob",
                           "REASONOPS_NAME": "ft", "REASONOPS_NAMESPACE": ns, "REASONOPS_REVISION": "r1"}.items():
            monkeypatch.setenv(key, value)
        Reporter.from_env().update(stage="train", message="from the workload account", force=True)
        assert _get(c, "finetunejob", ns, "ft")["status"]["progress"]["message"] == "from the workload account"
        operator.stop()
        # Cluster-wide, nothing the operator or kopf asked for was refused.
        assert operator.denials(0) == set(), operator.denials(0)
        assert "Not enough permissions" not in operator.log(0)

        # Upgrade: narrow to this namespace and keep no history. ClusterRole out, Role in; the
        # operator restarted with the new Deployment's args deletes the old revision's children.
        helm("upgrade", release, str(CHART), "-n", ns, "--kubeconfig", c.kubeconfig, "--reuse-values",
             "--set", f"watchNamespaces={{{ns}}}", "--set", "historyLimit=0", env=env)
        assert c.kubectl("get", "clusterrole", f"{release}-reasonops", check=False).returncode != 0
        assert c.kubectl("get", "role", f"{release}-reasonops", "-n", ns).returncode == 0
        assert not _can_i(c, operator_sa, "list", "jobs.batch", "-n", "default")
        assert not _can_i(c, operator_sa, "list", "customresourcedefinitions.apiextensions.k8s.io")
        deployment = _get(c, "deployment", ns, f"{release}-reasonops")
        assert ["--namespace", ns] == deployment["spec"]["template"]["spec"]["containers"][0]["args"][3:5]
        old_jobs = {j["metadata"]["name"] for j in json.loads(c.kubectl("get", "jobs", "-n", ns, "-l", "reasonops.io/name=ds", "-o", "json").stdout)["items"]}
        operator.start()
        _apply(c, ns, _dataset(1))
        ds = _wait_for("new dataset revision Ready", lambda: (d := _get(c, "reasoningdataset", ns, "ds"))["status"].get("selected") == 1 and _cond(d, "Ready") == "True" and d, 60, operator.diagnose)
        _wait_for("old revision's Job deleted", lambda: not old_jobs & {j["metadata"]["name"] for j in json.loads(c.kubectl("get", "jobs", "-n", ns, "-l", "reasonops.io/name=ds", "-o", "json").stdout)["items"]}, 30, operator.diagnose)
        assert ds["status"]["output"]["contentHash"] == "h1"
        operator.stop()
        # With Roles only, kopf's cluster-scoped look-ups (namespaces, CRDs) are refused, as the chart
        # README says; it falls back to the listed namespace. Nothing else was refused.
        assert ("list", "namespaces") in operator.denials(1), "the Roles grant nothing cluster-wide"
        assert operator.denials(1) <= {(v, r) for v in ("list", "watch") for r in ("namespaces", "customresourcedefinitions")}
    finally:
        operator.stop()
        helm("uninstall", release, "-n", ns, "--kubeconfig", c.kubeconfig, check=False, env=env)
