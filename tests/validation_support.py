"""Invalid and valid resources shared by the parity tests: pydantic (test_validation_parity.py) and the
API server with `reasonops run` beside it (test_validation_e2e.py) must judge each alike.

A case is (id, document, field, message): the field path as the API server writes it, and, for a
CEL rule, the rule's message, which both sides must report; None where the two sides word an
OpenAPI constraint differently (both still name the field).
"""

from __future__ import annotations

import copy
import json
import re

GROUP, VERSION = "reasonops.io", "v1alpha1"
API = f"{GROUP}/{VERSION}"
DATASET = {"apiVersion": API, "kind": "ReasoningDataset", "metadata": {"name": "d"},
           "spec": {"sources": [{"name": "s", "path": "/data/p.jsonl"}], "output": {"path": "/out"}}}
FINETUNE = {"apiVersion": API, "kind": "FineTuneJob", "metadata": {"name": "f"},
            "spec": {"baseModel": {"name": "Qwen/Qwen2.5-7B-Instruct"}, "datasetRef": {"name": "d"}, "output": {"path": "/out"}}}
EVAL = {"apiVersion": API, "kind": "EvalRun", "metadata": {"name": "e"},
        "spec": {"model": {"fineTuneJob": "f"}, "benchmarks": [{"name": "aime24"}]}}

DELETE = object()


def with_(base: dict, path: str, value) -> dict:
    """A copy of `base` with the dotted `path` set to `value` (list indices as numbers) or deleted."""
    doc = copy.deepcopy(base)
    node = doc
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    last = keys[-1]
    if value is DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def _stage(**kind) -> list[dict]:
    return [{"name": "x", **kind}]


def _difficulty(**sampling) -> dict:
    return {"sampler": {"model": "m"}, "attempts": 4, "minSolved": 1, "maxSolved": 3, "sampling": sampling}


_EXACTLY_ONE_SOURCE = "exactly one of hub, path, uri or inline must be set"
_STAGE_KIND = "a stage sets exactly one of dedupe, decontaminate, difficulty, generate, score or select"
_FRACTION = "must be a number in [0, 1]"
_TEMPERATURE = "must be a number in [0, 2]"
_TOP_P = "must be a number in (0, 1]"
_KEYS = "keys must be a Kubernetes qualified name"
_LABEL_VALUES = "label values must be empty or at most 63"
_GATE = "every gate must name a benchmark of spec.benchmarks"
_ONE_GATE = "set exactly one of minScore (an absolute gate) or baseline with minDifference (a relative gate)"
_RESERVED_ENV = "is set by the operator: names starting with REASONOPS_ or PET_"
_RESERVED_VOLUME = "is the name of one of the operator's volumes"
_RESERVED_MOUNT = "must not be, be inside or hold one of the operator's mounts"
_SERVING = "serving.enabled: false needs model.endpoint or backend: offline"

