"""The serving limits (reasonops.limits) against vLLM's own rule, on real models' config.json.

Expected values follow vLLM 0.33.0 (commit 4ba787ec9): `_get_and_verify_max_len` in vllm/config/model.py and
`derive_max_model_len_and_key` in vllm/transformers_utils/model_arch_config_convertor.py. Where vLLM is
importable, `test_vllm_derives_the_same_context` asks vLLM itself.
"""

from __future__ import annotations

import pytest

from reasonops import limits

QWEN25_32B = {"model_type": "qwen2", "max_position_embeddings": 32768, "sliding_window": 131072, "use_sliding_window": False,
              "rope_scaling": None, "rope_theta": 1000000.0}
# Qwen2.5's model cards tell users to add this for 128k inputs; vLLM still derives 32768 (yarn configs state the
# scaled length already), and refuses --max-model-len 131072 unless max_position_embeddings says so too.
QWEN25_32B_YARN = {**QWEN25_32B, "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
LLAMA31_8B = {"model_type": "llama", "max_position_embeddings": 131072, "rope_theta": 500000.0,
              "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"}}

# (model, the fields of its config.json that bound the context, vLLM's limit, vLLM's default without --max-model-len)
CONFIGS = [
    ("Qwen/Qwen2.5-32B-Instruct", QWEN25_32B, 32768, 32768),
    ("Qwen/Qwen2.5-32B-Instruct + yarn x4", QWEN25_32B_YARN, 32768, 32768),
    ("Qwen/Qwen2.5-Math-7B-Instruct", {"model_type": "qwen2", "max_position_embeddings": 4096, "sliding_window": None}, 4096, 4096),
    # an older revision states a sliding window of 4096: vLLM reads it only with --disable-sliding-window
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", {"model_type": "qwen2", "max_position_embeddings": 131072, "sliding_window": 4096,
                                                 "use_sliding_window": False, "rope_scaling": None}, 131072, 131072),
    ("meta-llama/Llama-3.1-8B-Instruct", LLAMA31_8B, 131072, 131072),
    # dynamic NTK scales the stated length by its factor (original_max_position_embeddings is not read)
    ("dynamic x2 (docs/vllm-cpu.md's measurement)", {"model_type": "llama", "max_position_embeddings": 8192,
                                                     "rope_scaling": {"type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4096}}, 16384, 16384),
    ("lmsys/vicuna-7b-v1.5-16k", {"model_type": "llama", "max_position_embeddings": 4096, "rope_scaling": {"factor": 4.0, "type": "linear"}}, 16384, 16384),
    # LongRoPE: the stated length is the limit; without --max-model-len vLLM serves the original one
    ("microsoft/Phi-3-mini-128k-instruct", {"model_type": "phi3", "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
                                            "sliding_window": 262144,
                                            "rope_scaling": {"type": "longrope", "long_factor": [1.0] * 48, "short_factor": [1.0] * 48}}, 131072, 4096),
    ("mosaicml/mpt-7b", {"model_type": "mpt", "max_seq_len": 2048}, 2048, 2048),
    ("openai-community/gpt2", {"model_type": "gpt2", "n_positions": 1024, "n_ctx": 1024}, 1024, 1024),
    ("CohereForAI/c4ai-command-r-v01", {"model_type": "cohere", "max_position_embeddings": 8192, "model_max_length": 131072}, 131072, 131072),
    # Gemma 3 states its length scaled already; the text model's config is nested
    ("google/gemma-3-4b-it", {"model_type": "gemma3", "text_config": {
        "model_type": "gemma3_text", "max_position_embeddings": 131072, "sliding_window": 1024,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}}}, 131072, 131072),
]


@pytest.mark.parametrize("name, config, limit, default", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_context_follows_vllms_rule(name, config, limit, default):
    context = limits.model_context(config)
    assert context is not None and (context.limit, context.default) == (limit, default)
    assert limits.check_max_model_len(config, limit) is None
    error = limits.check_max_model_len(config, limit + 1)
    assert error and str(limit + 1) in error and str(limit) in error and "\n" not in error


def test_yarn_and_dynamic_are_no_longer_the_wrong_way_round():
    """The operator used to allow 131072 on the yarn config and refuse 16384 on the dynamic one (issue 22)."""
    assert limits.check_max_model_len(QWEN25_32B_YARN, 131072)
    dynamic = {"max_position_embeddings": 8192, "rope_scaling": {"type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4096}}
    assert limits.check_max_model_len(dynamic, 16384) is None


def test_rope_parameters_of_transformers_5_and_per_layer_types():
    # transformers 5 writes rope_parameters; nested by layer type, the last scaled type's factor counts
    assert limits.model_context_length({"max_position_embeddings": 4096, "rope_parameters": {"rope_type": "linear", "factor": 2.0}}) == 8192
    nested = {"max_position_embeddings": 4096, "rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "factor": 4.0}}}
    assert limits.model_context_length(nested) == 16384
    # the legacy name "su" is LongRoPE, and a null factor counts as 1
    assert limits.model_context_length({"max_position_embeddings": 131072, "rope_scaling": {"type": "su"}}) == 131072
    assert limits.model_context_length({"max_position_embeddings": 4096, "rope_scaling": {"type": "dynamic", "factor": None}}) == 4096


def test_smallest_key_wins_and_no_key_means_no_limit():
    assert limits.model_context_length({"max_position_embeddings": 4096, "seq_length": 2048}) == 2048
    assert limits.check_max_model_len({"text_config": {"max_position_embeddings": 8192}}, 16384)
    assert limits.model_context({}) is None
    assert limits.check_max_model_len({}, 1 << 20) is None  # vLLM takes any --max-model-len then
    assert limits.check_max_model_len(QWEN25_32B, None) is None


@pytest.mark.parametrize("max_tokens, max_model_len, sent", [
    (32768, 16384, 16384),  # the limo protocol under examples/gitops staging's maxModelLen
    (32768, 32768, 32768),  # equal is accepted by vLLM; the prompt's share is cut by the server
    (2000, 32768, 2000),
    (32768, None, 32768),  # the context is unknown: send what the protocol asks
])
def test_request_max_tokens_stays_within_the_context(max_tokens, max_model_len, sent):
    assert limits.request_max_tokens(max_tokens, max_model_len) == sent


def _vllm_context(config: dict, requested: int | None) -> int:
    """vLLM's own answer: its RoPE patching of the transformers config, its length keys, its verification."""
    from types import SimpleNamespace

    from transformers import AutoConfig
    from vllm.config.model import _get_and_verify_max_len
    from vllm.transformers_utils.config import get_hf_text_config, patch_rope_parameters
    from vllm.transformers_utils.model_arch_config_convertor import ModelArchConfigConvertorBase

    hf_config = AutoConfig.for_model(**config)
    text = get_hf_text_config(hf_config)
    patch_rope_parameters(text)
    derived = ModelArchConfigConvertorBase(hf_config, text).derive_max_model_len_and_key()
    return _get_and_verify_max_len(text, SimpleNamespace(derived_max_model_len_and_key=derived), None, requested, False, None)


@pytest.mark.parametrize("name, config, limit, default", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_vllm_derives_the_same_context(name, config, limit, default):
    pytest.importorskip("vllm", reason="vLLM is not installed here")
    assert _vllm_context(config, None) == default
    assert _vllm_context(config, limit) == limit
    with pytest.raises(ValueError, match="max_model_len"):
        _vllm_context(config, limit + 1)
