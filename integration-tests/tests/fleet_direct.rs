//! The native module's own Redis connection (`fleet.store.redis`): several
//! Envoys with the native module (`GATEWAY_NATIVE=1`), two workers each,
//! share one real Redis with no Webdis and no store cluster in between;
//! the connection signs in as an ACL user allowed only `EVALSHA` and
//! `EVAL`. The Wasm forms cannot open connections of their own: with the
//! chain or the gateway module, each test checks that Envoy refuses the
//! configuration and names the field (their fleet tests are `fleet.rs`).

use gateway_common::fleet::wire::SCRIPT;
use integration_tests::echo::EchoServer;
use integration_tests::envoy::{gateway_config, native_mode, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use integration_tests::redis::{ClusterStore, FleetStore, ReplicatedStore, Reply};
use integration_tests::signing::{pairs, signed_headers};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const WORKERS: u32 = 2;
const APP: (&str, &str) = ("203751", "fleet-secret");
/// How long a test waits for the store (or its connection) to come back.
const BACK: Duration = Duration::from_secs(5);

/// The store of every test: Redis itself, a timeout long enough for a
/// loaded 2-core machine.
fn store(fleet: &FleetStore, timeout_ms: u64) -> Value {
    json!({"redis": fleet.redis_config(), "timeout_ms": timeout_ms})
}

fn throttling(store: Value, limit: u32, failure_mode: &str) -> WasmFilter {
    WasmFilter::json(
        "throttling",
        &json!({
            "rules": [{"name": "api", "limit": limit, "window": "1h"}],
            "fleet": {"store": store, "failure_mode": failure_mode}
        }),
    )
}

/// Envoys of the native module with `filters`; in the Wasm forms, checks
/// that Envoy refuses them and returns `None`.
fn fleet(n: usize, filters: &[WasmFilter], upstream: &EchoServer) -> Option<Vec<Envoy>> {
    let config = gateway_config(filters, &[upstream.port()]);
    if !native_mode() {
        let log = Envoy::expect_refused(&config);
        assert!(
            log.contains("the Wasm modules reach the store through Webdis"),
            "the refusal names why: {log}"
        );
        return None;
    }
    Some(
        (0..n)
            .map(|_| Envoy::start_with(&config, WORKERS).unwrap_or_else(|e| panic!("{e}")))
            .collect(),
    )
}

fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> Response {
    http::get(&envoy.url(path), headers).expect("response from Envoy")
}

/// `per_envoy` requests to every Envoy at once, each on its own connection.
fn storm(envoys: &[Envoy], per_envoy: usize, headers: &[(String, String)]) -> Vec<Response> {
    storm_with(envoys, per_envoy, || headers.to_vec())
}

/// [`storm`] with each request's headers made by `headers` (a signature
/// with its own nonce).
fn storm_with(
    envoys: &[Envoy],
    per_envoy: usize,
    headers: impl Fn() -> Vec<(String, String)> + Sync,
) -> Vec<Response> {
    let headers = &headers;
    thread::scope(|scope| {
        let handles: Vec<_> = envoys
            .iter()
            .flat_map(|envoy| (0..per_envoy).map(move |_| envoy))
            .map(|envoy| {
                scope.spawn(move || {
                    http::get(&envoy.url("/a"), &pairs(&headers())).expect("response from Envoy")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    })
}

fn count(responses: &[Response], status: u16) -> usize {
    responses.iter().filter(|r| r.status == status).count()
}

fn stat(envoy: &Envoy, filter: &str, name: &str) -> u64 {
    envoy.stat(&format!("wasmcustom.gw.{filter}.{name}"))
}

#[test]
fn a_quota_storm_over_three_envoys_is_exact_on_the_direct_connection() {
    let redis = FleetStore::start();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let Some(envoys) = fleet(3, &[throttling(store(&redis, 2000), 25, "deny")], &upstream) else {
        return;
    };
    // Cached beforehand, so every request is one EVALSHA.
    redis.command(&["SCRIPT", "LOAD", SCRIPT]);
    let (evalsha, eval) = (redis.command_calls("evalsha"), redis.command_calls("eval"));
    let responses = storm(&envoys, 20, &[]);
    assert_eq!(count(&responses, 200), 25);
    assert_eq!(count(&responses, 429), 35);
    assert_eq!(upstream.request_count(), 25);
    assert_eq!(
        redis.command_calls("evalsha") - evalsha,
        60,
        "one call per request"
    );
    assert_eq!(redis.command_calls("eval"), eval);
    let answered: u64 = envoys
        .iter()
        .map(|e| stat(e, "throttling", "fleet.answered"))
        .sum();
    assert_eq!(answered, 60);
    assert_eq!(redis.keys("gw:q:api:*").len(), 1);
}

#[test]
fn a_replayed_signature_passes_once_across_the_fleet() {
    let redis = FleetStore::start();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let sign_auth = WasmFilter::json(
        "sign_auth",
        &json!({
            "apps": [{"key": APP.0, "secrets": [APP.1]}],
            "fleet": {"store": store(&redis, 2000), "failure_mode": "deny"}
        }),
    );
    let Some(envoys) = fleet(3, &[sign_auth], &upstream) else {
        return;
    };
    let headers = vec![("accept".to_string(), "application/json".to_string())];
    let request = signed_headers(APP.0, APP.1, "GET", "/a", &headers, None);
    let responses = storm(&envoys, 10, &request);
    assert_eq!(count(&responses, 200), 1, "one of 30 copies passes");
    assert_eq!(count(&responses, 400), 29);
    assert!(responses
        .iter()
        .filter(|r| r.status == 400)
        .all(|r| r.header("x-ca-error-code") == Some("A400IN")));
    assert_eq!(upstream.request_count(), 1);
}

#[test]
fn redis_down_or_frozen_is_answered_by_the_failure_mode_and_the_connection_comes_back() {
    let mut redis = FleetStore::start();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let Some(envoys) = fleet(1, &[throttling(store(&redis, 500), 4, "deny")], &upstream) else {
        return;
    };
    let envoy = &envoys[0];
    assert_eq!(get(envoy, "/", &[]).status, 200);

    // Down: refused connections are answered at once.
    redis.stop_redis();
    let started = Instant::now();
    for _ in 0..5 {
        let denied = get(envoy, "/", &[]);
        assert_eq!(
            (denied.status, denied.header("x-ca-error-code")),
            (503, Some("A503TU"))
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "five refusals took {:?}",
        started.elapsed()
    );
    // Not sent (no connection); one written just as Redis went away has
    // no answer instead.
    let failures = |envoy: &Envoy| {
        stat(envoy, "throttling", "fleet.failure.dispatch")
            + stat(envoy, "throttling", "fleet.failure.no_answer")
    };
    assert_eq!(failures(envoy), 5);
    assert!(stat(envoy, "throttling", "fleet.failure.dispatch") >= 4);
    assert!(
        envoy.log().contains("cannot use Redis at"),
        "{}",
        envoy.log()
    );

    // Back: the connection is made again by itself, and counts are exact
    // (the first call counted, 4 in all).
    redis.start_redis();
    assert!(
        envoy.wait_for(BACK, |e| get(e, "/", &[]).status == 200),
        "not back: {}",
        envoy.log()
    );
    let back: Vec<u16> = (0..4).map(|_| get(envoy, "/", &[]).status).collect();
    assert_eq!(back, [200, 200, 200, 429], "Redis started empty: 4 in all");

    // Frozen, for longer than a connection may stay stuck (1 s): each
    // request is answered by the failure mode within its timeout (500 ms),
    // whether it waits on the stuck connection or on one being made again.
    redis.pause_redis();
    let mut slowest = Duration::ZERO;
    let frozen: Vec<u16> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let status = get(envoy, "/", &[]).status;
            slowest = slowest.max(started.elapsed());
            status
        })
        .collect();
    redis.resume_redis();
    assert_eq!(frozen, [503; 5]);
    assert!(
        slowest < Duration::from_millis(1500),
        "a request waited {slowest:?} (timeout 500 ms)"
    );
    assert!(failures(envoy) >= 10);
    // Thawed: answered again (the connection kept or made again).
    assert!(
        envoy.wait_for(BACK, |e| get(e, "/", &[]).status == 429),
        "not back: {}",
        envoy.log()
    );
}

#[test]
fn a_flushed_script_cache_is_filled_again_and_nothing_is_lost() {
    let redis = FleetStore::start();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let Some(envoys) = fleet(1, &[throttling(store(&redis, 2000), 6, "deny")], &upstream) else {
        return;
    };
    let envoy = &envoys[0];
    let first: Vec<u16> = (0..3).map(|_| get(envoy, "/", &[]).status).collect();
    let eval = redis.command_calls("eval");
    redis.command(&["SCRIPT", "FLUSH"]);
    let then: Vec<u16> = (0..4).map(|_| get(envoy, "/", &[]).status).collect();
    assert_eq!(first, [200, 200, 200], "{}", envoy.log());
    assert_eq!(then, [200, 200, 200, 429]);
    assert_eq!(stat(envoy, "throttling", "fleet.failure.no_script"), 0);
    assert_eq!(
        redis.command_calls("eval"),
        eval + 1,
        "sent again with the script once, then cached"
    );
}

#[test]
fn fleet_breakers_share_their_state_on_the_direct_connection() {
    let redis = FleetStore::start();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let breaker = WasmFilter::json(
        "circuit_breaker",
        &json!({
            "rules": [{
                "name": "api",
                "trip": {"consecutive_failures": 4},
                "open": {"duration_ms": 60000}
            }],
            "fleet": {"store": store(&redis, 2000), "sync_ms": 50}
        }),
    );
    let Some(envoys) = fleet(2, &[breaker], &upstream) else {
        return;
    };
    // Four failures in a row for the fleet, two on each Envoy.
    upstream.set_forced_status(Some(500));
    for envoy in [&envoys[0], &envoys[1], &envoys[0], &envoys[1]] {
        assert_eq!(get(envoy, "/", &[]).status, 500);
    }
    for envoy in &envoys {
        assert!(
            envoy.wait_for(BACK, |e| stat(e, "circuit_breaker", "api.state") == 1),
            "the breaker is open on every Envoy: {}",
            envoy.log()
        );
    }
    for envoy in &envoys {
        let refused = get(envoy, "/", &[]);
        assert_eq!(refused.header("x-ca-error-code"), Some("A503CB"));
    }
    assert_eq!(upstream.request_count(), 4);
    assert_eq!(redis.keys("gw:b:api:*").len(), 1);
}

/// One request of a storm: when it was sent (since the storm began), how
/// long it took, its answer, and its signed headers (to replay it).
struct Sent {
    at: Duration,
    took: Duration,
    status: u16,
    code: Option<String>,
    envoy: usize,
    headers: Vec<(String, String)>,
}

#[test]
fn a_primary_killed_during_a_storm_fails_over_and_the_checks_follow_it() {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let sign_auth = |store: Value| {
        WasmFilter::json(
            "sign_auth",
            &json!({
                "apps": [{"key": APP.0, "secrets": [APP.1]}],
                "fleet": {"store": store, "failure_mode": "deny"}
            }),
        )
    };
    if !native_mode() {
        let unused = json!({"redis": {"sentinel": {"addresses": ["127.0.0.1:1"], "master": "gw"}}});
        assert!(fleet(1, &[sign_auth(unused)], &upstream).is_none());
        return;
    }
    let mut redis = ReplicatedStore::start();
    const TIMEOUT: Duration = Duration::from_millis(300);
    let store = json!({"redis": redis.redis_config(), "timeout_ms": TIMEOUT.as_millis()});
    let envoys = fleet(2, &[sign_auth(store)], &upstream).expect("the native module");
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (sent, killed_at, promoted_at) = thread::scope(|scope| {
        let clients: Vec<_> = (0..6)
            .map(|client| {
                let (envoys, stop) = (&envoys, &stop);
                scope.spawn(move || {
                    let mut sent = Vec::new();
                    let envoy = client % envoys.len();
                    while !stop.load(Ordering::Relaxed) {
                        let accept = [("accept".to_string(), "application/json".to_string())];
                        let headers = signed_headers(APP.0, APP.1, "GET", "/a", &accept, None);
                        let at = started.elapsed();
                        let response = get(&envoys[envoy], "/a", &pairs(&headers));
                        sent.push(Sent {
                            at,
                            took: started.elapsed() - at,
                            status: response.status,
                            code: response.header("x-ca-error-code").map(String::from),
                            envoy,
                            headers,
                        });
                    }
                    sent
                })
            })
            .collect();
        thread::sleep(Duration::from_secs(2));
        redis.kill_primary();
        let killed_at = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(30);
        while redis.named_primary() != Some(redis.replica_port()) {
            assert!(Instant::now() < deadline, "no failover in 30 s");
            thread::sleep(Duration::from_millis(10));
        }
        let promoted_at = started.elapsed();
        // Long enough for every Envoy to ask the Sentinels again.
        thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let sent: Vec<Sent> = clients
            .into_iter()
            .flat_map(|client| client.join().expect("client"))
            .collect();
        (sent, killed_at, promoted_at)
    });

    // No request hung: each was answered within the store's timeout (and
    // Envoy's own time), by the store or by the failure mode.
    let slowest = sent.iter().map(|s| s.took).max().unwrap_or_default();
    assert!(
        slowest < TIMEOUT + Duration::from_secs(1),
        "a request took {slowest:?}"
    );
    for s in &sent {
        assert!(
            s.status == 200 || (s.status == 503 && s.code.as_deref() == Some("A503NU")),
            "{} {:?} at {:?}",
            s.status,
            s.code,
            s.at
        );
    }
    let refused = sent.iter().filter(|s| s.status == 503).count();
    assert!(refused > 0, "the outage was seen");
    // The checks came back by themselves, on the promoted replica.
    let first_back = sent
        .iter()
        .filter(|s| s.at > killed_at && s.status == 200)
        .map(|s| s.at)
        .min()
        .expect("requests passed after the failover");
    let settled = promoted_at + Duration::from_millis(1500);
    let late: Vec<&Sent> = sent.iter().filter(|s| s.at > settled).collect();
    assert!(
        late.len() > 20,
        "{} requests after the failover",
        late.len()
    );
    assert!(
        late.iter().all(|s| s.status == 200),
        "refused after the failover settled: {}",
        late.iter().filter(|s| s.status != 200).count()
    );
    let reader = &envoys[0];
    let replay = |s: &Sent| get(reader, "/a", &pairs(&s.headers)).status;
    assert_eq!(replay(late[0]), 400, "the promoted replica records nonces");

    // What asynchronous replication lost: nonces accepted before the kill
    // that the promoted replica does not have pass once more. Those older
    // than a second were replicated long before (loopback).
    let accepted_before: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.at < killed_at && s.status == 200)
        .collect();
    let old: Vec<&&Sent> = accepted_before
        .iter()
        .filter(|s| s.at + Duration::from_secs(1) < killed_at)
        .rev()
        .take(50)
        .collect();
    assert!(
        old.iter().all(|s| replay(s) == 400),
        "an old nonce was lost"
    );
    let last_second: Vec<&&Sent> = accepted_before
        .iter()
        .filter(|s| s.at + Duration::from_secs(1) >= killed_at)
        .collect();
    let lost = last_second.iter().filter(|s| replay(s) == 200).count();
    let by_envoy = |e: usize| sent.iter().filter(|s| s.envoy == e).count();
    eprintln!(
        "failover: {} requests ({} and {} per Envoy), {refused} refused by the failure mode, \
         slowest {slowest:?}; Sentinel promoted the replica {:?} after the kill, the first \
         request passed again {:?} after it; nonces lost: {lost} of the {} accepted in the \
         last second before the kill",
        sent.len(),
        by_envoy(0),
        by_envoy(1),
        promoted_at - killed_at,
        first_back - killed_at,
        last_second.len()
    );
    assert!(
        envoys[0].log().contains("now at"),
        "the new primary is logged: {}",
        envoys[0].log()
    );
}

#[test]
fn leases_go_on_after_redis_was_down_since_unsent_commands_ran_nowhere() {
    let mut redis = FleetStore::start();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let throttling = WasmFilter::json(
        "throttling",
        &json!({
            "rules": [{"name": "api", "limit": 100_000, "window": "1d"}],
            "fleet": {"store": store(&redis, 500), "failure_mode": "deny",
                      "lease": {"units": 10, "holders": 4}}
        }),
    );
    let Some(envoys) = fleet(1, &[throttling], &upstream) else {
        return;
    };
    let envoy = &envoys[0];
    assert_eq!(get(envoy, "/", &[]).status, 200);
    redis.stop_redis();
    // Once the connection is known lost, commands are not written at all
    // (one written just before would have no answer, and keep its ask).
    assert!(
        envoy.wait_for(BACK, |e| e.log().contains("cannot use Redis at")),
        "{}",
        envoy.log()
    );
    let down: Vec<u16> = (0..6).map(|_| get(envoy, "/", &[]).status).collect();
    assert!(down.contains(&503), "{down:?}");
    redis.start_redis();
    assert!(
        envoy.wait_for(BACK, |e| e.log().contains("connected to Redis at")),
        "not back: {}",
        envoy.log()
    );
    let leased = stat(envoy, "throttling", "fleet.leased");
    let before = redis.script_calls();
    for _ in 0..40 {
        assert_eq!(get(envoy, "/", &[]).status, 200);
    }
    let calls = redis.script_calls() - before;
    // Two workers, 10 units a call, the script loaded again once.
    assert!(calls <= 4 + 2 + 2, "{calls} store calls for 40 requests");
    assert!(stat(envoy, "throttling", "fleet.leased") - leased >= 32);
}

#[test]
fn the_store_over_tls_with_a_client_certificate_keeps_a_storm_exact() {
    let redis = FleetStore::start_tls();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let over_tls = json!({"redis": redis.redis_tls_config(None), "timeout_ms": 2000});
    let Some(envoys) = fleet(2, &[throttling(over_tls, 75, "deny")], &upstream) else {
        return;
    };
    redis.command(&["SCRIPT", "LOAD", SCRIPT]);
    let evalsha = redis.command_calls("evalsha");
    // 120 at once: the commands of both workers pipelined on each Envoy's
    // one TLS connection.
    let responses = storm(&envoys, 60, &[]);
    assert_eq!((count(&responses, 200), count(&responses, 429)), (75, 45));
    assert_eq!(upstream.request_count(), 75);
    assert_eq!(
        redis.command_calls("evalsha") - evalsha,
        120,
        "one call per request"
    );
    assert_eq!(redis.keys("gw:q:api:*").len(), 1);

    // An Envoy trusting another CA does not connect: its checks get the
    // failure mode's answer, and its log names the certificate.
    let (other_ca, _) = integration_tests::envoy::make_certs();
    let distrusting = json!({
        "redis": redis.redis_tls_config(Some(&other_ca.path().join("ca.pem"))),
        "timeout_ms": 2000
    });
    let Some(envoys) = fleet(1, &[throttling(distrusting, 25, "deny")], &upstream) else {
        return;
    };
    let denied = get(&envoys[0], "/", &[]);
    assert_eq!(
        (denied.status, denied.header("x-ca-error-code")),
        (503, Some("A503TU"))
    );
    assert!(
        envoys[0].wait_for(BACK, |envoy| envoy
            .log()
            .contains("invalid peer certificate")),
        "{}",
        envoys[0].log()
    );

    // Without a client certificate, Redis refuses the session (after the
    // handshake, in TLS 1.3): no connection either, and the log says so.
    let mut anonymous = redis.redis_tls_config(None);
    let tls = anonymous["tls"].as_object_mut().expect("tls");
    tls.remove("cert_file");
    tls.remove("key_file");
    let anonymous = json!({"redis": anonymous, "timeout_ms": 2000});
    let Some(envoys) = fleet(1, &[throttling(anonymous, 25, "deny")], &upstream) else {
        return;
    };
    assert_eq!(get(&envoys[0], "/", &[]).status, 503);
    assert!(
        envoys[0].wait_for(BACK, |envoy| envoy.log().contains("received fatal alert")),
        "{}",
        envoys[0].log()
    );
}

/// The header signed requests carry (a request without `Accept` is
/// signed as `*/*`, and the HTTP client sends none).
fn accept() -> Vec<(String, String)> {
    vec![("accept".to_string(), "application/json".to_string())]
}

/// Each request signed anew (its own nonce).
fn signed() -> Vec<(String, String)> {
    signed_headers(APP.0, APP.1, "GET", "/a", &accept(), None)
}

#[test]
fn a_redis_cluster_takes_each_check_in_its_own_slot_and_storms_stay_exact() {
    let cluster = ClusterStore::start();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    // Only the first node is named: the others are learnt from it.
    let store = json!({"redis": cluster.redis_config(1), "timeout_ms": 2000});
    let sign_auth = WasmFilter::json(
        "sign_auth",
        &json!({
            "apps": [{"key": APP.0, "secrets": [APP.1]}],
            "fleet": {"store": store, "failure_mode": "deny"}
        }),
    );
    let filters = [sign_auth, throttling(store, 25, "deny")];
    let Some(envoys) = fleet(3, &filters, &upstream) else {
        return;
    };
    for port in cluster.ports() {
        cluster.command(*port, &["SCRIPT", "LOAD", SCRIPT]);
    }
    let calls = |cluster: &ClusterStore| -> u64 {
        cluster
            .ports()
            .iter()
            .map(|p| cluster.script_calls(*p))
            .sum()
    };

    // 30 copies of one signed request: one passes, and only it is counted
    // by the quota, although the nonce and the counter are on other nodes.
    let replays = storm(&envoys, 10, &signed());
    assert_eq!(count(&replays, 200), 1);
    assert_eq!(count(&replays, 400), 29);
    let counters: Vec<(u16, String)> = cluster
        .ports()
        .iter()
        .flat_map(|port| {
            cluster
                .keys(*port, "gw:q:*")
                .into_iter()
                .map(|k| (*port, k))
        })
        .collect();
    assert_eq!(counters.len(), 1, "one counter: {counters:?}");
    let (counter_port, counter) = counters[0].clone();
    assert_eq!(
        cluster.command(counter_port, &["GET", &counter]),
        Reply::Bulk(Some("1".into())),
        "the replays were not counted"
    );

    // Each Envoy read the slot table (not only learnt from redirects).
    for envoy in &envoys {
        assert!(
            envoy.wait_for(BACK, |e| e.log().contains("3 primaries serve the slots")),
            "the slots were read: {}",
            envoy.log()
        );
    }

    // 60 requests signed anew: their nonces spread over the three nodes,
    // each request makes one call in its nonce's slot and one in the
    // counter's, and the quota admits exactly what is left of 25.
    let before = calls(&cluster);
    let responses = storm_with(&envoys, 20, signed);
    assert_eq!(count(&responses, 200), 24);
    assert_eq!(count(&responses, 429), 36);
    assert_eq!(upstream.request_count(), 25);
    assert_eq!(calls(&cluster) - before, 120, "two calls per request");
    for port in cluster.ports() {
        let nonces = cluster.keys(*port, "gw:n:{*}").len();
        assert!(nonces > 0, "node {port} holds some of the 61 nonces");
    }
    let nonces: usize = cluster
        .ports()
        .iter()
        .map(|port| cluster.keys(*port, "gw:n:*").len())
        .sum();
    assert_eq!(nonces, 61);

    // The counter's slot moves to another node (a resharding): the Envoys
    // are redirected there and find the count moved with it.
    let Reply::Integer(slot) = cluster.command(counter_port, &["CLUSTER", "KEYSLOT", &counter])
    else {
        panic!("KEYSLOT")
    };
    let to = *cluster
        .ports()
        .iter()
        .find(|port| **port != counter_port)
        .expect("another node");
    cluster.move_slot(slot as u16, to);
    let responses = storm_with(&envoys, 10, signed);
    assert_eq!(count(&responses, 429), 30);
    assert_eq!(upstream.request_count(), 25);
    assert_eq!(
        cluster.command(to, &["GET", &counter]),
        Reply::Bulk(Some("25".into()))
    );
    for envoy in &envoys {
        for filter in ["sign_auth", "throttling"] {
            for reason in ["no_answer", "error", "bad_reply", "dispatch"] {
                let failures = stat(envoy, filter, &format!("fleet.failure.{reason}"));
                assert_eq!(failures, 0, "{filter} {reason}: {}", envoy.log());
            }
        }
    }
}
