//! sign-auth's JWT mode in a real Envoy with two workers: tokens of test
//! issuers (Ed25519), keys inline or fetched from a real JWKS server the
//! test starts (rotated, down, an unknown key id), what the echo upstream
//! received, a jti replay storm, hostile tokens.

use integration_tests::echo::{EchoServer, Reply};
use integration_tests::envoy::{add_cluster, gateway_config, Envoy, WasmFilter};
use integration_tests::http::{self, Response};
use integration_tests::tokens::{claims, jwks, now_s, KEY_1, KEY_2};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const ISS: &str = "https://idp.test";

fn config(issuer: Value) -> Value {
    json!({
        "apps": [
            {"key": "203751", "name": "web-app", "jwt": [{"issuer": "idp", "clients": ["web"]}]},
            {"key": "203752", "name": "batch", "jwt": [{"issuer": "idp", "clients": ["batch"]}]}
        ],
        "jwt": {"issuers": [issuer]},
        "modes": ["jwt"],
        "rules": [
            {"name": "orders", "match": {"path": {"prefix": "/orders"}}, "apps": ["203751"],
             "claims_to_headers": [{"claim": "sub", "header": "x-user"}, {"claim": "scope", "header": "x-scope"}]}
        ]
    })
}

fn inline_issuer() -> Value {
    json!({"name": "idp", "issuer": ISS, "audiences": ["gateway"], "jwks": jwks(&[KEY_1])})
}

struct Gateway {
    envoy: Envoy,
    upstream: EchoServer,
}

fn start(config: &Value, jwks_server: Option<&EchoServer>) -> Gateway {
    let upstream = EchoServer::start("echo").expect("echo upstream");
    let mut envoy_config =
        gateway_config(&[WasmFilter::json("sign_auth", config)], &[upstream.port()]);
    if let Some(server) = jwks_server {
        add_cluster(&mut envoy_config, "idp", server.port());
    }
    let envoy = Envoy::start_with(&envoy_config, 2).unwrap_or_else(|e| panic!("{e}"));
    Gateway { envoy, upstream }
}

impl Gateway {
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http::get(&self.envoy.url(path), headers).expect("response")
    }

    fn bearer(&self, path: &str, token: &str) -> Response {
        self.get(path, &[("authorization", &format!("Bearer {token}"))])
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.gw.sign_auth.{name}"))
    }
}

fn web_token() -> String {
    KEY_1.sign(&claims(ISS, "web", "alice"))
}

#[test]
fn a_token_reaches_the_upstream_as_its_app_and_user_with_its_claims_and_without_itself() {
    let gw = start(&config(inline_issuer()), None);
    let mut token_claims = claims(ISS, "web", "alice");
    token_claims["scope"] = json!("orders:read");
    let token = KEY_1.sign(&token_claims);
    let response = gw.get(
        "/orders/7",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user", "mallory"),
        ],
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = response.json();
    assert_eq!(seen["headers"]["x-gw-app-key"], "203751");
    assert_eq!(seen["headers"]["x-gw-user"], "alice");
    assert_eq!(seen["headers"]["x-user"], "alice");
    assert_eq!(seen["headers"]["x-scope"], "orders:read");
    assert!(seen["headers"].get("authorization").is_none());
    // The second use of the token is a hit of the verified-token table.
    assert_eq!(gw.bearer("/orders/7", &token).status, 200);
    assert_eq!(gw.stat("jwt.cache_miss"), 1);
    assert_eq!(gw.stat("jwt.cache_hit"), 1);
}

#[test]
fn refused_tokens_never_reach_the_upstream() {
    let gw = start(&config(inline_issuer()), None);
    let with = |changes: Value| {
        let mut c = claims(ISS, "web", "alice");
        for (k, v) in changes.as_object().into_iter().flatten() {
            c[k] = v.clone();
        }
        KEY_1.sign(&c)
    };
    for (token, status, code) in [
        (with(json!({"exp": now_s() - 3600})), 401, "A401JE"),
        (with(json!({"aud": "elsewhere"})), 401, "A401JC"),
        (with(json!({"iss": "https://evil.test"})), 401, "A401JC"),
        (with(json!({"azp": "stranger"})), 401, "A401AK"),
        (with(json!({"azp": "batch"})), 403, "A403UA"),
        (KEY_2.sign(&claims(ISS, "web", "alice")), 401, "A401JK"),
    ] {
        let response = gw.bearer("/orders/1", &token);
        response.assert_error(status, code);
    }
    let bare = gw.get("/orders/1", &[]);
    bare.assert_error(401, "A401MC");
    assert_eq!(
        bare.header("www-authenticate"),
        Some("Bearer realm=\"gateway\"")
    );
    let forged = gw.bearer("/orders/1", &web_token().replace('.', ".x"));
    forged.assert_error(401, "A401JT");
    assert_eq!(
        forged.header("www-authenticate"),
        Some("Bearer realm=\"gateway\", error=\"invalid_token\"")
    );
    assert_eq!(gw.upstream.request_count(), 0);
}

