#!/usr/bin/env bash
# Idempotent environment setup: creates .venv, installs loglens + test deps, and the
# system packages the tests need (Chromium for browser tests, graphviz for diagrams, node/npm
# and Go for the npm and Go clients the protocol tests drive).
# Safe to run twice: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
REQ=environment/requirements.txt
STAMP=$VENV/.installed-$(cat "$REQ" pyproject.toml tests/plugins/loglens_example_notifier/pyproject.toml | sha256sum | cut -c1-16)

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)
# node + npm: the Loki test installs the real winston-loki client from npm (no skip without them)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# Go + fluent-logger-golang (the client library of Docker's fluentd log driver) for the Fluent test
command -v go >/dev/null 2>&1 || need_apt+=(golang-go)
[ -d /usr/share/gocode/src/github.com/fluent/fluent-logger-golang ] || need_apt+=(golang-github-fluent-fluent-logger-golang-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" fonts-dejavu-core >/dev/null
  else
    echo "setup: please install these system packages: ${need_apt[*]}" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  echo "setup: installing Python packages (first run takes a few minutes)"
  # pip's notices about this machine's extra index locations are noise, not errors
  quiet() { "$@" 2> >(grep -v "is ignored: it is neither" | grep -v "^$" >&2); }
  quiet "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  quiet "$VENV/bin/python" -m pip install -q -r "$REQ"
  quiet "$VENV/bin/python" -m pip install -q --no-deps -e .
  # the example third-party notifier plugin the tests prove is discovered through entry points
  quiet "$VENV/bin/python" -m pip install -q --no-deps -e tests/plugins/loglens_example_notifier
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
echo "setup: ready ($VENV)"
