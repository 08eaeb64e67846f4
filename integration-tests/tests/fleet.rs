//! Fleet-wide state in real Envoys: several Envoys (two workers each)
//! sharing one real Redis, an echo upstream counting what got through. Run
//! against the chain of single filters and the gateway module
//! (`GATEWAY_MODULE=1`), which reach Redis through Webdis, and against the
//! native module (`GATEWAY_NATIVE=1`), which reaches it on its own
//! connection, or through Webdis too with `GATEWAY_FLEET_STORE=webdis`.

use gateway_common::fleet::model::ScriptModel;
use gateway_common::fleet::wire::{parse_reply, Arguments, LeaseAsk, Op, QuotaCheck, RecordSwap};
use integration_tests::echo::{EchoServer, Reply as EchoReply};
use integration_tests::envoy::{
    add_cluster, gateway_config, module_mode, native_mode, Envoy, WasmFilter,
};
use integration_tests::http::{self, Response};
use integration_tests::redis::{FleetStore, Reply};
use integration_tests::signing::{now_ms, pairs, signed_headers};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const WORKERS: u32 = 2;
const STORE_CLUSTER: &str = "fleet_store";
const APP: (&str, &str) = ("203751", "fleet-secret");

/// Whether the filters reach Redis on the native module's own connection
/// (`fleet.store.redis`) rather than through Webdis and the store cluster.
fn direct() -> bool {
    native_mode() && std::env::var("GATEWAY_FLEET_STORE").map_or(true, |store| store != "webdis")
}

thread_local! {
    /// The `fleet.store.redis` of the test's store (each test is a thread).
    static REDIS: std::cell::RefCell<Option<Value>> = const { std::cell::RefCell::new(None) };
}

/// The test's store; [`store`] then names it.
fn start_store() -> FleetStore {
    let store = FleetStore::start();
    REDIS.with(|redis| *redis.borrow_mut() = Some(store.redis_config()));
    store
}

/// The store settings of every test: a timeout long enough for a loaded
/// 2-core machine, so exactness is not traded for the failure mode.
fn store() -> Value {
    store_with(2000)
}

/// Waits until the native module's own connection of each Envoy is made
/// again after an outage: it is tried again after a pause (up to 2 s), and
/// until then every request gets the failure mode. Webdis reconnects as
/// soon as Redis is back ([`FleetStore::start_redis`] waits for it).
fn reconnected(envoys: &[&Envoy]) {
    if !direct() {
        return;
    }
    for envoy in envoys {
        assert!(
            eventually(Duration::from_secs(5), || envoy
                .log()
                .contains("connected to Redis at")),
            "not connected again: {}",
            envoy.log()
        );
    }
}

/// The failures `filter` counted while Redis was down: Webdis answers 503;
/// the native module's own connection has none to send on (a command
/// written just as Redis went away has no answer in time instead).
fn down_failures(envoy: &Envoy, filter: &str) -> u64 {
    if direct() {
        stat(envoy, filter, "fleet.failure.dispatch")
            + stat(envoy, filter, "fleet.failure.no_answer")
    } else {
        stat(envoy, filter, "fleet.failure.status")
    }
}

/// Whether `filter` logged the store failing as it does while Redis is down.
fn logged_down(envoy: &Envoy, filter: &str) -> bool {
    let reasons: &[&str] = if direct() {
        &[
            "the call to the store could not be made",
            "no answer in time",
        ]
    } else {
        &["HTTP status 503"]
    };
    let log = envoy.log();
    reasons
        .iter()
        .any(|reason| log.contains(&format!("{filter}: fleet store failing ({reason})")))
}

fn store_with(timeout_ms: u64) -> Value {
    if direct() {
        let redis = REDIS.with(|redis| redis.borrow().clone());
        json!({"redis": redis.expect("start_store() first"), "timeout_ms": timeout_ms})
    } else {
        json!({"cluster": STORE_CLUSTER, "timeout_ms": timeout_ms})
    }
}

fn sign_auth(failure_mode: &str) -> WasmFilter {
    WasmFilter::json(
        "sign_auth",
        &json!({
            "apps": [{"key": APP.0, "secrets": [APP.1]}],
            "fleet": {"store": store(), "failure_mode": failure_mode}
        }),
    )
}

fn throttling(rules: Value, fleet: Value) -> WasmFilter {
    let mut fleet = fleet;
    fleet["store"] = store();
    WasmFilter::json(
        "throttling",
        &json!({"rules": rules, "rate_limit_headers": true, "fleet": fleet}),
    )
}

/// One Envoy of the fleet: the filters, the upstream, the store cluster.
fn envoy(filters: &[WasmFilter], upstream: &EchoServer, store_port: u16) -> Envoy {
    let mut config = gateway_config(filters, &[upstream.port()]);
    add_cluster(&mut config, STORE_CLUSTER, store_port);
    Envoy::start_with(&config, WORKERS).unwrap_or_else(|e| panic!("{e}"))
}

fn fleet(
    n: usize,
    filters: &[WasmFilter],
    upstream: &EchoServer,
    store: &FleetStore,
) -> Vec<Envoy> {
    (0..n)
        .map(|_| envoy(filters, upstream, store.webdis_port()))
        .collect()
}

fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> Response {
    http::get(&envoy.url(path), headers).expect("response from Envoy")
}

