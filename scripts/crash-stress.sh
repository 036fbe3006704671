#!/usr/bin/env bash
# Crash-safety stress: the scenarios of tests/crash.rs, TRIALS times each (default 100).
#
#   scripts/crash-stress.sh [TRIALS] [kill|signal|both]   a fresh random seed (printed); both by default
#   ENACT_CRASH_SEED=0x1234 scripts/crash-stress.sh 100     replays a seed
#
# Each trial changes the spec of a small local choreography and stops `enact apply` after a
# random 0–1500 ms — with SIGKILL (kill), or with SIGINT, SIGTERM or SIGHUP and sometimes a
# second SIGINT (signal) — then checks that the state parses, the next apply exits 0, the plan is
# converged and the processes that run are exactly the instances the state records; a signalled
# apply must exit 128 + its first signal (130, 143, 129; or 0 if it finished), and after one
# signal leave no lock and no journal.
# The full log is kept in target/crash-stress.log; the summary is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-100}"
case "${2:-both}" in
  kill) filter=a_killed_apply ;;
  signal) filter=an_interrupted_apply ;;
  both) filter="" ;;
  *) echo "usage: $0 [TRIALS] [kill|signal|both]" >&2; exit 1 ;;
esac
seed="${ENACT_CRASH_SEED:-$(printf '0x%04x%04x' "$RANDOM" "$RANDOM")}"
log=target/crash-stress.log
mkdir -p target

echo "crash stress: $trials trials of ${2:-both}, seed $seed (log: $log)"
cargo build --quiet --locked --test crash
started=$(date +%s)
status=0
RUST_BACKTRACE=0 ENACT_CRASH_TRIALS="$trials" ENACT_CRASH_SEED="$seed" \
  cargo test --quiet --locked --test crash -- --nocapture --test-threads=1 $filter >"$log" 2>&1 || status=$?
elapsed=$(( $(date +%s) - started ))

echo
if [ "$status" = 0 ]; then
  # The test's own summary: what the kills hit and what recovery did.
  sed -n '/^\(crash\|signal\) test summary/,/^- checks/p' "$log"
  echo
  echo "PASS: $trials trials in ${elapsed} s (seed $seed)"
else
  grep -E '^trial ' "$log" | tail -3 || true
  echo
  # The failure: context, the check that failed, the processes; at most 80 lines.
  awk '/panicked at/ { p = 1 } p && n < 80 { print; n++ } /^note:|kept in/ { p = 0 }' "$log"
  grep -E 'repository is kept in' "$log" || true
  echo
  echo "FAIL after ${elapsed} s (seed $seed; replay with ENACT_CRASH_SEED=$seed $0 $trials); full log: $log"
fi
exit "$status"
