#!/usr/bin/env bash
# The test command. From nothing: a virtual environment with every extra, the control-plane tools
# (built once from the Go module proxy and cached), then the whole suite; cluster tests start and stop
# their own throwaway control plane (tests/conftest.py). Extra arguments go to pytest.
#
#   hack/test.sh                 # everything
#   hack/test.sh -m "not cluster" # no control plane
#   hack/test.sh -m realnode      # only the real-node tests (root; Docker and the node's tools are set up
#                                 # by hack/cluster.sh up --real-node and hack/images.sh, and cached)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

hack/build-tools.sh >/dev/null

# Model-written code runs only under bubblewrap (as in the curate and eval images) unless opted out
# (REASONOPS_SANDBOX_ISOLATION=unconfined), and the bubblewrap tests are not skipped: install it where we may.
if ! command -v bwrap >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  apt-get install -y -q bubblewrap >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1; } \
    || echo "test.sh: could not install bubblewrap; the tests that run model-written code fail (they refuse without it)" >&2
fi

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
