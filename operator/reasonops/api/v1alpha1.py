"""The reasonops.io/v1alpha1 API: ReasoningDataset, FineTuneJob and EvalRun.

This module is the single definition of the API. The CRDs in crds/ and in the Helm chart are
generated from it (`reasonops crds`), the operator validates and resolves specs with it, and the
workloads read their configuration through it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import ConfigDict, Field, field_validator

from .common import (
    ChildRef,
    Condition,
    CpuQuantity,
    Fraction,
    HistoryEntry,
    Location,
    LongText,
    Model,
    Name,
    NonNegativeDecimal,
    ObjectMeta,
    PositiveDecimal,
    Resources,
    Rule,
    SecretKeyRef,
    ShortText,
    Temperature,
    TopP,
    TrainingResources,
    at_most_one,
    decimal_in,
    defaulted,
    exactly_one,
)

LIMO_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

# --- static defaults, named once (crdgen states them in the CRD, resolve_defaults applies them) ----
SANDBOX_REPLICAS = 1
DATASET_SHARDS = 1
SERVING_ENGINE = "vllm"
SANDBOX_CPU = "2"
SANDBOX_MEMORY = "4Gi"
SANDBOX_MEMORY_MB = 1024
ENDPOINT_CONCURRENCY = 64
ENDPOINT_TIMEOUT_SECONDS = 3600
ENDPOINT_MAX_RETRIES = 5
TENSOR_PARALLEL_SIZE = 1
SAMPLING_TEMPERATURE = "0.6"  # curation sampling: LIMO's sampled-generation settings
SAMPLING_TOP_P = "0.95"
SAMPLING_MAX_TOKENS = 16384
HUB_SPLIT = "train"
DEDUPE_THRESHOLD = "0.6"
DEDUPE_SHINGLE_SIZE = 2
DEDUPE_NUM_PERM = 128
DECONTAMINATE_NGRAM = 13
DECONTAMINATE_THRESHOLD = "0.5"
CHAINS_PER_PROBLEM = 4
PERTURBATION_FRACTION = "0.67"
PERTURBATION_SEED = 0
DATASET_BACKOFF_LIMIT = 2
LORA_RANK = 64
LORA_ALPHA = 128
LORA_DROPOUT = "0"
TRAINING_SEED = 42
ZERO_STAGE = 3
CHECKPOINT_EVERY_EPOCHS = 1  # unless everySteps is set
METHOD = "full"
PRESET = "limo"
ATTENTION = "flash_attention_2"
NUM_NODES = 1
RETRAIN_POLICY = "OnDatasetChange"
FINETUNE_BACKOFF_LIMIT = 3
PROTOCOL = "limo"
BACKEND = "server"
EVAL_BACKOFF_LIMIT = 2
SERVING_REPLICAS = 1
SERVING_DTYPE = "auto"
MAX_CHECKPOINTS = 64  # checkpoints listed in a status (the newest); status must stay small

Benchmark = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
IsoDate = Annotated[str, Field(max_length=10, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
Memory = Annotated[str, Field(max_length=16, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")]


class SandboxSpec(Model):
    """Where model-written programs run. In a cluster: a separate execution Deployment and Service for this
    resource (no ServiceAccount token, read-only root, no capabilities, no egress); locally: bubblewrap."""

    runtimeClassName: Optional[Name] = Field(default=None, description="RuntimeClass of the sandbox pods, e.g. gvisor or kata.")
    replicas: Optional[int] = defaulted(SANDBOX_REPLICAS, "Sandbox pods.", ge=1, le=64)
    cpu: Optional[CpuQuantity] = defaulted(SANDBOX_CPU, "CPU request and limit per sandbox pod.")
    memory: Optional[Memory] = defaulted(SANDBOX_MEMORY, "Memory request and limit per sandbox pod.")
    timeoutSeconds: Optional[PositiveDecimal] = Field(default=None, description="Wall-clock limit per test case (default: the protocol's, 6 s).")
    memoryMB: Optional[int] = defaulted(SANDBOX_MEMORY_MB, "Address-space limit per test case, in MiB.", ge=64, le=65536)

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
    concurrency: Optional[int] = defaulted(ENDPOINT_CONCURRENCY, "Requests in flight.", ge=1, le=4096)
    timeoutSeconds: Optional[int] = defaulted(ENDPOINT_TIMEOUT_SECONDS, "Per-request timeout.", ge=1, le=86400)
    maxRetries: Optional[int] = defaulted(ENDPOINT_MAX_RETRIES, "Retries of transient errors.", ge=0, le=20)


class SamplerModel(Model):
    """A model that generates: in the pod with vLLM (default), or through an OpenAI-compatible endpoint."""

    rules = (at_most_one("endpoint", "endpoints", "evalRun", message="set at most one of endpoint, endpoints or evalRun"),)

    model: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="Hub id, path or URI of the weights (vLLM in the pod), or the served model name (endpoint)."
    )
    endpoint: Optional[ModelEndpoint] = Field(default=None, description="Use this OpenAI-compatible endpoint.")
    endpoints: Optional[list[ModelEndpoint]] = Field(
        default=None, min_length=1, max_length=64,
        description="Replicas serving the same model: requests are spread over them (each with its own concurrency).",
    )
    evalRun: Optional[Name] = Field(
        default=None, description="Use the endpoint served by this EvalRun (same namespace)."
    )
    tensorParallelSize: Optional[int] = defaulted(TENSOR_PARALLEL_SIZE, "vLLM tensor parallel size.", ge=1, le=16)
    maxModelLen: Optional[int] = Field(default=None, ge=256, le=1048576, description="vLLM maximum context length.")


class SamplingParams(Model):
    temperature: Optional[Temperature] = defaulted(SAMPLING_TEMPERATURE, "Sampling temperature, 0 to 2.")
    topP: Optional[TopP] = defaulted(SAMPLING_TOP_P, "Nucleus sampling: the probability mass kept, above 0 and at most 1.")
    maxTokens: Optional[int] = defaulted(SAMPLING_MAX_TOKENS, "Maximum new tokens per response.", ge=1, le=262144)
    seed: Optional[int] = Field(default=None, ge=0, description="Sampling seed.")


# =============================================================================================
# Exports: a copy of a dataset or final model in an S3-compatible object store
# =============================================================================================

S3Uri = Annotated[str, Field(max_length=1024, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")]


class ObjectStoreExport(Model):
    """Publish the result of each succeeded revision to <uri>/<name>/<revision>/ in an S3-compatible store.
    Credentials are keys of Secrets, put into the pod's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY);
    without them the pod's own credentials apply (e.g. a workload identity)."""

    rules = (
        Rule("has(self.accessKeyIdSecretRef) == has(self.secretAccessKeySecretRef)",
             "accessKeyIdSecretRef and secretAccessKeySecretRef go together",
             lambda m: (m.accessKeyIdSecretRef is None) == (m.secretAccessKeySecretRef is None), field=".accessKeyIdSecretRef"),
    )

    uri: S3Uri = Field(description="Bucket and prefix, e.g. s3://team-models/reasoning; each revision goes to <uri>/<name>/<revision>/.")
    accessKeyIdSecretRef: Optional[SecretKeyRef] = Field(default=None, description="Secret key holding the access key id.")
    secretAccessKeySecretRef: Optional[SecretKeyRef] = Field(default=None, description="Secret key holding the secret access key.")
    endpointUrl: Optional[Annotated[str, Field(max_length=1024, pattern=r"^https?://[^/\s]+(/.*)?$")]] = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, Ceph, a cloud's S3 API), e.g. http://minio.storage:9000."
    )
    region: Optional[Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")]] = Field(
        default=None, description="Region of the bucket, e.g. eu-west-1."
    )


