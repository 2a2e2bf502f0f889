"""The reasonops.io API, defined once as pydantic models."""

from .common import API_VERSION, GROUP, VERSION, resolve_defaults
from .v1alpha1 import KINDS, EvalRun, FineTuneJob, ReasoningDataset

__all__ = ["API_VERSION", "GROUP", "VERSION", "KINDS", "EvalRun", "FineTuneJob", "ReasoningDataset", "resolve_defaults"]
