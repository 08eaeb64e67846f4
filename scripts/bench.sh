#!/usr/bin/env bash
# `make bench`: load and CPU benchmarks of the filters in a real Envoy, and
# the policy decisions under callgrind. Minutes; not part of `make test`.
#
#   - installs what it needs if missing: wrk, valgrind, nginx (Debian
#     packages; nginx is started by the bench on loopback, its system service
#     is not used), PyYAML and matplotlib (PyPI, into .venv); redis-server and
#     webdis come with scripts/setup.sh (the `module-fleet` scenario starts
#     its own on loopback)
#   - builds the empty filter, the filters, the gateway module (if it builds),
#     and the native bench tools (bench/policy-bench)
#   - runs scripts/bench/run.py; results in target/bench/results.md (.csv,
#     .json) and target/bench/results.png
#
# Knobs (environment): BENCH_ROUNDS (8), BENCH_DURATION (seconds of load per
# scenario and round, 1), BENCH_WARMUP (2), BENCH_CONNECTIONS (16),
# BENCH_UPSTREAM (nginx | echo), BENCH_PIN (1: Envoy on the last CPU, the
# client on the others; 0: no pinning), BENCH_ONLY (comma-separated scenario
# keys), ENVOY_BIN. Arguments are passed to run.py (`bash scripts/bench.sh --help`).
#
# `--smoke` (`make bench-smoke`, part of `make test`): every scenario's Envoy
# starts and answers the mix with 2xx, every decision runs once natively;
# nothing is measured, so a change that breaks the bench fails the tests.
# The configurations are the demo's apis.yaml built by gatewayctl, so the
# bench follows the demo instead of copying it.
set -euo pipefail
cd "$(dirname "$0")/.."

FILTERS=(sign-auth ip-acl ext-auth access-control routing throttling param-validation threat-protection response-cache error-mapping request-mapping circuit-breaker log-push gateway)
CARGO=${CARGO:-cargo}
PY=.venv/bin/python
mkdir -p target/bench

say() { printf 'bench: %s\n' "$*"; }

smoke=
for arg in "$@"; do [ "$arg" = --smoke ] && smoke=1; done

apt_updated=
apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing $* (apt)"
    if [ -z "$apt_updated" ]; then
      apt-get update -qq >/dev/null
      apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    say "please install: $*" >&2
    return 1
  fi
}

bash scripts/setup.sh
if ! "$PY" -c 'import yaml' >/dev/null 2>&1; then
  say "installing PyYAML into .venv"
  "$PY" -m pip install --quiet --disable-pip-version-check pyyaml
fi

packages=(-p empty-filter -p host-call-probe)
for f in "${FILTERS[@]}"; do packages+=(-p "$f-wasm"); done
say "building the modules and the bench tools"
"$CARGO" build --release --target wasm32-wasip1 "${packages[@]}"
# The native module and its do-nothing baseline (Envoy dynamic modules).
"$CARGO" build --profile native -p gateway-native
"$CARGO" build --profile native -p empty-filter --no-default-features --features native
tools=(-p gatewayctl -p policy-bench -p integration-tests --bins)

if [ -n "$smoke" ]; then
  # Nothing is measured: the tools' debug builds (mostly built by the unit
  # tests already) and the echo upstream do.
  "$CARGO" build "${tools[@]}"
  export BENCH_TOOLS_DIR=target/debug BENCH_UPSTREAM=echo
  exec timeout 900 "$PY" scripts/bench/run.py "$@"
fi

command -v wrk >/dev/null 2>&1 || apt_install wrk
command -v valgrind >/dev/null 2>&1 || apt_install valgrind
upstream=${BENCH_UPSTREAM:-nginx}
if [ "$upstream" = nginx ] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  apt_install nginx || { say "no nginx: using the echo upstream instead"; upstream=echo; }
fi
export PATH="$PATH:/usr/sbin"
if ! "$PY" -c 'import matplotlib' >/dev/null 2>&1; then
  say "installing matplotlib into .venv (for the chart)"
  "$PY" -m pip install --quiet --disable-pip-version-check matplotlib ||
    say "matplotlib unavailable: the chart will be an SVG (target/bench/results.svg)"
fi
"$CARGO" build --release "${tools[@]}"

export BENCH_UPSTREAM=$upstream
exec "$PY" scripts/bench/run.py "$@"
