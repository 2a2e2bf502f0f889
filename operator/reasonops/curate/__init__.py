"""The ReasoningDataset workload (see recipe.py): `run_resource(doc, reporter)` in a pod, `main(config)` from Python."""

from .recipe import CurateConfig, config_from_resource, main, run_resource

__all__ = ["CurateConfig", "config_from_resource", "main", "run_resource"]
