//! The monitoring rules (`monitoring/`): checked and unit-tested with
//! `promtool`, then loaded into a real Prometheus scraping a real Envoy
//! under traffic (the chain of single filters with no env, the gateway
//! module with GATEWAY_MODULE=1, the native module with GATEWAY_NATIVE=1),
//! whose recorded series are queried. The Grafana dashboard's queries name
//! recorded series that exist.

use gatewayctl::source::Source;
use integration_tests::echo::EchoServer;
use integration_tests::envoy::{start_yaml, workspace_root};
use integration_tests::gatewayctl::{build, test_document};
use integration_tests::http;
use integration_tests::prometheus::{promtool, Prometheus};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

#[test]
fn the_configuration_checks_and_the_rules_pass_their_unit_tests() {
    let dir = workspace_root().join("monitoring");
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "rules/recording.yml", "rules/alerts.yml"],
        &["test", "rules", "tests/rules.test.yml"],
    ] {
        let (ok, output) = promtool(&dir, args);
        assert!(ok, "promtool {args:?}:\n{output}");
    }
}

/// The names `record:` gives in the recording rules.
fn recorded_series() -> BTreeSet<String> {
    let path = workspace_root().join("monitoring/rules/recording.yml");
    let text = std::fs::read_to_string(&path).expect("recording rules");
    let source = Source::parse("recording.yml", &text).unwrap_or_else(|e| panic!("{e}"));
    source.value["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|rule| rule["record"].as_str().map(String::from))
        .collect()
}

#[test]
fn every_dashboard_query_reads_recorded_series_that_exist() {
    let recorded = recorded_series();
    let path = workspace_root().join("monitoring/grafana-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(panel["gridPos"].is_object(), "{title}: no gridPos");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|word| word.starts_with("gateway") && word.contains(':'))
                .collect();
            assert!(
                !names.is_empty(),
                "{title}: `{expr}` reads no recorded series"
            );
            for name in names {
                assert!(
                    recorded.contains(name),
                    "{title}: `{name}` is recorded by no rule"
                );
                used.insert(name.to_string());
            }
        }
    }
    assert!(used.len() >= 8, "the dashboard shows only {used:?}");
}

#[test]
fn a_real_prometheus_records_the_gateways_series_from_a_real_envoy() {
    let backend = EchoServer::start("backend").expect("echo");
    let text = test_document(
        backend.port(),
        "policies:
  - name: two
    quota: { key: client_ip, limit: 2, window: 1h }
  - name: fragile
    breaker:
      window: { duration_ms: 60000, buckets: 6 }
      trip: { min_calls: 3, failure_rate_percent: 50 }
      open: { duration_ms: 60000 }
apis:
  - { name: hello, method: GET, path: /hello, backend: backend, auth: anonymous }
  - { name: limited, method: GET, path: /limited, backend: backend, auth: anonymous, policies: [two] }
  - { name: flaky, method: GET, path: /flaky, backend: backend, auth: anonymous, policies: [fragile] }
",
    );
    let envoy = start_yaml(&build("apis.yaml", &text), 1);
    let prometheus = Prometheus::start(&[envoy.admin_address()]);
    // A first scrape before the traffic, so its increase is a rate.
    assert!(
        prometheus
            .wait_for("up{job=\"gateway\"}", Duration::from_secs(20), |up| up
                == 1.0)
            .is_some(),
        "Prometheus never scraped Envoy:\n{}",
        prometheus.log()
    );
    let port = envoy.listener_port("http");
    let get = |path: &str, headers: &[(&str, &str)]| {
        http::get(&format!("http://127.0.0.1:{port}{path}"), headers).map_or(0, |r| r.status)
    };
    // Envoy makes a route's counters at its first call, and a rate needs a
    // sample from before the increase: one call each, scraped, then more.
    assert_eq!(get("/hello", &[]), 200);
    assert_eq!(get("/flaky", &[("x-echo-status", "503")]), 503);
    let scraped = "envoy_vhost_route_upstream_rq_xx{envoy_route=\"flaky\"}";
    assert!(
        prometheus
            .wait_for(scraped, Duration::from_secs(20), |n| n >= 1.0)
            .is_some(),
        "the first calls were never scraped:\n{}",
        prometheus.log()
    );
    for _ in 0..20 {
        assert_eq!(get("/hello", &[]), 200);
    }
    let limited: Vec<u16> = (0..5).map(|_| get("/limited", &[])).collect();
    assert_eq!(limited, [200, 200, 429, 429, 429]);
    for _ in 0..3 {
        get("/flaky", &[("x-echo-status", "503")]);
    }
    assert_eq!(get("/flaky", &[]), 503, "the breaker is open");

    let within = Duration::from_secs(30);
    let recorded = |query: &str, test: fn(f64) -> bool| {
        prometheus.wait_for(query, within, test).unwrap_or_else(|| {
            panic!(
                "`{query}` never held; it is {:?}\n{}",
                prometheus.query(query),
                prometheus.log()
            )
        })
    };
    recorded("gateway_api:requests:rate1m{api=\"hello\"}", |rate| {
        rate > 0.0
    });
    recorded(
        "gateway_api:errors_5xx:ratio_rate1m{api=\"hello\"}",
        |ratio| ratio == 0.0,
    );
    recorded(
        "gateway_api:errors_5xx:ratio_rate1m{api=\"flaky\"}",
        |ratio| ratio > 0.5,
    );
    recorded("gateway_api:latency_ms:p99{api=\"hello\"}", |ms| ms >= 0.0);
    recorded(
        "gateway:refusals:rate1m{policy=\"throttling\",code=\"A429IP\"}",
        |rate| rate > 0.0,
    );
    recorded(
        "gateway:quota_refusals:rate1m{rule=\"limited_two\"}",
        |rate| rate > 0.0,
    );
    recorded("gateway:breaker_open{breaker=\"flaky\"}", |open| {
        open == 1.0
    });
    // The alert waits its minute: pending now.
    let deadline = std::time::Instant::now() + within;
    loop {
        let alerts = prometheus.alerts();
        if alerts.iter().any(|(name, state, labels)| {
            name == "GatewayBreakerOpen"
                && (state == "pending" || state == "firing")
                && labels["breaker"] == "flaky"
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no breaker alert: {alerts:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
