//! gatewayctl's documents in the real-Envoy tests, built for the form under
//! test.

use crate::envoy::{module_mode, native_mode, native_module, wasm_module};
use gatewayctl::envoy::{Artifacts, Host};
use gatewayctl::generate::Generated;
use gatewayctl::source::Source;

/// The form under test: the chain of single filters with no env, the
/// gateway module with GATEWAY_MODULE=1, the native module with
/// GATEWAY_NATIVE=1.
pub fn host() -> Host {
    if native_mode() {
        Host::Native
    } else if module_mode() {
        Host::Module
    } else {
        Host::Chain
    }
}

/// Where this build's modules are.
pub fn artifacts() -> Artifacts {
    Artifacts {
        wasm_dir: wasm_module("gateway")
            .parent()
            .expect("wasm dir")
            .display()
            .to_string(),
        native_module: native_module().display().to_string(),
    }
}

/// An apis.yaml's text, read and checked; panics with its errors.
pub fn load(name: &str, text: &str) -> (Source, Generated) {
    let source = Source::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
    let generated = gatewayctl::load(&source).unwrap_or_else(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("{}", errors.join("\n"))
    });
    (source, generated)
}

/// An apis.yaml's text, checked and built for the form under test.
pub fn build(name: &str, text: &str) -> String {
    let (_, generated) = load(name, text);
    gatewayctl::build_envoy(&generated, name, host(), &artifacts())
}

/// A test's apis.yaml: the gateway on test ports (its listener `http`),
/// one backend `backend` on `backend_port`, then `rest` (policies, apis…).
pub fn test_document(backend_port: u16, rest: &str) -> String {
    format!(
        "version: 1\ngateway:\n  admin: 127.0.0.1:0\n  listeners: [ {{ name: http, address: 127.0.0.1:0 }} ]\n\
         backends:\n  - {{ name: backend, endpoints: [127.0.0.1:{backend_port}] }}\n{rest}"
    )
}
