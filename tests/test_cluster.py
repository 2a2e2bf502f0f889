"""The local control plane (hack/cluster.sh) and its kwok stages (hack/kwok-stages.yaml) behave as
the operator's tests expect: GPU nodes, Jobs that complete or fail with a termination message,
Deployment pods that stay running, and ServiceAccount tokens under RBAC."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.cluster


def job_manifest(name: str, annotations: dict[str, str]) -> str:
    """A one-pod Job for the kwok nodes: nodeSelector type=kwok, one GPU, no retries."""
    return json.dumps({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"type": "kwok"},
                    "containers": [{
                        "name": "main",
                        "image": "example.invalid/workload:1",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }],
                },
            },
        },
    })


def job_pod(cluster, namespace: str, job: str) -> dict:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", f"job-name={job}",
                                      "-o", "json").stdout)["items"]
    assert len(pods) == 1, pods
    return pods[0]


def test_apiserver_answers(cluster):
    assert cluster.kubectl("get", "--raw", "/readyz").stdout == "ok"
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.34.")


def test_gpu_nodes_are_ready(cluster):
    nodes = json.loads(cluster.kubectl("get", "nodes", "-l", "nvidia.com/gpu.present=true",
                                       "-o", "json").stdout)["items"]
    assert len(nodes) >= 1
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert not node["spec"].get("taints"), node["spec"]["taints"]


def test_job_completes_with_result_message(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=job_manifest("ok", {"reasonops.io/kwok-result": '{"accuracy": 0.5}'}))
    cluster.kubectl("wait", "-n", namespace, "job/ok", "--for=condition=Complete", "--timeout=60s")
    terminated = job_pod(cluster, namespace, "ok")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert terminated["message"] == '{"accuracy": 0.5}'


def test_job_fails_with_annotated_message_and_exit_code(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=job_manifest("bad", {
        "reasonops.io/kwok-fail": "CUDA out of memory",
        "reasonops.io/kwok-exit-code": "137",
    }))
    cluster.kubectl("wait", "-n", namespace, "job/bad", "--for=condition=Failed", "--timeout=60s")
    pod = job_pod(cluster, namespace, "bad")
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated == {**terminated, "exitCode": 137, "reason": "Error", "message": "CUDA out of memory"}


def test_deployment_pods_stay_running(cluster, namespace):
    cluster.kubectl("create", "deployment", "web", "-n", namespace, "--image=example.invalid/web:1")
    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s")
    time.sleep(2)  # longer than the Job stages' default delay: nothing must complete this pod
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running"]


def test_service_account_token_is_accepted_and_subject_to_rbac(cluster, namespace, tmp_path):
    cluster.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    token = cluster.kubectl("create", "token", "robot", "-n", namespace, "--duration=10m").stdout.strip()
    kubeconfig = cluster.token_kubeconfig(token, tmp_path / "robot.kubeconfig")

    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig).stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:robot"

    def can_list_pods() -> str:
        return cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace,
                               kubeconfig=kubeconfig, check=False).stdout.strip()

    assert can_list_pods() == "no"
    cluster.kubectl("create", "rolebinding", "robot-view", "-n", namespace, "--clusterrole=view",
                    f"--serviceaccount={namespace}:robot")
    deadline = time.monotonic() + 10  # the RBAC authorizer sees the binding through an informer
    while can_list_pods() != "yes" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert can_list_pods() == "yes"
