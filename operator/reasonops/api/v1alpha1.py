"""The reasonops.io/v1alpha1 API: ReasoningDataset, FineTuneJob and EvalRun.

This module is the single definition of the API. The CRDs in crds/ and in the Helm chart are
generated from it (`reasonops crds`), the operator validates and resolves specs with it, and the
workloads read their configuration through it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import ConfigDict, Field

from .common import (
    ChildRef,
    Condition,
    Decimal,
    HistoryEntry,
    Location,
    LongText,
    Model,
    Name,
    Resources,
    SecretKeyRef,
    ShortText,
)

LIMO_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

Benchmark = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]

# =============================================================================================
# Models used by curation and evaluation: an OpenAI-compatible endpoint or an in-pod vLLM engine
# =============================================================================================


class ModelEndpoint(Model):
    """An OpenAI-compatible server (vLLM, an EvalRun's served model, or a hosted API)."""

    url: Annotated[str, Field(max_length=1024, pattern=r"^https?://.+")] = Field(
        description="Base URL of the API, e.g. http://my-eval.team.svc:8000/v1."
    )
    apiKeySecretRef: Optional[SecretKeyRef] = Field(
        default=None, description="Secret key holding the API key, passed to the pod as an environment variable."
    )
    concurrency: Optional[int] = Field(default=None, ge=1, le=4096, description="Requests in flight (default 64).")
    timeoutSeconds: Optional[int] = Field(default=None, ge=1, le=86400, description="Per-request timeout (default 3600).")
    maxRetries: Optional[int] = Field(default=None, ge=0, le=20, description="Retries of transient errors (default 5).")


class SamplerModel(Model):
    """A model that generates: in the pod with vLLM (default), or through an OpenAI-compatible endpoint."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!(has(self.endpoint) && has(self.evalRun))", "message": "set at most one of endpoint or evalRun"}
            ]
        }
    )

    model: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="Hub id, path or URI of the weights (vLLM in the pod), or the served model name (endpoint)."
    )
    endpoint: Optional[ModelEndpoint] = Field(default=None, description="Use this OpenAI-compatible endpoint.")
    evalRun: Optional[Name] = Field(
        default=None, description="Use the endpoint served by this EvalRun (same namespace)."
    )
    tensorParallelSize: Optional[int] = Field(default=None, ge=1, le=16, description="vLLM tensor parallel size.")
    maxModelLen: Optional[int] = Field(default=None, ge=256, le=1048576, description="vLLM maximum context length.")


class SamplingParams(Model):
    temperature: Optional[Decimal] = Field(default=None, description="Sampling temperature, e.g. \"0.6\".")
    topP: Optional[Decimal] = Field(default=None, description="Nucleus sampling, e.g. \"0.95\".")
    maxTokens: Optional[int] = Field(default=None, ge=1, le=262144, description="Maximum new tokens per response.")
    seed: Optional[int] = Field(default=None, ge=0, description="Sampling seed.")


# =============================================================================================
# ReasoningDataset
# =============================================================================================


class HubSource(Model):
    id: Annotated[str, Field(min_length=1, max_length=256)] = Field(description="Hub dataset id, e.g. GAIR/LIMO.")
    config: Optional[Annotated[str, Field(max_length=128)]] = Field(default=None, description="Dataset configuration.")
    split: Annotated[str, Field(max_length=128)] = Field(default="train", description="Split to load.")
    revision: Optional[Annotated[str, Field(max_length=128)]] = Field(
        default=None, description="Pinned revision (commit or tag) so upstream changes cannot move the data."
    )


class FieldMapping(Model):
    question: Optional[Annotated[str, Field(max_length=128)]] = Field(default=None, description="Column of the problem.")
    solution: Optional[Annotated[str, Field(max_length=128)]] = Field(default=None, description="Column of the worked solution.")
    answer: Optional[Annotated[str, Field(max_length=128)]] = Field(
        default=None, description="Column of the final answer; when absent, the last \\boxed{} of the solution."
    )
    id: Optional[Annotated[str, Field(max_length=128)]] = Field(default=None, description="Column of a stable row id.")


class InlineRow(Model):
    question: LongText = Field(description="The problem.")
    solution: Optional[LongText] = Field(default=None, description="A worked solution.")
    answer: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="The final answer.")


class DataSource(Model):
    """One problem pool. Exactly one of hub, path, uri or inline."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.hub), has(self.path), has(self.uri), has(self.inline)].filter(x, x).size() == 1",
                    "message": "exactly one of hub, path, uri or inline must be set",
                }
            ]
        }
    )

    name: Name = Field(description="Name of the source, used in reports and the manifest.")
    hub: Optional[HubSource] = Field(default=None, description="A dataset on the Hugging Face hub.")
    path: Optional[Annotated[str, Field(max_length=1024)]] = Field(
        default=None, description="A JSONL, JSON or Parquet file or directory (volume mount or laptop path)."
    )
    uri: Optional[Annotated[str, Field(max_length=1024, pattern=r"^[a-z0-9+.-]+://.+")]] = Field(
        default=None, description="An fsspec URI such as s3://bucket/pool.parquet."
    )
    inline: Optional[list[InlineRow]] = Field(default=None, max_length=100, description="A short list of rows.")
    format: Optional[Literal["jsonl", "json", "parquet"]] = Field(default=None, description="File format (default: from the name).")
    fields: Optional[FieldMapping] = Field(default=None, description="Column mapping (default: common layouts are detected).")
    limit: Optional[int] = Field(default=None, ge=1, description="Use at most this many rows of the source.")


