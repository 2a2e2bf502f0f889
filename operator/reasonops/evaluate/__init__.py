"""The EvalRun workload (see recipe.py): `run_resource(doc, reporter)` in a pod, `main(config)` from Python,
`grade_main(argv)` behind `reasonops grade`."""

from .recipe import CACHE_FILE, EvalConfig, add_grade_arguments, config_from_resource, grade_command, grade_main, main, run_resource

__all__ = [
    "CACHE_FILE", "EvalConfig", "add_grade_arguments", "config_from_resource", "grade_command", "grade_main", "main", "run_resource",
]
