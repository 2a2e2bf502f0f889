#!/usr/bin/env bash
# The test command. From nothing: a virtual environment with every extra, the control-plane tools
# (built once from the Go module proxy and cached), then the whole suite; cluster tests start and stop
# their own throwaway control plane (tests/conftest.py). Extra arguments go to pytest.
#
#   hack/test.sh                 # everything
#   hack/test.sh -m "not cluster" # no control plane
#   hack/test.sh -m realnode      # only the real-node tests (root; Docker and the node's tools are set up
#                                 # by hack/cluster.sh up --real-node and hack/images.sh, and cached)
#
# The set-up steps need nothing of each other, so they run side by side, each with its log in
# out/setup/NAME.log: the virtual environment, the real vLLM's and moto's own ones (hack/vllm-venv.sh,
# hack/moto-venv.sh), the Go tools,
# and (as root with apt) the Debian packages.
# With REASONOPS_PREPARE_REAL_NODE=1 (what .ci/run sets) they also include what the real-node tests
# need, which the tests' fixture would otherwise make when it first starts the node: the node's Go
# tools (kubelet, kube-proxy, CoreDNS), its Debian packages, and the images of hack/images.sh.
# A step that fails ends the run with the tail of its log.
#
# Phases: each step's wall time (and those of its parts: hack/build-tools.sh's tools, hack/images.sh's
# images) goes to out/ci-phases.tsv (hack/phases.sh); pytest (tests/ci_phases.py) adds each test module's and
# prints the table at the end of the run, also written to out/ci-phases.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
REAL_NODE=${REASONOPS_PREPARE_REAL_NODE:-0}
SETUP=out/setup
export REASONOPS_PHASES=$PWD/out/ci-phases.tsv

log() { echo "[test.sh] $*" >&2; }
# shellcheck source=hack/phases.sh
source hack/phases.sh

# --- disk -------------------------------------------------------------------------------------

# A run needs room: the two virtual environments (14 GB), the CPU workload image and its build context (9 GB),
# pytest's temporary directories (control planes, the real node, models), and on a fresh machine the wheel,
# Go and tool caches besides. Past a full disk every step fails with its own error, far from the cause (a
# Docker build: "no space left on device"), so the run checks first and names what to free.
# REASONOPS_MIN_FREE_GB: the free space to insist on (default: what a run with caches was measured to use,
# docs/benchmarks.md; a fresh machine needs about FRESH_GB).
MIN_FREE_GB=${REASONOPS_MIN_FREE_GB:-30}
FRESH_GB=50
check_disk() {
  local dir avail worst="" worst_avail=""
  for dir in "$PWD" "${TMPDIR:-/tmp}" "$HOME"; do
    avail=$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 {printf "%d", $4 / 1048576}') || continue
    [[ -n $avail ]] || continue
    if [[ -z $worst_avail ]] || ((avail < worst_avail)); then worst=$dir worst_avail=$avail; fi
  done
  [[ -n $worst_avail ]] || return 0
  ((worst_avail >= MIN_FREE_GB)) && return 0
  log "only ${worst_avail} GB free where $worst is; a run needs about ${MIN_FREE_GB} GB (a fresh machine ${FRESH_GB} GB)."
  log "Free room first: old clones of this repository, pytest's kept directories (/tmp/pytest-of-$(id -un)), unused"
  log "images and build cache (docker system prune). REASONOPS_MIN_FREE_GB=N sets the threshold (0: no check)."
  exit 1
}
check_disk

mkdir -p "$SETUP"
: >"$REASONOPS_PHASES"
started=$(date +%s.%N)

# --- the steps ---------------------------------------------------------------------------------

make_venv() {
  if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
}

# build-tools.sh builds one tool after another in one Go build cache ($(go env GOCACHE)): the
# node's binaries reuse what the control plane's compiled.
build_tools() {
  if ((REAL_NODE)); then
    hack/build-tools.sh --real-node >/dev/null
  else
    hack/build-tools.sh >/dev/null
  fi
}

