"""The model stages: the solve-rate difficulty filter and chain generation with rejection sampling.

Both send every problem as a chat (system prompt, question) to a SamplerModel through
`reasonops.llm.make_generator` (an OpenAI-compatible endpoint, a list of replica endpoints, the
endpoint(s) of an EvalRun that the operator resolved into the document's context.endpoints, or vLLM in the pod) and grade the responses against
the problem's reference answer with the shared `reasonops.grading.Grader`. A response that cannot be
graded counts as unsolved. Problems without a reference answer cannot be graded and are dropped.

Every finished sample is appended to a resume cache in the work directory (one JSONL file per stage and
model), so a restarted pod asks only for what is missing.

Sampling defaults when the spec leaves them unset: temperature 0.6 and top-p 0.95 (LIMO's sampled
protocol; several attempts at temperature 0 would all be the same), at most 16,384 new tokens (the
Sky-T1 teacher budget).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..api import v1alpha1 as api
from ..api.common import decimal
from ..api.v1alpha1 import DifficultyStage, GenerateStage, SamplerModel, SamplingParams
from ..codebench import CodeProblem
from ..grading import GradeResult, Grader
from ..llm import Completion, GenerationRequest, Generator, make_generator
from .code import CodeGrader
from .records import Chain, Problem, StageReport

log = logging.getLogger("reasonops.curate")

DEFAULT_TEMPERATURE = float(api.SAMPLING_TEMPERATURE)  # the API names each default once
DEFAULT_TOP_P = float(api.SAMPLING_TOP_P)
DEFAULT_MAX_TOKENS = api.SAMPLING_MAX_TOKENS
DEFAULT_CHAINS = api.CHAINS_PER_PROBLEM


@dataclass
class ModelContext:
    """What the model stages share: prompt, resolved endpoints, resume caches, grader, progress."""

    system_prompt: str
    work_dir: Path
    grader: Grader
    endpoints: dict[str, str | list[str]] = field(default_factory=dict)
    served_names: dict[str, str] = field(default_factory=dict)  # EvalRun -> the model name its server answers to
    progress: bool = False
    on_progress: Callable[[str, int, int], None] | None = None  # (message, problems done, problems in all)
    cache_suffix: str = ""  # a shard's own resume caches: ".shard-<index>-of-<count>"
    sandbox: Any = None  # the spec's SandboxSpec: limits of code problems' test runs
    _code: CodeGrader | None = None

    def generator(self, sampler: SamplerModel, cache_name: str) -> Generator:
        override = self.endpoints.get(sampler.evalRun) if sampler.evalRun else None
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cache_name + self.cache_suffix)
        name = self.served_names.get(sampler.evalRun) if sampler.evalRun else None
        return make_generator(sampler, cache_path=self.work_dir / f"{safe}.jsonl", endpoint_override=override,
                              model_override=name)

    def sample(self, generator: Generator, problems: list[Problem], n: int, sampling: SamplingParams | None,
               label: str) -> dict[str, list[Completion]]:
        """n completions per problem, with a progress bar and periodic progress messages."""
        from tqdm.auto import tqdm

        sampling = sampling or SamplingParams()
        requests = [
            GenerationRequest(
                id=p.id,
                messages=[{"role": "system", "content": self.system_prompt}, {"role": "user", "content": p.question}],
                n=n,
                temperature=decimal(sampling.temperature, DEFAULT_TEMPERATURE),
                top_p=decimal(sampling.topP, DEFAULT_TOP_P),
                max_tokens=sampling.maxTokens or DEFAULT_MAX_TOKENS,
                seed=sampling.seed,
            )
            for p in problems
        ]
        bar = tqdm(total=len(requests), desc=label, disable=not self.progress, mininterval=10)
        finished = 0

        def on_result(request_id: str, completions: list[Completion]) -> None:
            nonlocal finished
            finished += 1
            bar.update(1)
            if self.on_progress and (finished % 50 == 0 or finished == len(requests)):
                self.on_progress(f"{label}: {finished:,} of {len(requests):,} problems sampled", finished, len(requests))

        try:
            return generator.generate(requests, on_result=on_result)
        finally:
            bar.close()
            release = getattr(generator, "close", None)  # an in-pod engine frees the GPU for the next model
            if release is not None:
                release()

    def grade(self, texts: list[str], gold: list[Any]) -> list[GradeResult]:
        """Math answers with the Grader; code problems (gold is a CodeProblem) by running their tests."""
        code = [i for i, g in enumerate(gold) if isinstance(g, CodeProblem)]
        if not code:
            return self.grader.grade([(t, g, "math") for t, g in zip(texts, gold)])
        self._code = self._code or CodeGrader(self.sandbox)
        results: list[GradeResult | None] = [None] * len(texts)
        for i, grade in zip(code, self._code.grade([texts[i] for i in code], [gold[i] for i in code])):
            results[i] = grade
        math = [i for i in range(len(texts)) if results[i] is None]
        for i, grade in zip(math, self.grader.grade([(texts[i], gold[i], "math") for i in math])):
            results[i] = grade
        return results  # type: ignore[return-value]


def _split_gradable(problems: list[Problem], report: StageReport) -> list[Problem]:
    gradable = []
    for problem in problems:
        if problem.gold is None:
            report.drop(problem.id, "no-reference-answer")
        else:
            gradable.append(problem)
    return gradable


def difficulty_filter(problems: list[Problem], stage: DifficultyStage, name: str, ctx: ModelContext,
                      report: StageReport) -> list[Problem]:
    """Keep problems solved between minSolved and maxSolved times out of `attempts`; record solve rates."""
    report.input = len(problems)
    gradable = _split_gradable(problems, report)
    generator = ctx.generator(stage.sampler, f"{name}.{stage.sampler.model}")
    results = ctx.sample(generator, gradable, stage.attempts, stage.sampling, f"{name} ({stage.sampler.model})")
    texts = [(p, c.text) for p in gradable for c in results.get(p.id, [])]
    verdicts = ctx.grade([t for _, t in texts], [p.gold for p, _ in texts])
    solved: Counter[str] = Counter(p.id for (p, _), grade in zip(texts, verdicts) if grade.correct)
    kept = []
    for problem in gradable:
        count = solved[problem.id]
        problem.solve_rates[name] = round(count / stage.attempts, 4)
        if count < stage.minSolved:
            report.drop(problem.id, "too-hard", f"solved {count}/{stage.attempts}")
        elif count > stage.maxSolved:
            report.drop(problem.id, "too-easy", f"solved {count}/{stage.attempts}")
        else:
            kept.append(problem)
    report.kept = len(kept)
    report.info = {
        "model": stage.sampler.model, "attempts": stage.attempts, "window": [stage.minSolved, stage.maxSolved],
        "problemsBySolvedCount": {str(k): v for k, v in sorted(Counter(solved[p.id] for p in gradable).items())},
        "ungraded": sum(1 for grade in verdicts if grade.correct is None),
    }
    return kept


def generate_chains(problems: list[Problem], stage: GenerateStage, name: str, ctx: ModelContext,
                    report: StageReport) -> list[Problem]:
    """Sample chains from every teacher; keep the correct ones (all, with keepIncorrect) that finished."""
    report.input = len(problems)
    keep_incorrect = bool(stage.keepIncorrect)
    candidates = problems if keep_incorrect else _split_gradable(problems, report)
    per_problem: dict[str, list[Chain]] = {p.id: [] for p in candidates}
    teachers: dict[str, Counter[str]] = {}
    n = stage.chainsPerProblem or DEFAULT_CHAINS
    for teacher in stage.teachers:
        generator = ctx.generator(teacher.sampler, f"{name}.{teacher.name}")
        results = ctx.sample(generator, candidates, n, stage.sampling, f"{name} ({teacher.name})")
        pairs = [(p, c) for p in candidates for c in results.get(p.id, [])]
        graded = [p.gold is not None for p, _ in pairs]
        verdicts = ctx.grade([c.text for (p, c), g in zip(pairs, graded) if g],
                             [p.gold for (p, _), g in zip(pairs, graded) if g])
        verdict_of = iter(verdicts)
        counts = teachers.setdefault(teacher.name, Counter())
        for (problem, completion), gradable in zip(pairs, graded):
            grade = next(verdict_of) if gradable else None
            correct = grade.correct if grade else None
            counts["generated"] += 1
            counts["correct"] += bool(correct)
            if completion.finish_reason == "length":
                counts["truncated"] += 1
            elif correct or keep_incorrect:
                counts["kept"] += 1
                answer = grade.extracted if grade else None
                per_problem[problem.id].append(Chain(completion.text, teacher.name, answer, correct))
    kept = []
    for problem in candidates:
        if per_problem[problem.id]:
            problem.chains = per_problem[problem.id]
            kept.append(problem)
        else:
            report.drop(problem.id, "no-correct-chain" if not keep_incorrect else "no-finished-chain")
    report.kept = len(kept)
    report.info = {"chainsPerProblem": n, "keepIncorrect": keep_incorrect,
                   "teachers": {t: dict(c) for t, c in teachers.items()}}
    return kept
