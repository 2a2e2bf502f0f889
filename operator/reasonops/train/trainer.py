"""The training loop: DeepSpeed engine, token-normalised loss, checkpoints, progress, final export."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.distributed as dist

from ..api import common as reasons
from ..api.v1alpha1 import MAX_CHECKPOINTS
from ..contract import checkpoint_model, checkpoint_name
from ..errors import Stopped, WorkloadError
from ..progress import Reporter
from ..report import REPORT_FILE, write_report_quietly
from ..tracking import Tracker
from . import checkpoints as ckpt
from .config import TrainConfig, deepspeed_config
from .data import (
    DataStats,
    Sample,
    collate,
    epoch_order,
    prepare_samples,
    rank_micro_batches,
    read_rows,
    steps_per_epoch,
    target_tokens,
)
from .launch import DistInfo, init_distributed
from .metrics import PrometheusMetrics, Throughput, attention_width, device_peak_flops, train_flops
from .modeling import (
    choose_attention,
    count_parameters,
    export_model,
    is_uri,
    load_model,
    load_tokenizer,
    parameter_groups,
    resolve_model_dir,
    training_dtype,
)
from .preemption import StopSignal, stop_checkpoint_export

log = logging.getLogger("reasonops.train")
T = TypeVar("T")

SUMMARY = "training_summary.json"
RESOLVED_CONFIG = "train_config.json"
TRAIN_LOG = ckpt.TRAIN_LOG  # one line per optimizer step (rank 0)
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def main(config: TrainConfig, reporter: Optional[Reporter] = None, tracker: Optional[Tracker] = None) -> dict[str, Any]:
    """Train (or resume, or return the finished result of) one run. Every process of the job calls it; `tracker`
    (rank 0's, see reasonops.tracking) gets the resolved hyperparameters and every step's numbers."""
    previous = finished_result(config.output)
    if previous is not None:
        log.info("%s already holds a finished model; nothing to do", config.output)
        return previous
    info = init_distributed(backend=config.distributed_backend)
    try:
        with StopSignal() as stop:  # SIGTERM: a checkpoint of the current step, then errors.Stopped
            return _train(config, reporter or Reporter(), info, stop, tracker or Tracker([]))
    finally:
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()


def _no_shared_memory_op() -> None:
    """On CPU, DeepSpeed JIT-compiles a shared-memory all-reduce when its communication backend starts: a C++
    compiler, more than 2 GiB and minutes in every pod (and a writable extension cache, which a read-only
    root filesystem has not). gloo's collectives, which the process group already uses, are enough."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _train(config: TrainConfig, reporter: Reporter, info: DistInfo, stop: StopSignal, tracker: Tracker) -> dict[str, Any]:
    import deepspeed
    from transformers import get_scheduler, set_seed

    started = time.monotonic()
    if info.backend != "nccl":
        _no_shared_memory_op()
    deepspeed.init_distributed(dist_backend=info.backend)  # adopts our group; its config code needs it
    is_main = info.rank == 0
    gas = config.gradient_accumulation(info.world_size)  # before anything slow: a wrong batch fails at once
    device = torch.device("cuda", info.local_rank) if info.backend == "nccl" else torch.device("cpu")
    dtype = training_dtype(device)
    work = _local_output(config)
    set_seed(config.seed)

    if is_main:
        reporter.update(stage="prepare", message=f"resolving base model {config.model}", force=True)
    scratch = Path(os.environ.get("REASONOPS_SCRATCH") or tempfile.gettempdir()) / "reasonops-train" / (config.revision or config.name)
    base_dir = _local_rank0_first(info, lambda: resolve_model_dir(config.model, config.model_revision, scratch))
    tokenizer = _together(info, lambda: load_tokenizer(base_dir, config.chat_template))
    samples, stats = _together(info, lambda: prepare_samples(
        tokenizer, read_rows(config.dataset), max_length=config.max_length, overlong=config.overlong,
        system_prompt=config.system_prompt))
    per_epoch = steps_per_epoch(len(samples), config.global_batch_size)
    total_steps = per_epoch * config.epochs
    if is_main:
        reporter.update(message=(
            f"{stats.kept} samples ({stats.tokens} tokens) of {stats.rows} rows: {stats.bad} unusable, "
            f"{stats.overlong_dropped} dropped and {stats.truncated} truncated for length; {total_steps} steps"
        ), force=True)

    attention, why = choose_attention(config.attention, device, dtype)
    log.info("attention: %s (%s); dtype %s; ZeRO stage %d; gradient accumulation %d", attention, why, dtype,
             config.zero_stage, gas)
    if config.packing and config.micro_batch_size > 1 and attention != "flash_attention_2":
        # Without a varlen kernel, isolation of packed samples costs a dense (tokens x tokens) mask per row.
        log.warning("packing %d samples per row with %s builds a block-diagonal mask of the whole row; "
                    "flash_attention_2 avoids it", config.micro_batch_size, attention)
    ds_config = deepspeed_config(config, world_size=info.world_size, bf16=dtype == torch.bfloat16)
    if config.zero_stage == 3:
        from transformers.integrations import HfDeepSpeedConfig

        _zero3_loading = HfDeepSpeedConfig(ds_config)  # noqa: F841 - while alive, from_pretrained partitions
    model = load_model(base_dir, config, dtype=dtype, attention=attention, device=device)
    n_params = count_parameters(model)
    warmup = config.warmup_steps(total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=parameter_groups(model, config.weight_decay),
        config=ds_config,
        lr_scheduler=lambda opt: get_scheduler(SCHEDULERS[config.scheduler], opt, num_warmup_steps=warmup,
                                               num_training_steps=total_steps),
    )
    set_seed(config.seed + info.rank)  # distinct dropout per rank; resumed runs restore RNG from the checkpoint

    root = work / "checkpoints"
    # The same export as the final model's (ZeRO-3 partitions gathered on rank 0), into a checkpoint's directory.
    export = (lambda directory: export_model(engine, config, tokenizer=tokenizer, base_dir=base_dir, dtype=dtype,
                                             output=directory, rank=info.rank)) if config.checkpoint_export else None
    # A URI output stages on each node's own disk and mirrors checkpoints to the object store.
    remote = f"{config.output.rstrip('/')}/checkpoints" if is_uri(config.output) else None
    owner = info.local_rank == 0 if remote else is_main
    if owner:
        ckpt.remove_incomplete(root)
        if remote:
            ckpt.fetch_latest(root, remote)
    _barrier()
    state = ckpt.TrainerState()
    latest: Optional[str] = None  # the newest checkpoint, relative to the output (see checkpoint_location)
    reached = 0  # the highest step this run reported before a restart: status never goes below it
    resume = ckpt.latest_checkpoint(root)
    if resume is not None:
        state = ckpt.load_checkpoint(engine, resume, rank=info.rank)
        latest = checkpoint_location(resume)
        log.info("resumed from %s/%s at step %d", config.output.rstrip("/"), latest, state.step)
    resumed_seconds = state.seconds
    if is_main:
        reached = _restore_train_log(work / TRAIN_LOG, resume)
        (work / RESOLVED_CONFIG).write_text(config.to_json())
        tracker.params(tracking_params(config, total_steps=total_steps, world_size=info.world_size, parameters=n_params,
                                       attention=attention))
        if resume is not None:
            reporter.update(stage="train", message=f"resumed from {latest} at step {state.step}",
                            step=max(state.step, reached), totalSteps=total_steps, latestCheckpoint=latest, force=True)

    text_config = getattr(model.config, "get_text_config", lambda: model.config)()
    flops_of = lambda lengths: train_flops(  # noqa: E731
        n_params, lengths, attention_width=attention_width(text_config), layers=text_config.num_hidden_layers,
        lora=config.method == "lora")
    peak = device_peak_flops(device)
    meter = Throughput(total_steps, state.step, peak * info.world_size if peak else None)
    prom = PrometheusMetrics.from_env() if is_main else None
    loop_started = time.monotonic() - state.seconds
    order: list[int] = []

    while state.step < total_steps:
        if _on_any_rank(stop.requested):  # a signal anywhere in the group: every rank saves this step, then exits
            latest = _stop_checkpoint(engine, root, state, config, info.rank, owner, remote, work / TRAIN_LOG,
                                      export, latest)
            if is_main:
                reporter.update(message=f"stopped on a signal at step {state.step}; resumes from {latest}",
                                latestCheckpoint=latest, force=True)
            raise Stopped(state.step, latest)
        epoch, in_epoch = divmod(state.step, per_epoch)
        if in_epoch == 0 or not order:
            order = epoch_order(len(samples), config.global_batch_size, config.seed, epoch)
        micro = rank_micro_batches(order, in_epoch, config.global_batch_size, info.rank, info.world_size,
                                   config.micro_batch_size)
        lr = engine.get_lr()[0]
        step_started = time.monotonic()
        done = train_step(engine, [[samples[i] for i in m] for m in micro], packing=config.packing,
                          pad_id=tokenizer.pad_token_id, device=device, gas=gas, world=info.world_size,
                          flops_of=flops_of, normalisation=config.loss_normalisation)
        state.step, state.epoch = state.step + 1, epoch
        state.tokens += done.tokens
        state.last_loss = done.loss
        state.seconds = time.monotonic() - loop_started
        meter.add(done.tokens, done.flops)
        grad_norm = engine.get_global_grad_norm()  # of this step, before clipping (every rank: it may be collective)
        if is_main:  # the step's line first: a checkpoint of this step carries it (no gap after a kill)
            _log_step(work / TRAIN_LOG, state, per_epoch, lr, meter)
        latest = _maybe_checkpoint(engine, root, state, config, per_epoch, info.rank, owner, remote,
                                   work / TRAIN_LOG, export) or latest
        if is_main:
            _report(reporter, prom, meter, state, total_steps, per_epoch, lr, latest, reached)
            tracker.metrics(step_metrics(state, per_epoch, lr, grad_norm, meter, time.monotonic() - step_started), state.step)
        stop.pause_for_test(state.step, info.rank)

    if is_main:
        reporter.update(stage="export", message=f"writing the final model to {config.output}/model", force=True)
    export_model(engine, config, tokenizer=tokenizer, base_dir=base_dir, dtype=dtype, output=work, rank=info.rank)
    result = _result(config, state, stats, latest, resumed_seconds + time.monotonic() - started,
                     _exported_steps(root, per_epoch))
    if is_main:
        _write_summary(work, config, state, stats, meter, n_params, attention, result)
        write_report_quietly(work)  # report.html: loss, learning rate and throughput as plots
        for name in (SUMMARY, TRAIN_LOG, REPORT_FILE):
            tracker.artifact(work / name)
        if is_uri(config.output):
            _upload(work, config.output)
    _barrier()
    engine.destroy()
    return result


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean cross-entropy over every target token of the global batch
    tokens: int  # real tokens, all ranks
    processed: int  # tokens including padding, all ranks
    flops: float  # useful model FLOPs (real tokens), all ranks


def train_step(
    engine: Any,
    micro_batches: list[list[Sample]],
    *,
    packing: bool,
    pad_id: int,
    device: torch.device,
    gas: int,
    world: int,
    flops_of: Callable[[list[int]], float],
    normalisation: str = "token",
) -> StepResult:
    """One optimizer step over this rank's micro batches (every rank calls it with its share).

    normalisation "token": the loss is the mean over every target token of the global batch, whatever the
    split into ranks and micro batches: each micro batch's summed cross-entropy is divided by the global
    target count scaled by world x gas, which DeepSpeed's division by the accumulation steps and averaging
    over ranks then undo. "sample" (micro batches of one sample): the mean over the global batch's samples
    of each sample's mean token loss, as Hugging Face's Trainer computes it with one sample per device and
    no accumulation (LIMO): each sample's sum is divided by its own target count x samples / (world x gas).
    """
    batches = [collate(m, packing=packing, pad_id=pad_id) for m in micro_batches]
    lengths = [len(s.input_ids) for m in micro_batches for s in m]
    totals = torch.tensor(
        [sum(target_tokens(b) for b in batches), sum(lengths), sum(b["input_ids"].numel() for b in batches),
         flops_of(lengths)], dtype=torch.float64, device=device)
    _all_reduce(totals)
    targets, real, processed, flops = totals.tolist()
    samples = len(lengths) * world  # every rank holds the same number of samples per step
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for batch in batches:
        # The divisor of this micro batch's summed cross-entropy, and what undoes it for the logged mean.
        if normalisation == "sample":
            divisor, weight = target_tokens(batch) * samples / (world * gas), samples / (world * gas)
        else:
            divisor = weight = targets / (world * gas)
        out = engine(**{k: v.to(device) for k, v in batch.items()}, use_cache=False, num_items_in_batch=divisor)
        engine.backward(out.loss)
        engine.step()
        loss_sum += out.loss.detach().double() * weight
    _all_reduce(loss_sum)
    return StepResult(float(loss_sum) / (samples if normalisation == "sample" else targets), int(real),
                      int(processed), flops)


def checkpoint_location(path: Path) -> str:
    """How a checkpoint is named in status and results: relative to the run's output, e.g. `checkpoints/step-8`.

    The same whatever the output is (volume, path, object store) and wherever the pod mounts it.
    """
    return f"checkpoints/{path.name}"


CRASH_AFTER_CHECKPOINT = "REASONOPS_CRASH_AFTER_CHECKPOINT"  # fault injection for resume tests: a step number


def _maybe_checkpoint(
    engine: Any, root: Path, state: ckpt.TrainerState, config: TrainConfig, per_epoch: int, rank: int,
    owner: bool, remote: Optional[str], train_log: Path, export: Optional[Callable[[Path], Any]],
) -> Optional[str]:
    """The checkpoint written at this step (see checkpoint_location), if one was due."""
    if config.checkpoint_every_steps:
        due = state.step % config.checkpoint_every_steps == 0
    else:
        end_of_epoch = state.step % per_epoch == 0
        due = end_of_epoch and (state.step // per_epoch) % (config.checkpoint_every_epochs or 1) == 0
    if not due:
        return None
    local = ckpt.save_checkpoint(engine, root, state, rank=rank, keep=config.checkpoint_keep, owner=owner,
                                 remote=remote, train_log=train_log, export=export)
    if os.environ.get(CRASH_AFTER_CHECKPOINT) == str(state.step):
        # As a kill at the worst moment: the checkpoint is complete, nothing after it has happened.
        log.warning("%s=%d: killing this process after its checkpoint", CRASH_AFTER_CHECKPOINT, state.step)
        os.kill(os.getpid(), signal.SIGKILL)
    return checkpoint_location(local)


def _stop_checkpoint(
    engine: Any, root: Path, state: ckpt.TrainerState, config: TrainConfig, rank: int, owner: bool,
    remote: Optional[str], train_log: Path, export: Optional[Callable[[Path], Any]], latest: Optional[str],
) -> Optional[str]:
    """Collective: the checkpoint of the step a stop was agreed at (see preemption), unless one already exists
    (written at this step as scheduled, or resumed from); returns it as checkpoint_location names it."""
    if state.step == 0 or latest == checkpoint_location(root / checkpoint_name(state.step)):
        return latest
    started = time.monotonic()
    local = ckpt.save_checkpoint(engine, root, state, rank=rank, keep=config.checkpoint_keep, owner=owner,
                                 remote=remote, train_log=train_log, export=stop_checkpoint_export(export))
    log.warning("stopping: checkpoint %s written in %.2fs", local.name, time.monotonic() - started)
    return checkpoint_location(local)


def _report(
    reporter: Reporter,
    prom: Optional[PrometheusMetrics],
    meter: Throughput,
    state: ckpt.TrainerState,
    total_steps: int,
    per_epoch: int,
    lr: float,
    latest: Optional[str],
    reached: int,
) -> None:
    epoch = state.step / per_epoch
    tps, mfu, eta = meter.tokens_per_second(), meter.mfu(), meter.eta_seconds(state.step)
    loss = state.last_loss or 0.0
    mfu_text = f"{mfu:.1%}" if mfu is not None else "n/a"
    reporter.update(
        stage="train",
        message=f"step {state.step}/{total_steps} epoch {epoch:.2f} loss {loss:.4f} lr {lr:.3g} "
        f"tokens/s {tps:.0f} mfu {mfu_text} eta {eta}s",
        step=max(state.step, reached),  # steps redone after a restart do not move status backwards
        totalSteps=total_steps,
        epoch=f"{epoch:.2f}",
        loss=f"{loss:.4f}",
        learningRate=f"{lr:.3g}",
        tokensPerSecond=f"{tps:.0f}",
        mfu=f"{mfu:.3f}" if mfu is not None else None,
        etaSeconds=eta,
        latestCheckpoint=latest,
    )
    if prom is not None:
        prom.set(step=state.step, total_steps=total_steps, epoch=epoch, loss=loss, learning_rate=lr,
                 tokens_per_second=tps, mfu=mfu, eta_seconds=eta, tokens=state.tokens)


def tracking_params(config: TrainConfig, **facts: Any) -> dict[str, Any]:
    """What a tracker records of a run once: the resolved hyperparameters (preset, dataset and base-model
    revisions included) and facts of the run such as its step count and world size."""
    return {**{k: v for k, v in asdict(config).items() if k not in ("extra", "chat_template", "system_prompt")},
            "dataset_revision": config.extra.get("datasetRevision"), **facts}


def step_metrics(state: ckpt.TrainerState, per_epoch: int, lr: float, grad_norm: Any, meter: Throughput,
                 step_seconds: float) -> dict[str, Optional[float]]:
    """One optimizer step's numbers for a tracker (None: not known on this device, e.g. MFU on a CPU)."""
    return {"train/loss": state.last_loss, "train/learning_rate": lr, "train/epoch": state.step / per_epoch,
            "train/grad_norm": None if grad_norm is None else float(grad_norm),
            "train/tokens_per_second": meter.tokens_per_second(), "train/mfu": meter.mfu(),
            "train/step_seconds": step_seconds, "train/tokens": float(state.tokens)}


def _log_step(path: Path, state: ckpt.TrainerState, per_epoch: int, lr: float, meter: Throughput) -> None:
    """Append this step's line to the loss curve, on disk before anything else happens."""
    line = {"step": state.step, "epoch": round(state.step / per_epoch, 4), "loss": state.last_loss, "lr": lr,
            "tokens": state.tokens, "tokensPerSecond": round(meter.tokens_per_second(), 1)}
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------------- run bookkeeping


def _local_output(config: TrainConfig) -> Path:
    """Where this run writes: the output itself, or for a URI a local staging directory, whose
    checkpoints are mirrored as they are written and whose model is uploaded at the end."""
    if not is_uri(config.output):
        path = Path(config.output)
    else:
        base = Path(os.environ.get("REASONOPS_SCRATCH") or tempfile.gettempdir())
        path = base / "reasonops-train" / (config.revision or config.name) / "output"
    path.mkdir(parents=True, exist_ok=True)
    return path


def finished_result(output: str) -> Optional[dict[str, Any]]:
    """The result of a run that already completed (a retried pod after the final write)."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(output)
        if not fs.exists(f"{path}/{ckpt.MARKER}"):
            return None
        with fs.open(f"{path}/{SUMMARY}") as fh:
            return json.load(fh)["result"]
    except (OSError, KeyError, ValueError):
        return None


def _exported_steps(root: Path, per_epoch: int) -> list[dict[str, Any]]:
    """The kept checkpoints with a servable export, oldest first, as the result lists them: step and epoch
    (the operator names each by `contract.checkpoint_name`, its model at `contract.checkpoint_model`)."""
    return [{"step": step, "epoch": f"{step / per_epoch:.2f}"} for step, path in ckpt.complete_checkpoints(root)
            if Path(checkpoint_model(str(path))).is_dir()]


def _result(config: TrainConfig, state: ckpt.TrainerState, stats: DataStats, latest: Optional[str],
            wall: float, checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "modelLocation": f"{config.output.rstrip('/')}/model",
        "finalLoss": round(state.last_loss, 6) if state.last_loss is not None else None,
        "steps": state.step,
        "droppedSamples": stats.dropped_for_length,
        "truncatedSamples": stats.truncated,
        "badSamples": stats.bad,
        "latestCheckpoint": latest,
        "tokens": state.tokens,
        "wallSeconds": round(wall, 1),
        "contextLength": _context_length(f"{config.output.rstrip('/')}/model"),
        **({"checkpoints": checkpoints[-MAX_CHECKPOINTS:]} if checkpoints else {}),
    }


def _context_length(model_dir: str) -> Optional[int]:
    """The exported model's context (its config.json, as vLLM reads it): the operator checks an EvalRun's
    serving.maxModelLen against it before asking for a server."""
    import fsspec

    from ..limits import model_context_length

    try:
        with fsspec.open(f"{model_dir}/config.json", "r") as fh:
            return model_context_length(json.load(fh))
    except (OSError, ValueError):
        return None


def _write_summary(work: Path, config: TrainConfig, state: ckpt.TrainerState, stats: DataStats,
                   meter: Throughput, n_params: int, attention: str, result: dict[str, Any]) -> None:
    summary = {
        "result": result,
        "steps": state.step,
        "epochs": config.epochs,
        "tokens": state.tokens,
        "finalLoss": result["finalLoss"],
        "trainSeconds": round(state.seconds, 1),
        "tokensPerSecond": round(state.tokens / state.seconds, 1) if state.seconds else None,
        "lastSessionTokensPerSecond": round(meter.tokens_per_second(), 1),
        "mfu": meter.mfu(),
        "parameters": n_params,
        "attention": attention,
        "lossNormalisation": config.loss_normalisation,  # token or sample: see train_step
        "samples": {"rows": stats.rows, "kept": stats.kept, "bad": stats.bad,
                    "overlongDropped": stats.overlong_dropped, "truncated": stats.truncated,
                    "tokens": stats.tokens, "targetTokens": stats.label_tokens},
        "config": asdict(config),
    }
    (work / SUMMARY).write_text(json.dumps(summary, indent=2, default=str))
    ckpt.write_marker(work / "model")
    ckpt.write_marker(work)  # last: the run is complete


def _restore_train_log(path: Path, resume: Optional[Path]) -> int:
    """Put the loss curve back as the checkpoint resumed from holds it; return the highest step logged before.

    Each checkpoint carries the curve up to its own step (ckpt.save_checkpoint), so a resume on another
    node's empty disk continues it, and lines of steps being redone are dropped.
    """
    before = _steps_logged(path)
    if resume is None:
        path.unlink(missing_ok=True)
    elif (resume / ckpt.TRAIN_LOG).exists():
        shutil.copyfile(resume / ckpt.TRAIN_LOG, path)
    else:
        log.warning("%s carries no loss curve; the training log restarts here", resume)
        path.unlink(missing_ok=True)
    return max(before, default=0)


def _steps_logged(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def _upload(work: Path, uri: str) -> None:
    import fsspec

    fs, dest = fsspec.core.url_to_fs(uri)
    for name in ("model", "adapter"):
        if (work / name).is_dir():
            fs.put(str(work / name), f"{dest}/{name}", recursive=True)
    for name in (RESOLVED_CONFIG, TRAIN_LOG, SUMMARY, REPORT_FILE, ckpt.MARKER):  # the marker last
        if (work / name).exists():
            fs.put(str(work / name), f"{dest}/{name}")


# ------------------------------------------------------------------------------ collective helpers


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _all_reduce(tensor: torch.Tensor) -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)


def _on_any_rank(flag: bool) -> bool:
    """Collective: whether `flag` is true on any rank of the group."""
    value = torch.tensor([1.0 if flag else 0.0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    if dist.get_world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _together(info: DistInfo, fn: Callable[[], T]) -> T:
    """Run fn on every rank; if it fails anywhere, fail everywhere (instead of others hanging later)."""
    error: Optional[WorkloadError] = None
    value: Any = None
    try:
        value = fn()
    except WorkloadError as exc:
        error = exc
    if _on_any_rank(error is not None):
        raise error or WorkloadError(reasons.REASON_PEER_FAILED, "another rank failed while preparing; see its log")
    return value


def _local_rank0_first(info: DistInfo, fn: Callable[[], T]) -> T:
    """fn on each node's local rank 0 first (downloads, copies), then on the others (cache hits)."""
    first = info.local_rank == 0
    value = _together(info, fn if first else (lambda: None))
    return _together(info, (lambda: value) if first else fn)
