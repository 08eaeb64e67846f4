//! Signing requests in tests the way an Alibaba SDK does, with the
//! client side of the sign-auth crate.

use sign_auth::client::{sign_request, ClientRequest, Credentials};
use sign_auth::signature::SignatureMethod;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A nonce never used before in this test process.
pub fn unique_nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "nonce-{}-{}",
        now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every header to send for a request signed now with HmacSHA256: the given
/// headers (include `accept`: the HTTP client would add its own otherwise)
/// plus the `X-Ca-*` ones.
pub fn signed_headers(
    key: &str,
    secret: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    form_body: Option<&str>,
) -> Vec<(String, String)> {
    let signed = sign_request(
        &Credentials {
            key: key.into(),
            secret: secret.into(),
            method: SignatureMethod::HmacSha256,
        },
        &ClientRequest {
            method: method.into(),
            path_and_query: path_and_query.into(),
            headers: headers.to_vec(),
            signed_extra: Vec::new(),
            form_body: form_body.map(str::to_string),
        },
        now_ms(),
        &unique_nonce(),
    )
    .unwrap_or_else(|e| panic!("cannot sign {path_and_query}: {e:?}"));
    let mut all = headers.to_vec();
    all.extend(signed.headers);
    all
}

/// Header pairs borrowed for `http::send`.
pub fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A request signed by Huawei Cloud's own Python SDK core (installed by
/// `make setup`): what to send.
#[derive(Debug, Clone)]
pub struct HuaweiSigned {
    /// The path and the canonical query the SDK sends.
    pub uri: String,
    /// Every header to send, `Authorization` and `X-Sdk-Date` included.
    pub headers: Vec<(String, String)>,
}

/// A request for Huawei's SDK to sign: to `host` (as the HTTP client will
/// send `Host`), with `query` pairs, `headers` and a text `body`.
#[derive(Debug, Clone, Default)]
pub struct HuaweiSdkRequest<'a> {
    pub key: &'a str,
    pub secret: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a str,
}

/// Signs `request` with Huawei's SDK.
pub fn huawei_sdk_signed(request: &HuaweiSdkRequest) -> HuaweiSigned {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let root = crate::envoy::workspace_root();
    let spec = serde_json::json!({
        "key": request.key, "secret": request.secret, "method": request.method,
        "host": request.host, "path": request.path, "query": request.query,
        "headers": request.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "body": request.body,
    });
    let python = root.join(".venv/bin/python");
    let mut child = Command::new(&python)
        .arg(root.join("integration-tests/scripts/huawei_sdk_sign.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; run `make setup`", python.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(spec.to_string().as_bytes())
        .expect("write the request to sign");
    let output = child.wait_with_output().expect("the SDK signer");
    assert!(
        output.status.success(),
        "Huawei's SDK signer failed (run `make setup`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let signed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the signer's JSON");
    HuaweiSigned {
        uri: signed["uri"].as_str().unwrap_or_default().to_string(),
        headers: signed["headers"]
            .as_object()
            .map(|headers| {
                headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}
