#!/usr/bin/env bash
# Scale probes of the release binary, end to end (see "Scale: large graphs and many local
# instances" in benches/README.md):
#
#   svg    `enact graph --format svg` of a cycle of N services (s1 → s2 → … → sN → s1) and of a
#          random DAG of N services with up to 3 dependencies each;
#   local  `enact apply` then `enact destroy` of real local processes: one service with N
#          instances, and N services of one instance each that all call one more service.
#
# Usage: benches/scale.sh [svg|local|all]
#
#   ENACT_BENCH_BIN=PATH            the enact binary (default target/release/enact)
#   ENACT_BENCH_BASE=PATH           a second binary, measured side by side (the baseline)
#   ENACT_BENCH_SVG_SIZES="..."     cycle sizes, default "1000 2000 5000"
#   ENACT_BENCH_DAG_SIZES="..."     DAG sizes, default "200 300 400" (the old layout needs
#                                   minutes from about 500 services on)
#   ENACT_BENCH_LOCAL_SIZES="..."   default "500 1000 2000"
#   ENACT_BENCH_LOCAL_SHAPES="..."  default "one many"
#   ENACT_BENCH_SERVICE=rust|python the instances' program: a tiny HTTP responder compiled here
#                                   with rustc (default; ~0.3 MB a process), or the same in
#                                   Python (~4 MB a process: 2,000 of them take 8 GB)
#   ENACT_BENCH_TIMEOUT=SECONDS     per command (default 900); a command cut short shows as
#                                   "> SECONDS"
#   ENACT_BENCH_KEEP=1              keep the temporary directory (repositories, every log)
#
# Each figure is one run: wall seconds and peak RSS (MB) of the enact process, from
# /usr/bin/time. Nothing is asserted; after every apply the script checks that every instance
# runs and answers and is recorded, after every destroy that none is left, and at exit it stops
# whatever it started (`enact destroy`, then any process naming its temporary directory).
set -euo pipefail

cd "$(dirname "$0")/.."
what=${1:-all}
bin=$(realpath "${ENACT_BENCH_BIN:-target/release/enact}")
base=${ENACT_BENCH_BASE:+$(realpath "$ENACT_BENCH_BASE")}
svg_sizes=${ENACT_BENCH_SVG_SIZES:-"1000 2000 5000"}
dag_sizes=${ENACT_BENCH_DAG_SIZES:-"200 300 400"}
local_sizes=${ENACT_BENCH_LOCAL_SIZES:-"500 1000 2000"}
local_shapes=${ENACT_BENCH_LOCAL_SHAPES:-"one many"}
service=${ENACT_BENCH_SERVICE:-rust}
limit=${ENACT_BENCH_TIMEOUT:-900}

[ -x "$bin" ] || { echo "no enact binary at $bin: run cargo build --release" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install -y time)" >&2; exit 1; }
# Every instance holds a few descriptors of enact's while it starts; wiring opens sockets.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

