"""The published evaluation protocols: prompts, sampling and answer extraction, each value with its source.

``limo``: the LIMO paper (Ye et al., "LIMO: Less is More for Reasoning", arXiv:2502.03387, §4.2) and its
evaluation code (github.com/GAIR-NLP/LIMO, ``eval/``). ``skythought``: SkyThought's evaluation code
(github.com/NovaSky-AI/SkyThought, ``skythought/evals/``, read at commit 0d190f1). ``custom``: this project's
neutral defaults, to be set per benchmark. docs/protocols.md holds the same table for readers.

Differences that remain on purpose (also in docs/protocols.md): equivalence is math-verify for every
protocol (SkyThought has its own ``math_equal``); GPQA's choices are shuffled per record with a fixed
seed (SkyThought shuffles with ``random`` after ``set_seed(41)``, so its order depends on the run); an
unclosed last box is not an answer (SkyThought reads whatever follows it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

from ..api.v1alpha1 import LIMO_SYSTEM_PROMPT, BenchmarkSpec
from ..benchmark_types import BenchmarkDef, BenchmarkItem, Sampling
from ..grading import BOXED, LAST_NUMBER, STRICT

log = logging.getLogger("reasonops.evaluate")

PROTOCOLS = ("limo", "skythought", "livecodebench", "custom")


# ------------------------------------------------------------------------------------------------
# LIMO
# ------------------------------------------------------------------------------------------------

# §4.2: benchmarks with fewer than 50 problems (AIME24, AMC23, CHMath) are sampled 16 times at
# temperature 0.7 and scored with unbiased pass@1 (Chen et al. 2021); every other one gets one greedy sample.
LIMO_SMALL_BENCHMARK = 50
LIMO_SAMPLED = Sampling(
    samples=16,  # §4.2
    temperature=0.7,  # §4.2
    top_p=1.0,  # not stated in §4.2; eval/eval.py's --top_p default (1), which its eval.sh also passes
    seed=0,  # eval/eval.sh --seed 0 (a global seed there; here seed + sample index per request)
)
LIMO_GREEDY = Sampling(
    samples=1,  # §4.2: greedy decoding, one sample
    temperature=0.0,  # §4.2; eval/eval.py forces top_p 1 when the temperature is 0
    top_p=1.0,
    seed=0,  # eval/eval.sh --seed 0
)
# eval/prompts/qwen-instruct/*.py: the same system prompt for every benchmark, the question as the user turn.
LIMO_SYSTEM = LIMO_SYSTEM_PROMPT


def _limo_sampling(definition: BenchmarkDef) -> Sampling:
    small = definition.problems is not None and definition.problems < LIMO_SMALL_BENCHMARK
    return LIMO_SAMPLED if small else LIMO_GREEDY


# ------------------------------------------------------------------------------------------------
# SkyThought
# ------------------------------------------------------------------------------------------------

# skythought/evals/cli.py: SAMPLING_PARAMS_DEFAULT and the --seed default (41).
SKYTHOUGHT_SAMPLING = Sampling(samples=1, temperature=0.0, top_p=1.0, seed=41)

# skythought/evals/models/model_configs.yaml, system_prompts (the YAML folds the lines; '\n\n' are newlines).
SKYTHOUGHT_QWEN_COT = "You are a helpful and harmless assistant. You are Qwen developed by Alibaba. You should think step-by-step."
SKYTHOUGHT_SKY_T1 = (
    "Your role as an assistant involves thoroughly exploring questions through a systematic long thinking process "
    "before providing the final precise and accurate solutions. This requires engaging in a comprehensive cycle of "
    "analysis, summarizing, exploration, reassessment, reflection, backtracing, and iteration to develop "
    "well-considered thinking process. Please structure your response into two main sections: Thought and Solution. "
    "In the Thought section, detail your reasoning process using the specified format: <|begin_of_thought|> "
    "{thought with steps separated with '\n\n'} <|end_of_thought|> Each step should include detailed considerations "
    "such as analisying questions, summarizing relevant findings, brainstorming new ideas, verifying the accuracy of "
    "the current steps, refining any errors, and revisiting previous steps. In the Solution section, based on "
    "various attempts, explorations, and reflections from the Thought section, systematically present the final "
    "solution that you deem correct. The solution should remain a logical, accurate, concise expression style and "
    "detail necessary step needed to reach the conclusion, formatted as follows: <|begin_of_solution|> {final "
    "formatted, precise, and clear solution} <|end_of_solution|> Now, try to solve the following question through "
    "the above guidelines:"
)
# model_configs.yaml, models: (system prompt, user template) by model id. A model not listed gets neither
# (skythought/evals/models/base.py: "Initializing without any system prompt"). PRIME-RL/Eurus-2-7B-PRIME's
# prompt (system_prompts/prime.txt) is not carried: set spec.systemPrompt for it.
SKYTHOUGHT_MODELS: dict[str, tuple[str | None, str | None]] = {
    "o1-mini": (None, "Question: {}\nAnswer: "),
    "o1-preview": (None, "Question: {}\nAnswer: "),
    "gpt-4o-mini": (None, "User: {}\nAssistant: "),
    **{
        model: (SKYTHOUGHT_QWEN_COT, None)
        for model in (
            "Qwen/Qwen2-7B-Instruct", "Qwen/QwQ-32B-Preview", "Qwen/Qwen2.5-72B-Instruct", "Qwen/Qwen2.5-32B-Instruct",
            "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-Math-7B-Instruct",
            "Qwen/Qwen2.5-Math-72B-Instruct",
        )
    },
    "NovaSky-AI/Sky-T1-32B-Preview": (SKYTHOUGHT_SKY_T1, None),
    "NovaSky-AI/Sky-T1-32B-Flash": (SKYTHOUGHT_SKY_T1, None),
}

_BOXED_FIRST = "Return your final response within \\boxed{{}}. {question}"
# skythought/evals/tasks/<task>/<task>.yaml, templating_parameters.template, by benchmark of this registry.
SKYTHOUGHT_TEMPLATES: dict[str, str] = {
    "aime24": _BOXED_FIRST,  # tasks/aime/aime24.yaml
    "aime25": "{question}\nReturn your final response within \\boxed{{}}",  # tasks/aime/aime25_1.yaml, aime25_2.yaml
    "amc23": _BOXED_FIRST,  # tasks/amc23/amc23.yaml
    "math500": _BOXED_FIRST,  # tasks/math/math500.yaml
    "olympiadbench": _BOXED_FIRST,  # tasks/olympiadbench/olympiadbench_math_en.yaml
    "minerva-math": _BOXED_FIRST,  # tasks/minervamath/minervamath.yaml
    "gsm8k": (  # tasks/gsm8k/gsm8k.yaml
        "Given the following problem, reason and give a final answer to the problem.\nProblem: {question}\n"
        'Your response should end with "The final answer is [answer]" where [answer] is the response to the problem.'
    ),
    # tasks/gpqa_diamond/gpqa_diamond.yaml; the question, a newline and "A) .., B) .., ..." (gpqa_diamond_handler.py)
    "gpqa-diamond": (
        "Return your final response within \\boxed{{}} and only include the letter choice (A, B, C, or D) as your "
        "final response. {question}\n{choices}"
    ),
}


def _skythought_user(definition: BenchmarkDef, item: BenchmarkItem, user_template: str | None) -> str:
    template = SKYTHOUGHT_TEMPLATES.get(definition.name, _BOXED_FIRST)
    choices = ", ".join(f"{'ABCDEFGHIJ'[i]}) {c}" for i, c in enumerate(item.choices or ()))
    text = template.format(question=item.question, choices=choices)
    # skythought/evals/tasks/base.py make_conversations: the model's user template wraps the task prompt.
    return user_template.format(text) if user_template else text


# ------------------------------------------------------------------------------------------------
# The protocol of a run
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    name: str
    system_prompt: str | None
    render: Callable[[BenchmarkDef, BenchmarkItem], str]
    # Answer extraction (grading.EXTRACTIONS). LIMO's eval/utils/parser.py reads only the last box (boxed);
    # this project's strict mode (custom) adds "the answer is X" phrases and the last math span.
    # SkyThought's skythought/evals/util/math_parsing_util.py extract_answer falls back to the last number.
    extraction: str
    sampling: Callable[[BenchmarkDef], Sampling]


def protocol(name: str, model: str = "", system_prompt: str | None = None) -> Protocol:
    """The protocol `name` for a model (its id matters to SkyThought); `system_prompt` replaces the protocol's."""
    if name == "limo":
        return Protocol("limo", LIMO_SYSTEM if system_prompt is None else system_prompt,
                        lambda d, item: d.render(item), BOXED, _limo_sampling)
    if name == "skythought":
        known_system, user_template = SKYTHOUGHT_MODELS.get(model, (None, None))
        return Protocol("skythought", known_system if system_prompt is None else system_prompt,
                        lambda d, item: _skythought_user(d, item, user_template), LAST_NUMBER,
                        lambda d: SKYTHOUGHT_SAMPLING)
    if name == "livecodebench":  # a code protocol (codebench.CODE_PROTOCOLS); math benchmarks as custom
        return Protocol("livecodebench", LIMO_SYSTEM if system_prompt is None else system_prompt,
                        lambda d, item: d.render(item), STRICT, lambda d: Sampling())
    if name == "custom":  # one greedy sample, no seed; LIMO's system prompt unless the spec sets one
        return Protocol("custom", LIMO_SYSTEM if system_prompt is None else system_prompt,
                        lambda d, item: d.render(item), STRICT, lambda d: Sampling())
    raise ValueError(f"unknown protocol {name!r} ({', '.join(PROTOCOLS)})")