class DedupeStage(Model):
    threshold: Optional[Decimal] = Field(default=None, description="MinHash Jaccard threshold for near-duplicates (default \"0.8\").")
    shingleSize: Optional[int] = Field(default=None, ge=1, le=32, description="Word n-gram size of the shingles (default 5).")
    numPerm: Optional[int] = Field(default=None, ge=16, le=1024, description="MinHash permutations (default 128).")


class DecontaminateStage(Model):
    benchmarks: list[Benchmark] = Field(
        min_length=1, max_length=32, description="Benchmarks of the registry to check against, e.g. aime24, math500."
    )
    ngram: Optional[int] = Field(default=None, ge=3, le=64, description="Word n-gram size (default 13).")
    threshold: Optional[Decimal] = Field(
        default=None, description="Share of a problem's n-grams found in a benchmark item that marks it contaminated (default \"0.5\")."
    )
    benchmarkPath: Optional[Annotated[str, Field(max_length=1024)]] = Field(
        default=None, description="Directory holding <benchmark>.jsonl files (instead of the hub)."
    )


class DifficultyStage(Model):
    """Sample attempts per problem and keep problems whose number of solved attempts lies in [minSolved, maxSolved]."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self.minSolved <= self.maxSolved", "message": "minSolved must not exceed maxSolved"},
                {"rule": "self.maxSolved <= self.attempts", "message": "maxSolved must not exceed attempts"},
            ]
        }
    )

    sampler: SamplerModel = Field(description="The model that attempts the problems.")
    attempts: int = Field(ge=1, le=256, description="Attempts per problem (LIMO: 4 coarse, 32 fine).")
    minSolved: int = Field(ge=0, le=256, description="Keep problems solved at least this many times.")
    maxSolved: int = Field(ge=0, le=256, description="Keep problems solved at most this many times.")
    sampling: Optional[SamplingParams] = Field(default=None, description="Sampling parameters of the attempts.")


class Teacher(Model):
    name: Name = Field(description="Label recorded with every chain this teacher produced.")
    sampler: SamplerModel = Field(description="The teacher model.")


class GenerateStage(Model):
    """Generate reasoning chains and keep those whose final answer is correct (rejection sampling)."""

    teachers: list[Teacher] = Field(min_length=1, max_length=8, description="Teacher models.")
    chainsPerProblem: Optional[int] = Field(default=None, ge=1, le=64, description="Chains per problem and teacher (default 4).")
    sampling: Optional[SamplingParams] = Field(default=None, description="Sampling parameters of the chains.")
    keepIncorrect: Optional[bool] = Field(default=None, description="Keep chains with a wrong answer (for ablations).")


class KeywordWeight(Model):
    name: Literal["elaboration", "verification", "exploration", "granularity"] = Field(description="Score component.")
    weight: Decimal = Field(description="Weight of the component, e.g. \"0.3\".")
    keywords: Optional[list[Annotated[str, Field(max_length=64)]]] = Field(
        default=None, max_length=64, description="Keywords counted for the component (elaboration counts length)."
    )


class ScoreStage(Model):
    """LIMO's rule-based chain score; the best chain per problem is kept."""

    components: Optional[list[KeywordWeight]] = Field(
        default=None, max_length=4, description="Weights and keywords (default: LIMO's 30/20/25/25)."
    )


