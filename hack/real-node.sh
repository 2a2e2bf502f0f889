# Sourced by hack/cluster.sh: a real node (kubelet + a containerd of its own + CNI bridge, CoreDNS,
# kube-proxy) beside the kwok nodes, for `hack/cluster.sh up --real-node`. One per machine: it binds the
# kubelet port 10250, owns the bridge rn0 and writes iptables rules. Needs root.
#
# What it changes on the host, and how `down` puts it back:
#   - bridge rn0 with 10.88.0.1/16 (the node IP, where the apiserver and CoreDNS listen): deleted;
#   - sysctls the kubelet sets at start (vm.overcommit_memory, kernel.panic, ...) and ip_forward:
#     recorded in node/sysctls before, restored after;
#   - iptables rules of kube-proxy: `kube-proxy --cleanup`, then the saved filter/nat tables are compared;
#   - cgroups /sys/fs/cgroup/*/kubepods: every process in them is killed, then they are removed;
#   - kubelet and containerd run in a private mount namespace with tmpfs over the host paths they
#     hard-code (/var/lib/cni, /var/log/pods, /var/log/containers, /run/containerd), so their mounts
#     and files vanish with it; directories created for that on the host are removed.
# A node whose processes died without `down` (a killed test run) leaves these behind; the next
# `up --real-node` finds its bridge and undoes them (clear_stale_real_node). A second `up --real-node`
# while a node runs waits for it (REASONOPS_REAL_NODE_WAIT seconds, default 900).
# Packages it installs when missing (apt): containerd runc containernetworking-plugins iptables conntrack.

NODE_NAME=real-node
NODE_IP=10.88.0.1
NODE_CIDR=10.88.0.0/16
BRIDGE=rn0
NODE_DIR=$CLUSTER_DIR/node
NODE_SOCK=$NODE_DIR/containerd.sock
PAUSE_IMAGE=reasonops/pause:1
NODE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet)
# Paths the kubelet, containerd and the CNI plugins write to whatever their configuration says.
NODE_PRIVATE_PATHS=(/var/lib/cni /var/log/pods /var/log/containers /run/containerd /var/lib/kubelet)
NODE_LOCK=/run/reasonops-real-node.lock
# A copy of the node's records of the host (sysctls, iptables.before) that outlives its cluster
# directory, for undoing a stale node whose directory is gone.
NODE_HOST_RECORDS=/run/reasonops-real-node

