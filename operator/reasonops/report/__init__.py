"""HTML reports with plots of training, evaluation and dataset outputs (`reasonops report DIR`).

`plots.py` draws SVG from plain data; `render.py` finds the outputs under a directory and lays out the page.
The workloads call `write_report_quietly` at the end of their runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .render import REPORT_FILE, dataset_section, page, render, write_report, write_report_quietly

__all__ = ["REPORT_FILE", "add_arguments", "command", "dataset_section", "page", "render", "write_report", "write_report_quietly"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `reasonops report`."""
    parser.add_argument("directory", help="an output directory: a run's, or one holding several (the demo's, `reasonops run --output`)")
    parser.add_argument("--output", help=f"where to write the page (default DIRECTORY/{REPORT_FILE})")


def command(args: argparse.Namespace) -> int:
    """Write the report and print its path; exit code 2 with one line when the directory holds no output."""
    from .render import discover

    root = Path(args.directory)
    if not root.is_dir():
        print(f"error: {root} is not a directory", file=sys.stderr)
        return 2
    if discover(root).empty():
        print(f"error: {root} holds no training, evaluation or dataset output (train_log.jsonl, summary.json, manifest.json)",
              file=sys.stderr)
        return 2
    try:
        print(write_report(root, args.output))
    except OSError as exc:
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return 2
    return 0
