"""Operator settings, read once from the environment (the Helm chart sets these variables)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default) or default


@dataclass(frozen=True)
class Settings:
    curate_image: str = "ghcr.io/reasonops/curate:0.1.0"
    train_image: str = "ghcr.io/reasonops/train:0.1.0"
    # EvalRun benchmark pods, and the CPU model server (serving.engine: cpu): the engine an offline CPU evaluation
    # starts in its own pod is the same vLLM CPU backend, so a CPU cluster's eval image (images/workload-cpu) has it.
    eval_image: str = "ghcr.io/reasonops/eval:0.1.0"
    serve_image: str = "ghcr.io/reasonops/eval:0.1.0"  # the GPU model server: vLLM's server image + reasonops
    image_pull_policy: str = "IfNotPresent"
    workload_service_account: str = ""  # empty: the namespace's default ServiceAccount
    history_limit: int = 3  # past revisions whose children are kept
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    pod_annotations: dict[str, str] = field(default_factory=dict)  # added to every workload pod
    ttl_seconds_after_finished: int | None = None
    rendezvous_port: int = 29500
    server_port: int = 8000
    metrics_port: int = 8080
    workload_metrics_port: int = 9400
    default_gpus_per_node: int = 8
    gpu_node_selector: dict[str, str] = field(default_factory=dict)  # for GPU pods that set none
    gpu_tolerations: list[dict] = field(default_factory=list)  # for GPU pods that set none

    @classmethod
    def from_env(cls) -> "Settings":
        ttl = os.environ.get("REASONOPS_TTL_SECONDS_AFTER_FINISHED")
        namespaces = tuple(n.strip() for n in os.environ.get("REASONOPS_NAMESPACES", "").split(",") if n.strip())
        return cls(
            curate_image=_env("REASONOPS_CURATE_IMAGE", cls.curate_image),
            train_image=_env("REASONOPS_TRAIN_IMAGE", cls.train_image),
            eval_image=_env("REASONOPS_EVAL_IMAGE", cls.eval_image),
            serve_image=_env("REASONOPS_SERVE_IMAGE", cls.serve_image),
            image_pull_policy=_env("REASONOPS_IMAGE_PULL_POLICY", cls.image_pull_policy),
            workload_service_account=os.environ.get("REASONOPS_WORKLOAD_SERVICE_ACCOUNT", ""),
            history_limit=int(_env("REASONOPS_HISTORY_LIMIT", str(cls.history_limit))),
            namespaces=namespaces,
            pod_annotations=json.loads(os.environ.get("REASONOPS_POD_ANNOTATIONS", "") or "{}"),
            ttl_seconds_after_finished=int(ttl) if ttl else None,
            metrics_port=int(_env("REASONOPS_METRICS_PORT", str(cls.metrics_port))),
            default_gpus_per_node=int(_env("REASONOPS_DEFAULT_GPUS_PER_NODE", str(cls.default_gpus_per_node))),
            gpu_node_selector=json.loads(os.environ.get("REASONOPS_GPU_NODE_SELECTOR", "") or "{}"),
            gpu_tolerations=json.loads(os.environ.get("REASONOPS_GPU_TOLERATIONS", "") or "[]"),
        )