real_node_prereqs() {
  ((EUID == 0)) || die "--real-node needs root (a kubelet, cgroups, a bridge, iptables)"
  local missing=() p
  for p in containerd:containerd runc:runc iptables:iptables conntrack:conntrack; do
    command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
  done
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
      || die "cannot install ${missing[*]}"
  fi
  [[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] || die "no cgroup filesystem"
  lock_real_node
  ! ss -ltn | grep -q ':10250 ' || die "port 10250 (kubelet) is in use"
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    clear_stale_real_node "$(cat "$NODE_LOCK")"
    ! ip link show "$BRIDGE" >/dev/null 2>&1 || die "bridge $BRIDGE exists and is not a stale real node's of ours; not touching it"
  fi
  echo "$CLUSTER_DIR" >"$NODE_LOCK"
}

# One real node per machine: the lock is held (fd 8, which every component inherits) for as long as
# any process of the node's cluster lives; the file names the cluster directory that holds it. Another
# `up --real-node` (a second test run on the machine) waits for it, at most REASONOPS_REAL_NODE_WAIT s.
lock_real_node() {
  local wait=${REASONOPS_REAL_NODE_WAIT:-900}
  exec 8>>"$NODE_LOCK"
  flock -n 8 && return 0
  log "another real node runs on this machine (cluster $(cat "$NODE_LOCK")); waiting up to ${wait}s for it to stop"
  flock -w "$wait" 8 || die "another real node still runs on this machine after ${wait}s (cluster $(cat "$NODE_LOCK"), lock $NODE_LOCK)"
}

# With the lock ours, a bridge of ours that is still there is a stale node's: its processes are gone
# (they held the lock) but its host changes are not, e.g. a run killed before its `down`. `down` of its
# cluster directory puts them back; when that directory is gone too, they are undone from the copy of
# its records in NODE_HOST_RECORDS: pod cgroups, iptables chains, the bridge, the sysctls.
clear_stale_real_node() {
  local owner=$1
  if [[ -n $owner && $owner != "$CLUSTER_DIR" && -e $owner/.reasonops-cluster && -d $owner/node ]]; then
    log "bridge $BRIDGE is left by the stopped real node of $owner; running \`down\` of that cluster"
    REASONOPS_CLUSTER_DIR=$owner "$ROOT/hack/cluster.sh" down || log "\`down\` of $owner failed"
  fi
  ip link show "$BRIDGE" >/dev/null 2>&1 || return 0
  log "bridge $BRIDGE is left by a stopped real node (${owner:-unknown cluster}, its directory gone); undoing it from $NODE_HOST_RECORDS"
  [[ -f $NODE_HOST_RECORDS/sysctls ]] || log "no record of the sysctls before that node; they stay as it left them"
  mkdir -p "$NODE_HOST_RECORDS"
  # That node's own `down`, with the host's copy of its records for its directory.
  CLUSTER_DIR=$owner NODE_DIR=$NODE_HOST_RECORDS stop_real_node
}

# After the records are made: the host's copy of them.
copy_host_records() {
  rm -rf "$NODE_HOST_RECORDS"
  mkdir -p "$NODE_HOST_RECORDS"
  cp "$NODE_DIR/sysctls" "$NODE_DIR/iptables.before" "$NODE_HOST_RECORDS/" 2>/dev/null || true
}

# The sandbox ("pause") image: a static program that waits for a signal; imported, not pulled.
make_pause_image() {
  docker_cli image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
  local dir
  dir=$(mktemp -d)
  cat >"$dir/pause.c" <<'C'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, stop); signal(SIGTERM, stop); signal(SIGCHLD, reap);
  for (;;) pause();
}
C
  gcc -static -O2 -o "$dir/pause" "$dir/pause.c"
  tar -C "$dir" -c pause | docker_cli import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
  rm -rf "$dir"
}

docker_cli() { "$(command -v /usr/bin/docker || command -v docker)" "$@"; }

# The images the tests run (hack/images.sh), the pause image, into the node's containerd.
load_node_images() {
  local line
  "$ROOT/hack/images.sh" base >/dev/null
  make_pause_image
  docker_cli save "$PAUSE_IMAGE" | ctr --address "$NODE_SOCK" -n k8s.io images import - >/dev/null
  "$ROOT/hack/images.sh" load "$NODE_SOCK" $REAL_NODE_IMAGES >"$CLUSTER_DIR/images"
  log "images on the node: $(tr '\n' ' ' <"$CLUSTER_DIR/images")"
}

