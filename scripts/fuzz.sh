#!/usr/bin/env bash
# Coverage-guided fuzzing of enact's input readers (the crate in fuzz/, see fuzz/README.md).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    600 s each, every target by default
#
# Installs cargo-fuzz if it is missing, seeds fuzz/corpus/TARGET/ from the repository's own
# inputs (examples/, tests/fixtures/, tests/bad/, fuzz/seeds/), then runs the targets one after
# another on one core (libFuzzer, no sanitizer) and prints one summary line per target:
# executions, coverage, crashes. A crash stops its target; the input is kept in
# fuzz/artifacts/TARGET/ (`cargo fuzz tmin TARGET FILE` minimises it) and the script exits 1.
#
# Environment:
#   ENACT_FUZZ_XML_SEEDS=DIR  more XML documents to seed xml_import with (read, never copied
#                             into the repository: the corpus directory is git-ignored)
#   ENACT_FUZZ_ARGS="..."     more libFuzzer flags, e.g. "-max_len=65536"
#   ENACT_FUZZ_LOGS=DIR       where each target's full output goes (default fuzz/artifacts/logs)
#
# The stable toolchain runs cargo-fuzz with RUSTC_BOOTSTRAP=1 (it passes -Z flags to rustc).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(spec_parse overlay_merge xml_import state_read journal_read plan)
seconds="${1:-600}"
shift || true
if [[ $# -gt 0 ]]; then targets=("$@"); else targets=("${ALL_TARGETS[@]}"); fi
case "$seconds" in '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 1 ;; esac
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "unknown target $t (one of: ${ALL_TARGETS[*]})" >&2; exit 1; }
done

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz…"
  cargo install cargo-fuzz --locked
fi

# --- Seeds -------------------------------------------------------------------------------------

# seed TARGET FILE...: copies each file into the corpus, named by its hash (so reseeding is a no-op).
seed() {
  local target="$1" dir="fuzz/corpus/$1"
  shift
  mkdir -p "$dir"
  for f in "$@"; do
    [[ -f "$f" ]] && cp "$f" "$dir/seed-$(sha1sum <"$f" | cut -c1-16)"
  done
}

# seed_pair TARGET FIRST SECOND: one input, FIRST, a NUL byte, SECOND (the split the targets use).
seed_pair() {
  local tmp
  tmp="$(mktemp)"
  { cat "$2"; printf '\0'; cat "$3"; } >"$tmp"
  seed "$1" "$tmp"
  rm -f "$tmp"
}

empty_state="$(mktemp)"
trap 'rm -f "$empty_state"' EXIT
printf '{"formatVersion": 1, "lineage": "", "serial": 0, "env": "dev", "services": {}, "nodes": {}}\n' >"$empty_state"

mapfile -t specs < <(find examples tests/fixtures tests/bad -name chor.json | sort)
mapfile -t overlays < <(find examples tests/fixtures tests/bad -path '*/envs/*.json' | sort)
mapfile -t states < <(find examples tests/fixtures tests/bad -path '*/state/*.json' | sort)
mapfile -t xmls < <(find tests/fixtures -name '*.xml' | sort)

seed spec_parse "${specs[@]}" "${overlays[@]}"
for o in "${overlays[@]}"; do
  base="$(dirname "$(dirname "$o")")/chor.json"
  [[ -f "$base" ]] && seed_pair overlay_merge "$base" "$o"
done
seed overlay_merge "${specs[@]}"
seed xml_import "${xmls[@]}"
if [[ -n "${ENACT_FUZZ_XML_SEEDS:-}" ]]; then
  mapfile -t more < <(find "$ENACT_FUZZ_XML_SEEDS" -name '*.xml' | sort)
  seed xml_import "${more[@]}"
fi
seed state_read "${states[@]}"
seed journal_read fuzz/seeds/journal_read/*
for s in "${specs[@]}"; do
  state="$(dirname "$s")/state/dev.json"
  if [[ -f "$state" ]]; then seed_pair plan "$s" "$state"; else seed_pair plan "$s" "$empty_state"; fi
done

# --- Runs --------------------------------------------------------------------------------------

logs="${ENACT_FUZZ_LOGS:-fuzz/artifacts/logs}"
mkdir -p "$logs"
status=0
summary=()
for t in "${targets[@]}"; do
  log="$logs/$t.log"
  mkdir -p "fuzz/artifacts/$t"
  before="$(find "fuzz/artifacts/$t" -maxdepth 1 -type f | wc -l)"
  echo "fuzzing $t for ${seconds}s (log: $log)…"
  # shellcheck disable=SC2086 # ENACT_FUZZ_ARGS is a list of flags
  if cargo fuzz run --sanitizer none "$t" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 ${ENACT_FUZZ_ARGS:-} >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
  fi
  after="$(find "fuzz/artifacts/$t" -maxdepth 1 -type f | wc -l)"
  execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)"
  cov="$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)"
  summary+=("$(printf '%-14s %-6s executions %-10s %-20s crashes %s' "$t" "$result" "${execs:-?}" "${cov:-cov: ?}" "$((after - before))")")
done

echo
printf '%s\n' "${summary[@]}"
exit "$status"