# Debian packages in one apt-get call (apt holds a lock; two at once would fail): bubblewrap, without which
# model-written code refuses to run (as in the curate and eval images; REASONOPS_SANDBOX_ISOLATION=unconfined opts out),
# chromium, the headless browser tests/test_report_browser.py opens the HTML report in, and with REAL_NODE what
# hack/cluster.sh up --real-node (real_node_prereqs) and hack/images.sh would install one by one.
apt_packages() {
  local wanted=() missing=() p
  command -v bwrap >/dev/null || wanted+=(bubblewrap)
  command -v chromium >/dev/null || wanted+=(chromium)
  ldconfig -p | grep -q 'libnuma\.so\.1' || wanted+=(libnuma1)  # vLLM's CPU backend (hack/vllm-venv.sh)
  if ((REAL_NODE)); then
    for p in containerd:containerd runc:runc iptables:iptables conntrack:conntrack gcc:gcc gcc:libc6-dev \
      dockerd:docker.io debootstrap:debootstrap; do
      command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
    done
    [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  fi
  ((${#wanted[@]} + ${#missing[@]})) || return 0
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    ((${#missing[@]} == 0)) || { echo "the real node needs ${missing[*]}: run as root with apt-get"; return 1; }
    echo "${wanted[*]} not installed (not root with apt-get); $(wanted_fail)"
    return 0
  fi
  local all=("${wanted[@]+"${wanted[@]}"}" "${missing[@]+"${missing[@]}"}")
  echo "installing ${all[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y -q "${all[@]}" || { apt-get update -q && apt-get install -y -q "${all[@]}"; }; then
    return 0
  fi
  ((${#missing[@]} == 0)) || return 1
  echo "could not install ${wanted[*]}; $(wanted_fail)"
}

# What fails without the wanted packages (they are not needed to start the run).
wanted_fail() {
  local failing=()
  command -v bwrap >/dev/null || failing+=("the tests that run model-written code (it refuses without isolation)")
  command -v chromium >/dev/null || failing+=("tests/test_report_browser.py (no headless browser)")
  ldconfig -p | grep -q 'libnuma\.so\.1' || failing+=("the tests that start the real vLLM (no libnuma)")
  local IFS=';'
  echo "these fail: ${failing[*]}"
}

# The real node's images (Docker, the debootstrap base, the torch wheels, and the images hack/cluster.sh
# loads into the node: REAL_NODE_IMAGES, default operator and workload-cpu): content-tagged, so the node's
# start later finds them built.
build_images() {
  # shellcheck disable=SC2086 # a list of names, as hack/real-node.sh passes it
  hack/images.sh build ${REAL_NODE_IMAGES:-operator workload-cpu}
}

# The steps that run after the Debian packages (Docker comes with them).
packages_then_images() {
  timed apt apt_packages
  if ((REAL_NODE)); then
    timed images build_images
  fi
}

# --- side by side ------------------------------------------------------------------------------

# Each step in a process group of its own (job control), so a failure can stop the others whole. A step runs
# as a background job, so `set -e` holds in it (in a function called as `f || ...` it would not).
set -m
declare -A step_pid=() step_name=() step_start=()
run_step() {  # NAME COMMAND...
  local name=$1
  shift
  "$@" </dev/null >"$SETUP/$name.log" 2>&1 &
  step_pid[$name]=$!
  step_name[$!]=$name
  step_start[$name]=$SECONDS
  log "$name: started (log $SETUP/$name.log)"
}

stop_steps() {
  local pid
  for pid in "${step_pid[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
}
trap 'stop_steps; exit 130' INT TERM

run_step venv timed venv make_venv
run_step tools timed tools build_tools
run_step vllm timed vllm hack/vllm-venv.sh  # the real vLLM's CPU build, its own venv (tests/vllm_support.py)
run_step moto timed moto hack/moto-venv.sh  # moto's S3-compatible server, its own venv (tests/test_exports.py)
if ((REAL_NODE)) || ! command -v bwrap >/dev/null || ! command -v chromium >/dev/null || ! ldconfig -p | grep -q 'libnuma\.so\.1'; then
  run_step packages packages_then_images  # phases apt and images
fi

while ((${#step_name[@]})); do
  rc=0
  wait -n -p done_pid "${!step_name[@]}" || rc=$?
  name=${step_name[$done_pid]}
  unset "step_name[$done_pid]" "step_pid[$name]"
  if ((rc != 0)); then
    log "$name: FAILED (exit $rc); the end of $SETUP/$name.log:"
    tail -n 40 "$SETUP/$name.log" | sed 's/^/    /' >&2
    { stop_steps; wait; } 2>/dev/null || true  # (without the shell's "Terminated" lines)
    exit 1
  fi
  log "$name: done in $((SECONDS - step_start[$name])) s"
done
set +m
trap - INT TERM
printf '%s\t%s\t%s\n' "set-up" "$started" "$(date +%s.%N)" >>"$REASONOPS_PHASES"

# OMP_WAIT_POLICY=PASSIVE: an OpenMP thread that waits for its peer sleeps instead of spinning. Beside other
# work (a control plane, servers, pods) a spinning thread takes the core its peer needs: 30 pre-training steps
# of the demo's model took 133 s spinning, 30 s passive, with bitwise the same weights (docs/benchmarks.md).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} TOKENIZERS_PARALLELISM=false \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# Two pytest-xdist workers, each taking a whole test module at a time, the longest first (tests/conftest.py): the
# real node's and the control plane's modules mostly wait on pods and timers, and the other worker uses that time.
# REASONOPS_TEST_WORKERS=0 runs the suite in this one process; a -n of the extra arguments wins.
exec .venv/bin/python -m pytest -n "${REASONOPS_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
