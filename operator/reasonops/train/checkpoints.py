"""Atomic training checkpoints under `<output>/checkpoints/step-N`.

A checkpoint is written into `.tmp-step-N`, renamed to `step-N`, and only then gets its `_COMPLETE`
marker: a directory without the marker (a crash mid-write) is never resumed from and is cleaned up.
Each holds the DeepSpeed state (module, optimizer and LR scheduler partitions of every rank), the RNG
state of every rank and the trainer position (step, epoch) as JSON. On a volume output every node must
mount the same volume (ReadWriteMany): each rank writes its own partitions, global rank 0 finalizes.

An object-store output (a URI) has no shared directory: each node stages checkpoints on its own disk
(finalized by its local rank 0) and mirrors them to `<output>/checkpoints/step-N`; the remote marker is
written by global rank 0 after every node has uploaded its files. A restarted pod, on any node, fetches
the newest complete remote checkpoint when its own disk has nothing newer, so a URI output resumes like a
volume does.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..contract import checkpoint_name

log = logging.getLogger("reasonops.train")

MARKER = "_COMPLETE"
TRAIN_LOG = "train_log.jsonl"  # the loss curve up to the checkpoint's step, copied in before the marker
TAG = "state"  # DeepSpeed's tag (sub-directory) inside each checkpoint
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    tokens: int = 0  # real (non-padding) tokens processed
    seconds: float = 0.0  # training wall time, summed over restarts
    last_loss: Optional[float] = None


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and (entry / MARKER).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(root: Path) -> Optional[Path]:
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def remove_incomplete(root: Path) -> None:
    """Rank 0, before training: drop what a crash left behind."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.name.startswith(".tmp-") or (_STEP_DIR.match(entry.name) and not (entry / MARKER).exists()):
            log.info("removing incomplete checkpoint %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def save_checkpoint(engine: Any, root: Path, state: TrainerState, *, rank: int, keep: int,
                    owner: Optional[bool] = None, remote: Optional[str] = None,
                    train_log: Optional[Path] = None, export: Optional[Callable[[Path], Any]] = None) -> Path:
    """Collective: every rank calls it. Returns the (local) checkpoint directory.

    `owner`: whether this process finalizes `root` (default: global rank 0; on node-local disks each
    node's local rank 0). `remote`: the object-store directory the checkpoint is mirrored to.
    `train_log`: the loss curve so far (written by rank 0), copied into the checkpoint by rank 0.
    `export`: a collective that writes a servable model into the checkpoint's directory (before its
    marker: a complete checkpoint always has its export); pruning removes it with the checkpoint.
    """
    owner = rank == 0 if owner is None else owner
    name = checkpoint_name(state.step)
    tmp, final = root / f".tmp-{name}", root / name
    if owner:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    engine.save_checkpoint(str(tmp), tag=TAG, client_state={"trainer": asdict(state)})
    torch.save(_rng_state(), tmp / f"rng-rank{rank}.pt")
    _barrier()
    if export is not None:
        export(tmp)
    if rank == 0 and train_log is not None and train_log.exists():
        shutil.copyfile(train_log, tmp / TRAIN_LOG)
    if owner:
        (tmp / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_marker(final)
        for _, old in (complete_checkpoints(root)[:-keep] if keep else []):  # keep 0: every checkpoint
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    if remote:
        _mirror(final, remote, rank=rank, owner=owner, keep=keep)
    return final


def _mirror(local: Path, remote: str, *, rank: int, owner: bool, keep: int) -> None:
    """Collective: upload a finalized checkpoint, every node its own files, then mark it complete."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(remote)
    dest = f"{base}/{local.name}"
    if owner:
        for path in sorted(p for p in local.rglob("*") if p.is_file() and p.name != MARKER):
            target = f"{dest}/{path.relative_to(local).as_posix()}"
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path), target)
    _barrier()
    if rank == 0:
        fs.pipe_file(f"{dest}/{MARKER}", b"ok\n")
        steps = _remote_steps(fs, base)
        complete = [step for step, done in steps if done]
        for step, done in steps:  # beyond `keep`, and uploads a crash left unfinished
            if (done and keep and step not in complete[-keep:]) or (not done and step < complete[-1]):
                fs.rm(f"{base}/{checkpoint_name(step)}", recursive=True)
        log.info("checkpoint %s mirrored to %s", local.name, remote)
    _barrier()


def _remote_steps(fs: Any, base: str) -> list[tuple[int, bool]]:
    """(step, complete) of the checkpoint directories under `base`, oldest first."""
    try:
        entries = fs.ls(base, detail=False)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        match = _STEP_DIR.match(entry.rstrip("/").rsplit("/", 1)[-1])
        if match:
            found.append((int(match.group(1)), fs.exists(f"{entry.rstrip('/')}/{MARKER}")))
    return sorted(found)


def fetch_latest(root: Path, remote: str) -> Optional[Path]:
    """Bring the newest complete remote checkpoint to `root` when `root` has nothing as new (a pod
    restarted on an empty disk). Run by each node's owner before training; returns what it fetched."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(remote)
    complete = [step for step, done in _remote_steps(fs, base) if done]
    local = complete_checkpoints(root)
    if not complete or (local and local[-1][0] >= complete[-1]):
        return None
    step = complete[-1]
    source, tmp, final = f"{base}/{checkpoint_name(step)}", root / f".tmp-{checkpoint_name(step)}", root / checkpoint_name(step)
    shutil.rmtree(tmp, ignore_errors=True)
    for path in fs.find(source):
        rel = path[len(source) + 1:]  # fs.find gives paths as url_to_fs does: without the protocol
        if rel == MARKER:
            continue
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(path, str(tmp / rel))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_marker(final)
    log.info("fetched checkpoint step-%d from %s", step, remote)
    return final


def load_checkpoint(engine: Any, path: Path, *, rank: int) -> TrainerState:
    """Restore module, optimizer, LR scheduler and this rank's RNG; return the trainer position."""
    load_path, _client = engine.load_checkpoint(
        str(path), tag=TAG, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if load_path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint in {path}")
    state = TrainerState(**json.loads((path / "trainer_state.json").read_text()))
    rng_file = path / f"rng-rank{rank}.pt"
    if rng_file.exists():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    else:  # resumed with more ranks than were saved: reseed deterministically instead
        log.warning("no RNG state for rank %d in %s; reseeding", rank, path)
    return state


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def write_marker(directory: Path) -> None:
    with open(directory / MARKER, "w") as fh:
        fh.write("ok\n")
        fh.flush()
        os.fsync(fh.fileno())


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