# =============================================================================================
# Experiment tracking (every kind): MLflow, TensorBoard, Weights & Biases
# =============================================================================================

WANDB_MODE = "online"
HttpUrl = Annotated[
    str, Field(max_length=1024, pattern=r"^https?://\S+$"),
    Rule("!self.matches('^https?://[^/]*@')", "must not carry credentials (user:password@): Secrets are referenced, never inlined",
         lambda url: re.match(r"^https?://[^/]*@", url) is None),
]


class MlflowTracking(Model):
    """An MLflow tracking server. Credentials only by Secret reference: a token (MLFLOW_TRACKING_TOKEN in the
    pods), or a username and password (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)."""

    rules = (
        Rule("!has(self.tokenSecretRef) || (!has(self.usernameSecretRef) && !has(self.passwordSecretRef))",
             "set tokenSecretRef or usernameSecretRef and passwordSecretRef, not both",
             lambda m: m.tokenSecretRef is None or (m.usernameSecretRef is None and m.passwordSecretRef is None),
             field=".tokenSecretRef"),
        Rule("has(self.usernameSecretRef) == has(self.passwordSecretRef)",
             "usernameSecretRef and passwordSecretRef are set together (basic authentication needs both)",
             lambda m: (m.usernameSecretRef is None) == (m.passwordSecretRef is None), field=".passwordSecretRef"),
    )

    trackingUri: HttpUrl = Field(description="URL of the tracking server, e.g. http://mlflow.mlops.svc:5000.")
    experiment: Annotated[str, Field(min_length=1, max_length=256)] = Field(
        description="Experiment the runs are logged to (created when missing)."
    )
    tokenSecretRef: Optional[SecretKeyRef] = Field(
        default=None, description="Secret key holding a bearer token (MLFLOW_TRACKING_TOKEN in the pods)."
    )
    usernameSecretRef: Optional[SecretKeyRef] = Field(
        default=None, description="Secret key holding the basic-authentication username (MLFLOW_TRACKING_USERNAME)."
    )
    passwordSecretRef: Optional[SecretKeyRef] = Field(
        default=None, description="Secret key holding the basic-authentication password (MLFLOW_TRACKING_PASSWORD)."
    )


class TensorBoardTracking(Model):
    """TensorBoard event files, written under the run's output (its tensorboard/ directory)."""

    enabled: Optional[bool] = defaulted(True, "Write the event files.")


class WandbTracking(Model):
    """Weights & Biases. online: to the server, the API key by Secret reference (WANDB_API_KEY in the pods);
    offline: the run's files under the run's output (wandb/), for `wandb sync` later."""

    rules = (
        Rule("(has(self.mode) && self.mode == 'offline') || has(self.apiKeySecretRef)",
             "mode online needs apiKeySecretRef (the API key, WANDB_API_KEY in the pods); use mode: offline without one",
             lambda m: m.mode == "offline" or m.apiKeySecretRef is not None, field=".apiKeySecretRef"),
    )

    project: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^/\\#?%:]+$")] = Field(
        description="Project the runs are logged to."
    )
    entity: Optional[Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^/\\#?%:]+$")]] = Field(
        default=None, description="Team or user owning the project (default: the API key's user)."
    )
    apiKeySecretRef: Optional[SecretKeyRef] = Field(
        default=None, description="Secret key holding the API key (WANDB_API_KEY in the pods); required in mode online."
    )
    mode: Optional[Literal["online", "offline"]] = defaulted(WANDB_MODE, "online: log to the server; offline: files only.")
    baseUrl: Optional[HttpUrl] = Field(default=None, description="URL of a self-hosted W&B server (default: W&B's cloud).")


class Tracking(Model):
    """Experiment tracking of the revision's run: training steps, benchmark scores, the curation funnel.

    Only the reporting process logs (rank 0). Runs of one chain carry tags naming the resources and
    revisions (reasonops.io/dataset, reasonops.io/finetunejob, reasonops.io/evalrun, ...). Editing this
    section makes no new revision."""

    rules = (
        Rule("has(self.mlflow) || has(self.tensorboard) || has(self.wandb)",
             "set at least one of mlflow, tensorboard or wandb",
             lambda m: m.mlflow is not None or m.tensorboard is not None or m.wandb is not None),
    )

    mlflow: Optional[MlflowTracking] = Field(default=None, description="An MLflow tracking server.")
    tensorboard: Optional[TensorBoardTracking] = Field(default=None, description="TensorBoard event files in the output.")
    wandb: Optional[WandbTracking] = Field(default=None, description="Weights & Biases.")


# =============================================================================================
# ReasoningDataset
# =============================================================================================


class HubSource(Model):
    id: Annotated[str, Field(min_length=1, max_length=256)] = Field(description="Hub dataset id, e.g. GAIR/LIMO.")
    config: Optional[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default=None, description="Dataset configuration.")
    split: Annotated[str, Field(max_length=128)] = Field(default=HUB_SPLIT, description="Split to load.")
    revision: Optional[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default=None, description="Pinned revision (commit or tag) so upstream changes cannot move the data."
    )


SOLUTION_SEPARATOR = "\n\n"  # between the parts of a chain joined from several columns

# A column of a row, or a path into nested fields: `conversations[0].value`, `metadata.answer`.
ColumnPath = Annotated[str, Field(min_length=1, max_length=128)]


class FieldMapping(Model):
    """Which columns of a row hold what. A column may be a path to a nested field (`conversations[0].value`);
    a named column that a row lacks drops that row with a reason naming it."""

    rules = (at_most_one("solution", "solutionParts", message="set at most one of solution and solutionParts"),)

    question: Optional[ColumnPath] = Field(default=None, description="Column of the problem.")
    solution: Optional[ColumnPath] = Field(default=None, description="Column of the worked solution (the chain).")
    solutionParts: Optional[list[ColumnPath]] = Field(
        default=None, min_length=1, max_length=8,
        description="Columns joined, in order, into the chain, e.g. a thinking trajectory and the attempt after it"
                    " (s1K: [deepseek_thinking_trajectory, deepseek_attempt]); exclusive with solution.",
    )
    separator: Optional[Annotated[str, Field(max_length=64)]] = defaulted(
        SOLUTION_SEPARATOR, "Text between the parts of solutionParts.")
    answer: Optional[ColumnPath] = Field(
        default=None, description="Column of the final answer; when absent, the last \\boxed{} of the solution."
    )
    system: Optional[ColumnPath] = Field(
        default=None, description="Column of the row's own system prompt (it replaces the spec's systemPrompt for that row)."
    )
    id: Optional[ColumnPath] = Field(default=None, description="Column of a stable row id.")


