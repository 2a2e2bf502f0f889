"""Padding-free packing: a packed sample's logits and loss equal those of the sample run alone."""

from __future__ import annotations

import pytest
import torch

from reasonops.tinymodel import build_tiny_model
from reasonops.train.data import collate, prepare_samples, target_tokens
from reasonops.train.modeling import load_tokenizer

from train_support import arithmetic_rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("packing") / "model", layers=2, hidden=64)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logits_equal_separate_runs(tiny, attention):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny, attn_implementation=attention, dtype=torch.float32).eval()
    tokenizer = load_tokenizer(tiny, None)
    rows = arithmetic_rows(3, seed=5)
    rows[1]["messages"][1]["content"] *= 3  # distinct lengths
    samples, _ = prepare_samples(tokenizer, rows, max_length=1024, overlong="drop", system_prompt="Reason.")
    packed = collate(samples, packing=True, pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        offset = 0
        for sample in samples:
            alone = model(input_ids=torch.tensor([sample.input_ids]), use_cache=False).logits[0]
            part = logits[offset : offset + len(sample.input_ids)]
            assert (part - alone).abs().max().item() < 1e-4
            offset += len(sample.input_ids)


def test_packed_loss_equals_padded_loss(tiny):
    """The training loss (summed cross-entropy / target tokens) is the same packed or padded."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny, attn_implementation="sdpa", dtype=torch.float32).eval()
    tokenizer = load_tokenizer(tiny, None)
    samples, _ = prepare_samples(tokenizer, arithmetic_rows(4, seed=9), max_length=1024, overlong="drop",
                                 system_prompt="Reason.")
    packed = collate(samples, packing=True, pad_id=tokenizer.pad_token_id)
    padded = collate(samples, packing=False, pad_id=tokenizer.pad_token_id)
    n = target_tokens(packed)
    assert n == target_tokens(padded)
    with torch.no_grad():
        a = model(**packed, use_cache=False, num_items_in_batch=n).loss
        b = model(**padded, use_cache=False, num_items_in_batch=n).loss
    assert abs(a.item() - b.item()) < 1e-5
