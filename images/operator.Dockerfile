# The operator: `reasonops operator` (kopf) and nothing else; no GPU libraries, no extras.
# Build from the repository root (hack/images.sh builds it on a local Debian base):
#   docker buildx build -f images/operator.Dockerfile -t ghcr.io/reasonops/operator:0.1.0 .
# PYTHON_IMAGE may be any Debian-like image with python3 and its venv module.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# Stage 1: a wheel of the package, so the final image never sees the source tree or build tools.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY . .
# The build secret `pipca` (optional) is the CA bundle a TLS-intercepting proxy needs; it is mounted
# for the RUN steps that use pip and is in no layer.
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pipca \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
# uid/gid 1000: the chart's podSecurityContext runs as 1000 and refuses root.
RUN groupadd --gid 1000 reasonops \
 && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin reasonops
# A virtual environment: Debian's own Python refuses system-wide pip installs (PEP 668).
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=bind,from=wheel,source=/dist,target=/dist \
    --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=pipca \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    pip install --no-compile /dist/*.whl \
 && python -m compileall -q "$(python -c 'import site; print(site.getsitepackages()[0])')"
# The root filesystem is read-only in the cluster: bytecode is compiled above, nothing is written at run time.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
USER 1000:1000
ENTRYPOINT ["reasonops"]
CMD ["operator", "--liveness", "http://0.0.0.0:8081/healthz"]
