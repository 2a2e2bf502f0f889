"""Prometheus metrics of the operator: reconciles, errors and latency per kind, resources per phase."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()
RECONCILES = Counter("reasonops_reconciles", "Reconciles per kind.", ["kind"], registry=REGISTRY)
ERRORS = Counter("reasonops_reconcile_errors", "Reconciles that raised, per kind.", ["kind"], registry=REGISTRY)
LATENCY = Histogram(
    "reasonops_reconcile_duration_seconds", "Time of one reconcile.", ["kind"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RESOURCES = Gauge("reasonops_resources", "Resources per kind and phase.", ["kind", "phase"], registry=REGISTRY)
CHILDREN_CREATED = Counter("reasonops_children_created", "Child objects created, per kind of child.", ["kind"], registry=REGISTRY)
EVAL_SCORE = Gauge("reasonops_eval_score", "pass@1 of the latest evaluation.", ["namespace", "evalrun", "benchmark"], registry=REGISTRY)
TRAIN_LOSS = Gauge("reasonops_train_loss", "Latest reported training loss.", ["namespace", "finetunejob"], registry=REGISTRY)


def serve(port: int) -> None:
    start_http_server(port, registry=REGISTRY)


def set_phase_counts(counts: dict[tuple[str, str], int]) -> None:
    RESOURCES.clear()
    for (kind, phase), n in counts.items():
        RESOURCES.labels(kind=kind, phase=phase).set(n)