tmp=$(mktemp -d /tmp/enact-scale.XXXXXX)
repos=()
cleanup() {
    for repo in "${repos[@]}"; do
        if [ -f "$repo/state/dev.json" ]; then
            timeout 600 "$bin" -C "$repo" destroy --auto-approve >/dev/null 2>&1 || true
        fi
    done
    pkill -KILL -f "$tmp" 2>/dev/null || true
    if [ "${ENACT_BENCH_KEEP:-0}" = 1 ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

binaries=("$bin")
labels=("this")
if [ -n "$base" ]; then
    binaries=("$base" "$bin")
    labels=("base" "this")
fi

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); ulimit -n $(ulimit -n)" >&2
echo "| workload | N | binary | command | wall s | peak RSS MB |"
echo "|---|---:|---|---|---:|---:|"

# measure LABEL WORKLOAD N COMMAND-NAME ARGS...: one timed run, one table row; returns the
# command's exit status.
measure() {
    local label=$1 workload=$2 n=$3 name=$4
    shift 4
    local log="$tmp/$workload-$n-$label-$name.log"
    local status=0
    /usr/bin/time -f '%e %M' -o "$tmp/time" timeout "$limit" "$@" >"$log" 2>&1 || status=$?
    local wall rss
    read -r wall rss < <(tail -n 1 "$tmp/time")
    if [ "$status" = 124 ]; then wall="> $limit"; fi
    printf '| %s | %s | %s | %s | %s | %.0f |\n' "$workload" "$n" "$label" "$name" "$wall" "$((rss / 1024))"
    if [ "$status" != 0 ] && [ "$status" != 124 ]; then
        echo "  ($name exited with $status; last lines of $log:)" >&2
        tail -n 5 "$log" >&2
    fi
    return "$status"
}

# ------------------------------------------------------------------------------------------
# svg
# ------------------------------------------------------------------------------------------

# gen_graph DIR SHAPE N: a repository whose chor.json is a cycle or a random DAG of N services.
gen_graph() {
    local dir=$1 shape=$2 n=$3
    mkdir -p "$dir"
    python3 - "$dir" "$shape" "$n" <<'EOF'
import json, sys
dir, shape, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def svc(i, deps):
    return {"name": f"s{i}", "roles": [f"s{i}"], "packageType": "COMMAND_LINE",
            "packageUri": "services/tiny", "port": 20000, "numberOfInstances": 1,
            "dependencies": [{"serviceSpecName": f"s{d}", "serviceSpecRole": f"s{d}"} for d in deps]}
services = []
state = 0x9E3779B97F4A7C15
def rand():
    global state
    state ^= state >> 12; state ^= (state << 25) & (2**64 - 1); state ^= state >> 27
    return (state * 0x2545F4914F6CDD1D) & (2**64 - 1)
for i in range(1, n + 1):
    if shape == "cycle":
        deps = [n if i == 1 else i - 1]
    else:
        deps = sorted({1 + rand() % (i - 1) for _ in range(rand() % 4)}) if i > 1 else []
    services.append(svc(i, deps))
json.dump({"deployableServiceSpecs": services}, open(f"{dir}/chor.json", "w"))
json.dump({"defaultEnv": "dev", "accounts": {"local": {"provider": "local"}}}, open(f"{dir}/enact.json", "w"))
EOF
}

run_svg() {
    for shape in cycle dag; do
        local sizes=$svg_sizes
        if [ "$shape" = dag ]; then sizes=$dag_sizes; fi
        for n in $sizes; do
            local dir="$tmp/svg-$shape-$n"
            gen_graph "$dir" "$shape" "$n"
            for i in "${!binaries[@]}"; do
                local out="$dir/graph-${labels[$i]}.svg"
                measure "${labels[$i]}" "svg-$shape" "$n" "graph --format svg" \
                    sh -c 'exec "$1" -C "$2" graph --format svg >"$3"' sh "${binaries[$i]}" "$dir" "$out" || true
                if [ -s "$out" ] && ! grep -q '>s1<\|>s1 ' "$out"; then
                    echo "  (the SVG of ${labels[$i]} does not name s1)" >&2
                fi
            done
        done
    done
}

# ------------------------------------------------------------------------------------------
# local
# ------------------------------------------------------------------------------------------

# The instances' program: answers every HTTP request (health checks, setInvocationAddress)
# with 200 and `{}`.
build_service() {
    mkdir -p "$tmp/service"
    if [ "$service" = python ]; then
        cat >"$tmp/service/tiny" <<EOF
#!$(python3 -c 'import sys; print(sys.executable)') -S
import os, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((os.environ["HOST"], int(os.environ["PORT"])))
s.listen(64)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = c.recv(65536)
        if not chunk:
            break
        body += chunk
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    c.close()
EOF
        chmod +x "$tmp/service/tiny"
        return
    fi
    cat >"$tmp/service/tiny.rs" <<'EOF'
use std::io::{Read, Write};
use std::net::TcpListener;
fn main() {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = TcpListener::bind(format!("{host}:{port}")).expect("bind");
    for stream in listener.incoming().flatten() {
        let mut stream = stream;
        let mut data = Vec::new();
        let mut buf = [0u8; 65536];
        let (head_end, length) = loop {
            let Ok(n) = stream.read(&mut buf) else { break (data.len(), 0) };
            if n == 0 { break (data.len(), 0) }
            data.extend_from_slice(&buf[..n]);
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..i]).to_ascii_lowercase();
                let length = head.lines().find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok()).unwrap_or(0usize);
                break (i + 4, length);
            }
        };
        while data.len() < head_end + length {
            match stream.read(&mut buf) { Ok(0) | Err(_) => break, Ok(n) => data.extend_from_slice(&buf[..n]) }
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    }
}
EOF
    rustc -O -o "$tmp/service/tiny" "$tmp/service/tiny.rs"
}

