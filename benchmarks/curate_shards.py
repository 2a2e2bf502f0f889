"""Shard scaling of the model stages and per-shard resume, against fixed-latency OpenAI-compatible servers.

    python benchmarks/curate_shards.py [--problems 400] [--attempts 2] [--latency 0.5] [--slots 2] [--shards 1 2 4]

Each shard pod is a `reasonops.curate.main` process (shard i of N, as an Indexed Job runs it) with its
own server, standing in for the pod's own engine: a minimal OpenAI-compatible process (aiohttp) that
answers every chat request after `latency` seconds, at most `slots` at a time, so sampling time is
dominated by server latency as on a real model, not by the two shared CPU cores. The spec is load →
dedupe → difficulty (`attempts` samples per problem) → score → select. The figure is wall time from
starting all N processes to pod 0 writing the merged dataset; throughput = samples / wall time.

The resume check runs N = 2, kills shard 1 (SIGKILL) once its resume cache holds about half of its
samples, restarts it, and counts the requests its server received after the restart: the samples not
yet in the cache, plus at most `slots` that were in flight when it was killed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SERVER = r'''
import asyncio, json, sys
from aiohttp import web
latency, slots = float(sys.argv[2]), int(sys.argv[3])
gate = asyncio.Semaphore(slots)
count = {"requests": 0}
async def chat(request):
    await request.json()
    async with gate:
        await asyncio.sleep(latency)
    count["requests"] += 1
    return web.json_response({"choices": [{"message": {"role": "assistant", "content": "So it is \\boxed{4}."},
                              "finish_reason": "stop"}], "usage": {"completion_tokens": 6, "prompt_tokens": 20}})
async def models(request):
    return web.json_response({"data": [{"id": "m", "owned_by": "fixed-latency"}]})
async def stats(request):
    return web.json_response(count)
app = web.Application()
app.add_routes([web.post("/v1/chat/completions", chat), web.get("/v1/models", models), web.get("/stats", stats)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
'''

POD = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from reasonops.api.v1alpha1 import ReasoningDatasetSpec
from reasonops.curate import CurateConfig, main
from reasonops.curate.sharding import Shard
spec, out, index, count = json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
print(json.dumps(main(CurateConfig(spec=ReasoningDatasetSpec.model_validate(spec), output=out, shard=Shard(index, count),
                                   workers=1, progress=False))))
'''


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float, slots: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port), str(latency), str(slots)])
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"{url}/stats", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def requests_of(url: str) -> int:
    import httpx

    return httpx.get(f"{url}/stats", timeout=5).json()["requests"]


def spec(pool: Path, urls: list[str], attempts: int, slots: int, index: int) -> dict:
    return {
        "sources": [{"name": "pool", "path": str(pool)}],
        "stages": [
            {"name": "dedupe", "dedupe": {}},
            {"name": "attempts", "difficulty": {"sampler": {"model": "m", "endpoint": {"url": urls[index] + "/v1", "concurrency": slots}},
                                               "attempts": attempts, "minSolved": 0, "maxSolved": attempts,
                                               "sampling": {"maxTokens": 16, "seed": 1}}},
            {"name": "score", "score": {}},
            {"name": "top", "select": {"size": 100}},
        ],
        "output": {"path": "/unused"},
    }


def pod(pool: Path, urls: list[str], args: argparse.Namespace, out: Path, index: int, count: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REASONOPS_SHARD_WAIT_SECONDS": "900"}
    return subprocess.Popen([sys.executable, "-c", POD, str(ROOT / "operator"),
                             json.dumps(spec(pool, urls, args.attempts, args.slots, index)), str(out), str(index), str(count)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)


def write_pool(path: Path, problems: int) -> None:
    with path.open("w") as fh:
        for i in range(problems):
            fh.write(json.dumps({"id": f"p{i}", "question": f"Problem {i}: what is {i} plus {i * 7 % 13}?",
                                 "solution": f"Add them: \\boxed{{{i + i * 7 % 13}}}.", "answer": "4"}) + "\n")


def scaling(pool: Path, args: argparse.Namespace, tmp: Path, count: int) -> dict:
    servers = [start_server(args.latency, args.slots) for _ in range(count)]
    urls = [u for _, u in servers]
    try:
        out = tmp / f"n{count}" / "rev"
        start = time.perf_counter()
        pods = [pod(pool, urls, args, out, i, count) for i in range(count)]
        results = [p.communicate()[0] for p in pods]
        seconds = time.perf_counter() - start
        if any(p.returncode for p in pods):
            raise RuntimeError(f"a pod failed: {[p.returncode for p in pods]}")
        per_server = [requests_of(u) for u in urls]
    finally:
        for process, _ in servers:
            process.terminate()
    samples = args.problems * args.attempts
    return {"shards": count, "seconds": round(seconds, 1), "samples": samples, "samplesPerSecond": round(samples / seconds, 1),
            "requestsPerServer": per_server, "samples_in_dataset": json.loads(results[0].splitlines()[-1])["samples"]}


def resume(pool: Path, args: argparse.Namespace, tmp: Path) -> dict:
    servers = [start_server(args.latency, args.slots) for _ in range(2)]
    urls = [u for _, u in servers]
    out = tmp / "resume" / "rev"
    cache = out.parent / ".rev.work" / "attempts.m.shard-1-of-2.jsonl"
    try:
        first = pod(pool, urls, args, out, 0, 2)
        victim = pod(pool, urls, args, out, 1, 2)
        while True:
            time.sleep(0.2)
            lines = len(cache.read_text().splitlines()) if cache.exists() else 0
            if lines >= args.problems * args.attempts // 4 or victim.poll() is not None:  # ~half of shard 1's samples
                break
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        time.sleep(2 * args.latency + 0.5)  # requests in flight at the kill still complete on the server
        cached = len(cache.read_text().splitlines())
        served_before = requests_of(urls[1])
        restarted = pod(pool, urls, args, out, 1, 2)
        restarted.communicate()
        first.communicate()
        after = requests_of(urls[1]) - served_before
        ok = (out / "_COMPLETE").exists()
    finally:
        for process, _ in servers:
            process.terminate()
    sys.path.insert(0, str(ROOT / "operator"))
    from reasonops.curate.store import id_hash

    share = sum(id_hash(f"pool:p{i}") % 2 == 1 for i in range(args.problems)) * args.attempts
    return {"shard1Samples": share, "cachedWhenKilled": cached, "servedBeforeKill": served_before,
            "requestsAfterRestart": after, "repeatedAfterRestart": after - (share - cached),
            "inFlightLostAtKill": served_before - cached, "datasetWritten": ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=400)
    parser.add_argument("--attempts", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json")
    args = parser.parse_args()
    figures: dict = {"problems": args.problems, "attempts": args.attempts, "latency": args.latency, "slots": args.slots,
                     "serverCapacity": round(args.slots / args.latency, 1), "runs": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pool = tmp / "pool.jsonl"
        write_pool(pool, args.problems)
        for count in args.shards:
            figures["runs"].append(scaling(pool, args, tmp, count))
            print(json.dumps(figures["runs"][-1]), file=sys.stderr)
        base = figures["runs"][0]["samplesPerSecond"] / figures["runs"][0]["shards"]
        for run in figures["runs"]:
            run["speedup"] = round(run["samplesPerSecond"] / base, 2)
        figures["resume"] = resume(pool, args, tmp)
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
