//! `gatewayctl publish` and `rollback` on a running Envoy: a bootstrap from
//! `build --dynamic DIR` (the chain of single filters with no env, the
//! gateway module with GATEWAY_MODULE=1, the native module with
//! GATEWAY_NATIVE=1), started, and under continuous load from several
//! connections given new versions of its document: each change is seen
//! within 2 s, no request of the load fails, and the quota counts stay.

use gatewayctl::publish::{self, Publication, Signature};
use integration_tests::echo::EchoServer;
use integration_tests::envoy::{start_yaml, validate, Envoy};
use integration_tests::gatewayctl::{artifacts, host, load, test_document};
use integration_tests::http;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The document of the test: `hello` and `search` always, what `extra`
/// adds, the quota `few` at `limit`, `search`'s `q` at most `max_q` long.
fn document(backend: u16, limit: u32, max_q: u32, extra: &str) -> String {
    test_document(
        backend,
        &format!(
            "policies:
  - name: few
    quota: {{ key: client_ip, limit: {limit}, window: 1h }}
apis:
  - {{ name: hello, method: GET, path: /hello, backend: backend, auth: anonymous }}
  - name: search
    method: GET
    path: /search
    backend: backend
    auth: anonymous
    parameters: [ {{ name: q, in: query, required: true, max_length: {max_q} }} ]
  - {{ name: limited, method: GET, path: /limited, backend: backend, auth: anonymous, policies: [few] }}
{extra}"
        ),
    )
}

const BYE: &str = "  - { name: bye, method: GET, path: /bye, backend: backend, auth: anonymous }\n";

fn publish(dir: &Path, text: &str, message: &str) -> publish::Published {
    publish_to(dir, None, text, message)
}

/// [`publish`] to one stage (none: every stage).
fn publish_to(dir: &Path, stage: Option<&str>, text: &str, message: &str) -> publish::Published {
    let (source, generated) = load("apis.yaml", text);
    let publication = Publication {
        generated: &generated,
        source: &source,
        text,
        artifacts: &artifacts(),
        stage,
    };
    let signature = Signature {
        author: Some("test".into()),
        message: Some(message.into()),
    };
    publish::publish(dir, &publication, signature).unwrap_or_else(|e| panic!("{e}"))
}

/// Publishes `text` as the first version in `dir` and starts an Envoy
/// (two workers) reading it.
fn start_published(dir: &Path, text: &str) -> Envoy {
    publish(dir, text, "first");
    let bootstrap = gatewayctl::build_dynamic(
        &load("apis.yaml", text).1,
        "apis.yaml",
        host(),
        &dir.display().to_string(),
    );
    start_yaml(&bootstrap, 2)
}

fn status(envoy: &Envoy, path: &str) -> u16 {
    status_of_stage(envoy, None, path)
}

/// The status of a GET of `path` sent with `X-Ca-Stage: stage`.
fn status_of_stage(envoy: &Envoy, stage: Option<&str>, path: &str) -> u16 {
    let url = format!("http://127.0.0.1:{}{path}", envoy.listener_port("http"));
    let headers: Vec<(&str, &str)> = stage.map(|s| ("x-ca-stage", s)).into_iter().collect();
    http::get(&url, &headers).map_or(0, |response| response.status)
}

