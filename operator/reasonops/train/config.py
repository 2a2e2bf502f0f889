"""TrainConfig: everything one training run needs, resolved from a FineTuneJob document.

Precedence: explicit spec fields > the preset (limo, sky-t1, none) > built-in defaults.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ..api import v1alpha1 as api
from ..api.common import decimal
from ..api.v1alpha1 import LIMO_SYSTEM_PROMPT, FineTuneJobSpec
from ..api import common as reasons
from ..contract import WorkloadDocument, location_string, pod_path
from ..errors import WorkloadError

# Recipe defaults, value by value with their sources in docs/recipes.md. Keys are Hyperparameters fields.
# weightDecay 0 and maxGradNorm 1.0 are LLaMA-Factory's (transformers TrainingArguments') defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # LIMO (GAIR-NLP/LIMO train/examples/train_limo.yaml): 32 GPUs x batch 1, no accumulation.
    "limo": {
        "learningRate": 5e-6, "epochs": 15, "scheduler": "cosine", "warmupRatio": 0.0, "maxLength": 16384,
        "globalBatchSize": 32, "microBatchSize": 1, "weightDecay": 0.0, "maxGradNorm": 1.0,
        "overlong": "truncate", "lossNormalisation": "sample",
    },
    # Sky-T1-32B-Preview (NovaSky-AI/SkyThought qwen2_full_sft_32B.yaml): 8 GPUs x batch 1 x accumulation 12.
    "sky-t1": {
        "learningRate": 1e-5, "epochs": 3, "scheduler": "cosine", "warmupRatio": 0.1, "maxLength": 16384,
        "globalBatchSize": 96, "microBatchSize": 1, "weightDecay": 0.0, "maxGradNorm": 1.0,
        "overlong": "truncate", "lossNormalisation": "sample",
    },
    "none": {
        "learningRate": 1e-5, "epochs": 3, "scheduler": "cosine", "warmupRatio": 0.0, "maxLength": 4096,
        "globalBatchSize": 32, "microBatchSize": 1, "weightDecay": 0.0, "maxGradNorm": 1.0,
        "overlong": "drop", "lossNormalisation": "token",
    },
}
# Sky-T1's LoRA config (qwen2_lora_config.yaml): rank 64, lr 1e-4, LLaMA-Factory's alpha (2 x rank) and dropout 0.
LORA_PRESETS: dict[str, dict[str, Any]] = {
    "limo": {"learningRate": 1e-4},
    "sky-t1": {"learningRate": 1e-4},
    "none": {"learningRate": 1e-4},
}
KEEP_ALL = 0  # checkpoints.keep: 0 keeps every checkpoint


@dataclass(frozen=True)
class RunPreset:
    """What a preset decides beyond the hyperparameters."""

    system_prompt: Optional[str]  # added to rows without a system turn; None: the data's own only
    offload: bool  # ZeRO-3 CPU offload of parameters and optimizer state
    checkpoint_every_steps: Optional[int]  # None: every epoch
    checkpoint_keep: int


RUN_PRESETS: dict[str, RunPreset] = {
    # LIMO: save_strategy epoch, every checkpoint kept (the authors published epoch 9 of 15); ds_z3_config.json.
    "limo": RunPreset(system_prompt=LIMO_SYSTEM_PROMPT, offload=False, checkpoint_every_steps=None, checkpoint_keep=KEEP_ALL),
    # Sky-T1: save_steps 100, no save_total_limit; ds_z3_offload_config.json (full and LoRA); the data's system prompt.
    "sky-t1": RunPreset(system_prompt=None, offload=True, checkpoint_every_steps=100, checkpoint_keep=KEEP_ALL),
    "none": RunPreset(system_prompt=LIMO_SYSTEM_PROMPT, offload=False, checkpoint_every_steps=None, checkpoint_keep=3),
}
DEFAULT_SEED = api.TRAINING_SEED  # the API names each default once
DEFAULT_LORA = {"rank": api.LORA_RANK, "alpha": api.LORA_ALPHA, "dropout": float(api.LORA_DROPOUT)}


@dataclass
class TrainConfig:
    """A fully resolved training run. Usable directly: `main(TrainConfig(model=..., dataset=..., output=...))`."""

    model: str  # hub id, local path or fsspec URI
    dataset: str  # directory (or URI) holding data.jsonl / data.parquet, or such a file
    output: str  # the revision's output directory: checkpoints/, model/, training_summary.json
    model_revision: Optional[str] = None
    name: str = "finetune"
    revision: str = ""
    method: Literal["full", "lora"] = "full"
    preset: str = "limo"
    learning_rate: float = 5e-6
    epochs: int = 15
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = 0.0
    max_length: int = 16384
    global_batch_size: int = 32
    micro_batch_size: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = DEFAULT_SEED
    overlong: Literal["drop", "truncate"] = "truncate"
    loss_normalisation: Literal["token", "sample"] = "sample"
    zero_stage: int = 3
    offload_optimizer: bool = False
    offload_params: bool = False
    lora_rank: int = DEFAULT_LORA["rank"]
    lora_alpha: int = DEFAULT_LORA["alpha"]
    lora_dropout: float = DEFAULT_LORA["dropout"]
    lora_target_modules: Optional[list[str]] = None  # None: every linear layer except the output head
    attention: Literal["flash_attention_2", "sdpa", "eager"] = "flash_attention_2"
    packing: bool = True
    gradient_checkpointing: bool = True
    system_prompt: Optional[str] = LIMO_SYSTEM_PROMPT  # added to samples without a system turn; "" adds none
    chat_template: Optional[str] = None
    num_nodes: int = 1
    gpus_per_node: int = 8
    distributed_backend: Optional[str] = None  # None: nccl where CUDA is, else gloo
    checkpoint_every_epochs: Optional[int] = 1
    checkpoint_every_steps: Optional[int] = None
    checkpoint_keep: int = KEEP_ALL  # 0: every checkpoint
    checkpoint_export: bool = False  # a servable model in each kept checkpoint (checkpoints/step-N/model)
    extra: dict[str, Any] = field(default_factory=dict)  # recorded, not interpreted (e.g. dataset revision)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def warmup_steps(self, total_steps: int) -> int:
        """Warm-up steps of the schedule, rounded up as transformers' TrainingArguments.get_warmup_steps does."""
        return math.ceil(self.warmup_ratio * total_steps)

    def gradient_accumulation(self, world_size: int) -> int:
        """Micro-steps per optimizer step so that one step sees exactly global_batch_size samples."""
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise WorkloadError(
                reasons.REASON_INVALID_SPEC,
                f"globalBatchSize {self.global_batch_size} is not divisible by microBatchSize "
                f"{self.micro_batch_size} x world size {world_size} = {per_step}; choose a global batch that is a "
                f"multiple of {per_step}",
            )
        if self.loss_normalisation == "sample" and self.micro_batch_size != 1:
            raise WorkloadError(
                reasons.REASON_INVALID_SPEC,
                f"lossNormalisation sample averages each sample's loss, which needs microBatchSize 1 (got "
                f"{self.micro_batch_size}); use lossNormalisation token or microBatchSize 1",
            )
        return self.global_batch_size // per_step


