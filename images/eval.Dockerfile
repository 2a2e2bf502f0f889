# EvalRun workloads and the model server: vLLM's own OpenAI server image plus reasonops. The operator
# runs `reasonops workload ...` in benchmark pods and `vllm serve ...` in server pods of this image.
# Build from the repository root:
#   docker buildx build -f images/eval.Dockerfile -t ghcr.io/reasonops/eval:0.1.0 .
ARG VLLM_VERSION=0.33.0
ARG BASE_IMAGE=vllm/vllm-openai:v${VLLM_VERSION}
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY . .
# The build secret `pipca` (optional) is the CA bundle a TLS-intercepting proxy needs; it is mounted
# for the RUN steps that use pip and is in no layer.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pipca \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --no-deps --wheel-dir /dist .

# `system`: the user, which builds on any Debian-like base (hack/images.sh checks it on a local one).
FROM ${BASE_IMAGE} AS system
RUN (getent group 1000 || groupadd --gid 1000 reasonops) \
 && (getent passwd 1000 || useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin reasonops)

# From here on vLLM's image (its CUDA build of vLLM and torch) is needed.
FROM system
# Freeze what vLLM was built and tested with, so the eval extra cannot move it. vLLM lives in the
# system Python of this image, so installing beside it there is intended (PIP_BREAK_SYSTEM_PACKAGES).
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    --mount=type=cache,target=/root/.cache/pip \
    python3 -m pip freeze | grep -iE '^(vllm|torch|torchvision|torchaudio|transformers|xformers|flashinfer-python|triton)==' > /tmp/constraints.txt \
 && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --constraint /tmp/constraints.txt "$(ls /dist/reasonops-*.whl)[eval,tracking]" \
 && rm /tmp/constraints.txt
ENV HOME=/tmp HF_HOME=/tmp/huggingface PYTHONUNBUFFERED=1 VLLM_NO_USAGE_STATS=1
USER 1000:1000
WORKDIR /tmp
# vLLM's image starts its server by default; here the pod's command decides (workload or `vllm serve`).
ENTRYPOINT []
CMD ["reasonops", "workload", "--resource", "/etc/reasonops/resource.json"]
