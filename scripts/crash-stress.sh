#!/usr/bin/env bash
# Crash-safety stress: the scenario of tests/crash.rs, TRIALS times (default 100).
#
#   scripts/crash-stress.sh [TRIALS]          a fresh random seed (printed)
#   ENACT_CRASH_SEED=0x1234 scripts/crash-stress.sh 100     replays a seed
#
# Each trial changes the spec of a small local choreography, SIGKILLs `enact apply` after a
# random 0–1500 ms, then checks that the state parses, the next apply exits 0, the plan is
# converged and the processes that run are exactly the instances the state records.
# The full log is kept in target/crash-stress.log; the summary is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-100}"
seed="${ENACT_CRASH_SEED:-$(printf '0x%04x%04x' "$RANDOM" "$RANDOM")}"
log=target/crash-stress.log
mkdir -p target

echo "crash stress: $trials trials, seed $seed (log: $log)"
cargo build --quiet --locked --test crash
started=$(date +%s)
status=0
RUST_BACKTRACE=0 ENACT_CRASH_TRIALS="$trials" ENACT_CRASH_SEED="$seed" \
  cargo test --quiet --locked --test crash -- --nocapture >"$log" 2>&1 || status=$?
elapsed=$(( $(date +%s) - started ))

echo
if [ "$status" = 0 ]; then
  # The test's own summary: what the kills hit and what recovery did.
  sed -n '/^crash test summary/,/^- checks/p' "$log"
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
