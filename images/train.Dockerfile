# FineTuneJob workloads: torchrun + DeepSpeed ZeRO, FlashAttention-2, Liger kernels. Build from the
# repository root (the DeepSpeed ops compile for a while):
#   docker buildx build -f images/train.Dockerfile -t ghcr.io/reasonops/train:0.1.0 .
# The devel flavour stays in the final image on purpose: DeepSpeed and Triton compile kernels at run
# time (ops not prebuilt below, fused kernels), and that needs nvcc and the CUDA headers.
ARG CUDA_VERSION=13.0.1
ARG UBUNTU_VERSION=24.04
ARG BASE_IMAGE=nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu${UBUNTU_VERSION}
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# GPU generations kernels are compiled for: A100 (8.0), L40S (8.9), H100/H200 (9.0), B200 (10.0).
ARG TORCH_CUDA_ARCH_LIST="8.0;8.9;9.0;10.0"

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
# libibverbs/librdmacm let NCCL use InfiniBand/RoCE between nodes when the node has it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ninja-build \
      ca-certificates libibverbs1 librdmacm1 \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN (getent group 1000 || groupadd --gid 1000 reasonops) \
 && (getent passwd 1000 || useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin reasonops)

# From here on the CUDA stack: torch's CUDA wheels, then nvcc for DeepSpeed's ops.
FROM system AS base
# torch's CUDA major must match the base image's nvcc (the PyPI wheel of torch 2.14 is built for CUDA 13).
ARG TORCH_VERSION=2.14.0
ARG TORCH_INDEX_URL=
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}" \
 && pip freeze | grep -iE '^(torch|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)==' > /opt/venv/constraints.txt

# Stage 2: DeepSpeed with its training ops compiled ahead of time for TORCH_CUDA_ARCH_LIST.
# Without this every pod JIT-compiles them at start (minutes per node, and a writable cache).
FROM base AS deepspeed
ARG DEEPSPEED_VERSION=0.19.8
ARG TORCH_CUDA_ARCH_LIST
ARG MAX_JOBS=8
# Without build isolation the build sees the installed torch; it then needs its build tools here.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install setuptools wheel packaging psutil py-cpuinfo ninja numpy \
 && TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST}" MAX_JOBS="${MAX_JOBS}" \
    DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1 DS_BUILD_UTILS=1 \
    pip wheel --no-deps --no-build-isolation --wheel-dir /dist "deepspeed==${DEEPSPEED_VERSION}"

FROM base
# FlashAttention-2 as a prebuilt wheel: compiling it takes hours. The wheel must match torch
# (major.minor), the CUDA major, Python 3.12 and the C++11 ABI (see images/README.md).
ARG FLASH_ATTN_WHEEL_URL=https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3.post2/flash_attn-2.8.3.post2+cu13torch2.14cxx11abiTRUE-cp312-cp312-linux_x86_64.whl
ARG LIGER_KERNEL_VERSION=0.8.5
ARG TORCH_CUDA_ARCH_LIST
RUN --mount=type=bind,from=deepspeed,source=/dist,target=/ds \
    --mount=type=bind,from=wheel,source=/dist,target=/dist \
    --mount=type=cache,target=/root/.cache/pip \
    pip install --constraint /opt/venv/constraints.txt \
      /ds/deepspeed-*.whl "${FLASH_ATTN_WHEEL_URL}" "liger-kernel==${LIGER_KERNEL_VERSION}" \
      "$(ls /dist/reasonops-*.whl)[train,tracking]"
# Caches (Hugging Face, Triton, torch extensions) go under HOME; pods mount /tmp writable. Kernels
# compiled at run time target the same GPU generations as the prebuilt ones.
ENV HOME=/tmp HF_HOME=/tmp/huggingface PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}
USER 1000:1000
WORKDIR /tmp
CMD ["reasonops", "workload", "--resource", "/etc/reasonops/resource.json"]
