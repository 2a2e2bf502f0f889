# ReasoningDataset workloads: dedupe, decontamination, difficulty filters and teacher chains with
# vLLM offline inference, grading. Build from the repository root:
#   docker buildx build -f images/curate.Dockerfile -t ghcr.io/reasonops/curate:0.1.0 .
ARG CUDA_VERSION=13.0.1
ARG UBUNTU_VERSION=24.04
# The runtime flavour is enough: torch's and vLLM's wheels bring their own CUDA libraries; the base
# provides the driver compatibility layer and the CUDA runtime environment the NVIDIA device plugin expects.
ARG BASE_IMAGE=nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY . .
# The build secret `pipca` (optional) is the CA bundle a TLS-intercepting proxy needs; it is mounted
# for the RUN steps that use pip and is in no layer.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pipca \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --no-deps --wheel-dir /dist .

# `system`: the OS layer, which builds on any Debian-like base (hack/images.sh checks it on a local one).
FROM ${BASE_IMAGE} AS system
ENV DEBIAN_FRONTEND=noninteractive
# bubblewrap isolates each execution of model-written code (this image also runs `reasonops sandbox-serve`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates bubblewrap \
 && rm -rf /var/lib/apt/lists/*
# A virtual environment: Ubuntu's Python refuses system-wide pip installs (PEP 668).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Some Ubuntu bases already have uid 1000 ("ubuntu"); reuse it rather than fail.
RUN (getent group 1000 || groupadd --gid 1000 reasonops) \
 && (getent passwd 1000 || useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin reasonops)

# From here on the CUDA stack: vLLM's CUDA wheels and the FlashAttention wheel built for CUDA 13.
FROM system
# vLLM pins its torch; bump VLLM_VERSION alone and torch follows. The flash-attn wheel must then
# match that torch (see images/README.md); it is needed by the `gpu` extra.
ARG VLLM_VERSION=0.33.0
ARG FLASH_ATTN_WHEEL_URL=https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3.post2/flash_attn-2.8.3.post2+cu13torch2.14cxx11abiTRUE-cp312-cp312-linux_x86_64.whl
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "vllm==${VLLM_VERSION}" "${FLASH_ATTN_WHEEL_URL}"
# Installed against the frozen engine: the extras may add packages but never move vLLM or torch.
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    --mount=type=cache,target=/root/.cache/pip \
    pip freeze | grep -iE '^(vllm|torch|flash[-_]attn|transformers)==' > /opt/venv/constraints.txt \
 && pip install --constraint /opt/venv/constraints.txt "$(ls /dist/reasonops-*.whl)[curate,gpu,tracking]"
# Caches of Hugging Face, vLLM, Triton and torch.compile go under HOME; pods mount /tmp writable.
ENV HOME=/tmp HF_HOME=/tmp/huggingface PYTHONUNBUFFERED=1 VLLM_NO_USAGE_STATS=1
USER 1000:1000
WORKDIR /tmp
CMD ["reasonops", "workload", "--resource", "/etc/reasonops/resource.json"]
