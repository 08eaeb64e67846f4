use crate::compile_config;
use crate::entry::CachedResponse;
use crate::steps::{CacheSteps, CacheWorker, Metrics};
use crate::FILTER_NAME;
use gateway_common::host::{FakeHost, Host};
use gateway_common::identity::{self, Identity};
use gateway_common::slots::CacheKey;
use gateway_common::store::{MemoryStore, SharedStore};
use gateway_common::stream::{Effect, FakeStream, LocalReply, PolicySteps, Verdict};
use proptest::prelude::*;
use std::rc::Rc;
use std::time::Duration;

/// Items: every query parameter in the key, a minute; search: `q` and
/// `Accept-Language` only; mine: per app, credentials allowed; errors: 404s
/// kept too, cookies allowed.
const CONFIG: &str = r#"{
  "max_entries": 64,
  "max_entry_bytes": 512,
  "rules": [
    {"name": "items", "match": {"path": {"prefix": "/items"}}, "ttl_seconds": 60},
    {"name": "search", "match": {"path": {"exact": "/search"}}, "ttl_seconds": 60,
     "key": {"query": ["q"], "headers": ["Accept-Language"]}},
    {"name": "mine", "match": {"path": {"prefix": "/mine"}}, "ttl_seconds": 60,
     "key": {"app": true}, "cache_authorized": true},
    {"name": "errors", "match": {"path": {"prefix": "/errors"}}, "ttl_seconds": 5,
     "statuses": [200, 404], "cache_set_cookie": true}
  ]
}"#;

const T0: u64 = 1_700_000_000_000;

/// One worker's cache over one shared store, and the clock.
struct Cache {
    worker: Rc<CacheWorker>,
    store: Option<MemoryStore>,
    now_ms: u64,
    next_id: u32,
}

/// A request in flight: its steps and stream.
struct Call {
    steps: CacheSteps,
    stream: FakeStream,
    verdict: Verdict,
}

/// What an upstream answers.
struct Answer<'a> {
    status: u16,
    headers: &'a [(&'a str, &'a str)],
    body: &'a str,
}

fn ok(body: &str) -> Answer<'_> {
    Answer {
        status: 200,
        headers: &[("content-type", "application/json")],
        body,
    }
}

impl Cache {
    fn new(config: &str) -> Self {
        Self {
            worker: Rc::new(CacheWorker::new(
                compile_config(config.as_bytes()).expect("config"),
            )),
            store: Some(MemoryStore::new()),
            now_ms: T0,
            next_id: 0,
        }
    }

