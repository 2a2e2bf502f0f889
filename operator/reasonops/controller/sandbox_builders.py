"""The sandbox children of an EvalRun with a code benchmark or a ReasoningDataset with code sources.

Model-written programs never run in the workload pod (it holds the API token, object-store credentials and
the model's network reach). The operator gives such a resource a small execution service:

- a **Deployment** running `reasonops sandbox-serve`: no ServiceAccount token mounted
  (``automountServiceAccountToken: false``), non-root, read-only root file system, all capabilities dropped,
  no privilege escalation, RuntimeDefault seccomp, a size-limited /tmp, no service links, and the
  spec's optional ``runtimeClassName`` (gVisor, Kata) for a kernel boundary as well;
- a **Service** in front of it, whose URL the workload pod receives in ``$REASONOPS_SANDBOX_URL``;
- a **NetworkPolicy** admitting only this resource's workload pods, on the service port, and no egress at all
  (not even DNS). The chart also ships a namespace-wide deny-all policy for every sandbox pod, so a sandbox
  is closed even before its own policy exists (NetworkPolicies add up: this one only opens ingress).

Inside the pod, bubblewrap isolates each execution where the node allows unprivileged user namespaces;
where it does not (common under RuntimeDefault seccomp), the pod is the boundary — which is why it is locked
down as above, and the only place that opts out of the sandbox's refusal: its container sets
``REASONOPS_SANDBOX_ISOLATION=unconfined`` (process limits only where bubblewrap does not work).
"""

from __future__ import annotations

from typing import Any, Optional

from ..api.common import cpu_millicores, resolve_defaults
from ..api.v1alpha1 import SandboxSpec
from ..contract import SANDBOX_PORT, SANDBOX_UNCONFINED, Env, sandbox_name, sandbox_url
from .builders import UID, _metadata, queue_labels
from .labels import COMPONENT_SANDBOX, WORKLOAD_COMPONENTS, component_selector, labels_for
from .settings import Settings

PORT = SANDBOX_PORT
COMPONENT = COMPONENT_SANDBOX
TMP_LIMIT = "1Gi"


def sandbox_env(body: dict[str, Any]) -> list[dict[str, str]]:
    """The variable the workload container needs to send its programs to the sandbox service."""
    meta = body["metadata"]
    return [{"name": Env.SANDBOX_URL, "value": sandbox_url(meta["name"], meta["namespace"])}]


def build_sandbox_children(body: dict[str, Any], settings: Settings, spec: Optional[SandboxSpec] = None) -> list[dict[str, Any]]:
    """Deployment, Service and NetworkPolicy of the resource's sandbox (not per revision: they outlive one).
    `spec.sandbox` is optional in both kinds: unset, every field has the API's default. The pod settings of
    spec.resources (env, volumes, extended resources, pull secrets, placement) do not apply: the sandbox is the
    isolation boundary of model-written code, and a user's env or volume would reach into it."""
    kind, name = body["kind"], body["metadata"]["name"]
    spec = resolve_defaults(spec or SandboxSpec())
    labels = labels_for(kind, name, COMPONENT)
    selector = component_selector(kind, name, COMPONENT)
    cpu, memory = spec.cpu, spec.memory
    workers = max(1, int(cpu_millicores(cpu) // 1000))
    container = {
        "name": "sandbox",
        "image": settings.curate_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["reasonops", "sandbox-serve", "--port", str(PORT), "--workers", str(workers)],
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": Env.SANDBOX_ISOLATION, "value": SANDBOX_UNCONFINED}],  # the pod is the boundary
        "ports": [{"name": "http", "containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_LIMIT}}],
    }
    if spec.runtimeClassName:
        pod["runtimeClassName"] = spec.runtimeClassName
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _metadata(body, sandbox_name(name), {**labels, **queue_labels(body)}),
        "spec": {"replicas": spec.replicas, "selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": {**labels, **queue_labels(body)}}, "spec": pod}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(body, sandbox_name(name), labels),
        "spec": {"selector": selector, "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]},
    }
    workload = component_selector(kind, name, WORKLOAD_COMPONENTS[kind])
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _metadata(body, sandbox_name(name), labels),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": workload}}], "ports": [{"protocol": "TCP", "port": PORT}]}],
            "egress": [],
        },
    }
    return [deployment, service, policy]
