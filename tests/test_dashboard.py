"""The chart's Grafana dashboard: it parses, and every query names a metric that exists, in vLLM's list or in the
project's own definitions (the operator's registry, a training pod's gauges)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "charts" / "reasonops" / "dashboards" / "reasonops.json"

# vLLM 0.33.0's serving metrics and their types (vllm/v1/metrics/loggers.py, PrometheusStatLogger; commit 4ba787ec9).
VLLM_METRICS = {
    "vllm:num_requests_running": "gauge",
    "vllm:num_requests_waiting": "gauge",
    "vllm:kv_cache_usage_perc": "gauge",
    "vllm:prefix_cache_queries": "counter",
    "vllm:prefix_cache_hits": "counter",
    "vllm:num_preemptions": "counter",
    "vllm:prompt_tokens": "counter",
    "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter",
    "vllm:request_prompt_tokens": "histogram",
    "vllm:request_generation_tokens": "histogram",
    "vllm:time_to_first_token_seconds": "histogram",
    "vllm:inter_token_latency_seconds": "histogram",
    "vllm:request_time_per_output_token_seconds": "histogram",
    "vllm:e2e_request_latency_seconds": "histogram",
    "vllm:request_queue_time_seconds": "histogram",
    "vllm:request_prefill_time_seconds": "histogram",
    "vllm:request_decode_time_seconds": "histogram",
}
SUFFIXES = {"gauge": ("",), "counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
# A metric name in a query: vLLM's (with its colon) or the project's.
METRIC = re.compile(r"\b(vllm:[a-z0-9_]+|reasonops_[a-z0-9_]+)\b")


def _exposed(metrics: dict[str, str]) -> set[str]:
    """The series names Prometheus scrapes for metrics of these types."""
    return {name + suffix for name, kind in metrics.items() for suffix in SUFFIXES[kind]}


def _project_metrics() -> dict[str, str]:
    from reasonops.controller.metrics import REGISTRY
    from reasonops.train.metrics import PrometheusMetrics

    training = PrometheusMetrics(0)  # its own registry, served on a free port
    return {m.name: m.type for registry in (REGISTRY, training.registry) for m in registry.collect()}


def _panels(dashboard: dict) -> list[dict]:
    return [p for panel in dashboard["panels"] for p in [panel, *panel.get("panels", [])] if p["type"] != "row"]


def test_dashboard_queries_name_metrics_that_exist():
    dashboard = json.loads(DASHBOARD.read_text())
    known = _exposed(VLLM_METRICS) | _exposed(_project_metrics())
    panels = _panels(dashboard)
    assert panels and len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    used = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, f"{panel['title']}: {target['expr']} names no metric"
            assert names <= known, f"{panel['title']}: {sorted(names - known)} exist neither in vLLM nor in reasonops"
            used |= names
    # what the issue asks people to see: serving, training and the operator
    for needed in ("vllm:request_success_total", "vllm:time_to_first_token_seconds_bucket", "vllm:request_time_per_output_token_seconds_bucket",
                   "vllm:generation_tokens_total", "vllm:kv_cache_usage_perc", "reasonops_train_loss", "reasonops_train_tokens_per_second",
                   "reasonops_train_mfu", "reasonops_train_step", "reasonops_reconciles_total", "reasonops_reconcile_errors_total",
                   "reasonops_resources"):
        assert needed in used, needed


@pytest.mark.parametrize("name, suffixed", [("vllm:request_success", "vllm:request_success_total"),
                                            ("vllm:time_to_first_token_seconds", "vllm:time_to_first_token_seconds_bucket")])
def test_metric_types_expose_their_prometheus_series(name, suffixed):
    assert suffixed in _exposed({name: VLLM_METRICS[name]}) and name not in _exposed({name: VLLM_METRICS[name]})
