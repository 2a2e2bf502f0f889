"""`python -m reasonops.train --resource FILE`: the same entry as `reasonops workload --resource FILE`.

Kept as an alias for local runs and `torchrun ... -m reasonops.train`: it goes through the pod runner, so
a job of several processes is launched the same way, and only the reporting rank publishes the result.
"""

from __future__ import annotations

import argparse
import logging
import sys


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reasonops.train", description=__doc__)
    parser.add_argument("--resource", required=True, help="the FineTuneJob workload document (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..runner import run_in_pod

    return run_in_pod(args.resource)


if __name__ == "__main__":
    sys.exit(cli())
