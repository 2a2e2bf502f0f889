"""Tiny, randomly initialised causal language models in Hugging Face format, built in code.

Tests, benchmarks and the offline demo need a real model directory (config, safetensors weights,
tokenizer, chat template, generation config) that transformers, DeepSpeed and an OpenAI-compatible
server can load — without downloading anything. `build_tiny_model` trains a small byte-level BPE
tokenizer on a built-in corpus of math text (or a given one) and writes a Qwen2-architecture model of the
requested shape next to it. `pretrain` then gives such a model some knowledge: a short causal-LM run on
plain texts (the demo's base model learns its arithmetic domain this way).

    python -m reasonops.tinymodel /tmp/tiny --layers 2 --hidden 64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, as Qwen2.5 uses it. The {% generation %} markers let transformers return an assistant-token
# mask (return_assistant_tokens_mask=True), which training uses to compute loss on assistant turns only.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_CORPUS = [
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "Let x be a real number such that x^2 - 5x + 6 = 0. Find the sum of all possible values of x.",
    "We factor the quadratic: (x - 2)(x - 3) = 0, therefore x = 2 or x = 3, so the sum is \\boxed{5}.",
    "Wait, let me check this again. Perhaps there is another approach: since the sum of roots is 5, verify.",
    "The answer is \\frac{1}{2}, \\sqrt{3}, \\pi, 0.25, 100, (1, 2), [0, 1) and 45^\\circ.",
    "First, compute 12 + 7 = 19. Then multiply: 19 * 3 = 57. Hence the total is 57 apples.",
    "Alice has 3 more coins than Bob. Together they have 21 coins. How many coins does Bob have?",
    "Let me think. If Bob has b coins, Alice has b + 3, and 2b + 3 = 21, so b = 9. Check: 9 + 12 = 21.",
    "user assistant system question solution answer therefore since because might maybe hmm so thus",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * / = < > ( ) [ ] { } ^ _ , . : ; ! ? $ \\",
    "A B C D E The correct option is (B). Triangle ABC has area 24 and perimeter 24; find the inradius.",
]


def build_tokenizer(vocab_size: int = 512, corpus: list[str] | None = None, split_digits: bool = False):
    """A byte-level BPE tokenizer with ChatML special tokens, trained on `corpus` (default: the built-in one).

    `split_digits`: one token per digit, as Qwen2's tokenizer does; arithmetic is far easier to learn.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or _CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=32768,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    vocab_size: int = 512,
    max_positions: int = 32768,
    corpus: list[str] | None = None,
    split_digits: bool = False,
) -> Path:
    """Write a random Qwen2-style model and its tokenizer to `out_dir`; return the directory."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size, corpus, split_digits)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=True,
        temperature=0.7,
        top_p=0.95,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tiny_model.json").write_text(json.dumps({"seed": seed, "layers": layers, "hidden": hidden}))
    return out


# A shape vLLM's CPU backend serves: its attention takes head sizes of 32 and more (hidden 64 / 2 heads = 32; the
# default shape's 16 starts, then fails its first request; docs/vllm-cpu.md). One KV head: grouped-query attention.
SERVABLE_SHAPE = {"hidden": 64, "heads": 2, "kv_heads": 1}


def build_servable_model(out_dir: str | Path, **kwargs: Any) -> Path:
    """`build_tiny_model` in a shape vLLM's CPU backend serves (SERVABLE_SHAPE, unless `kwargs` say otherwise)."""
    return build_tiny_model(out_dir, **{**SERVABLE_SHAPE, **kwargs})


def pretrain(
    model_dir: str | Path,
    texts: list[str],
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Causal-LM training of the model in `model_dir` on `texts`, saved in place; returns the last loss.

    One document per row, `batch_size` rows per step (the loss skips the padding). Deterministic for a
    seed on CPU: fixed order, fixed initialisation, deterministic kernels.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    docs = [[*ids, eot] for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    # One-cycle: a short warm-up, then cosine annealing to (almost) zero.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.05)
    loss = torch.zeros(())
    for step in range(steps):
        batch = [docs[(step * batch_size + i) % len(docs)] for i in range(batch_size)]
        width = max(map(len, batch))
        ids = torch.full((batch_size, width), eot)
        labels = torch.full((batch_size, width), -100)
        for row, doc in enumerate(batch):
            ids[row, : len(doc)] = labels[row, : len(doc)] = torch.tensor(doc)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        loss = loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step + 1, loss.item())
    torch.use_deterministic_algorithms(False)
    model.save_pretrained(model_dir, safe_serialization=True)
    return float(loss)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random causal LM in Hugging Face format.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=512)
    args = parser.parse_args(argv)
    path = build_tiny_model(
        args.out_dir, seed=args.seed, layers=args.layers, hidden=args.hidden, heads=args.heads,
        kv_heads=args.kv_heads, vocab_size=args.vocab_size,
    )
    print(path)


if __name__ == "__main__":
    main()
