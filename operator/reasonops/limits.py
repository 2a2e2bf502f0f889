"""Serving limits as vLLM decides them, without importing vLLM: a model's context from its config.json,
and the max_tokens a request may send.

The context rule is vLLM 0.33.0's (commit 4ba787ec9), read from its source:
`ModelArchConfigConvertorBase.derive_max_model_len_and_key` (vllm/transformers_utils/
model_arch_config_convertor.py) picks the length keys, `_get_and_verify_max_len` (vllm/config/model.py) scales
them by the rope factor and refuses a larger --max-model-len, `patch_legacy_rope_type` and
`iter_rope_parameters` (vllm/transformers_utils/config.py) read the rope parameters. Where this module and that
code disagree, vLLM is right: tests/test_limits.py holds the table of real configs both are checked on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

# The keys of a config.json that bound the context, the smallest wins (derive_max_model_len_and_key).
LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
               "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len")
# Where a composite model keeps its text model's config (transformers' PretrainedConfig.get_text_config).
TEXT_CONFIG_KEYS = ("text_encoder", "decoder", "generator", "text_config")
# Rope types whose config already states the scaled length: their factor is not applied again.
UNSCALED_ROPE_TYPES = frozenset({"longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling"})
# Legacy rope type names and what vLLM reads them as (patch_legacy_rope_type).
LEGACY_ROPE_TYPES = {"su": "longrope", "mrope": "default", "telechat3-yarn": "yarn"}


@dataclass(frozen=True)
class Context:
    """What vLLM derives from a model's config.json."""

    limit: int  # the largest --max-model-len vLLM starts with
    default: int  # what it serves without --max-model-len
    key: str  # the config key the limit comes from, for messages


def text_config(model_config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The config of the model's text part: the top level, or the one nested text section."""
    nested = [model_config[k] for k in TEXT_CONFIG_KEYS if isinstance(model_config.get(k), Mapping)]
    return nested[0] if len(nested) == 1 else model_config


def rope_parameters(config: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The rope parameters of a (text) config, one mapping per layer type where they are nested that way.
    `rope_parameters` is transformers 5's name; older configs say `rope_scaling`."""
    parameters = config.get("rope_parameters") or config.get("rope_scaling")
    if not isinstance(parameters, Mapping) or not parameters:
        return
    if all(isinstance(v, Mapping) or v is None for v in parameters.values()):  # {layer type: parameters}
        yield from (v for v in parameters.values() if v)
    else:
        yield parameters


def rope_type(parameters: Mapping[str, Any]) -> str:
    name = parameters.get("rope_type") or parameters.get("type") or "default"
    return LEGACY_ROPE_TYPES.get(name, name)


def model_context(model_config: Mapping[str, Any]) -> Optional[Context]:
    """vLLM's context for a config.json, or None where no key states one (vLLM then takes any
    --max-model-len, and 2048 without one)."""
    config = text_config(model_config)
    lengths = [(config[k], k) for k in LENGTH_KEYS if isinstance(config.get(k), (int, float)) and not isinstance(config.get(k), bool)]
    if not lengths:
        return None
    derived, key = min(lengths, key=lambda pair: pair[0])
    model_max_length = config.get("model_max_length")
    if model_max_length:  # Command-R's key overrides the others
        derived, key = model_max_length, "model_max_length"
    parameters = list(rope_parameters(config))
    model_type = str(config.get("model_type") or model_config.get("model_type") or "")
    factor: Any = 1.0
    if parameters and "gemma3" not in model_type:  # Gemma 3 states its length scaled already
        for layer in parameters:
            if rope_type(layer) not in UNSCALED_ROPE_TYPES:
                factor = layer.get("factor", factor)  # the last layer type's factor counts
    scaled = derived * (factor if factor is not None else 1.0)
    limit = max(scaled, model_max_length) if model_max_length else scaled
    if any(rope_type(layer) == "longrope" for layer in parameters):
        default = config.get("original_max_position_embeddings", scaled)
    else:
        default = scaled
    return Context(limit=int(limit), default=int(default), key=key)


def model_context_length(model_config: Mapping[str, Any]) -> Optional[int]:
    """The largest --max-model-len vLLM accepts for a config.json (None: no limit stated)."""
    context = model_context(model_config)
    return context.limit if context else None


def check_max_model_len(model_config: Mapping[str, Any], requested: Optional[int]) -> Optional[str]:
    """A one-line error when serving.maxModelLen exceeds the model's context (vLLM refuses to start
    then), else None."""
    context = model_context(model_config)
    if context is None:
        return None
    return max_model_len_problem(requested, context.limit, source=f"{context.key} and rope scaling in its config.json, as vLLM derives it")


def max_model_len_problem(requested: Optional[int], allowed: Optional[int],
                          source: str = "as vLLM derives it from its config.json") -> Optional[str]:
    """A one-line error when serving.maxModelLen exceeds a model's context of `allowed` tokens, else None."""
    if requested is None or allowed is None or requested <= allowed:
        return None
    return f"serving.maxModelLen {requested} exceeds the model's context of {allowed} tokens ({source})"


def request_max_tokens(max_tokens: int, max_model_len: Optional[int]) -> int:
    """The max_tokens a request sends: at most the served context. vLLM's server answers 400 to more (its
    offline engine stops at the context anyway), and cuts an answer to what the prompt leaves of the
    context by itself, so both backends generate the same for the same spec."""
    return min(max_tokens, max_model_len) if max_model_len else max_tokens
