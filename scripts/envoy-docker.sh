#!/usr/bin/env bash
# Runs the official Envoy image as if it were a local `envoy` binary, so the
# tests can use it where a Docker daemon exists:
#   ENVOY_BIN=scripts/envoy-docker.sh make test
# The repository and the temp directory are mounted at the same paths, and
# the host network is used so ephemeral loopback ports work unchanged.
set -euo pipefail
image="${ENVOY_IMAGE:-envoyproxy/envoy:v1.40-latest}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="${TMPDIR:-/tmp}"
exec docker run --rm -i --network host --user "$(id -u):$(id -g)" \
  -v "$repo:$repo" -v "$tmp:$tmp" -w "$PWD" \
  --entrypoint envoy "$image" "$@"
