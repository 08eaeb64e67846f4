//! policy-bench: one policy decision run N times natively, for exact
//! instruction counts under `valgrind --tool=callgrind`.
//!
//! ```text
//! policy-bench --configs DIR DECISION ITERATIONS
//! policy-bench --list
//! ```
//!
//! `DIR` holds each filter's JSON configuration as `<filter>.json`
//! (`sign_auth.json`, `ip_acl.json`…): `make bench` writes there the very
//! configurations its Envoy runs use. Every decision is prepared the same way
//! whatever `ITERATIONS` is (configurations compiled, [`PREPARED`] signed
//! requests made, shared-data tables created), so one decision costs exactly
//! `(Ir(N2) - Ir(N1)) / (N2 - N1)` instructions: the set-up cancels out.
//! Each iteration checks its outcome; a decision that does not come out as
//! expected (a refused signature, a throttled request) fails the run, so a
//! broken benchmark cannot report a cheap error path as the cost.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use gateway_common::config::parse_json;
use gateway_common::host::FakeHost;
use gateway_common::identity::APP_KEY_PROPERTY;
use gateway_common::matching::RequestAttrs;
use gateway_common::store::MemoryStore;
use serde::de::DeserializeOwned;

/// Requests prepared for every run; the most iterations a run may ask for.
pub const PREPARED: usize = 4096;

/// 2026-05-17T09:00:00Z: the clock of every prepared request.
const NOW_MS: u64 = 1_779_008_400_000;
const AUTHORITY: &str = "api.example.com";
const PEER: &str = "127.0.0.1:40000";

struct Decision {
    name: &'static str,
    about: &'static str,
    run: fn(&Configs, usize) -> Result<u64, String>,
}

const DECISIONS: &[Decision] = &[
    Decision {
        name: "sign_auth.verify",
        about: "HMAC-SHA256 signature check of one string to sign (GET /orders/42)",
        run: sign_auth_verify,
    },
    Decision {
        name: "sign_auth.begin",
        about: "whole header-phase decision of a signed GET /orders/42: headers read, string to sign, signature, app rule, nonce recorded in shared data",
        run: sign_auth_begin,
    },
    Decision {
        name: "ip_acl.check",
        about: "CIDR lookups of a resolved client (10.1.2.3 on /admin/stats): global deny list, rule allow list",
        run: ip_acl_check,
    },
    Decision {
        name: "ip_acl.evaluate",
        about: "whole decision: client address from the peer and a trusted X-Forwarded-For, rule match, CIDR lookups",
        run: ip_acl_evaluate,
    },
    Decision {
        name: "param_validation.validate",
        about: "rule match and validation of GET /search?q=shoes&page=2 (required, length, integer range)",
        run: param_validation_validate,
    },
    Decision {
        name: "request_mapping.apply",
        about: "rule match and mapping of GET /v1/users/42?lang=zh (path template, query to header, two system parameters)",
        run: request_mapping_apply,
    },
    Decision {
        name: "throttling.decide",
        about: "quota update of GET /orders/42 by app over the in-memory shared-data store (read, count, compare-and-swap)",
        run: throttling_decide,
    },
    Decision {
        name: "circuit_breaker.update",
        about: "breaker of GET /flaky: rule match, admit (one read), classify a 200, record it (compare-and-swap)",
        run: circuit_breaker_update,
    },
    Decision {
        name: "log_push.format",
        about: "one call record written as a ClickHouse JSONEachRow line (all default fields and one extra header)",
        run: log_push_format,
    },
];

/// Where the filters' JSON configurations are.
struct Configs {
    dir: PathBuf,
}

impl Configs {
    fn text(&self, filter: &str) -> Result<String, String> {
        let path = self.dir.join(format!("{filter}.json"));
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn parse<T: DeserializeOwned>(&self, filter: &str) -> Result<T, String> {
        parse_json(self.text(filter)?.as_bytes())
            .map_err(|e| format!("{filter}.json: invalid configuration: {e}"))
    }

    fn value(&self, filter: &str) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.text(filter)?).map_err(|e| format!("{filter}.json: {e}"))
    }
}

/// The demo's API (its Envoy route name) for a request path of the mix: the
/// policies match by route name, as gatewayctl writes them by default.
fn route_of(path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    [
        ("/orders", "orders"),
        ("/admin", "admin"),
        ("/account", "account"),
        ("/limited", "limited"),
        ("/search", "search"),
        ("/v1/users/", "public-profile"),
        ("/flaky", "flaky"),
    ]
    .iter()
    .find(|(prefix, _)| path.starts_with(prefix))
    .map_or("api", |(_, route)| route)
}

