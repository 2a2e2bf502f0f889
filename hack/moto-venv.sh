#!/usr/bin/env bash
# moto's S3-compatible server for the export tests (tests/test_exports.py), in a virtual environment of its own
# (.venv-moto by default): moto needs botocore, which pins python-dateutil below 3, older than the test
# environment's; the tests start `moto_server` from here as a separate program and talk to it over HTTP.
#
#   hack/moto-venv.sh [DIR]     # make DIR (default .venv-moto) if it is not made yet; prints nothing else
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${1:-.venv-moto}
PYTHON=${PYTHON:-python3}
MOTO_VERSION=${MOTO_VERSION:-5.2.6}
STAMP=$VENV/.reasonops-moto-$MOTO_VERSION

[[ -f $STAMP ]] && exit 0
echo "[moto-venv] making $VENV: moto[server] $MOTO_VERSION" >&2
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip --quiet --disable-pip-version-check install "moto[server]==$MOTO_VERSION"
touch "$STAMP"