/// Sends `per_envoy` requests to every Envoy at once, each on its own
/// connection, and returns every response.
fn storm(
    envoys: &[Envoy],
    per_envoy: usize,
    headers: &[(String, String)],
    path: &str,
) -> Vec<Response> {
    let urls: Vec<String> = envoys.iter().map(|e| e.url(path)).collect();
    thread::scope(|scope| {
        let handles: Vec<_> = urls
            .iter()
            .flat_map(|url| (0..per_envoy).map(move |_| url))
            .map(|url| {
                scope.spawn(move || http::get(url, &pairs(headers)).expect("response from Envoy"))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    })
}

fn statuses(responses: &[Response]) -> Vec<u16> {
    let mut statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    statuses
}

fn count(responses: &[Response], status: u16) -> usize {
    responses.iter().filter(|r| r.status == status).count()
}

fn stat(envoy: &Envoy, filter: &str, name: &str) -> u64 {
    envoy.stat(&format!("wasmcustom.gw.{filter}.{name}"))
}

fn signed(path: &str) -> Vec<(String, String)> {
    let headers = vec![("accept".to_string(), "application/json".to_string())];
    signed_headers(APP.0, APP.1, "GET", path, &headers, None)
}

#[test]
fn requests_woken_by_ext_auth_send_their_fleet_checks() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let authorizer = EchoServer::start_scripted("authorizer", |_| {
        EchoReply::new(200, "")
            .header("x-user-id", "u-1")
            .after(Duration::from_millis(300))
    })
    .expect("authorizer");
    let ext_auth = WasmFilter::json(
        "ext_auth",
        &json!({
            "authorizer": {"cluster": "authorizer", "timeout_ms": 2000},
            "identity": [{"from": "header", "name": "authorization"}],
            "upstream_headers": ["x-user-id"],
            "cache": {}
        }),
    );
    let rules = json!([{"name": "per-user", "key": "user", "limit": 12, "window": "1h"}]);
    let mut quota = throttling(rules, json!({"failure_mode": "deny"}));
    let mut quota_config: Value = serde_json::from_str(&quota.config).unwrap();
    quota_config["user"] = json!({"header": "x-user-id"});
    quota.config = quota_config.to_string();
    let mut config = gateway_config(&[ext_auth, quota], &[upstream.port()]);
    add_cluster(&mut config, STORE_CLUSTER, store.webdis_port());
    add_cluster(&mut config, "authorizer", authorizer.port());
    let envoy = Envoy::start_with(&config, WORKERS).unwrap_or_else(|e| panic!("{e}"));
    let headers = [("authorization".to_string(), "Bearer t".to_string())];
    let responses = storm(std::slice::from_ref(&envoy), 20, &headers, "/orders");
    assert_eq!(count(&responses, 200), 12, "{:?}", statuses(&responses));
    assert_eq!(count(&responses, 429), 8, "{:?}", statuses(&responses));
    assert!(authorizer.request_count() <= WORKERS as usize);
    assert!(stat(&envoy, "ext_auth", "coalesced") >= 20 - u64::from(WORKERS));
    assert_eq!(upstream.request_count(), 12);
}

#[test]
fn a_replay_storm_over_three_envoys_is_accepted_exactly_once() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoys = fleet(3, &[sign_auth("deny")], &upstream, &store);
    let request = signed("/orders/1");
    let responses = storm(&envoys, 8, &request, "/orders/1");
    assert_eq!(count(&responses, 200), 1, "{:?}", statuses(&responses));
    assert_eq!(count(&responses, 400), 23, "{:?}", statuses(&responses));
    assert!(responses
        .iter()
        .filter(|r| r.status == 400)
        .all(|r| r.header("x-ca-error-code") == Some("A400IN")));
    assert_eq!(
        upstream.request_count(),
        1,
        "the upstream saw the request once"
    );
    // The nonce is one key, a digest, expiring with the timestamp window.
    let keys = store.keys("gw:n:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        !keys[0].contains("nonce"),
        "no client input in keys: {}",
        keys[0]
    );
    match store.command(&["PTTL", &keys[0]]) {
        // The timestamp window (900 s) and a second's grace for slower clocks.
        Reply::Integer(ttl) => assert!((890_000..=901_000).contains(&ttl), "{ttl}"),
        other => panic!("PTTL: {other:?}"),
    }
    let answered: u64 = envoys
        .iter()
        .map(|e| stat(e, "sign_auth", "fleet.answered"))
        .sum();
    assert_eq!(answered, 24);
    // A fresh nonce is accepted anywhere.
    for envoy in &envoys {
        let fresh = signed("/orders/2");
        assert_eq!(get(envoy, "/orders/2", &pairs(&fresh)).status, 200);
    }
}

#[test]
fn a_quota_storm_over_three_envoys_admits_exactly_the_limit() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([{"name": "all", "limit": 25, "window": "1h"}]);
    let envoys = fleet(
        3,
        &[throttling(rules, json!({"failure_mode": "deny"}))],
        &upstream,
        &store,
    );
    let responses = storm(&envoys, 20, &[], "/");
    assert_eq!(count(&responses, 200), 25, "{:?}", statuses(&responses));
    assert_eq!(count(&responses, 429), 35, "{:?}", statuses(&responses));
    assert_eq!(upstream.request_count(), 25);
    // Each admitted request saw its own place in the one fleet count.
    let mut remaining: Vec<u32> = responses
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            r.header("x-ratelimit-remaining")
                .and_then(|v| v.parse().ok())
                .expect("remaining")
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..25).collect::<Vec<u32>>());
    for refused in responses.iter().filter(|r| r.status == 429) {
        assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
        let retry: u64 = refused
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("retry-after");
        assert!((1..=3600).contains(&retry), "{retry}");
    }
    assert_eq!(store.keys("gw:q:all:*").len(), 1);
}

