//! The native host itself, in a real Envoy: a panic in a dynamic module's
//! policy code costs the request it happened in, never Envoy. The module is
//! `filters/native-host/examples/panic_probe.rs`, which panics on request.
//! The native module's behaviour as a gateway is the whole suite run with
//! `GATEWAY_NATIVE=1`.

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{gateway_config, native_library, Envoy};
use integration_tests::http;
use serde_json::json;

fn probe_gateway(upstream: &EchoServer) -> Envoy {
    let mut config = gateway_config(&[], &[upstream.port()]);
    let filters = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array_mut()
        .expect("http filters");
    filters.insert(
        0,
        json!({
            "name": "panic_probe",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                "dynamic_module_config": {"module": {"local": {"filename": native_library("examples/libpanic_probe.so")}}},
                "filter_name": "panic_probe",
                "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": ""}
            }
        }),
    );
    Envoy::start_with(&config, 2).unwrap_or_else(|err| panic!("{err}"))
}

#[test]
fn a_panic_in_native_policy_code_costs_only_the_request_it_happened_in() {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = probe_gateway(&upstream);
    let url = format!("http://127.0.0.1:{}/", envoy.listener_port("main"));
    let get = |headers: &[(&str, &str)]| http::get(&url, headers).expect("response");

    // In the request: answered with the module's internal error, never sent on.
    let failed = get(&[("x-panic", "request")]);
    assert_eq!(failed.status, 500, "{}", failed.text());
    assert_eq!(failed.header("x-probe-error"), Some("panicked"));
    assert!(failed.text().contains("request_id"), "{}", failed.text());
    assert_eq!(upstream.request_count(), 0);

    // In the response: the upstream's answer goes on, without the policy's work.
    let failed = get(&[("x-panic", "response")]);
    assert_eq!(failed.status, 200);
    assert_eq!(failed.header("x-probe"), None);
    assert_eq!(upstream.request_count(), 1);

    // At the end of the stream: the client already has its answer.
    let logged = get(&[("x-panic", "log")]);
    assert_eq!(
        (logged.status, logged.header("x-probe")),
        (200, Some("passed"))
    );

    // Envoy and both workers go on serving, with the module working.
    for _ in 0..20 {
        let ok = get(&[]);
        assert_eq!((ok.status, ok.header("x-probe")), (200, Some("passed")));
    }
    assert_eq!(upstream.request_count(), 22);
    let log = envoy.log();
    for place in [
        "in the request headers",
        "in the response headers",
        "at the end of the stream",
    ] {
        assert!(log.contains(&format!("panic probe: {place}")), "{log}");
    }
    assert!(log.contains("native module panicked"), "{log}");
    assert_eq!(envoy.admin_get("/ready").map(|(status, _)| status), Ok(200));
}
