"""The `reasonops` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .api import common as reasons
from .contract import STOPPED_EXIT_CODE
from .errors import Stopped, WorkloadError


def _cmd_crds(args: argparse.Namespace) -> int:
    from .api import crdgen

    targets = [Path(args.output)]
    chart = Path(args.chart)
    if chart.is_dir():
        targets.append(chart / "crds")
    for path in crdgen.write_all(targets):
        print(path)
    docs = Path(args.docs)
    if docs.parent.is_dir():
        docs.write_text(crdgen.render_defaults_doc())
        print(docs)
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    import kopf  # noqa: F401  (fails early and clearly when the operator's dependencies are missing)

    from .controller.settings import Settings

    argv = ["run", "--standalone", "-m", "reasonops.controller.handlers"]
    namespaces = args.namespace or list(Settings.from_env().namespaces)
    argv += [a for n in namespaces for a in ("--namespace", n)] or ["--all-namespaces"]
    if args.liveness:
        argv += ["--liveness", args.liveness]
    if args.verbose:
        argv.append("--verbose")
    sys.argv = ["kopf", *argv]
    from kopf.cli import main as kopf_main  # kopf's own CLI, so its flags behave as documented

    return kopf_main() or 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_local

    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise WorkloadError(reasons.REASON_INVALID_ARGUMENT, f"--output {args.output} is a file; give a directory (it is created if missing)")
    summaries = run_local(args.file, args.output, only=args.only)
    for s in summaries:
        print(f"{s['kind']:<17} {s['name']:<24} revision {s['revision']}  {s['seconds']:>7}s  {s['location']}")
    return 0


def _cmd_workload(args: argparse.Namespace) -> int:
    from .runner import run_in_pod

    return run_in_pod(args.resource)


def _cmd_grade(args: argparse.Namespace) -> int:
    from .evaluate import grade_command
    from .sandbox import ISOLATION_ENV

    if args.isolation:  # read where the sandbox is made (`sandbox.decide_isolation`), like the variable itself
        os.environ[ISOLATION_ENV] = args.isolation
    return grade_command(args)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .evaluate.compare import command

    return command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import command

    return command(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(output=args.output, keep=args.keep) or 0


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from .tinymodel import build_servable_model

    print(build_servable_model(args.out_dir, layers=args.layers, hidden=args.hidden))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import run

    run(args, args.parser, prefer_vllm=True)
    return 0


def _cmd_sandbox_serve(args: argparse.Namespace) -> int:
    from .sandbox.service import serve

    serve(args.host, args.port, args.workers, args.isolation)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasonops", description="Curate, fine-tune and evaluate reasoning models on Kubernetes.")
    parser.add_argument("--log-level", default=os.environ.get("REASONOPS_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the whole chain on this machine (no cluster, no GPU, no downloads)")
    p.add_argument("--output", default="./reasonops-demo", help="directory for the dataset, model and reports")
    p.add_argument("--keep", action="store_true", help="reuse results of an earlier demo run in --output")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("run", help="run the resources of a YAML file locally, as their pods would")
    p.add_argument("file")
    p.add_argument("--output", default="./reasonops-out")
    p.add_argument("--only", help="run only the resource with this name")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("operator", help="run the operator (kopf)")
    p.add_argument("--namespace", action="append", help="watch this namespace (repeatable); default all")
    p.add_argument("--liveness", default=os.environ.get("REASONOPS_LIVENESS", ""), help="e.g. http://0.0.0.0:8081/healthz")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=_cmd_operator)

    p = sub.add_parser("crds", help="write the CRDs generated from the API models")
    p.add_argument("--output", default="crds")
    p.add_argument("--chart", default="charts/reasonops", help="also write into this chart's crds/ when it exists")
    p.add_argument("--docs", default="docs/api-defaults.md", help="also write the defaults table here when its directory exists")
    p.set_defaults(func=_cmd_crds)

    p = sub.add_parser("workload", help="run the workload of a resource document (pod entry point)")
    p.add_argument("--resource", default="/etc/reasonops/resource.json")
    p.set_defaults(func=_cmd_workload)

    # The options are defined by the modules themselves (one definition for `python -m` and `reasonops`);
    # importing them here costs nothing heavy: torch and math-verify load only when used.
    from .evaluate import add_grade_arguments
    from .sandbox import ISOLATION_ENV, ISOLATIONS
    from .serve import add_arguments as add_serve_arguments

    isolation_help = (f"how model-written code runs: bwrap (bubblewrap, refusing where it does not work) or unconfined "
                      f"(the opt-out: process limits only where bubblewrap does not work); default: ${ISOLATION_ENV} or bwrap")

    p = sub.add_parser("grade", help="score an existing responses file offline", description="Grade a responses file against a benchmark.")
    add_grade_arguments(p)
    p.add_argument("--isolation", choices=ISOLATIONS, default=None, help=isolation_help)
    p.set_defaults(func=_cmd_grade)

    from .evaluate.compare import add_arguments as add_compare_arguments
    from .report import add_arguments as add_report_arguments

    p = sub.add_parser("compare", help="the paired difference of two evaluations per benchmark, with its 95%% interval",
                       description="Compare two evaluation outputs (B - A) on the same problems, paired per problem.")
    add_compare_arguments(p)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("report", help="render the HTML report (plots) of an output directory",
                       description="Write a self-contained HTML report of the runs found under a directory.")
    add_report_arguments(p)
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("serve", help="serve a model directory with a local OpenAI-compatible server (CPU): vLLM's CPU engine where it is installed",
                       description="OpenAI-compatible server for a local model on CPU: vLLM's CPU engine where it is installed "
                                   "($REASONOPS_VLLM, or vllm on PATH), else reasonops' small server.")
    add_serve_arguments(p)
    p.set_defaults(func=_cmd_serve, parser=p)

    p = sub.add_parser("sandbox-serve", help="serve sandboxed execution of programs over HTTP (the sandbox pod)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="executions at a time")
    p.add_argument("--isolation", choices=ISOLATIONS, default=None, help=isolation_help)
    p.set_defaults(func=_cmd_sandbox_serve)

    p = sub.add_parser("tiny-model", help="write a tiny random model in Hugging Face format (a shape vLLM's CPU engine serves)")
    p.add_argument("out_dir")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.set_defaults(func=_cmd_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ["REASONOPS_LOG_LEVEL"] = args.log_level.upper()
    if args.command != "operator":  # kopf configures logging for the operator itself
        logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except WorkloadError as exc:
        print(f"error: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    except Stopped as exc:  # Ctrl-C or SIGTERM during training, after the current step's checkpoint
        print(f"stopped: {exc}", file=sys.stderr)
        return STOPPED_EXIT_CODE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
