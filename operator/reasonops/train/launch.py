"""Process topology: the torchrun command a training pod runs, and the preflight of its process group.

Every pod of a FineTuneJob runs `reasonops workload --resource /etc/reasonops/resource.json`. When the
job needs more than one process (NNODES x NPROC_PER_NODE > 1) and the process is not already a torchrun
worker, the runner runs `launch_command(doc, os.environ)` as its child (`run_group`, below):

    python -m torch.distributed.run --nnodes=$NNODES --nproc-per-node=$NPROC_PER_NODE --node-rank=$NODE_RANK \
        --master-addr=$MASTER_ADDR --master-port=$MASTER_PORT --max-restarts=0 \
        --no-python reasonops workload --resource /etc/reasonops/resource.json

Each worker (LOCAL_RANK set by torchrun) then calls `reasonops.train.run_resource` in-process.
Pod restarts (the Job's backoffLimit) rather than torchrun restarts handle failures: a restarted pod
resumes from the latest complete checkpoint.

The runner does not exec torchrun: it runs it as a child (`run_group`) and trusts its exit status only as
far as its workers say they finished. torchrun can end with status 0 when the node that hosts its store
(node 0) goes away mid-run; a pod that then exits 0 is an index the Indexed Job counts as done and never
runs again, so a replacement of node 0 would wait for it at the rendezvous forever. Each worker that returns
from training (after the job's last barrier, which follows the final write) leaves a file in a directory
the launcher names (`mark_worker_done`); without one file per local worker the pod fails (PeerFailed), and
the whole group restarts. A pod of a run whose output already holds a finished model does not launch at
all (the runner checks first): every index of a finished run ends at once.

A worker that fails only because a peer went away (`is_peer_loss`: the transport's "connection closed by
peer", or another rank's reported failure) says so with a `.peer-lost` file, any other failure with a
`.failed` one; a pod whose failed workers all lost a peer exits with PEER_LOST_EXIT_CODE, which the Job's pod
failure policy ignores: the pod that went away is the failure counted, once per group restart. A worker stopped
by SIGTERM after its checkpoint (train.preemption, errors.Stopped) leaves a `.stopped` file; a pod whose workers
stopped that way (or lost a peer) and none failed exits with STOPPED_EXIT_CODE, ignored the same way. torchrun
passes SIGTERM on to its workers and waits for them up to TORCH_ELASTIC_SHUTDOWN_TIMEOUT (STOP_TIMEOUT_S, longer
than any grace period: the kubelet's SIGKILL at the end of the pod's grace period is the limit that counts).
A torch older than the setting waits 30 s, then kills its workers: their checkpoint is then the one before.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Optional, Sequence

from ..api import common as reasons
from ..api.v1alpha1 import FineTuneJobSpec
from ..contract import PEER_LOST_EXIT_CODE, STOPPED_EXIT_CODE, WorkloadDocument
from ..errors import Stopped, WorkloadError

log = logging.getLogger("reasonops.train")

DEFAULT_RESOURCE = "/etc/reasonops/resource.json"
DEFAULT_TIMEOUT_S = 300.0  # rendezvous and first collective; override with REASONOPS_RENDEZVOUS_TIMEOUT
DEFAULT_COLLECTIVE_TIMEOUT_S = 4 * 3600.0  # every later collective; override with REASONOPS_COLLECTIVE_TIMEOUT
GROUP_DONE_ENV = "REASONOPS_GROUP_DONE"  # launcher -> its workers: where each leaves rank-<LOCAL_RANK>.done
STOP_TIMEOUT_S = 24 * 3600  # torchrun's wait for workers writing their stop checkpoint (its default: 30 s)
STOP_TIMEOUT_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"  # torchrun's own setting (its --shutdown-timeout in newer versions)


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


def topology(doc: WorkloadDocument, env: Mapping[str, str]) -> Topology:
    """Nodes and processes per node: the operator's environment first, then the spec.

    Without NPROC_PER_NODE, one process per visible GPU (at most spec.gpusPerNode), or one on a CPU machine.
    """
    spec = doc.spec
    assert isinstance(spec, FineTuneJobSpec), f"a FineTuneJob document, not a {doc.kind}"
    nnodes = int(_env(env, "NNODES") or spec.numNodes or 1)
    nproc = _env(env, "NPROC_PER_NODE")
    if nproc is None:
        wanted = spec.gpusPerNode
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


def should_launch(doc: WorkloadDocument, env: Mapping[str, str]) -> bool:
    """Whether the pod entry must exec `launch_command` instead of training in-process."""
    return not is_torchrun_worker(env) and topology(doc, env).world_size > 1


def launch_command(
    doc: WorkloadDocument,
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


def run_group(command: Sequence[str], nproc_per_node: int, env: Optional[Mapping[str, str]] = None) -> int:
    """Run the torchrun `command` as a child and return the pod's exit status.

    SIGTERM and SIGINT are passed on to torchrun (which stops its workers). A non-zero status is returned as
    it is (the failing worker wrote the termination message). Status 0 counts only when every local worker
    left its done file (`mark_worker_done`); otherwise the group lost a peer and this raises PeerFailed.
    """
    env = dict(os.environ if env is None else env)
    done = Path(tempfile.mkdtemp(prefix="reasonops-group-"))
    env[GROUP_DONE_ENV] = str(done)
    env.setdefault(STOP_TIMEOUT_ENV, str(STOP_TIMEOUT_S))
    child = subprocess.Popen(list(command), env=env)

    def forward(signum: int, _frame: Any) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != 0:
        lost, failed = list(done.glob("rank-*.peer-lost")), list(done.glob("rank-*.failed"))
        if list(done.glob("rank-*.stopped")) and not failed:
            log.warning("torchrun exited with status %d: this node's workers stopped on a signal after their "
                        "checkpoint (exit %d, not counted as a failure)", code, STOPPED_EXIT_CODE)
            return STOPPED_EXIT_CODE
        if lost and not failed:
            log.error("torchrun exited with status %d: this node lost a peer (exit %d, not counted as a failure)",
                      code, PEER_LOST_EXIT_CODE)
            return PEER_LOST_EXIT_CODE
        log.error("torchrun exited with status %d", code)
        return code
    finished = len(list(done.glob("rank-*.done")))
    if finished < nproc_per_node:
        raise WorkloadError(
            reasons.REASON_PEER_FAILED,
            f"torchrun exited with status 0 but {finished} of this node's {nproc_per_node} workers finished "
            "training: the process group lost a peer (the node hosting the rendezvous store went away); failing the "
            "pod so that the whole group restarts and resumes from the latest checkpoint",
        )
    return 0


def mark_worker_done(env: Mapping[str, str] = os.environ) -> None:
    """Called by a torchrun worker after its training returned: tells `run_group` this worker finished."""
    _mark(env, "done")


def mark_worker_failed(exc: BaseException, env: Mapping[str, str] = os.environ) -> None:
    """Called by a torchrun worker that is failing: tells `run_group` whether it stopped on a signal after its
    checkpoint, or only a peer's loss caused it."""
    _mark(env, "stopped" if isinstance(exc, Stopped) else "peer-lost" if is_peer_loss(exc) else "failed")


