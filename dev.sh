#!/usr/bin/env bash
# Set up a fresh Debian machine with Python 3.11 (InfluxDB from Debian, a venv from the lockfile), then:
#   ./dev.sh up     whole pipeline on the embedded stack, fed by the plant simulator, live view
#   ./dev.sh test   the test suite (real broker, real influxd)
#   ./dev.sh bench  the pipeline benchmark
#   ./dev.sh check  ruff and mypy --strict
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=${LINEWATCH_VENV:-.venv}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v influxd >/dev/null 2>&1; then
  echo "installing InfluxDB (Debian package influxdb)" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq influxdb >/dev/null
fi

stamp="$VENV/.lock-$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "creating $VENV from requirements.lock" >&2
  "$PYTHON" -m venv "$VENV" || { as_root apt-get install -y -qq python3-venv >/dev/null && "$PYTHON" -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.lock
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e .
  rm -f "$VENV"/.lock-* && touch "$stamp"
fi

command=${1:-up}
shift || true
case "$command" in
  up) exec "$VENV/bin/linewatch" up "$@" ;;
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
  bench) exec "$VENV/bin/linewatch" bench pipeline "$@" ;;
  check) "$VENV/bin/ruff" check services tests && exec "$VENV/bin/mypy" ;;
  *) exec "$VENV/bin/linewatch" "$command" "$@" ;;
esac
