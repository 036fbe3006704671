#!/usr/bin/env bash
# benches/ssh_vs_ansible.sh: the ssh provider side by side with Ansible (ansible-core) on the
# same 4 SSH hosts: copy one package to every host, start 20 instances of it (5 per host, each
# health-checked until it answers on its port), then stop them all.
#
#   benches/ssh_vs_ansible.sh                  5 rounds (enact, Ansible, tuned Ansible)
#   ENACT_BENCH_RUNS=3 benches/ssh_vs_ansible.sh
#
# Two Ansible configurations are compared (both printed with the results):
#   default  Ansible's own settings (forks 5, no pipelining, its default ssh_args
#            `-C -o ControlMaster=auto -o ControlPersist=60s`);
#   tuned    forks = 4 (one per host), pipelining = True,
#            ssh_args = -o ControlMaster=auto -o ControlPersist=60s.
# Both run the same playbooks, with `gather_facts: false` and a fixed interpreter.
#
# Knobs:
#   ENACT_BENCH_RUNS=N        rounds (default 5); each round runs every tool once, alternating
#   ENACT_BENCH_DEFAULT=0     skip the runs of Ansible with its default settings
#   ENACT_BENCH_TUNED=0       skip the runs of the tuned Ansible
#   ENACT_BENCH_BIN=PATH      the enact binary (default target/release/enact, built with
#                             `cargo build --release` if missing; a note says when it is older
#                             than the sources)
#   ENACT_BENCH_KEEP=1        keep the temporary directory (repos, playbooks, logs) at the end
#
# Set-up (not timed): the release binary, ansible-core in a venv (target/bench-venv), and in a
# temporary directory a client key, 4 host keys and 4 `sshd -D -e -f CONF` on 127.0.0.41 …
# 127.0.0.44, port 2541. Each sshd gives its sessions their own HOME (`SetEnv HOME=…`), so the
# 4 loopback "hosts" do not share a home directory: enact's packages ($HOME/.enact/dev/…) and
# Ansible's remote temp files (~/.ansible/tmp) are really per host, as on 4 machines. Both tools
# check host keys against the same known_hosts file.
#
# Timed: enact `apply --auto-approve` (up) and `destroy --auto-approve` (down) of a choreography
# of 5 services × 4 instances; Ansible `ansible-playbook up.yml` (copy, start 5 instances per host
# detached recording their pids, wait_for each port) and `down.yml` (kill the pids, wait_for each
# port to close). Before every run nothing runs and nothing is on the hosts (no package, no
# state, no SSH control master); after every up, all 20 ports are checked to answer, after every
# down to be closed (not timed). Everything started is stopped by a trap on exit.
#
# Prints the load average before and after, both Ansible configurations, a Markdown table of the
# median wall times of up, down and both with each tool's time ÷ enact's, and PASS/FAIL for the
# targets (printed, not asserted): enact ≥ 10× faster than the tuned Ansible, for up and for
# down separately (and the same against the default settings).
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C.UTF-8 LANG=C.UTF-8

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${ENACT_BENCH_RUNS:-5}
TUNED=${ENACT_BENCH_TUNED:-1}
DEFAULT=${ENACT_BENCH_DEFAULT:-1}
TARGET=10
ENACT=${ENACT_BENCH_BIN:-$ROOT/target/release/enact}
VENV=$ROOT/target/bench-venv
PACKAGE=$ROOT/examples/travel/services/airline.py
SSH_PORT=2541
ADDRESSES=(127.0.0.41 127.0.0.42 127.0.0.43 127.0.0.44)
SERVICES=(s1 s2 s3 s4 s5)
SERVICE_PORTS=(25401 25402 25403 25404 25405)
SSHD=/usr/sbin/sshd

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Whether something accepts TCP connections on $1:$2.
answers() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Clean-up: every process whose command line names our temporary directory (the sshds, the
# service instances — their package lives under it —, Ansible's SSH control masters and, if we
# are interrupted, a running enact or ansible-playbook). Nothing else is touched.
TMP=""
SSHD_PIDS=()

our_processes() {
  local p cmd
  [ -n "$TMP" ] || return 0
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" != "$$" ] || continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
    case "$cmd" in *"$TMP/"*) echo "$p" ;; esac
  done
}