def sampling_for(spec: BenchmarkSpec, definition: BenchmarkDef, chosen: Protocol) -> Sampling:
    """The protocol's sampling for a benchmark, overridden by the fields the spec sets.

    Several samples at temperature 0 are the same sample: they collapse to one, with a note (SkyThought's
    cli.py does the same: "Temperature 0 does not support multiple samples. Setting n=1.").
    """
    preset = chosen.sampling(definition)
    if definition.kind == "code":  # code benchmarks follow the code protocol's sampling (codebench.py)
        from ..codebench import code_protocol

        code = code_protocol(chosen.name)
        preset = replace(code.sampling, max_tokens=code.max_tokens or code.sampling.max_tokens,
                         seed=code.sampling.seed if code.sampling.seed is not None else preset.seed)
    sampling = Sampling(
        samples=spec.samples or preset.samples,
        temperature=float(spec.temperature) if spec.temperature is not None else preset.temperature,
        top_p=float(spec.topP) if spec.topP is not None else preset.top_p,
        max_tokens=spec.maxTokens or preset.max_tokens,
        seed=spec.seed if spec.seed is not None else preset.seed,
    )
    if sampling.temperature == 0 and sampling.samples > 1:
        note = f"{sampling.samples} samples at temperature 0 are one greedy sample: n set to 1"
        log.warning("%s: %s", spec.name, note)
        sampling = replace(sampling, samples=1, note=note)
    return sampling
