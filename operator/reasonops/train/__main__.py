"""`python -m reasonops.train --resource FILE`: run one process of a FineTuneJob (local runs, torchrun workers)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ..errors import WorkloadError
from ..progress import Reporter
from . import run_resource


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resource", required=True, help="the FineTuneJob workload document (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with open(args.resource, encoding="utf-8") as fh:
        doc = json.load(fh)
    reporter = Reporter.from_env()
    try:
        result = run_resource(doc, reporter)
    except WorkloadError as exc:
        print(json.dumps({"error": exc.to_dict()}), file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":
        reporter.finish(result)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
