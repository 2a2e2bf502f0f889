"""Throughput, model FLOPs utilisation and the Prometheus metrics of a training run."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

log = logging.getLogger("reasonops.train")

# Dense bf16 peak FLOP/s per device (NVIDIA datasheets, without sparsity); matched on the device name as
# torch reports it ("NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H100 80GB HBM3" for SXM), first match wins.
PEAK_FLOPS: dict[str, float] = {
    "GB200": 2.5e15,
    "B200": 2.25e15,
    "H200 NVL": 835e12,
    "H200": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIE": 756e12,
    "H100": 989e12,
    "H800 PCIE": 756e12,
    "H800": 989e12,
    "H20": 148e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "A10G": 70e12,
    "A10": 125e12,
    "L4": 121e12,
}
DEFAULT_METRICS_PORT = 9400


def device_peak_flops(device: torch.device) -> Optional[float]:
    """Peak bf16 FLOP/s of one device, or None where unknown (CPU, unlisted GPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    for key, peak in PEAK_FLOPS.items():  # ordered so that e.g. "A10G" is tried before "A10"
        if key in name:
            return peak
    return None


def train_flops(params: int, lengths: list[int], *, attention_width: int, layers: int, lora: bool = False) -> float:
    """FLOPs of a forward+backward pass over samples of these lengths, as PaLM (appendix B) and torchtitan count:

    6·N per token (forward 2N, backward 4N) plus attention 12·L·W·s per token of a sample of s tokens, where
    W = heads x head_dim (the width of QK^T and AV, e.g. 64 x 128 = 8192 for Qwen3-32B, not its hidden 5120).
    The causal mask is not credited (half of those FLOPs are masked), so figures compare with papers. With
    LoRA the frozen weights get no weight gradient: 4·N. Recomputation (gradient checkpointing) is not work.
    """
    per_token = (4 if lora else 6) * params
    attention = 12 * layers * attention_width * sum(n * n for n in lengths)
    return per_token * sum(lengths) + attention


def attention_width(config: object) -> int:
    """heads x head_dim of a transformers config (head_dim defaults to hidden / heads)."""
    heads = config.num_attention_heads  # type: ignore[attr-defined]
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads  # type: ignore[attr-defined]
    return heads * head_dim


@dataclass
class Throughput:
    """Running rates of this run (since start or resume)."""

    total_steps: int
    start_step: int
    peak_flops_total: Optional[float]  # peak of all devices together
    started: float = field(default_factory=time.monotonic)
    tokens: int = 0
    flops: float = 0.0

    def add(self, tokens: int, flops: float) -> None:
        self.tokens += tokens
        self.flops += flops

    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def tokens_per_second(self) -> float:
        return self.tokens / self.elapsed()

    def mfu(self) -> Optional[float]:
        return None if not self.peak_flops_total else self.flops / self.elapsed() / self.peak_flops_total

    def eta_seconds(self, step: int) -> int:
        done = step - self.start_step
        return int(self.elapsed() / done * (self.total_steps - step)) if done > 0 else 0


class PrometheusMetrics:
    """Gauges served by rank 0 on REASONOPS_METRICS_PORT (default 9400 in a pod; off locally unless set)."""

    def __init__(self, port: int) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        names = {
            "step": "Optimizer steps done",
            "total_steps": "Optimizer steps of the run",
            "epoch": "Fractional epoch",
            "loss": "Training loss of the latest step",
            "learning_rate": "Learning rate",
            "tokens_per_second": "Real (non-padding) tokens per second, all ranks",
            "mfu": "Estimated model FLOPs utilisation (0-1)",
            "eta_seconds": "Estimated seconds left",
            "tokens": "Real tokens trained on",
        }
        self.gauges = {k: Gauge(f"reasonops_train_{k}", doc, registry=self.registry) for k, doc in names.items()}
        start_http_server(port, registry=self.registry)
        log.info("Prometheus metrics on :%d/metrics", port)

    @classmethod
    def from_env(cls) -> Optional["PrometheusMetrics"]:
        port = os.environ.get("REASONOPS_METRICS_PORT")
        if port is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            port = str(DEFAULT_METRICS_PORT)
        if not port:
            return None
        try:
            return cls(int(port))
        except OSError as exc:  # port taken: metrics are not worth failing a training run for
            log.warning("no Prometheus metrics: %s", exc)
            return None

    def set(self, **values: Optional[float]) -> None:
        for key, value in values.items():
            if value is not None:
                self.gauges[key].set(value)
