"""The sandbox children (pure builders): a locked-down execution Deployment, its Service and a NetworkPolicy
that admits only the resource's own workload pods and allows no egress."""

from __future__ import annotations

import json

import pytest

from reasonops.api.v1alpha1 import SandboxSpec
from reasonops.controller import labels as child_labels
from reasonops.contract import needs_sandbox
from reasonops.controller.sandbox_builders import build_sandbox_children, sandbox_env, sandbox_name
from reasonops.controller.settings import Settings
from reasonops.sandbox.service import SANDBOX_URL_ENV

BODY = {"apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun", "metadata": {"name": "lcb", "namespace": "team", "uid": "u1"}}


def test_which_resources_need_a_sandbox():
    assert needs_sandbox("EvalRun", {"benchmarks": [{"name": "math500"}, {"name": "livecodebench"}]})
    assert not needs_sandbox("EvalRun", {"benchmarks": [{"name": "math500"}, {"name": "no-such"}]})
    assert needs_sandbox("ReasoningDataset", {"sources": [{"name": "a"}, {"name": "t", "codeTests": "taco"}]})
    assert not needs_sandbox("ReasoningDataset", {"sources": [{"name": "a"}]})
    assert not needs_sandbox("FineTuneJob", {})


def test_deployment_is_locked_down():
    deployment, service, policy = build_sandbox_children(BODY, Settings(), SandboxSpec(runtimeClassName="gvisor", cpu="4", memory="8Gi", replicas=2))
    assert [o["kind"] for o in (deployment, service, policy)] == ["Deployment", "Service", "NetworkPolicy"]
    assert {o["metadata"]["name"] for o in (deployment, service, policy)} == {"lcb-sandbox"}
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u1" for o in (deployment, service, policy))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert "serviceAccountName" not in pod
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert container["command"][:2] == ["reasonops", "sandbox-serve"] and container["command"][-1] == "4"
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    assert not any(e["name"].endswith(("TOKEN", "KEY")) for e in container["env"]) and "envFrom" not in container
    # the one place that opts out of the refusal to run code unconfined: this pod is the boundary
    assert {"name": "REASONOPS_SANDBOX_ISOLATION", "value": "unconfined"} in container["env"]
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_network_policy_admits_only_this_workload_and_no_egress():
    _, _, policy = build_sandbox_children(BODY, Settings())
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["egress"] == []
    peers = spec["ingress"][0]["from"]
    workload = child_labels.labels_for("EvalRun", "lcb", "eval", "rev1")  # the labels of the benchmark Job's pods
    assert len(peers) == 1 and all(workload[k] == v for k, v in peers[0]["podSelector"]["matchLabels"].items())
    other = child_labels.labels_for("EvalRun", "other", "eval", "rev1")
    assert not all(other.get(k) == v for k, v in peers[0]["podSelector"]["matchLabels"].items())
    server = child_labels.labels_for("EvalRun", "lcb", "server")  # the vLLM server of the same EvalRun is not admitted
    assert not all(server.get(k) == v for k, v in peers[0]["podSelector"]["matchLabels"].items())
    dataset = {**BODY, "kind": "ReasoningDataset"}
    _, _, curate_policy = build_sandbox_children(dataset, Settings())
    assert curate_policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"][child_labels.LABEL_COMPONENT] == "curate"


def test_workload_environment_names_the_service():
    assert sandbox_env(BODY) == [{"name": SANDBOX_URL_ENV, "value": "http://lcb-sandbox.team.svc:8080"}]
    assert len(sandbox_name("x" * 80)) <= 63


@pytest.mark.cluster
def test_the_api_server_accepts_the_children(cluster, namespace):
    """The objects as `kubectl apply` sends them, validated by a real API server (owner omitted: no real EvalRun)."""
    body = {**BODY, "metadata": {**BODY["metadata"], "namespace": namespace}}
    objects = build_sandbox_children(body, Settings(), SandboxSpec(runtimeClassName="gvisor"))
    for obj in objects:
        obj["metadata"].pop("ownerReferences")
    applied = cluster.kubectl("apply", "--server-side", "-o", "json", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    items = json.loads(applied.stdout)["items"]
    assert [i["kind"] for i in items] == ["Deployment", "Service", "NetworkPolicy"]
    policy = json.loads(cluster.kubectl("get", "networkpolicy", "lcb-sandbox", "-n", namespace, "-o", "json").stdout)
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and not policy["spec"].get("egress")
    deployment = json.loads(cluster.kubectl("get", "deployment", "lcb-sandbox", "-n", namespace, "-o", "json").stdout)
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