class SelectStage(Model):
    size: int = Field(ge=1, le=1000000, description="Keep the top N problems by chain score.")


class Stage(Model):
    """One curation stage. Exactly one of dedupe, decontaminate, difficulty, generate, score or select."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.dedupe), has(self.decontaminate), has(self.difficulty), has(self.generate),"
                    " has(self.score), has(self.select)].filter(x, x).size() == 1",
                    "message": "a stage sets exactly one of dedupe, decontaminate, difficulty, generate, score or select",
                }
            ]
        }
    )

    name: Name = Field(description="Name of the stage, shown in status and the report.")
    dedupe: Optional[DedupeStage] = Field(default=None, description="Exact and near-duplicate removal.")
    decontaminate: Optional[DecontaminateStage] = Field(default=None, description="Drop problems overlapping benchmarks.")
    difficulty: Optional[DifficultyStage] = Field(default=None, description="Solve-rate difficulty filter.")
    generate: Optional[GenerateStage] = Field(default=None, description="Chain generation with rejection sampling.")
    score: Optional[ScoreStage] = Field(default=None, description="Rule-based chain scoring.")
    select: Optional[SelectStage] = Field(default=None, description="Keep the top N problems.")

    def kind(self) -> str:
        for key in ("dedupe", "decontaminate", "difficulty", "generate", "score", "select"):
            if getattr(self, key) is not None:
                return key
        raise ValueError(f"stage {self.name} sets no stage type")


class Perturbation(Model):
    name: Name = Field(description="Label of the variant; written as its own dataset next to the main one.")
    type: Literal["shuffleSteps", "deleteSteps", "insertSteps", "wrongAnswer", "removeKeywords", "corruptDigits"] = Field(
        description="The perturbation (as in the 'structure, not content' study)."
    )
    fraction: Optional[Decimal] = Field(default=None, description="Share of steps, keywords or digits affected (default \"0.67\").")
    seed: Optional[int] = Field(default=None, ge=0, description="Random seed.")


class ReasoningDatasetSpec(Model):
    sources: list[DataSource] = Field(min_length=1, max_length=32, description="Problem pools, loaded in order.")
    fields: Optional[FieldMapping] = Field(default=None, description="Default column mapping for every source.")
    stages: Optional[list[Stage]] = Field(default=None, max_length=16, description="Curation stages, run in this order.")
    perturbations: Optional[list[Perturbation]] = Field(
        default=None, max_length=8, description="Perturbed variants of the result, for ablations."
    )
    systemPrompt: Optional[LongText] = Field(default=None, description="System turn of every sample (default LIMO's).")
    tokenizer: Optional[Annotated[str, Field(max_length=512)]] = Field(
        default=None, description="Tokenizer (hub id or path) for the token-length statistics of the manifest."
    )
    output: Location = Field(description="Where the dataset is written; each revision in its own directory.")
    resources: Optional[Resources] = Field(default=None, description="Compute for the curation pod.")
    backoffLimit: Optional[int] = Field(default=None, ge=0, le=100, description="Pod retries before the revision fails (default 2).")
    activeDeadlineSeconds: Optional[int] = Field(default=None, ge=1, description="Deadline of the curation Job.")
    suspend: Optional[bool] = Field(default=None, description="Do not start (or stop) the curation Job.")


class StageCount(Model):
    stage: Annotated[str, Field(max_length=63)] = Field(description="Stage name.")
    kept: int = Field(description="Rows kept by the stage.")
    dropped: int = Field(description="Rows dropped by the stage.")


class WorkloadProgress(Model):
    """Progress reported by the running pod (throttled; at most one update per 10 s)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})

    revision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Revision being worked on.")
    stage: Optional[Annotated[str, Field(max_length=63)]] = Field(default=None, description="Current stage.")
    message: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Latest progress line.")
    updateTime: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="When reported.")


class DatasetOutput(Model):
    """The latest dataset that was written successfully (kept while a newer revision is in progress)."""

    revision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Revision that wrote it.")
    location: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Directory of the current revision.")
    contentHash: Optional[Annotated[str, Field(max_length=128)]] = Field(default=None, description="Hash of the written samples.")
    samples: Optional[int] = Field(default=None, description="Samples in the dataset.")


