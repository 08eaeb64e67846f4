use crate::compile_config;
use crate::policy::ROUTE_HEADER;
use crate::steps::{Metrics, RoutingSteps};
use crate::FILTER_NAME;
use gateway_common::host::{FakeHost, Host};
use gateway_common::identity::{self, Identity};
use gateway_common::stream::{Effect, FakeStream, PolicySteps, Verdict};
use proptest::prelude::*;
use std::rc::Rc;

const CONFIG: &str = r#"{
  "client_address": {"trusted_proxies": ["10.0.0.0/8"]},
  "rules": [{
    "name": "catalog",
    "match": {"path": {"template": "/catalog/{region}/items"}},
    "parameters": {"tier": "Header:X-Tier"},
    "routes": [
      {"condition": "header.x-maintenance == 'on'", "to": "maintenance"},
      {"condition": "app in ['203751'] && $tier == 'gold'", "to": "vip"},
      {"condition": "param.region == 'eu' || client_ip starts_with '192.168.'", "to": "eu"}
    ]
  }]
}"#;

fn run(host: FakeHost) -> FakeStream {
    let mut stream = FakeStream::new(host);
    let policy = compile_config(CONFIG.as_bytes()).expect("config");
    let metrics = Metrics::define(&mut stream);
    let mut steps = RoutingSteps::new(Rc::new(policy), metrics);
    assert_eq!(
        steps.on_request_headers(&mut stream, true),
        Verdict::Continue
    );
    stream
}

fn request(path: &str) -> FakeHost {
    FakeHost::new()
        .with_header(":method", "GET")
        .with_header(":path", path)
        .with_header(":authority", "shop")
        .with_property(&["source", "address"], "203.0.113.5:4000")
}

fn route_of(stream: &FakeStream) -> Option<String> {
    stream.request_header(ROUTE_HEADER)
}

fn cleared(stream: &FakeStream) -> bool {
    stream.effects.contains(&Effect::ClearRouteCache)
}

#[test]
fn the_first_route_that_holds_is_set_and_envoy_routes_again() {
    let eu = run(request("/catalog/eu/items"));
    assert_eq!(route_of(&eu).as_deref(), Some("eu"));
    assert!(cleared(&eu));
    assert_eq!(eu.counted(FILTER_NAME, "routed"), 1);
    let maintenance = run(request("/catalog/eu/items").with_header("x-maintenance", "on"));
    assert_eq!(route_of(&maintenance).as_deref(), Some("maintenance"));
}

#[test]
fn a_route_can_depend_on_the_verified_app() {
    let gold = request("/catalog/us/items").with_header("x-tier", "gold");
    identity::publish(
        &gold,
        &Identity {
            app_key: "203751".into(),
            ..Identity::default()
        },
    );
    assert_eq!(route_of(&run(gold)).as_deref(), Some("vip"));
    let anonymous_gold = request("/catalog/us/items").with_header("x-tier", "gold");
    assert_eq!(route_of(&run(anonymous_gold)), None);
}

#[test]
fn no_route_keeps_the_apis_backend_without_routing_again() {
    let us = run(request("/catalog/us/items"));
    assert_eq!(route_of(&us), None);
    assert!(!cleared(&us));
    assert_eq!(us.counted(FILTER_NAME, "default"), 1);
}

#[test]
fn a_client_cannot_choose_the_route() {
    let spoofed = run(request("/catalog/us/items").with_header(ROUTE_HEADER, "vip"));
    assert_eq!(route_of(&spoofed), None);
    assert!(
        cleared(&spoofed),
        "the route chosen by the header is dropped"
    );
    assert_eq!(spoofed.counted(FILTER_NAME, "removed"), 1);
    // Also outside every rule, and replaced where a route is chosen.
    let elsewhere = run(request("/other").with_header(ROUTE_HEADER, "vip"));
    assert_eq!(route_of(&elsewhere), None);
    assert!(cleared(&elsewhere));
    assert_eq!(elsewhere.counted(FILTER_NAME, "unmatched"), 1);
    let replaced = run(request("/catalog/eu/items").with_header(ROUTE_HEADER, "vip"));
    assert_eq!(route_of(&replaced).as_deref(), Some("eu"));
}

#[test]
fn the_client_address_is_resolved_behind_trusted_proxies_only() {
    let proxied = request("/catalog/us/items")
        .with_property(&["source", "address"], "10.0.0.1:4000")
        .with_header("x-forwarded-for", "192.168.1.1");
    assert_eq!(route_of(&run(proxied)).as_deref(), Some("eu"));
    let spoofed = request("/catalog/us/items").with_header("x-forwarded-for", "192.168.1.1");
    assert_eq!(route_of(&run(spoofed)), None);
}

#[test]
fn bad_configurations_name_the_field() {
    for (config, path, reason) in [
        (
            r#"{"rules":[{"routes":[{"condition":"query.a ==","to":"x"}]}]}"#,
            "rules[0].routes[0].condition",
            "at the end",
        ),
        (
            r#"{"rules":[{"routes":[{"condition":"query.a","to":"no spaces"}]}]}"#,
            "rules[0].routes[0].to",
            "letters, digits",
        ),
        (
            r#"{"rules":[{"routes":[{"condition":"json.a == 1","to":"x"}]}]}"#,
            "rules[0].routes",
            "`json.a` reads the body",
        ),
        (
            r#"{"rules":[{"routes":[{"condition":"param.id","to":"x"}]}]}"#,
            "rules[0].routes",
            "no variable `{id}`",
        ),
        (
            r#"{"rules":[{"routes":[]}]}"#,
            "rules[0].routes",
            "at least one",
        ),
        (
            r#"{"rules":[{"routes":[{"condition":"app","to":"x","backend":"b"}]}]}"#,
            "rules[0].routes[0].backend",
            "unknown field",
        ),
    ] {
        let err = compile_config(config.as_bytes()).expect_err(config);
        assert_eq!(err.path, path, "{config}: {err}");
        assert!(err.message.contains(reason), "{config}: {err}");
    }
}

proptest! {
    #[test]
    fn any_request_gets_a_route_of_the_rule_or_none(
        path in "/catalog/[a-z%]{0,6}/items[?a-z=&]{0,10}",
        tier in "\\PC{0,12}",
        spoof in "\\PC{0,12}",
    ) {
        let stream = run(
            request(&path)
                .with_header("x-tier", &tier)
                .with_header(ROUTE_HEADER, &spoof),
        );
        let route = route_of(&stream);
        prop_assert!(
            route.is_none() || ["maintenance", "vip", "eu"].contains(&route.as_deref().unwrap_or("")),
            "{route:?}"
        );
    }
}
