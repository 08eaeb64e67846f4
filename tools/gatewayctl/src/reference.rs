//! What a caller of each API needs to know, read from a checked document:
//! how to reach it, how to authenticate, what to send, which quotas apply
//! and which error codes it may answer. `export openapi` and `docs` both
//! write it, so the two never disagree.

use crate::format::{Api, AuthMode, Document};
use serde_json::Value;

/// One API as a caller sees it (its group's defaults applied).
#[derive(Debug, Clone)]
pub struct ApiReference {
    /// The API with its group's defaults applied, as written in apis.yaml
    /// (no `group`).
    pub api: Value,
    pub name: String,
    pub group: Option<String>,
    /// None: any method.
    pub method: Option<String>,
    /// The path (or the prefix, when `prefix`).
    pub path: String,
    pub prefix: bool,
    pub auth: Vec<AuthMode>,
    /// Only some apps may call it.
    pub apps_restricted: bool,
    /// AppCode also taken from this query parameter.
    pub appcode_query: Option<String>,
    /// Declared parameters, in param-validation's shape.
    pub parameters: Vec<Value>,
    pub body_schema: Option<Value>,
    /// `X-Ca-Stage` values other than RELEASE.
    pub stages: Vec<String>,
    pub quotas: Vec<Quota>,
    pub errors: Vec<&'static ErrorCode>,
    /// Answered by the gateway itself: the status.
    pub mock_status: Option<u16>,
}

/// A quota that applies to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub policy: String,
    pub limit: u64,
    pub window: String,
    /// What is counted separately: "every caller together", "each app"…
    pub per: String,
    /// Some apps or users have their own limit.
    pub exceptions: bool,
}

/// An error code of the gateway's error shape.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: &'static str,
    pub status: u16,
    pub message: &'static str,
}

const fn code(code: &'static str, status: u16, message: &'static str) -> ErrorCode {
    ErrorCode {
        code,
        status,
        message,
    }
}

/// The codes an API may answer, as docs/conventions.md lists them (a test
/// keeps the two the same).
pub const ERROR_CODES: [ErrorCode; 50] = [
    code("A401MC", 401, "Missing Credentials"),
    code("A401MH", 401, "Header `X-Ca-…` is Required"),
    code("A400IH", 400, "Invalid Header"),
    code("A401AK", 401, "Invalid AppKey"),
    code("A403AD", 403, "App Disabled"),
    code("A400IS", 400, "Invalid Signature"),
    code("A400SM", 400, "Unsupported Signature Method"),
    code("A400IT", 400, "Invalid Timestamp"),
    code("A400IN", 400, "Nonce Used"),
    code("A400IM", 400, "Invalid Content-MD5"),
    code("A400IP", 400, "Invalid Parameter Encoding"),
    code("A400IB", 400, "Invalid Body Digest"),
    code("A400UP", 400, "Unsigned Payload Not Allowed"),
    code("A401AC", 401, "Invalid AppCode"),
    code("A401BC", 401, "Invalid Basic Credentials"),
    code("A403TL", 403, "TLS Required"),
    code("A401JT", 401, "Invalid Token"),
    code(
        "A401JK",
        401,
        "Invalid Token: no key of the issuer has its kid and algorithm",
    ),
    code("A401JS", 401, "Invalid Token Signature"),
    code("A401JE", 401, "Token Expired / Token Not Yet Valid (nbf)"),
    code("A401JC", 401, "Invalid Token Claims"),
    code("A503JK", 503, "Token Keys Unavailable"),
    code("A403UA", 403, "Unauthorized: the app may not call this API"),
    code("A401IS", 401, "Identity Source Missing"),
    code("A503AU", 503, "Authorizer Unavailable"),
    code("A403IP", 403, "Access denied by IP Control Policy"),
    code("A403AC", 403, "Access denied by Access Control Policy"),
    code("A429AP", 429, "Throttled by API Flow Control"),
    code("A429AK", 429, "Throttled by APP Flow Control"),
    code("A429US", 429, "Throttled by USER Flow Control"),
    code("A429IP", 429, "Throttled by IP Flow Control"),
    code("A429PV", 429, "Throttled by PARAMETER Flow Control"),
    code("A400PV", 400, "Invalid Parameter"),
    code("A400BD", 400, "Invalid Body"),
    code("A413PB", 413, "Request Body Too Large"),
    code("A403SQ", 403, "SQL Injection Detected"),
    code("A403XS", 403, "Script Injection Detected"),
    code("A400TS", 400, "Request Structure Over Its Limit"),
    code("A400TM", 400, "Malformed Request Body"),
    code("A415TU", 415, "Unsupported Body for Threat Protection"),
    code(
        "A413TB",
        413,
        "Request Body Too Large for Threat Protection",
    ),
    code("A415CT", 415, "Unsupported Content-Type"),
    code("A400MV", 400, "Invalid Parameter Value for Mapping"),
    code("A400MB", 400, "Request Body Required for Mapping"),
    code("A415MT", 415, "Unsupported Content-Type for Mapping"),
    code("A503CB", 503, "API Circuit Breaker Open"),
    code("S404ST", 404, "No Such Stage"),
    code("S404NF", 404, "No Such API"),
    code(
        "I400HD",
        400,
        "Invalid Header `X-Forwarded-For` malformed address",
    ),
    code("X500ER", 500, "Internal Gateway Error"),
];