/// A GET request as the filters' host shows it, from 127.0.0.1, routed by
/// Envoy to the demo's API for its path.
fn request(path: &str) -> FakeHost {
    let host = FakeHost::new()
        .with_header(":authority", AUTHORITY)
        .with_header(":method", "GET")
        .with_header(":path", path)
        .with_header("accept", "application/json")
        .with_header("user-agent", "wrk")
        .with_header("x-tenant", "acme")
        .with_property(&["source", "address"], PEER)
        .with_property(&["xds", "route_name"], route_of(path));
    host.clock.set(Duration::from_millis(NOW_MS));
    host
}

fn attrs(path: &str) -> RequestAttrs<'_> {
    RequestAttrs {
        authority: AUTHORITY,
        method: "GET",
        path,
        route_name: Some(route_of(path)),
    }
}

/// The first app of sign-auth's configuration: (key, secret).
fn first_app(configs: &Configs) -> Result<(String, String), String> {
    let config = configs.value("sign_auth")?;
    let app = &config["apps"][0];
    match (app["key"].as_str(), app["secrets"][0].as_str()) {
        (Some(key), Some(secret)) => Ok((key.to_string(), secret.to_string())),
        _ => Err("sign_auth.json: apps[0] needs a key and a secret".into()),
    }
}

fn signed(
    key: &str,
    secret: &str,
    path: &str,
    nonce: &str,
) -> Result<sign_auth::client::Signed, String> {
    use sign_auth::client::{sign_request, ClientRequest, Credentials};
    use sign_auth::signature::SignatureMethod;
    sign_request(
        &Credentials {
            key: key.into(),
            secret: secret.into(),
            method: SignatureMethod::HmacSha256,
        },
        &ClientRequest {
            method: "GET".into(),
            path_and_query: path.into(),
            headers: vec![("accept".into(), "application/json".into())],
            signed_extra: Vec::new(),
            form_body: None,
        },
        NOW_MS,
        nonce,
    )
    .map_err(|e| format!("cannot sign {path}: {e:?}"))
}

fn expect(ok: bool, what: &str, iteration: usize) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("iteration {iteration}: {what}"))
    }
}

fn sign_auth_verify(configs: &Configs, n: usize) -> Result<u64, String> {
    use sign_auth::signature::{Secret, SignatureMethod};
    let (key, secret) = first_app(configs)?;
    let signed = signed(&key, &secret, "/orders/42", "bench-nonce")?;
    let signature = signed
        .headers
        .iter()
        .find(|(name, _)| name == "x-ca-signature")
        .map(|(_, value)| value.clone())
        .ok_or("the client added no x-ca-signature")?;
    // Prepared once, as the filter does when its configuration loads.
    let secret = Secret::new(secret.as_bytes()).ok_or("HMAC refused the secret")?;
    let mut valid = 0;
    for i in 0..n {
        let ok = black_box(&secret).verifies(
            SignatureMethod::HmacSha256,
            black_box(&signed.string_to_sign),
            black_box(&signature),
        );
        expect(ok, "the signature did not verify", i)?;
        valid += 1;
    }
    Ok(valid)
}

