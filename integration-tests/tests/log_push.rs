//! log-push in a real Envoy: records land in a real ClickHouse (Debian's
//! server, started per test), the other formats reach a recording server
//! and are checked against the wire format each store documents, and a dead
//! or hanging sink never fails or holds a client request.

use integration_tests::clickhouse::ClickHouse;
use integration_tests::echo::{EchoServer, ReceivedRequest, Reply};
use integration_tests::envoy::{add_cluster, gateway_config, workspace_root, Envoy, WasmFilter};
use integration_tests::http;
use integration_tests::process::free_port;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A ClickHouse with the tables of `envoy/log-push-clickhouse.sql`: log-push
/// writes `gateway_calls_log`, queries read the `gateway_calls` view.
fn clickhouse_with_table() -> ClickHouse {
    let clickhouse = ClickHouse::start();
    clickhouse.create_log_tables(&[]);
    clickhouse
}

fn count(clickhouse: &ClickHouse, query: &str) -> u64 {
    let answer = clickhouse.query(query);
    answer
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("`{query}` answered {answer:?}"))
}

/// Rows of the `gateway_calls` view (each call once) meeting `condition`.
fn count_rows(clickhouse: &ClickHouse, condition: &str) -> u64 {
    count(
        clickhouse,
        &format!("SELECT count() FROM gateway_calls WHERE {condition}"),
    )
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// ip-acl refuses 203.0.113.0/24 (trusting X-Forwarded-For from loopback),
/// then log-push records every call.
fn gateway(log_push: Value, sink_port: u16, upstream: &EchoServer) -> Envoy {
    let ip_acl = json!({
        "client_address": {"trusted_proxies": ["127.0.0.1"], "envoy_appended_xff": true},
        "deny": ["203.0.113.0/24"]
    });
    let mut config = gateway_config(
        &[
            WasmFilter::json("ip_acl", &ip_acl),
            WasmFilter::json("log_push", &log_push),
        ],
        &[upstream.port()],
    );
    add_cluster(&mut config, "log_sink", sink_port);
    Envoy::start_with(&config, 2).unwrap_or_else(|e| panic!("{e}"))
}

fn clickhouse_config() -> Value {
    json!({
        "sink": {"cluster": "log_sink", "format": "clickhouse", "table": "gateway_calls_log", "timeout_ms": 2000},
        "batch": {"max_records": 8, "flush_interval_ms": 200},
        "fields": ["time", "timestamp_ms", "request_id", "api", "client_ip", "method", "host", "path",
                   "query", "status", "error_code", "latency_ms", "upstream_latency_ms", "request_bytes",
                   "response_bytes", "upstream_cluster", "upstream_host", "user_agent", "response_flags"],
        "client_address": {"trusted_proxies": ["127.0.0.1"], "envoy_appended_xff": true},
        "rules": [{"name": "orders", "match": {"path": {"prefix": "/orders"}}}]
    })
}

#[test]
fn every_call_lands_in_clickhouse_exactly_once_with_its_fields() {
    let clickhouse = clickhouse_with_table();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = gateway(clickhouse_config(), clickhouse.http_port(), &upstream);

    // Four clients, ten calls each, every fifth from a denied address.
    let (clients, calls_per_client) = (4, 10);
    let refused = clients * calls_per_client / 5;
    let allowed = clients * calls_per_client - refused;
    let workers: Vec<_> = (0..clients)
        .map(|t| {
            let url = envoy.url("");
            thread::spawn(move || {
                for i in 0..calls_per_client {
                    let n = t * 100 + i;
                    let response = if i % 5 == 4 {
                        http::get(
                            &format!("{url}/orders/{n}?token=secret-{n}&page=2"),
                            &[
                                ("x-forwarded-for", "203.0.113.9"),
                                ("user-agent", "refused-client"),
                            ],
                        )
                    } else {
                        http::get(
                            &format!("{url}/orders/{n}?token=secret-{n}&page=2"),
                            &[("user-agent", "test-client")],
                        )
                    }
                    .expect("response");
                    assert!(response.status == 200 || response.status == 403);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("client thread");
    }
    assert_eq!(upstream.request_count(), allowed);

    let expected = (allowed + refused) as u64;
    assert!(
        wait_until(Duration::from_secs(15), || count_rows(&clickhouse, "1")
            >= expected),
        "rows: {}\n{}",
        count_rows(&clickhouse, "1"),
        envoy.log()
    );
    // Another flush interval: nothing more, nothing twice.
    thread::sleep(Duration::from_millis(600));
    assert_eq!(count_rows(&clickhouse, "1"), expected);
    assert_eq!(
        count(
            &clickhouse,
            "SELECT uniqExact(request_id) FROM gateway_calls"
        ),
        expected
    );
    assert_eq!(
        count(
            &clickhouse,
            "SELECT uniqExact(record_id) FROM gateway_calls_log"
        ),
        expected
    );
    assert_eq!(count_rows(&clickhouse, "status = 200"), allowed as u64);
    assert_eq!(
        count_rows(
            &clickhouse,
            "status = 403 AND error_code = 'A403IP' AND client_ip = '203.0.113.9' AND user_agent = 'refused-client'"
        ),
        refused as u64
    );
    let row: Value = serde_json::from_str(
        clickhouse
            .query("SELECT * FROM gateway_calls WHERE status = 200 LIMIT 1 FORMAT JSONEachRow")
            .trim(),
    )
    .expect("a JSON row");
    assert_eq!(row["api"], "orders");
    assert_eq!(row["method"], "GET");
    assert_eq!(row["client_ip"], "127.0.0.1");
    assert_eq!(row["user_agent"], "test-client");
    assert_eq!(row["upstream_cluster"], "backend");
    assert_eq!(
        row["upstream_host"],
        format!("127.0.0.1:{}", upstream.port())
    );
    assert!(row["path"].as_str().unwrap().starts_with("/orders/"));
    assert!(
        row["query"]
            .as_str()
            .unwrap()
            .starts_with("token=[REDACTED]&page=2"),
        "{row}"
    );
    for bytes in ["request_bytes", "response_bytes"] {
        let n: u64 = row[bytes].as_str().unwrap().parse().unwrap();
        assert!(n > 0, "{bytes}: {row}");
    }
    let timestamp_ms: u64 = row["timestamp_ms"].as_str().unwrap().parse().unwrap();
    let now_ms = integration_tests::signing::now_ms();
    assert!(timestamp_ms <= now_ms && now_ms - timestamp_ms < 120_000);
    assert_eq!(
        count_rows(&clickhouse, "query LIKE '%secret-%'"),
        0,
        "credentials are never stored"
    );
    assert_eq!(envoy.stat("wasmcustom.gw.log_push.records.sent"), expected);

    // The README's report query runs on what arrived.
    let report = std::fs::read_to_string(workspace_root().join("envoy/log-push-report.sql"))
        .expect("envoy/log-push-report.sql");
    let line = clickhouse.query(&report);
    let first: Value = serde_json::from_str(line.lines().next().expect("a report row")).unwrap();
    assert_eq!(first["api"], "orders");
    assert_eq!(first["calls"], (allowed + refused).to_string());
    assert_eq!(first["refused_rate_4xx"], 0.2);
}

#[test]
fn a_sink_outage_drops_counted_records_and_recovers() {
    let mut clickhouse = clickhouse_with_table();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let mut config = clickhouse_config();
    config["queue"] = json!({"max_records": 10});
    config["retry"] = json!({"max_retries": 1, "initial_backoff_ms": 100, "max_backoff_ms": 200});
    let envoy = gateway(config, clickhouse.http_port(), &upstream);

    let send = |marker: &str, count: usize| {
        for i in 0..count {
            let response = http::get(&envoy.url(&format!("/{marker}/{i}")), &[]).expect("response");
            assert_eq!(response.status, 200, "the sink must not matter to clients");
        }
    };
    send("before", 5);
    assert!(wait_until(Duration::from_secs(15), || count_rows(
        &clickhouse,
        "path LIKE '/before/%'"
    ) == 5));

    clickhouse.stop();
    send("during", 60);
    assert!(
        wait_until(Duration::from_secs(10), || {
            envoy.stat("wasmcustom.gw.log_push.records.dropped.queue_full")
                + envoy.stat("wasmcustom.gw.log_push.records.dropped.sink_failed")
                > 0
        }),
        "records lost to the outage are counted"
    );
    assert!(envoy.stat("wasmcustom.gw.log_push.batches.failed") > 0);
    assert!(
        envoy.log().contains("log_push: sink failing"),
        "{}",
        envoy.log()
    );

    clickhouse.resume();
    send("after", 5);
    assert!(
        wait_until(Duration::from_secs(20), || count_rows(
            &clickhouse,
            "path LIKE '/after/%'"
        ) == 5),
        "records flow again once the sink is back\n{}",
        envoy.log()
    );
    // Queues are bounded: far fewer than the 60 calls made it.
    assert!(count_rows(&clickhouse, "path LIKE '/during/%'") <= 2 * 10 + 2 * 8);
}

/// How the store's front answers one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkFault {
    /// ClickHouse's own answer.
    Pass,
    /// ClickHouse wrote the batch; its answer comes after log-push's timeout.
    WrittenAnswerLate,
    /// ClickHouse wrote the batch; the connection is cut mid-answer.
    WrittenAnswerCut,
    /// ClickHouse wrote the batch; a proxy in front answers 503 anyway.
    Written503,
    /// The front answers 503 and ClickHouse never sees the batch.
    Refused503,
}

const SINK_TIMEOUT_MS: u64 = 1000;

/// Config for a sink that fails often: small batches, quick and many retries.
fn flaky_sink_config() -> Value {
    let mut config = clickhouse_config();
    config["sink"]["timeout_ms"] = json!(SINK_TIMEOUT_MS);
    config["batch"] = json!({"max_records": 4, "flush_interval_ms": 100});
    config["retry"] = json!({"max_retries": 12, "initial_backoff_ms": 50, "max_backoff_ms": 200});
    config
}

fn send_calls(envoy: &Envoy, marker: &str, calls: usize) {
    for i in 0..calls {
        let response =
            http::get(&envoy.url(&format!("/orders/{marker}-{i}")), &[]).expect("response");
        assert_eq!(response.status, 200, "the sink must not matter to clients");
    }
}

/// Waits for `calls` rows in the view and an empty log-push queue, then one
/// more flush interval, and checks that each call is there exactly once.
fn assert_each_call_once(clickhouse: &ClickHouse, envoy: &Envoy, calls: u64) {
    let settled = wait_until(Duration::from_secs(40), || {
        count_rows(clickhouse, "1") >= calls
            && envoy.stat("wasmcustom.gw.log_push.queue.records") == 0
    });
    assert!(
        settled,
        "{} of {calls} calls stored\n{}",
        count_rows(clickhouse, "1"),
        envoy.log()
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        count_rows(clickhouse, "1"),
        calls,
        "a plain count() on the view"
    );
    assert_eq!(
        count(clickhouse, "SELECT uniqExact(path) FROM gateway_calls"),
        calls,
        "every call is there"
    );
    let report = std::fs::read_to_string(workspace_root().join("envoy/log-push-report.sql"))
        .expect("envoy/log-push-report.sql");
    let first: Value = serde_json::from_str(
        clickhouse
            .query(&report)
            .lines()
            .next()
            .expect("a report row"),
    )
    .expect("a JSON row");
    assert_eq!(first["calls"], calls.to_string(), "the report's count");
    for lost in ["dropped.sink_failed", "dropped.queue_full"] {
        assert_eq!(
            envoy.stat(&format!("wasmcustom.gw.log_push.records.{lost}")),
            0,
            "{lost}"
        );
    }
}

#[test]
fn lost_answers_cut_connections_and_5xx_bursts_leave_each_call_counted_once() {
    let clickhouse = clickhouse_with_table();
    // Rows written twice stay visible in the table until a merge: keep them.
    clickhouse.query("SYSTEM STOP MERGES");
    let faults = Arc::new(Mutex::new(VecDeque::from([
        SinkFault::Pass,
        SinkFault::WrittenAnswerLate,
        SinkFault::WrittenAnswerCut,
        SinkFault::Written503,
        SinkFault::Refused503,
        SinkFault::Refused503,
        SinkFault::Refused503,
        SinkFault::Pass,
        SinkFault::WrittenAnswerLate,
        SinkFault::Written503,
        SinkFault::WrittenAnswerCut,
    ])));
    let rows_written = Arc::new(AtomicU64::new(0));
    let clickhouse_url = format!("http://127.0.0.1:{}", clickhouse.http_port());
    let front = {
        let (faults, rows_written) = (faults.clone(), rows_written.clone());
        EchoServer::start_scripted("clickhouse-front", move |request| {
            let fault = faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
                .unwrap_or(SinkFault::Pass);
            if fault == SinkFault::Refused503 {
                return Reply::new(503, "overloaded");
            }
            let answer = match http::post(
                &format!("{clickhouse_url}{}", request.uri),
                &[],
                &request.body,
            ) {
                Ok(answer) => answer,
                Err(e) => return Reply::new(502, e),
            };
            if answer.status == 200 {
                let rows = request
                    .body
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count();
                rows_written.fetch_add(rows as u64, Ordering::SeqCst);
            }
            let reply = Reply::new(answer.status, answer.body);
            match fault {
                SinkFault::WrittenAnswerLate => {
                    reply.after(Duration::from_millis(SINK_TIMEOUT_MS + 1000))
                }
                SinkFault::WrittenAnswerCut => reply.cut_after(12),
                SinkFault::Written503 => Reply::new(503, "upstream request timeout"),
                SinkFault::Pass | SinkFault::Refused503 => reply,
            }
        })
        .expect("ClickHouse front")
    };
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = gateway(flaky_sink_config(), front.port(), &upstream);

    let calls = 40;
    send_calls(&envoy, "faults", calls);
    assert_each_call_once(&clickhouse, &envoy, calls as u64);

    assert!(
        faults.lock().unwrap_or_else(|e| e.into_inner()).is_empty(),
        "every fault was played"
    );
    assert!(envoy.stat("wasmcustom.gw.log_push.records.retried") > 0);
    let written = rows_written.load(Ordering::SeqCst);
    assert!(
        written > calls as u64,
        "the faults made ClickHouse write some calls twice ({written} rows for {calls} calls)"
    );
    assert_eq!(
        count(&clickhouse, "SELECT count() FROM gateway_calls_log"),
        written,
        "the table holds every row written until it merges"
    );
    // Once merged, the table itself holds each call once.
    clickhouse.query("SYSTEM START MERGES");
    clickhouse.query("OPTIMIZE TABLE gateway_calls_log FINAL");
    assert_eq!(
        count(&clickhouse, "SELECT count() FROM gateway_calls_log"),
        calls as u64
    );
}

#[test]
fn a_store_frozen_past_the_timeout_counts_each_call_once_after_it_thaws() {
    let clickhouse = clickhouse_with_table();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoy = gateway(flaky_sink_config(), clickhouse.http_port(), &upstream);
    send_calls(&envoy, "before", 8);
    assert!(wait_until(Duration::from_secs(15), || count_rows(
        &clickhouse,
        "1"
    ) == 8));

    // SIGSTOP: the kernel still accepts connections and buffers the batches;
    // log-push times out and sends them again; on SIGCONT the server works
    // through every request it was sent, the abandoned ones included.
    clickhouse.freeze();
    send_calls(&envoy, "frozen", 16);
    let timed_out = wait_until(Duration::from_secs(10), || {
        envoy.stat("wasmcustom.gw.log_push.batches.failed") >= 2
    });
    clickhouse.thaw();
    assert!(timed_out, "batches time out while the store is frozen");
    send_calls(&envoy, "after", 8);
    assert_each_call_once(&clickhouse, &envoy, 32);
}

#[test]
fn a_hanging_sink_adds_no_latency_to_requests() {
    // Accepts connections and never answers: every batch waits for its timeout.
    let black_hole = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = black_hole.local_addr().unwrap().port();
    let _accepting = thread::spawn(move || {
        let mut held = Vec::new();
        for stream in black_hole.incoming().flatten() {
            held.push(stream);
        }
    });
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let config = json!({
        "sink": {"cluster": "log_sink", "format": "ndjson", "path": "/ingest", "timeout_ms": 3000},
        "batch": {"max_records": 2, "flush_interval_ms": 50}
    });
    let envoy = gateway(config, port, &upstream);
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let response = http::get(&envoy.url(&format!("/call/{i}")), &[]).expect("response");
        slowest = slowest.max(started.elapsed());
        assert_eq!(response.status, 200);
    }
    // A request held by the sink would take its 3 s timeout.
    assert!(
        slowest < Duration::from_millis(1500),
        "slowest request {slowest:?}"
    );
}

/// Requests a sink received, once `count` records have arrived.
fn received_by(sink: &EchoServer, format: Value, count: usize) -> Vec<ReceivedRequest> {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let mut sink_config = format;
    sink_config["cluster"] = json!("log_sink");
    let config = json!({
        "sink": sink_config,
        "batch": {"max_records": count, "flush_interval_ms": 100},
        "headers": ["x-tenant"]
    });
    let envoy = gateway(config, sink.port(), &upstream);
    for i in 0..count {
        let response = http::get(
            &envoy.url(&format!("/items/{i}")),
            &[("x-tenant", "acme"), ("authorization", "Bearer secret")],
        )
        .expect("response");
        assert_eq!(response.status, 200);
    }
    assert!(
        wait_until(Duration::from_secs(10), || envoy
            .stat("wasmcustom.gw.log_push.records.sent")
            == count as u64),
        "{}",
        envoy.log()
    );
    sink.requests()
}

fn body_text(request: &ReceivedRequest) -> &str {
    std::str::from_utf8(&request.body).expect("UTF-8 body")
}

#[test]
fn elasticsearch_bulk_requests_follow_the_bulk_api() {
    let sink = EchoServer::start("es").expect("sink");
    let requests = received_by(
        &sink,
        json!({"format": "elasticsearch", "index": "gw-calls"}),
        3,
    );
    let mut documents = 0;
    let mut ids = std::collections::HashSet::new();
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/_bulk");
        assert_eq!(request.header("content-type"), Some("application/x-ndjson"));
        let body = body_text(request);
        assert!(body.ends_with('\n'), "the bulk body ends with a newline");
        let lines: Vec<&str> = body.split_terminator('\n').collect();
        assert_eq!(lines.len() % 2, 0, "action and source lines come in pairs");
        for pair in lines.chunks(2) {
            let action: Value = serde_json::from_str(pair[0]).unwrap();
            let source: Value = serde_json::from_str(pair[1]).unwrap();
            // `create` with the record id: a resent record conflicts instead
            // of being stored twice.
            let id = source["record_id"].as_str().expect("record_id");
            assert!(
                id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
            assert_eq!(action, json!({"create": {"_index": "gw-calls", "_id": id}}));
            assert!(ids.insert(id.to_string()), "record ids are unique");
            assert!(source["@timestamp"].as_str().unwrap().ends_with('Z'));
            assert_eq!(source["header_x_tenant"], "acme");
            documents += 1;
        }
    }
    assert_eq!(documents, 3);
}

#[test]
fn loki_pushes_follow_the_push_api() {
    let sink = EchoServer::start("loki").expect("sink");
    let requests = received_by(
        &sink,
        json!({"format": "loki", "labels": {"job": "gateway"}, "label_fields": ["method"]}),
        3,
    );
    let mut lines = 0;
    for request in &requests {
        assert_eq!(request.path, "/loki/api/v1/push");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        for stream in body["streams"].as_array().unwrap() {
            assert_eq!(stream["stream"], json!({"job": "gateway", "method": "GET"}));
            for value in stream["values"].as_array().unwrap() {
                let pair = value.as_array().unwrap();
                assert_eq!(pair.len(), 2);
                let nanos = pair[0].as_str().unwrap();
                assert!(nanos.len() == 19 && nanos.bytes().all(|b| b.is_ascii_digit()));
                let line: Value = serde_json::from_str(pair[1].as_str().unwrap()).unwrap();
                assert!(line["path"].as_str().unwrap().starts_with("/items/"));
                lines += 1;
            }
        }
    }
    assert_eq!(lines, 3);
}

#[test]
fn kafka_rest_requests_follow_the_v2_json_api() {
    let sink = EchoServer::start("kafka").expect("sink");
    let requests = received_by(
        &sink,
        json!({"format": "kafka_rest", "topic": "gateway-calls", "key_field": "request_id"}),
        3,
    );
    let mut records = 0;
    for request in &requests {
        assert_eq!(request.path, "/topics/gateway-calls");
        assert_eq!(
            request.header("content-type"),
            Some("application/vnd.kafka.json.v2+json")
        );
        assert_eq!(
            request.header("accept"),
            Some("application/vnd.kafka.v2+json")
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        for record in body["records"].as_array().unwrap() {
            assert_eq!(record["key"], record["value"]["request_id"]);
            assert!(record["value"].is_object());
            records += 1;
        }
    }
    assert_eq!(records, 3);
}

#[test]
fn otlp_requests_follow_the_otlp_http_json_encoding() {
    let sink = EchoServer::start("otel").expect("sink");
    let requests = received_by(&sink, json!({"format": "otlp", "service_name": "edge"}), 3);
    let mut logs = 0;
    for request in &requests {
        assert_eq!(request.path, "/v1/logs");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let resource = &body["resourceLogs"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "edge"}})
        );
        for log in resource["scopeLogs"][0]["logRecords"].as_array().unwrap() {
            let nanos = log["timeUnixNano"].as_str().unwrap();
            assert!(nanos.bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(log["severityNumber"], 9);
            for attribute in log["attributes"].as_array().unwrap() {
                let value = attribute["value"].as_object().unwrap();
                assert_eq!(value.len(), 1, "one AnyValue kind: {attribute}");
                assert!(value.contains_key("stringValue") || value.contains_key("intValue"));
            }
            logs += 1;
        }
    }
    assert_eq!(logs, 3);
}

#[test]
fn ndjson_records_never_carry_credentials() {
    let sink = EchoServer::start("ndjson").expect("sink");
    let requests = received_by(&sink, json!({"format": "ndjson", "path": "/ingest"}), 3);
    let body: String = requests.iter().map(body_text).collect();
    assert!(!body.contains("Bearer"), "{body}");
    for line in body.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["header_x_tenant"], "acme");
        assert_eq!(record["status"], 200);
        assert!(record.get("query").is_none(), "the query is off by default");
    }
}