class _StatusBase(Model):
    model_config = ConfigDict(extra="allow")

    observedGeneration: Optional[int] = Field(default=None, description="Generation of the spec last acted on.")
    phase: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Summary for printer columns.")
    reason: Optional[Annotated[str, Field(max_length=128)]] = Field(default=None, description="Reason of the Ready condition.")
    conditions: Optional[list[Condition]] = Field(default=None, max_length=16, description="Current conditions.")
    revision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Current revision.")
    children: Optional[list[ChildRef]] = Field(default=None, max_length=16, description="Objects made for the current revision.")
    progress: Optional[WorkloadProgress] = Field(default=None, description="Progress reported by the pod.")
    history: Optional[list[HistoryEntry]] = Field(default=None, max_length=20, description="Recent revisions.")
    startTime: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Start of the current revision.")
    completionTime: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="End of the current revision.")


class ReasoningDatasetStatus(_StatusBase):
    output: Optional[DatasetOutput] = Field(default=None, description="The dataset of the current revision.")
    selected: Optional[int] = Field(default=None, description="Samples selected in the current revision.")
    stageCounts: Optional[list[StageCount]] = Field(default=None, max_length=32, description="Kept and dropped per stage.")


# =============================================================================================
# FineTuneJob
# =============================================================================================


class BaseModelRef(Model):
    name: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="Hub id (e.g. Qwen/Qwen2.5-32B-Instruct), a path inside the pod, or a URI (s3://...)."
    )
    revision: Optional[Annotated[str, Field(max_length=128)]] = Field(default=None, description="Pinned hub revision.")
    volume: Optional[Location] = Field(default=None, description="Volume to mount when name is a path on a claim.")


class DatasetRef(Model):
    name: Name = Field(description="A ReasoningDataset in the same namespace.")
    revision: Optional[Annotated[str, Field(max_length=64)]] = Field(
        default=None, description="Pin to this dataset revision instead of following the current one."
    )


class LoraSpec(Model):
    rank: Optional[int] = Field(default=None, ge=1, le=1024, description="LoRA rank (default 64).")
    alpha: Optional[int] = Field(default=None, ge=1, le=4096, description="LoRA alpha (default 128).")
    dropout: Optional[Decimal] = Field(default=None, description="LoRA dropout (default \"0\", LLaMA-Factory's).")
    targetModules: Optional[list[Annotated[str, Field(max_length=64)]]] = Field(
        default=None, max_length=32, description="Modules to adapt (default all linear layers)."
    )


class Hyperparameters(Model):
    """Overrides of the preset; unset values come from the preset."""

    learningRate: Optional[Decimal] = Field(default=None, description="Peak learning rate, e.g. \"5e-6\".")
    epochs: Optional[int] = Field(default=None, ge=1, le=1000, description="Training epochs.")
    scheduler: Optional[Literal["cosine", "linear", "constant"]] = Field(default=None, description="Learning-rate schedule.")
    warmupRatio: Optional[Decimal] = Field(default=None, description="Share of steps spent warming up.")
    maxLength: Optional[int] = Field(default=None, ge=16, le=1048576, description="Maximum tokens per sample.")
    globalBatchSize: Optional[int] = Field(default=None, ge=1, le=65536, description="Samples per optimizer step.")
    microBatchSize: Optional[int] = Field(default=None, ge=1, le=1024, description="Samples per device per forward pass.")
    weightDecay: Optional[Decimal] = Field(default=None, description="AdamW weight decay.")
    maxGradNorm: Optional[Decimal] = Field(default=None, description="Gradient clipping norm.")
    seed: Optional[int] = Field(default=None, ge=0, description="Seed of data order and initialisation.")
    overlong: Optional[Literal["drop", "truncate"]] = Field(
        default=None, description="What to do with samples over maxLength (limo, sky-t1: truncate, as LLaMA-Factory's cutoff_len; none: drop)."
    )
    lossNormalisation: Optional[Literal["token", "sample"]] = Field(
        default=None,
        description="token: mean over every target token of the global batch; sample: mean of each sample's token mean "
        "(limo, sky-t1: sample, as their pinned LLaMA-Factory with one sample per device; none: token). sample needs microBatchSize 1.",
    )


