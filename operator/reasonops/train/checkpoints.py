"""Atomic training checkpoints under `<output>/checkpoints/step-N`.

A checkpoint is written into `.tmp-step-N`, renamed to `step-N`, and only then gets its `_COMPLETE`
marker: a directory without the marker (a crash mid-write) is never resumed from and is cleaned up.
Each holds the DeepSpeed state (module, optimizer and LR scheduler partitions of every rank), the RNG
state of every rank and the trainer position (step, epoch) as JSON. On multi-node jobs the output must
be a volume every node mounts (ReadWriteMany): each rank writes its own partitions.
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
from typing import Any, Optional

import numpy as np
import torch

log = logging.getLogger("reasonops.train")

MARKER = "_COMPLETE"
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


def save_checkpoint(engine: Any, root: Path, state: TrainerState, *, rank: int, keep: int) -> Path:
    """Collective: every rank calls it. Returns the checkpoint directory."""
    tmp, final = root / f".tmp-step-{state.step}", root / f"step-{state.step}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    engine.save_checkpoint(str(tmp), tag=TAG, client_state={"trainer": asdict(state)})
    torch.save(_rng_state(), tmp / f"rng-rank{rank}.pt")
    _barrier()
    if rank == 0:
        (tmp / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_marker(final)
        for _, old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
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