record_sysctls() {
  local s
  for s in "${NODE_SYSCTLS[@]}"; do
    [[ -e /proc/sys/${s//.//} ]] && echo "$s $(sysctl -n "$s")"
  done >"$NODE_DIR/sysctls"
}

restore_sysctls() {
  local s v
  [[ -f $NODE_DIR/sysctls ]] || return 0
  while read -r s v; do
    [[ $(sysctl -n "$s" 2>/dev/null) == "$v" ]] || sysctl -q -w "$s=$v" >/dev/null || log "cannot restore $s=$v"
  done <"$NODE_DIR/sysctls"
}

make_node_pki() {
  sign_cert kubelet-client client "/O=system:nodes/CN=system:node:$NODE_NAME"
  cat >>"$PKI/openssl.cnf" <<CNF
[kubelet]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:$NODE_IP,DNS:$NODE_NAME
CNF
  sign_cert kubelet-serving kubelet "/CN=$NODE_NAME"
}

node_kubeconfig() {  # cert-name → a kubeconfig for that client certificate
  local b64=(base64 -w0)
  cat <<EOF2
apiVersion: v1
kind: Config
clusters:
- name: reasonops
  cluster: {server: "$(api_url)", certificate-authority-data: $("${b64[@]}" "$PKI/ca.crt")}
users:
- name: node
  user: {client-certificate-data: $("${b64[@]}" "$PKI/$1.crt"), client-key-data: $("${b64[@]}" "$PKI/$1.key")}
contexts:
- name: reasonops
  context: {cluster: reasonops, user: node}
current-context: reasonops
EOF2
}

write_node_configs() {  # healthz-port proxy-healthz-port proxy-metrics-port dns-health-port dns-ready-port
  mkdir -p "$NODE_DIR"/{cni,containerd,kubelet,pod-logs}
  cat >"$NODE_DIR/containerd.toml" <<EOF2
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$NODE_SOCK"
[ttrpc]
  address = "$NODE_DIR/containerd.ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/$PAUSE_IMAGE"
  # This VM has no CAP_SYS_RESOURCE: without it every sandbox fails to start.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni"
EOF2
  # No masquerading: pods talk to each other, to the node and to Services, never to the outside.
  cat >"$NODE_DIR/cni/10-reasonops.conflist" <<EOF2
{"cniVersion": "1.0.0", "name": "reasonops", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$NODE_CIDR", "rangeStart": "10.88.1.1", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}
]}
EOF2
  node_kubeconfig kubelet-client >"$NODE_DIR/kubelet.kubeconfig"
  cat >"$NODE_DIR/kubelet.yaml" <<EOF2
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $1
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$NODE_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
protectKernelDefaults: false
makeIPTablesUtilChains: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 87600h
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
podLogsDir: $NODE_DIR/pod-logs
resolvConf: /etc/resolv.conf
maxPods: 60
serializeImagePulls: false
shutdownGracePeriod: 0s
registerWithTaints: [{key: reasonops.io/real-node, value: "true", effect: NoSchedule}]
EOF2
  cat >"$NODE_DIR/kube-proxy.yaml" <<EOF2
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KCFG}
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $NODE_CIDR
# Service traffic between pods of one bridge comes back through the node without br_netfilter.
masqueradeAll: true
healthzBindAddress: 127.0.0.1:$2
metricsBindAddress: 127.0.0.1:$3
nodePortAddresses: [$NODE_IP/32]
iptables: {localhostNodePorts: false}
# 0: leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF2
  cat >"$NODE_DIR/Corefile" <<EOF2
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:$4
    ready 127.0.0.1:$5
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KCFG reasonops
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
    loop
}
EOF2
  # containerd and the kubelet share one private mount namespace (the kubelet's volume mounts must
  # be visible to containerd), with tmpfs over the host paths they write regardless of configuration.
  cat >"$NODE_DIR/run-node.sh" <<EOF2
#!/usr/bin/env bash
set -euo pipefail
for p in ${NODE_PRIVATE_PATHS[*]}; do mount -t tmpfs -o mode=755 reasonops-node "\$p"; done
containerd --config "$NODE_DIR/containerd.toml" >"$LOGS/containerd.log" 2>&1 &
echo \$! >"$NODE_DIR/containerd.pid"
for i in \$(seq 1 300); do [[ -S "$NODE_SOCK" ]] && break; sleep 0.1; done
exec "$BIN/kubelet" --config="$NODE_DIR/kubelet.yaml" --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \\
  --root-dir="$NODE_DIR/kubelet" --hostname-override=$NODE_NAME --node-ip=$NODE_IP \\
  --node-labels=type=real,reasonops.io/real-node=true --v=1
EOF2
  chmod +x "$NODE_DIR/run-node.sh"
}

