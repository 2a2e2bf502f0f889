#!/usr/bin/env bash
# A throwaway Kubernetes control plane for tests, without Docker: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (simulated GPU nodes and pod lifecycles,
# stages in hack/kwok-stages.yaml), all on 127.0.0.1 with free ports, in one directory.
#
#   hack/cluster.sh up     # start the cluster (or reuse a running one); last line: KUBECONFIG=<path>
#   hack/cluster.sh up --real-node  # the same plus a real kubelet node running containers (hack/real-node.sh)
#   hack/cluster.sh env    # print KUBECONFIG=<path> of the running cluster (exit 1 if none)
#   hack/cluster.sh down   # stop every process `up` started and remove the cluster directory
#
# Environment:
#   REASONOPS_CLUSTER_DIR      cluster directory (default /tmp/reasonops-cluster); one cluster each
#   REASONOPS_TOOLS            tool cache of hack/build-tools.sh (default ~/.cache/reasonops/tools)
#   REASONOPS_GPU_NODES        number of simulated nodes gpu-node-0..N-1 (default 4)
#   REASONOPS_CLUSTER_TIMEOUT  seconds each component may take to come up (default 120)
#   REASONOPS_REAL_NODE        1: as `up --real-node`
#   REAL_NODE_IMAGES           images of images/ loaded into the real node (default: operator workload-cpu);
#                              their references are written to <cluster dir>/images as NAME=IMAGE lines
#
# The directory holds pki/, logs/<component>.log, the etcd data, `pids` (one "name pid" per line)
# and `kubeconfig` (admin: a client certificate in group system:masters).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_DIR=$(realpath -m "${REASONOPS_CLUSTER_DIR:-/tmp/reasonops-cluster}")
TOOLS=${REASONOPS_TOOLS:-$HOME/.cache/reasonops/tools}
BIN=$TOOLS/bin
GPU_NODES=${REASONOPS_GPU_NODES:-4}
TIMEOUT=${REASONOPS_CLUSTER_TIMEOUT:-120}
STAGES=$ROOT/hack/kwok-stages.yaml
REAL_NODE=${REASONOPS_REAL_NODE:-0}
API_HOST=127.0.0.1
REAL_NODE_IMAGES=${REAL_NODE_IMAGES:-operator workload-cpu}

PKI=$CLUSTER_DIR/pki
LOGS=$CLUSTER_DIR/logs
PIDS=$CLUSTER_DIR/pids
KCFG=$CLUSTER_DIR/kubeconfig
# Written by `up` only; `down` refuses to delete a directory without it, so a mistyped
# REASONOPS_CLUSTER_DIR can never make us `rm -rf` someone's data.
MARKER=$CLUSTER_DIR/.reasonops-cluster

log() { echo "[cluster] $*" >&2; }
die() { echo "[cluster] ERROR: $*" >&2; exit 1; }
kubectl() { "$BIN/kubectl" --kubeconfig "$KCFG" "$@"; }
# shellcheck source=hack/real-node.sh
source "$ROOT/hack/real-node.sh"

# ---------------------------------------------------------------------------------------------
# Processes