class InlineRow(Model):
    question: Annotated[str, Field(min_length=1, max_length=8192)] = Field(description="The problem.")
    solution: Optional[LongText] = Field(default=None, description="A worked solution.")
    answer: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="The final answer.")


class DataSource(Model):
    """One problem pool. Exactly one of hub, path, uri or inline."""

    rules = (exactly_one("hub", "path", "uri", "inline", message="exactly one of hub, path, uri or inline must be set"),)

    name: Name = Field(description="Name of the source, used in reports and the manifest.")
    hub: Optional[HubSource] = Field(default=None, description="A dataset on the Hugging Face hub.")
    path: Optional[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default=None, description="A JSONL, JSON or Parquet file or directory (volume mount or laptop path)."
    )
    uri: Optional[Annotated[str, Field(max_length=1024, pattern=r"^[a-z0-9+.-]+://.+")]] = Field(
        default=None, description="An fsspec URI such as s3://bucket/pool.parquet, or pvc://claim/path on a volume claim (mounted)."
    )
    credentialsSecretRef: Optional[Name] = Field(
        default=None, description="Secret whose keys become environment variables of the pod (e.g. AWS_ACCESS_KEY_ID) for uri access."
    )
    inline: Optional[list[InlineRow]] = Field(default=None, max_length=100, description="A short list of rows.")
    format: Optional[Literal["jsonl", "json", "parquet"]] = Field(default=None, description="File format (default: from the name).")
    fields: Optional[FieldMapping] = Field(default=None, description="Column mapping (default: common layouts are detected).")
    limit: Optional[int] = Field(default=None, ge=1, description="Use at most this many rows of the source.")
    codeTests: Optional[Literal["taco", "livecodebench"]] = Field(
        default=None, description="Rows are code problems with tests: TACO/APPS input_output, or LiveCodeBench's test cases."
    )


class DedupeStage(Model):
    threshold: Optional[Fraction] = defaulted(
        DEDUPE_THRESHOLD, "Shingle Jaccard similarity (0 to 1) from which two problems with the same numbers are near-duplicates"
        " (the default catches one- and two-word edits of 20-40-word problems, 923 of 924 on benchmark questions,"
        " with no distinct question dropped).")
    shingleSize: Optional[int] = defaulted(
        DEDUPE_SHINGLE_SIZE, "Word n-gram size of the shingles (problem statements are short: a one-word edit of a"
        " 20-word problem leaves a 5-word-shingle Jaccard of only about 0.6).", ge=1, le=32)
    numPerm: Optional[int] = defaulted(DEDUPE_NUM_PERM, "MinHash permutations.", ge=16, le=1024)