/// The value of the one counter under `pattern` (0 when there is none).
fn counter(store: &FleetStore, pattern: &str) -> u64 {
    match store.keys(pattern).as_slice() {
        [] => 0,
        [key] => match store.command(&["GET", key]) {
            Reply::Bulk(Some(value)) => value.parse().expect("a count"),
            other => panic!("GET {key}: {other:?}"),
        },
        keys => panic!("one counter expected: {keys:?}"),
    }
}

#[test]
fn a_leased_quota_storm_never_passes_the_limit_and_reaches_it_exactly() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([{"name": "all", "limit": 60, "window": "1h"}]);
    // 3 Envoys × 2 workers may each hold up to 5 units.
    let lease = json!({"failure_mode": "deny", "lease": {"units": 5, "holders": 6}});
    let envoys = fleet(3, &[throttling(rules, lease)], &upstream, &store);
    let responses = storm(&envoys, 40, &[], "/");
    let admitted = count(&responses, 200);
    let counted = counter(&store, "gw:q:all:*");
    assert_eq!(admitted + count(&responses, 429), 120);
    assert!(counted <= 60, "counted {counted}: never past the limit");
    assert!(admitted as u64 <= counted);
    // Units still held are at most 4 per worker (the request's fifth used).
    assert!(
        counted - admitted as u64 <= 6 * 4,
        "{admitted} admitted, {counted} counted"
    );
    // Requests to every worker use up what they hold: exactly the limit.
    let mut more = 0;
    for i in 0..120 {
        if get(&envoys[i % 3], "/", &[]).status == 200 {
            more += 1;
        }
    }
    assert_eq!(admitted + more, 60, "the limit, exactly");
    assert_eq!(upstream.request_count(), 60);
    assert_eq!(counter(&store, "gw:q:all:*"), 60);
    let leased: u64 = envoys
        .iter()
        .map(|e| stat(e, "throttling", "fleet.leased"))
        .sum();
    assert!(leased > 0, "some requests were admitted from a lease");
}

#[test]
fn a_trickle_far_from_its_limit_calls_the_store_once_per_lease() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([{"name": "all", "limit": 100_000, "window": "1h"}]);
    let lease = json!({"failure_mode": "deny", "lease": {"units": 20, "holders": 16}});
    let envoys = fleet(1, &[throttling(rules, lease)], &upstream, &store);
    let before = store.script_calls();
    for _ in 0..100 {
        assert_eq!(get(&envoys[0], "/", &[]).status, 200);
    }
    let calls = store.script_calls() - before;
    // One call per 20 requests on each of the two workers, the script
    // loaded once (NOSCRIPT, then EVAL), and a partly used lease each.
    assert!(
        calls <= 5 + 2 + 2 + 1,
        "{calls} store calls for 100 requests"
    );
    assert!(stat(&envoys[0], "throttling", "fleet.leased") >= 88);
    assert_eq!(
        stat(&envoys[0], "throttling", "fleet.lease_units"),
        counter(&store, "gw:q:all:*")
    );
    assert!(counter(&store, "gw:q:all:*") <= 100 + 2 * 19);
}

#[test]
fn per_app_quotas_and_nonces_of_a_request_travel_in_one_call_in_the_module() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([
        {"name": "per-app", "key": "app", "limit": 3, "window": "1h"},
        {"name": "total", "limit": 100, "window": "1h"}
    ]);
    let filters = [
        sign_auth("deny"),
        throttling(rules, json!({"failure_mode": "deny"})),
    ];
    let envoys = fleet(2, &filters, &upstream, &store);
    let before = store.script_calls();
    let mut outcomes = Vec::new();
    for i in 0..5 {
        let request = signed("/orders/1");
        outcomes.push(get(&envoys[i % 2], "/orders/1", &pairs(&request)).status);
    }
    assert_eq!(outcomes, [200, 200, 200, 429, 429]);
    // A replay is refused by sign-auth and counts in no quota.
    let replayed = signed("/orders/1");
    let first = get(&envoys[0], "/orders/1", &pairs(&replayed));
    let again = get(&envoys[1], "/orders/1", &pairs(&replayed));
    assert_eq!((first.status, again.status), (429, 400));
    let calls: u64 = if direct() {
        store.script_calls() - before
    } else {
        envoys
            .iter()
            .map(|e| e.stat(&format!("cluster.{STORE_CLUSTER}.upstream_rq_total")))
            .sum()
    };
    // The first call finds the script not loaded (NOSCRIPT) and is sent
    // again with it: one call more.
    if module_mode() {
        assert_eq!(calls, 7 + 1, "one call per request");
    } else {
        // The chain: sign-auth's call, then throttling's (none after a replay).
        assert_eq!(calls, 13 + 1);
    }
    assert_eq!(upstream.request_count(), 3);
}

