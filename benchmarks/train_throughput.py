"""Training throughput of the FineTuneJob step: tokens/s, MFU, padding waste and peak memory, packed vs padded.

Runs the real training step (`reasonops.train.trainer.train_step`: DeepSpeed engine, token-normalised loss)
on a randomly initialised Qwen2-architecture model of any shape and synthetic samples whose lengths follow
a LIMO-like distribution (long chains, wide spread: lognormal, clipped to [64, max length]). No downloads.

CPU (what CI and laptops can run):
    python benchmarks/train_throughput.py --layers 2 --hidden 64 --heads 4 --kv-heads 2 --vocab 512 \\
        --max-length 2048 --micro-batch 4 --global-batch 8 --steps 6

GPU, Qwen2.5-1.5B shape at 16k tokens with ZeRO-3 (one process per GPU; targets: MFU >= 40%, packed >= 1.5x
padded tokens/s, padding waste <= 5% packed):
    torchrun --nproc-per-node 8 benchmarks/train_throughput.py --layers 28 --hidden 1536 --heads 12 \\
        --kv-heads 2 --intermediate 8960 --vocab 151936 --max-length 16384 --micro-batch 4 --global-batch 32

Prints one JSON line per mode and, on rank 0, a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from typing import Any

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=None, help="MLP width (default 2 x hidden)")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--median-share", type=float, default=0.3, help="median sample length / max length (LIMO ~0.3)")
    p.add_argument("--sigma", type=float, default=0.7, help="lognormal spread of the lengths")
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="measured optimizer steps")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    p.add_argument("--zero-stage", type=int, default=3)
    p.add_argument("--attention", default="flash_attention_2")
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--mode", choices=["both", "packed", "padded"], default="both")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def sample_lengths(n: int, args: argparse.Namespace, rng: np.random.Generator) -> list[int]:
    median = args.median_share * args.max_length
    raw = rng.lognormal(mean=math.log(median), sigma=args.sigma, size=n)
    return [int(x) for x in np.clip(raw, 64, args.max_length)]


def make_samples(lengths: list[int], vocab: int, rng: np.random.Generator) -> list[Any]:
    from reasonops.train.data import IGNORE, Sample

    samples = []
    for n in lengths:
        ids = rng.integers(3, vocab, size=n).tolist()
        prompt = max(1, n // 10)  # a short prompt, a long reasoning chain as the target
        samples.append(Sample(ids, [IGNORE] * prompt + ids[prompt:]))
    return samples


def peak_memory_gib(device: torch.device) -> float:
    """GPU: peak allocated in this mode. CPU: the process's peak RSS so far (run one --mode per process)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_mode(packing: bool, args: argparse.Namespace, info: Any) -> dict[str, Any]:
    import deepspeed
    from transformers import AutoModelForCausalLM, Qwen2Config
    from transformers.integrations import HfDeepSpeedConfig, unset_hf_deepspeed_config

    from reasonops.train.config import TrainConfig, deepspeed_config
    from reasonops.train.data import epoch_order, rank_micro_batches
    from reasonops.train.metrics import attention_width, device_peak_flops, train_flops
    from reasonops.train.modeling import (
        choose_attention,
        count_parameters,
        enable_activation_checkpointing,
        liger_available,
        parameter_groups,
        training_dtype,
    )
    from reasonops.train.trainer import train_step

    device = torch.device("cuda", info.local_rank) if info.backend == "nccl" else torch.device("cpu")
    dtype = training_dtype(device)
    attention, why = choose_attention(args.attention, device, dtype)
    cfg = TrainConfig(model="random", dataset="synthetic", output="/dev/null", learning_rate=1e-5,
                      global_batch_size=args.global_batch, micro_batch_size=args.micro_batch,
                      zero_stage=args.zero_stage, packing=packing, max_length=args.max_length,
                      loss_normalisation="token")  # as train_step measures it: any micro batch
    gas = cfg.gradient_accumulation(info.world_size)
    ds_config = deepspeed_config(cfg, world_size=info.world_size, bf16=dtype == torch.bfloat16)
    keep = HfDeepSpeedConfig(ds_config) if args.zero_stage == 3 else None  # noqa: F841 - partitioned init
    model_config = Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate or 2 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(args.max_length * 4, 32768), tie_word_embeddings=False, use_cache=False,
    )
    if liger_available(device):  # as the trainer does on GPU images: fused norm/RoPE/SwiGLU/cross-entropy
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2

        apply_liger_kernel_to_qwen2()
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(model_config, dtype=dtype, attn_implementation=attention)
    if not args.no_gradient_checkpointing:
        enable_activation_checkpointing(model)
    params = count_parameters(model)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=parameter_groups(model, 0.0), config=ds_config)

    rng = np.random.default_rng(args.seed)
    steps = args.warmup + args.steps
    samples = make_samples(sample_lengths(steps * args.global_batch, args, rng), args.vocab, rng)
    order = epoch_order(len(samples), args.global_batch, args.seed, 0)
    flops_of = lambda lengths: train_flops(params, lengths, attention_width=attention_width(model.config),  # noqa: E731
                                           layers=args.layers)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tokens = processed = 0
    flops = 0.0
    started = 0.0
    for step in range(steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
        micro = rank_micro_batches(order, step, args.global_batch, info.rank, info.world_size, args.micro_batch)
        done = train_step(engine, [[samples[i] for i in m] for m in micro], packing=packing, pad_id=0,
                          device=device, gas=gas, world=info.world_size, flops_of=flops_of)
        if step >= args.warmup:
            tokens, processed, flops = tokens + done.tokens, processed + done.processed, flops + done.flops
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = device_peak_flops(device)
    result = {
        "mode": "packed" if packing else "padded",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world": info.world_size,
        "parameters": params,
        "attention": attention,
        "attentionReason": why,
        "liger": liger_available(device),
        "dtype": str(dtype).replace("torch.", ""),
        "tokensPerSecond": round(tokens / seconds, 1),
        "tokensPerSecondPerDevice": round(tokens / seconds / info.world_size, 1),
        "mfu": round(flops / seconds / (peak * info.world_size), 4) if peak else None,
        "paddingWaste": round(1 - tokens / processed, 4),
        "peakMemoryGiB": round(peak_memory_gib(device), 2),
        "meanSampleTokens": round(float(np.mean([len(s.input_ids) for s in samples])), 1),
        "measuredSteps": args.steps,
        "seconds": round(seconds, 2),
    }
    engine.destroy()
    unset_hf_deepspeed_config()
    return result


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from reasonops.train.launch import init_distributed

    args = parse_args(argv)
    info = init_distributed()
    modes = {"both": [True, False], "packed": [True], "padded": [False]}[args.mode]
    results = [run_mode(packing, args, info) for packing in modes]
    if info.rank == 0:
        for r in results:
            print(json.dumps(r))
        print("\n| mode | tokens/s | tokens/s/device | MFU | padding waste | peak memory GiB |")
        print("|---|---|---|---|---|---|")
        for r in results:
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (CPU)"
            print(f"| {r['mode']} | {r['tokensPerSecond']:.0f} | {r['tokensPerSecondPerDevice']:.0f} | {mfu} | "
                  f"{r['paddingWaste']:.1%} | {r['peakMemoryGiB']:.2f} |")
        if len(results) == 2:
            print(f"\npacked / padded tokens/s: {results[0]['tokensPerSecond'] / results[1]['tokensPerSecond']:.2f}x")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