class DeepSpeedSpec(Model):
    zeroStage: Optional[Literal[0, 1, 2, 3]] = Field(default=None, description="ZeRO stage (default 3).")
    offloadOptimizer: Optional[bool] = Field(default=None, description="Offload optimizer state to CPU.")
    offloadParams: Optional[bool] = Field(default=None, description="Offload parameters to CPU (stage 3).")


class CheckpointPolicy(Model):
    everyEpochs: Optional[int] = Field(default=None, ge=1, description="Checkpoint every N epochs (default 1).")
    everySteps: Optional[int] = Field(default=None, ge=1, description="Checkpoint every N optimizer steps (instead of epochs).")
    keep: Optional[int] = Field(
        default=None, ge=0, le=1000,
        description="Keep the last K checkpoints; 0 keeps every one (default: limo and sky-t1 keep every one, none keeps 3).",
    )


class FineTuneJobSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.datasetRef) != has(self.dataset)", "message": "set exactly one of datasetRef or dataset"},
                {"rule": "!has(self.lora) || (has(self.method) && self.method == 'lora')", "message": "lora is only allowed with method: lora"},
            ]
        }
    )

    baseModel: BaseModelRef = Field(description="The model to fine-tune.")
    datasetRef: Optional[DatasetRef] = Field(default=None, description="Train on this ReasoningDataset's output.")
    dataset: Optional[Location] = Field(default=None, description="Train on a dataset directory written earlier.")
    method: Literal["full", "lora"] = Field(default="full", description="Full-parameter SFT or LoRA.")
    lora: Optional[LoraSpec] = Field(default=None, description="LoRA parameters (method: lora).")
    preset: Optional[Literal["limo", "sky-t1", "none"]] = Field(default=None, description="Recipe defaults (default limo).")
    hyperparameters: Optional[Hyperparameters] = Field(default=None, description="Overrides of the preset.")
    deepspeed: Optional[DeepSpeedSpec] = Field(default=None, description="DeepSpeed ZeRO settings.")
    attention: Optional[Literal["flash_attention_2", "sdpa", "eager"]] = Field(
        default=None, description="Attention kernel (default flash_attention_2; sdpa where it is unsupported)."
    )
    packing: Optional[bool] = Field(default=None, description="Padding-free packing of samples (default true).")
    gradientCheckpointing: Optional[bool] = Field(default=None, description="Recompute activations (default true).")
    systemPrompt: Optional[LongText] = Field(default=None, description="System prompt (default LIMO's).")
    chatTemplate: Optional[Annotated[str, Field(max_length=32768)]] = Field(
        default=None, description="Jinja chat template overriding the tokenizer's."
    )
    numNodes: Optional[int] = Field(default=None, ge=1, le=256, description="Pods (nodes) of the job (default 1).")
    gpusPerNode: Optional[int] = Field(default=None, ge=0, le=16, description="GPUs (processes) per node (default 8).")
    checkpoints: Optional[CheckpointPolicy] = Field(default=None, description="Checkpoint policy.")
    output: Location = Field(description="Where checkpoints and the final model go; each revision in its own directory.")
    retrainPolicy: Optional[Literal["OnDatasetChange", "Manual"]] = Field(
        default=None, description="Start a new run when the dataset gets a new revision (default OnDatasetChange)."
    )
    resources: Optional[Resources] = Field(default=None, description="Compute for the training pods.")
    backoffLimit: Optional[int] = Field(default=None, ge=0, le=100, description="Pod retries (resume from checkpoint) (default 3).")
    activeDeadlineSeconds: Optional[int] = Field(default=None, ge=1, description="Deadline of the training Job.")
    suspend: Optional[bool] = Field(default=None, description="Do not start (or stop) training.")


class TrainingProgress(WorkloadProgress):
    step: Optional[int] = Field(default=None, description="Optimizer step.")
    totalSteps: Optional[int] = Field(default=None, description="Optimizer steps in the run.")
    epoch: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Fractional epoch.")
    loss: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Latest training loss.")
    learningRate: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Current learning rate.")
    tokensPerSecond: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Throughput.")
    mfu: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Estimated model FLOPs utilisation.")
    etaSeconds: Optional[int] = Field(default=None, description="Estimated seconds left.")