fn error_code(code: &str) -> Option<&'static ErrorCode> {
    ERROR_CODES.iter().find(|known| known.code == code)
}

/// An API's fields with its group's defaults applied, as the generator
/// applies them: the group's backend, auth, apps and log where the API has
/// none, its stages under the API's, its policies before the API's.
pub fn with_group_defaults(document: &Value, api: &Value) -> Value {
    let mut out = api.clone();
    let Some(object) = out.as_object_mut() else {
        return out;
    };
    let Some(group_name) = object.remove("group") else {
        return out;
    };
    let groups = document["groups"].as_array().into_iter().flatten();
    let Some(group) = groups.clone().find(|g| g["name"] == group_name) else {
        return out;
    };
    for field in ["backend", "auth", "apps", "log"] {
        if !object.contains_key(field) {
            if let Some(value) = group.get(field) {
                object.insert(field.into(), value.clone());
            }
        }
    }
    if let Some(Value::Object(group_stages)) = group.get("stages") {
        let mut stages = group_stages.clone();
        if let Some(Value::Object(own)) = object.get("stages") {
            stages.extend(own.clone());
        }
        object.insert("stages".into(), Value::Object(stages));
    }
    if let Some(Value::Array(group_policies)) = group.get("policies") {
        let mut policies = group_policies.clone();
        if let Some(Value::Array(own)) = object.get("policies") {
            policies.extend(own.iter().cloned());
        }
        object.insert("policies".into(), Value::Array(policies));
    }
    out
}

/// Every API of a checked document (`value` is its source, `document` the
/// same read by the format), as callers see them.
pub fn apis(value: &Value, document: &Document) -> Vec<ApiReference> {
    let raw = value["apis"].as_array().cloned().unwrap_or_default();
    raw.iter()
        .zip(&document.apis)
        .map(|(raw, typed)| reference(value, document, raw, typed))
        .collect()
}

