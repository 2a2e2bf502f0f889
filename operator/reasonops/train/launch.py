"""Process topology: the torchrun command a training pod execs, and the preflight of its process group.

Every pod of a FineTuneJob runs `reasonops workload --resource /etc/reasonops/resource.json`. When the
job needs more than one process (NNODES x NPROC_PER_NODE > 1) and the process is not already a torchrun
worker, the runner replaces itself with `launch_command(doc, os.environ)`:

    python -m torch.distributed.run --nnodes=$NNODES --nproc-per-node=$NPROC_PER_NODE --node-rank=$NODE_RANK \
        --master-addr=$MASTER_ADDR --master-port=$MASTER_PORT --max-restarts=0 \
        --no-python reasonops workload --resource /etc/reasonops/resource.json

Each worker (LOCAL_RANK set by torchrun) then calls `reasonops.train.run_resource` in-process.
Pod restarts (the Job's backoffLimit) rather than torchrun restarts handle failures: a restarted pod
resumes from the latest complete checkpoint.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping, MutableMapping, Optional, Sequence

from ..api import common as reasons
from ..errors import WorkloadError

log = logging.getLogger("reasonops.train")

DEFAULT_RESOURCE = "/etc/reasonops/resource.json"
DEFAULT_TIMEOUT_S = 300.0  # rendezvous and first collective; override with REASONOPS_RENDEZVOUS_TIMEOUT
DEFAULT_COLLECTIVE_TIMEOUT_S = 4 * 3600.0  # every later collective; override with REASONOPS_COLLECTIVE_TIMEOUT


@dataclass(frozen=True)
class Topology:
    nnodes: int
    nproc_per_node: int
    node_rank: int
    master_addr: str
    master_port: Optional[int]

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def _env(env: Mapping[str, str], name: str) -> Optional[str]:
    return env.get(name) or env.get(f"PET_{name}")  # PET_* are the aliases training operators set


def topology(doc: dict[str, Any], env: Mapping[str, str]) -> Topology:
    """Nodes and processes per node: the operator's environment first, then the spec.

    Without NPROC_PER_NODE, one process per visible GPU (at most spec.gpusPerNode), or one on a CPU machine.
    """
    spec = doc.get("spec") or {}
    nnodes = int(_env(env, "NNODES") or spec.get("numNodes") or 1)
    nproc = _env(env, "NPROC_PER_NODE")
    if nproc is None:
        wanted = spec.get("gpusPerNode")
        visible = _visible_gpus()
        nproc = min(visible, 8 if wanted is None else wanted) if visible else 1
    port = _env(env, "MASTER_PORT")
    return Topology(
        nnodes=nnodes,
        nproc_per_node=max(1, int(nproc)),
        node_rank=int(_env(env, "NODE_RANK") or 0),
        master_addr=_env(env, "MASTER_ADDR") or "127.0.0.1",
        master_port=int(port) if port else None,
    )


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def is_torchrun_worker(env: Mapping[str, str]) -> bool:
    return "LOCAL_RANK" in env and "WORLD_SIZE" in env


def should_launch(doc: dict[str, Any], env: Mapping[str, str]) -> bool:
    """Whether the pod entry must exec `launch_command` instead of training in-process."""
    return not is_torchrun_worker(env) and topology(doc, env).world_size > 1


def launch_command(
    doc: dict[str, Any],
    env: Mapping[str, str],
    *,
    resource_path: str = DEFAULT_RESOURCE,
    worker: Optional[Sequence[str]] = None,
) -> list[str]:
    """The torchrun command line for this node; `worker` is what each process runs (default: the pod entry)."""
    topo = topology(doc, env)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={topo.nnodes}",
           f"--nproc-per-node={topo.nproc_per_node}", "--max-restarts=0"]
    if topo.nnodes == 1 and topo.master_port is None:
        cmd.append("--standalone")  # picks a free local port
    else:
        cmd += [f"--node-rank={topo.node_rank}", f"--master-addr={topo.master_addr}",
                f"--master-port={topo.master_port or 29500}"]
    worker = list(worker) if worker else ["reasonops", "workload", "--resource", resource_path]
    if worker[0] == sys.executable or worker[0].endswith("python"):
        return cmd + worker[1:]  # torchrun prepends the interpreter itself
    return cmd + ["--no-python"] + worker


def rendezvous_timeout(env: Mapping[str, str] = os.environ) -> float:
    return float(env.get("REASONOPS_RENDEZVOUS_TIMEOUT") or DEFAULT_TIMEOUT_S)


def resolve_host(host: str) -> str:
    """'a.b.c -> 10.0.0.7, ...' or the resolver's error, for failure messages."""
    try:
        addrs = sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
        return f"{host} resolves to {', '.join(addrs)}"
    except OSError as exc:
        return f"{host} does not resolve ({exc})"