    /// Starts a request: its headers through the policy.
    fn start(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Call {
        self.start_as(None, method, path, headers)
    }

    /// [`Cache::start`] for a request authentication found `app` in.
    fn start_as(
        &mut self,
        app: Option<&str>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Call {
        let host = self.host(method, path, headers, &[]);
        if let Some(app) = app {
            identity::publish(
                &host,
                &Identity {
                    app_key: app.into(),
                    ..Identity::default()
                },
            );
        }
        self.start_on(host)
    }

    /// [`Cache::start`] with Envoy properties (`xds.route_name`…).
    fn start_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        properties: &[(&[&str], &str)],
    ) -> Call {
        let host = self.host(method, path, headers, properties);
        self.start_on(host)
    }

    fn host(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        properties: &[(&[&str], &str)],
    ) -> FakeHost {
        let authority = headers
            .iter()
            .find(|(name, _)| *name == ":authority")
            .map_or("shop", |(_, value)| value);
        let mut host = FakeHost::new()
            .with_header(":method", method)
            .with_header(":path", path)
            .with_header(":authority", authority);
        for (name, value) in headers.iter().filter(|(name, _)| *name != ":authority") {
            host = host.with_header(name, value);
        }
        for (path, value) in properties {
            host = host.with_property(path, value);
        }
        host.clock.set(Duration::from_millis(self.now_ms));
        host
    }

    /// The request's headers through the policy.
    fn start_on(&mut self, host: FakeHost) -> Call {
        let mut stream = FakeStream::new(host);
        self.next_id += 1;
        stream.id = self.next_id;
        stream.shared = self.store.take().expect("the store");
        let metrics = Metrics::define(&mut stream);
        let mut steps = CacheSteps::new(Rc::clone(&self.worker), metrics);
        let verdict = steps.on_request_headers(&mut stream, true);
        self.store = Some(std::mem::take(&mut stream.shared));
        Call {
            steps,
            stream,
            verdict,
        }
    }

    /// The upstream answers `call` (in one body callback, or none).
    fn answer(&mut self, call: &mut Call, answer: Answer<'_>) -> Vec<Verdict> {
        call.stream.shared = self.store.take().expect("the store");
        call.stream
            .host
            .clock
            .set(Duration::from_millis(self.now_ms));
        // The upstream's answer, unless the test says who answered.
        if call
            .stream
            .host
            .property(&["response", "code_details"])
            .is_none()
        {
            call.stream
                .host
                .set_property(&["response", "code_details"], b"via_upstream");
        }
        call.stream.response_headers =
            std::iter::once((":status".to_string(), answer.status.to_string()))
                .chain(
                    answer
                        .headers
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_string())),
                )
                .collect();
        let mut verdicts = vec![call
            .steps
            .on_response_headers(&mut call.stream, answer.body.is_empty())];
        if !answer.body.is_empty() {
            call.stream.response_body = answer.body.as_bytes().to_vec();
            let size = answer.body.len();
            verdicts.push(call.steps.on_response_body(&mut call.stream, size, true));
        }
        call.steps.on_stream_end(&mut call.stream);
        self.store = Some(std::mem::take(&mut call.stream.shared));
        verdicts
    }

    /// A request the upstream answers (when it gets to the upstream).
    fn call(&mut self, path: &str, answer: Answer<'_>) -> Call {
        self.call_with("GET", path, &[], answer)
    }

    fn call_with(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        answer: Answer<'_>,
    ) -> Call {
        let mut call = self.start(method, path, headers);
        if call.verdict == Verdict::Continue {
            self.answer(&mut call, answer);
        }
        call
    }

    /// Wakes a waiting request, as its host does.
    fn wake(&mut self, call: &mut Call) -> Verdict {
        call.stream.shared = self.store.take().expect("the store");
        let verdict = call.steps.on_wake(&mut call.stream);
        self.store = Some(std::mem::take(&mut call.stream.shared));
        verdict
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
    }
}

impl Call {
    fn hit(&self) -> Option<&LocalReply> {
        (self.verdict == Verdict::Answered)
            .then(|| self.stream.reply())
            .flatten()
    }

    fn counted(&self, name: &str) -> u64 {
        self.stream.counted(FILTER_NAME, name)
    }