class DecontaminateStage(Model):
    benchmarks: list[Benchmark] = Field(
        min_length=1, max_length=32, description="Benchmarks of the registry to check against, e.g. aime24, math500."
    )
    ngram: Optional[int] = defaulted(DECONTAMINATE_NGRAM, "Word n-gram size.", ge=3, le=64)
    threshold: Optional[Fraction] = defaulted(
        DECONTAMINATE_THRESHOLD, "Share (0 to 1) of a problem's n-grams found in a benchmark item that marks it contaminated."
    )
    benchmarkPath: Optional[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(
        default=None, description="Directory holding <benchmark>.jsonl files (instead of the hub)."
    )


class DifficultyStage(Model):
    """Sample attempts per problem and keep problems whose number of solved attempts lies in [minSolved, maxSolved]."""

    rules = (
        Rule("self.minSolved <= self.maxSolved", "minSolved must not exceed maxSolved",
             lambda m: m.minSolved <= m.maxSolved, field=".minSolved"),
        Rule("self.maxSolved <= self.attempts", "maxSolved must not exceed attempts",
             lambda m: m.maxSolved <= m.attempts, field=".maxSolved"),
    )

    sampler: SamplerModel = Field(description="The model that attempts the problems.")
    attempts: int = Field(ge=1, le=256, description="Attempts per problem (LIMO: 4 coarse, 32 fine).")
    minSolved: int = Field(ge=0, le=256, description="Keep problems solved at least this many times.")
    maxSolved: int = Field(ge=0, le=256, description="Keep problems solved at most this many times.")
    sampling: Optional[SamplingParams] = defaulted({}, "Sampling parameters of the attempts.")


class Teacher(Model):
    name: Name = Field(description="Label recorded with every chain this teacher produced.")
    sampler: SamplerModel = Field(description="The teacher model.")


class GenerateStage(Model):
    """Generate reasoning chains and keep those whose final answer is correct (rejection sampling)."""

    teachers: list[Teacher] = Field(min_length=1, max_length=8, description="Teacher models.")
    chainsPerProblem: Optional[int] = defaulted(CHAINS_PER_PROBLEM, "Chains per problem and teacher.", ge=1, le=64)
    sampling: Optional[SamplingParams] = defaulted({}, "Sampling parameters of the chains.")
    keepIncorrect: Optional[bool] = defaulted(False, "Keep chains with a wrong answer (for ablations).")


class KeywordWeight(Model):
    name: Literal["elaboration", "verification", "exploration", "granularity"] = Field(description="Score component.")
    weight: NonNegativeDecimal = Field(description="Weight of the component (0 or more), e.g. \"0.3\"; \"0\" switches it off.")
    keywords: Optional[list[Annotated[str, Field(min_length=1, max_length=64)]]] = Field(
        default=None, max_length=64, description="Keywords counted for the component (elaboration counts length)."
    )


class ScoreStage(Model):
    """LIMO's rule-based chain score; the best chain per problem is kept."""

    components: Optional[list[KeywordWeight]] = Field(
        default=None, max_length=4, description="Weights and keywords (default: LIMO's weights 0.3, 0.2, 0.25, 0.25 and keywords)."
    )


class SelectStage(Model):
    size: int = Field(ge=1, le=1000000, description="Keep the top N problems by chain score.")


class Stage(Model):
    """One curation stage. Exactly one of dedupe, decontaminate, difficulty, generate, score or select."""

    rules = (
        exactly_one("dedupe", "decontaminate", "difficulty", "generate", "score", "select",
                    message="a stage sets exactly one of dedupe, decontaminate, difficulty, generate, score or select"),
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
    fraction: Optional[Fraction] = defaulted(PERTURBATION_FRACTION, "Share (0 to 1) of steps, keywords or digits affected.")
    seed: Optional[int] = defaulted(PERTURBATION_SEED, "Random seed.", ge=0)


class ReasoningDatasetSpec(Model):
    sources: list[DataSource] = Field(min_length=1, max_length=32, description="Problem pools, loaded in order.")
    fields: Optional[FieldMapping] = Field(default=None, description="Default column mapping for every source.")
    stages: Optional[list[Stage]] = Field(default=None, max_length=16, description="Curation stages, run in this order.")
    perturbations: Optional[list[Perturbation]] = Field(
        default=None, max_length=8, description="Perturbed variants of the result, for ablations."
    )
    systemPrompt: Optional[LongText] = defaulted(LIMO_SYSTEM_PROMPT, "System turn of every sample.")
    tokenizer: Optional[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        default=None, description="Tokenizer (hub id or path) for the token-length statistics of the manifest."
    )
    hubTokenSecretRef: Optional[SecretKeyRef] = Field(
        default=None, description="Secret key holding a Hugging Face token (HF_TOKEN in the pods) for gated models and datasets."
    )
    output: Location = Field(description="Where the dataset is written; each revision in its own directory.")
    export: Optional[ObjectStoreExport] = Field(default=None, description="Also publish each succeeded revision's dataset to an object store.")
    resources: Optional[Resources] = Field(default=None, description="Compute and pod settings of the curation pods.")
    tracking: Optional[Tracking] = Field(
        default=None, description="Experiment tracking (MLflow, TensorBoard, Weights & Biases); edits make no new revision."
    )
    sandbox: Optional[SandboxSpec] = Field(default=None, description="Execution of code problems' tests.")
    shards: Optional[int] = defaulted(
        DATASET_SHARDS, "Pods that share the model stages: an Indexed Job; each pod samples its shard of the"
        " problems and resumes it after a restart, pod 0 merges and writes the dataset.", ge=1, le=256)
    backoffLimit: Optional[int] = defaulted(DATASET_BACKOFF_LIMIT, "Pod retries before the revision fails.", ge=0, le=100)
    activeDeadlineSeconds: Optional[int] = Field(default=None, ge=1, description="Deadline of the curation Job.")
    suspend: Optional[bool] = defaulted(False, "Do not start (or stop) the curation Job.")


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
    exportLocation: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Where spec.export published it.")


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
    rules = (
        Rule("!has(self.volume) || !(self.name.startsWith('/') || self.name.contains('://'))",
             "with volume, name is a path relative to that location (not absolute, not a URI)",
             lambda m: m.volume is None or not (m.name.startswith("/") or "://" in m.name), field=".name"),
    )

    name: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        description="Hub id (e.g. Qwen/Qwen2.5-32B-Instruct), a path inside the pod, a URI (s3://..., pvc://claim/path), "
        "or with volume, a path relative to that location."
    )
    revision: Optional[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default=None, description="Pinned hub revision.")
    volume: Optional[Location] = Field(default=None, description="The claim location that name is relative to (mounted in the pods).")


class DatasetRef(Model):
    name: Name = Field(description="A ReasoningDataset in the same namespace.")
    revision: Optional[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default=None, description="Pin to this dataset revision instead of following the current one."
    )


class LoraSpec(Model):
    rank: Optional[int] = defaulted(LORA_RANK, "LoRA rank.", ge=1, le=1024)
    alpha: Optional[int] = defaulted(LORA_ALPHA, "LoRA alpha.", ge=1, le=4096)
    dropout: Optional[decimal_in(0, 1, high_open=True)] = defaulted(LORA_DROPOUT, "LoRA dropout probability, at least 0 and below 1.")
    targetModules: Optional[list[Annotated[str, Field(max_length=64)]]] = Field(
        default=None, max_length=32, description="Modules to adapt (default: all linear layers)."
    )


class Hyperparameters(Model):
    """Overrides of the preset; unset values come from the preset."""

    rules = (
        Rule("!has(self.microBatchSize) || !has(self.globalBatchSize) || self.microBatchSize <= self.globalBatchSize",
             "microBatchSize must not exceed globalBatchSize",
             lambda m: m.microBatchSize is None or m.globalBatchSize is None or m.microBatchSize <= m.globalBatchSize,
             field=".microBatchSize"),
    )

    learningRate: Optional[PositiveDecimal] = Field(default=None, description="Peak learning rate (above 0), e.g. \"5e-6\" (default: the preset's).")
    epochs: Optional[int] = Field(default=None, ge=1, le=1000, description="Training epochs (default: the preset's).")
    scheduler: Optional[Literal["cosine", "linear", "constant"]] = Field(default=None, description="Learning-rate schedule (default: the preset's).")
    warmupRatio: Optional[Fraction] = Field(default=None, description="Share of steps (0 to 1) spent warming up (default: the preset's).")
    maxLength: Optional[int] = Field(default=None, ge=16, le=1048576, description="Maximum tokens per sample (default: the preset's).")
    globalBatchSize: Optional[int] = Field(default=None, ge=1, le=65536, description="Samples per optimizer step (default: the preset's).")
    microBatchSize: Optional[int] = Field(default=None, ge=1, le=1024, description="Samples per device per forward pass (default: the preset's).")
    weightDecay: Optional[NonNegativeDecimal] = Field(default=None, description="AdamW weight decay, 0 or more (default: the preset's).")
    maxGradNorm: Optional[PositiveDecimal] = Field(default=None, description="Gradient clipping norm, above 0 (default: the preset's).")
    seed: Optional[int] = defaulted(TRAINING_SEED, "Seed of data order and initialisation.", ge=0)
    overlong: Optional[Literal["drop", "truncate"]] = Field(
        default=None, description="What to do with samples over maxLength (default: the preset's; limo, sky-t1: truncate, as LLaMA-Factory's cutoff_len; none: drop)."
    )
    lossNormalisation: Optional[Literal["token", "sample"]] = Field(
        default=None,
        description="token: mean over every target token of the global batch; sample: mean of each sample's token mean "
        "(default: the preset's; limo, sky-t1: sample, as their pinned LLaMA-Factory with one sample per device; none: token). sample needs microBatchSize 1.",
    )


class DeepSpeedSpec(Model):
    rules = (
        Rule("!has(self.offloadParams) || !self.offloadParams || !has(self.zeroStage) || self.zeroStage == 3",
             "offloadParams needs zeroStage 3", lambda m: not m.offloadParams or m.zeroStage in (None, 3),
             field=".offloadParams"),
        Rule("!has(self.offloadOptimizer) || !self.offloadOptimizer || !has(self.zeroStage) || self.zeroStage > 0",
             "offloadOptimizer needs zeroStage 1, 2 or 3", lambda m: not m.offloadOptimizer or m.zeroStage != 0,
             field=".offloadOptimizer"),
    )

    zeroStage: Optional[Literal[0, 1, 2, 3]] = defaulted(ZERO_STAGE, "ZeRO stage.")
    offloadOptimizer: Optional[bool] = Field(
        default=None, description="Offload optimizer state to CPU (stage 1 to 3; default: the preset's, true for sky-t1 at ZeRO-3).")
    offloadParams: Optional[bool] = Field(
        default=None, description="Offload parameters to CPU (stage 3; default: the preset's, true for sky-t1).")


class CheckpointPolicy(Model):
    rules = (at_most_one("everyEpochs", "everySteps", message="set at most one of everyEpochs or everySteps"),)

    everyEpochs: Optional[int] = Field(
        default=None, ge=1, description=f"Checkpoint every N epochs (default: {CHECKPOINT_EVERY_EPOCHS} unless everySteps is set)."
    )
    everySteps: Optional[int] = Field(default=None, ge=1, description="Checkpoint every N optimizer steps (instead of epochs).")
    keep: Optional[int] = Field(
        default=None, ge=0, le=1000,
        description="Keep the last K checkpoints; 0 keeps every one (default: the preset's; limo and sky-t1 keep every one, none keeps 3).",
    )
    export: Optional[bool] = defaulted(
        False, "Also write a servable model (merged safetensors, tokenizer, generation config) into each kept checkpoint,"
        " at checkpoints/step-N/model, pruned with it: what an EvalRun's model.checkpoints evaluates. Off by default:"
        " each export is a full copy of the weights.")


class FineTuneJobSpec(Model):
    rules = (
        Rule("has(self.datasetRef) != has(self.dataset)", "set exactly one of datasetRef or dataset",
             lambda m: (m.datasetRef is None) != (m.dataset is None)),
        Rule("!has(self.lora) || (has(self.method) && self.method == 'lora')", "lora is only allowed with method: lora",
             lambda m: m.lora is None or m.method == "lora"),
        # Several nodes without GPUs is usually a forgotten GPU count; CPU training across nodes (small
        # models, CPU-only test clusters) is asked for by naming its backend.
        Rule("!has(self.numNodes) || self.numNodes <= 1 || (has(self.distributedBackend) && self.distributedBackend == 'gloo') ||"
             " (has(self.gpusPerNode) ? self.gpusPerNode > 0 :"
             " !(has(self.resources) && has(self.resources.gpus) && self.resources.gpus == 0))",
             "numNodes above 1 needs GPUs: gpusPerNode (or resources.gpus) must not be 0, unless distributedBackend is gloo (CPU training)",
             lambda m: (m.numNodes or 1) <= 1 or m.distributedBackend == "gloo"
             or (m.gpusPerNode > 0 if m.gpusPerNode is not None else not (m.resources and m.resources.gpus == 0)),
             field=".numNodes"),
    )

    baseModel: BaseModelRef = Field(description="The model to fine-tune.")
    hubTokenSecretRef: Optional[SecretKeyRef] = Field(
        default=None, description="Secret key holding a Hugging Face token (HF_TOKEN in the pods) for gated models and datasets."
    )
    datasetRef: Optional[DatasetRef] = Field(default=None, description="Train on this ReasoningDataset's output.")
    dataset: Optional[Location] = Field(default=None, description="Train on a dataset directory written earlier.")
    method: Literal["full", "lora"] = Field(default=METHOD, description="Full-parameter SFT or LoRA.")
    lora: Optional[LoraSpec] = Field(default=None, description="LoRA parameters (method: lora).")
    preset: Optional[Literal["limo", "sky-t1", "none"]] = defaulted(PRESET, "Recipe whose hyperparameters apply where unset.")
    hyperparameters: Optional[Hyperparameters] = defaulted({}, "Overrides of the preset.")
    deepspeed: Optional[DeepSpeedSpec] = defaulted({}, "DeepSpeed ZeRO settings.")
    attention: Optional[Literal["flash_attention_2", "sdpa", "eager"]] = defaulted(
        ATTENTION, "Attention kernel (the trainer falls back to sdpa where flash_attention_2 is unsupported)."
    )
    packing: Optional[bool] = defaulted(True, "Padding-free packing of samples.")
    gradientCheckpointing: Optional[bool] = defaulted(True, "Recompute activations.")
    systemPrompt: Optional[LongText] = Field(
        default=None, description="System prompt added to samples without one (default: the preset's: LIMO's, none for sky-t1).")
    chatTemplate: Optional[Annotated[str, Field(max_length=32768)]] = Field(
        default=None, description="Jinja chat template overriding the tokenizer's."
    )
    numNodes: Optional[int] = defaulted(NUM_NODES, "Pods (nodes) of the job.", ge=1, le=256)
    gpusPerNode: Optional[int] = Field(
        default=None, ge=0, le=16,
        description="GPUs (processes) per node (default: resources.gpus, else the operator's default GPUs per node).",
    )
    distributedBackend: Optional[Literal["nccl", "gloo"]] = Field(
        default=None,
        description="torch.distributed backend of the training processes (default: nccl where GPUs are, else gloo).",
    )
    checkpoints: Optional[CheckpointPolicy] = defaulted({}, "Checkpoint policy.")
    output: Location = Field(description="Where checkpoints and the final model go; each revision in its own directory.")
    export: Optional[ObjectStoreExport] = Field(default=None, description="Also publish each succeeded revision's final model to an object store.")
    retrainPolicy: Optional[Literal["OnDatasetChange", "Manual"]] = defaulted(
        RETRAIN_POLICY, "Start a new run when the dataset gets a new revision (OnDatasetChange) or only on spec edits."
    )
    resources: Optional[TrainingResources] = defaulted({}, "Compute and pod settings of the training pods.")
    tracking: Optional[Tracking] = Field(
        default=None, description="Experiment tracking (MLflow, TensorBoard, Weights & Biases); edits make no new revision."
    )
    backoffLimit: Optional[int] = defaulted(FINETUNE_BACKOFF_LIMIT, "Pod retries (each resumes from the latest checkpoint).", ge=0, le=100)
    activeDeadlineSeconds: Optional[int] = Field(default=None, ge=1, description="Deadline of the training Job.")
    suspend: Optional[bool] = defaulted(False, "Do not start (or stop) training.")


class TrainingProgress(WorkloadProgress):
    step: Optional[int] = Field(default=None, description="Optimizer step.")
    totalSteps: Optional[int] = Field(default=None, description="Optimizer steps in the run.")
    epoch: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Fractional epoch.")
    loss: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Latest training loss.")
    learningRate: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Current learning rate.")
    tokensPerSecond: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Throughput.")
    mfu: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Estimated model FLOPs utilisation.")
    etaSeconds: Optional[int] = Field(default=None, description="Estimated seconds left.")


CheckpointSteps = Annotated[
    list[Annotated[int, Field(ge=1)]],
    Field(min_length=1, max_length=MAX_CHECKPOINTS),
    Rule("self.all(s, self.exists_one(t, t == s))", "checkpointSteps lists a step more than once",
         lambda v: len(set(v)) == len(v)),
]


class CheckpointRef(Model):
    """A kept checkpoint with a servable export."""

    name: Annotated[str, Field(max_length=63)] = Field(description="Checkpoint name, e.g. step-40.")
    step: int = Field(description="Optimizer step.")
    epoch: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Epochs completed at the step.")
    location: Annotated[str, Field(max_length=1024)] = Field(description="The servable model directory of the checkpoint.")


class FineTuneJobStatus(_StatusBase):
    progress: Optional[TrainingProgress] = Field(default=None, description="Progress reported by the training pods.")
    datasetRevision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Dataset revision trained on.")
    datasetLocation: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Dataset directory trained on.")
    modelLocation: Optional[Annotated[str, Field(max_length=1024)]] = Field(
        default=None, description="The latest final model directory (kept while a newer revision trains)."
    )
    modelRevision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Revision that wrote modelLocation.")
    exportLocation: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Where spec.export published the model of modelRevision.")
    latestCheckpoint: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Latest complete checkpoint.")
    lastLoss: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Latest reported loss.")
    droppedSamples: Optional[int] = Field(default=None, description="Samples dropped or truncated for length.")
    restarts: Optional[int] = Field(default=None, description="Group restarts: training pods the Job counted as failed, each restarting the group from its latest "
        "checkpoint (peers that failed only because that pod went away, and peers the operator removes, do not count).")
    contextLength: Optional[int] = Field(
        default=None, description="The trained model's context length (from its config.json): an EvalRun's serving.maxModelLen may not exceed it."
    )
    checkpoints: Optional[list[CheckpointRef]] = Field(
        default=None, max_length=MAX_CHECKPOINTS,
        description=f"Kept checkpoints with a servable export (checkpoints.export), oldest first (at most the newest {MAX_CHECKPOINTS}).",
    )


# =============================================================================================
# EvalRun
# =============================================================================================


class EvalModelRef(Model):
    rules = (
        exactly_one("fineTuneJob", "name", "endpoint", "evalRun", message="exactly one of fineTuneJob, name, endpoint or evalRun must be set"),
        Rule("!has(self.checkpoints) || has(self.fineTuneJob)", "checkpoints needs fineTuneJob (whose kept checkpoints are evaluated)",
             lambda m: m.checkpoints is None or m.fineTuneJob is not None, field=".checkpoints"),
        Rule("has(self.checkpointSteps) == (has(self.checkpoints) && self.checkpoints == 'steps')",
             "checkpointSteps is set exactly when checkpoints is steps (it lists the steps to evaluate)",
             lambda m: (m.checkpointSteps is not None) == (m.checkpoints == "steps"), field=".checkpointSteps"),
    )

    fineTuneJob: Optional[Name] = Field(default=None, description="Evaluate the model this FineTuneJob produced.")
    checkpoints: Optional[Literal["all", "steps"]] = Field(
        default=None, description="Evaluate kept checkpoints of the FineTuneJob (it must set checkpoints.export) instead of its final"
        " model, each in its own pod; results per checkpoint go to status.checkpoints. all: every kept checkpoint; steps: those of"
        " checkpointSteps.",
    )
    checkpointSteps: Optional[CheckpointSteps] = Field(
        default=None, description="With checkpoints: steps, the optimizer steps of the kept checkpoints to evaluate, e.g. [200, 400];"
        " a step the FineTuneJob did not keep is an error that names the kept ones.",
    )
    evalRun: Optional[Name] = Field(
        default=None, description="Evaluate the checkpoint this EvalRun selected (its status.selectedCheckpoint), same namespace.",
    )
    name: Optional[Annotated[str, Field(min_length=1, max_length=512)]] = Field(default=None, description="Hub id, path or URI of a model.")
    volume: Optional[Location] = Field(default=None, description="Volume to mount when name is a path on a claim.")
    endpoint: Optional[ModelEndpoint] = Field(default=None, description="Evaluate an already-served model.")
    servedModelName: Optional[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default=None, description="Model name in API requests (default: the resource name)."
    )


class BenchmarkSpec(Model):
    name: Benchmark = Field(description="Benchmark of the registry: aime24, aime25, math500, amc23, olympiadbench, gpqa-diamond, minerva-math, gsm8k; code: livecodebench, livecodebench-v2, humaneval, mbpp, code-demo.")
    samples: Optional[int] = Field(default=None, ge=1, le=1024, description="Samples per problem (default: the protocol's).")
    temperature: Optional[Temperature] = Field(default=None, description="Sampling temperature, 0 to 2 (default: the protocol's).")
    topP: Optional[TopP] = Field(default=None, description="Nucleus sampling, above 0 and at most 1 (default: the protocol's).")
    maxTokens: Optional[int] = Field(default=None, ge=1, le=262144, description="Maximum new tokens (default: the protocol's; 32768 for math, LiveCodeBench's 2000 for its code protocol).")
    seed: Optional[int] = Field(default=None, ge=0, description="Sampling seed (default: the protocol's).")
    path: Optional[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(default=None, description="Load the problems from this file instead of the hub.")
    limit: Optional[int] = Field(default=None, ge=1, description="Evaluate only the first N problems.")
    releasedFrom: Optional[IsoDate] = Field(default=None, description="Only problems released on or after this date (YYYY-MM-DD).")
    releasedUntil: Optional[IsoDate] = Field(default=None, description="Only problems released on or before this date (YYYY-MM-DD).")


class ServingSpec(Model):
    enabled: Optional[bool] = defaulted(True, "Serve the model with vLLM.")
    engine: Optional[Literal["vllm", "cpu"]] = defaulted(
        SERVING_ENGINE, "Server engine: vllm on GPUs (the serve image), or cpu: vLLM's CPU backend (`vllm serve` from the"
        " eval image) for small models on CPU-only nodes, given 5Gi of memory unless resources say otherwise; with"
        " backend: offline, the engine in the benchmark pod."
    )
    replicas: Optional[int] = defaulted(SERVING_REPLICAS, "Server replicas.", ge=0, le=64)
    tensorParallelSize: Optional[int] = defaulted(TENSOR_PARALLEL_SIZE, "GPUs per replica.", ge=1, le=16)
    maxModelLen: Optional[int] = Field(default=None, ge=256, le=1048576, description="Maximum context length.")
    dtype: Optional[Literal["auto", "bfloat16", "float16", "float32"]] = defaulted(SERVING_DTYPE, "Weights dtype.")
    keepAfterEval: Optional[bool] = defaulted(True, "Keep serving after the benchmark finished.")
    resources: Optional[Resources] = Field(default=None, description="Compute and pod settings of the server pods (default: spec.resources).")


Difference = decimal_in(-1, 1)  # a difference of two pass@1 scores


class Gate(Model):
    """An absolute gate (minScore: the score must reach it) or a relative one (baseline and minDifference: this
    run's score minus the baseline EvalRun's, paired over the same problems, must reach minDifference)."""

    rules = (
        Rule("has(self.minScore) != has(self.baseline)",
             "set exactly one of minScore (an absolute gate) or baseline with minDifference (a relative gate)",
             lambda m: (m.minScore is None) != (m.baseline is None), field=".minScore"),
        Rule("has(self.minDifference) == has(self.baseline)",
             "minDifference and baseline go together (a relative gate sets both)",
             lambda m: (m.minDifference is None) == (m.baseline is None), field=".minDifference"),
    )

    benchmark: Benchmark = Field(description="Benchmark the gate applies to.")
    minScore: Optional[Fraction] = Field(default=None, description="Absolute gate: minimum pass@1 (0 to 1), e.g. \"0.5\".")
    baseline: Optional[Name] = Field(
        default=None, description="Relative gate: the EvalRun (same namespace, a single model) whose scores this run must beat on"
        " the benchmark, paired over the same problems under the same protocol. This run starts once the baseline has succeeded.",
    )
    minDifference: Optional[Difference] = Field(
        default=None, description="Relative gate: minimum of this run's pass@1 minus the baseline's (-1 to 1), e.g. \"0.05\";"
        " \"0\" asks for no regression.",
    )
    bound: Optional[Literal["point", "lower95"]] = defaulted(
        "point", "What must reach the minimum: the score or difference itself (point), or the lower end of its 95% interval"
        " (lower95; for a relative gate the paired bootstrap interval of the difference)."
    )


class SelectionPolicy(Model):
    benchmark: Benchmark = Field(description="Benchmark that picks the checkpoint; one of spec.benchmarks.")
    metric: Optional[Literal["score", "lower95"]] = defaulted(
        "score", "What is compared: the score, or the lower end of its 95% interval. Ties go to the earlier checkpoint."
    )


class EvalRunSpec(Model):
    rules = (
        Rule("has(self.output) || has(self.model.fineTuneJob)",
             "output is required unless model.fineTuneJob is set (results then go next to the model)",
             lambda m: m.output is not None or m.model.fineTuneJob is not None),
        Rule("!has(self.gates) || self.gates.all(g, self.benchmarks.exists(b, b.name == g.benchmark))",
             "every gate must name a benchmark of spec.benchmarks",
             lambda m: all(any(b.name == g.benchmark for b in m.benchmarks) for g in m.gates or []), field=".gates"),
        Rule("!has(self.serving) || !has(self.serving.enabled) || self.serving.enabled || has(self.model.endpoint)"
             " || (has(self.backend) && self.backend == 'offline')",
             "serving.enabled: false needs model.endpoint or backend: offline (nothing else serves the model)",
             lambda m: m.serving is None or m.serving.enabled is not False or m.model.endpoint is not None
             or m.backend == "offline", field=".serving.enabled"),
        Rule("!has(self.model.checkpoints) || (has(self.backend) && self.backend == 'offline')",
             "model.checkpoints needs backend: offline (each checkpoint is evaluated by the engine in its own pod)",
             lambda m: m.model.checkpoints is None or m.backend == "offline", field=".model.checkpoints"),
        Rule("!has(self.selection) || has(self.model.checkpoints)", "selection needs model.checkpoints (the candidates)",
             lambda m: m.selection is None or m.model.checkpoints is not None, field=".selection"),
        Rule("!has(self.gates) || !has(self.model.checkpoints) || has(self.selection)",
             "gates with model.checkpoints need selection (they judge the selected checkpoint)",
             lambda m: not m.gates or m.model.checkpoints is None or m.selection is not None, field=".gates"),
        Rule("!has(self.selection) || self.benchmarks.exists(b, b.name == self.selection.benchmark)",
             "selection.benchmark must name a benchmark of spec.benchmarks",
             lambda m: m.selection is None or any(b.name == m.selection.benchmark for b in m.benchmarks),
             field=".selection.benchmark"),
        Rule("!has(self.gates) || !has(self.model.checkpoints) || self.gates.all(g, !has(g.baseline))",
             "relative gates (baseline) need a single model, not model.checkpoints",
             lambda m: not m.gates or m.model.checkpoints is None or all(g.baseline is None for g in m.gates), field=".gates"),
        Rule("!has(self.parallelism) || has(self.model.checkpoints)",
             "parallelism needs model.checkpoints (it limits the checkpoint pods that run at once)",
             lambda m: m.parallelism is None or m.model.checkpoints is not None, field=".parallelism"),
    )

    model: EvalModelRef = Field(description="What to evaluate.")
    hubTokenSecretRef: Optional[SecretKeyRef] = Field(
        default=None, description="Secret key holding a Hugging Face token (HF_TOKEN in the pods) for gated models and datasets."
    )
    protocol: Optional[Literal["limo", "skythought", "livecodebench", "custom"]] = defaulted(
        PROTOCOL, "Sampling preset; per-benchmark fields override it."
    )
    benchmarks: list[BenchmarkSpec] = Field(min_length=1, max_length=32, description="Benchmarks to run.")
    systemPrompt: Optional[LongText] = Field(
        default=None, description="System prompt (default: the protocol's; SkyThought's depends on the model, see docs/protocols.md)."
    )
    backend: Optional[Literal["server", "offline"]] = defaulted(
        BACKEND, "Generate through the served endpoint (server) or with vLLM offline in the Job."
    )
    concurrency: Optional[int] = Field(
        default=None, ge=1, le=4096,
        description=f"Requests in flight (default: the model endpoint's concurrency, else {ENDPOINT_CONCURRENCY}).",
    )
    serving: Optional[ServingSpec] = defaulted({}, "The vLLM server.")
    output: Optional[Location] = Field(
        default=None, description="Where responses and reports go; required unless model.fineTuneJob is set (default: next to that model)."
    )
    gates: Optional[list[Gate]] = Field(default=None, max_length=32, description="Minimum scores; all must pass for Passed=True (with selection: the selected checkpoint's).")
    selection: Optional[SelectionPolicy] = Field(
        default=None, description="Pick one of model.checkpoints by a benchmark: the best, ties to the earlier; set in status.selectedCheckpoint."
    )
    resources: Optional[Resources] = Field(default=None, description="Compute for the benchmark Job (per checkpoint pod with model.checkpoints).")
    tracking: Optional[Tracking] = Field(
        default=None, description="Experiment tracking (MLflow, TensorBoard, Weights & Biases); edits make no new revision."
    )
    parallelism: Optional[int] = Field(
        default=None, ge=1, le=MAX_CHECKPOINTS,
        description="With model.checkpoints: checkpoint pods that run at once (default: every checkpoint at once). An edit"
        " applies to the running Job and makes no new revision; a Job admitted by Kueue keeps the count it was admitted with.",
    )
    sandbox: Optional[SandboxSpec] = Field(default=None, description="Execution of code benchmarks' programs.")
    backoffLimit: Optional[int] = defaulted(EVAL_BACKOFF_LIMIT, "Pod retries.", ge=0, le=100)
    activeDeadlineSeconds: Optional[int] = Field(default=None, ge=1, description="Deadline of the benchmark Job.")
    suspend: Optional[bool] = defaulted(False, "Do not start (or stop) the evaluation.")


class BenchmarkResult(Model):
    benchmark: Annotated[str, Field(max_length=63)] = Field(description="Benchmark name.")
    score: Annotated[str, Field(max_length=16)] = Field(description="pass@1 (mean over all samples).")
    problems: Optional[int] = Field(default=None, description="Problems evaluated.")
    samples: Optional[int] = Field(default=None, description="Samples per problem.")
    truncated: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Share cut at the token limit.")
    stderr: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Standard error of the score over problems.")
    ciLow: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Lower end of the score's 95% interval.")
    ciHigh: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Upper end of the score's 95% interval.")
    contentHash: Optional[Annotated[str, Field(max_length=80)]] = Field(default=None, description="sha256 of the benchmark file used (first 16 hex digits; summary.json has it whole).")


class GateResult(Model):
    benchmark: Annotated[str, Field(max_length=63)] = Field(description="Benchmark name.")
    minScore: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Threshold of an absolute gate.")
    baseline: Optional[Annotated[str, Field(max_length=63)]] = Field(default=None, description="Relative gate: the baseline EvalRun.")
    minDifference: Optional[Annotated[str, Field(max_length=32)]] = Field(default=None, description="Relative gate: the threshold of the difference.")
    score: Optional[Annotated[str, Field(max_length=16)]] = Field(
        default=None, description="Value compared: the score or its lower bound (relative gate: the difference or its lower bound).")
    bound: Optional[Literal["point", "lower95"]] = Field(default=None, description="Which bound was compared.")
    passed: bool = Field(description="Whether the gate passed.")
    reason: Optional[ShortText] = Field(default=None, description="Why the gate failed without a comparison.")


class PairedComparison(Model):
    """This run against a baseline EvalRun on one benchmark, paired over the same problems (`reasonops compare`'s method)."""

    baseline: Annotated[str, Field(max_length=63)] = Field(description="The baseline EvalRun.")
    baselineRevision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Its revision compared against.")
    benchmark: Annotated[str, Field(max_length=63)] = Field(description="Benchmark name.")
    problems: Optional[int] = Field(default=None, description="Problems paired.")
    difference: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="This run's pass@1 minus the baseline's.")
    ciLow: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Lower end of the difference's paired 95% interval.")
    ciHigh: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Upper end of the difference's paired 95% interval.")
    wins: Optional[int] = Field(default=None, description="Problems where this run scored higher.")
    losses: Optional[int] = Field(default=None, description="Problems where the baseline scored higher.")
    refused: Optional[ShortText] = Field(default=None, description="Why the two runs could not be compared (not the same problems or protocol).")


class CheckpointScore(Model):
    """A benchmark's score on one checkpoint, in short (the checkpoint's summary.json has the rest)."""

    benchmark: Annotated[str, Field(max_length=63)] = Field(description="Benchmark name.")
    score: Annotated[str, Field(max_length=16)] = Field(description="pass@1.")
    stderr: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Standard error of the score.")
    ciLow: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Lower end of the 95% interval.")
    ciHigh: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Upper end of the 95% interval.")


class CheckpointResult(Model):
    name: Annotated[str, Field(max_length=63)] = Field(description="Checkpoint name, e.g. step-40.")
    step: int = Field(description="Optimizer step.")
    epoch: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Epochs completed at the step.")
    location: Annotated[str, Field(max_length=1024)] = Field(description="The checkpoint's servable model directory.")
    results: Optional[list[CheckpointScore]] = Field(default=None, max_length=32, description="Scores per benchmark (none yet: not evaluated).")


class SelectedCheckpoint(Model):
    name: Annotated[str, Field(max_length=63)] = Field(description="Checkpoint name.")
    step: int = Field(description="Optimizer step.")
    location: Annotated[str, Field(max_length=1024)] = Field(description="Its servable model directory: what a downstream EvalRun or promotion uses.")
    benchmark: Annotated[str, Field(max_length=63)] = Field(description="Benchmark that picked it.")
    metric: Literal["score", "lower95"] = Field(description="What was compared.")
    score: Annotated[str, Field(max_length=16)] = Field(description="Its value of the metric.")
    modelRevision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Revision of the FineTuneJob that wrote it.")


class EvalRunStatus(_StatusBase):
    modelRevision: Optional[Annotated[str, Field(max_length=64)]] = Field(default=None, description="Revision of the evaluated model.")
    modelLocation: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="Evaluated model directory.")
    endpoint: Optional[Annotated[str, Field(max_length=1024)]] = Field(default=None, description="OpenAI-compatible URL of the served model.")
    results: Optional[list[BenchmarkResult]] = Field(default=None, max_length=32, description="Scores per benchmark.")
    gates: Optional[list[GateResult]] = Field(default=None, max_length=32, description="Gate outcomes.")
    comparisons: Optional[list[PairedComparison]] = Field(
        default=None, max_length=32, description="Relative gates: the paired differences to each baseline, per benchmark."
    )
    accuracy: Optional[Annotated[str, Field(max_length=16)]] = Field(default=None, description="Mean pass@1 over benchmarks.")
    checkpoints: Optional[list[CheckpointResult]] = Field(
        default=None, max_length=MAX_CHECKPOINTS, description="model.checkpoints: each checkpoint evaluated, oldest first, with its scores."
    )
    selectedCheckpoint: Optional[SelectedCheckpoint] = Field(
        default=None, description="The checkpoint spec.selection picked once every checkpoint was evaluated; results and gates are its."
        " It stays while a newer revision evaluates, until that one selects."
    )


# =============================================================================================
# The kinds
# =============================================================================================


class Resource(Model):
    """Common shape of a custom resource as the API server returns it."""

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[list[str]]
    spec_model: ClassVar[type[Model]]
    status_model: ClassVar[type[Model]]
    printer_columns: ClassVar[list[dict[str, Any]]]

    apiVersion: Literal["reasonops.io/v1alpha1"] = "reasonops.io/v1alpha1"
    kind: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("metadata")
    @classmethod
    def _valid_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        """Checked as the API server checks it (ObjectMeta); kept as a mapping, as the server returns it."""
        ObjectMeta.model_validate(metadata)
        return metadata


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
    kind: Literal["ReasoningDataset"] = "ReasoningDataset"
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
    kind: Literal["FineTuneJob"] = "FineTuneJob"
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
    kind: Literal["EvalRun"] = "EvalRun"
    spec: EvalRunSpec
    status: Optional[EvalRunStatus] = None


KINDS: dict[str, type[Resource]] = {k.kind_name: k for k in (ReasoningDataset, FineTuneJob, EvalRun)}