#[test]
fn a_sliding_window_is_one_window_for_the_whole_fleet() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([{"name": "smooth", "limit": 8, "window": "4s", "algorithm": "sliding"}]);
    let envoys = fleet(
        2,
        &[throttling(rules, json!({"failure_mode": "deny"}))],
        &upstream,
        &store,
    );
    let window = 4_000;
    // Start right after a window begins.
    thread::sleep(Duration::from_millis(window - now_ms() % window + 50));
    let first: Vec<u16> = (0..12)
        .map(|i| get(&envoys[i % 2], "/", &[]).status)
        .collect();
    assert_eq!(first.iter().filter(|s| **s == 200).count(), 8, "{first:?}");
    // Halfway into the next window the 8 weigh about 4.
    thread::sleep(Duration::from_millis(
        window - now_ms() % window + window / 2,
    ));
    let before = now_ms() % window;
    let admitted = (0..8)
        .filter(|i| get(&envoys[i % 2], "/", &[]).status == 200)
        .count();
    let after = now_ms() % window;
    // previous·(w − e)/w + current + 1 ≤ limit, for e between before and after.
    let fits = |elapsed: u64| (8 * window - 8 * (window - elapsed)) / window;
    assert!(
        (fits(before) as usize..=fits(after) as usize).contains(&admitted),
        "{admitted} admitted between {before} and {after} ms into the window"
    );
}

#[test]
fn a_day_quota_survives_an_envoy_restart() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([{"name": "daily", "limit": 3, "window": "1d"}]);
    let filters = [throttling(rules, json!({"failure_mode": "deny"}))];
    let first = envoy(&filters, &upstream, store.webdis_port());
    assert_eq!(get(&first, "/", &[]).status, 200);
    assert_eq!(get(&first, "/", &[]).status, 200);
    drop(first);
    let restarted = envoy(&filters, &upstream, store.webdis_port());
    assert_eq!(get(&restarted, "/", &[]).status, 200);
    let until_midnight = || (86_400_000 - now_ms() % 86_400_000).div_ceil(1000);
    let before = until_midnight();
    let refused = get(&restarted, "/", &[]);
    let after = until_midnight();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("x-ratelimit-limit"), Some("3"));
    let reset: u64 = refused
        .header("x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("reset");
    // Whole seconds until 00:00 UTC at the moment Envoy answered (a second
    // may tick over between the request and the response).
    assert!(
        (after..=before).contains(&reset),
        "until 00:00 UTC: {reset}, expected {after}..={before}"
    );
}

#[test]
fn counters_expire_with_their_window() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([{"name": "per-ip", "key": "client_ip", "limit": 50, "window": "1s"}]);
    let envoys = fleet(
        1,
        &[throttling(rules, json!({"failure_mode": "deny"}))],
        &upstream,
        &store,
    );
    let baseline = store.db_size();
    for _ in 0..5 {
        assert_eq!(get(&envoys[0], "/", &[]).status, 200);
    }
    assert!(!store.keys("gw:q:per-ip:*").is_empty());
    // The window (1 s) and the grace (1 s) later, Redis has forgotten them
    // (KEYS leaves out expired keys; DBSIZE may still count a few until
    // Redis's expiry cycle has reclaimed them).
    thread::sleep(Duration::from_millis(2_200));
    assert!(store.keys("gw:q:per-ip:*").is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.db_size() > baseline && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(store.db_size(), baseline);
}

#[test]
fn redis_down_applies_each_failure_mode_and_the_fleet_is_exact_again_when_it_is_back() {
    let mut store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rule = |name: &str| json!([{"name": name, "limit": 4, "window": "1h"}]);
    let deny = envoy(
        &[throttling(rule("deny"), json!({"failure_mode": "deny"}))],
        &upstream,
        store.webdis_port(),
    );
    let allow = envoy(
        &[throttling(rule("allow"), json!({"failure_mode": "allow"}))],
        &upstream,
        store.webdis_port(),
    );
    let local = envoy(
        &[throttling(
            rule("local"),
            json!({"failure_mode": "local", "replicas": 2}),
        )],
        &upstream,
        store.webdis_port(),
    );
    store.stop_redis();
    let denied: Vec<Response> = (0..3).map(|_| get(&deny, "/", &[])).collect();
    assert!(denied
        .iter()
        .all(|r| r.status == 503 && r.header("x-ca-error-code") == Some("A503TU")));
    assert!((0..6).all(|_| get(&allow, "/", &[]).status == 200));
    // `local`: this Envoy's counters, with the fleet limit of 4 split over 2 replicas.
    let local_statuses: Vec<u16> = (0..4).map(|_| get(&local, "/", &[]).status).collect();
    assert_eq!(local_statuses, [200, 200, 429, 429]);
    assert_eq!(down_failures(&deny, "throttling"), 3);
    assert_eq!(stat(&deny, "throttling", "fleet.failure_mode.deny"), 3);
    assert_eq!(stat(&allow, "throttling", "fleet.failure_mode.allow"), 6);
    assert_eq!(stat(&local, "throttling", "fleet.failure_mode.local"), 4);
    // Logged at once, then at most every 10 s by each worker: not per request.
    assert!(logged_down(&deny, "throttling"), "{}", deny.log());
    let lines = deny.log().matches("fleet store failing").count();
    assert!((1..=WORKERS as usize).contains(&lines), "{lines} lines");
    // Back: counted in Redis again, exactly.
    store.start_redis();
    reconnected(&[&deny]);
    let back: Vec<u16> = (0..6).map(|_| get(&deny, "/", &[]).status).collect();
    assert_eq!(back, [200, 200, 200, 200, 429, 429]);
    assert_eq!(stat(&deny, "throttling", "fleet.answered"), 6);
}