# gen_local DIR SHAPE N: `one`: service t1 with N instances; `many`: services t1…tN of one
# instance each, every one calling `hub` (REST).
gen_local() {
    local dir=$1 shape=$2 n=$3
    mkdir -p "$dir/services"
    cp "$tmp/service/tiny" "$dir/services/tiny"
    python3 - "$dir" "$shape" "$n" <<'EOF'
import json, sys
dir, shape, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def svc(name, instances, deps=()):
    return {"name": name, "roles": [name], "serviceType": "REST", "packageType": "COMMAND_LINE",
            "packageUri": "services/tiny", "endpointName": name, "port": 21000, "numberOfInstances": instances,
            "resourceImpact": {"memory": "SMALL"}, "version": "1.0",
            "dependencies": [{"serviceSpecName": d, "serviceSpecRole": d} for d in deps]}
if shape == "one":
    services = [svc("t1", n)]
else:
    services = [svc("hub", 1)] + [svc(f"t{i}", 1, ["hub"]) for i in range(1, n + 1)]
json.dump({"deployableServiceSpecs": services}, open(f"{dir}/chor.json", "w"))
json.dump({"defaultEnv": "dev", "defaultAccount": "local", "accounts": {"local": {"provider": "local"}},
           "nodeSelector": {"policy": "ALWAYS_CREATE"}}, open(f"{dir}/enact.json", "w"))
EOF
}

# check_up DIR N: every instance is recorded, runs and answers on its port.
check_up() {
    python3 - "$1" "$2" <<'EOF'
import json, socket, sys
dir, n = sys.argv[1], int(sys.argv[2])
state = json.load(open(f"{dir}/state/dev.json"))
nodes = state["nodes"]
instances = [(i, nodes[i["node"]]["address"]) for s in state["services"].values() for i in s["instances"]]
dead = []
for instance, address in instances:
    try:
        socket.create_connection((address, 21000), timeout=2).close()
    except OSError:
        dead.append(instance["id"])
if len(instances) < n or dead:
    print(f"  (after apply: {len(instances)} instance(s) recorded, expected at least {n}; {len(dead)} do not answer: {dead[:5]})", file=sys.stderr)
EOF
}

check_down() {
    local left
    left=$(pgrep -f "$1/services/tiny" | wc -l || true)
    if [ "$left" != 0 ]; then
        echo "  (after destroy: $left process(es) of $1 still run; killing them)" >&2
        pkill -KILL -f "$1/services/tiny" || true
    fi
}

run_local() {
    build_service
    for shape in $local_shapes; do
        for n in $local_sizes; do
            for i in "${!binaries[@]}"; do
                local dir="$tmp/local-$shape-$n-${labels[$i]}"
                gen_local "$dir" "$shape" "$n"
                repos+=("$dir")
                if measure "${labels[$i]}" "local-$shape" "$n" "apply" \
                    "${binaries[$i]}" -C "$dir" apply --auto-approve; then
                    check_up "$dir" "$n"
                fi
                measure "${labels[$i]}" "local-$shape" "$n" "destroy" \
                    "${binaries[$i]}" -C "$dir" destroy --auto-approve || true
                check_down "$dir"
            done
        done
    done
}

case "$what" in
    svg) run_svg ;;
    local) run_local ;;
    all) run_svg; run_local ;;
    *) echo "usage: benches/scale.sh [svg|local|all]" >&2; exit 2 ;;
esac
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
