"""The label keys, annotation names and selectors of the operator's children, in one place.

Every child carries `managed-by`, the kind and name of its resource, and its component; a revision's
children also carry the revision, and a Job's pods their Job. The operator finds its children by these
labels (its watches and indexes) and deletes them by selectors built here, never by hand.
"""

from __future__ import annotations

from typing import Optional

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "reasonops"
LABEL_PART_OF = "app.kubernetes.io/part-of"
PART_OF = "reasonops"
LABEL_KIND = "reasonops.io/kind"
LABEL_NAME = "reasonops.io/name"
LABEL_REVISION = "reasonops.io/revision"
LABEL_COMPONENT = "reasonops.io/component"
LABEL_JOB = "reasonops.io/job"
# The pod template label of the server's pods with the model revision they serve: the evaluation waits for a
# ready pod with the current one (not the old ReplicaSet's pods during a rollout).
LABEL_MODEL_REVISION = "reasonops.io/model-revision"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"

ANNOTATION_SPEC_HASH = "reasonops.io/spec-hash"  # hash of the desired server objects last applied
ANNOTATION_APPLIED_AT = "reasonops.io/applied-at"  # when they were applied (the startup budget's start)
ANNOTATION_MODEL_REVISION = "reasonops.io/model-revision"  # the model revision a server serves
ANNOTATION_ENGINE = "reasonops.io/engine"
ANNOTATION_GENERATION_CONFIG = "reasonops.io/generation-config"

# Components: what a child is to its resource.
COMPONENT_CURATE = "curate"
COMPONENT_TRAIN = "train"
COMPONENT_EVAL = "eval"
COMPONENT_SERVER = "server"
COMPONENT_SANDBOX = "sandbox"
WORKLOAD_COMPONENTS = {"ReasoningDataset": COMPONENT_CURATE, "FineTuneJob": COMPONENT_TRAIN, "EvalRun": COMPONENT_EVAL}

MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}  # what the operator's watches select


def name_label(name: str) -> str:
    """A resource name as a label value (at most 63 characters; resource names may have 253)."""
    return name[:63]


def labels_for(kind: str, name: str, component: str, revision: Optional[str] = None) -> dict[str, str]:
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: PART_OF,
        LABEL_KIND: kind,
        LABEL_NAME: name_label(name),
        LABEL_COMPONENT: component,
    }
    if revision:
        labels[LABEL_REVISION] = revision
    return labels


def component_selector(kind: str, name: str, component: str) -> dict[str, str]:
    """The children of one component of a resource (its server, its sandbox, its workload pods)."""
    return {LABEL_KIND: kind, LABEL_NAME: name_label(name), LABEL_COMPONENT: component}


def revision_selector(kind: str, name: str, revision: str) -> dict[str, str]:
    """The children of one revision of a resource."""
    return {LABEL_KIND: kind, LABEL_NAME: name_label(name), LABEL_REVISION: revision}


def selector_string(selector: dict[str, str]) -> str:
    """A selector as the API's labelSelector parameter writes it."""
    return ",".join(f"{key}={value}" for key, value in selector.items())