fn reference(value: &Value, document: &Document, raw: &Value, typed: &Api) -> ApiReference {
    let api = with_group_defaults(value, raw);
    let effective: Api = serde_json::from_value(api.clone()).unwrap_or_else(|_| typed.clone());
    let auth = effective
        .auth
        .as_ref()
        .map(|auth| auth.modes.clone())
        .unwrap_or_default();
    let option = |name: &str| {
        effective
            .auth_options
            .as_ref()
            .and_then(|options| options.get(name))
            .cloned()
    };
    let appcode_query = option("appcode_query").and_then(|v| v.as_str().map(String::from));
    let require_tls = option("require_tls").and_then(|v| v.as_bool()) == Some(true);
    let mut quotas = Vec::new();
    let mut codes: Vec<&str> = Vec::new();
    let signs = auth.iter().any(|mode| *mode != AuthMode::Anonymous);
    if signs && !auth.contains(&AuthMode::Anonymous) {
        codes.push("A401MC");
    }
    for mode in &auth {
        codes.extend(match mode {
            AuthMode::App => &[
                "A401MH", "A400IH", "A401AK", "A403AD", "A400IS", "A400SM", "A400IT", "A400IN",
                "A400IM", "A400IP",
            ][..],
            AuthMode::HuaweiApp => &[
                "A401MH", "A400IH", "A401AK", "A403AD", "A400IS", "A400IB", "A400UP",
            ][..],
            AuthMode::Appcode => &["A401AC", "A403AD"][..],
            AuthMode::Basic => &["A401BC"][..],
            AuthMode::Jwt => &["A401JT", "A401JK", "A401JS", "A401JE", "A401JC", "A503JK"][..],
            AuthMode::ExtAuth => &["A401IS", "A503AU"][..],
            AuthMode::Anonymous => &[][..],
        });
    }
    if require_tls {
        codes.push("A403TL");
    }
    if effective.apps.is_some() && signs {
        codes.push("A403UA");
    }
    for name in &effective.policies {
        let Some(policy) = document.policies.iter().find(|p| &p.name == name) else {
            continue;
        };
        if let Some(quota) = &policy.quota {
            let (per, code) = quota_key(quota.get("key"));
            codes.push(code);
            quotas.push(Quota {
                policy: policy.name.clone(),
                limit: quota.get("limit").and_then(Value::as_u64).unwrap_or(0),
                window: quota
                    .get("window")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                per,
                exceptions: quota
                    .get("exceptions")
                    .and_then(Value::as_array)
                    .is_some_and(|e| !e.is_empty()),
            });
        }
        if policy.ip_control.is_some() {
            codes.push("A403IP");
        }
        if policy.breaker.is_some() {
            codes.push("A503CB");
        }
        if policy.access_control.is_some() {
            codes.push("A403AC");
        }
        if policy.threat_protection.is_some() {
            codes.extend(["A403SQ", "A403XS", "A400TS", "A400TM", "A415TU", "A413TB"]);
        }
    }
    if !effective.parameters.is_empty()
        || effective.body_schema.is_some()
        || effective.validation.is_some()
    {
        codes.extend(["A400PV", "A400BD", "A413PB"]);
    }
    if effective.mapping.is_some() {
        codes.extend(["A400MV", "A400MB", "A415MT"]);
    }
    if !effective.stages.is_empty() {
        codes.push("S404ST");
    }
    let mut errors: Vec<&'static ErrorCode> = Vec::new();
    for known in codes.into_iter().filter_map(error_code) {
        if !errors.contains(&known) {
            errors.push(known);
        }
    }
    errors.sort_by_key(|e| (e.status, e.code));
    let (path, prefix) = match (&effective.path, &effective.path_prefix) {
        (Some(path), _) => (path.clone(), false),
        (None, Some(prefix)) => (prefix.clone(), true),
        (None, None) => ("/".into(), true),
    };
    ApiReference {
        name: effective.name.clone(),
        group: typed.group.clone(),
        method: effective.method.as_ref().map(|m| m.to_ascii_uppercase()),
        path,
        prefix,
        auth,
        apps_restricted: effective.apps.is_some(),
        appcode_query,
        parameters: effective.parameters.clone(),
        body_schema: effective.body_schema.clone(),
        stages: effective.stages.keys().cloned().collect(),
        quotas,
        errors,
        mock_status: effective.mock.as_ref().map(|m| m.status),
        api,
    }
}

/// What a quota's `key` counts separately, and the code it answers.
fn quota_key(key: Option<&Value>) -> (String, &'static str) {
    match key {
        None => ("every caller together".into(), "A429AP"),
        Some(Value::String(key)) => match key.as_str() {
            "app" => ("each app".into(), "A429AK"),
            "user" => ("each user".into(), "A429US"),
            "client_ip" => ("each client address".into(), "A429IP"),
            _ => ("every caller together".into(), "A429AP"),
        },
        Some(Value::Object(key)) => {
            let source = key
                .get("parameter")
                .and_then(Value::as_object)
                .and_then(|p| p.iter().next())
                .map(|(place, name)| format!("each value of the {place} parameter {}", text(name)))
                .unwrap_or_else(|| "each parameter value".into());
            (source, "A429PV")
        }
        Some(_) => ("every caller together".into(), "A429AP"),
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), String::from)
}

