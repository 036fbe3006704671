#!/usr/bin/env bash
# benches/concurrent_applies.sh: many `enact apply` started at the same moment on one environment.
#
#   benches/concurrent_applies.sh [ROUNDS] [AT_ONCE]     default 25 rounds of 8 applies
#   ENACT_BENCH_BIN=PATH benches/concurrent_applies.sh   another enact binary
#
# Each round changes the spec (a new version of every service of a 20-service choreography on
# a simulated account at latencyMs 100, so an apply takes about a second) and starts AT_ONCE
# applies together. Every attempt must either run (exit 0) or be refused at once (exit 1, naming
# the holder's pid); after the round the state must parse, its serial must have grown by the
# number admitted, and the plan must be empty. Prints attempts, admitted, refused, anything
# else, and the slowest refusal (ms). Nothing is asserted by a test: this is a measurement.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-25}
AT_ONCE=${2:-8}
ENACT=${ENACT_BENCH_BIN:-$ROOT/target/release/enact}
[ -x "$ENACT" ] || (cd "$ROOT" && cargo build --release --locked --quiet)
exec python3 - "$ENACT" "$ROUNDS" "$AT_ONCE" <<'PY'
import json, os, subprocess, sys, tempfile, threading, time
enact, rounds, at_once = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
repo = tempfile.mkdtemp(prefix="enact-concurrent-")
json.dump({"defaultEnv": "dev", "defaultAccount": "sim",
           "accounts": {"sim": {"provider": "simulated", "latencyMs": 100}}},
          open(f"{repo}/enact.json", "w"))
os.makedirs(f"{repo}/services", exist_ok=True)
open(f"{repo}/services/s.py", "w").write("print('hi')\n")
def spec(version):
    services = [{"name": f"s{i:02}", "roles": [f"s{i:02}"], "packageUri": "services/s.py", "port": 9000 + i,
                 "version": version,
                 "dependencies": [{"serviceSpecName": f"s{i-1:02}", "serviceSpecRole": f"s{i-1:02}"}] if i else []}
                for i in range(20)]
    json.dump({"deployableServiceSpecs": services}, open(f"{repo}/chor.json", "w"))
def serial():
    with open(f"{repo}/state/dev.json") as f:
        return json.load(f)["serial"]
attempts = admitted = refused = other = 0
slowest = 0.0
problems = []
spec("0")
subprocess.run([enact, "-C", repo, "apply", "--auto-approve"], check=True, capture_output=True)
for r in range(1, rounds + 1):
    spec(str(r))
    before = serial()
    start = time.monotonic()
    procs = [subprocess.Popen([enact, "-C", repo, "--no-color", "apply", "--auto-approve"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(at_once)]
    ran = 0
    ended = {}
    def wait(p):
        out = p.communicate()
        ended[p.pid] = ((time.monotonic() - start) * 1000, out[1])
    threads = [threading.Thread(target=wait, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        took, err = ended[p.pid]
        attempts += 1
        if p.returncode == 0:
            ran += 1
        elif p.returncode == 1 and b"is locked by pid" in err:
            refused += 1
            slowest = max(slowest, took)
        else:
            other += 1
            problems.append(f"round {r}: exit {p.returncode}: {err.decode(errors='replace').strip()[:300]}")
    admitted += ran
    after = serial()
    if after != before + ran:
        problems.append(f"round {r}: serial {before} -> {after} with {ran} admitted")
    plan = subprocess.run([enact, "-C", repo, "plan", "--detailed-exitcode"], capture_output=True)
    if plan.returncode != 0:
        problems.append(f"round {r}: the plan after the round is not empty (exit {plan.returncode})")
print(f"concurrent applies: {rounds} rounds of {at_once} at once")
print(f"| attempts | admitted | refused (naming the holder) | anything else | slowest refusal ms | corrupt states |")
print(f"|---:|---:|---:|---:|---:|---:|")
print(f"| {attempts} | {admitted} | {refused} | {other} | {slowest:.0f} | {sum('serial' in p for p in problems)} |")
for p in problems:
    print("PROBLEM", p)
print(f"load average: {os.getloadavg()[0]:.1f}")
sys.exit(1 if problems else 0)
PY
