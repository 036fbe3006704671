#!/usr/bin/env bash
# Applies N services (200 by default), one instance each, onto EC2 nodes in a real EC2 API
# emulator (moto's server) at a client-side rate limit of 5 requests/s, twice in the same run:
# with enact's batching (one RunInstances call for the nodes of one instance type) and with one
# call per node (`nodesPerCall: 1`), the Enactment Engine's way. Prints, for each, the EC2 calls
# made (counted by a proxy in front of the emulator, by action) and the wall time of the apply
# and of the destroy.
#
# Everything runs inside a network namespace this script makes (it needs root and iproute2):
# the emulator, one sshd on port 22 of every address, and a watcher that adds each new
# instance's private address to the namespace's loopback, so the instances really run over SSH.
# enact logs in as a user this script makes for the run (`enact-bench-<pid>`, shell /bin/sh, home
# in the run's directory, removed at the end): a login shell that starts nothing, as on a fresh
# EC2 image, so the figures are enact's and the emulator's, not a profile script's.
#
#   N=200 RATE=5 benches/ec2_apply.sh          (builds target/release/enact if it is missing;
#                                               ENACT_BIN=PATH measures another binary;
#                                               ONLY=batched or ONLY=per-node runs one of the two)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-200}"
RATE="${RATE:-5}"
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
MOTO="$(./scripts/moto.sh)"
PY="$(dirname "$MOTO")/python"
ENACT="${ENACT_BIN:-$PWD/target/release/enact}"
[ -x "$ENACT" ] || cargo build --release --locked

