#!/usr/bin/env bash
# Installs strandwatch into ./.venv on a bare machine.
#   deploy/install.sh          the service and its CLI
#   deploy/install.sh --test   also the test suite's Python packages and the real
#                              services the tests start (snmpd, snmpsimd, ethtool, ...)
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
for argument in "$@"; do
  case "$argument" in
    --test) want_tests=1 ;;
    *) echo "install.sh: unknown option '$argument' (use --test)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "install.sh: strandwatch needs Python >= 3.11; $python is $("$python" -V 2>&1)" >&2
  exit 1
fi

if [ "$want_tests" = 1 ]; then
  debian_packages=(snmpd snmp snmpsim ethtool iproute2 procps openssl systemd mosquitto nats-server influxdb victoria-metrics chromium poppler-utils)
  missing=()
  for package in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "install.sh: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts some of these as system services; the tests run their own on free ports.
    if command -v systemctl >/dev/null 2>&1; then
      for service in snmpd mosquitto nats-server influxdb victoria-metrics; do
        systemctl is-active --quiet "$service" 2>/dev/null && { $sudo systemctl stop "$service" || true; }
      done
    fi
  fi
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
if [ "$want_tests" = 1 ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
else
  .venv/bin/python -m pip install -q --disable-pip-version-check -e .
fi
echo "install.sh: strandwatch installed in $(pwd)/.venv"