INVALID = [
    # shape and OpenAPI constraints
    ("missing sources", with_(DATASET, "spec.sources", DELETE), "spec.sources", None),
    ("missing output", with_(DATASET, "spec.output", DELETE), "spec.output", None),
    ("too many sources", with_(DATASET, "spec.sources", [{"name": f"s{i}", "path": "/p"} for i in range(33)]), "spec.sources", None),
    ("bad source name", with_(DATASET, "spec.sources.0.name", "Not_A_Name"), "spec.sources[0].name", None),
    ("select size zero", with_(DATASET, "spec.stages", _stage(select={"size": 0})), "spec.stages[0].select.size", None),
    ("threshold not a decimal", with_(DATASET, "spec.stages", _stage(dedupe={"threshold": "high"})), "spec.stages[0].dedupe.threshold", None),
    ("string where an object goes", with_(DATASET, "spec.output", "/out"), "spec.output", None),
    ("over-long system prompt", with_(DATASET, "spec.systemPrompt", "x" * 9000), "spec.systemPrompt", None),
    ("empty inline question", with_(DATASET, "spec.sources.0", {"name": "s", "inline": [{"question": ""}]}), "spec.sources[0].inline[0].question", None),
    ("wrong type epochs", with_(FINETUNE, "spec.hyperparameters", {"epochs": "fifteen"}), "spec.hyperparameters.epochs", None),
    ("negative epochs", with_(FINETUNE, "spec.hyperparameters", {"epochs": -1}), "spec.hyperparameters.epochs", None),
    ("unknown method", with_(FINETUNE, "spec.method", "qlora"), "spec.method", None),
    ("zero stage 4", with_(FINETUNE, "spec.deepspeed", {"zeroStage": 4}), "spec.deepspeed.zeroStage", None),
    ("too many nodes", with_(FINETUNE, "spec.numNodes", 1000), "spec.numNodes", None),
    ("learning rate as float", with_(FINETUNE, "spec.hyperparameters", {"learningRate": 0.00001}), "spec.hyperparameters.learningRate", None),
    ("no benchmarks", with_(EVAL, "spec.benchmarks", []), "spec.benchmarks", None),
    ("gate without minimum", with_(EVAL, "spec.gates", [{"benchmark": "aime24"}]), "spec.gates[0].minScore", _ONE_GATE),
    ("gate absolute and relative", with_(EVAL, "spec.gates", [{"benchmark": "aime24", "minScore": "0.5", "baseline": "base", "minDifference": "0"}]),
     "spec.gates[0].minScore", _ONE_GATE),
    ("export with half the credentials", with_(FINETUNE, "spec.export", {"uri": "s3://bucket/models", "accessKeyIdSecretRef": {"name": "s", "key": "id"}}),
     "spec.export.accessKeyIdSecretRef", "accessKeyIdSecretRef and secretAccessKeySecretRef go together"),
    ("export not to s3", with_(DATASET, "spec.export", {"uri": "gs://bucket/data"}), "spec.export.uri", None),
    ("relative gate without minDifference", with_(EVAL, "spec.gates", [{"benchmark": "aime24", "baseline": "base"}]),
     "spec.gates[0].minDifference", "minDifference and baseline go together (a relative gate sets both)"),
    ("relative gate difference 1.5", with_(EVAL, "spec.gates", [{"benchmark": "aime24", "baseline": "base", "minDifference": "1.5"}]),
     "spec.gates[0].minDifference", "must be a number in [-1, 1]"),
    ("relative gate on checkpoints", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "all"}, "backend": "offline",
                                                          "selection": {"benchmark": "aime24"},
                                                          "gates": [{"benchmark": "aime24", "baseline": "base", "minDifference": "0"}]}),
     "spec.gates", "relative gates (baseline) need a single model, not model.checkpoints"),
    ("endpoint not http", with_(EVAL, "spec.model", {"endpoint": {"url": "ftp://x"}}), "spec.model.endpoint.url", None),
    ("too many samples", with_(EVAL, "spec.benchmarks.0.samples", 5000), "spec.benchmarks[0].samples", None),
    ("empty secret key", with_(EVAL, "spec.model", {"endpoint": {"url": "http://x/v1", "apiKeySecretRef": {"name": "k", "key": ""}}}),
     "spec.model.endpoint.apiKeySecretRef.key", None),
    ("secret key with a slash", with_(EVAL, "spec.model", {"endpoint": {"url": "http://x/v1", "apiKeySecretRef": {"name": "k", "key": "a/b"}}}),
     "spec.model.endpoint.apiKeySecretRef.key", None),
    # one-of rules
    ("source with two kinds", with_(DATASET, "spec.sources.0.inline", [{"question": "1+1?"}]), "spec.sources[0]", _EXACTLY_ONE_SOURCE),
    ("source with none", with_(DATASET, "spec.sources.0.path", DELETE), "spec.sources[0]", _EXACTLY_ONE_SOURCE),
    ("stage with two kinds", with_(DATASET, "spec.stages", _stage(dedupe={}, select={"size": 3})), "spec.stages[0]", _STAGE_KIND),
    ("stage with no kind", with_(DATASET, "spec.stages", _stage()), "spec.stages[0]", _STAGE_KIND),
    ("output with two places", with_(DATASET, "spec.output.uri", "s3://b/k"), "spec.output", "exactly one of volume, uri or path must be set"),
    ("sampler with two endpoints", with_(DATASET, "spec.stages", _stage(difficulty={**_difficulty(), "sampler": {"model": "m", "evalRun": "e", "endpoint": {"url": "http://x/v1"}}})),
     "spec.stages[0].difficulty.sampler", "set at most one of endpoint, endpoints or evalRun"),
    ("mapping with solution and its parts", with_(DATASET, "spec.sources.0.fields", {"solution": "a", "solutionParts": ["b", "c"]}),
     "spec.sources[0].fields", "set at most one of solution and solutionParts"),
    ("lora block with full", with_(FINETUNE, "spec.lora", {"rank": 8}), "spec", "lora is only allowed with method: lora"),
    ("dataset twice", with_(FINETUNE, "spec.dataset", {"path": "/d"}), "spec", "set exactly one of datasetRef or dataset"),
    ("eval of a named model without output", with_(EVAL, "spec.model", {"name": "Qwen/Qwen2.5-7B"}), "spec",
     "output is required unless model.fineTuneJob is set"),
    ("model twice", with_(EVAL, "spec.model.name", "Qwen/Qwen2.5-7B"), "spec.model", "exactly one of fineTuneJob, name, endpoint or evalRun must be set"),
    ("checkpoints of a named model", with_(EVAL, "spec", {**EVAL["spec"], "model": {"name": "m", "checkpoints": "all"}, "output": {"path": "/o"},
                                                         "backend": "offline"}),
     "spec.model.checkpoints", "checkpoints needs fineTuneJob (whose kept checkpoints are evaluated)"),
    ("checkpoints through a server", with_(EVAL, "spec.model.checkpoints", "all"), "spec.model.checkpoints",
     "model.checkpoints needs backend: offline (each checkpoint is evaluated by the engine in its own pod)"),
    ("selection without checkpoints", with_(EVAL, "spec.selection", {"benchmark": "aime24"}), "spec.selection",
     "selection needs model.checkpoints (the candidates)"),
    ("gates on unselected checkpoints", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "all"}, "backend": "offline",
                                                            "gates": [{"benchmark": "aime24", "minScore": "0.5"}]}),
     "spec.gates", "gates with model.checkpoints need selection (they judge the selected checkpoint)"),
    ("selection on another benchmark", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "all"}, "backend": "offline",
                                                           "selection": {"benchmark": "math500"}}),
     "spec.selection.benchmark", "selection.benchmark must name a benchmark of spec.benchmarks"),
    ("parallelism without checkpoints", with_(EVAL, "spec.parallelism", 2), "spec.parallelism",
     "parallelism needs model.checkpoints (it limits the checkpoint pods that run at once)"),
    ("parallelism of 0", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "all"}, "backend": "offline",
                                              "parallelism": 0}), "spec.parallelism", None),
    ("checkpoint steps of every checkpoint", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "all", "checkpointSteps": [100]},
                                                                  "backend": "offline"}),
     "spec.model.checkpointSteps", "checkpointSteps is set exactly when checkpoints is steps (it lists the steps to evaluate)"),
    ("checkpoints by steps without steps", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "steps"}, "backend": "offline"}),
     "spec.model.checkpointSteps", "checkpointSteps is set exactly when checkpoints is steps (it lists the steps to evaluate)"),
    ("a checkpoint step twice", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "steps", "checkpointSteps": [100, 200, 100]},
                                                     "backend": "offline"}),
     "spec.model.checkpointSteps", "checkpointSteps lists a step more than once"),
    ("checkpoint step 0", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "steps", "checkpointSteps": [0]},
                                               "backend": "offline"}), "spec.model.checkpointSteps[0]", None),
    # ranges of decimals
    ("dedupe threshold 2", with_(DATASET, "spec.stages", _stage(dedupe={"threshold": "2"})), "spec.stages[0].dedupe.threshold", _FRACTION),
    ("decontamination threshold 2", with_(DATASET, "spec.stages", _stage(decontaminate={"benchmarks": ["aime24"], "threshold": "2"})),
     "spec.stages[0].decontaminate.threshold", _FRACTION),
    ("negative perturbation fraction", with_(DATASET, "spec.perturbations", [{"name": "p", "type": "shuffleSteps", "fraction": "-0.1"}]),
     "spec.perturbations[0].fraction", _FRACTION),
    ("negative score weight", with_(DATASET, "spec.stages", _stage(score={"components": [{"name": "elaboration", "weight": "-1"}]})),
     "spec.stages[0].score.components[0].weight", "must be a number at least 0"),
    ("curation temperature 3", with_(DATASET, "spec.stages", _stage(difficulty=_difficulty(temperature="3"))),
     "spec.stages[0].difficulty.sampling.temperature", _TEMPERATURE),
    ("curation topP 0", with_(DATASET, "spec.stages", _stage(generate={"teachers": [{"name": "t", "sampler": {"model": "m"}}], "sampling": {"topP": "0"}})),
     "spec.stages[0].generate.sampling.topP", _TOP_P),
    ("benchmark temperature negative", with_(EVAL, "spec.benchmarks.0.temperature", "-0.5"), "spec.benchmarks[0].temperature", _TEMPERATURE),
    ("benchmark topP above 1", with_(EVAL, "spec.benchmarks.0.topP", "1.5"), "spec.benchmarks[0].topP", _TOP_P),
    ("learning rate 0", with_(FINETUNE, "spec.hyperparameters", {"learningRate": "0"}), "spec.hyperparameters.learningRate", "must be a number greater than 0"),
    ("warmup ratio 1.5", with_(FINETUNE, "spec.hyperparameters", {"warmupRatio": "1.5"}), "spec.hyperparameters.warmupRatio", _FRACTION),
    ("negative weight decay", with_(FINETUNE, "spec.hyperparameters", {"weightDecay": "-0.1"}), "spec.hyperparameters.weightDecay", "must be a number at least 0"),
    ("gradient norm 0", with_(FINETUNE, "spec.hyperparameters", {"maxGradNorm": "0"}), "spec.hyperparameters.maxGradNorm", "must be a number greater than 0"),
    ("lora dropout 1", with_(FINETUNE, "spec", {**FINETUNE["spec"], "method": "lora", "lora": {"dropout": "1"}}), "spec.lora.dropout", "must be a number in [0, 1)"),
    ("min score 1.2", with_(EVAL, "spec.gates", [{"benchmark": "aime24", "minScore": "1.2"}]), "spec.gates[0].minScore", _FRACTION),
    # rules between fields
    ("solve window inverted", with_(DATASET, "spec.stages", _stage(difficulty={**_difficulty(), "minSolved": 3, "maxSolved": 1})),
     "spec.stages[0].difficulty.minSolved", "minSolved must not exceed maxSolved"),
    ("solve window above attempts", with_(DATASET, "spec.stages", _stage(difficulty={**_difficulty(), "maxSolved": 5})),
     "spec.stages[0].difficulty.maxSolved", "maxSolved must not exceed attempts"),
    ("micro batch above global", with_(FINETUNE, "spec.hyperparameters", {"microBatchSize": 8, "globalBatchSize": 4}),
     "spec.hyperparameters.microBatchSize", "microBatchSize must not exceed globalBatchSize"),
    ("two nodes without GPUs", with_(FINETUNE, "spec", {**FINETUNE["spec"], "numNodes": 2, "gpusPerNode": 0}), "spec.numNodes",
     "numNodes above 1 needs GPUs: gpusPerNode (or resources.gpus) must not be 0, unless distributedBackend is gloo (CPU training)"),
    ("absolute base model on a volume", with_(FINETUNE, "spec.baseModel", {"name": "/mnt/pvc/data/models/base", "volume": {"volume": {"claimName": "data", "path": "models"}}}),
     "spec.baseModel.name", "with volume, name is a path relative to that location (not absolute, not a URI)"),
    ("two nodes with resources.gpus 0", with_(FINETUNE, "spec", {**FINETUNE["spec"], "numNodes": 2, "resources": {"gpus": 0}}), "spec.numNodes",
     "numNodes above 1 needs GPUs: gpusPerNode (or resources.gpus) must not be 0, unless distributedBackend is gloo (CPU training)"),
    ("two checkpoint cadences", with_(FINETUNE, "spec.checkpoints", {"everyEpochs": 1, "everySteps": 100}), "spec.checkpoints",
     "set at most one of everyEpochs or everySteps"),
    ("parameter offload with ZeRO 2", with_(FINETUNE, "spec.deepspeed", {"zeroStage": 2, "offloadParams": True}), "spec.deepspeed.offloadParams",
     "offloadParams needs zeroStage 3"),
    ("optimizer offload with ZeRO 0", with_(FINETUNE, "spec.deepspeed", {"zeroStage": 0, "offloadOptimizer": True}), "spec.deepspeed.offloadOptimizer",
     "offloadOptimizer needs zeroStage 1, 2 or 3"),
    ("gate on a benchmark not run", with_(EVAL, "spec.gates", [{"benchmark": "math500", "minScore": "0.5"}]), "spec.gates", _GATE),
    ("serving disabled without endpoint", with_(EVAL, "spec.serving", {"enabled": False}), "spec.serving.enabled", _SERVING),
    ("empty source path", with_(DATASET, "spec.sources.0.path", ""), "spec.sources[0].path", None),
    ("empty output path", with_(DATASET, "spec.output.path", ""), "spec.output.path", None),
    ("empty model name", with_(EVAL, "spec.model", {"name": ""}), "spec.model.name", None),
    ("empty image", with_(FINETUNE, "spec.resources", {"image": ""}), "spec.resources.image", None),
    ("empty keyword", with_(DATASET, "spec.stages", _stage(score={"components": [{"name": "verification", "weight": "1", "keywords": [""]}]})),
     "spec.stages[0].score.components[0].keywords[0]", None),
    # names of list items are unique (the lists are maps keyed by name)
    ("two stages of one name", with_(DATASET, "spec.stages", [{"name": "x", "select": {"size": 1}}, {"name": "x", "select": {"size": 2}}]),
     "spec.stages[1]", 'Duplicate value: {"name":"x"}'),
    ("a benchmark twice", with_(EVAL, "spec.benchmarks", [{"name": "aime24"}, {"name": "aime24", "samples": 4}]), "spec.benchmarks[1]",
     'Duplicate value: {"name":"aime24"}'),
    # tolerations as Kubernetes checks them
    ("toleration without key or Exists", with_(DATASET, "spec.resources", {"tolerations": [{"operator": "Equal", "value": "x"}]}),
     "spec.resources.tolerations[0].operator", "operator must be Exists when key is empty"),
    ("toleration Exists with a value", with_(FINETUNE, "spec.resources", {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}),
     "spec.resources.tolerations[0].value", "value must be empty when operator is Exists"),
    ("toleration seconds without NoExecute", with_(EVAL, "spec.resources", {"tolerations": [{"key": "gpu", "tolerationSeconds": 5, "effect": "NoSchedule"}]}),
     "spec.resources.tolerations[0].effect", "effect must be NoExecute when tolerationSeconds is set"),
    ("toleration value not a label value", with_(EVAL, "spec.resources", {"tolerations": [{"key": "gpu", "value": "a b"}]}),
     "spec.resources.tolerations[0].value", "must be empty or at most 63"),
    # Kubernetes names
    ("label key with two slashes", with_(DATASET, "spec.resources", {"podLabels": {"a/b/c": "x"}}), "spec.resources.podLabels", _KEYS),
    ("label key name too long", with_(FINETUNE, "spec.resources", {"podLabels": {"x" * 64: "x"}}), "spec.resources.podLabels", _KEYS),
    ("label key prefix not DNS", with_(EVAL, "spec.serving", {"resources": {"podLabels": {"Example.COM/x": "x"}}}),
     "spec.serving.resources.podLabels", _KEYS),
    ("label key prefix too long", with_(EVAL, "spec.resources", {"podLabels": {("a" * 60 + ".") * 4 + "abcdefghij/x": "x"}}),
     "spec.resources.podLabels", _KEYS),
    ("label value with a space", with_(DATASET, "spec.resources", {"podLabels": {"team": "a b"}}), "spec.resources.podLabels", _LABEL_VALUES),
    ("label value ending in a dash", with_(DATASET, "spec.resources", {"podLabels": {"team": "ab-"}}), "spec.resources.podLabels", _LABEL_VALUES),
    ("annotation key with a space", with_(FINETUNE, "spec.resources", {"podAnnotations": {"my key": "v"}}), "spec.resources.podAnnotations", _KEYS),
    ("node selector key invalid", with_(DATASET, "spec.resources", {"nodeSelector": [{"key": "-bad", "value": "x"}]}),
     "spec.resources.nodeSelector[0].key", "must be a Kubernetes qualified name"),
    ("node selector value invalid", with_(DATASET, "spec.resources", {"nodeSelector": [{"key": "gpu", "value": "a/b"}]}),
     "spec.resources.nodeSelector[0].value", "must be empty or at most 63"),
    # pod settings: what the operator sets on a pod is reserved
    ("env named like the operator's", with_(FINETUNE, "spec.resources", {"env": [{"name": "REASONOPS_OUTPUT", "value": "/x"}]}),
     "spec.resources.env[0].name", _RESERVED_ENV),
    ("env over the rendezvous", with_(FINETUNE, "spec.resources", {"env": [{"name": "MASTER_ADDR", "value": "x"}]}),
     "spec.resources.env[0].name", _RESERVED_ENV),
    ("env HF_TOKEN on the server", with_(EVAL, "spec.serving", {"resources": {"env": [{"name": "HF_TOKEN", "value": "x"}]}}),
     "spec.serving.resources.env[0].name", _RESERVED_ENV),
    ("env with value and valueFrom", with_(DATASET, "spec.resources", {"env": [
        {"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
     "spec.resources.env[0]", "exactly one of value or valueFrom must be set"),
    ("env valueFrom with both sources", with_(DATASET, "spec.resources", {"env": [{"name": "A", "valueFrom": {
        "secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}}]}),
     "spec.resources.env[0].valueFrom", "exactly one of secretKeyRef or configMapKeyRef must be set"),
    ("env name twice", with_(EVAL, "spec.resources", {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
     "spec.resources.env[1]", None),
    ("volume named like the operator's", with_(FINETUNE, "spec.resources", {"volumes": [{"name": "shm", "emptyDir": {}}]}),
     "spec.resources.volumes[0].name", _RESERVED_VOLUME),
    ("volume named like a claim's", with_(DATASET, "spec.resources", {"volumes": [{"name": "pvc-data", "emptyDir": {}}]}),
     "spec.resources.volumes[0].name", _RESERVED_VOLUME),
    ("volume with two sources", with_(EVAL, "spec.resources", {"volumes": [
        {"name": "v", "emptyDir": {}, "secret": {"secretName": "s"}}]}),
     "spec.resources.volumes[0]", "exactly one of emptyDir, persistentVolumeClaim, secret or configMap must be set"),
    ("mount of no volume", with_(FINETUNE, "spec.resources", {"volumeMounts": [{"name": "v", "mountPath": "/data"}]}),
     "spec.resources.volumeMounts", "every volume mount must name a volume of volumes"),
    ("mount over the document", with_(FINETUNE, "spec.resources", {"volumes": [{"name": "v", "emptyDir": {}}],
                                                                   "volumeMounts": [{"name": "v", "mountPath": "/etc/reasonops"}]}),
     "spec.resources.volumeMounts[0].mountPath", _RESERVED_MOUNT),
    ("mount inside the claims' root", with_(DATASET, "spec.resources", {"volumes": [{"name": "v", "emptyDir": {}}],
                                                                        "volumeMounts": [{"name": "v", "mountPath": "/mnt/pvc/out"}]}),
     "spec.resources.volumeMounts[0].mountPath", _RESERVED_MOUNT),
    ("mount over /dev", with_(EVAL, "spec.resources", {"volumes": [{"name": "v", "emptyDir": {}}],
                                                       "volumeMounts": [{"name": "v", "mountPath": "/dev"}]}),
     "spec.resources.volumeMounts[0].mountPath", _RESERVED_MOUNT),
    ("mount path with ..", with_(EVAL, "spec.resources", {"volumes": [{"name": "v", "emptyDir": {}}],
                                                          "volumeMounts": [{"name": "v", "mountPath": "/data/../tmp/x"}]}),
     "spec.resources.volumeMounts[0].mountPath", "must not contain '..'"),
    ("two mounts at one path", with_(FINETUNE, "spec.resources", {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}],
                                                                 "volumeMounts": [{"name": "v", "mountPath": "/data"}, {"name": "w", "mountPath": "/data"}]}),
     "spec.resources.volumeMounts", "two volume mounts have the same mountPath"),
    ("CPU limit below the request", with_(EVAL, "spec.serving", {"resources": {"cpu": "2", "cpuLimit": "1500m"}}),
     "spec.serving.resources.cpuLimit", "cpuLimit must not be below cpu"),
    ("GPUs as an extended resource", with_(FINETUNE, "spec.resources", {"extendedResources": [{"name": "nvidia.com/gpu", "quantity": 8}]}),
     "spec.resources.extendedResources[0].name", "cpu, memory and GPUs are set by cpu, memory and gpus"),
    ("no extended resource", with_(FINETUNE, "spec.resources", {"extendedResources": [{"name": "rdma/hca", "quantity": 0}]}),
     "spec.resources.extendedResources[0].quantity", None),
    ("negative grace period", with_(FINETUNE, "spec.resources", {"terminationGracePeriodSeconds": -1}),
     "spec.resources.terminationGracePeriodSeconds", None),
    ("pull secret not a name", with_(DATASET, "spec.resources", {"imagePullSecrets": ["Bad_Name"]}),
     "spec.resources.imagePullSecrets[0]", None),
    # experiment tracking (docs/tracking.md)
    ("tracking with no tracker", with_(DATASET, "spec.tracking", {}), "spec.tracking", "set at least one of mlflow, tensorboard or wandb"),
    ("mlflow URI without a scheme", with_(EVAL, "spec.tracking", {"mlflow": {"trackingUri": "mlflow:5000", "experiment": "e"}}),
     "spec.tracking.mlflow.trackingUri", None),
    ("mlflow token and password", with_(FINETUNE, "spec.tracking", {"mlflow": {
        "trackingUri": "http://m", "experiment": "e", "tokenSecretRef": {"name": "m", "key": "t"},
        "usernameSecretRef": {"name": "m", "key": "u"}, "passwordSecretRef": {"name": "m", "key": "p"}}}),
     "spec.tracking.mlflow.tokenSecretRef", "set tokenSecretRef or usernameSecretRef and passwordSecretRef, not both"),
    ("mlflow username without password", with_(FINETUNE, "spec.tracking", {"mlflow": {
        "trackingUri": "http://m", "experiment": "e", "usernameSecretRef": {"name": "m", "key": "u"}}}),
     "spec.tracking.mlflow.passwordSecretRef", "usernameSecretRef and passwordSecretRef are set together"),
    ("mlflow password in the URI", with_(EVAL, "spec.tracking", {"mlflow": {"trackingUri": "https://bot:s3cret@mlflow.example", "experiment": "e"}}),
     "spec.tracking.mlflow.trackingUri", "must not carry credentials"),
    ("wandb online without a key", with_(EVAL, "spec.tracking", {"wandb": {"project": "p"}}),
     "spec.tracking.wandb.apiKeySecretRef", "mode online needs apiKeySecretRef"),
]

VALID = [
    ("minimal dataset", DATASET),
    ("tracking everywhere", with_(FINETUNE, "spec.tracking", {
        "mlflow": {"trackingUri": "https://mlflow.example:5000", "experiment": "limo", "usernameSecretRef": {"name": "m", "key": "u"},
                   "passwordSecretRef": {"name": "m", "key": "p"}},
        "tensorboard": {"enabled": False}, "wandb": {"project": "limo", "entity": "team", "mode": "offline"}})),
    ("minimal finetune", FINETUNE),
    ("minimal eval", EVAL),
    ("thresholds at the bounds", with_(DATASET, "spec.stages", [
        {"name": "a", "dedupe": {"threshold": "1"}}, {"name": "b", "decontaminate": {"benchmarks": ["aime24"], "threshold": "0"}},
        {"name": "c", "difficulty": _difficulty(temperature="2", topP="1")},
        {"name": "d", "generate": {"teachers": [{"name": "t", "sampler": {"model": "m"}}], "sampling": {"temperature": "0", "topP": "1e-3"}}},
        {"name": "e", "score": {"components": [{"name": "elaboration", "weight": "0"}]}}])),
    ("Kubernetes labels", with_(DATASET, "spec.resources", {
        "podLabels": {"app.kubernetes.io/name": "x", "team": "", "a" * 63: "b" * 63, ("a" * 60 + ".") * 4 + "abcdefghi/x": "v"},
        "podAnnotations": {"prometheus.io/scrape": "true", "Note_1": "any text / at all"},
        "nodeSelector": [{"key": "nvidia.com/gpu.product", "value": "H100"}]})),
    ("training within bounds", with_(FINETUNE, "spec", {**FINETUNE["spec"], "numNodes": 2, "gpusPerNode": 8,
                                                        "hyperparameters": {"learningRate": "1e-5", "warmupRatio": "1", "microBatchSize": 4,
                                                                            "globalBatchSize": 4, "weightDecay": "0", "maxGradNorm": "0.5"},
                                                        "checkpoints": {"everySteps": 100}, "deepspeed": {"zeroStage": 3, "offloadParams": True}})),
    ("tolerations", with_(FINETUNE, "spec.resources", {"tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, {"operator": "Exists"},
        {"key": "pool", "value": "h200"}, {"key": "spot", "effect": "NoExecute", "tolerationSeconds": 30}]})),
    ("one node without GPUs", with_(FINETUNE, "spec", {**FINETUNE["spec"], "numNodes": 1, "gpusPerNode": 0})),
    ("two CPU nodes over gloo", with_(FINETUNE, "spec", {**FINETUNE["spec"], "numNodes": 2, "gpusPerNode": 0, "distributedBackend": "gloo"})),
    ("lora dropout below 1", with_(FINETUNE, "spec", {**FINETUNE["spec"], "method": "lora", "lora": {"dropout": "0.999"}})),
    ("gates on run benchmarks", with_(EVAL, "spec", {**EVAL["spec"], "benchmarks": [{"name": "aime24", "temperature": "0.6", "topP": "0.95"}, {"name": "math500"}],
                                                     "gates": [{"benchmark": "math500", "minScore": "0"}, {"benchmark": "aime24", "minScore": "1"}]})),
    ("exports of a dataset and a model", with_(FINETUNE, "spec", {**FINETUNE["spec"], "export": {
        "uri": "s3://team-models/reasoning", "endpointUrl": "http://minio.storage:9000", "region": "eu-west-1",
        "accessKeyIdSecretRef": {"name": "store", "key": "id"}, "secretAccessKeySecretRef": {"name": "store", "key": "secret"}}})),
    ("relative gates beside an absolute one", with_(EVAL, "spec", {**EVAL["spec"], "gates": [
        {"benchmark": "aime24", "baseline": "base-eval", "minDifference": "0.05", "bound": "lower95"},
        {"benchmark": "aime24", "baseline": "base-eval", "minDifference": "-1"}, {"benchmark": "aime24", "minScore": "0.3"}]})),
    ("serving disabled with an endpoint", with_(EVAL, "spec", {**EVAL["spec"], "model": {"endpoint": {"url": "http://x/v1", "apiKeySecretRef": {"name": "k", "key": "api.key-1_x"}}},
                                                               "serving": {"enabled": False}, "output": {"path": "/out"}})),
    ("serving disabled offline", with_(EVAL, "spec", {**EVAL["spec"], "backend": "offline", "serving": {"enabled": False}})),
    ("checkpoint selection", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "all"}, "backend": "offline",
                                                 "selection": {"benchmark": "aime24", "metric": "lower95"}})),
    ("checkpoints at listed steps", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "steps", "checkpointSteps": [400, 200]},
                                                         "backend": "offline", "selection": {"benchmark": "aime24"}})),
    ("checkpoints two at a time", with_(EVAL, "spec", {**EVAL["spec"], "model": {"fineTuneJob": "f", "checkpoints": "all"}, "backend": "offline",
                                                       "parallelism": 2})),
    ("a selected checkpoint", with_(EVAL, "spec", {**EVAL["spec"], "model": {"evalRun": "sel"}, "output": {"path": "/o"}})),
    ("checkpoints exported", with_(FINETUNE, "spec.checkpoints", {"everyEpochs": 1, "keep": 0, "export": True})),
    ("pod settings", with_(FINETUNE, "spec.resources", {
        "env": [{"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}}},
                {"name": "NCCL_IB_HCA", "valueFrom": {"configMapKeyRef": {"name": "fabric", "key": "hca"}}},
                {"name": "HF_HOME", "value": "/cache/hf"}, {"name": "EMPTY", "value": ""}],
        "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "hf-cache", "readOnly": True}},
                    {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                    {"name": "certs", "secret": {"secretName": "ca"}}, {"name": "conf", "configMap": {"name": "c"}}],
        "volumeMounts": [{"name": "cache", "mountPath": "/cache", "readOnly": True}, {"name": "scratch", "mountPath": "/scratch"},
                         {"name": "certs", "mountPath": "/etc/ssl/extra"}, {"name": "conf", "mountPath": "/tmpdata", "subPath": "a.yaml"}],
        "imagePullSecrets": ["registry"], "priorityClassName": "training-high", "sharedMemory": "64Gi",
        "extendedResources": [{"name": "rdma/hca", "quantity": 1}], "terminationGracePeriodSeconds": 900,
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["h200"]}]}]}}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}]})),
    ("a CPU limit above the request", with_(DATASET, "spec.resources", {"cpu": "250m", "cpuLimit": "2"})),
    ("a CPU limit as high as the request", with_(FINETUNE, "spec.resources", {"cpu": "1.5", "cpuLimit": "1500m"})),
    ("a CPU limit alone", with_(EVAL, "spec.resources", {"cpuLimit": "4"})),
    ("grace period zero on the server", with_(EVAL, "spec.serving", {"resources": {"terminationGracePeriodSeconds": 0, "gpus": 1}})),
]


