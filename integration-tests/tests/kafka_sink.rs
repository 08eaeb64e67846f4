//! log-push's `kafka` sink in a real Envoy: the native module's own
//! idempotent producer writes every call to a real Kafka-protocol broker
//! (Tansu, see `integration_tests::kafka`), through answers lost after the
//! broker kept a batch, a broker frozen past the producer's request timeout
//! and a relay that cuts every connection mid-traffic, and a consumer of
//! its own kind (kafka-python) reads each call back exactly once. The Wasm modules cannot open connections: in
//! their forms the sink is refused with the field named.

use integration_tests::echo::EchoServer;
use integration_tests::envoy::{gateway_config, native_mode, Envoy, WasmFilter};
use integration_tests::http;
use integration_tests::kafka::{Broker, Message, Relay};
use integration_tests::process::free_port;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const TOPIC: &str = "gateway-calls";

fn log_push(brokers: &str) -> Value {
    json!({
        "sink": {"format": "kafka", "brokers": [brokers], "topic": TOPIC, "key_field": "path",
                 "compression": "gzip", "timeout_ms": 90000},
        "batch": {"max_records": 200, "flush_interval_ms": 100},
        "queue": {"max_records": 20000, "max_bytes": 64 << 20}
    })
}

fn gateway(brokers: &str, upstream: &EchoServer) -> Envoy {
    let config = gateway_config(
        &[WasmFilter::json("log_push", &log_push(brokers))],
        &[upstream.port()],
    );
    Envoy::start_with(&config, 2).unwrap_or_else(|e| panic!("{e}"))
}

/// `count` calls to `/calls/<prefix>-<n>` from 8 clients; all 200.
fn send_calls(envoy: &Envoy, prefix: &str, count: usize) {
    send_calls_to(&envoy.url(""), prefix, count);
}

fn send_calls_to(base: &str, prefix: &str, count: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, next, prefix) = (
                format!("{base}/calls/"),
                Arc::clone(&next),
                prefix.to_string(),
            );
            thread::spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                let response = http::get(&format!("{url}{prefix}-{n}"), &[]).expect("response");
                assert_eq!(response.status, 200);
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
}

/// Polls `done` for up to 30 s.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    done()
}

fn records_sent(envoy: &Envoy) -> u64 {
    envoy.stat("wasmcustom.gw.log_push.records.sent")
}

/// Each message's call (its path), checked against its key and value.
fn calls_of(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|message| {
            let record: Value = serde_json::from_str(&message.value).expect("a JSON record");
            let path = record["path"].as_str().expect("path").to_string();
            assert_eq!(message.key.as_deref(), Some(path.as_str()), "key_field");
            assert!(record["record_id"].is_string(), "{record}");
            path
        })
        .collect()
}

/// In the Wasm forms: the sink is refused with the field named (and the
/// test that called ends there).
fn refused_by_the_wasm_modules(upstream: &EchoServer) -> bool {
    if native_mode() {
        return false;
    }
    let config = gateway_config(
        &[WasmFilter::json("log_push", &log_push("127.0.0.1:9092"))],
        &[upstream.port()],
    );
    let log = Envoy::expect_refused(&config);
    assert!(
        log.contains("sink.brokers: the Wasm modules cannot open connections of their own"),
        "{log}"
    );
    true
}

#[test]
fn every_call_reaches_the_topic_once_through_a_frozen_broker_and_cut_connections() {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    if refused_by_the_wasm_modules(&upstream) {
        return;
    }
    let (relay_port, broker_port) = (free_port(), free_port());
    let broker = Broker::start_on(broker_port, relay_port);
    let relay = Relay::start(relay_port, broker_port);
    broker.create_topic(TOPIC, 3);
    let envoy = gateway(&broker.address(), &upstream);

    // A batch the broker kept whose answer is lost: sent again with its
    // producer id and sequence numbers, and kept once.
    relay.lose_the_next_produce_answer();
    send_calls(&envoy, "before", 3_000);
    assert!(
        wait_until(|| relay.answers_lost() == 1),
        "a Produce answer lost"
    );

    // Frozen past the producer's request timeout (5 s): its requests time
    // out and are sent again on new connections; on SIGCONT the broker
    // works through all of them.
    let connections_before = relay.connections();
    broker.freeze();
    let frozen = Instant::now();
    send_calls(&envoy, "frozen", 3_000);
    let sent_while_frozen = records_sent(&envoy);
    thread::sleep(Duration::from_secs(7).saturating_sub(frozen.elapsed()));
    let connections_while_frozen = relay.connections() - connections_before;
    broker.thaw();
    assert!(
        connections_while_frozen >= 1,
        "the producer gave up on a request and connected again"
    );

    // While the backlog drains and calls go on: every connection cut, then
    // two more answers lost.
    assert!(
        envoy.wait_for(Duration::from_secs(30), |envoy| records_sent(envoy)
            > sent_while_frozen)
    );
    let cut = relay.cut();
    let url = envoy.url("");
    let after = thread::spawn(move || send_calls_to(&url, "after", 4_000));
    for lost in [2, 3] {
        relay.lose_the_next_produce_answer();
        assert!(
            wait_until(|| relay.answers_lost() == lost),
            "Produce answer {lost} lost"
        );
    }
    after.join().expect("calls");
    assert!(cut >= 1, "a connection was open to be cut");

    let all = 10_000;
    assert!(
        envoy.wait_for(Duration::from_secs(90), |envoy| records_sent(envoy) == all),
        "{} of {all} records acknowledged\n{}",
        records_sent(&envoy),
        envoy.log()
    );
    for lost in ["dropped.sink_failed", "dropped.queue_full"] {
        assert_eq!(
            envoy.stat(&format!("wasmcustom.gw.log_push.records.{lost}")),
            0
        );
    }
    let messages = broker.messages(TOPIC, all as usize, Duration::from_secs(60));
    let calls = calls_of(&messages);
    let mut copies: HashMap<&str, usize> = HashMap::new();
    for call in &calls {
        *copies.entry(call).or_default() += 1;
    }
    let twice = copies.values().filter(|n| **n > 1).count();
    // Tansu honours the idempotent producer (a batch sent again with its
    // sequence numbers is kept once): each call exactly once, the three
    // batches whose answers were lost included.
    assert_eq!(
        (copies.len(), twice, calls.len()),
        (all as usize, 0, all as usize),
        "distinct calls, calls written twice, messages"
    );
    let partitions: HashSet<i32> = messages.iter().map(|message| message.partition).collect();
    assert!(
        partitions.len() > 1,
        "keys spread over partitions: {partitions:?}"
    );
    drop(relay);
}

#[test]
fn records_wait_for_a_broker_that_is_not_up_yet() {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    if refused_by_the_wasm_modules(&upstream) {
        return;
    }
    let port = free_port();
    let envoy = gateway(&format!("127.0.0.1:{port}"), &upstream);
    send_calls(&envoy, "early", 50);
    thread::sleep(Duration::from_secs(2));
    assert_eq!(records_sent(&envoy), 0, "no broker yet");
    let broker = Broker::start_on(port, port);
    assert!(
        envoy.wait_for(Duration::from_secs(30), |envoy| records_sent(envoy) == 50),
        "{}",
        envoy.log()
    );
    let calls = calls_of(&broker.messages(TOPIC, 50, Duration::from_secs(30)));
    let distinct: HashSet<&String> = calls.iter().collect();
    assert_eq!((calls.len(), distinct.len()), (50, 50));
}
