#!/usr/bin/env bash
# `make soak`: the gateway module under a mixed load with ever-new client
# IPs, users, nonces and parameter values, its memory sampled over time;
# first the Wasm module, then the native one (integration-tests/src/bin/soak.rs).
# Fails if Envoy's RSS or the Wasm VMs' memory grows after warm-up by more
# than allowed, or if a request gets an unexpected answer.
#   SOAK_SECONDS=600 make soak          longer (default 180 s per module)
#   SOAK_MODULES=wasm make soak         one module only (wasm, native)
# Other knobs: SOAK_SAMPLE_SECONDS, SOAK_CLIENTS, SOAK_MAX_RSS_GROWTH_MB,
# SOAK_MAX_VM_GROWTH_MB. Results: target/soak/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release -p integration-tests --bin soak
mkdir -p target/soak
status=0
modules="${SOAK_MODULES:-wasm native}"
for module in ${modules//,/ }; do
  case "$module" in
    wasm) native=0 ;;
    native) native=1 ;;
    *) echo "SOAK_MODULES: unknown module '$module' (wasm, native)" >&2; exit 2 ;;
  esac
  GATEWAY_NATIVE=$native target/release/soak || status=1
done
{
  echo "# make soak ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  for module in ${modules//,/ }; do cat "target/soak/$module.md"; done
} > target/soak/results.md
echo "soak: results in target/soak/results.md"
exit "$status"
