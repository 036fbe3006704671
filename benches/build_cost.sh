#!/usr/bin/env bash
# Clean release builds of two commits, one after the other, each from an empty target directory
# (the registry's sources already downloaded): wall time, CPU time (user + system, all
# processes) and the binary's size, plus the slowest crates (from `cargo build --timings`).
#
#   benches/build_cost.sh [BASE [HEAD]]     (BASE defaults to the commit before the ec2 provider,
#                                            HEAD to the working tree's HEAD; ONLY=before or
#                                            ONLY=after builds one of the two)
#
# Each commit is checked out into a temporary clone; the target directories are removed at the
# end. On 2 cores a clean build with the AWS SDK takes about 10 minutes: run it on a quiet machine,
# and read the CPU time beside the wall time when it is not.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${1:-0ee6547}"
HEAD="${2:-$(git rev-parse --short HEAD)}"
WORK="$(mktemp -d /tmp/enact-build-cost.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

build() {
  local label="$1" commit="$2"
  git clone -q . "$WORK/$label"
  git -C "$WORK/$label" checkout -q "$commit"
  cargo fetch --locked --manifest-path "$WORK/$label/Cargo.toml" >/dev/null 2>&1
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$WORK/$label.cpu" \
    cargo build --release --locked --timings --manifest-path "$WORK/$label/Cargo.toml" \
      --target-dir "$WORK/$label-target" >"$WORK/$label.log" 2>&1
  end=$(date +%s.%N)
  local cpu size
  cpu=$(awk '{ printf "%.0f", $1 + $2 }' "$WORK/$label.cpu")
  size=$(stat -c %s "$WORK/$label-target/release/enact")
  printf '| %s (`%s`) | %.0f s | %s s | %.0f MB | %s |\n' "$label" "$commit" "$(echo "$end - $start" | bc)" "$cpu" \
    "$(echo "$size / 1000000" | bc -l)" "$(slowest "$WORK/$label-target")"
  rm -rf "$WORK/$label-target" "$WORK/$label"
}

# The five slowest units of the build, from cargo's timings report.
slowest() {
  python3 - "$1" <<'PY'
import glob, json, re, sys
path = sorted(glob.glob(sys.argv[1] + "/cargo-timings/cargo-timing-*.html"))[-1]
units = json.loads(re.search(r"const UNIT_DATA = (\[.*?\]);", open(path).read(), re.S).group(1))
units.sort(key=lambda u: -u["duration"])
print(", ".join(f"{u['name']}{' (build script)' if 'build-script' in u.get('target', '') else ''} {u['duration']:.0f} s" for u in units[:5]))
PY
}

echo "clean \`cargo build --release --locked\`, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| build | wall | CPU (user + system) | binary | slowest units |"
echo "|---|---:|---:|---:|---|"
[ "${ONLY:-both}" = after ] || build before "$BASE"
[ "${ONLY:-both}" = before ] || build after "$HEAD"
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
