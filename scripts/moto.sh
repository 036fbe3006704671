#!/usr/bin/env bash
# Installs moto's EC2 API emulator (the `moto_server` command, from PyPI) in a virtual
# environment of its own and prints the path of `moto_server`. The ec2 provider's tests start it
# on 127.0.0.1 on a free port (tests/common/moto.rs). Idempotent: a second run only checks.
#
#   ENACT_MOTO_VENV   where the environment goes (default: ~/.cache/enact/moto-venv)
#   ENACT_MOTO_SPEC   the pip requirement (default: moto[server]==5.2.5)
set -euo pipefail
venv="${ENACT_MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/enact/moto-venv}"
spec="${ENACT_MOTO_SPEC:-moto[server]==5.2.5}"
if [ ! -x "$venv/bin/moto_server" ]; then
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    # Debian splits venv (with ensurepip) out of python3.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null; }
  fi
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2
fi
"$venv/bin/moto_server" --help >/dev/null
echo "$venv/bin/moto_server"
