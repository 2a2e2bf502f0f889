# Sourced by hack/test.sh, hack/build-tools.sh and hack/images.sh.
#
# timed NAME COMMAND...: runs COMMAND in this shell and, when REASONOPS_PHASES names a file (hack/test.sh sets
# it), appends NAME's wall time to it: name, start, end (epoch seconds), tab-separated. A NAME of the form
# STEP/PART is a part of STEP. tests/ci_phases.py prints them in the run's phase table. Under `set -e` a
# failing COMMAND ends the script as it would without timed (its time is not recorded).
timed() {
  local name=$1 start rc
  shift
  start=$(date +%s.%N)
  "$@"
  rc=$?
  [[ -z ${REASONOPS_PHASES:-} ]] || printf '%s\t%s\t%s\n' "$name" "$start" "$(date +%s.%N)" >>"$REASONOPS_PHASES"
  return "$rc"
}