def _mark(env: Mapping[str, str], outcome: str) -> None:
    directory = env.get(GROUP_DONE_ENV)
    if directory:
        Path(directory, f"rank-{env.get('LOCAL_RANK', '0')}.{outcome}").touch()


# What the collective backends say when the other end of the group went away (gloo's TCP transport, NCCL's
# remote error). Only these: an error of this process's own (a shape mismatch in a collective, a bad
# input) must stay a counted failure, or a bug would restart forever.
_PEER_LOSS = ("connection closed by peer", "connection reset by peer", "broken pipe", "ncclremoteerror",
              "remote process exited or there was a network error")


def is_peer_loss(exc: BaseException) -> bool:
    """Whether a worker's failure comes from losing another process of its group, not from itself."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, WorkloadError):
            if current.reason == reasons.REASON_PEER_FAILED:  # another rank reported its own failure
                return True
        elif any(sign in str(current).lower() for sign in _PEER_LOSS):
            return True
        current = current.__cause__ or current.__context__
    return False


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
    """On nodes other than 0, before starting torchrun: wait until MASTER_ADDR:MASTER_PORT accepts TCP.

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
    a 30-minute NCCL timeout. Outside torchrun a one-process group over an in-process store is created and kept
    (with the RANK/WORLD_SIZE/LOCAL_RANK variables DeepSpeed reads) for later runs in the same process:
    DeepSpeed caches its groups, so a destroyed and re-created group would break the next run.
    """
    import torch
    import torch.distributed as dist

    timeout_s = timeout_s or rendezvous_timeout()
    if not dist.is_initialized():
        alone = "RANK" not in os.environ  # not started by torchrun: a group of this one process
        single_process_env(os.environ)
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        # Alone, the group's store is in this process: a TCP store on the free port would have to bind it after
        # the port was found free, and another process of the machine can take it in between (EADDRINUSE).
        store = {"store": dist.HashStore(), "rank": 0, "world_size": 1} if alone else {}
        try:
            dist.init_process_group(backend, timeout=_dt.timedelta(seconds=collective_timeout()), **store)
        except Exception as exc:
            raise WorkloadError(reasons.REASON_RENDEZVOUS_FAILED, _where(f"could not join the process group: {exc}")) from exc
    info = DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size(), dist.get_backend())
    _check_all_reduce(info, timeout_s)
    return info


def single_process_env(env: MutableMapping[str, str]) -> None:
    """Make a process that torchrun did not start (no RANK) the rank 0 of a one-process group.

    The operator sets WORLD_SIZE=1, NNODES=1, NPROC_PER_NODE=1 and MASTER_ADDR/PORT on every training pod,
    but only torchrun sets RANK and LOCAL_RANK: a one-process pod is not launched through torchrun, so it
    gets them here, and a local MASTER_ADDR/PORT for code that reads them (the pod's MASTER_ADDR may name a Service it
    cannot bind); the group itself binds no port (init_distributed keeps its store in this process).
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