#[test]
fn sign_auth_falls_back_to_each_envoys_own_nonces_when_redis_is_down() {
    let mut store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoys = fleet(2, &[sign_auth("local")], &upstream, &store);
    store.stop_redis();
    let request = signed("/a");
    assert_eq!(get(&envoys[0], "/a", &pairs(&request)).status, 200);
    assert_eq!(
        get(&envoys[0], "/a", &pairs(&request)).status,
        400,
        "replay on the same Envoy"
    );
    // What `local` cannot see: the other Envoy's nonces (README, "Fleets").
    assert_eq!(get(&envoys[1], "/a", &pairs(&request)).status, 200);
    store.start_redis();
    reconnected(&[&envoys[0], &envoys[1]]);
    let request = signed("/b");
    assert_eq!(get(&envoys[0], "/b", &pairs(&request)).status, 200);
    assert_eq!(
        get(&envoys[1], "/b", &pairs(&request)).status,
        400,
        "fleet-wide again"
    );
}

/// A store that answers every call with `answer` after `delay`.
struct FakeStore {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl FakeStore {
    fn start(answer: &'static [u8], delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let mut buffer = [0u8; 8192];
                            while stream.read(&mut buffer).is_ok_and(|n| n > 0) {
                                thread::sleep(delay);
                                if stream.write_all(answer).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for FakeStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_slow_or_garbled_store_is_a_failure_not_a_hang() {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([{"name": "all", "limit": 100, "window": "1h"}]);
    let webdis_cases: [(&[u8], Duration, &str); 3] = [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{\"EVALSHA",
            Duration::ZERO,
            "bad_reply",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{\"EVALSHA\":[1,2,3,4]}",
            Duration::ZERO,
            "bad_reply",
        ),
        // Envoy answers a call that timed out with its own 504.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
            Duration::from_millis(1500),
            "status",
        ),
    ];
    // Redis's own protocol, on the native module's connection (no AUTH).
    let redis_cases: [(&[u8], Duration, &str); 4] = [
        (
            b"*4\r\n$5\r\nother\r\n:1\r\n:0\r\n:0\r\n",
            Duration::ZERO,
            "bad_reply",
        ),
        (b"*2\r\n:1\r\n:2\r\n", Duration::ZERO, "bad_reply"),
        (b"-ERR boom\r\n", Duration::ZERO, "error"),
        (b"+OK\r\n", Duration::from_millis(1500), "no_answer"),
    ];
    let cases = if direct() {
        &redis_cases[..]
    } else {
        &webdis_cases[..]
    };
    for &(answer, delay, reason) in cases {
        let fake = FakeStore::start(answer, delay);
        let mut fleet_settings = json!({"failure_mode": "deny"});
        fleet_settings["store"] = if direct() {
            json!({"redis": {"address": format!("127.0.0.1:{}", fake.port)}, "timeout_ms": 100})
        } else {
            json!({"cluster": STORE_CLUSTER, "timeout_ms": 100})
        };
        let filter = WasmFilter::json(
            "throttling",
            &json!({"rules": rules, "fleet": fleet_settings}),
        );
        let envoy = envoy(&[filter], &upstream, fake.port);
        let response = get(&envoy, "/", &[]);
        assert_eq!(response.status, 503, "{reason}");
        assert_eq!(response.header("x-ca-error-code"), Some("A503TU"));
        assert_eq!(
            stat(&envoy, "throttling", &format!("fleet.failure.{reason}")),
            1,
            "{reason}"
        );
    }
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn a_flushed_script_cache_is_loaded_again() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([{"name": "all", "limit": 3, "window": "1h"}]);
    let envoys = fleet(
        1,
        &[throttling(rules, json!({"failure_mode": "deny"}))],
        &upstream,
        &store,
    );
    assert_eq!(get(&envoys[0], "/", &[]).status, 200);
    assert_eq!(
        store.command(&["SCRIPT", "FLUSH"]),
        Reply::Status("OK".into())
    );
    assert_eq!(get(&envoys[0], "/", &[]).status, 200);
    assert_eq!(get(&envoys[0], "/", &[]).status, 200);
    assert_eq!(get(&envoys[0], "/", &[]).status, 429);
    assert_eq!(stat(&envoys[0], "throttling", "fleet.answered"), 4);
}

/// The script's Rust model (the native tests' store) against the script
/// itself in Redis: the same calls give the same answers.
#[test]
fn the_script_in_redis_answers_as_its_model() {
    const BIG: u64 = (1 << 40) - 3;
    let store = start_store();
    let url = format!("http://127.0.0.1:{}/", store.webdis_port());
    let mut model = ScriptModel::new();
    let quota = |key: &str, limit: u32, sliding: bool, dry_run: bool| QuotaCheck {
        key: format!("m:{key}:2"),
        previous_key: sliding.then(|| format!("m:{key}:1")),
        limit,
        window_weight: if sliding { 10_000 } else { 1 },
        previous_weight: if sliding { 2_500 } else { 0 },
        ttl_ms: 60_000,
        dry_run,
        lease: None,
    };
    // A lease of up to 4 units, at most half of what is left.
    let leased = |key: &str, limit: u32| QuotaCheck {
        lease: Some(LeaseAsk {
            units: 4,
            holders: 2,
        }),
        ..quota(key, limit, false, false)
    };
    // Records start at version 1 here, except `big`, which starts where a
    // random first version may (written as text by the script, exactly).
    let record = |key: &str, version: u64, write: bool| {
        Op::Record(RecordSwap {
            key: key.into(),
            version,
            value: write.then(|| format!("{key}@{version}")),
            ttl_ms: 60_000,
            first_version: if key.ends_with("big") { BIG } else { 1 },
        })
    };
    // Seed a previous sliding window in both.
    let seed = [Op::Quotas(vec![QuotaCheck {
        key: "m:s:1".into(),
        ..quota("x", 100, false, false)
    }])];
    let calls: Vec<Vec<Op>> = (0..6)
        .map(|_| seed.to_vec())
        .chain((0..14).map(|i| {
            vec![
                Op::Nonce {
                    key: format!("m:n:{}", i % 4),
                    ttl_ms: 60_000,
                },
                Op::Quotas(vec![
                    quota("a", 5, false, false),
                    quota("s", 6, true, false),
                    quota("d", 2, false, true),
                ]),
                Op::Quotas(vec![quota("b", 7, false, false)]),
                record("m:r:late", i / 2, i % 3 != 0),
                Op::Quotas(vec![leased("l", 23), quota("l2", 40, false, false)]),
            ]
        }))
        // Records alone: written while the version sent is the stored one,
        // read (with the stored value when it moved on) otherwise.
        .chain((0..8).map(|i| {
            vec![
                record("m:r:a", i / 2, i % 4 != 1),
                record("m:r:b", [0, 1, 1, 5, 2, 2, 3, 0][i as usize], true),
                record(
                    "m:r:big",
                    [0, BIG, BIG + 1, BIG, BIG + 2, 7, BIG + 3, 0][i as usize],
                    i != 5,
                ),
            ]
        }))
        .collect();
    for (i, ops) in calls.iter().enumerate() {
        let args = Arguments::new(ops, i as u64);
        // The first call loads the script, the others run it by its SHA-1.
        let body = if i == 0 {
            args.with_script()
        } else {
            args.by_sha()
        };
        let response = http::post(&url, &[], &body).expect("webdis");
        let expected = ops.iter().map(Op::results).sum();
        let answer = parse_reply(
            Some(u32::from(response.status)),
            &response.body,
            args.id(),
            expected,
        )
        .unwrap_or_else(|e| panic!("call {i}: {e}: {}", response.text()));
        assert_eq!(answer, model.run(ops), "call {i}");
    }
}

#[test]
fn a_request_refused_after_sign_auth_still_uses_up_its_nonce() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let acl = WasmFilter::json(
        "ip_acl",
        &json!({"rules": [{"name": "admin", "match": {"path": {"prefix": "/admin"}}, "allow": ["10.0.0.0/8"]}]}),
    );
    let envoys = fleet(2, &[sign_auth("deny"), acl], &upstream, &store);
    let request = signed("/admin/users");
    // As in the chain of single filters: sign-auth recorded the nonce
    // before ip-acl refused the request, so its replay is a replay.
    let first = get(&envoys[0], "/admin/users", &pairs(&request));
    assert_eq!(
        (first.status, first.header("x-ca-error-code")),
        (403, Some("A403IP"))
    );
    assert_eq!(store.keys("gw:n:*").len(), 1);
    let replay = get(&envoys[1], "/admin/users", &pairs(&request));
    assert_eq!(
        (replay.status, replay.header("x-ca-error-code")),
        (400, Some("A400IN"))
    );
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn a_signed_form_body_is_checked_once_across_the_fleet() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([{"name": "orders", "key": "app", "limit": 10, "window": "1h"}]);
    let filters = [
        sign_auth("deny"),
        throttling(rules, json!({"failure_mode": "deny"})),
    ];
    let envoys = fleet(2, &filters, &upstream, &store);
    let form = "qty=2&item=book";
    let headers = vec![
        ("accept".to_string(), "application/json".to_string()),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
    ];
    let signed = signed_headers(APP.0, APP.1, "POST", "/orders", &headers, Some(form));
    let send = |envoy: &Envoy| {
        http::post(&envoy.url("/orders"), &pairs(&signed), form.as_bytes()).expect("response")
    };
    let first = send(&envoys[0]);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-ratelimit-remaining"), Some("9"));
    assert_eq!(send(&envoys[1]).status, 400);
    let received = upstream.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].body,
        form.as_bytes(),
        "the body reached the upstream whole"
    );
}

#[test]
fn a_request_the_fleet_refuses_never_reaches_the_policies_after_it() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rules = json!([{"name": "all", "limit": 2, "window": "1h"}]);
    let breaker = WasmFilter::json(
        "circuit_breaker",
        &json!({"rules": [{"name": "api", "trip": {"consecutive_failures": 100}}]}),
    );
    let filters = [
        sign_auth("deny"),
        throttling(rules, json!({"failure_mode": "deny"})),
        breaker,
    ];
    let envoys = fleet(2, &filters, &upstream, &store);
    let statuses: Vec<u16> = (0..4)
        .map(|i| {
            let request = signed("/a");
            get(&envoys[i % 2], "/a", &pairs(&request)).status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429]);
    // As in the chain: the breaker saw the two admitted calls only.
    let breaker_calls: u64 = envoys
        .iter()
        .map(|e| {
            stat(e, "circuit_breaker", "api.calls.success")
                + stat(e, "circuit_breaker", "api.calls.failure")
        })
        .sum();
    assert_eq!(breaker_calls, 2);
    assert_eq!(upstream.request_count(), 2);
}

