"""FineTuneJob workload: supervised fine-tuning (full-parameter or LoRA) of a causal LM on a reasoning dataset.

Entry points (docs/architecture.md):

    config = config_from_resource(doc)       # the FineTuneJob WorkloadDocument (contract.read_document) -> TrainConfig
    result = main(config)                    # every process of the job calls it; also usable from Python
    result = run_resource(doc, reporter)     # what `reasonops workload` calls

Launch. A pod runs `reasonops workload --resource /etc/reasonops/resource.json`. When the job has more than one
process (NNODES x NPROC_PER_NODE > 1, see `should_launch`) and the process is not yet a torchrun worker, the
runner first returns the stored result if the output already holds a finished model (`finished_result`), else
calls `check_master_reachable(os.environ)` and runs `launch_command(doc, os.environ)` under `run_group`:

    python -m torch.distributed.run --nnodes=$NNODES --nproc-per-node=$NPROC_PER_NODE --max-restarts=0 \\
        --node-rank=$NODE_RANK --master-addr=$MASTER_ADDR --master-port=$MASTER_PORT \\
        --no-python reasonops workload --resource /etc/reasonops/resource.json

(single node without MASTER_PORT: `--standalone` instead of the node/master flags). Each worker then finds
LOCAL_RANK/WORLD_SIZE set and calls `run_resource` in-process, which tells the launcher when it finished
(`mark_worker_done`: torchrun's own exit status 0 does not prove it). Locally, for one process:

    python -m reasonops.train --resource resource.json          # or torchrun --nproc-per-node 2 -m reasonops.train ...

Output layout (`doc.output`): checkpoints/step-N/ (atomic, `_COMPLETE` last, last K kept), model/ (merged
Hugging Face safetensors + tokenizer + chat template + generation_config.json), adapter/ (LoRA only),
train_log.jsonl, train_config.json, training_summary.json, and `_COMPLETE` last. A restarted process resumes
from the latest complete checkpoint; a finished run returns its stored result.
"""

from __future__ import annotations

from typing import Any

from .. import tracking
from ..contract import WorkloadDocument
from ..progress import Reporter
from .config import PRESETS, TrainConfig, config_from_resource, deepspeed_config
from .launch import (check_master_reachable, launch_command, mark_worker_done, mark_worker_failed, run_group,
                     should_launch, topology)
from .trainer import finished_result, main

__all__ = [
    "PRESETS",
    "TrainConfig",
    "check_master_reachable",
    "config_from_resource",
    "deepspeed_config",
    "finished_result",
    "launch_command",
    "main",
    "mark_worker_done",
    "mark_worker_failed",
    "run_group",
    "run_resource",
    "should_launch",
    "topology",
]


def run_resource(doc: WorkloadDocument, reporter: Reporter) -> dict[str, Any]:
    """Train for a FineTuneJob workload document; returns the result the operator copies into status."""
    with tracking.start(doc) as tracker:  # rank 0 only; nothing without spec.tracking
        result = main(config_from_resource(doc), reporter, tracker)
    mark_worker_done()
    return result
