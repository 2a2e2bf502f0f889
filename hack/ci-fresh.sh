#!/usr/bin/env bash
# .ci/run as on a new machine: a clean clone of this repository's HEAD with every cache empty (a fresh HOME:
# no Go module or build cache, no ~/.cache/reasonops with the control-plane and node tools and the torch
# wheels, no pip cache), and no reasonops images, base image or Docker build cache. Debian packages stay.
# It REMOVES this machine's reasonops/* and local/* Docker images and prunes Docker's build cache.
#
#   hack/ci-fresh.sh [WORKDIR]     # default /tmp/reasonops-ci-fresh; prints the wall time at the end
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/reasonops-ci-fresh}
rm -rf "$work"
mkdir -p "$work/home/.config/go"
git clone -q "$repo" "$work/repo"
# Machine settings (not caches) a new machine has too.
[[ -f $HOME/.config/go/env ]] && cp "$HOME/.config/go/env" "$work/home/.config/go/env"
for f in .gitconfig .npmrc .profile .bashrc; do [[ -f $HOME/$f ]] && cp "$HOME/$f" "$work/home/"; done
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^(reasonops|local)/' | xargs -r docker rmi -f >/dev/null
  docker builder prune -af >/dev/null 2>&1 || true
fi
cd "$work/repo"
start=$SECONDS
rc=0
HOME=$work/home .ci/run || rc=$?
echo "ci-fresh: rc=$rc in $((SECONDS - start))s"
exit "$rc"