/// How long until `path` answers `expected` (panics after 2 s).
fn seen_within_2s(envoy: &Envoy, path: &str, expected: u16) -> Duration {
    let start = Instant::now();
    loop {
        if status(envoy, path) == expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{path} did not answer {expected} within 2 s: {}",
            envoy.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Requests on `connections` kept-alive connections until `stop`; every
/// answer that is not 200 (or no answer) is kept.
fn keep_calling(
    envoy: &Envoy,
    connections: usize,
    stop: &AtomicBool,
    failures: &Mutex<Vec<String>>,
) -> usize {
    let port = envoy.listener_port("http");
    thread::scope(|scope| {
        let workers: Vec<_> = (0..connections)
            .map(|i| {
                scope.spawn(move || {
                    let agent = http::agent();
                    let path = if i % 2 == 0 {
                        "/hello"
                    } else {
                        "/search?q=abc"
                    };
                    let url = format!("http://127.0.0.1:{port}{path}");
                    let mut sent = 0;
                    while !stop.load(Ordering::Relaxed) {
                        sent += 1;
                        match http::send(&agent, "GET", &url, &[], None) {
                            Ok(response) if response.status == 200 => {}
                            Ok(response) => failures.lock().unwrap().push(format!(
                                "{path}: {} {}",
                                response.status,
                                response.text()
                            )),
                            Err(err) => failures.lock().unwrap().push(format!("{path}: {err}")),
                        }
                    }
                    sent
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("load")).sum()
    })
}

#[test]
fn publishes_and_a_rollback_take_effect_under_load_without_a_failed_request() {
    let backend = EchoServer::start("backend").expect("echo");
    let port = backend.port();
    let dir = tempfile::tempdir().expect("dir");
    let dir_name = dir.path().display().to_string();

    let first = publish(dir.path(), &document(port, 5, 3, ""), "first");
    assert_eq!(first.version.version, 1);
    let (_, generated) = load("apis.yaml", &document(port, 5, 3, ""));
    let bootstrap = gatewayctl::build_dynamic(&generated, "apis.yaml", host(), &dir_name);
    let (ok, output) = validate(&bootstrap, "yaml");
    assert!(
        ok,
        "the dynamic bootstrap is refused:\n{output}\n{bootstrap}"
    );
    let envoy = start_yaml(&bootstrap, 2);
    assert_eq!(status(&envoy, "/hello"), 200, "{}", envoy.log());
    assert_eq!(status(&envoy, "/bye"), 404);
    for _ in 0..5 {
        assert_eq!(status(&envoy, "/limited"), 200);
    }
    assert_eq!(status(&envoy, "/limited"), 429);
    assert_eq!(status(&envoy, "/search?q=abcdef"), 400);

    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    let mut seen = Vec::new();
    let sent = thread::scope(|scope| {
        let load = scope.spawn(|| keep_calling(&envoy, 4, &stop, &failures));
        thread::sleep(Duration::from_millis(300));

        // A new API.
        publish(dir.path(), &document(port, 5, 3, BYE), "add bye");
        seen.push(("a new API", seen_within_2s(&envoy, "/bye", 200)));
        // A quota raised: the 5 calls counted stay counted, 3 more pass.
        publish(dir.path(), &document(port, 8, 3, BYE), "more quota");
        seen.push(("a quota", seen_within_2s(&envoy, "/limited", 200)));
        assert_eq!(status(&envoy, "/limited"), 200);
        assert_eq!(status(&envoy, "/limited"), 200);
        assert_eq!(
            status(&envoy, "/limited"),
            429,
            "the counts survive a publish"
        );
        // A policy's configuration: longer queries pass.
        publish(dir.path(), &document(port, 8, 10, BYE), "longer q");
        seen.push(("a policy", seen_within_2s(&envoy, "/search?q=abcdef", 200)));
        // An API removed.
        let removed = publish(dir.path(), &document(port, 8, 10, ""), "remove bye");
        assert_eq!(removed.version.changes, "apis -bye");
        seen.push(("an API removed", seen_within_2s(&envoy, "/bye", 404)));
        // Rolled back to the version before: bye is back.
        let rolled = publish::rollback(dir.path(), None, Signature::default()).expect("rollback");
        assert_eq!(rolled.version.rollback_of, Some(4));
        assert_eq!(rolled.version.changes, "apis +bye");
        seen.push(("a rollback", seen_within_2s(&envoy, "/bye", 200)));

        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        load.join().expect("load")
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during the publishes: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(sent > 100, "only {sent} requests under load");
    eprintln!("{sent} requests under load, none failed; seen after: {seen:?}");

    let (versions, current) = publish::history(dir.path()).expect("history");
    assert_eq!(current, Some(6));
    let changes: Vec<&str> = versions.iter().map(|v| v.changes.as_str()).collect();
    assert_eq!(
        changes,
        [
            "first version: 3 APIs",
            "apis +bye",
            "policies ~few",
            "apis ~search",
            "apis -bye",
            "apis +bye",
        ]
    );
}

#[test]
fn a_route_published_before_its_policies_reach_the_filters_needs_credentials() {
    let backend = EchoServer::start("backend").expect("echo");
    let dir = tempfile::tempdir().expect("dir");
    let document = |extra: &str| {
        test_document(
            backend.port(),
            &format!(
                "apps:
  - {{ key: \"203751\", name: web, secrets: [s1] }}
apis:
  - {{ name: hello, method: GET, path: /hello, backend: backend, auth: anonymous }}
  - {{ name: orders, method: GET, path: /orders, backend: backend, auth: app }}
{extra}"
            ),
        )
    };
    let envoy = start_published(dir.path(), &document(""));
    assert_eq!(status(&envoy, "/hello"), 200, "{}", envoy.log());
    assert_eq!(status(&envoy, "/orders"), 401);
    assert_eq!(status(&envoy, "/reports"), 404);

    // The moment of a swap when Envoy has the new route table and not yet
    // the new policies: the next version's routes alone.
    let next = document(
        "  - { name: reports, method: GET, path: /reports, backend: backend, auth: app }\n",
    );
    let resources = gatewayctl::envoy::dynamic_resources(&load("apis.yaml", &next).1, &artifacts());
    let (_, routes) = resources
        .iter()
        .find(|(file, _)| file == gatewayctl::envoy::ROUTES_FILE)
        .expect("routes");
    let current = dir.path().join("versions/000001");
    std::fs::write(current.join("routes.json.tmp"), routes.to_string()).expect("write");
    std::fs::rename(current.join("routes.json.tmp"), current.join("routes.json")).expect("move");
    // Envoy reads the directory again when an entry is moved into it.
    std::fs::write(dir.path().join(".touch.tmp"), "").expect("write");
    std::fs::rename(dir.path().join(".touch.tmp"), dir.path().join(".touch")).expect("move");
    let start = Instant::now();
    while status(&envoy, "/reports") == 404 {
        assert!(start.elapsed() < Duration::from_secs(2), "{}", envoy.log());
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        status(&envoy, "/reports"),
        401,
        "a route sign-auth does not know needs credentials"
    );
    assert_eq!(status(&envoy, "/hello"), 200);
    assert!(
        backend
            .requests()
            .iter()
            .all(|seen| seen.path != "/reports"),
        "the new API was reached unchecked"
    );
}

#[test]
fn an_open_breaker_stays_open_across_a_publish() {
    let backend = EchoServer::start("backend").expect("echo");
    let dir = tempfile::tempdir().expect("dir");
    let document = |extra: &str| {
        test_document(
            backend.port(),
            &format!(
                "policies:
  - name: fragile
    breaker:
      window: {{ duration_ms: 60000, buckets: 6 }}
      trip: {{ min_calls: 3, failure_rate_percent: 50 }}
      open: {{ duration_ms: 60000 }}
apis:
  - {{ name: flaky, method: GET, path: /flaky, backend: backend, auth: anonymous, policies: [fragile] }}
{extra}"
            ),
        )
    };
    let envoy = start_published(dir.path(), &document(""));
    let url = format!("http://127.0.0.1:{}/flaky", envoy.listener_port("http"));
    for _ in 0..4 {
        http::get(&url, &[("x-echo-status", "503")]).expect("answer");
    }
    let open = http::get(&url, &[]).expect("answer");
    assert_eq!(
        open.header("x-ca-error-code"),
        Some("A503CB"),
        "{}",
        envoy.log()
    );
    let calls = backend.request_count();

    publish(dir.path(), &document(BYE), "add bye");
    seen_within_2s(&envoy, "/bye", 200);
    for _ in 0..5 {
        let still = http::get(&url, &[]).expect("answer");
        assert_eq!(
            still.header("x-ca-error-code"),
            Some("A503CB"),
            "the breaker stays open"
        );
    }
    assert_eq!(
        backend.request_count(),
        calls + 1,
        "only /bye reached the backend"
    );
}

#[test]
fn a_stage_published_alone_changes_that_stage_and_leaves_the_others() {
    let backend = EchoServer::start("backend").expect("echo");
    let port = backend.port();
    let dir = tempfile::tempdir().expect("dir");
    let envoy = start_published(dir.path(), &document(port, 2, 3, ""));
    assert_eq!(status(&envoy, "/hello"), 200, "{}", envoy.log());

    // TEST gets a new API, a larger quota and longer queries.
    let test = document(port, 4, 10, BYE);
    let staged = publish_to(dir.path(), Some("TEST"), &test, "try bye");
    assert_eq!(
        staged.version.changes,
        "stage TEST: apis ~search +bye; policies ~few"
    );
    let test_stage = Some("test");
    let start = Instant::now();
    while status_of_stage(&envoy, test_stage, "/bye") != 200 {
        assert!(start.elapsed() < Duration::from_secs(2), "{}", envoy.log());
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status(&envoy, "/bye"), 404, "RELEASE has no bye");
    assert_eq!(status_of_stage(&envoy, Some("PRE"), "/bye"), 404);
    assert_eq!(status_of_stage(&envoy, test_stage, "/search?q=abcdef"), 200);
    assert_eq!(
        status(&envoy, "/search?q=abcdef"),
        400,
        "RELEASE keeps its limit"
    );
    // Each stage counts its own quota.
    for _ in 0..2 {
        assert_eq!(status(&envoy, "/limited"), 200);
    }
    assert_eq!(status(&envoy, "/limited"), 429);
    for _ in 0..4 {
        assert_eq!(status_of_stage(&envoy, test_stage, "/limited"), 200);
    }
    assert_eq!(status_of_stage(&envoy, test_stage, "/limited"), 429);
    let byes = backend
        .requests()
        .iter()
        .filter(|seen| seen.path == "/bye")
        .count();
    assert!(byes >= 1, "TEST's bye reached the backend");

    // The whole document to every stage: RELEASE has bye too now.
    let whole = publish(dir.path(), &test, "promote");
    assert_eq!(
        whole.version.changes,
        "apis ~search +bye; policies ~few; stage documents dropped: TEST"
    );
    seen_within_2s(&envoy, "/bye", 200);
    assert_eq!(status(&envoy, "/search?q=abcdef"), 200);
    // TEST is served by the base document again: one quota count for both
    // (RELEASE's 2 calls, and 2 more under the new limit of 4).
    assert_eq!(status_of_stage(&envoy, test_stage, "/limited"), 200);
    assert_eq!(status_of_stage(&envoy, test_stage, "/limited"), 200);
    assert_eq!(
        status(&envoy, "/limited"),
        429,
        "TEST's calls counted with RELEASE's"
    );
}