#[test]
fn a_malformed_log_push_config_is_refused_with_the_field_named() {
    let log = Envoy::expect_refused(&gateway_config(
        &[WasmFilter::json(
            "log_push",
            &json!({"sink": {"cluster": "log_sink", "format": "clickhouse"}}),
        )],
        &[1],
    ));
    assert!(
        log.contains(
            "log_push: invalid configuration: sink.table: required for format `clickhouse`"
        ),
        "{log}"
    );
}

#[test]
fn an_unreachable_upstream_is_recorded_with_envoy_response_flags() {
    let sink = EchoServer::start("ndjson").expect("sink");
    let closed_port = free_port();
    let ip_acl = json!({"deny": ["203.0.113.0/24"]});
    let log_push = json!({
        "sink": {"cluster": "log_sink", "format": "ndjson", "path": "/ingest"},
        "batch": {"max_records": 1, "flush_interval_ms": 50}
    });
    let mut config = gateway_config(
        &[
            WasmFilter::json("ip_acl", &ip_acl),
            WasmFilter::json("log_push", &log_push),
        ],
        &[closed_port],
    );
    add_cluster(&mut config, "log_sink", sink.port());
    let envoy = Envoy::start(&config);
    let response = http::get(&envoy.url("/down"), &[]).expect("response");
    assert_eq!(response.status, 503);
    assert!(
        wait_until(Duration::from_secs(10), || sink.request_count() == 1),
        "{}",
        envoy.log()
    );
    let record: Value = serde_json::from_slice(&sink.requests()[0].body).unwrap();
    assert_eq!(record["status"], 503);
    assert_eq!(record["response_flags"], "UF");
    assert_eq!(record["upstream_cluster"], "backend");
    assert!(record.get("upstream_latency_ms").is_none(), "{record}");
}

