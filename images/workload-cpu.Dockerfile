# Every workload on CPU, for CPU-only clusters, small models and the real-node tests: curation,
# training (torchrun, DeepSpeed ZeRO on CPU with gloo), evaluation and the CPU model server
# (`reasonops serve`). Build from a context holding the package and a `wheels/` directory with
# PyPI's torch wheel (hack/images.sh assembles it):
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
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
      $(python3 -c 'import os, sysconfig; print("" if os.path.exists(sysconfig.get_paths()["include"] + "/Python.h") else "python3-dev")') \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 1000 reasonops \
 && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin reasonops
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
ARG TORCH_VERSION=2.15.0
# pip resolves the whole set once (a dry run), Triton is dropped from the plan, and the rest is
# installed exactly as resolved, without a second resolution that would add it back.
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    --mount=type=bind,source=wheels,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pipca \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    pip install --quiet --dry-run --ignore-installed --report /tmp/plan.json --find-links /wheels \
      "torch==${TORCH_VERSION}" "$(ls /dist/reasonops-*.whl)[curate,train,eval,tracking]" \
 && python3 -c 'import json, re, sys; \
[print(p["download_info"]["url"]) for p in json.load(open(sys.argv[1]))["install"] \
 if p["metadata"]["name"].lower() != "triton"]' /tmp/plan.json > /tmp/plan.txt \
 && pip install --no-deps --no-compile -r /tmp/plan.txt \
 && rm /tmp/plan.json /tmp/plan.txt
ENV HOME=/tmp HF_HOME=/tmp/huggingface PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
WORKDIR /tmp
CMD ["reasonops", "workload", "--resource", "/etc/reasonops/resource.json"]