# True when pid is alive and is one of ours: its command line mentions the cluster directory
# (every component gets a path inside it), which guards against pids recycled by the kernel.
pid_is_ours() {
  local pid=$1 cmdline
  [[ -r /proc/$pid/cmdline ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$CLUSTER_DIR"* ]]
}

# start NAME BINARY ARGS...: runs a component in the background, logging to logs/NAME.log.
# setsid keeps it out of the caller's process group (a Ctrl-C in the terminal that ran `up`
# later must not kill the cluster), stdin/stdout/stderr are detached so a caller capturing
# our output (pytest's subprocess.run) is not kept waiting, and fd 9 (our lock) is closed.
start() {
  local name=$1; shift
  log "starting $name"
  setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 9>&- &
  local pid=$! i
  echo "$name $pid" >>"$PIDS"
  # Until the fork has exec'd, /proc/PID/cmdline is still this script's, which pid_is_ours would
  # take for a dead component (wait_for then failed at random on a loaded machine).
  for ((i = 0; i < 100; i++)); do
    pid_is_ours "$pid" || ! [[ -e /proc/$pid ]] && break
    sleep 0.05
  done
}

# Pids of the processes recorded in the pids file, last started first.
recorded_pids() {
  [[ -f $PIDS ]] || return 0
  tac "$PIDS" | awk '{print $2}'
}

# TERM everything we started (dependents first), wait up to 10 s, then KILL what is left.
stop_all() {
  local pid alive=() i
  for pid in $(recorded_pids); do
    if pid_is_ours "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      alive+=("$pid")
    fi
  done
  for ((i = 0; i < 100 && ${#alive[@]} > 0; i++)); do
    sleep 0.1
    local still=()
    for pid in "${alive[@]}"; do pid_is_ours "$pid" && still+=("$pid"); done
    alive=("${still[@]+"${still[@]}"}")
  done
  for pid in "${alive[@]+"${alive[@]}"}"; do
    log "pid $pid ignored SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -f "$PIDS"
}

# True when every recorded process is alive and the apiserver is ready.
cluster_running() {
  local pid
  [[ -f $PIDS && -f $KCFG ]] || return 1
  for pid in $(recorded_pids); do pid_is_ours "$pid" || return 1; done
  api_ready
}

# Holds an exclusive lock for the rest of the script, so concurrent `up`/`down` calls on the
# same directory (two pytest sessions, say) take turns instead of racing.
lock_cluster() {
  mkdir -p "$(dirname "$CLUSTER_DIR")"
  exec 9>"$CLUSTER_DIR.lock"
  flock -w 900 9 || die "timed out waiting for the lock $CLUSTER_DIR.lock"
}

# ---------------------------------------------------------------------------------------------
# Waiting, with a clear failure

# fail NAME MESSAGE: reports which component failed and the tail of its log, then exits
# (the EXIT trap of `up` stops the processes).
fail() {
  local name=$1; shift
  echo "[cluster] ERROR: $*" >&2
  if [[ -f $LOGS/$name.log ]]; then
    echo "[cluster] last lines of $LOGS/$name.log:" >&2
    tail -n 40 "$LOGS/$name.log" | sed 's/^/    /' >&2
  fi
  exit 1
}

# wait_for NAME WHAT COMMAND...: polls COMMAND until it succeeds, failing early if the
# component's process died and late after $TIMEOUT seconds.
wait_for() {
  local name=$1 what=$2; shift 2
  local pid deadline=$((SECONDS + TIMEOUT))
  pid=$(awk -v n="$name" '$1 == n {print $2}' "$PIDS")
  until "$@" >/dev/null 2>&1; do
    if [[ -n $pid ]] && ! pid_is_ours "$pid"; then
      fail "$name" "$name exited while waiting for $what"
    fi
    ((SECONDS < deadline)) || fail "$name" "$what: not within ${TIMEOUT}s"
    sleep 0.3
  done
}

url_ok() { curl -sf --max-time 3 -o /dev/null "$@"; }
api_url() { awk '/server:/ {print $2; exit}' "$KCFG"; }
api_ready() {
  [[ $(curl -s --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$(api_url)/readyz") == ok ]]
}

# ---------------------------------------------------------------------------------------------
# Set-up pieces

# free_ports N: N distinct free TCP ports on 127.0.0.1. All sockets stay open until every port is
# picked, so the N are distinct; the small window before the components bind them is accepted.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# One CA signs the apiserver's serving certificate and the admin client certificate (O=system:masters,
# used by kubectl, the tests and the other components); a separate RSA key pair signs
# service-account tokens (TokenRequest). Key usages and key identifiers are set explicitly because
# strict verifiers (Python 3.13's ssl default) reject certificates without them.
make_pki() {
  mkdir -p "$PKI"
  cat >"$PKI/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,IP:10.88.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
  local ossl=(openssl req -config "$PKI/openssl.cnf" -nodes -newkey rsa:2048)
  "${ossl[@]}" -x509 -days 3650 -extensions ca -subj "/CN=reasonops-test-ca" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  sign_cert apiserver server "/CN=kube-apiserver"
  sign_cert admin client "/O=system:masters/CN=reasonops-admin"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
}

# sign_cert NAME EXTENSIONS SUBJECT: a key and a certificate signed by the CA.
sign_cert() {
  local name=$1 ext=$2 subj=$3
  openssl req -config "$PKI/openssl.cnf" -new -nodes -newkey rsa:2048 -subj "$subj" \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -extfile "$PKI/openssl.cnf" -extensions "$ext" -out "$PKI/$name.crt" 2>/dev/null
}

# write_kubeconfig PORT: credentials embedded, so the file can be copied or read by any client.
write_kubeconfig() {
  local b64=(base64 -w0)
  cat >"$KCFG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: reasonops
  cluster:
    server: https://$API_HOST:$1
    certificate-authority-data: $("${b64[@]}" "$PKI/ca.crt")
users:
- name: reasonops-admin
  user:
    client-certificate-data: $("${b64[@]}" "$PKI/admin.crt")
    client-key-data: $("${b64[@]}" "$PKI/admin.key")
contexts:
- name: reasonops
  context:
    cluster: reasonops
    user: reasonops-admin
    namespace: default
current-context: reasonops
EOF
  chmod 600 "$KCFG"
}

start_etcd() {  # client-port peer-port
  start etcd "$BIN/etcd" --name=reasonops --data-dir="$CLUSTER_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$1" --advertise-client-urls="http://127.0.0.1:$1" \
    --listen-peer-urls="http://127.0.0.1:$2" --initial-advertise-peer-urls="http://127.0.0.1:$2" \
    --initial-cluster="reasonops=http://127.0.0.1:$2" \
    --unsafe-no-fsync=true --log-level=warn
  wait_for etcd "etcd health" url_ok "http://127.0.0.1:$1/health"
}

# ServiceAccount admission is off so pods never wait for a namespace's default ServiceAccount;
# the endpoint reconciler is off because there is no real advertise address on loopback. With a
# real node both are on: pods get their ServiceAccount tokens, and the `kubernetes` Service points
# at the apiserver on the bridge address, where the kubelet and the pods reach it.
start_apiserver() {  # port etcd-port
  local node_flags=(--disable-admission-plugins=ServiceAccount --endpoint-reconciler-type=none)
  if ((REAL_NODE)); then
    node_flags=(--endpoint-reconciler-type=lease --kubelet-preferred-address-types=InternalIP,Hostname
      --kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key")
  fi
  start kube-apiserver "$BIN/kube-apiserver" \
    --bind-address="$API_HOST" --advertise-address="$API_HOST" --secure-port="$1" \
    --etcd-servers="http://127.0.0.1:$2" --cert-dir="$PKI" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=Node,RBAC --allow-privileged=true "${node_flags[@]}" \
    --profiling=false
  wait_for kube-apiserver "kube-apiserver /readyz" api_ready
}

# Controllers that need a cloud provider are left out explicitly; service accounts' own
# credentials are not used, so the controllers run as the admin (system:masters).
start_controller_manager() {  # port
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$KCFG" \
    --bind-address=127.0.0.1 --secure-port="$1" --leader-elect=false \
    --controllers='*,-cloud-node-lifecycle-controller,-node-route-controller,-service-lb-controller' \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
    --use-service-account-credentials=false \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --profiling=false
}

start_scheduler() {  # port
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$KCFG" \
    --bind-address=127.0.0.1 --secure-port="$1" --leader-elect=false --profiling=false
}

# kwok manages only nodes annotated kwok.x-k8s.io/node=fake, with our stages instead of its
# defaults. Its pod CIDR is moved off 10.0.0.0/24, which is the service range.
start_kwok() {
  start kwok "$BIN/kwok" --kubeconfig="$KCFG" --config="$STAGES" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.244.0.0/16 --node-lease-duration-seconds=40
}

# Simulated GPU nodes without taints: any pod can land on them (use nodeSelector type=kwok to
# be explicit). kwok's node-initialize stage keeps the capacity given here.
create_gpu_nodes() {
  local i
  for ((i = 0; i < GPU_NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: gpu-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    nvidia.com/gpu.present: "true"
    kubernetes.io/hostname: gpu-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
status:
  capacity: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "8"}
  allocatable: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "8"}
EOF
  done | kubectl create -f - >/dev/null
}

nodes_ready() {
  local ready
  ready=$(kubectl get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{.spec.taints}{"\n"}{end}')
  # Ready, and the node lifecycle controller has lifted its not-ready taints again.
  [[ $(grep -c '^True $' <<<"$ready") -eq $GPU_NODES ]]
}

# ---------------------------------------------------------------------------------------------
# Commands

print_env() { echo "KUBECONFIG=$KCFG"; }

on_up_exit() {
  local rc=$1
  ((rc == 0)) && return 0
  log "start-up failed; stopping what was started (logs kept in $LOGS; \`$0 down\` removes them)"
  stop_all
  [[ -f $CLUSTER_DIR/real-node ]] && stop_real_node
}

cmd_up() {
  [[ ${1:-} == --real-node ]] && REAL_NODE=1
  # With a real node the apiserver listens on the bridge address (never 0.0.0.0).
  ((REAL_NODE)) && API_HOST=$NODE_IP
  lock_cluster
  if cluster_running && { ((!REAL_NODE)) || [[ -f $CLUSTER_DIR/real-node ]]; }; then
    # Images may have changed since: load what is not on the node yet (seconds when nothing changed).
    ((REAL_NODE)) && load_node_images
    print_env
    return 0
  fi
  if [[ -e $CLUSTER_DIR ]]; then
    log "removing the stale cluster in $CLUSTER_DIR"
    remove_cluster
  fi
  # build-tools.sh prints its bin directory on stdout; keep our stdout for the KUBECONFIG line.
  if ((REAL_NODE)); then
    real_node_prereqs
    "$ROOT/hack/build-tools.sh" --real-node >/dev/null
  else
    "$ROOT/hack/build-tools.sh" >/dev/null
  fi
  mkdir -p "$LOGS"
  touch "$MARKER"
  trap 'on_up_exit $?' EXIT
  if ((REAL_NODE)); then
    mkdir -p "$NODE_DIR"
    touch "$CLUSTER_DIR/real-node"
    record_sysctls
    make_bridge
  fi

  local etcd_port peer_port api_port kcm_port sched_port
  read -r etcd_port peer_port api_port kcm_port sched_port <<<"$(free_ports 5)"
  printf 'etcd=%s etcd-peer=%s kube-apiserver=%s kube-controller-manager=%s kube-scheduler=%s\n' \
    "$etcd_port" "$peer_port" "$api_port" "$kcm_port" "$sched_port" >"$CLUSTER_DIR/ports"
  make_pki
  write_kubeconfig "$api_port"

  start_etcd "$etcd_port" "$peer_port"
  start_apiserver "$api_port" "$etcd_port"
  start_controller_manager "$kcm_port"
  start_scheduler "$sched_port"
  start_kwok
  wait_for kube-controller-manager "kube-controller-manager /healthz" \
    url_ok -k "https://127.0.0.1:$kcm_port/healthz"
  wait_for kube-scheduler "kube-scheduler /healthz" url_ok -k "https://127.0.0.1:$sched_port/healthz"
  create_gpu_nodes
  wait_for kwok "$GPU_NODES Ready GPU nodes without taints" nodes_ready
  ((REAL_NODE)) && start_real_node
  trap - EXIT
  log "cluster up in $CLUSTER_DIR (${SECONDS}s)"
  print_env
}

remove_cluster() {
  stop_all
  [[ -f $CLUSTER_DIR/real-node ]] && stop_real_node
  # An empty directory (made by a caller for us) is fine; anything else needs our marker.
  if [[ -e $CLUSTER_DIR && ! -e $MARKER && -n $(ls -A "$CLUSTER_DIR") ]]; then
    die "$CLUSTER_DIR is not a cluster directory made by $0; not removing it"
  fi
  rm -rf "$CLUSTER_DIR"
}

cmd_down() {
  lock_cluster
  remove_cluster
  log "cluster in $CLUSTER_DIR stopped"
}

cmd_env() {
  cluster_running || die "no running cluster in $CLUSTER_DIR (run: $0 up)"
  print_env
}

case ${1:-} in
  up) cmd_up "${2:-}" ;;
  down) cmd_down ;;
  env) cmd_env ;;
  *) echo "usage: $0 up [--real-node]|down|env" >&2; exit 2 ;;
esac
