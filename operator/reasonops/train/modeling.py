"""Base model and tokenizer: where they come from, how they are loaded, how the result is exported."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from ..api import common as reasons
from ..errors import WorkloadError
from ..objectstore import local_copy
from .config import TrainConfig

log = logging.getLogger("reasonops.train")

IGNORED_HUB_FILES = ["*.pth", "*.pt", "original/*", "*.gguf", "*.onnx", "*.msgpack", "*.h5"]


# --------------------------------------------------------------------------------------- locating


def is_uri(location: str) -> bool:
    return "://" in location


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.exists(name)


def resolve_model_dir(name: str, revision: Optional[str], scratch: Path) -> Path:
    """A local directory holding the base model: a path as is, a URI copied to scratch, a hub id from the cache.

    Hub downloads honour HF_HUB_OFFLINE (then only the local cache is used).
    """
    if is_uri(name):
        return local_copy(name, scratch / "base-model")  # transformers reads local files
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise WorkloadError(reasons.REASON_MODEL_NOT_FOUND, f"base model {name}: no config.json there (is the volume mounted?)")
        return path
    from huggingface_hub import snapshot_download

    try:
        # Only what transformers loads: skip duplicate weight formats some repos also ship.
        return Path(snapshot_download(name, revision=revision, ignore_patterns=IGNORED_HUB_FILES))
    except Exception as exc:  # not cached offline, unknown repo, gated, network
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false")
        hint = " (HF_HUB_OFFLINE is set: only the local cache is searched)" if offline else ""
        raise WorkloadError(reasons.REASON_MODEL_NOT_FOUND, f"base model {name}@{revision or 'main'} unavailable{hint}: {exc}") from exc


# ---------------------------------------------------------------------------------------- loading


def training_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU supports it; fp32 otherwise (CPU, old GPUs: fp16 would need loss scaling)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def choose_attention(requested: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """The attention kernel to use and why: FlashAttention-2 only when it can actually run."""
    if requested != "flash_attention_2":
        return requested, f"{requested} requested"
    if device.type != "cuda":
        return "sdpa", "flash_attention_2 requested but there is no CUDA device; using sdpa"
    if dtype not in (torch.bfloat16, torch.float16):
        return "sdpa", f"flash_attention_2 requested but it does not support {dtype}; using sdpa"
    if importlib.util.find_spec("flash_attn") is None:
        return "sdpa", "flash_attention_2 requested but flash_attn is not installed; using sdpa"
    return "flash_attention_2", "flash_attention_2 requested and available"


def load_tokenizer(model_dir: Path, chat_template: Optional[str]) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise WorkloadError(reasons.REASON_MODEL_NOT_FOUND, f"cannot load the tokenizer of {model_dir}: {exc}") from exc
    if chat_template:
        tokenizer.chat_template = chat_template
    if not tokenizer.chat_template:
        raise WorkloadError(reasons.REASON_INVALID_SPEC, f"the tokenizer of {model_dir} has no chat template; set spec.chatTemplate")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def liger_available(device: torch.device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("liger_kernel") is not None


def load_model(model_dir: Path, config: TrainConfig, *, dtype: torch.dtype, attention: str, device: torch.device) -> Any:
    """The base model, ready for DeepSpeed; with ZeRO-3 the caller must hold an HfDeepSpeedConfig so that
    the weights are partitioned while loading instead of materialised whole on every rank."""
    if liger_available(device):
        # Fused RMSNorm/RoPE/SwiGLU/linear-cross-entropy: the 16k-token logits are never materialised.
        from liger_kernel.transformers import AutoLigerKernelForCausalLM as auto_model

        log.info("liger-kernel found: using its fused kernels")
    else:
        from transformers import AutoModelForCausalLM as auto_model
    try:
        model = auto_model.from_pretrained(model_dir, dtype=dtype, attn_implementation=attention)
    except (OSError, ValueError) as exc:
        raise WorkloadError(reasons.REASON_MODEL_NOT_FOUND, f"cannot load the base model from {model_dir}: {exc}") from exc
    model.config.use_cache = False  # a cache breaks packed-sample isolation and wastes memory in training
    if config.gradient_checkpointing:
        enable_activation_checkpointing(model)
    if config.method == "lora":
        model = _add_lora(model, config)
    return model


def enable_activation_checkpointing(model: Any) -> None:
    # Non-reentrant checkpointing works with frozen inputs (LoRA) and ZeRO-3 without extra hooks.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _add_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA rank %d alpha %d on %s: %d trainable parameters", config.lora_rank, config.lora_alpha,
             lora.target_modules, trainable)
    return model


def parameter_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and norm weights."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def count_parameters(model: Any) -> int:
    """Parameters doing matmul work per token (embedding lookups excluded); correct under ZeRO-3 partitioning."""
    embed = model.get_input_embeddings()
    embed_ids = {id(p) for p in embed.parameters()} if embed is not None else set()
    total = 0
    for param in model.parameters():
        if id(param) in embed_ids:
            continue
        total += getattr(param, "ds_numel", param.numel())
    if getattr(model.config, "tie_word_embeddings", False) and embed is not None:
        weight = embed.weight
        total += getattr(weight, "ds_numel", weight.numel())  # the tied output head does the matmul
    return total


# -------------------------------------------------------------------------------------- exporting


def export_model(
    engine: Any,
    config: TrainConfig,
    *,
    tokenizer: Any,
    base_dir: Path,
    dtype: torch.dtype,
    output: Path,
    rank: int,
) -> Path:
    """Write `<output>/model` (merged, consolidated safetensors) and, for LoRA, `<output>/adapter`.

    Every rank must call this: gathering ZeRO-3 partitions is a collective.
    """
    staging = output / ".tmp-export"
    if rank == 0 and staging.exists():
        shutil.rmtree(staging)
    _barrier()
    # Public DeepSpeed API: gathers the partitions (stage3_gather_16bit_weights_on_model_save) on rank 0.
    engine.save_16bit_model(str(staging), save_filename="weights.pt")
    _barrier()
    final = output / "model"
    if rank == 0:
        state = torch.load(staging / "weights.pt", map_location="cpu", weights_only=True)
        tmp_model = staging / "model"
        if config.method == "lora":
            adapter = output / "adapter"
            _replace_dir(adapter, lambda d: engine.module.save_pretrained(d, state_dict=state))
            _merge_lora(base_dir, adapter, dtype, tmp_model)
        else:
            module = engine.module
            module.config.use_cache = True
            module.save_pretrained(tmp_model, state_dict=state)
            _ensure_generation_config(module, tmp_model)
        tokenizer.save_pretrained(tmp_model)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp_model, final)
        shutil.rmtree(staging)
    _barrier()
    return final


def _merge_lora(base_dir: Path, adapter: Path, dtype: torch.dtype, dest: Path) -> None:
    """Merge the adapter into a fresh copy of the base weights (what vLLM loads without LoRA support)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # load the base whole on this rank, not ZeRO-3 partitioned
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.config.use_cache = True
    merged.save_pretrained(dest)
    _ensure_generation_config(merged, dest)


def _ensure_generation_config(model: Any, dest: Path) -> None:
    if not (dest / "generation_config.json").exists():
        from transformers import GenerationConfig

        GenerationConfig.from_model_config(model.config).save_pretrained(dest)


def _replace_dir(dest: Path, write: Any) -> None:
    tmp = dest.with_name(f".tmp-{dest.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