# --- generated resources: the examples, each field mutated alone and several at once ----------------

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
SEED = 21
GENERATED = 1200


def example_resources() -> list[dict]:
    """The resources of examples/ (and its code/ examples) and the valid cases above: the seeds of the generator."""
    import yaml

    paths = sorted((ROOT / "examples").glob("*.yaml")) + sorted((ROOT / "examples" / "code").glob("*.yaml"))
    docs = [d for path in paths for d in yaml.safe_load_all(path.read_text()) if d]
    return docs + [doc for _, doc in VALID]


_DECIMAL_TEXT = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_BAD_NAMES = ["Bad_Name", "UPPER", "-lead", "trail-", "a" * 254, "a..b", "a b", "", ".dot", "x" * 64]
_GOOD_NAMES = ["a" * 253, "a.b-c", "x" * 63, "0abc"]


def _variants(value) -> list[tuple[str, object]]:
    """(category, replacement) for one field's value: type changes, coercible look-alikes, extremes, null."""
    out: list[tuple[str, object]] = [("null", None), ("delete", DELETE)]
    if isinstance(value, bool):
        out += [("bool as string", "true"), ("bool as string", "false"), ("bool as int", 1), ("bool as int", 0),
                ("type", "yes"), ("type", [value])]
    elif isinstance(value, int):
        out += [("numeric string", str(value)), ("bool for int", True), ("float", 1.5), ("float", float(value)),
                ("huge int", 2**63), ("huge int", 2**64 + 1), ("huge int", -(2**63) - 1), ("range", 2**63 - 1),
                ("range", -1), ("range", 0), ("range", 10**6), ("type", {"n": value})]
    elif isinstance(value, str):
        out += [("type", 1), ("type", True), ("type", [value]), ("type", {"v": value}), ("range", ""),
                ("range", "x" * 1100), ("range", "Not A Name")]
        if _DECIMAL_TEXT.match(value):
            out += [("non-finite", "1e400"), ("non-finite", "-1e400"), ("range", "1e-400"), ("range", "-1"),
                    ("range", "0"), ("range", "2"), ("range", "1e308"), ("type", "NaN"), ("type", float(value))]
    elif isinstance(value, dict):
        out += [("unknown field", {**value, "unknownField": 1}), ("type", "text"), ("type", []), ("type", 7),
                ("null value", {key: None for key in value}), ("range", {})]
    elif isinstance(value, list):
        out += [("type", "text"), ("type", {}), ("range", []), ("null item", [None]), ("range", value * 2)]
    return out