#[test]
fn hostile_tokens_get_a_clean_401() {
    let gw = start(&config(inline_issuer()), None);
    let header = "eyJhbGciOiJFZERTQSIsImtpZCI6InRlc3QtMSJ9";
    let deep = base64_url(&format!("{}{}", "[".repeat(5000), "]".repeat(5000)));
    for token in [
        format!("{}.{}.{}", "a".repeat(15_000), "b".repeat(15_000), "c"),
        ".".repeat(10_000),
        "!!!.???.***".to_string(),
        format!("{header}.{deep}.c2ln"),
        format!(
            "{header}.{}.c2ln",
            base64_url(r#"{"azp":"web","exp":1e999}"#)
        ),
        format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none"}"#),
            base64_url(r#"{"azp":"web"}"#)
        ),
    ] {
        gw.bearer("/orders/1", &token).assert_error(401, "A401JT");
    }
    assert_eq!(gw.upstream.request_count(), 0);
    // Envoy itself still answers after all of it.
    assert_eq!(gw.bearer("/orders/1", &web_token()).status, 200);
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// A JWKS server whose answer the test sets.
struct KeyServer {
    server: EchoServer,
    answer: Arc<Mutex<(u16, String)>>,
}

impl KeyServer {
    fn start(keys: Value) -> Self {
        let answer = Arc::new(Mutex::new((200, keys.to_string())));
        let served = Arc::clone(&answer);
        let server = EchoServer::start_scripted("jwks", move |_| {
            let (status, body) = served.lock().map(|a| a.clone()).unwrap_or_default();
            Reply::new(status, body).header("content-type", "application/json")
        })
        .expect("JWKS server");
        Self { server, answer }
    }

    fn serve(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }
}

fn fetched_issuer() -> Value {
    json!({"name": "idp", "issuer": ISS, "audiences": ["gateway"],
           "jwks_uri": {"cluster": "idp", "path": "/.well-known/jwks.json", "timeout_ms": 500},
           "refresh_seconds": 10})
}

/// Calls until a token passes, for at most `within`.
fn passes_within(gw: &Gateway, token: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if gw.bearer("/orders/1", token).status == 200 {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn fetched_keys_arrive_rotate_on_an_unknown_kid_and_stay_while_the_server_is_down() {
    let keys = KeyServer::start(jwks(&[KEY_1]));
    let gw = start(&config(fetched_issuer()), Some(&keys.server));
    // Fetched at load: the first token passes within the first ticks.
    assert!(
        passes_within(&gw, &web_token(), Duration::from_secs(5)),
        "{}",
        gw.envoy.log()
    );
    assert!(gw.stat("jwt.jwks_fetched") >= 1);
    // The issuer rotates to KEY_2: a token of the new key names a kid the
    // gateway lacks, which makes the worker that got it fetch again at its
    // next tick (0.5 s) and leave the keys for the other workers, who take
    // them at theirs. So within a second or so every worker verifies with
    // the new key and no longer with the retired one.
    keys.serve(200, jwks(&[KEY_2]).to_string());
    let rotated = KEY_2.sign(&claims(ISS, "web", "alice"));
    gw.bearer("/orders/1", &rotated).assert_error(401, "A401JK");
    thread::sleep(Duration::from_secs(2));
    for _ in 0..10 {
        let passed = gw.bearer("/orders/1", &rotated);
        assert_eq!(passed.status, 200, "{}", passed.text());
        gw.bearer("/orders/1", &web_token())
            .assert_error(401, "A401JK");
    }
    // The server goes down: fetches fail, the keys stay.
    let fetches = keys.server.request_count();
    keys.serve(503, String::new());
    assert!(
        gw.envoy.wait_for(Duration::from_secs(15), |e| e
            .stat("wasmcustom.gw.sign_auth.jwt.jwks_failed")
            >= 1),
        "no failed refresh: {}",
        gw.envoy.log()
    );
    let fresh = KEY_2.sign(&claims(ISS, "web", "bob"));
    assert_eq!(gw.bearer("/orders/1", &fresh).status, 200);
    assert!(gw
        .envoy
        .log()
        .contains("fetching keys failed (answered 503); the keys there are stay"));
    // Unknown kids while the server is down ask again at most every 30 s.
    let stranger = KEY_1.sign(&claims(ISS, "web", "alice"));
    for _ in 0..20 {
        gw.bearer("/orders/1", &stranger)
            .assert_error(401, "A401JK");
    }
    let asked = keys.server.request_count() - fetches;
    assert!(asked <= 6, "{asked} fetches while down");
}

#[test]
fn a_jwks_server_that_never_answered_leaves_the_api_unavailable_not_open() {
    let keys = KeyServer::start(jwks(&[KEY_1]));
    keys.serve(500, String::new());
    let gw = start(&config(fetched_issuer()), Some(&keys.server));
    thread::sleep(Duration::from_millis(1500));
    gw.bearer("/orders/1", &web_token())
        .assert_error(503, "A503JK");
    assert_eq!(gw.upstream.request_count(), 0);
}

#[test]
fn a_replay_storm_of_one_token_is_accepted_exactly_once() {
    let mut issuer = inline_issuer();
    issuer["prevent_jti_replay"] = json!(true);
    let gw = start(&config(issuer), None);
    let token = web_token();
    let statuses: Vec<u16> = thread::scope(|scope| {
        let calls: Vec<_> = (0..24)
            .map(|_| scope.spawn(|| gw.bearer("/orders/1", &token).status))
            .collect();
        calls.into_iter().map(|c| c.join().expect("call")).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        23,
        "{statuses:?}"
    );
    assert_eq!(gw.upstream.request_count(), 1);
    // Another token of the same client is its own jti.
    assert_eq!(gw.bearer("/orders/1", &web_token()).status, 200);
}