#[test]
fn a_store_cluster_envoy_does_not_know_is_a_counted_failure() {
    if direct() {
        // No cluster: a Redis that cannot be reached is tested in fleet_direct.rs.
        return;
    }
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let mut settings = json!({"failure_mode": "deny"});
    settings["store"] = json!({"cluster": "no_such_cluster"});
    let filter = WasmFilter::json(
        "throttling",
        &json!({"rules": [{"name": "all", "limit": 5, "window": "1h"}], "fleet": settings}),
    );
    let envoy = Envoy::start_with(&gateway_config(&[filter], &[upstream.port()]), WORKERS)
        .unwrap_or_else(|e| panic!("{e}"));
    let response = get(&envoy, "/", &[]);
    assert_eq!(response.status, 503);
    assert_eq!(response.header("x-ca-error-code"), Some("A503TU"));
    assert_eq!(stat(&envoy, "throttling", "fleet.failure.dispatch"), 1);
    assert!(envoy
        .log()
        .contains("fleet store failing (the call to the store could not be made)"));
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn a_signed_form_body_waits_for_the_store_with_sign_auth_alone() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let envoys = fleet(2, &[sign_auth("deny")], &upstream, &store);
    let form = "qty=1";
    let headers = vec![
        ("accept".to_string(), "application/json".to_string()),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
    ];
    let signed = signed_headers(APP.0, APP.1, "POST", "/pay", &headers, Some(form));
    let send = |envoy: &Envoy| {
        http::post(&envoy.url("/pay"), &pairs(&signed), form.as_bytes()).expect("response")
    };
    let first = send(&envoys[0]);
    assert_eq!(first.status, 200, "{}", first.text());
    let replay = send(&envoys[1]);
    assert_eq!(
        (replay.status, replay.header("x-ca-error-code")),
        (400, Some("A400IN"))
    );
    assert_eq!(
        upstream.request_count(),
        1,
        "the replay never reached the upstream"
    );
}