    fn woke(&self) -> Vec<u32> {
        self.stream
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Wake(id) => Some(*id),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_miss_is_stored_and_the_next_request_is_answered_without_the_upstream() {
    let mut cache = Cache::new(CONFIG);
    let first = cache.call("/items/1?color=red", ok(r#"[1]"#));
    assert_eq!(first.verdict, Verdict::Continue);
    assert_eq!((first.counted("miss"), first.counted("store")), (1, 1));
    cache.advance(2_500);
    let second = cache.call("/items/1?color=red", ok("never asked"));
    let reply = second.hit().expect("a hit");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"[1]");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("age"), Some("2"));
    assert_eq!(reply.header("x-ca-caching"), Some("true"));
    assert_eq!(second.counted("hit"), 1);
}

#[test]
fn the_key_is_the_path_and_the_query_and_headers_the_rule_names() {
    let mut cache = Cache::new(CONFIG);
    cache.call("/items/1?a=1&b=2", ok("[1]"));
    // Every parameter counts, in any order.
    assert!(cache.call("/items/1?b=2&a=1", ok("x")).hit().is_some());
    assert!(cache.call("/items/1?a=1&b=3", ok("x")).hit().is_none());
    assert!(cache.call("/items/2?a=1&b=2", ok("x")).hit().is_none());
    // Search: only `q` and the language.
    let fr = [("accept-language", "fr")];
    cache.call_with("GET", "/search?q=shoes&page=1", &fr, ok("[fr]"));
    let hit = cache.call_with("GET", "/search?page=9&q=shoes&utm=x", &fr, ok("x"));
    assert_eq!(hit.hit().map(|r| r.body.clone()), Some(b"[fr]".to_vec()));
    let de = cache.call_with(
        "GET",
        "/search?q=shoes",
        &[("accept-language", "de")],
        ok("x"),
    );
    assert!(de.hit().is_none());
    // An absent parameter is not an empty one.
    cache.call_with("GET", "/search?q=", &fr, ok("[empty]"));
    assert!(cache
        .call_with("GET", "/search", &fr, ok("x"))
        .hit()
        .is_none());
}

#[test]
fn the_host_the_envoy_route_and_every_value_of_a_parameter_are_in_the_key() {
    let mut cache = Cache::new(CONFIG);
    cache.call_with("GET", "/items/1", &[(":authority", "a.example")], ok("[a]"));
    let other_host = cache.call_with("GET", "/items/1", &[(":authority", "b.example")], ok("x"));
    assert!(other_host.hit().is_none());
    // Envoy's route (a stage picks another): another key.
    let staged = |cache: &mut Cache| {
        let mut call = cache.start_with(
            "GET",
            "/items/9",
            &[],
            &[(&["xds", "route_name"][..], "items.stage.test")],
        );
        if call.verdict == Verdict::Continue {
            cache.answer(&mut call, ok("[test]"));
        }
        call
    };
    cache.call("/items/9", ok("[release]"));
    assert!(staged(&mut cache).hit().is_none());
    assert!(staged(&mut cache)
        .hit()
        .is_some_and(|r| r.body == b"[test]"));
    // Repeated parameters: every value, in order.
    cache.call("/items/2?id=1&id=2", ok("[2]"));
    assert!(cache.call("/items/2?id=1", ok("x")).hit().is_none());
    assert!(cache.call("/items/2?id=2&id=1", ok("x")).hit().is_none());
    cache.call_with("GET", "/search?q=a&q=b", &[], ok("[ab]"));
    assert!(cache
        .call_with("GET", "/search?q=a", &[], ok("x"))
        .hit()
        .is_none());
}

#[test]
fn a_request_with_a_body_a_range_or_an_identity_does_not_use_the_cache() {
    let mut cache = Cache::new(CONFIG);
    cache.call("/items/1", ok("[1]"));
    let mut with_body = cache.start("GET", "/items/1", &[]);
    with_body.stream.shared = cache.store.take().unwrap();
    assert_eq!(
        with_body
            .steps
            .on_request_headers(&mut with_body.stream, false),
        Verdict::Continue
    );
    assert_eq!(with_body.stream.counted(FILTER_NAME, "bypass"), 1);
    cache.store = Some(std::mem::take(&mut with_body.stream.shared));
    let range = cache.call_with("GET", "/items/1", &[("range", "bytes=0-1")], ok("x"));
    assert!(range.hit().is_none());
    // An app authentication found, on a rule without `key.app`.
    let app = cache.start_as(Some("203751"), "GET", "/items/1", &[]);
    assert!(app.hit().is_none());
    assert_eq!(app.counted("bypass"), 1);
}

#[test]
fn the_upstreams_age_counts_against_the_lifetime_and_shows_on_a_hit() {
    let mut cache = Cache::new(CONFIG);
    let aged = Answer {
        status: 200,
        headers: &[("cache-control", "max-age=10"), ("age", "4")],
        body: "[1]",
    };
    cache.call("/items/1", aged);
    let hit = cache.call("/items/1", ok("x"));
    assert_eq!(hit.hit().and_then(|r| r.header("age")), Some("4"));
    cache.advance(6_001);
    assert!(
        cache.call("/items/1", ok("x")).hit().is_none(),
        "10 s in all"
    );
    let stale = Answer {
        status: 200,
        headers: &[("cache-control", "max-age=10"), ("age", "10")],
        body: "[1]",
    };
    assert_eq!(cache.call("/items/2", stale).counted("not_stored"), 1);
}

#[test]
fn every_line_of_cache_control_and_vary_is_read() {
    let mut cache = Cache::new(CONFIG);
    let split = Answer {
        status: 200,
        headers: &[
            ("cache-control", "max-age=60"),
            ("cache-control", "private"),
        ],
        body: "[1]",
    };
    assert_eq!(cache.call("/items/1", split).counted("not_stored"), 1);
    let vary = Answer {
        status: 200,
        headers: &[("vary", "accept-language"), ("vary", "accept-encoding")],
        body: "[1]",
    };
    assert_eq!(cache.call("/search?q=x", vary).counted("not_stored"), 1);
}

#[test]
fn a_wake_that_is_not_its_own_changes_nothing() {
    let mut cache = Cache::new(CONFIG);
    let mut leader = cache.start("GET", "/items/1", &[]);
    let mut waiter = cache.start("GET", "/items/1", &[]);
    // The gateway module shows a wake to every policy of the request.
    assert_eq!(cache.wake(&mut leader), Verdict::Pause);
    cache.answer(&mut leader, ok("[1]"));
    assert_eq!(leader.woke(), [waiter.stream.id]);
    assert_eq!(cache.wake(&mut waiter), Verdict::Answered);
}

#[test]
fn each_app_has_answers_of_its_own() {
    let mut cache = Cache::new(CONFIG);
    let as_app = |cache: &mut Cache, app: &str, body: &str| {
        let mut call = cache.start_as(Some(app), "GET", "/mine", &[("authorization", "Basic x")]);
        if call.verdict == Verdict::Continue {
            cache.answer(&mut call, ok(body));
        }
        call
    };
    as_app(&mut cache, "203751", "[a]");
    let same = as_app(&mut cache, "203751", "x");
    assert_eq!(same.hit().map(|r| r.body.clone()), Some(b"[a]".to_vec()));
    let other = as_app(&mut cache, "204000", "[b]");
    assert!(other.hit().is_none());
}

#[test]
fn an_answer_expires_after_the_rules_ttl() {
    let mut cache = Cache::new(CONFIG);
    cache.call("/items/1", ok("[1]"));
    cache.advance(59_000);
    assert!(cache.call("/items/1", ok("x")).hit().is_some());
    cache.advance(1_001);
    let expired = cache.call("/items/1", ok("[2]"));
    assert!(expired.hit().is_none());
    assert!(cache
        .call("/items/1", ok("x"))
        .hit()
        .is_some_and(|r| r.body == b"[2]"));
}

#[test]
fn the_backends_cache_control_is_honoured() {
    for (cache_control, stored_for_ms) in [
        ("no-store", None),
        ("private, max-age=600", None),
        ("no-cache", None),
        ("max-age=0", None),
        ("max-age=oops", None),
        ("public, max-age=2", Some(2_000)),
        ("max-age=100, s-maxage=3", Some(3_000)),
        ("max-age=600", Some(60_000)),
        ("public", Some(60_000)),
    ] {
        let mut cache = Cache::new(CONFIG);
        let first = cache.call(
            "/items/1",
            Answer {
                status: 200,
                headers: &[("cache-control", cache_control)],
                body: "[1]",
            },
        );
        let Some(ms) = stored_for_ms else {
            assert_eq!(first.counted("not_stored"), 1, "{cache_control}");
            assert!(
                cache.call("/items/1", ok("x")).hit().is_none(),
                "{cache_control}"
            );
            continue;
        };
        cache.advance(ms - 1);
        assert!(
            cache.call("/items/1", ok("x")).hit().is_some(),
            "{cache_control}"
        );
        cache.advance(2);
        assert!(
            cache.call("/items/1", ok("x")).hit().is_none(),
            "{cache_control}"
        );
    }
}

#[test]
fn cookies_credentials_statuses_and_vary_keep_answers_out_unless_the_rule_allows() {
    let mut cache = Cache::new(CONFIG);
    let cookie = Answer {
        status: 200,
        headers: &[("set-cookie", "session=1")],
        body: "[1]",
    };
    assert_eq!(cache.call("/items/1", cookie).counted("not_stored"), 1);
    // The errors rule keeps cookies and 404s.
    let cookie = Answer {
        status: 404,
        headers: &[("set-cookie", "session=1")],
        body: "none",
    };
    assert_eq!(cache.call("/errors/1", cookie).counted("store"), 1);
    assert!(cache
        .call("/errors/1", ok("x"))
        .hit()
        .is_some_and(|r| r.status == 404));
    let not_found = Answer {
        status: 404,
        headers: &[],
        body: "none",
    };
    assert_eq!(cache.call("/items/9", not_found).counted("not_stored"), 1);
    // A request with credentials neither reads nor fills the cache.
    cache.call("/items/2", ok("[2]"));
    let signed = cache.call_with("GET", "/items/2", &[("authorization", "Basic x")], ok("x"));
    assert!(signed.hit().is_none());
    assert_eq!(signed.counted("bypass"), 1);
    let cookie = cache.call_with("GET", "/items/3", &[("cookie", "a=1")], ok("[3]"));
    assert_eq!(cookie.counted("store"), 0);
    // Vary on a header the key does not read; on `*`; on one it reads.
    for (path, vary, stored) in [
        ("/items/4", "Accept-Encoding", false),
        ("/items/5", "*", false),
        ("/search?q=a", "accept-language", true),
    ] {
        let answer = Answer {
            status: 200,
            headers: &[("vary", vary)],
            body: "[v]",
        };
        assert_eq!(
            cache.call(path, answer).counted("store") == 1,
            stored,
            "{vary}"
        );
    }
    // Not GET or HEAD: passed, not counted.
    let post = cache.call_with("POST", "/items/2", &[], ok("x"));
    assert!(post.hit().is_none());
    assert_eq!(post.counted("miss") + post.counted("bypass"), 0);
}

#[test]
fn an_answer_over_the_limit_passes_and_is_not_stored() {
    let mut cache = Cache::new(CONFIG);
    let big = "x".repeat(600);
    let declared = cache.call(
        "/items/1",
        Answer {
            status: 200,
            headers: &[("content-length", "600")],
            body: &big,
        },
    );
    assert_eq!(declared.counted("too_large"), 1);
    let streamed = cache.call("/items/2", ok(&big));
    assert_eq!(streamed.counted("too_large"), 1);
    assert!(cache.call("/items/2", ok("x")).hit().is_none());
}

#[test]
fn a_held_answer_is_read_whole_and_trailers_are_not_needed() {
    let mut cache = Cache::new(CONFIG);
    let mut call = cache.start("GET", "/items/1", &[]);
    call.stream.shared = cache.store.take().unwrap();
    call.stream.response_headers = vec![(":status".into(), "200".into())];
    call.stream
        .host
        .set_property(&["response", "code_details"], b"via_upstream");
    assert_eq!(
        call.steps.on_response_headers(&mut call.stream, false),
        Verdict::Continue
    );
    call.stream.response_body = b"[1,".to_vec();
    assert_eq!(
        call.steps.on_response_body(&mut call.stream, 3, false),
        Verdict::Pause
    );
    call.stream.response_body.extend_from_slice(b"2]");
    assert_eq!(
        call.steps.on_response_body(&mut call.stream, 5, true),
        Verdict::Continue
    );
    cache.store = Some(std::mem::take(&mut call.stream.shared));
    assert!(cache
        .call("/items/1", ok("x"))
        .hit()
        .is_some_and(|r| r.body == b"[1,2]"));
}

#[test]
fn concurrent_misses_wait_for_one_fetch_and_are_answered_from_it() {
    let mut cache = Cache::new(CONFIG);
    let mut leader = cache.start("GET", "/items/1", &[]);
    let mut waiter = cache.start("GET", "/items/1", &[]);
    let mut head = cache.start("HEAD", "/items/1", &[]);
    assert_eq!(leader.verdict, Verdict::Continue);
    assert_eq!(
        (waiter.verdict, head.verdict),
        (Verdict::Pause, Verdict::Pause)
    );
    assert_eq!(waiter.counted("coalesced"), 1);
    cache.answer(&mut leader, ok("[1]"));
    assert_eq!(leader.woke(), [waiter.stream.id, head.stream.id]);
    assert_eq!(cache.wake(&mut waiter), Verdict::Answered);
    assert_eq!(
        waiter.stream.reply().map(|r| r.body.clone()),
        Some(b"[1]".to_vec())
    );
    assert_eq!(cache.wake(&mut head), Verdict::Answered);
    // Envoy sends a HEAD's local reply without the body, with its length.
    let head_reply = head.stream.reply().expect("a reply");
    assert_eq!(head_reply.body, b"[1]");
    assert_eq!(head_reply.header("content-type"), Some("application/json"));
    // An answer that is not stored lets the waiters go to the upstream.
    let mut leader = cache.start("GET", "/items/2", &[]);
    let mut waiter = cache.start("GET", "/items/2", &[]);
    cache.answer(
        &mut leader,
        Answer {
            status: 500,
            headers: &[],
            body: "oops",
        },
    );
    assert_eq!(leader.woke(), [waiter.stream.id]);
    assert_eq!(cache.wake(&mut waiter), Verdict::Continue);
    // A leader that goes away does the same; a waiter that goes away is
    // forgotten.
    let mut leader = cache.start("GET", "/items/3", &[]);
    let mut gone = cache.start("GET", "/items/3", &[]);
    gone.steps.on_stream_end(&mut gone.stream);
    leader.steps.on_stream_end(&mut leader.stream);
    assert!(leader.woke().is_empty());
}

#[test]
fn a_head_request_is_answered_from_a_gets_entry_and_never_stored() {
    let mut cache = Cache::new(CONFIG);
    let head = cache.call_with("HEAD", "/items/1", &[], ok(""));
    assert_eq!(head.verdict, Verdict::Continue);
    assert_eq!(head.counted("store"), 0);
    cache.call("/items/1", ok("[1]"));
    let head = cache.call_with("HEAD", "/items/1", &[], ok(""));
    let reply = head.hit().expect("a hit");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body, b"[1]",
        "Envoy drops it for a HEAD, keeping its length"
    );
}

#[test]
fn a_new_generation_purges_what_was_stored() {
    let mut cache = Cache::new(CONFIG);
    cache.call("/items/1", ok("[1]"));
    let store = cache.store.take();
    let mut next = Cache::new(&CONFIG.replace(
        r#""max_entries": 64"#,
        r#""max_entries": 64, "generation": 2"#,
    ));
    next.store = store;
    assert!(next.call("/items/1", ok("[2]")).hit().is_none());
    assert!(next
        .call("/items/1", ok("x"))
        .hit()
        .is_some_and(|r| r.body == b"[2]"));
}

#[test]
fn a_later_policys_own_answer_is_not_stored() {
    let mut cache = Cache::new(CONFIG);
    let mut call = cache.start("GET", "/items/1", &[]);
    // Not the upstream's answer: the breaker's, a mock's, Envoy's own.
    call.stream
        .host
        .set_property(&["response", "code_details"], b"wasm_filter");
    cache.answer(&mut call, ok(r#"{"code":"A503CB"}"#));
    assert_eq!(call.counted("store"), 0);
    assert!(cache.call("/items/1", ok("[1]")).hit().is_none());
}

#[test]
fn memory_stays_bounded_under_100000_distinct_keys() {
    let policy = compile_config(CONFIG.replace("64", "1024").as_bytes()).expect("config");
    let store = MemoryStore::new();
    policy.table.initialize(&store).unwrap();
    let slots = store.key_count();
    assert_eq!(slots, 512);
    let answer = CachedResponse {
        status: 200,
        stored_at_ms: T0,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: vec![b'x'; 300],
    };
    let bytes = answer.encode();
    let mut evicted = 0;
    for n in 0..100_000u32 {
        let key = CacheKey::of(&[&n.to_le_bytes()]);
        if policy
            .table
            .store(&store, &key, &bytes, T0, T0 + 60_000)
            .unwrap()
            == gateway_common::slots::Stored::Evicted
        {
            evicted += 1;
        }
    }
    assert_eq!(store.key_count(), slots, "no key beyond the table's");
    let held: usize = (0..slots as u32)
        .map(|slot| {
            store
                .get(&format!("gw.response_cache.{slot}"))
                .unwrap()
                .0
                .map_or(0, |v| v.len())
        })
        .sum();
    assert!(
        held <= 1024 * 512,
        "{held} bytes for 1024 entries of at most 512"
    );
    assert!(evicted >= 100_000 - 1024);
}

#[test]
fn a_bad_configuration_names_the_field() {
    for (config, field, says) in [
        (
            r#"{"rules":[{"ttl_seconds":0}]}"#,
            "rules[0].ttl_seconds",
            "1 to 86400",
        ),
        (
            r#"{"rules":[{"ttl_seconds":90000}]}"#,
            "rules[0].ttl_seconds",
            "1 to 86400",
        ),
        (r#"{"rules":[{}]}"#, "rules[0]", "ttl_seconds"),
        (
            r#"{"rules":[{"ttl_seconds":1,"statuses":[]}]}"#,
            "rules[0].statuses",
            "at least one",
        ),
        (
            r#"{"rules":[{"ttl_seconds":1,"statuses":[200,99]}]}"#,
            "rules[0].statuses[1]",
            "200 to 599",
        ),
        (
            r#"{"rules":[{"ttl_seconds":1,"key":{"headers":["bad name"]}}]}"#,
            "rules[0].key.headers[0]",
            "not a header name",
        ),
        (r#"{"max_entries":0}"#, "max_entries", "1 to"),
        (
            r#"{"rules":[{"ttl_seconds":1,"statuses":[206]}]}"#,
            "rules[0].statuses[0]",
            "not 206 or 304",
        ),
        (
            r#"{"rules":[{"ttl_seconds":1,"cache_authorized":true}]}"#,
            "rules[0].cache_authorized",
            "key.app",
        ),
        (r#"{"max_entry_bytes":10}"#, "max_entry_bytes", "64 to"),
        (
            r#"{"rules":[{"ttl_seconds":1,"key":{"cookies":true}}]}"#,
            "cookies",
            "unknown field",
        ),
    ] {
        let err = compile_config(config.as_bytes())
            .expect_err(config)
            .to_string();
        assert!(err.contains(field) && err.contains(says), "{config}: {err}");
    }
}

proptest! {
    /// Whatever a client puts in the path, query and headers, a key is
    /// made and the request handled: hostile keys are just other keys.
    #[test]
    fn any_request_gets_a_key_and_an_answer(
        path in "/items[ -~]{0,200}",
        language in "[ -~]{0,64}",
    ) {
        let mut cache = Cache::new(CONFIG);
        let first = cache.call_with("GET", &path, &[("accept-language", &language)], ok("[1]"));
        prop_assert!(matches!(first.verdict, Verdict::Continue | Verdict::Answered));
        let second = cache.call_with("GET", &path, &[("accept-language", &language)], ok("[2]"));
        prop_assert!(second.hit().is_some());
    }
}