make_bridge() {
  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/16" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

# Directories the private namespace mounts over must exist; ones made for it go on `down`.
make_private_paths() {
  local p
  for p in "${NODE_PRIVATE_PATHS[@]}"; do
    if [[ ! -d $p ]]; then
      mkdir -p "$p"
      echo "$p" >>"$NODE_DIR/created-paths"
    fi
  done
}

node_ready() {
  [[ $(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

dns_ready() { url_ok "http://127.0.0.1:$1/ready"; }

# Called by `up --real-node` after the apiserver is up (advertised on the bridge).
start_real_node() {
  local kubelet_hz proxy_hz proxy_metrics dns_health dns_ready_port
  read -r kubelet_hz proxy_hz proxy_metrics dns_health dns_ready_port <<<"$(free_ports 5)"
  make_node_pki
  write_node_configs "$kubelet_hz" "$proxy_hz" "$proxy_metrics" "$dns_health" "$dns_ready_port"
  iptables-save >"$NODE_DIR/iptables.before" 2>/dev/null || true
  copy_host_records
  make_private_paths
  start real-node unshare --mount --propagation private "$NODE_DIR/run-node.sh"
  start coredns "$BIN/coredns" -conf "$NODE_DIR/Corefile"
  start kube-proxy "$BIN/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml"
  wait_for real-node "the node's containerd" test -S "$NODE_SOCK"
  load_node_images
  wait_for real-node "node $NODE_NAME Ready" node_ready
  wait_for coredns "CoreDNS ready" dns_ready "$dns_ready_port"
  wait_for kube-proxy "kube-proxy healthz" url_ok "http://127.0.0.1:$proxy_hz/healthz"
}

# Everything in the kubelet's pod cgroups: containers and their shims' children.
kill_pod_cgroups() {
  local d pids i
  for ((i = 0; i < 20; i++)); do
    pids=$(cat /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/**/cgroup.procs 2>/dev/null; \
      find /sys/fs/cgroup/*/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null) || true
    pids=$(sort -u <<<"$pids" | grep . || true)
    [[ -z $pids ]] && break
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
  done
  for d in /sys/fs/cgroup/*/kubepods; do
    [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}

# Processes in the node's mount namespace (containerd, its shims) that outlived the kubelet.
kill_node_namespace() {
  local ns pid
  [[ -f $NODE_DIR/containerd.pid ]] || return 0
  pid=$(cat "$NODE_DIR/containerd.pid")
  ns=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null) || return 0
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [[ $(readlink "/proc/$pid/ns/mnt" 2>/dev/null) == "$ns" ]] && kill -KILL "$pid" 2>/dev/null
  done
  return 0
}

# The kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...), which kube-proxy --cleanup leaves:
# every KUBE-* chain that was not there before the node started, and the jumps to it.
remove_kube_chains() {
  local cmd t rule chain before=$NODE_DIR/iptables.before
  for cmd in iptables ip6tables; do
    command -v "$cmd-save" >/dev/null || continue
    for t in filter nat mangle; do
      for chain in $("$cmd-save" -t "$t" 2>/dev/null | awk '/^:KUBE-/ {print substr($1, 2)}'); do
        [[ $cmd == iptables ]] && grep -q "^:$chain " "$before" 2>/dev/null && continue
        while read -r rule; do
          eval "$cmd -t $t ${rule/#-A /-D }" 2>/dev/null || true
        done < <("$cmd-save" -t "$t" | grep -E -- "^-A [^ ]+ .*-j $chain( |\$)")
        "$cmd" -t "$t" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$cmd-save" -t "$t" 2>/dev/null | awk '/^:KUBE-/ {print substr($1, 2)}'); do
        [[ $cmd == iptables ]] && grep -q "^:$chain " "$before" 2>/dev/null && continue
        "$cmd" -t "$t" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

# Called by `down` (after stop_all stopped the kubelet, CoreDNS and kube-proxy).
stop_real_node() {
  [[ -d $NODE_DIR ]] || return 0
  kill_node_namespace
  local owner
  owner=$(cat "$NODE_LOCK" 2>/dev/null) || true
  if [[ -n $owner && $owner != "$CLUSTER_DIR" ]]; then
    log "the host's real node is now $owner's; its pods, bridge, iptables and sysctls are left to it"
    return 0
  fi
  kill_pod_cgroups
  "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  remove_kube_chains
  ip link del "$BRIDGE" 2>/dev/null || true
  restore_sysctls
  if [[ -f $NODE_DIR/created-paths ]]; then
    tac "$NODE_DIR/created-paths" | xargs -r rmdir 2>/dev/null || true
  fi
  if [[ -f $NODE_DIR/iptables.before ]] && ! diff -q <(iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9:]*\]//') \
    <(grep -v '^#' "$NODE_DIR/iptables.before" | sed 's/\[[0-9:]*\]//') >/dev/null; then
    log "warning: iptables differ from before the node started (see iptables-save)"
  fi
  rm -rf "$NODE_HOST_RECORDS"
}
