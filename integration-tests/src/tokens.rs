//! JSON Web Tokens for the tests and the demo: Ed25519 keys of test
//! issuers, their JWKS, tokens signed with them, and a small issuer that
//! serves its JWKS and hands out fresh tokens (the demo's).
//!
//! The keys are test keys, published here on purpose: each seed is the
//! SHA-256 of a label (`gateway-test-key-1`, …), and each public key was
//! computed from its seed with Python's `cryptography` package.

use crate::echo::{ReceivedRequest, Reply};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// An Ed25519 signing key with its key id.
#[derive(Debug, Clone, Copy)]
pub struct TestKey {
    pub kid: &'static str,
    /// base64url of the 32-byte seed.
    seed: &'static str,
    /// base64url of the public key.
    pub x: &'static str,
}

pub const KEY_1: TestKey = TestKey {
    kid: "test-1",
    seed: "TnCNe4R_d569ylAHfGles9aYR22neDw2Bo2eCNjJAZg",
    x: "zUP3E0F68-Fxf1hMldBqWBmeW1HCo1qnXKflar-YVEc",
};

pub const KEY_2: TestKey = TestKey {
    kid: "test-2",
    seed: "SqnKqfm5V3QLXdIvY-cKiVZKDTsIvmeAMCpBQiLMy3o",
    x: "bFhPT4IX0JwL0JuMxeO0DZrjC1Y2qeIe6RyfCios_1Y",
};

/// The demo issuer's key.
pub const DEMO_KEY: TestKey = TestKey {
    kid: "demo-2026",
    seed: "ElLXiCc4Ypq8aK0-Tp69JZ00Ymp9uBP50uwsk5MfysE",
    x: "RupTM0uYz5WUqRuSVi2eLvK-havKrtJmj8TZlxUNRW0",
};

impl TestKey {
    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": self.x, "kid": self.kid, "use": "sig", "alg": "EdDSA"})
    }

    /// `claims` signed with this key (EdDSA, with its `kid`).
    pub fn sign(&self, claims: &Value) -> String {
        // PKCS#8 of an Ed25519 seed: a fixed prefix, then the 32 bytes.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend(B64URL.decode(self.seed).expect("a base64url seed"));
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.to_string());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&der))
            .expect("an Ed25519 token")
    }
}

/// A JWKS of `keys`.
pub fn jwks(keys: &[TestKey]) -> Value {
    json!({"keys": keys.iter().map(TestKey::jwk).collect::<Vec<_>>()})
}

pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Claims valid for ten minutes from now, with a fresh `jti`.
pub fn claims(iss: &str, client: &str, sub: &str) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = now_s();
    json!({
        "iss": iss, "aud": "gateway", "azp": client, "sub": sub,
        "iat": now, "exp": now + 600,
        "jti": format!("{now}-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
    })
}

/// The demo's token issuer: `GET /.well-known/jwks.json` is its JWKS, `GET
/// /token` a fresh token of `iss` for the client and user the query names
/// (`client`, default `demo-web`; `sub`, default `demo-user`), anything
/// else 404.
pub fn token_issuer(iss: String) -> impl Fn(&ReceivedRequest) -> Reply + Send + Sync + 'static {
    move |request| {
        let param = |name: &str| {
            request.query.split('&').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                (key == name).then(|| value.to_string())
            })
        };
        match request.path.as_str() {
            "/.well-known/jwks.json" => Reply::new(200, jwks(&[DEMO_KEY]).to_string())
                .header("content-type", "application/json"),
            "/token" => {
                let client = param("client").unwrap_or_else(|| "demo-web".into());
                let sub = param("sub").unwrap_or_else(|| "demo-user".into());
                Reply::new(200, DEMO_KEY.sign(&claims(&iss, &client, &sub)))
                    .header("content-type", "text/plain")
            }
            _ => Reply::new(404, ""),
        }
    }
}