#[test]
fn masked_values_never_reach_clickhouse() {
    let clickhouse = ClickHouse::start();
    clickhouse.create_log_tables(&["header_x_phone"]);
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let mut config = clickhouse_config();
    config["headers"] = json!(["x-phone"]);
    config["mask"] = json!({
        "headers": {"x-phone": "last4"},
        "query": {"email": "digest"},
        "patterns": [
            {"kind": "id_number"}, {"kind": "card", "as": "last4"},
            {"kind": "email", "as": "digest"}, {"kind": "phone"}
        ],
        "digest_key": "a-key-of-the-test-0123456789"
    });
    let envoy = gateway(config, clickhouse.http_port(), &upstream);
    let calls: u64 = 6;
    for n in 0..calls {
        let response = http::get(
            &envoy.url(&format!(
                "/users/alice{n}@example.com/orders?email=bob{n}%40example.com&card=4111111111111111&q=138001380{n:02}"
            )),
            &[
                ("x-phone", &format!("139001390{n:02}")),
                ("user-agent", "agent 440301199001011234"),
            ],
        )
        .expect("response");
        assert_eq!(response.status, 200);
    }
    assert!(
        wait_until(Duration::from_secs(15), || count_rows(&clickhouse, "1")
            >= calls),
        "rows: {}\n{}",
        count_rows(&clickhouse, "1"),
        envoy.log()
    );
    // What the backend got is untouched: masking is for the record only.
    assert!(upstream.requests()[0].path.contains("alice0@example.com"));
    let leaked = "path LIKE '%@example.com%' OR query LIKE '%example.com%' \
                  OR query LIKE '%4111111111111111%' OR query LIKE '%13800138%' \
                  OR user_agent LIKE '%440301199001011234%' OR header_x_phone LIKE '%13900139%'";
    assert_eq!(
        count_rows(&clickhouse, leaked),
        0,
        "a masked value was stored"
    );
    let row: Value = serde_json::from_str(
        clickhouse
            .query("SELECT path, query, user_agent, header_x_phone FROM gateway_calls WHERE path LIKE '/users/~%' LIMIT 1 FORMAT JSONEachRow")
            .trim(),
    )
    .expect("a JSON row");
    let path = row["path"].as_str().unwrap();
    assert!(
        path.starts_with("/users/~") && path.ends_with("/orders"),
        "{row}"
    );
    let query = row["query"].as_str().unwrap();
    assert!(
        query.contains("card=****1111") && query.contains("q=****"),
        "{row}"
    );
    assert!(query.starts_with("email=~"), "a digest: {row}");
    assert_eq!(row["user_agent"], "agent ****");
    assert!(
        row["header_x_phone"].as_str().unwrap().starts_with("****"),
        "{row}"
    );
    // The same value digests the same in every record: joins still work.
    assert_eq!(
        count(&clickhouse, "SELECT uniqExact(path) FROM gateway_calls"),
        calls
    );
}