fn breaker(rule: Value, fleet: Value) -> WasmFilter {
    let mut fleet = fleet;
    if fleet.get("store").is_none() {
        fleet["store"] = store();
    }
    WasmFilter::json("circuit_breaker", &json!({"rules": [rule], "fleet": fleet}))
}

/// Whether `check` holds within `within`, polled every 20 ms.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The `state` gauge of the breaker `api` (0 closed, 1 open, 2 half-open).
fn breaker_state(envoy: &Envoy) -> u64 {
    stat(envoy, "circuit_breaker", "api.state")
}

/// A circuit-breaker counter summed over the fleet.
fn breaker_total(envoys: &[Envoy], name: &str) -> u64 {
    envoys
        .iter()
        .map(|e| stat(e, "circuit_breaker", name))
        .sum()
}

#[test]
fn fleet_breakers_open_together_and_half_open_admits_exactly_the_probes_fleet_wide() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rule = json!({
        "name": "api",
        "trip": {"consecutive_failures": 4},
        "open": {"duration_ms": 1500},
        "half_open": {"probes": 3, "timeout_ms": 20000}
    });
    let envoys = fleet(
        3,
        &[breaker(rule, json!({"sync_ms": 50}))],
        &upstream,
        &store,
    );
    // Four failures in a row for the fleet, no more than two on any Envoy:
    // a breaker per Envoy would never trip.
    upstream.set_forced_status(Some(500));
    for envoy in [&envoys[0], &envoys[1], &envoys[2], &envoys[0]] {
        assert_eq!(get(envoy, "/", &[]).status, 500);
    }
    assert!(
        eventually(Duration::from_secs(5), || envoys
            .iter()
            .all(|e| breaker_state(e) == 1)),
        "every Envoy sees the breaker open: {:?}",
        envoys.iter().map(breaker_state).collect::<Vec<_>>()
    );
    for envoy in &envoys {
        let refused = get(envoy, "/", &[]);
        assert_eq!(refused.status, 503);
        assert_eq!(refused.header("x-ca-error-code"), Some("A503CB"));
    }
    assert_eq!(upstream.request_count(), 4);
    assert_eq!(store.keys("gw:b:api:*").len(), 1);
    let opened = breaker_total(&envoys, "api.transitions.open");
    assert_eq!(opened, 3, "each Envoy counts the opening once");

    // Half-open: waves of slow calls over the fleet while the probes keep
    // their slots. Claims that lose the race for the record are refused, so
    // one wave may take fewer than three; the waves together take exactly
    // three, and no more reach the upstream.
    upstream.set_forced_status(None);
    thread::sleep(Duration::from_millis(1700));
    let slow = [("x-echo-delay-ms".to_string(), "4000".to_string())];
    let responses: Vec<Response> = thread::scope(|scope| {
        let waves: Vec<_> = (0..3)
            .map(|wave| {
                let slow = &slow;
                let envoys = &envoys;
                scope.spawn(move || {
                    thread::sleep(Duration::from_millis(300 * wave));
                    storm(envoys, 6, slow, "/")
                })
            })
            .collect();
        waves
            .into_iter()
            .flat_map(|w| w.join().expect("wave"))
            .collect()
    });
    assert_eq!(count(&responses, 200), 3, "{:?}", statuses(&responses));
    assert_eq!(count(&responses, 503), 51, "{:?}", statuses(&responses));
    assert_eq!(upstream.request_count(), 4 + 3);
    let probes = breaker_total(&envoys, "api.probes");
    assert_eq!(probes, 3);
    // Their success closes the breaker for the whole fleet.
    assert!(
        eventually(Duration::from_secs(5), || envoys
            .iter()
            .all(|e| breaker_state(e) == 0)),
        "every Envoy sees the breaker closed: {:?}",
        envoys.iter().map(breaker_state).collect::<Vec<_>>()
    );
    // The gauge is the Envoy's; each of its workers learns the closing at
    // its own next sync, so a call may still meet an open breaker for a
    // sync period or two.
    for envoy in &envoys {
        let mut last = None;
        let admitted = eventually(Duration::from_secs(2), || {
            let response = get(envoy, "/", &[]);
            let ok = response.status == 200;
            last = Some(response);
            ok
        });
        let last = last.expect("a response");
        assert!(admitted, "{:?} {}", last.headers, last.text());
    }
    // Every Envoy logs the closing: the one whose probe report closed it
    // with the probes, or each one as read from the store when its sync
    // saw the closing before that report's answer (the store's script
    // decides, so which comes first is a race).
    for envoy in &envoys {
        let log = envoy.log();
        assert!(
            log.contains(
                "circuit_breaker: api (fleet): half-open -> closed: 3 probe calls succeeded"
            ) || log.contains(
                "circuit_breaker: api (fleet): half-open -> closed: read from the fleet store"
            ),
            "{log}"
        );
    }
}

