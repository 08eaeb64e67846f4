//! Tokens: the published JWS vectors, every claim rule and refusal, the
//! verified-token table, and the policy's JWT mode.

use crate::jwt::{CacheUse, Jwt, JwtConfig, KeySet, TokenError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use gateway_common::config::parse_json;
use gateway_common::slots::Stored;
use gateway_common::store::MemoryStore;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::{json, Value};

const NOW_MS: u64 = 1_700_000_000_000;
const NOW: u64 = NOW_MS / 1000;

// RFC 7515 appendix A.1 (HS256), A.2 (RS256), A.3 (ES256): the keys and the
// JWS of each, whose payload is {"iss":"joe","exp":1300819380,...}.
const A1_KEY: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const A1_JWS: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_JWS: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
// RFC 8037 appendix A.1 (the Ed25519 key) and A.4 (its JWS of "Example of
// Ed25519 signing").
const ED_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const ED_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

fn keys(jwk: Value) -> KeySet {
    KeySet::from_jwks(&json!({ "keys": [jwk] })).unwrap()
}

/// Whether `jws` verifies with the first key of `set` allowing `alg`.
fn vector_verifies(set: &KeySet, jws: &str, alg: Algorithm) -> bool {
    let (message, signature) = jws.rsplit_once('.').unwrap();
    set.candidates(None, alg).any(|key| {
        jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg).unwrap_or(false)
    })
}