fn sign_auth_begin(configs: &Configs, n: usize) -> Result<u64, String> {
    use sign_auth::policy::{SignAuth, SignAuthConfig, Step};
    let policy = SignAuth::compile(&configs.parse::<SignAuthConfig>("sign_auth")?)
        .map_err(|e| e.to_string())?;
    let store = MemoryStore::new();
    policy
        .nonce_table()
        .initialize(&store)
        .map_err(|e| format!("nonce table: {e:?}"))?;
    let (key, secret) = first_app(configs)?;
    let hosts = (0..PREPARED)
        .map(|i| {
            let signed = signed(&key, &secret, "/orders/42", &format!("bench-{i:08}"))?;
            Ok(signed
                .headers
                .iter()
                .fold(request("/orders/42"), |host, (name, value)| {
                    host.with_header(name, value)
                }))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut passed = 0;
    for (i, host) in hosts.iter().take(n).enumerate() {
        let step = policy.begin(black_box(host), &store, true);
        expect(
            matches!(step, Step::Pass(Some(_))),
            &format!("not authenticated: {step:?}"),
            i,
        )?;
        passed += 1;
    }
    Ok(passed)
}

fn ip_acl_check(configs: &Configs, n: usize) -> Result<u64, String> {
    use ip_acl::policy::{IpAcl, IpAclConfig, Outcome};
    let acl =
        IpAcl::compile(&configs.parse::<IpAclConfig>("ip_acl")?).map_err(|e| e.to_string())?;
    let client: IpAddr = "10.1.2.3".parse().map_err(|e| format!("{e}"))?;
    let request = attrs("/admin/stats");
    let mut allowed = 0;
    for i in 0..n {
        let outcome = acl.check(black_box(client), None, black_box(&request));
        expect(matches!(outcome, Outcome::Allowed), "denied", i)?;
        allowed += 1;
    }
    Ok(allowed)
}

fn ip_acl_evaluate(configs: &Configs, n: usize) -> Result<u64, String> {
    use ip_acl::policy::{IpAcl, IpAclConfig, Outcome};
    let acl =
        IpAcl::compile(&configs.parse::<IpAclConfig>("ip_acl")?).map_err(|e| e.to_string())?;
    // What Envoy passes on with use_remote_address: the client's entry, then the peer's.
    let host = request("/admin/stats").with_header("x-forwarded-for", "10.1.2.3,127.0.0.1");
    let mut allowed = 0;
    for i in 0..n {
        let outcome = acl.evaluate(black_box(&host));
        expect(
            matches!(outcome, Outcome::Allowed),
            &format!("{outcome:?}"),
            i,
        )?;
        allowed += 1;
    }
    Ok(allowed)
}

fn param_validation_validate(configs: &Configs, n: usize) -> Result<u64, String> {
    use param_validation::policy::{RequestParts, Validation, ValidationConfig};
    let validation = Validation::compile(&configs.parse::<ValidationConfig>("param_validation")?)
        .map_err(|e| e.to_string())?;
    let host = request("/search?q=shoes&page=2");
    let header = |name: &str| gateway_common::host::Host::request_header(&host, name);
    let path = "/search?q=shoes&page=2";
    let mut valid = 0;
    for i in 0..n {
        let request = attrs(black_box(path));
        let Some((rule, captures)) = validation.rule_for(&request) else {
            return Err(format!("iteration {i}: no rule for {path}"));
        };
        let result = rule.validate(&RequestParts {
            query: black_box("q=shoes&page=2"),
            header: Some(&header),
            captures: &captures,
            content_type: None,
            body: None,
        });
        expect(result.is_ok(), &format!("refused: {result:?}"), i)?;
        valid += 1;
    }
    Ok(valid)
}

fn request_mapping_apply(configs: &Configs, n: usize) -> Result<u64, String> {
    use request_mapping::policy::{Frontend, Mapping, MappingConfig, SystemValue};
    let mapping = Mapping::compile(&configs.parse::<MappingConfig>("request_mapping")?)
        .map_err(|e| e.to_string())?;
    let host = request("/v1/users/42?lang=zh");
    let header = |name: &str| gateway_common::host::Host::request_header(&host, name);
    let system = |value: SystemValue| match value {
        SystemValue::ClientIp => Some("127.0.0.1".to_string()),
        SystemValue::RequestId => Some("5f0c8a6e-0d2b-4a53-9d1e-7c0a2b1f4e11".to_string()),
        SystemValue::AppKey => Some("203751".to_string()),
        SystemValue::AppName => Some("demo-app".to_string()),
        SystemValue::Api => Some("public-profile".to_string()),
        SystemValue::RequestTime => Some(NOW_MS.to_string()),
        SystemValue::User => Some("demo-user".to_string()),
    };
    let path = "/v1/users/42?lang=zh";
    let mut mapped = 0;
    for i in 0..n {
        let request = attrs(black_box(path));
        let Some((index, captures)) = mapping.rule_index_for(&request) else {
            return Err(format!("iteration {i}: no rule for {path}"));
        };
        let rule = mapping.rule(index).ok_or("rule index out of range")?;
        let (front_path, query) = path.split_once('?').unwrap_or((path, ""));
        let result = rule.apply(&Frontend {
            path: front_path,
            query,
            captures: &captures,
            header: Some(&header),
            system: Some(&system),
            content_type: None,
            body: None,
        });
        match result {
            Ok(done) => {
                expect(done.path.is_some(), "the path was not mapped", i)?;
                black_box(done);
            }
            Err(error) => return Err(format!("iteration {i}: refused: {error:?}")),
        }
        mapped += 1;
    }
    Ok(mapped)
}

fn throttling_decide(configs: &Configs, n: usize) -> Result<u64, String> {
    use throttling::policy::{Throttling, ThrottlingConfig, Verdict};
    let policy = Throttling::compile(&configs.parse::<ThrottlingConfig>("throttling")?)
        .map_err(|e| e.to_string())?;
    let store = MemoryStore::new();
    policy.initialize(&store)?;
    let host = request("/orders/42").with_property(&[APP_KEY_PROPERTY], "203751");
    let mut allowed = 0;
    for i in 0..n {
        let decision = policy.decide(black_box(&host), &store);
        expect(
            decision.verdict == Verdict::Allowed && !decision.events.is_empty(),
            &format!("not counted and allowed: {decision:?}"),
            i,
        )?;
        allowed += 1;
    }
    Ok(allowed)
}

fn circuit_breaker_update(configs: &Configs, n: usize) -> Result<u64, String> {
    use circuit_breaker::breaker::Admission;
    use circuit_breaker::config::{compile, CircuitBreakerConfig};
    use circuit_breaker::outcome::Answer;
    let breaker = compile(&configs.parse::<CircuitBreakerConfig>("circuit_breaker")?)
        .map_err(|e| e.to_string())?;
    let store = MemoryStore::new();
    breaker
        .initialize(&store, 0)
        .map_err(|e| format!("breaker records: {e:?}"))?;
    let host = request("/flaky");
    let mut admitted = 0;
    for i in 0..n {
        let now = NOW_MS + i as u64;
        let Some((_, rule)) = breaker.matching_rule(black_box(&host)) else {
            return Err(format!("iteration {i}: no rule for /flaky"));
        };
        let (admission, _) = rule.admit(&store, now).map_err(|e| format!("{e:?}"))?;
        let Admission::Admit(ticket) = admission else {
            return Err(format!("iteration {i}: not admitted: {admission:?}"));
        };
        let outcome = rule.classify(Answer::Upstream(200), 3);
        rule.finish(&store, now + 3, ticket, outcome)
            .map_err(|e| format!("{e:?}"))?;
        admitted += 1;
    }
    Ok(admitted)
}

fn log_push_format(configs: &Configs, n: usize) -> Result<u64, String> {
    use log_push::config::{LogPush, LogPushConfig};
    use log_push::record::{Record, RecordIds};
    let push = LogPush::compile(&configs.parse::<LogPushConfig>("log_push")?)
        .map_err(|e| e.to_string())?;
    let record = Record {
        timestamp_ms: NOW_MS,
        record_id: RecordIds::new(0x5eed).next(),
        request_id: "5f0c8a6e-0d2b-4a53-9d1e-7c0a2b1f4e11".into(),
        api: "orders".into(),
        app_key: "203751".into(),
        app_name: "demo-app".into(),
        client_ip: "127.0.0.1".into(),
        method: "GET".into(),
        host: AUTHORITY.into(),
        path: "/orders/42".into(),
        query: String::new(),
        status: 200,
        error_code: String::new(),
        latency_ms: 1,
        upstream_latency_ms: Some(0),
        request_bytes: 420,
        response_bytes: 180,
        upstream_cluster: "backend".into(),
        upstream_host: "127.0.0.1:18081".into(),
        user_agent: "wrk".into(),
        response_flags: String::new(),
        stage: "RELEASE".into(),
        user: String::new(),
        headers: vec!["acme".into()],
    };
    let mut bytes = 0;
    for i in 0..n {
        let line = push
            .sink
            .encode(&push.layout, std::slice::from_ref(black_box(&record)));
        expect(line.len() > 100, "a short record", i)?;
        bytes += line.len() as u64;
    }
    Ok(bytes)
}

const USAGE: &str =
    "usage: policy-bench --configs DIR DECISION ITERATIONS\n       policy-bench --list";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for decision in DECISIONS {
            println!("{}\t{}", decision.name, decision.about);
        }
        return ExitCode::SUCCESS;
    }
    let (dir, name, iterations) = match args.as_slice() {
        [flag, dir, name, iterations] if flag == "--configs" => (dir, name, iterations),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(decision) = DECISIONS.iter().find(|d| d.name == name) else {
        eprintln!("policy-bench: unknown decision `{name}` (see --list)");
        return ExitCode::from(2);
    };
    let iterations = match iterations.parse::<usize>() {
        Ok(n) if n <= PREPARED => n,
        _ => {
            eprintln!("policy-bench: ITERATIONS must be a number up to {PREPARED}");
            return ExitCode::from(2);
        }
    };
    let configs = Configs {
        dir: Path::new(dir).to_path_buf(),
    };
    match (decision.run)(&configs, iterations) {
        Ok(checksum) => {
            println!("{} {iterations} {checksum}", decision.name);
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("policy-bench: {}: {message}", decision.name);
            ExitCode::FAILURE
        }
    }
}
