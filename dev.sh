#!/usr/bin/env bash
# Set up a fresh Debian machine with Python 3.11 (InfluxDB and Chromium from Debian, a venv from the
# development lockfile), then:
#   ./dev.sh up                 whole pipeline on the embedded stack, fed by the plant simulator, live view
#   ./dev.sh test [unit|integration] [pytest args]
#                               the test suite (unit: no servers, under a minute; integration: real broker,
#                               influxd and the other real servers); e.g. ./dev.sh test -m detection
#   ./dev.sh bench              the pipeline benchmark
#   ./dev.sh check              ruff, mypy --strict (services and tests) and the import-linter layer contracts
#   ./dev.sh ARGS               any `linewatch` command, e.g. ./dev.sh evaluate --seeds 3
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=${LINEWATCH_VENV:-.venv}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)  # MQTT tests, --source sparkplug
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the console's browser tests (Playwright drives it)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp="$VENV/.lock-$(sha256sum requirements-dev.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "creating $VENV from requirements-dev.lock" >&2
  "$PYTHON" -m venv "$VENV" || { as_root apt-get install -y -qq python3-venv >/dev/null && "$PYTHON" -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e .
  rm -f "$VENV"/.lock-* && touch "$stamp"
fi

command=${1:-up}
shift || true
case "$command" in
  up) exec "$VENV/bin/linewatch" up "$@" ;;
  test)
    case "${1:-}" in
      unit | integration) tier=$1; shift; exec "$VENV/bin/python" -m pytest "tests/$tier" "$@" ;;
      *) exec "$VENV/bin/python" -m pytest "$@" ;;
    esac ;;
  bench) exec "$VENV/bin/linewatch" bench pipeline "$@" ;;
  check)
    "$VENV/bin/ruff" check services tests
    "$VENV/bin/ruff" format --check services tests
    "$VENV/bin/mypy"
    exec "$VENV/bin/lint-imports" ;;
  *) exec "$VENV/bin/linewatch" "$command" "$@" ;;
esac