def check_master_reachable(env: Mapping[str, str], timeout_s: Optional[float] = None) -> None:
    """On nodes other than 0, before exec'ing torchrun: wait until MASTER_ADDR:MASTER_PORT accepts TCP.

    torchrun itself would block on an unreachable master for many minutes without saying why.
    """
    node_rank = int(_env(env, "NODE_RANK") or 0)
    addr, port = _env(env, "MASTER_ADDR"), _env(env, "MASTER_PORT")
    if node_rank == 0 or not addr or not port:
        return
    deadline = time.monotonic() + (timeout_s or rendezvous_timeout(env))
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            socket.create_connection((addr, int(port)), timeout=5).close()
            return
        except OSError as exc:
            last = exc
            time.sleep(2)
    raise WorkloadError(
        reasons.REASON_RENDEZVOUS_FAILED,
        f"node {node_rank} could not reach the master {addr}:{port} within {timeout_s or rendezvous_timeout(env):.0f}s "
        f"({resolve_host(addr)}; last error: {last})",
    )


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    backend: str


def init_distributed(timeout_s: Optional[float] = None, backend: Optional[str] = None) -> DistInfo:
    """Join (or, for a plain single process, create) the process group and prove it with an all_reduce.

    Runs before the model is loaded so that a broken rendezvous fails in seconds with who/where, not after
    a 30-minute NCCL timeout. Outside torchrun a one-process group on a free local port is created and kept
    (with the RANK/WORLD_SIZE/LOCAL_RANK variables DeepSpeed reads) for later runs in the same process:
    DeepSpeed caches its groups, so a destroyed and re-created group would break the next run.
    """
    import torch
    import torch.distributed as dist

    timeout_s = timeout_s or rendezvous_timeout()
    if not dist.is_initialized():
        single_process_env(os.environ)
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        try:
            dist.init_process_group(backend, timeout=_dt.timedelta(seconds=collective_timeout()))
        except Exception as exc:
            raise WorkloadError(reasons.REASON_RENDEZVOUS_FAILED, _where(f"could not join the process group: {exc}")) from exc
    info = DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size(), dist.get_backend())
    _check_all_reduce(info, timeout_s)
    return info


def single_process_env(env: MutableMapping[str, str]) -> None:
    """Make a process that torchrun did not start (no RANK) the rank 0 of a one-process group.

    The operator sets WORLD_SIZE=1, NNODES=1, NPROC_PER_NODE=1 and MASTER_ADDR/PORT on every training pod,
    but only torchrun sets RANK and LOCAL_RANK: a one-process pod is not launched through torchrun, so it
    gets them here, with a free local port (the pod's MASTER_ADDR may name a Service it cannot bind).
    """
    if "RANK" in env:
        return
    world = int(env.get("WORLD_SIZE") or 1)
    if world != 1:
        raise WorkloadError(reasons.REASON_RENDEZVOUS_FAILED, f"WORLD_SIZE is {world} but RANK is not set: a job of {world} "
                            "processes must be started by torchrun (reasonops workload launches it)")
    env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))


def collective_timeout(env: Mapping[str, str] = os.environ) -> float:
    """Seconds a collective may wait for the slowest rank (REASONOPS_COLLECTIVE_TIMEOUT, default 4 hours).

    Other ranks wait in a barrier while rank 0 gathers and writes a 32B export or one node downloads the
    base model slowly; 30 minutes (torch's default) is too short for either. LIMO's recipe sets 180000000 s.
    """
    return float(env.get("REASONOPS_COLLECTIVE_TIMEOUT") or DEFAULT_COLLECTIVE_TIMEOUT_S)


def _check_all_reduce(info: DistInfo, timeout_s: float) -> None:
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", info.local_rank) if info.backend == "nccl" else torch.device("cpu")
    value = torch.ones(1, device=device)
    work = dist.all_reduce(value, async_op=True)
    deadline = time.monotonic() + timeout_s
    while not work.is_completed():
        if time.monotonic() > deadline:
            raise WorkloadError(reasons.REASON_RENDEZVOUS_FAILED, _where(f"all_reduce did not complete within {timeout_s:.0f}s"))
        time.sleep(0.05)
    work.wait()
    if int(value.item()) != info.world_size:
        raise WorkloadError(reasons.REASON_RENDEZVOUS_FAILED, _where(f"all_reduce returned {value.item()}, expected {info.world_size}"))
    log.info("process group ready: rank %d of %d (%s)", info.rank, info.world_size, info.backend)


def _where(problem: str) -> str:
    addr, port = os.environ.get("MASTER_ADDR", "?"), os.environ.get("MASTER_PORT", "?")
    return (f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')} (node "
            f"{_env(os.environ, 'NODE_RANK') or 0}): {problem}; master {addr}:{port}, {resolve_host(addr)}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
