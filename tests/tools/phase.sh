#!/usr/bin/env bash
# phase.sh NAME COMMAND...: run COMMAND, then say how long the phase took (stderr), and append
# "NAME SECONDS EXIT" to $SIGAUDIT_PHASE_LOG when set (tests/tools/ci-fresh.sh reads it).
set -uo pipefail
name="$1"; shift
t0=$(date +%s.%N)
"$@"
rc=$?
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
echo "make test: phase $name took ${secs}s (exit $rc)" >&2
if [[ -n "${SIGAUDIT_PHASE_LOG:-}" ]]; then echo "$name $secs $rc" >>"$SIGAUDIT_PHASE_LOG"; fi
exit "$rc"