class FineTuneJobStatus(_StatusBase):
    datasetRevision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Dataset revision trained on.")
    datasetLocation: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Dataset directory trained on.")
    modelLocation: Optional[Annotated[str, Field(max_length=1024)]] = Field(
        default=None, description="The latest final model directory (kept while a newer revision trains)."
    )
    modelRevision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Revision that wrote modelLocation.")
    latestCheckpoint: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Latest complete checkpoint.")
    lastLoss: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Latest reported loss.")
    droppedSamples: Optional[int] = Field(default=None, description="Samples dropped or truncated for length.")


# =============================================================================================
# EvalRun
# =============================================================================================


class EvalModelRef(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.fineTuneJob), has(self.name), has(self.endpoint)].filter(x, x).size() == 1",
                    "message": "exactly one of fineTuneJob, name or endpoint must be set",
                }
            ]
        }
    )

    fineTuneJob: Optional[Name] = Field(default=None, description="Evaluate the model this FineTuneJob produced.")
    name: Optional[Annotated[str, Field(max_length=512)]] = Field(default=None, description="Hub id, path or URI of a model.")
    volume: Optional[Location] = Field(default=None, description="Volume to mount when name is a path on a claim.")
    endpoint: Optional[ModelEndpoint] = Field(default=None, description="Evaluate an already-served model.")
    servedModelName: Optional[Annotated[str, Field(max_length=253)]] = Field(
        default=None, description="Model name in API requests (default: the resource name)."
    )


class BenchmarkSpec(Model):
    name: Benchmark = Field(description="Benchmark of the registry: aime24, aime25, math500, amc23, olympiadbench, gpqa-diamond, minerva-math, gsm8k.")
    samples: Optional[int] = Field(default=None, ge=1, le=1024, description="Samples per problem.")
    temperature: Optional[Decimal] = Field(default=None, description="Sampling temperature.")
    topP: Optional[Decimal] = Field(default=None, description="Nucleus sampling.")
    maxTokens: Optional[int] = Field(default=None, ge=1, le=262144, description="Maximum new tokens.")
    seed: Optional[int] = Field(default=None, ge=0, description="Sampling seed.")
    path: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Load the problems from this file instead of the hub.")
    limit: Optional[int] = Field(default=None, ge=1, description="Evaluate only the first N problems.")


class ServingSpec(Model):
    enabled: Optional[bool] = Field(default=None, description="Serve the model with vLLM (default true).")
    replicas: Optional[int] = Field(default=None, ge=0, le=64, description="Server replicas (default 1).")
    tensorParallelSize: Optional[int] = Field(default=None, ge=1, le=16, description="GPUs per replica (default 1).")
    maxModelLen: Optional[int] = Field(default=None, ge=256, le=1048576, description="Maximum context length.")
    dtype: Optional[Literal["auto", "bfloat16", "float16", "float32"]] = Field(default=None, description="Weights dtype (default auto).")
    keepAfterEval: Optional[bool] = Field(default=None, description="Keep serving after the benchmark finished (default true).")
    resources: Optional[Resources] = Field(default=None, description="Compute for the server pods.")


class Gate(Model):
    benchmark: Benchmark = Field(description="Benchmark the gate applies to.")
    minScore: Decimal = Field(description="Minimum pass@1 (0 to 1), e.g. \"0.5\".")


class EvalRunSpec(Model):
    model: EvalModelRef = Field(description="What to evaluate.")
    protocol: Optional[Literal["limo", "skythought", "custom"]] = Field(
        default=None, description="Sampling preset (default limo); per-benchmark fields override it."
    )
    benchmarks: list[BenchmarkSpec] = Field(min_length=1, max_length=32, description="Benchmarks to run.")
    systemPrompt: Optional[LongText] = Field(default=None, description="System prompt (default LIMO's).")
    backend: Optional[Literal["server", "offline"]] = Field(
        default=None, description="Generate through the served endpoint (default) or vLLM offline in the Job."
    )
    concurrency: Optional[int] = Field(default=None, ge=1, le=4096, description="Requests in flight (default 64).")
    serving: Optional[ServingSpec] = Field(default=None, description="The vLLM server.")
    output: Optional[Location] = Field(
        default=None, description="Where responses and reports go (default: next to the FineTuneJob's model)."
    )
    gates: Optional[list[Gate]] = Field(default=None, max_length=32, description="Minimum scores; all must pass for Passed=True.")
    resources: Optional[Resources] = Field(default=None, description="Compute for the benchmark Job.")
    backoffLimit: Optional[int] = Field(default=None, ge=0, le=100, description="Pod retries (default 2).")
    activeDeadlineSeconds: Optional[int] = Field(default=None, ge=1, description="Deadline of the benchmark Job.")
    suspend: Optional[bool] = Field(default=None, description="Do not start (or stop) the evaluation.")