#[test]
fn the_published_vectors_verify_with_the_algorithm_their_key_allows() {
    let oct = keys(json!({"kty": "oct", "k": A1_KEY}));
    let rsa = keys(json!({"kty": "RSA", "n": A2_N, "e": "AQAB"}));
    let ec = keys(json!({"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y}));
    let ed = keys(json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X}));
    assert!(vector_verifies(&oct, A1_JWS, Algorithm::HS256));
    assert!(vector_verifies(&rsa, A2_JWS, Algorithm::RS256));
    assert!(vector_verifies(&ec, A3_JWS, Algorithm::ES256));
    assert!(vector_verifies(&ed, ED_JWS, Algorithm::EdDSA));
    // A key never verifies an algorithm of another family.
    assert_eq!(rsa.candidates(None, Algorithm::HS256).count(), 0);
    assert_eq!(oct.candidates(None, Algorithm::RS256).count(), 0);
    assert_eq!(ec.candidates(None, Algorithm::ES384).count(), 0);
    assert_eq!(ed.candidates(None, Algorithm::ES256).count(), 0);
    // One changed byte of a vector's signature fails it.
    let broken = A2_JWS.replace("cC4hiUPo", "cC4hiUPp");
    assert!(!vector_verifies(&rsa, &broken, Algorithm::RS256));
}

#[test]
fn a_jwk_naming_its_algorithm_allows_only_that_one_and_encryption_keys_are_left_out() {
    let rsa = keys(json!({"kty": "RSA", "n": A2_N, "e": "AQAB", "alg": "PS256"}));
    assert_eq!(rsa.candidates(None, Algorithm::RS256).count(), 0);
    assert_eq!(rsa.candidates(None, Algorithm::PS256).count(), 1);
    let none = KeySet::from_jwks(&json!({"keys": [
        {"kty": "RSA", "n": A2_N, "e": "AQAB", "use": "enc"},
        {"kty": "EC", "crv": "P-521", "x": A3_X, "y": A3_Y}
    ]}));
    assert!(none.is_err());
    assert!(KeySet::from_jwks(&json!({"nokeys": []})).is_err());
}

/// The RFC 8037 key, for tokens made in the tests.
fn ed_signer() -> EncodingKey {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend(B64URL.decode(ED_D).unwrap());
    EncodingKey::from_ed_der(&der)
}

fn token(claims: Value) -> String {
    token_with(Header::new(Algorithm::EdDSA), claims)
}

fn token_with(mut header: Header, claims: Value) -> String {
    header.kid.get_or_insert_with(|| "ed-1".into());
    jsonwebtoken::encode(&header, &claims, &ed_signer()).unwrap()
}

fn hs_token(claims: Value, secret: &[u8]) -> String {
    let header = Header::new(Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

fn claims() -> Value {
    json!({"iss": "https://idp.example", "aud": "gateway", "sub": "alice", "azp": "web",
           "exp": NOW + 600, "iat": NOW, "jti": "t-1"})
}

fn issuer_config() -> Value {
    json!({
        "name": "idp",
        "issuer": "https://idp.example",
        "audiences": ["gateway", "other"],
        "jwks": {"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": ED_X, "kid": "ed-1"},
            {"kty": "oct", "k": B64URL.encode(b"a-shared-secret-of-32-bytes-long"), "kid": "hs-1"}
        ]}
    })
}

fn jwt_with(issuer: Value) -> Jwt {
    let config = json!({"issuers": [issuer]});
    Jwt::compile(&parse_json::<JwtConfig>(config.to_string().as_bytes()).unwrap()).unwrap()
}

fn jwt() -> Jwt {
    jwt_with(issuer_config())
}

fn verify(jwt: &Jwt, token: &str) -> Result<Value, TokenError> {
    jwt.verify(token, None, &MemoryStore::new(), NOW_MS)
        .map(|v| Value::Object(v.claims))
}

#[test]
fn a_valid_token_verifies_once_and_is_then_taken_from_the_table() {
    let jwt = jwt();
    let store = MemoryStore::new();
    jwt.initialize(&store).unwrap();
    let token = token(claims());
    let first = jwt.verify(&token, None, &store, NOW_MS).unwrap();
    assert_eq!(first.cache, CacheUse::Missed(Stored::Kept));
    assert_eq!(first.claims["sub"], "alice");
    let second = jwt.verify(&token, None, &store, NOW_MS + 1000).unwrap();
    assert_eq!(second.cache, CacheUse::Hit);
    assert_eq!(second.claims, first.claims);
    // Remembered only until the cap (300 s by default), within its exp.
    let later = jwt.verify(&token, None, &store, NOW_MS + 301_000).unwrap();
    assert_eq!(later.cache, CacheUse::Missed(Stored::Kept));
    // An issuer the API does not take does not get the remembered token.
    assert!(jwt.verify(&token, Some(&[]), &store, NOW_MS).is_err());
}

#[test]
fn a_token_another_configuration_verified_is_checked_again() {
    let store = MemoryStore::new();
    let first = jwt();
    first.initialize(&store).unwrap();
    let token = token(claims());
    first.verify(&token, None, &store, NOW_MS).unwrap();
    assert_eq!(
        first.verify(&token, None, &store, NOW_MS).unwrap().cache,
        CacheUse::Hit
    );
    // Another configuration on the same shared data: an issuer first whose
    // keys do not verify the token.
    let other = Jwt::compile(
        &parse_json::<JwtConfig>(
            json!({"issuers": [
                {"name": "corp", "jwks": {"keys": [{"kty": "oct", "k": B64URL.encode(b"corp-secret"), "kid": "ed-1"}]}},
                issuer_config()
            ]})
            .to_string()
            .as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    let again = other.verify(&token, None, &store, NOW_MS).unwrap();
    assert_eq!(again.cache, CacheUse::Missed(Stored::Kept));
    assert_eq!(again.issuer, 1, "the token's own issuer, by its iss");
}

#[test]
fn time_claims_are_checked_with_leeway() {
    let jwt = jwt();
    let with = |changes: Value| {
        let mut c = claims();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        verify(&jwt, &token(c))
    };
    assert!(
        with(json!({"exp": NOW - 30})).is_ok(),
        "within the 60 s leeway"
    );
    assert_eq!(with(json!({"exp": NOW - 61})), Err(TokenError::Expired));
    assert!(with(json!({"nbf": NOW + 30})).is_ok());
    assert_eq!(with(json!({"nbf": NOW + 61})), Err(TokenError::NotYetValid));
    assert!(matches!(
        with(json!({"exp": "soon"})),
        Err(TokenError::Claims(_))
    ));
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(
        matches!(verify(&jwt, &token(no_exp.clone())), Err(TokenError::Claims(m)) if m.contains("`exp`"))
    );
    // ignore_expiration: expired tokens pass (and no exp is needed if not required).
    let mut config = issuer_config();
    config["ignore_expiration"] = json!(true);
    config["required_claims"] = json!([]);
    let lax = jwt_with(config);
    assert!(verify(&lax, &token(no_exp)).is_ok());
    let mut old = claims();
    old["exp"] = json!(NOW - 86_400);
    assert!(verify(&lax, &token(old.clone())).is_ok());
    // Remembered for the cap all the same.
    let store = MemoryStore::new();
    lax.initialize(&store).unwrap();
    let expired = token(old);
    lax.verify(&expired, None, &store, NOW_MS).unwrap();
    assert_eq!(
        lax.verify(&expired, None, &store, NOW_MS).unwrap().cache,
        CacheUse::Hit
    );
}

#[test]
fn issuer_audience_and_required_claims_are_checked() {
    let jwt = jwt();
    let with = |key: &str, value: Value| {
        let mut c = claims();
        c[key] = value;
        verify(&jwt, &token(c))
    };
    assert!(matches!(
        with("iss", json!("https://evil.example")),
        Err(TokenError::Claims(_))
    ));
    assert!(matches!(
        with("aud", json!("someone-else")),
        Err(TokenError::Claims(_))
    ));
    assert!(with("aud", json!(["x", "other"])).is_ok());
    let mut config = issuer_config();
    config["required_claims"] = json!(["exp", "email"]);
    let strict = jwt_with(config);
    assert!(
        matches!(verify(&strict, &token(claims())), Err(TokenError::Claims(m)) if m.contains("email"))
    );
}

#[test]
fn the_algorithm_comes_from_the_key_never_from_the_token() {
    let jwt = jwt();
    // `none`, unsigned.
    let header = B64URL.encode(br#"{"alg":"none","kid":"ed-1"}"#);
    let payload = B64URL.encode(claims().to_string());
    assert!(matches!(
        verify(&jwt, &format!("{header}.{payload}.")),
        Err(TokenError::Malformed(_))
    ));
    // HS256 under the Ed25519 key's id: that key allows EdDSA only.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("ed-1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(&B64URL.decode(ED_X).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(verify(&jwt, &confused), Err(TokenError::UnknownKey(0)));
    // A kid the issuer does not have.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("rotated-away".into());
    assert_eq!(
        verify(&jwt, &token_with(header, claims())),
        Err(TokenError::UnknownKey(0))
    );
    // Keys named or carried by the token are not followed.
    for field in ["jku", "x5u"] {
        let mut header = Header::new(Algorithm::EdDSA);
        match field {
            "jku" => header.jku = Some("https://evil.example/keys".into()),
            _ => header.x5u = Some("https://evil.example/cert".into()),
        }
        assert!(
            matches!(
                verify(&jwt, &token_with(header, claims())),
                Err(TokenError::Malformed(_))
            ),
            "{field}"
        );
    }
    // The oct key verifies HS256 tokens made with its secret.
    let hs = hs_token(claims(), b"a-shared-secret-of-32-bytes-long");
    assert!(verify(&jwt, &hs).is_ok());
    assert_eq!(
        verify(&jwt, &hs_token(claims(), b"another-secret")),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn hostile_tokens_get_a_clean_refusal() {
    let jwt = jwt();
    let huge = format!("{}.{}.{}", "a".repeat(50_000), "b".repeat(50_000), "c");
    let deep = B64URL.encode(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)));
    let header = B64URL.encode(br#"{"alg":"EdDSA","kid":"ed-1"}"#);
    for bad in [
        huge,
        ".".repeat(10_000),
        "not-a-token".to_string(),
        "a.b.c".to_string(),
        "###.$$$.%%%".to_string(),
        format!("{header}.{deep}.c2ln"),
        format!("{header}.{}.c2ln", B64URL.encode("{\"exp\":1e400}")),
        String::new(),
    ] {
        assert!(
            matches!(
                verify(&jwt, &bad),
                Err(TokenError::Malformed(_) | TokenError::Claims(_))
            ),
            "{bad:.40}"
        );
    }
}

#[test]
fn bad_jwt_configs_are_refused_with_the_field_named() {
    let error = |config: Value| {
        parse_json::<JwtConfig>(config.to_string().as_bytes())
            .and_then(|c| Jwt::compile(&c))
            .unwrap_err()
            .to_string()
    };
    let mut both = issuer_config();
    both["jwks_uri"] = json!({"cluster": "idp", "path": "/keys"});
    for (config, expected) in [
        (json!({"issuers": []}), "issuers: needs at least one issuer"),
        (
            json!({"issuers": [{"name": "a"}]}),
            "issuers[0].jwks: give the keys",
        ),
        (
            json!({"issuers": [both]}),
            "issuers[0].jwks: give `jwks` inline or fetch them, not both",
        ),
        (
            json!({"issuers": [{"name": "a", "jwks": {"keys": []}}]}),
            "issuers[0].jwks: holds no signature key",
        ),
        (
            json!({"issuers": [{"name": "a", "jwks_uri": {"cluster": "idp", "path": "keys"}}]}),
            "issuers[0].jwks_uri.path: must start with `/`",
        ),
        (
            json!({"issuers": [issuer_config(), issuer_config()]}),
            "issuers[1].name: `idp` names another issuer",
        ),
        (
            json!({"issuers": [issuer_config()], "from": [{"query": "t", "cookie": "c"}]}),
            "from[0].header: give one of",
        ),
        (
            json!({"issuers": [issuer_config()], "max_token_bytes": 1}),
            "max_token_bytes: must be between 64 and 65536",
        ),
        (
            json!({"issuers": [issuer_config(), {"name": "twin", "issuer": "https://idp.example", "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED_X}]}}]}),
            "issuers[1].issuer: another issuer has this `iss`",
        ),
        (
            json!({"issuers": [{"name": "a", "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED_X}]},
                                "prevent_jti_replay": true, "ignore_expiration": true}]}),
            "issuers[0].prevent_jti_replay: needs tokens that expire",
        ),
    ] {
        let got = error(config.clone());
        assert!(
            got.starts_with(expected),
            "{config}\n got: {got}\nwant: {expected}"
        );
    }
}

proptest! {
    #[test]
    fn any_changed_byte_of_a_token_is_refused(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let jwt = jwt();
        let token = token(claims());
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        let changed = String::from_utf8_lossy(&bytes).into_owned();
        // A change base64url cannot tell (the low bits of a last character
        // that carry nothing) leaves the same token.
        let same_meaning = verify(&jwt, &changed).ok() == verify(&jwt, &token).ok()
            && B64URL.decode(changed.rsplit('.').next().unwrap_or_default()).ok()
                == B64URL.decode(token.rsplit('.').next().unwrap_or_default()).ok();
        prop_assert!(verify(&jwt, &changed).is_err() || same_meaning, "{changed}");
    }
}

/// The policy's JWT mode.
mod policy {
    use super::*;
    use crate::policy::{SignAuth, SignAuthConfig, Step};
    use gateway_common::host::FakeHost;
    use std::time::Duration;

    fn policy_with(issuer: Value) -> SignAuth {
        let config = json!({
            "apps": [
                {"key": "203751", "name": "web-app", "jwt": [{"issuer": "idp", "clients": ["web"]}]},
                {"key": "203752", "jwt": [{"issuer": "idp", "clients": ["batch"]}]}
            ],
            "jwt": {"issuers": [issuer], "from": [
                {"header": "authorization"}, {"query": "access_token"}, {"cookie": "session"}
            ]},
            "modes": ["jwt"],
            "rules": [
                {"name": "orders", "match": {"path": {"prefix": "/orders"}}, "apps": ["203751"],
                 "claims_to_headers": [{"claim": "sub", "header": "x-user"}, {"claim": "aud", "header": "X-Aud"}]},
                {"name": "mixed", "match": {"path": {"prefix": "/mixed"}}, "modes": ["jwt", "basic"]}
            ]
        });
        SignAuth::compile(&parse_json::<SignAuthConfig>(config.to_string().as_bytes()).unwrap())
            .unwrap()
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> FakeHost {
        let host = headers.iter().fold(
            FakeHost::new()
                .with_header(":method", "GET")
                .with_header(":path", path)
                .with_header(":authority", "api.example.com"),
            |host, (name, value)| host.with_header(name, value),
        );
        host.clock.set(Duration::from_millis(NOW_MS));
        host
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_token_names_its_app_and_user_and_fills_the_claim_headers() {
        let p = policy_with(issuer_config());
        let store = MemoryStore::new();
        let token = token(claims());
        for host in [
            request("/orders/1", &[("authorization", &bearer(&token))]),
            request(&format!("/orders/1?access_token={token}"), &[]),
            request("/orders/1", &[("cookie", &format!("a=b; session={token}"))]),
        ] {
            let Step::Pass(Some(verified)) = p.begin(&host, &store, true) else {
                panic!("refused");
            };
            assert_eq!(verified.identity.app_key, "203751");
            assert_eq!(verified.identity.user.as_deref(), Some("alice"));
            assert_eq!(
                verified.headers,
                [
                    ("x-user".to_string(), "alice".to_string()),
                    ("x-aud".to_string(), "gateway".to_string())
                ]
            );
        }
        assert_eq!(p.claim_headers(), ["x-aud", "x-user"]);
    }

    fn refusal(p: &SignAuth, host: &FakeHost) -> (&'static str, Option<String>) {
        match p.begin(host, &MemoryStore::new(), true) {
            Step::Reject(error) => (error.code, None),
            Step::Challenge(error, challenge) => (error.code, Some(challenge)),
            other => panic!("passed: {other:?}"),
        }
    }

    #[test]
    fn refused_tokens_get_the_bearer_challenge_and_a_code_naming_why() {
        let p = policy_with(issuer_config());
        let with = |changes: Value| {
            let mut c = claims();
            for (k, v) in changes.as_object().unwrap() {
                c[k] = v.clone();
            }
            request("/orders/1", &[("authorization", &bearer(&token(c)))])
        };
        let invalid = Some("Bearer realm=\"gateway\", error=\"invalid_token\"".to_string());
        assert_eq!(
            refusal(&p, &with(json!({"exp": NOW - 3600}))),
            ("A401JE", invalid.clone())
        );
        assert_eq!(
            refusal(&p, &with(json!({"aud": "x"}))),
            ("A401JC", invalid.clone())
        );
        assert_eq!(
            refusal(&p, &with(json!({"azp": "stranger"}))),
            ("A401AK", invalid.clone())
        );
        assert_eq!(refusal(&p, &with(json!({"azp": "batch"}))).0, "A403UA");
        let garbage = request("/orders/1", &[("authorization", "Bearer x.y.z")]);
        assert_eq!(refusal(&p, &garbage), ("A401JT", invalid.clone()));
        let forged = request(
            "/orders/1",
            &[("authorization", &bearer(&hs_token(claims(), b"guess")))],
        );
        assert_eq!(refusal(&p, &forged), ("A401JS", invalid));
        let bare = request("/orders/1", &[]);
        assert_eq!(
            refusal(&p, &bare),
            ("A401MC", Some("Bearer realm=\"gateway\"".to_string()))
        );
        // Where Basic is taken too, a missing credential is challenged for Basic.
        assert_eq!(
            refusal(&p, &request("/mixed", &[])),
            (
                "A401MC",
                Some("Basic realm=\"gateway\", charset=\"UTF-8\"".to_string())
            )
        );
    }

    #[test]
    fn a_jti_is_accepted_once_when_replays_are_prevented() {
        let mut issuer = issuer_config();
        issuer["prevent_jti_replay"] = json!(true);
        let p = policy_with(issuer);
        let store = MemoryStore::new();
        let host = request("/orders/1", &[("authorization", &bearer(&token(claims())))]);
        assert!(matches!(p.begin(&host, &store, true), Step::Pass(Some(_))));
        match p.begin(&host, &store, true) {
            Step::Reject(error) | Step::Challenge(error, _) => assert_eq!(error.code, "A400IN"),
            other => panic!("a replay passed: {other:?}"),
        }
        let mut no_jti = claims();
        no_jti.as_object_mut().unwrap().remove("jti");
        let host = request("/orders/1", &[("authorization", &bearer(&token(no_jti)))]);
        assert_eq!(refusal(&p, &host).0, "A401JC");
        // A used jti is kept only a day: a token living longer is refused.
        let mut long = claims();
        long["exp"] = json!(NOW + 2 * 86_400);
        let host = request("/orders/1", &[("authorization", &bearer(&token(long)))]);
        assert_eq!(refusal(&p, &host).0, "A401JC");
    }

    #[test]
    fn fetched_keys_are_unavailable_until_fetched_and_an_unknown_kid_asks_for_them() {
        let issuer = json!({"name": "idp", "issuer": "https://idp.example",
                            "jwks_uri": {"cluster": "idp", "path": "/keys"}});
        let p = policy_with(issuer);
        let host = request("/orders/1", &[("authorization", &bearer(&token(claims())))]);
        assert_eq!(refusal(&p, &host).0, "A503JK");
    }

    #[test]
    fn bad_references_to_issuers_are_refused_with_the_field_named() {
        let error = |config: Value| {
            parse_json::<SignAuthConfig>(config.to_string().as_bytes())
                .and_then(|c| SignAuth::compile(&c))
                .unwrap_err()
                .to_string()
        };
        let jwt = json!({"issuers": [issuer_config()]});
        for (config, expected) in [
            (
                json!({"apps": [{"key": "a", "jwt": [{"issuer": "nope", "clients": ["c"]}]}], "jwt": jwt}),
                "apps[0].jwt[0].issuer: `nope` names no issuer in `jwt`",
            ),
            (
                json!({"apps": [{"key": "a", "jwt": [{"issuer": "idp", "clients": ["c"]}]},
                                {"key": "b", "jwt": [{"issuer": "idp", "clients": ["c"]}]}], "jwt": jwt}),
                "apps[1].jwt[0].clients: `c` of `idp` is app `a`'s already",
            ),
            (
                json!({"apps": [], "modes": ["jwt"]}),
                "modes: `jwt` needs the issuers in `jwt`",
            ),
            (
                json!({"apps": [], "jwt": jwt, "rules": [{"jwt_issuers": ["nope"]}]}),
                "rules[0].jwt_issuers[0]: `nope` names no issuer in `jwt`",
            ),
            (
                json!({"apps": [], "jwt": jwt, "rules": [{"claims_to_headers": [{"claim": "sub", "header": "x-gw-app-key"}]}]}),
                "rules[0].claims_to_headers[0].header: `x-gw-app-key` is not a header",
            ),
            (
                json!({"apps": [], "jwt": jwt, "rules": [{"claims_to_headers": [{"claim": "sub", "header": "Authorization"}]}]}),
                "rules[0].claims_to_headers[0].header: `Authorization` is not a header",
            ),
        ] {
            let got = error(config.clone());
            assert!(
                got.starts_with(expected),
                "{config}\n got: {got}\nwant: {expected}"
            );
        }
    }
}