def _paths(node, prefix: str = ""):
    """The dotted path of every field under `node` (list items by index), containers included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        yield path, value
        yield from _paths(value, path)


def _metadata_mutations(doc: dict) -> list[tuple[str, str, object]]:
    """(category, path, value) of metadata and of the resource's frame (apiVersion, kind, spec)."""
    kind = doc["kind"]
    out = [("bad name", "metadata.name", name) for name in _BAD_NAMES]
    out += [("good name", "metadata.name", name) for name in _GOOD_NAMES]
    out += [("bad metadata", "metadata", value) for value in (["name", "x"], "x", None, {})]
    out += [("bad metadata", "metadata.name", value) for value in (None, 5, ["x"])]
    out += [("labels", "metadata.labels", value) for value in (["a", "b"], {"a/b/c": "x"}, {"team": "a b"}, {"team": None},
                                                                {"app.kubernetes.io/name": "x", "team": ""}, {"x": 5}, "a=b", {"Example.COM/x": "x"})]
    out += [("annotations", "metadata.annotations", value) for value in ({"my key": "v"}, {"Note_1": "any / text"}, {"a": 1}, [], {"Example.COM/x": "x"})]
    out += [("namespace", "metadata.namespace", value) for value in ("default", "Bad_NS", "x" * 64)]
    out += [("unknown field", "metadata.unknownField", "x"), ("unknown field", "unknownField", 1), ("unknown field", "specs", {})]
    out += [("bad kind", "kind", value) for value in ({"name": kind}, [kind], kind.lower(), "Other", None, DELETE, 5)]
    out += [("bad apiVersion", "apiVersion", value) for value in ("reasonops.io/v1", "v1", None, DELETE, 1)]
    out += [("bad spec", "spec", value) for value in (None, "text", [], DELETE)]
    return out