#[test]
fn a_fleet_breaker_applies_its_failure_mode_while_redis_is_down_and_shares_again_after() {
    let mut store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rule =
        json!({"name": "api", "trip": {"consecutive_failures": 2}, "open": {"duration_ms": 60000}});
    // A short timeout: the views are stale 4 × 50 + 200 ms after the last call answered.
    let fleet_with = |mode: &str| {
        json!({"sync_ms": 50, "failure_mode": mode,
               "store": store_with(200)})
    };
    let deny = envoy(
        &[breaker(rule.clone(), fleet_with("deny"))],
        &upstream,
        store.webdis_port(),
    );
    let local = envoy(
        &[breaker(rule.clone(), fleet_with("local"))],
        &upstream,
        store.webdis_port(),
    );
    let allow = envoy(
        &[breaker(rule, fleet_with("allow"))],
        &upstream,
        store.webdis_port(),
    );
    assert_eq!(get(&deny, "/", &[]).status, 200);
    store.stop_redis();
    assert!(
        eventually(Duration::from_secs(5), || get(&deny, "/", &[]).status
            == 503),
        "deny: the degraded answer once the view is stale"
    );
    assert!(stat(&deny, "circuit_breaker", "fleet.failure_mode.deny") > 0);
    assert!(down_failures(&deny, "circuit_breaker") > 0);
    assert!(logged_down(&deny, "circuit_breaker"), "{}", deny.log());
    // local: this Envoy's own breaker trips on its own two failures.
    thread::sleep(Duration::from_millis(400));
    upstream.set_forced_status(Some(500));
    let local_statuses: Vec<u16> = (0..3).map(|_| get(&local, "/", &[]).status).collect();
    assert_eq!(local_statuses, [500, 500, 503]);
    assert!(stat(&local, "circuit_breaker", "fleet.failure_mode.local") >= 3);
    // allow: every call goes through, unprotected.
    let allowed: Vec<u16> = (0..3).map(|_| get(&allow, "/", &[]).status).collect();
    assert_eq!(allowed, [500, 500, 500]);
    assert_eq!(
        stat(&allow, "circuit_breaker", "fleet.failure_mode.allow"),
        3
    );
    // Back: the outcomes the Envoys kept meanwhile reach the fleet's
    // record, whose opening the deny Envoy, which saw no failure, follows.
    upstream.set_forced_status(None);
    store.start_redis();
    assert!(
        eventually(Duration::from_secs(5), || breaker_state(&deny) == 1),
        "the failures seen during the outage open the fleet breaker"
    );
    assert!(stat(&deny, "circuit_breaker", "fleet.answered") > 0);
    let before = upstream.request_count();
    assert_eq!(get(&deny, "/", &[]).status, 503);
    assert_eq!(upstream.request_count(), before);
}

#[test]
fn a_replayed_request_never_takes_a_probe_of_the_fleet_breaker() {
    let store = start_store();
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let rule = json!({
        "name": "api",
        "trip": {"consecutive_failures": 1},
        "open": {"duration_ms": 1000},
        "half_open": {"probes": 1, "timeout_ms": 20000}
    });
    let filters = [sign_auth("deny"), breaker(rule, json!({"sync_ms": 50}))];
    let envoys = fleet(2, &filters, &upstream, &store);
    upstream.set_forced_status(Some(500));
    let used = signed("/");
    assert_eq!(get(&envoys[0], "/", &pairs(&used)).status, 500);
    assert!(eventually(Duration::from_secs(5), || envoys
        .iter()
        .all(|e| breaker_state(e) == 1)));
    upstream.set_forced_status(None);
    thread::sleep(Duration::from_millis(1200));
    // In the module the replay's nonce and the breaker's claim travel in
    // one call: the script stops at the replayed nonce, as the chain does.
    let replay = get(&envoys[1], "/", &pairs(&used));
    assert_eq!(
        (replay.status, replay.header("x-ca-error-code")),
        (400, Some("A400IN"))
    );
    let probe = get(&envoys[1], "/", &pairs(&signed("/")));
    assert_eq!(probe.status, 200);
    let probes = breaker_total(&envoys, "api.probes");
    assert_eq!(probes, 1);
    assert_eq!(upstream.request_count(), 2);
}