NS="enact-bench-$$"
USER_NAME="enact-bench-$$"
WORK="$(mktemp -d /tmp/enact-ec2-bench.XXXXXX)"
cleanup() {
  for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  pkill -9 -u "$USER_NAME" 2>/dev/null || true
  userdel "$USER_NAME" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
chmod 755 "$WORK"
useradd --no-user-group --gid nogroup --shell /bin/sh --home-dir "$WORK/home" --create-home "$USER_NAME"
# Without PAM, sshd refuses an account whose password is locked (`!`): `*` has none and is not locked.
usermod -p "*" "$USER_NAME"
ip netns add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
in_ns ip link set lo up

# The emulator, and a proxy in front of it that counts requests by action.
(in_ns "$MOTO" -H 127.0.0.1 -p 4566 >/dev/null 2>&1 &)
cat >"$WORK/proxy.py" <<'EOF'
import http.server, sys, urllib.parse, urllib.request
target, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(log, "a") as f:
            f.write(urllib.parse.parse_qs(body.decode()).get("Action", ["?"])[0] + "\n")
        req = urllib.request.Request(target + self.path, data=body, method="POST",
            headers={k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")})
        try:
            with urllib.request.urlopen(req) as r:
                out, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            out, status = e.read(), e.code
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
EOF
(in_ns "$PY" "$WORK/proxy.py" http://127.0.0.1:4566 4567 "$WORK/calls" >/dev/null 2>&1 &)
cat >"$WORK/watch.py" <<'EOF'
import boto3, subprocess, time
c = boto3.client("ec2", endpoint_url="http://127.0.0.1:4566", region_name="us-east-1",
                 aws_access_key_id="t", aws_secret_access_key="t")
added = set()
while True:
    try:
        # Paginated: the emulator answers 100 reservations a page.
        for r in (r for page in c.get_paginator("describe_instances").paginate() for r in page["Reservations"]):
            for i in r["Instances"]:
                ip = i.get("PrivateIpAddress")
                if ip and ip not in added:
                    subprocess.run(["ip", "addr", "add", ip + "/32", "dev", "lo"], check=False)
                    added.add(ip)
    except Exception:
        pass
    time.sleep(0.05)
EOF
until in_ns "$PY" -c "import socket; socket.create_connection(('127.0.0.1', 4566), timeout=0.5)" 2>/dev/null; do sleep 0.2; done
(in_ns "$PY" "$WORK/watch.py" >/dev/null 2>&1 &)

# One sshd on port 22 of every address of the namespace.
mkdir -p /run/sshd "$WORK/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host" && ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/client"
cp "$WORK/ssh/client.pub" "$WORK/ssh/authorized_keys"
chmod 755 "$WORK/ssh" && chmod 644 "$WORK/ssh/authorized_keys"
cat >"$WORK/ssh/sshd.conf" <<EOF
ListenAddress 0.0.0.0
Port 22
HostKey $WORK/ssh/host
PidFile $WORK/ssh/sshd.pid
AuthorizedKeysFile $WORK/ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
MaxSessions 100
MaxStartups 300:30:600
Subsystem sftp internal-sftp
EOF
(in_ns /usr/sbin/sshd -D -e -f "$WORK/ssh/sshd.conf" >/dev/null 2>&1 &)

# A repository of N services, each one instance of a tiny HTTP server, on an ec2 account.
repo() {
  local dir="$1" per_call="$2"
  mkdir -p "$dir/services"
  cp examples/travel/services/airline.py "$dir/services/"
  "$PY" - "$dir" "$N" "$RATE" "$per_call" "$WORK/ssh/client" "$USER_NAME" <<'EOF'
import json, sys
dir, n, rate, per_call, key, user = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
account = {"provider": "ec2", "region": "us-east-1", "imageId": "ami-1e749f67", "endpoint": "http://127.0.0.1:4567",
           "user": user, "privateKey": key, "requestsPerSecond": rate}
if per_call != "all":
    account["nodesPerCall"] = int(per_call)
json.dump({"defaultAccount": "aws", "accounts": {"aws": account},
           "packageTypes": {"PYTHON": {"start": "python3 {package}"}}}, open(dir + "/enact.json", "w"), indent=1)
json.dump({"deployableServiceSpecs": [
    {"name": f"svc-{i:03}", "roles": [f"svc-{i:03}"], "packageType": "PYTHON", "packageUri": "services/airline.py",
     "port": 8080, "numberOfInstances": 1, "version": "1.0"} for i in range(n)]}, open(dir + "/chor.json", "w"), indent=1)
EOF
}

run() {
  local label="$1" per_call="$2"
  local dir="$WORK/$label"
  repo "$dir" "$per_call"
  : >"$WORK/calls"
  local t0 t1 t2
  t0=$(date +%s.%N)
  if ! in_ns env AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
    "$ENACT" -C "$dir" --no-color apply --auto-approve --health-timeout 120 >"$WORK/apply.log" 2>&1; then
    echo "the apply failed ($label):" >&2
    tail -20 "$WORK/apply.log" >&2
  fi
  t1=$(date +%s.%N)
  local applied
  applied=$(sort "$WORK/calls" | uniq -c | awk '{printf "%s %s, ", $1, $2}')
  : >"$WORK/calls"
  in_ns env AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
    "$ENACT" -C "$dir" --quiet destroy --auto-approve >/dev/null
  t2=$(date +%s.%N)
  local destroyed
  destroyed=$(sort "$WORK/calls" | uniq -c | awk '{printf "%s %s, ", $1, $2}')
  printf '| %s | %s | %s s | %s | %s s |\n' "$label" "${applied%, }" "$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")" \
    "${destroyed%, }" "$(awk "BEGIN { printf \"%.1f\", $t2 - $t1 }")"
}

echo "$N services, one instance each, on $N EC2 nodes (t3.small) in the emulator; rate limit $RATE requests/s"
echo
echo "| nodes per RunInstances call | apply: EC2 calls | apply | destroy: EC2 calls | destroy |"
echo "|---|---|---|---|---|"
case "${ONLY:-both}" in
  batched) run "batched (one call per instance type)" all ;;
  per-node) run "one call per node" 1 ;;
  *) run "batched (one call per instance type)" all; run "one call per node" 1 ;;
esac
