# The commands the README shows. `make run` and `make test` do everything
# on a fresh machine, set-up included.

FILTERS      := sign-auth ip-acl ext-auth access-control routing throttling param-validation threat-protection response-cache error-mapping request-mapping circuit-breaker log-push gateway
# The shipped modules, each a thin crate under modules/: a .wasm per policy,
# gateway.wasm, and libgateway.so (gateway-native).
WASM_MODULES := $(addsuffix -wasm,$(FILTERS))
POLICY_CRATES := sign-auth ip-acl ext-auth access-control routing throttling param-validation threat-protection response-cache error-mapping request-mapping circuit-breaker log-push gateway-registry
# The integration tests that run once per form; deploy.rs checks the
# shipped manifests and images, the same whatever the form, and the
# harness's own unit tests run with the first form only.
MODE_TESTS   := $(addprefix --test ,$(filter-out deploy,$(basename $(notdir $(wildcard integration-tests/tests/*.rs)))))
WASM_DIR     := target/wasm32-wasip1/release
NATIVE_MODULE := target/native/libgateway.so
CARGO        ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all setup build run test lint fmt unit integration validate clean oci bench bench-smoke fuzz soak demo-config

all: build

setup:
	@bash scripts/setup.sh

## build: every filter as a .wasm module (release profile), and the gateway
## module as a native Envoy dynamic module (native profile), with their sizes
build: setup
	$(CARGO) build --release --target wasm32-wasip1 $(addprefix -p ,$(WASM_MODULES))
	$(CARGO) build --profile native -p gateway-native
	$(CARGO) build --profile native -p native-host --example panic_probe
	@if nm -D --defined-only $(NATIVE_MODULE) | grep -q ' proxy_'; then \
	  echo "build: the native module defines proxy-wasm functions" >&2; exit 1; fi
	@printf '%-40s %10s\n' "module" "bytes"
	@for f in $(subst -,_,$(FILTERS)); do printf '%-40s %10s\n' "$(WASM_DIR)/$$f.wasm" "$$(wc -c < $(WASM_DIR)/$$f.wasm)"; done
	@printf '%-40s %10s\n' "$(NATIVE_MODULE)" "$$(wc -c < $(NATIVE_MODULE))"

## run: the demo gateway on 127.0.0.1:8080 (HTTP) and :8443 (TLS); Ctrl-C stops it
run: build
	@bash scripts/run-demo.sh

## demo-config: the demo's three Envoy configurations in envoy/, written by
## gatewayctl from examples/demo.yaml (a unit test keeps them equal)
demo-config:
	$(CARGO) build --quiet -p gatewayctl
	target/debug/gatewayctl build examples/demo.yaml --chain -o envoy/gateway.yaml
	target/debug/gatewayctl build examples/demo.yaml -o envoy/gateway-module.yaml
	target/debug/gatewayctl build examples/demo.yaml --native -o envoy/gateway-native.yaml

## test: formatting, lints, native unit tests, the wasm build, real-Envoy
## tests, and a smoke run of every benchmark scenario
test: setup lint unit build integration bench-smoke

## oci: an OCI image per filter in the Wasm OCI image format (for Istio), no Docker daemon
oci: build
	@bash scripts/oci.sh

## bench: load and CPU benchmarks against bare Envoy (minutes; not part of `make test`)
bench: build
	@bash scripts/bench.sh

## bench-smoke: every benchmark scenario's Envoy starts and answers the mix,
## every decision benchmark runs once; nothing measured (seconds, in `make test`)
bench-smoke: build
	@bash scripts/bench.sh --smoke

## fuzz: every libFuzzer target for FUZZ_SECONDS (default 60) each, nightly
## and cargo-fuzz installed when missing (minutes; not part of `make test`)
fuzz:
	@bash scripts/fuzz.sh

## soak: the gateway module under mixed load for minutes, memory sampled
## over time; fails if it grows after warm-up (not part of `make test`)
soak: build
	@bash scripts/soak.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	CARGO_TARGET_DIR=target/fuzz/clippy $(CARGO) clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --release --target wasm32-wasip1 $(addprefix -p ,$(WASM_MODULES)) -p empty-filter -p host-call-probe -- -D warnings
	$(CARGO) clippy -p gateway-native --all-targets -- -D warnings
	$(CARGO) clippy -p empty-filter --no-default-features --features native --all-targets -- -D warnings
	# The native module runs the policies over Envoy's dynamic-module ABI
	# directly: no proxy-wasm linked into it.
	@if $(CARGO) tree -e normal -p gateway-native | grep -q proxy-wasm; then \
	  echo "lint: the native module depends on proxy-wasm" >&2; exit 1; fi
	# The policy layer alone, as a host other than proxy-wasm links it: no
	# proxy-wasm in it (a native module must not import the Wasm ABI).
	$(CARGO) clippy -p gateway-common $(addprefix -p ,$(POLICY_CRATES)) -p gateway --no-default-features --all-targets -- -D warnings
	@if $(CARGO) tree -e normal --no-default-features -p gateway-common $(addprefix -p ,$(POLICY_CRATES)) -p gateway | grep -q proxy-wasm; then \
	  echo "lint: the policy crates depend on proxy-wasm" >&2; exit 1; fi

unit:
	$(CARGO) test --workspace --exclude integration-tests
	$(CARGO) test --release --manifest-path vendor/barbacane-libinjection/differential/Cargo.toml --target-dir target/differential

## integration: every real-Envoy test three times, against the chain of single
## filters, the gateway module (GATEWAY_MODULE=1) and the native module
## (GATEWAY_NATIVE=1), so the three cannot drift apart; the native module's
## fleet tests run on its own Redis connection, and once more through Webdis
integration:
	@echo "== integration tests: the chain of single filters =="
	$(CARGO) test -p integration-tests
	@echo "== integration tests: the gateway module (GATEWAY_MODULE=1) =="
	GATEWAY_MODULE=1 $(CARGO) test -p integration-tests $(MODE_TESTS)
	@echo "== integration tests: the native module (GATEWAY_NATIVE=1) =="
	GATEWAY_NATIVE=1 $(CARGO) test -p integration-tests $(MODE_TESTS)
	@echo "== the fleet tests: the native module through Webdis (GATEWAY_FLEET_STORE=webdis) =="
	GATEWAY_NATIVE=1 GATEWAY_FLEET_STORE=webdis $(CARGO) test -p integration-tests --test fleet

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml

clean:
	$(CARGO) clean
	rm -rf .run
