#!/usr/bin/env bash
# Builds the binaries of a throwaway Kubernetes control plane from Go modules
# (no Docker, no release downloads): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok, helm and Kueue's controller manager; with --real-node also the
# node's kubelet, kube-proxy and CoreDNS. Results are cached by version under $REASONOPS_TOOLS (default ~/.cache/reasonops/tools),
# so a second run costs nothing.
#
#   hack/build-tools.sh              # build what is missing, print the bin directory
#   hack/build-tools.sh --real-node  # the same plus the real node's binaries
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.21.4}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
KUEUE_VERSION=${KUEUE_VERSION:-v0.17.0}
TOOLS=${REASONOPS_TOOLS:-$HOME/.cache/reasonops/tools}
BIN="$TOOLS/bin"
mkdir -p "$BIN"
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

log() { echo "[build-tools] $*" >&2; }
# shellcheck source=hack/phases.sh
source "$(dirname "${BASH_SOURCE[0]}")/phases.sh"

staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
  kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller)

build_kubernetes() {
  local stamp="$BIN/.kubernetes-$K8S_VERSION"
  [[ -f $stamp ]] && return 0
  log "building Kubernetes $K8S_VERSION (first time only; long on 2 cores)"
  local mod="$TOOLS/src/kubernetes-$K8S_VERSION" minor=${K8S_VERSION#v1.}
  local staging_version="v0.${minor}"
  mkdir -p "$mod"
  {
    echo "module reasonops.io/k8sbuild"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    for s in "${staging[@]}"; do echo "replace k8s.io/$s => k8s.io/$s $staging_version"; done
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  local major=1 kminor=${minor%%.*}
  local ld=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$kminor -X $p.gitTreeState=clean"
  done
  (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true
   cd "$mod" && go build -trimpath -tags providerless -ldflags "-s -w $ld" -o "$BIN/" \
     k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
     k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  touch "$stamp"
}

# kubelet and kube-proxy: the same wrapper as above in a module of their own (their dependencies,
# cAdvisor and the like, stay out of the control plane's module), the same flags and version stamp.
build_node() {
  local stamp="$BIN/.kubernetes-node-$K8S_VERSION"
  [[ -f $stamp ]] && return 0
  log "building kubelet and kube-proxy $K8S_VERSION (first time only; a few minutes)"
  local mod="$TOOLS/src/kubernetes-node-$K8S_VERSION" minor=${K8S_VERSION#v1.}
  mkdir -p "$mod"
  {
    echo "module reasonops.io/k8snodebuild"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    for s in "${staging[@]}"; do echo "replace k8s.io/$s => k8s.io/$s v0.${minor}"; done
  } >"$mod/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kubelet"\n\t_ "k8s.io/kubernetes/cmd/kube-proxy"\n)\n' >"$mod/tools.go"
  (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true
   cd "$mod" && go build -trimpath -tags providerless -ldflags "-s -w $(version_ldflags)" -o "$BIN/" \
     k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  touch "$stamp"
}

version_ldflags() {
  local minor=${K8S_VERSION#v1.} ld="" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=${minor%%.*} -X $p.gitTreeState=clean"
  done
  echo "$ld"
}

# CoreDNS with only the plugins the node's Corefile uses (a small main of our own; CoreDNS's own
# main links all of them).
build_coredns() {
  local stamp="$BIN/.coredns-$COREDNS_VERSION"
  [[ -f $stamp ]] && return 0
  log "building CoreDNS $COREDNS_VERSION"
  local mod="$TOOLS/src/coredns-$COREDNS_VERSION" p
  mkdir -p "$mod"
  printf 'module reasonops.io/corednsbuild\ngo 1.24\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >"$mod/go.mod"
  {
    printf 'package main\n\nimport (\n\t"github.com/coredns/coredns/coremain"\n'
    for p in bind cache errors forward health kubernetes log loop ready; do
      printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$p"
    done
    printf ')\n\nfunc main() { coremain.Run() }\n'
  } >"$mod/main.go"
  (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true
   cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" .)
  touch "$stamp"
}

build_etcd() {
  local stamp="$BIN/.etcd-$ETCD_VERSION"
  [[ -f $stamp ]] && return 0
  log "building etcd $ETCD_VERSION"
  local mod="$TOOLS/src/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  printf 'module reasonops.io/etcdbuild\ngo 1.24\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$mod/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$mod/tools.go"
  (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true
   cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
  touch "$stamp"
}

build_go_install() {  # name module@version
  local name=$1 pkg=$2 stamp="$BIN/.$1-${2##*@}"
  [[ -f $stamp ]] && return 0
  log "building $pkg"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "$pkg"
  touch "$stamp"
}

# Kueue's controller manager (its own module's versions; it talks to the v1.34 API server). Its CRDs
# stay in the module cache: $(go env GOMODCACHE)/sigs.k8s.io/kueue@VERSION/config/components/crd/bases.
build_kueue() {
  local stamp="$BIN/.kueue-$KUEUE_VERSION"
  [[ -f $stamp ]] && return 0
  log "building Kueue $KUEUE_VERSION (first time only; several minutes on 2 cores)"
  GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
    "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  touch "$stamp"
}

# One after another, in one Go build cache ($(go env GOCACHE)): the node's binaries reuse the control
# plane's compiled packages. Each build's wall time goes to hack/test.sh's phase table (hack/phases.sh).
timed tools/etcd build_etcd
timed tools/kwok build_go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
timed tools/helm build_go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
timed tools/kubernetes build_kubernetes
timed tools/kueue build_kueue
if [[ ${1:-} == --real-node ]]; then
  timed tools/kubelet+kube-proxy build_node
  timed tools/coredns build_coredns
fi
# kwok's default stages ship in its module source.
stages="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
if [[ ! -d $stages ]]; then
  (cd "$TOOLS/src" && GOFLAGS= go mod download -x "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null 2>&1)
fi
mkdir -p "$TOOLS/stages" && cp -r "$stages/." "$TOOLS/stages/" && chmod -R u+w "$TOOLS/stages"
# Kueue's CRDs and webhook manifests (tests/kueue_support.py) are read from its module source.
if [[ ! -d "$(go env GOMODCACHE)/sigs.k8s.io/kueue@$KUEUE_VERSION/config/components" ]]; then
  (cd "$TOOLS/src" && GOFLAGS= go mod download "sigs.k8s.io/kueue@$KUEUE_VERSION" >/dev/null 2>&1)
fi
echo "$BIN"