def config_from_resource(doc: WorkloadDocument) -> TrainConfig:
    """Turn the workload document of a FineTuneJob (see docs/architecture.md) into a TrainConfig."""
    spec, context = doc.spec, doc.context
    assert isinstance(spec, FineTuneJobSpec), f"a FineTuneJob document, not a {doc.kind}"
    dataset = context.datasetLocation or (pod_path(location_string(spec.dataset)) if spec.dataset else None)
    if not dataset:
        raise WorkloadError(reasons.REASON_DATASET_UNREADABLE, "no dataset location: neither context.datasetLocation nor spec.dataset is set")
    if not doc.output:
        raise WorkloadError(reasons.REASON_INVALID_SPEC, "the workload document has no output location")

    preset = spec.preset or "limo"
    hp = dict(PRESETS[preset])
    if spec.method == "lora":
        hp.update(LORA_PRESETS[preset])
    given = spec.hyperparameters.model_dump(exclude_none=True) if spec.hyperparameters else {}
    hp.update(given)
    ds = spec.deepspeed
    lora = spec.lora
    ckpt = spec.checkpoints
    run = RUN_PRESETS[preset]
    if ckpt and (ckpt.everySteps or ckpt.everyEpochs):
        every_steps = ckpt.everySteps
    else:
        every_steps = run.checkpoint_every_steps
    offload = run.offload and (ds is None or ds.zeroStage in (None, 3))
    return TrainConfig(
        model=spec.baseModel.name,
        model_revision=spec.baseModel.revision,
        dataset=dataset,
        output=doc.output,
        name=doc.metadata.name,
        revision=doc.revision,
        method=spec.method,
        preset=preset,
        learning_rate=float(decimal(str(hp["learningRate"]))),
        epochs=int(hp["epochs"]),
        scheduler=hp["scheduler"],
        warmup_ratio=float(decimal(str(hp["warmupRatio"]))),
        max_length=int(hp["maxLength"]),
        global_batch_size=int(hp["globalBatchSize"]),
        micro_batch_size=int(hp["microBatchSize"]),
        weight_decay=float(decimal(str(hp["weightDecay"]))),
        max_grad_norm=float(decimal(str(hp["maxGradNorm"]))),
        seed=int(hp.get("seed", DEFAULT_SEED)),
        overlong=hp["overlong"],
        loss_normalisation=hp["lossNormalisation"],
        zero_stage=3 if ds is None or ds.zeroStage is None else ds.zeroStage,
        offload_optimizer=offload if ds is None or ds.offloadOptimizer is None else ds.offloadOptimizer,
        offload_params=offload if ds is None or ds.offloadParams is None else ds.offloadParams,
        lora_rank=(lora.rank if lora and lora.rank else DEFAULT_LORA["rank"]),
        lora_alpha=(lora.alpha if lora and lora.alpha else DEFAULT_LORA["alpha"]),
        lora_dropout=float(decimal(lora.dropout if lora else None, DEFAULT_LORA["dropout"])),
        lora_target_modules=list(lora.targetModules) if lora and lora.targetModules else None,
        attention=spec.attention or "flash_attention_2",
        packing=True if spec.packing is None else spec.packing,
        gradient_checkpointing=True if spec.gradientCheckpointing is None else spec.gradientCheckpointing,
        system_prompt=run.system_prompt if spec.systemPrompt is None else spec.systemPrompt,
        chat_template=spec.chatTemplate,
        num_nodes=spec.numNodes or 1,
        gpus_per_node=8 if spec.gpusPerNode is None else spec.gpusPerNode,
        distributed_backend=spec.distributedBackend,
        # everySteps replaces the per-epoch schedule.
        checkpoint_every_epochs=None if every_steps else ((ckpt.everyEpochs if ckpt else None) or 1),
        checkpoint_every_steps=every_steps,
        checkpoint_keep=run.checkpoint_keep if ckpt is None or ckpt.keep is None else ckpt.keep,
        checkpoint_export=bool(ckpt and ckpt.export),
        extra={"datasetRevision": context.datasetRevision},
    )


def deepspeed_config(config: TrainConfig, *, world_size: int, bf16: bool) -> dict[str, Any]:
    """The DeepSpeed configuration derived from the spec (no "auto" values: everything is decided here)."""
    zero: dict[str, Any] = {
        "stage": config.zero_stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": 5e7,
    }
    if config.zero_stage == 3:
        # Gather the partitions into one state dict when saving the final model (what vLLM loads).
        zero.update(stage3_gather_16bit_weights_on_model_save=True, stage3_prefetch_bucket_size=5e7,
                    stage3_param_persistence_threshold=1e5)
    if config.offload_optimizer and config.zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bf16}
    if config.offload_params and config.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": bf16}
    return {
        "train_batch_size": config.global_batch_size,
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation(world_size),
        "gradient_clipping": config.max_grad_norm,
        "bf16": {"enabled": bf16},
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": config.learning_rate,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "weight_decay": config.weight_decay,
                # torch's AdamW needs no compiled op; with optimizer offload DeepSpeed uses its CPU Adam.
                "torch_adam": not config.offload_optimizer,
            },
        },
        "steps_per_print": 10**9,  # progress is logged by the training loop
        "wall_clock_breakdown": False,
    }