/// `text` with its first letter in upper case.
pub fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// How a caller authenticates in a mode, in one line.
pub fn auth_summary(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::App => {
            "an Alibaba Cloud API Gateway signature: X-Ca-Key, X-Ca-Timestamp, X-Ca-Nonce, \
             X-Ca-Signature-Headers and X-Ca-Signature (HMAC-SHA256 of the request with the app's secret)"
        }
        AuthMode::HuaweiApp => {
            "a Huawei APIG signature: X-Sdk-Date and Authorization: SDK-HMAC-SHA256 \
             Access=…, SignedHeaders=…, Signature=…"
        }
        AuthMode::Appcode => "an AppCode: Authorization: APPCODE <code> (or X-Apig-AppCode)",
        AuthMode::Basic => "HTTP Basic: Authorization: Basic base64(user:password)",
        AuthMode::Jwt => "a JSON Web Token: Authorization: Bearer <token>",
        AuthMode::ExtAuth => "the credentials the gateway's authorizer checks",
        AuthMode::Anonymous => "no credentials",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;

    #[test]
    fn the_error_codes_are_those_the_conventions_list_with_their_status() {
        let conventions = include_str!("../../../docs/conventions.md");
        for known in &ERROR_CODES {
            let row = format!("| `{}` | {}", known.code, known.status);
            assert!(
                conventions.contains(&row),
                "{} ({}) is not in docs/conventions.md as {row}",
                known.code,
                known.status
            );
        }
    }

    #[test]
    fn every_code_this_file_names_is_a_known_one() {
        let source = include_str!("reference.rs");
        let mut named = 0;
        for (at, _) in source.match_indices('"') {
            let word = &source[at + 1..];
            let Some(code) = word.get(..6) else { continue };
            let shaped = word.as_bytes().get(6) == Some(&b'"')
                && code.as_bytes()[0].is_ascii_uppercase()
                && code[1..4].bytes().all(|b| b.is_ascii_digit())
                && code[4..].bytes().all(|b| b.is_ascii_uppercase());
            if shaped {
                named += 1;
                assert!(error_code(code).is_some(), "{code} is not in ERROR_CODES");
            }
        }
        assert!(named > ERROR_CODES.len(), "only {named} codes found");
    }

    #[test]
    fn a_callers_view_has_the_groups_defaults_quotas_and_codes() {
        let text = "version: 1
backends: [ { name: b, endpoints: [\"127.0.0.1:1\"] } ]
apps: [ { key: k, secrets: [s] } ]
policies:
  - { name: per-app, quota: { key: app, limit: 100, window: 1m, exceptions: [ { apps: [k], limit: 5 } ] } }
  - { name: by-region, quota: { key: { parameter: { query: region } }, limit: 5, window: 10s } }
  - { name: office, ip_control: { allow: [10.0.0.0/8] } }
groups:
  - { name: shop, backend: b, auth: app, policies: [per-app], stages: { TEST: b } }
apis:
  - { name: search, group: shop, method: get, path: /search, policies: [by-region, office],
      parameters: [ { name: region, in: query } ] }
  - { name: files, path_prefix: /files, backend: b, auth: [basic, anonymous], apps: [k] }
";
        let source = Source::parse("apis.yaml", text).unwrap();
        let generated = crate::load(&source).unwrap();
        let apis = apis(&source.value, &generated.document);
        let search = &apis[0];
        assert_eq!(search.group.as_deref(), Some("shop"));
        assert_eq!(search.method.as_deref(), Some("GET"));
        assert_eq!(search.auth, [AuthMode::App]);
        assert_eq!(search.stages, ["TEST"]);
        assert_eq!(
            search.api["policies"],
            serde_json::json!(["per-app", "by-region", "office"])
        );
        assert!(search.api.get("group").is_none());
        assert_eq!(
            search.quotas,
            [
                Quota {
                    policy: "per-app".into(),
                    limit: 100,
                    window: "1m".into(),
                    per: "each app".into(),
                    exceptions: true,
                },
                Quota {
                    policy: "by-region".into(),
                    limit: 5,
                    window: "10s".into(),
                    per: "each value of the query parameter region".into(),
                    exceptions: false,
                },
            ]
        );
        let codes: Vec<&str> = search.errors.iter().map(|e| e.code).collect();
        for code in [
            "A401MC", "A400IS", "A429AK", "A429PV", "A403IP", "A400PV", "S404ST",
        ] {
            assert!(codes.contains(&code), "{code} in {codes:?}");
        }
        assert!(!codes.contains(&"A403UA"), "every app may call search");
        let files = &apis[1];
        assert!(files.prefix);
        assert_eq!(files.method, None);
        let codes: Vec<&str> = files.errors.iter().map(|e| e.code).collect();
        assert_eq!(
            codes,
            ["A401BC", "A403UA"],
            "anonymous calls pass: no A401MC"
        );
    }
}
