"""vLLM's CPU backend on this machine, serving the tests' tiny model: time to /health, memory, request rate.

Three starts of `vllm serve` (reasonops.local_vllm, reasonops.serving's arguments, the CPU engine's environment):
1. compiled (vLLM's default), an empty compile cache: what a fresh machine or pod pays;
2. compiled again, the compile cache of start 1: what the next start pays;
3. eager mode and a 64 MiB KV cache (`--enforce-eager --kv-cache-memory-bytes`): the tests' settings.
Per start: seconds from the process start to /health answering 200, the resident memory of the server's
processes (the API server, the engine core and their helpers, summed) once healthy and after the load, and the
chat requests per second of a plain load generator (`--requests` requests of `--max-tokens` new tokens each,
`--concurrency` in flight, after a warm-up).

    REASONOPS_VLLM=.venv-vllm/bin/vllm python benchmarks/vllm_cpu.py [--requests 256] [--concurrency 8] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import psutil

from reasonops.local_vllm import load_test, running_vllm, small_model_options, vllm_executable
from reasonops.serving import ServerOptions
from reasonops.tinymodel import build_servable_model


def server_rss(model_dir: Path) -> float:
    """GiB resident in the processes of the `vllm serve` of `model_dir`: the server and everything in its session."""
    leader = next(p for p in psutil.process_iter(["cmdline"]) if str(model_dir) in (p.info["cmdline"] or []) and "serve" in p.info["cmdline"])
    session = os.getsid(leader.pid)
    total = 0
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session:
                total += process.memory_info().rss
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return total / 2**30


def measure(label: str, options: ServerOptions, cache: Path, args: argparse.Namespace) -> None:
    environment = {"VLLM_CACHE_ROOT": str(cache / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "HF_HUB_OFFLINE": "1"}
    prompts = [f"Compute {i} times {i + 1}, step by step." for i in range(args.requests)]
    start = time.perf_counter()
    with running_vllm(options, env=environment, log_path=cache / f"{label}.log") as url:
        healthy = time.perf_counter() - start
        idle = server_rss(Path(options.model_path))
        load = {"max_tokens": args.max_tokens, "concurrency": args.concurrency, "ignore_eos": True}
        load_test(url, "tiny", prompts[: args.concurrency * 2], **load)  # warm-up
        rate = load_test(url, "tiny", prompts, **load)["requestsPerSecond"]
        loaded = server_rss(Path(options.model_path))
    print(f"| {label} | {healthy:.0f} s | {idle:.2f} GiB | {loaded:.2f} GiB | {rate:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    print(f"vllm: {vllm_executable()}; {psutil.cpu_count()} CPUs; {args.requests} chat requests of {args.max_tokens} "
          f"new tokens, {args.concurrency} in flight; dtype {args.dtype}")
    with tempfile.TemporaryDirectory() as tmp:
        model = build_servable_model(Path(tmp) / "tiny")
        cache = Path(tmp) / "cache"
        cache.mkdir()
        tests = small_model_options(model, "tiny", dtype=args.dtype)
        compiled = dataclasses.replace(tests, enforce_eager=False, kv_cache_bytes=None)  # VLLM_CPU_KVCACHE_SPACE's GiB
        print("| start | time to /health | RSS healthy | RSS after load | requests/s |\n|---|---:|---:|---:|---:|")
        measure("compiled, cold compile cache", compiled, cache, args)
        measure("compiled, warm compile cache", compiled, cache, args)
        measure("eager, KV cache 64 MiB (the tests')", tests, cache, args)


if __name__ == "__main__":
    main()
