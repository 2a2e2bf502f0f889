# syntax=docker/dockerfile:1.7
# EvalRun workloads and the model server: vLLM's own OpenAI server image plus reasonops. The operator
# runs `reasonops workload ...` in benchmark pods and `vllm serve ...` in server pods of this image.
# Build from the repository root:
#   docker buildx build -f images/eval.Dockerfile -t ghcr.io/reasonops/eval:0.1.0 .
ARG VLLM_VERSION=0.33.0

FROM python:3.12-slim-bookworm AS wheel
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /dist .

FROM vllm/vllm-openai:v${VLLM_VERSION}
# Freeze what vLLM was built and tested with, so the eval extra cannot move it. vLLM lives in the
# system Python of this image, so installing beside it there is intended (PIP_BREAK_SYSTEM_PACKAGES).
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    --mount=type=cache,target=/root/.cache/pip \
    python3 -m pip freeze | grep -iE '^(vllm|torch|torchvision|torchaudio|transformers|xformers|flashinfer-python|triton)==' > /tmp/constraints.txt \
 && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --constraint /tmp/constraints.txt "$(ls /dist/reasonops-*.whl)[eval]" \
 && rm /tmp/constraints.txt
RUN (getent group 1000 || groupadd --gid 1000 reasonops) \
 && (getent passwd 1000 || useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin reasonops)
ENV HOME=/tmp HF_HOME=/tmp/huggingface PYTHONUNBUFFERED=1 VLLM_NO_USAGE_STATS=1
USER 1000:1000
WORKDIR /tmp
# vLLM's image starts its server by default; here the pod's command decides (workload or `vllm serve`).
ENTRYPOINT []
CMD ["reasonops", "workload", "--resource", "/etc/reasonops/resource.json"]