def mutations(doc: dict) -> list[tuple[str, str, object]]:
    """Every single mutation of one resource: (category, path, value)."""
    out = _metadata_mutations(doc)
    for path, value in _paths(doc.get("spec", {}), "spec"):
        out += [(category, path, replacement) for category, replacement in _variants(value)]
    return out


def _apply(doc: dict, path: str, value):
    """`with_`, tolerating a path that an earlier mutation of the same resource made unreachable."""
    try:
        return with_(doc, path, value)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        return None


def generated_resources(count: int = GENERATED, seed: int = SEED) -> list[tuple[str, dict]]:
    """`count` resources from the examples, seeded: two thirds with one mutation (the categories in turn, each
    over every field of every example before a field twice), the rest with two to four at once. Each is (description, document)."""
    import random

    rng = random.Random(seed)
    bases = example_resources()
    pools = [(base, mutations(base)) for base in bases]
    single = [(base, mutation) for base, pool in pools for mutation in pool]
    rng.shuffle(single)
    # round robin over the categories; within one, every field of every example before any field again
    by_category: dict[str, list] = {}
    seen: set[tuple[int, str, str]] = set()
    for base, mutation in single:
        key = (id(base), mutation[0], mutation[1])
        queue = by_category.setdefault(mutation[0], [[], []])
        queue[key in seen].append((base, mutation))
        seen.add(key)
    queues = [first + rest for first, rest in by_category.values()]
    singles = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)][: count * 2 // 3]
    out = []
    for base, (category, path, value) in singles:
        doc = _apply(base, path, value)
        if doc is not None:
            out.append((f"{base['kind']}/{base['metadata']['name']}: {category} {path}={_short(value)}", doc))
    while len(out) < count:
        base, pool = rng.choice(pools)
        doc, said = base, []
        for category, path, value in rng.sample(pool, rng.randint(2, 4)):
            changed = _apply(doc, path, value)
            if changed is not None:
                doc = changed
                said.append(f"{category} {path}={_short(value)}")
        out.append((f"{base['kind']}/{base['metadata']['name']}: " + "; ".join(said), doc))
    return out


def _short(value) -> str:
    text = "<deleted>" if value is DELETE else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- judged by the API server and by `reasonops run` --------------------------------------------------

def judge_locally(doc) -> tuple[bool, str]:
    """(accepted, problem) as `reasonops run` decides before running anything; an exception other than its
    one-line error escapes (the caller counts it as a traceback)."""
    from reasonops.errors import WorkloadError
    from reasonops.runner import parse_resource

    try:
        parse_resource(doc)
    except WorkloadError as exc:
        return False, exc.message
    return True, ""


class ApiServer:
    """Judges documents as `kubectl apply -f` (or `kubectl create -f`) with `--dry-run=server` does for a new
    resource: the same request (a create with strict field validation, dry run) to the kind's URL, many at
    once. A document kubectl cannot address (no kind of ours, metadata that is not a mapping) goes through
    kubectl itself.

    (`kubectl apply --server-side` judges explicit nulls differently: the API server prunes them from what is
    created or updated, but refuses them in a server-side apply patch.)"""

    def __init__(self, kubeconfig: str, kubectl: str):
        from kubernetes import client, config

        self.objects = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))
        self.kubeconfig, self.kubectl = kubeconfig, kubectl

    @staticmethod
    def namespace_of(doc) -> str | None:
        """Where kubectl sends a document, or None where it cannot address it."""
        from reasonops.api.v1alpha1 import KINDS

        if not isinstance(doc, dict) or doc.get("apiVersion") != API or not isinstance(doc.get("kind"), str) \
                or doc["kind"] not in KINDS or not isinstance(doc.get("metadata"), dict):
            return None
        namespace = doc["metadata"].get("namespace", "default")
        return namespace if isinstance(namespace, str) and namespace and "/" not in namespace and namespace not in (".", "..") else None

    @staticmethod
    def as_kubectl_sends(value):
        """Numbers as kubectl writes them (Go): an integral float below 1e21 without its fraction (3.0 as 3)."""
        if isinstance(value, dict):
            return {key: ApiServer.as_kubectl_sends(item) for key, item in value.items()}
        if isinstance(value, list):
            return [ApiServer.as_kubectl_sends(item) for item in value]
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
            return int(value)
        return value

    def _apply(self, doc) -> tuple[bool, str]:
        from kubernetes.client.exceptions import ApiException

        from reasonops.api.v1alpha1 import KINDS

        namespace = self.namespace_of(doc)
        if namespace is None:
            return self._kubectl_apply(doc)
        try:
            self.objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, KINDS[doc["kind"]].plural, self.as_kubectl_sends(doc), dry_run="All", field_validation="Strict",
                field_manager="kubectl-client-side-apply", _request_timeout=60)
        except ApiException as exc:
            if not 400 <= exc.status < 500 or exc.status in (401, 403, 409, 429):
                raise
            return False, json.loads(exc.body).get("message", "") if exc.body else str(exc.status)
        return True, ""

    def _kubectl_apply(self, doc) -> tuple[bool, str]:
        import subprocess

        proc = subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, "apply", "--dry-run=server", "-f", "-"],
                              input=json.dumps(doc), capture_output=True, text=True, timeout=60)
        return proc.returncode == 0, " ".join(proc.stderr.split())

    def judge(self, docs: list, threads: int = 8) -> list[tuple[bool, str]]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(self._apply, docs))
