//! policy-bench: one policy decision run N times natively, for exact
//! instruction counts under `valgrind --tool=callgrind`.
//!
//! ```text
//! policy-bench --configs DIR DECISION ITERATIONS
//! policy-bench --list
//! policy-bench --token ISSUER CLIENT LIFETIME_S     an EdDSA token of the bench issuer
//! policy-bench --jwks                               the bench issuer's JWKS
//! ```
//!
//! The bench issuer's key is RFC 8037's published Ed25519 test key: the
//! load runs' tokens (sign-auth's JWT mode and Envoy's `jwt_authn` side by
//! side) are made with it.
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
        name: "sign_auth.huawei",
        about: "whole header-phase decision of a Huawei SDK-HMAC-SHA256 signed GET /partner/1 (host, content-type and x-sdk-date signed; no body)",
        run: sign_auth_huawei,
    },
    Decision {
        name: "sign_auth.appcode",
        about: "whole header-phase decision of GET /partner/1 with Authorization: APPCODE (over TLS): digest lookup, app rule",
        run: sign_auth_appcode,
    },
    Decision {
        name: "sign_auth.basic",
        about: "whole header-phase decision of GET /partner/1 with Basic credentials (over TLS): Base64, user lookup, password digest",
        run: sign_auth_basic,
    },
    Decision {
        name: "sign_auth.jwt_warm",
        about: "whole header-phase decision of GET /me with an RS256 token (RFC 7515 A.2) verified before: digest, table lookup, claims",
        run: sign_auth_jwt_warm,
    },
    Decision {
        name: "sign_auth.jwt_cold",
        about: "the same with the verified-token table off: header, claims, RS256 signature check every time",
        run: sign_auth_jwt_cold,
    },
    Decision {
        name: "ip_acl.check",
        about: "CIDR lookups of a resolved client (10.1.2.3 on /admin/stats): global deny list, rule allow list",
        run: ip_acl_check,
    },
    Decision {
        name: "access_control.decide",
        about: "whole decision of the demo's notes rule for GET /users/demo-user/notes of a Basic user: rule match with the path template, user == param.userId",
        run: access_control_decide,
    },
    Decision {
        name: "routing.choose",
        about: "whole decision of the demo's catalog rule for GET /catalog/fr/items: rule match with the path template, the maintenance header read, `param.region in [..]` chooses eu",
        run: routing_choose,
    },
    Decision {
        name: "error_mapping.decide",
        about: "whole decision of the demo's legacy-orders rule on a 404 answer to GET /legacy/orders/42: rule match with the path template, `status >= 400`, the mapping by status, the message with ${param.orderId}",
        run: error_mapping_decide,
    },
    Decision {
        name: "response_cache.hit",
        about: "a warm hit of the demo's products rule for GET /products/7: rule match, the key (SHA-256 over the path, the route, the language header), one shared-data read, the stored answer decoded (31-byte body)",
        run: response_cache_hit,
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
        name: "threat_protection.query",
        about: "rule match and injection checks of GET /search with a 1 KB free-text query (q: prose with quotes and SQL words, decoded, both detectors)",
        run: threat_protection_query,
    },
    Decision {
        name: "threat_protection.json",
        about: "the body check of a 10 KB JSON body with 200 string fields (one pass: grammar, limits, both detectors on every key and string)",
        run: threat_protection_json,
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
        ("/partner", "partner"),
        ("/me", "me"),
        ("/users/", "notes"),
        ("/catalog/", "catalog"),
        ("/legacy/orders/", "legacy-orders"),
        ("/products/", "products"),
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

/// Runs sign-auth's header-phase decision on `hosts` (cycled), each of which
/// must authenticate app `203751`; `config` edits the bench's sign-auth
/// configuration first.
fn sign_auth_passes(
    configs: &Configs,
    n: usize,
    config: impl FnOnce(&mut serde_json::Value),
    hosts: &[FakeHost],
) -> Result<u64, String> {
    use sign_auth::policy::{SignAuth, SignAuthConfig, Step};
    let mut document = configs.value("sign_auth")?;
    config(&mut document);
    let policy = SignAuth::compile(
        &parse_json::<SignAuthConfig>(document.to_string().as_bytes())
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let store = MemoryStore::new();
    if let Some(jwt) = policy.jwt() {
        jwt.initialize(&store)
            .map_err(|e| format!("token table: {e:?}"))?;
    }
    let mut passed = 0;
    for i in 0..n {
        let step = policy.begin(black_box(&hosts[i % hosts.len()]), &store, true);
        expect(
            matches!(&step, Step::Pass(Some(v)) if v.identity.app_key == "203751"),
            &format!("not authenticated: {step:?}"),
            i,
        )?;
        passed += 1;
    }
    Ok(passed)
}

/// `request(path)` over TLS (AppCode and Basic need it on /partner).
fn tls_request(path: &str, headers: &[(&str, &str)]) -> FakeHost {
    headers
        .iter()
        .fold(request(path), |host, (name, value)| {
            host.with_header(name, value)
        })
        .with_property(&["connection", "tls_version"], "TLSv1.3")
}

fn sign_auth_huawei(configs: &Configs, n: usize) -> Result<u64, String> {
    use sign_auth::huawei::{sign_request, ClientRequest};
    let config = configs.value("sign_auth")?;
    let pair = &config["apps"][0]["huawei"][0];
    let (Some(key), Some(secret)) = (pair["key"].as_str(), pair["secrets"][0].as_str()) else {
        return Err("sign_auth.json: apps[0].huawei[0] needs a key and a secret".into());
    };
    let headers = [
        ("host".to_string(), AUTHORITY.to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let signed = sign_request(
        key,
        secret,
        &ClientRequest {
            method: "GET",
            path_and_query: "/partner/1",
            headers: &headers,
            body: b"",
            unsigned_payload: false,
        },
        NOW_MS,
    );
    let host = signed
        .headers
        .iter()
        .fold(request("/partner/1"), |host, (name, value)| {
            host.with_header(name, value)
        })
        .with_header("content-type", "application/json");
    sign_auth_passes(configs, n, |_| {}, &[host])
}

/// The demo's AppCode and Basic password (`examples/demo.yaml` keeps their
/// SHA-256 digests).
const DEMO_APPCODE: &str = "demo-appcode";
const DEMO_BASIC: &str = "Basic ZGVtby11c2VyOmRlbW8tcGFzc3dvcmQ=";

fn sign_auth_appcode(configs: &Configs, n: usize) -> Result<u64, String> {
    let host = tls_request(
        "/partner/1",
        &[("authorization", &format!("APPCODE {DEMO_APPCODE}"))],
    );
    sign_auth_passes(configs, n, |_| {}, &[host])
}

fn sign_auth_basic(configs: &Configs, n: usize) -> Result<u64, String> {
    let host = tls_request("/partner/1", &[("authorization", DEMO_BASIC)]);
    sign_auth_passes(configs, n, |_| {}, &[host])
}

/// RFC 7515 appendix A.2: an RS256 token of `joe` (expired in 2011) and
/// its key.
const RS256_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
const RS256_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

/// The bench's sign-auth configuration with the demo issuer's keys given
/// inline as the RFC's, its client `joe` (`iss`) the first app's, and the
/// verified-token table kept for `ttl` seconds (0: off).
fn rs256_issuer(config: &mut serde_json::Value, ttl: u64) {
    config["jwt"] = serde_json::json!({
        "issuers": [{
            "name": "demo-idp",
            "jwks": {"keys": [{"kty": "RSA", "n": RS256_N, "e": "AQAB"}]},
            "app_claims": ["iss"],
            "required_claims": [],
            "ignore_expiration": true
        }],
        "cache_max_ttl_seconds": ttl
    });
    config["apps"][0]["jwt"] = serde_json::json!([{"issuer": "demo-idp", "clients": ["joe"]}]);
}

fn jwt_host() -> FakeHost {
    tls_request(
        "/me",
        &[("authorization", &format!("Bearer {RS256_TOKEN}"))],
    )
}

fn sign_auth_jwt_warm(configs: &Configs, n: usize) -> Result<u64, String> {
    sign_auth_passes(configs, n, |c| rs256_issuer(c, 300), &[jwt_host()])
}

fn sign_auth_jwt_cold(configs: &Configs, n: usize) -> Result<u64, String> {
    sign_auth_passes(configs, n, |c| rs256_issuer(c, 0), &[jwt_host()])
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

fn access_control_decide(configs: &Configs, n: usize) -> Result<u64, String> {
    use access_control::policy::{decide, AccessControl, AccessControlConfig, Body, Decision};
    use gateway_common::host::RequestLine;
    use gateway_common::identity::{publish, Identity};
    let policy = AccessControl::compile(&configs.parse::<AccessControlConfig>("access_control")?)
        .map_err(|e| e.to_string())?;
    let path = "/users/demo-user/notes";
    let host = request(path);
    publish(
        &host,
        &Identity {
            app_key: "203751".into(),
            user: Some("demo-user".into()),
            ..Identity::default()
        },
    );
    let mut allowed = 0;
    for i in 0..n {
        let line = RequestLine::from_headers(&host);
        let (index, captures) = policy
            .rules
            .rule_for(black_box(&attrs(path)))
            .ok_or("no rule for the notes")?;
        let rule = policy.rules.rule(index).ok_or("no rule")?;
        let values = policy
            .rules
            .request_values(&host, &line, &captures, &Body::None);
        let decision = decide(rule, values);
        expect(
            matches!(decision, Decision::Allowed { .. }),
            &format!("{decision:?}"),
            i,
        )?;
        allowed += 1;
    }
    Ok(allowed)
}

fn routing_choose(configs: &Configs, n: usize) -> Result<u64, String> {
    use gateway_common::condition::Body;
    use gateway_common::host::RequestLine;
    use routing::policy::{choose, Routing, RoutingConfig};
    let policy =
        Routing::compile(&configs.parse::<RoutingConfig>("routing")?).map_err(|e| e.to_string())?;
    let path = "/catalog/fr/items";
    let host = request(path);
    let mut routed = 0;
    for i in 0..n {
        let line = RequestLine::from_headers(&host);
        let (index, captures) = policy
            .rules
            .rule_for(black_box(&attrs(path)))
            .ok_or("no rule for the catalog")?;
        let rule = policy.rules.rule(index).ok_or("no rule")?;
        let values = policy
            .rules
            .request_values(&host, &line, &captures, &Body::None);
        let chosen = choose(rule, values);
        expect(
            chosen == Some("catalog.route.eu"),
            &format!("{chosen:?}"),
            i,
        )?;
        routed += 1;
    }
    Ok(routed)
}

fn error_mapping_decide(configs: &Configs, n: usize) -> Result<u64, String> {
    use error_mapping::policy::{
        decide, Body, Decision, ErrorMapping, ErrorMappingConfig, ResponseValues,
    };
    use gateway_common::host::RequestLine;
    let policy = ErrorMapping::compile(&configs.parse::<ErrorMappingConfig>("error_mapping")?)
        .map_err(|e| e.to_string())?;
    let path = "/legacy/orders/42";
    let host = request(path);
    let no_header = |_: &str| None;
    let mut mapped = 0;
    for i in 0..n {
        let line = RequestLine::from_headers(&host);
        let (index, captures) = policy
            .rules
            .rule_for(black_box(&attrs(path)))
            .ok_or("no rule for the legacy orders")?;
        let rule = policy.rules.rule(index).ok_or("no rule")?;
        let values = ResponseValues {
            request: policy
                .rules
                .request_values(&host, &line, &captures, &Body::None),
            status: Some(black_box(404)),
            headers: &no_header,
            body: &Body::None,
        };
        let decision = decide(rule, values);
        expect(
            matches!(&decision, Decision::Mapped(m) if m.status == 410),
            &format!("{decision:?}"),
            i,
        )?;
        mapped += 1;
    }
    Ok(mapped)
}

fn response_cache_hit(configs: &Configs, n: usize) -> Result<u64, String> {
    use gateway_common::host::RequestLine;
    use gateway_common::store::MemoryStore;
    use response_cache::entry::CachedResponse;
    use response_cache::policy::{ResponseCache, ResponseCacheConfig};
    let policy = ResponseCache::compile(&configs.parse::<ResponseCacheConfig>("response_cache")?)
        .map_err(|e| e.to_string())?;
    let path = "/products/7";
    let host = request(path);
    let store = MemoryStore::new();
    policy
        .table
        .initialize(&store)
        .map_err(|e| format!("{e:?}"))?;
    let line = RequestLine::from_headers(&host);
    let (index, _) = policy
        .rules
        .first_for(&attrs(path))
        .ok_or("no rule for the products")?;
    let key = policy.key(index, &host, &line).ok_or("no key")?;
    let answer = CachedResponse {
        status: 200,
        stored_at_ms: NOW_MS,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"upstream":"nginx","ok":true}"#.to_vec(),
    };
    policy
        .table
        .store(&store, &key, &answer.encode(), NOW_MS, NOW_MS + 60_000)
        .map_err(|e| format!("{e:?}"))?;
    let mut hits = 0;
    for i in 0..n {
        let line = RequestLine::from_headers(&host);
        let (index, _) = policy
            .rules
            .first_for(black_box(&attrs(path)))
            .ok_or("no rule for the products")?;
        let key = policy.key(index, &host, &line).ok_or("no key")?;
        let payload = policy
            .table
            .lookup(&store, &key, NOW_MS + 1)
            .map_err(|e| format!("{e:?}"))?;
        let hit = payload.as_deref().and_then(CachedResponse::decode);
        expect(hit.is_some_and(|h| h.status == 200), "a miss", i)?;
        hits += 1;
    }
    Ok(hits)
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
        let Some((rule, captures)) = validation.rules.first_rule_for(&request) else {
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

/// 1 KB of prose for a search box: words, quotes, apostrophes, SQL words.
fn free_text_query() -> String {
    let sentence = "Where can I find O%27Brien%27s %22select%22 union jackets%3F Drop me a line, or call: 555-0100. ";
    format!("q={}", sentence.repeat(11))
}

/// A 10 KB JSON document of 200 string fields (20 objects of 10).
fn json_document() -> String {
    let objects: Vec<String> = (0..20)
        .map(|i| {
            let fields: Vec<String> = (0..10)
                .map(|j| format!("\"field_{j}\": \"Item {i}-{j}: it's a plain description\""))
                .collect();
            format!("{{{}}}", fields.join(", "))
        })
        .collect();
    format!("{{\"items\": [{}]}}", objects.join(", "))
}

fn threat_protection_rule(configs: &Configs) -> Result<threat_protection::policy::Threats, String> {
    use threat_protection::policy::{ThreatConfig, Threats};
    Threats::compile(&configs.parse::<ThreatConfig>("threat_protection")?)
        .map_err(|e| e.to_string())
}

fn threat_protection_query(configs: &Configs, n: usize) -> Result<u64, String> {
    use threat_protection::policy::RequestParts;
    let threats = threat_protection_rule(configs)?;
    let query = free_text_query();
    let path = format!("/search?{query}");
    let host = request(&path);
    let header = |name: &str| gateway_common::host::Host::request_header(&host, name);
    let mut passed = 0;
    for i in 0..n {
        let Some((index, captures)) = threats.rules.first_for(&attrs(black_box(&path))) else {
            return Err(format!("iteration {i}: no rule for /search"));
        };
        let rule = threats.rules.get(index).ok_or("no rule")?;
        let finding = rule.inspect_head(&RequestParts {
            query: black_box(&query),
            captures: &captures,
            header: &header,
            content_type: None,
            body: None,
        });
        expect(finding.is_none(), &format!("found: {finding:?}"), i)?;
        passed += 1;
    }
    Ok(passed)
}

fn threat_protection_json(configs: &Configs, n: usize) -> Result<u64, String> {
    let threats = threat_protection_rule(configs)?;
    let body = json_document();
    let (index, _) = threats
        .rules
        .first_for(&attrs("/search"))
        .ok_or("no rule for /search")?;
    let rule = threats.rules.get(index).ok_or("no rule")?;
    let mut passed = 0;
    for i in 0..n {
        let finding = rule.inspect_body(Some("application/json"), black_box(body.as_bytes()));
        expect(finding.is_none(), &format!("found: {finding:?}"), i)?;
        passed += 1;
    }
    Ok(passed)
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
        let Some((index, captures)) = mapping.rules.first_for(&request) else {
            return Err(format!("iteration {i}: no rule for {path}"));
        };
        let rule = mapping.rules.get(index).ok_or("rule index out of range")?;
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
        backend_status: None,
        backend_error_code: String::new(),
        threat: String::new(),
        threat_place: String::new(),
        threat_fingerprint: String::new(),
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

const USAGE: &str = "usage: policy-bench --configs DIR DECISION ITERATIONS\n       policy-bench --list\n       policy-bench --token ISSUER CLIENT LIFETIME_S\n       policy-bench --jwks";

/// RFC 8037 appendix A.1: the Ed25519 test key (seed `d`, public `x`).
const BENCH_ED_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const BENCH_ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

/// A token of `issuer` for `client` valid `lifetime_s` from now.
fn bench_token(issuer: &str, client: &str, lifetime_s: u64) -> Result<String, String> {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let seed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(BENCH_ED_D)
        .map_err(|e| e.to_string())?;
    // PKCS#8 of an Ed25519 seed: a fixed prefix, then the 32 bytes.
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend(seed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("bench".into());
    let claims = serde_json::json!({
        "iss": issuer, "aud": "gateway", "azp": client, "sub": "bench-user",
        "iat": now, "exp": now + lifetime_s,
    });
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der))
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--jwks" => {
            let jwks = serde_json::json!({"keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": BENCH_ED_X, "kid": "bench", "alg": "EdDSA"}
            ]});
            println!("{jwks}");
            return ExitCode::SUCCESS;
        }
        [flag, issuer, client, lifetime] if flag == "--token" => {
            let token = lifetime
                .parse()
                .map_err(|e| format!("LIFETIME_S: {e}"))
                .and_then(|lifetime| bench_token(issuer, client, lifetime));
            return match token {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("policy-bench: {message}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
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
