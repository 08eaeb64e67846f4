//! response-cache in a real Envoy (2 workers) in front of a scripted
//! backend that counts what it gets: hits answered without it, keys by
//! path, query and header, the backend's Cache-Control, a TTL running out,
//! HEAD after GET, concurrent misses coalesced, a 5 MB answer passed
//! whole, and the table under many more keys than it holds.

use integration_tests::echo::{EchoServer, ReceivedRequest, Reply};
use integration_tests::envoy::{gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use serde_json::json;
use std::time::Duration;

const WORKERS: u32 = 2;
const LARGE_BODY_BYTES: usize = 5 * 1024 * 1024;

/// The backend: a JSON answer naming the request's path and how many it
/// has answered; `/nostore` says `no-store`, `/short` `max-age=1`,
/// `/large` is 5 MB, `/slow` takes 300 ms.
fn backend(
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> impl Fn(&ReceivedRequest) -> Reply {
    move |request| {
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let body = format!(
            r#"{{"path":"{}","answer":{n}}}"#,
            request.uri.replace('"', "")
        );
        let reply = Reply::new(200, body).header("content-type", "application/json");
        match request.path.as_str() {
            "/items/nostore" => reply.header("cache-control", "no-store"),
            "/items/short" => reply.header("cache-control", "public, max-age=1"),
            "/items/large" => Reply::new(200, vec![b'x'; LARGE_BODY_BYTES]),
            "/items/slow" => reply.after(Duration::from_millis(300)),
            _ => reply,
        }
    }
}

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

fn gateway() -> Gateway {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let upstream = EchoServer::start_scripted("backend", backend(count)).expect("backend");
    let filters = [WasmFilter::json(
        "response_cache",
        &json!({
            "max_entries": 64,
            "rules": [{
                "name": "items",
                "match": {"path": {"prefix": "/items"}},
                "ttl_seconds": 60,
                "key": {"query": ["page"], "headers": ["accept-language"]}
            }]
        }),
    )];
    let envoy = Envoy::start_with(&gateway_config(&filters, &[upstream.port()]), WORKERS)
        .unwrap_or_else(|err| panic!("{err}"));
    Gateway { envoy, upstream }
}

impl Gateway {
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get(&self.envoy.url(path), headers).expect("response")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy
            .stat(&format!("wasmcustom.gw.response_cache.{name}"))
    }
}

fn assert_hit(response: &Response, of: &Response) {
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-ca-caching"), Some("true"));
    assert!(response.header("age").is_some());
    assert_eq!(response.body, of.body, "the stored answer");
    assert_eq!(response.header("content-type"), of.header("content-type"));
}

#[test]
fn a_second_request_is_answered_without_the_upstream_and_keys_tell_answers_apart() {
    let gw = gateway();
    let first = gw.get("/items/1?page=2", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ca-caching"), None);
    let second = gw.get("/items/1?page=2&utm_source=x", &[]);
    assert_hit(&second, &first);
    assert_eq!(gw.upstream.request_count(), 1);

    // Another page, another language, another path: misses.
    gw.get("/items/1?page=3", &[]);
    gw.get("/items/1?page=2", &[("accept-language", "fr")]);
    gw.get("/items/2?page=2", &[]);
    assert_eq!(gw.upstream.request_count(), 4);
    assert_eq!(
        (gw.stat("hit"), gw.stat("miss"), gw.stat("store")),
        (1, 4, 4)
    );

    // HEAD is answered from the GET's entry, without a body.
    let head = http::send(
        &http::agent(),
        "HEAD",
        &gw.envoy.url("/items/1?page=2"),
        &[],
        None,
    )
    .expect("response");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-ca-caching"), Some("true"));
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(first.body.len().to_string().as_str()),
        "the GET's length"
    );
    assert_eq!(gw.upstream.request_count(), 4);

    // Another method is not the cache's.
    let post = http::post(&gw.envoy.url("/items/1?page=2"), &[], b"{}").expect("response");
    assert_eq!(post.header("x-ca-caching"), None);
    assert_eq!(gw.upstream.request_count(), 5);
}

#[test]
fn the_backends_cache_control_and_the_ttl_decide_how_long() {
    let gw = gateway();
    gw.get("/items/nostore", &[]);
    gw.get("/items/nostore", &[]);
    assert_eq!(gw.upstream.request_count(), 2, "no-store: never kept");
    assert_eq!(gw.stat("not_stored"), 2);

    let first = gw.get("/items/short", &[]);
    assert_hit(&gw.get("/items/short", &[]), &first);
    assert_eq!(gw.upstream.request_count(), 3);
    std::thread::sleep(Duration::from_millis(1_100));
    let later = gw.get("/items/short", &[]);
    assert_eq!(later.header("x-ca-caching"), None, "max-age=1 ran out");
    assert_eq!(gw.upstream.request_count(), 4);
}

#[test]
fn concurrent_misses_of_one_key_make_one_upstream_call_per_worker() {
    let gw = gateway();
    let url = gw.envoy.url("/items/slow");
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| http::get(&url, &[]).expect("response")))
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().expect("a call"))
            .collect()
    });
    assert!(answers.iter().all(|a| a.status == 200));
    let calls = gw.upstream.request_count();
    assert!(
        (1..=WORKERS as usize).contains(&calls),
        "{calls} upstream calls for 8 concurrent misses on {WORKERS} workers"
    );
    // Every request not sent upstream was answered from the cache; every
    // miss but the fetches waited for one.
    assert_eq!(gw.stat("hit") + calls as u64, 8);
    assert_eq!(gw.stat("coalesced"), gw.stat("miss") - calls as u64);
}

#[test]
fn a_5_mb_answer_passes_whole_and_is_not_kept() {
    let gw = gateway();
    for _ in 0..2 {
        let large = gw.get("/items/large", &[]);
        assert_eq!(large.status, 200);
        assert_eq!(large.body.len(), LARGE_BODY_BYTES);
    }
    assert_eq!(gw.upstream.request_count(), 2);
    assert_eq!(gw.stat("too_large"), 2);
}

#[test]
fn many_more_keys_than_the_table_holds_are_all_answered_and_evicted() {
    let gw = gateway();
    for n in 0..600 {
        let response = gw.get(&format!("/items/{n}"), &[]);
        assert_eq!(response.status, 200, "key {n}");
    }
    assert_eq!(gw.stat("store"), 600);
    assert!(gw.stat("eviction") >= 600 - 64, "{}", gw.stat("eviction"));
    // The latest keys are still there.
    let again = gw.get("/items/599", &[]);
    assert_eq!(again.header("x-ca-caching"), Some("true"));
}