stop_control_masters() {
  local s
  [ -n "$TMP" ] && [ -d "$TMP/ansible/cp" ] || return 0
  for s in "$TMP"/ansible/cp/*; do
    [ -S "$s" ] || continue
    ssh -o ControlPath="$s" -O exit placeholder >/dev/null 2>&1 || true
  done
}

# Stops every service instance we started (both tools), by command line, and waits until they
# are gone. Leaves the sshds running (their command line names TMP too, so they are skipped).
stop_instances() {
  local pids=() p
  for p in $(our_processes); do
    case "$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" || true)" in *airline.py*) pids+=("$p") ;; esac
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do [ -d "/proc/$p" ] && [ "$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)" != Z ] && alive=1; done
    [ $alive = 1 ] || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$TMP" ]; then
    # First an interrupted enact or ansible-playbook (and whatever else names TMP but the
    # sshds), so that nothing starts another instance; then the instances; then the sshds.
    local pids=() p
    for p in $(our_processes); do
      [[ " ${SSHD_PIDS[*]} " == *" $p "* ]] || pids+=("$p")
    done
    [ ${#pids[@]} -eq 0 ] || { kill -TERM "${pids[@]}" 2>/dev/null; sleep 0.5; }
    stop_control_masters
    stop_instances
    [ ${#SSHD_PIDS[@]} -eq 0 ] || kill -TERM "${SSHD_PIDS[@]}" 2>/dev/null
    wait 2>/dev/null
    sleep 0.3
    mapfile -t pids < <(our_processes)
    [ ${#pids[@]} -eq 0 ] || kill -KILL "${pids[@]}" 2>/dev/null
    if [ "${ENACT_BENCH_KEEP:-0}" = 1 ]; then
      say "kept $TMP"
    else
      rm -rf "$TMP"
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Set-up (not timed)
[ -x "$SSHD" ] || die "$SSHD is missing: apt-get install -y openssh-server"
command -v ssh >/dev/null || die "ssh (the OpenSSH client) is missing: apt-get install -y openssh-client"
command -v ssh-keygen >/dev/null || die "ssh-keygen is missing"
[ -f "$PACKAGE" ] || die "$PACKAGE is missing"

if [ -z "${ENACT_BENCH_BIN:-}" ] && [ ! -x "$ENACT" ]; then
  say "building target/release/enact (cargo build --release) …"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x "$ENACT" ] || die "no enact binary at $ENACT"
if [ -z "${ENACT_BENCH_BIN:-}" ] && [ -n "$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$ENACT" -print -quit)" ]; then
  say "note: $ENACT is older than the sources; run \`cargo build --release\` to measure the current code"
fi

if [ ! -x "$VENV/bin/ansible-playbook" ]; then
  say "installing ansible-core into $VENV …"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet ansible-core
fi
ANSIBLE_VERSION=$("$VENV/bin/ansible-playbook" --version)
ANSIBLE_VERSION=${ANSIBLE_VERSION%%$'\n'*}

for a in "${ADDRESSES[@]}"; do
  ! answers "$a" "$SSH_PORT" || die "something already listens on $a:$SSH_PORT (another run of this bench?)"
  for port in "${SERVICE_PORTS[@]}"; do
    ! answers "$a" "$port" || die "something already listens on $a:$port"
  done
done

TMP=$(mktemp -d /tmp/enact-vs-ansible.XXXXXX)
mkdir -p /run/sshd "$TMP/keys" "$TMP/sshd" "$TMP/results"
ssh-keygen -q -t ed25519 -N '' -C enact-bench -f "$TMP/keys/client"
KNOWN_HOSTS=$TMP/known_hosts
: >"$KNOWN_HOSTS"
for i in "${!ADDRESSES[@]}"; do
  a=${ADDRESSES[$i]}
  mkdir -p "$TMP/home/$a"
  ssh-keygen -q -t ed25519 -N '' -C "host-$a" -f "$TMP/keys/host_$a"
  read -r alg body _ <"$TMP/keys/host_$a.pub"
  echo "[$a]:$SSH_PORT $alg $body" >>"$KNOWN_HOSTS"
  cat >"$TMP/sshd/$a.conf" <<EOF
ListenAddress $a
Port $SSH_PORT
HostKey $TMP/keys/host_$a
PidFile $TMP/sshd/$a.pid
AuthorizedKeysFile $TMP/keys/client.pub
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
MaxSessions 100
MaxStartups 100:30:200
SetEnv HOME=$TMP/home/$a
Subsystem sftp internal-sftp
EOF
  "$SSHD" -D -e -f "$TMP/sshd/$a.conf" 2>"$TMP/sshd/$a.log" &
  SSHD_PIDS+=($!)
done
for a in "${ADDRESSES[@]}"; do
  for _ in $(seq 100); do answers "$a" "$SSH_PORT" && break; sleep 0.1; done
  answers "$a" "$SSH_PORT" || die "sshd on $a:$SSH_PORT did not start: $(tail -3 "$TMP/sshd/$a.log")"
done

# enact: a config repository with one copy of the package.
REPO=$TMP/enact-repo
mkdir -p "$REPO/services"
cp "$PACKAGE" "$REPO/services/airline.py"
{
  printf '{\n  "defaultAccount": "lab",\n  "nodeSelector": { "policy": "ROUND_ROBIN" },\n'
  printf '  "accounts": { "lab": { "provider": "ssh", "knownHosts": "%s", "hosts": [\n' "$KNOWN_HOSTS"
  for i in "${!ADDRESSES[@]}"; do
    sep=','; [ "$i" -eq $((${#ADDRESSES[@]} - 1)) ] && sep=''
    printf '    { "address": "%s", "port": %d, "user": "root", "privateKey": "%s" }%s\n' \
      "${ADDRESSES[$i]}" "$SSH_PORT" "$TMP/keys/client" "$sep"
  done
  printf '  ] } },\n  "packageTypes": { "PYTHON": { "start": "python3 {package}" } }\n}\n'
} >"$REPO/enact.json"
{
  printf '{\n  "deployableServiceSpecs": [\n'
  for i in "${!SERVICES[@]}"; do
    sep=','; [ "$i" -eq $((${#SERVICES[@]} - 1)) ] && sep=''
    printf '    { "name": "%s", "roles": ["%s"], "packageType": "PYTHON", "packageUri": "services/airline.py", "port": %d, "numberOfInstances": %d }%s\n' \
      "${SERVICES[$i]}" "${SERVICES[$i]}" "${SERVICE_PORTS[$i]}" "${#ADDRESSES[@]}" "$sep"
  done
  printf '  ]\n}\n'
} >"$REPO/chor.json"

# Ansible: inventory, config (host key checking on, the same known_hosts) and two playbooks.
AN=$TMP/ansible
mkdir -p "$AN/cp" "$AN/home" "$AN/local-tmp"
cp "$PACKAGE" "$AN/airline.py"
{
  echo "[lab]"
  for a in "${ADDRESSES[@]}"; do
    echo "h${a##*.} ansible_host=$a remote_dir=$TMP/home/$a/ansible-pkg"
  done
  echo
  echo "[lab:vars]"
  echo "ansible_port=$SSH_PORT"
  echo "ansible_user=root"
  echo "ansible_ssh_private_key_file=$TMP/keys/client"
  echo "ansible_ssh_common_args='-o UserKnownHostsFile=$KNOWN_HOSTS'"
  echo "ansible_python_interpreter=/usr/bin/python3"
} >"$AN/inventory.ini"
# The default configuration sets only where Ansible keeps its files; the tuned one adds forks,
# pipelining and a persistent SSH control master.
cat >"$AN/ansible.cfg" <<EOF
[defaults]
inventory = $AN/inventory.ini
host_key_checking = True
home = $AN/home
local_tmp = $AN/local-tmp
retry_files_enabled = False

[ssh_connection]
control_path_dir = $AN/cp
EOF
cat >"$AN/ansible-tuned.cfg" <<EOF
[defaults]
inventory = $AN/inventory.ini
host_key_checking = True
home = $AN/home
local_tmp = $AN/local-tmp
retry_files_enabled = False
forks = ${#ADDRESSES[@]}

[ssh_connection]
control_path_dir = $AN/cp
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s
EOF
{
  echo "services:"
  for i in "${!SERVICES[@]}"; do echo "  - { name: ${SERVICES[$i]}, port: ${SERVICE_PORTS[$i]} }"; done
} >"$AN/services.yml"
cat >"$AN/up.yml" <<'EOF'
- name: copy the package and start 5 instances per host
  hosts: lab
  gather_facts: false
  vars_files: [services.yml]
  tasks:
    - name: copy the package
      ansible.builtin.copy:
        src: airline.py
        dest: "{{ remote_dir }}/"
        mode: "0755"
    - name: start an instance of every service, detached
      ansible.builtin.shell: >-
        cd {{ remote_dir }} || exit 1;
        nohup setsid env HOST={{ ansible_host }} PORT={{ item.port }} ENDPOINT_NAME={{ item.name }}
        SERVICE_NAME={{ item.name }} INSTANCE_ID={{ item.name }}-{{ inventory_hostname }}
        python3 {{ remote_dir }}/airline.py > {{ item.name }}.log 2>&1 < /dev/null &
        echo $! > {{ item.name }}.pid; cat {{ item.name }}.pid
      loop: "{{ services }}"
    - name: wait until every instance answers
      ansible.builtin.wait_for:
        host: "{{ ansible_host }}"
        port: "{{ item.port }}"
        timeout: 30
      loop: "{{ services }}"
EOF
cat >"$AN/down.yml" <<'EOF'
- name: stop the instances
  hosts: lab
  gather_facts: false
  vars_files: [services.yml]
  tasks:
    - name: stop an instance of every service
      ansible.builtin.shell: "kill $(cat {{ remote_dir }}/{{ item.name }}.pid)"
      loop: "{{ services }}"
    - name: wait until every port is closed
      ansible.builtin.wait_for:
        host: "{{ ansible_host }}"
        port: "{{ item.port }}"
        state: stopped
        timeout: 30
      loop: "{{ services }}"
EOF

# Sanity (not timed): every host answers with the key known_hosts has for it.
for a in "${ADDRESSES[@]}"; do
  ssh -o BatchMode=yes -o UserKnownHostsFile="$KNOWN_HOSTS" -o StrictHostKeyChecking=yes -i "$TMP/keys/client" \
    -p "$SSH_PORT" "root@$a" true || die "ssh to $a failed"
done

# ---------------------------------------------------------------------------------------------
# Runs

# Every one of the 20 instances answers (want=up) or none does (want=down).
check_ports() {
  local want=$1 a port bad=0
  for a in "${ADDRESSES[@]}"; do
    for port in "${SERVICE_PORTS[@]}"; do
      if answers "$a" "$port"; then [ "$want" = up ] || { say "  $a:$port still answers"; bad=1; }
      else [ "$want" = down ] || { say "  $a:$port does not answer"; bad=1; }; fi
    done
  done
  return $bad
}

# Nothing running and nothing on the hosts: no instance, no package, no state, no control master.
fresh_start() {
  stop_control_masters
  stop_instances
  check_ports down || die "instances are still running before a run"
  local a
  for a in "${ADDRESSES[@]}"; do rm -rf "${TMP:?}/home/$a/.enact" "$TMP/home/$a/.ansible" "$TMP/home/$a/ansible-pkg"; done
  rm -rf "$REPO/state"
}

# timed LOG CMD…: runs CMD with its output to LOG and sets ELAPSED to its wall time in seconds.
# CMD runs in the background and is waited for, so that a signal to this script ends the wait at
# once (the trap then stops CMD and everything else).
ELAPSED=""
timed() {
  local log=$1 start end status=0
  shift
  start=$EPOCHREALTIME
  "$@" >"$log" 2>&1 &
  wait $! || status=$?
  end=$EPOCHREALTIME
  if [ $status -ne 0 ]; then
    say "failed (exit $status): $* (log $log):"
    tail -30 "$log" >&2
    exit 1
  fi
  ELAPSED=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')
}

# run_enact N: sets UP and DOWN.
run_enact() {
  local n=$1
  timed "$TMP/results/enact-$n-up.log" "$ENACT" -C "$REPO" --no-color apply --auto-approve
  UP=$ELAPSED
  check_ports up || die "enact apply returned but not every instance answers"
  timed "$TMP/results/enact-$n-down.log" "$ENACT" -C "$REPO" --no-color destroy --auto-approve
  DOWN=$ELAPSED
  check_ports down || die "enact destroy returned but instances still answer"
}

# run_ansible N LABEL CONFIG: the two playbooks with the settings of CONFIG; sets UP and DOWN.
run_ansible() {
  local n=$1 label=$2 config=$3
  timed "$TMP/results/$label-$n-up.log" env ANSIBLE_CONFIG="$config" "$VENV/bin/ansible-playbook" "$AN/up.yml"
  UP=$ELAPSED
  check_ports up || die "$label up returned but not every instance answers"
  timed "$TMP/results/$label-$n-down.log" env ANSIBLE_CONFIG="$config" "$VENV/bin/ansible-playbook" "$AN/down.yml"
  DOWN=$ELAPSED
  check_ports down || die "$label down returned but instances still answer"
}

# show_config LABEL CONFIG: the file, and the settings that matter here as Ansible reads them
# (`(default)` = Ansible's own default, else the file that set it).
show_config() {
  echo "Ansible, $1 ($(basename "$2")):"
  echo
  echo '```ini'
  sed "s|$TMP|\$TMP|g" "$2"
  echo '```'
  echo
  echo '```'
  ANSIBLE_CONFIG="$2" "$VENV/bin/ansible-config" dump -t all 2>/dev/null |
    awk '/^ssh:$/ { ssh = 1; next } /^[a-z_]+:$/ { ssh = 0 }
         /^DEFAULT_FORKS\(/ { print }
         ssh && /^(pipelining|ssh_args|control_path_dir)\(/ { print "ssh " $0 }' | sed "s|$TMP|\$TMP|g"
  echo "playbooks: gather_facts: false; ansible_python_interpreter=/usr/bin/python3"
  echo '```'
  echo
}

TOOLS=(enact)
[ "$DEFAULT" = 0 ] || TOOLS+=(ansible)
[ "$TUNED" = 0 ] || TOOLS+=(ansible-tuned)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "enact: $ENACT"
say "ansible: $ANSIBLE_VERSION"
say "hosts: ${ADDRESSES[*]} port $SSH_PORT; $RUNS round(s) of: ${TOOLS[*]}; load average $LOAD_BEFORE"
for n in $(seq "$RUNS"); do
  for tool in "${TOOLS[@]}"; do
    fresh_start
    case $tool in
      enact) run_enact "$n" ;;
      ansible) run_ansible "$n" ansible "$AN/ansible.cfg" ;;
      ansible-tuned) run_ansible "$n" ansible-tuned "$AN/ansible-tuned.cfg" ;;
    esac
    total=$(awk -v u="$UP" -v d="$DOWN" 'BEGIN { printf "%.3f", u + d }')
    echo "$tool $UP $DOWN $total" >>"$TMP/results/times"
    say "round $n: $(printf '%-14s' "$tool") up $UP s, down $DOWN s, total $total s"
  done
done
fresh_start

# ---------------------------------------------------------------------------------------------
# Report

# median TOOL COLUMN (2 = up, 3 = down, 4 = total)
median() {
  awk -v t="$1" -v c="$2" '$1 == t { print $c }' "$TMP/results/times" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
label() {
  case $1 in
    enact) echo "enact (ssh provider)" ;;
    ansible) echo "Ansible, default settings (forks 5, no pipelining)" ;;
    ansible-tuned) echo "Ansible, tuned (forks 4, pipelining, ControlPersist 60 s)" ;;
  esac
}
# ratio A B: A ÷ B with one decimal.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f×", a / b; else printf "–" }'; }
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
E_UP=$(median enact 2)
E_DOWN=$(median enact 3)
E_TOTAL=$(median enact 4)
echo
echo "4 hosts, 1 package, 20 instances (5 services × 4); median of $RUNS runs; $ANSIBLE_VERSION;"
echo "load average (1, 5, 15 min): $LOAD_BEFORE before the runs, $LOAD_AFTER after"
echo
[ "$DEFAULT" = 0 ] || show_config "default settings" "$AN/ansible.cfg"
[ "$TUNED" = 0 ] || show_config "tuned" "$AN/ansible-tuned.cfg"
echo "| tool | up (s) | down (s) | total (s) | up ÷ enact's | down ÷ enact's | total ÷ enact's |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for tool in "${TOOLS[@]}"; do
  u=$(median "$tool" 2)
  d=$(median "$tool" 3)
  t=$(median "$tool" 4)
  echo "| $(label "$tool") | $u | $d | $t | $(ratio "$u" "$E_UP") | $(ratio "$d" "$E_DOWN") | $(ratio "$t" "$E_TOTAL") |"
done
echo
# verdict WHAT COLUMN TOOL: PASS when TOOL's median ÷ enact's is at least TARGET.
verdict() {
  local r
  r=$(awk -v a="$(median "$3" "$2")" -v e="$(median enact "$2")" 'BEGIN { printf "%.2f", a / e }')
  if awk -v r="$r" -v t="$TARGET" 'BEGIN { exit !(r >= t) }'; then printf 'PASS'; else printf 'FAIL'; fi
  echo ": $1: enact ≥ ${TARGET}× faster than $(label "$3"): ${r}×"
}
if [ "$TUNED" != 0 ]; then
  verdict up 2 ansible-tuned
  verdict down 3 ansible-tuned
fi
if [ "$DEFAULT" != 0 ]; then
  verdict up 2 ansible
  verdict down 3 ansible
fi
echo
echo "every run (seconds):"
echo
echo '```'
printf '%-14s %8s %8s %8s\n' tool up down total
while read -r tool up down total; do printf '%-14s %8s %8s %8s\n' "$tool" "$up" "$down" "$total"; done <"$TMP/results/times"
echo '```'
