#!/usr/bin/env bash
# Runs every check and test of enact: formatting, lints, unit, property and integration tests.
# This is the command the README names and the one CI (.ci/run) calls; it must never be weaker.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "test servers: OpenSSH's sshd for the ssh provider's tests"
if [ ! -x /usr/sbin/sshd ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q openssh-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q openssh-server >/dev/null; }
  fi
fi
if [ ! -x /usr/sbin/sshd ]; then
  echo "openssh-server is missing and could not be installed (needs root and apt-get)" >&2
  if [ "${CI:-}" = true ]; then exit 1; fi
  echo "the ssh tests will be SKIPPED" >&2
fi
mkdir -p /run/sshd 2>/dev/null || true

step "test servers: moto's EC2 API emulator for the ec2 provider's tests"
if ! ./scripts/moto.sh >/dev/null; then
  echo "moto's server could not be installed (needs python3 -m venv and PyPI)" >&2
  if [ "${CI:-}" = true ]; then exit 1; fi
  echo "the ec2 tests will be SKIPPED" >&2
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo doc (warnings are errors: every public item documented, every link resolves)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet

step "cargo test"
cargo test --locked

step "the README's first command works on this checkout"
cargo run --quiet --locked -- -C examples/travel -e prod plan --refresh=false --no-color --detailed-exitcode >/dev/null && code=0 || code=$?
if [ "$code" != 2 ]; then
  echo "expected the committed prod state to plan changes (exit 2), got exit $code" >&2
  exit 1
fi
echo "all checks passed"
