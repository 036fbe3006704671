#!/usr/bin/env bash
# The travel-agency example, end to end on this machine.
#   scripts/travel.sh up     build enact, start the legacy weather service, apply env dev
#                            (airline and travelagency as local processes, wired), print how to call it
#   scripts/travel.sh down   destroy env dev and stop the weather service
# ENV=prod scripts/travel.sh up  applies another environment (prod has a committed state: the
# first apply there converges from it).
set -euo pipefail
cd "$(dirname "$0")/.."
env="${ENV:-dev}"
repo="$PWD/examples/travel"
state=state
weather_pid="$state/.weather.pid"

echo "building enact (release; the first build compiles a few hundred crates: about 12 minutes of CPU time, later ones seconds)…" >&2
cargo build --release --locked --quiet
# Where cargo put it: target/, or CARGO_TARGET_DIR.
bin="${CARGO_TARGET_DIR:-target}/release/enact"
if [ ! -x "$bin" ]; then
  echo "cargo built enact, but $bin is not there; is CARGO_TARGET_DIR set differently for cargo?" >&2
  exit 1
fi
enact() { "$bin" -C "$repo" -e "$env" "$@"; }

weather_up() {
  if [ -f "$weather_pid" ] && kill -0 "$(cat "$weather_pid")" 2>/dev/null; then return; fi
  mkdir -p "$state/.logs"
  HOST=127.0.0.1 PORT=8192 ENDPOINT_NAME=weather SERVICE_NAME=weather INSTANCE_ID=weather-1 \
    setsid python3 "$repo/services/weather.py" >>"$state/.logs/weather.log" 2>&1 < /dev/null &
  echo $! >"$weather_pid"
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/8192) 2>/dev/null && return
    sleep 0.1
  done
  echo "the legacy weather service did not start; see $state/.logs/weather.log" >&2
  exit 1
}

case "${1:-up}" in
  up)
    weather_up
    enact apply --auto-approve
    agency=$(enact status --json | python3 -c 'import json,sys
s=json.load(sys.stdin)["services"]["travelagency"]["instances"]
print(s[0]["nativeUri"] if s else "")')
    echo
    echo "The travel agency answers at $agency. Book a trip:"
    echo "  curl $agency/buyTrip"
    echo "Then try: $bin -C $repo -e $env status   (or: logs airline, plan, history)"
    echo "Tear it down with: scripts/travel.sh down"
    ;;
  down)
    enact destroy --auto-approve
    if [ -f "$weather_pid" ]; then kill "$(cat "$weather_pid")" 2>/dev/null || true; rm -f "$weather_pid"; fi
    # setsid may have forked: stop the weather service by what it runs, too.
    pkill -f "$repo/services/weather.py" 2>/dev/null || true
    ;;
  *)
    echo "usage: scripts/travel.sh up|down" >&2
    exit 1
    ;;
esac