class BenchmarkResult(Model):
    benchmark: Annotated[str, Field(max_length=63)] = Field(description="Benchmark name.")
    score: Annotated[str, Field(max_length=16)] = Field(description="pass@1 (mean over all samples).")
    problems: Optional[int] = Field(default=None, description="Problems evaluated.")
    samples: Optional[int] = Field(default=None, description="Samples per problem.")
    truncated: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Share cut at the token limit.")


class GateResult(Model):
    benchmark: Annotated[str, Field(max_length=63)] = Field(description="Benchmark name.")
    minScore: Annotated[str, Field(max_length=32)] = Field(description="Threshold.")
    score: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Score reached.")
    passed: bool = Field(description="Whether the gate passed.")


class EvalRunStatus(_StatusBase):
    modelRevision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Revision of the evaluated model.")
    modelLocation: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Evaluated model directory.")
    endpoint: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="OpenAI-compatible URL of the served model.")
    results: Optional[list[BenchmarkResult]] = Field(default=None, max_length=32, description="Scores per benchmark.")
    gates: Optional[list[GateResult]] = Field(default=None, max_length=32, description="Gate outcomes.")
    accuracy: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Mean pass@1 over benchmarks.")


# =============================================================================================
# The kinds
# =============================================================================================


class Resource(Model):
    """Common shape of a custom resource as the API server returns it."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    kind_name: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[list[str]]
    spec_model: ClassVar[type[Model]]
    status_model: ClassVar[type[Model]]
    printer_columns: ClassVar[list[dict[str, Any]]]

    apiVersion: str = "reasonops.io/v1alpha1"
    kind: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


_READY_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason"},
    {"name": "Revision", "type": "string", "jsonPath": ".status.revision"},
]
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


class ReasoningDataset(Resource):
    """Curates a small, verified, long chain-of-thought dataset from problem pools."""

    kind_name = "ReasoningDataset"
    plural = "reasoningdatasets"
    short_names = ["rds", "rdataset"]
    spec_model = ReasoningDatasetSpec
    status_model = ReasoningDatasetStatus
    printer_columns = _READY_COLUMNS + [
        {"name": "Selected", "type": "integer", "jsonPath": ".status.selected", "description": "Samples selected"},
        _AGE,
    ]
    kind: str = "ReasoningDataset"
    spec: ReasoningDatasetSpec
    status: Optional[ReasoningDatasetStatus] = None


class FineTuneJob(Resource):
    """Fine-tunes a base model on a ReasoningDataset (full SFT with DeepSpeed ZeRO-3, or LoRA)."""

    kind_name = "FineTuneJob"
    plural = "finetunejobs"
    short_names = ["ftj", "ft"]
    spec_model = FineTuneJobSpec
    status_model = FineTuneJobStatus
    printer_columns = _READY_COLUMNS + [
        {"name": "Loss", "type": "string", "jsonPath": ".status.lastLoss", "description": "Last training loss"},
        _AGE,
    ]
    kind: str = "FineTuneJob"
    spec: FineTuneJobSpec
    status: Optional[FineTuneJobStatus] = None


class EvalRun(Resource):
    """Serves a model with an OpenAI-compatible API and benchmarks it, with pass/fail gates."""

    kind_name = "EvalRun"
    plural = "evalruns"
    short_names = ["er", "eval"]
    spec_model = EvalRunSpec
    status_model = EvalRunStatus
    printer_columns = _READY_COLUMNS + [
        {"name": "Accuracy", "type": "string", "jsonPath": ".status.accuracy", "description": "Mean pass@1"},
        {"name": "Passed", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Passed\")].status"},
        _AGE,
    ]
    kind: str = "EvalRun"
    spec: EvalRunSpec
    status: Optional[EvalRunStatus] = None


KINDS: dict[str, type[Resource]] = {k.kind_name: k for k in (ReasoningDataset, FineTuneJob, EvalRun)}
