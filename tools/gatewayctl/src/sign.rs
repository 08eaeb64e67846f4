//! `gatewayctl sign` (also installed as `ca-sign`): the credentials of a
//! request for the sign-auth filter, in every mode it takes.
//!
//! ```text
//! gatewayctl sign --key 203751 --secret S [--method POST] [--header 'Accept: application/json']...
//!         [--data BODY [--form]] [--sign-header NAME]... [--sha1] [--curl | --explain] URL
//! gatewayctl sign --huawei --key K --secret S [--unsigned-payload] ... URL
//! gatewayctl sign --appcode CODE [--huawei] ... URL
//! gatewayctl sign --basic USER:PASSWORD ... URL
//! ```

use sign_auth::client::{sign_request, ClientRequest, Credentials};
use sign_auth::huawei;
use sign_auth::modes::{basic_authorization, APPCODE_HEADER};
use sign_auth::signature::{content_md5, for_error_message, SignatureMethod};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str =
    "usage: gatewayctl sign --key KEY --secret SECRET [--method METHOD] [--header 'Name: value']...
                       [--data BODY [--form]] [--sign-header NAME]... [--sha1] [--curl | --explain] URL
       gatewayctl sign --huawei --key APPKEY --secret APPSECRET [--unsigned-payload] [...] URL
       gatewayctl sign --appcode CODE [--huawei] [...] URL
       gatewayctl sign --basic USER:PASSWORD [...] URL

Prints the headers that authenticate the request (or, with --curl, a ready
curl command; with --explain, what was signed). By default an Alibaba X-Ca-*
signature: a non-form body gets a Content-MD5 header; each run uses a fresh
nonce and the current time. --huawei signs with Huawei APIG's SDK-HMAC-SHA256
(every header given, the URL's host and X-Sdk-Date; the body's SHA-256, or
UNSIGNED-PAYLOAD); with --appcode it sends X-Apig-AppCode instead of
Authorization: APPCODE. --basic sends Basic credentials.";

#[derive(Default)]
struct Args {
    key: String,
    secret: String,
    method: String,
    headers: Vec<(String, String)>,
    data: Option<String>,
    form: bool,
    sign_headers: Vec<String>,
    sha1: bool,
    curl: bool,
    explain: bool,
    url: String,
    huawei: bool,
    unsigned_payload: bool,
    appcode: Option<String>,
    basic: Option<String>,
}

fn parse_args(mut raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        method: "GET".into(),
        ..Default::default()
    };
    while let Some(arg) = raw.next() {
        let mut value = |name: &str| raw.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--key" => args.key = value("--key")?,
            "--secret" => args.secret = value("--secret")?,
            "--method" | "-X" => args.method = value("--method")?.to_ascii_uppercase(),
            "--header" | "-H" => {
                let header = value("--header")?;
                let (name, val) = header
                    .split_once(':')
                    .ok_or_else(|| format!("--header `{header}`: expected `Name: value`"))?;
                args.headers
                    .push((name.trim().to_string(), val.trim().to_string()));
            }
            "--data" | "-d" => args.data = Some(value("--data")?),
            "--form" => args.form = true,
            "--sign-header" => args.sign_headers.push(value("--sign-header")?),
            "--sha1" => args.sha1 = true,
            "--curl" => args.curl = true,
            "--explain" => args.explain = true,
            "--huawei" => args.huawei = true,
            "--unsigned-payload" => args.unsigned_payload = true,
            "--appcode" => args.appcode = Some(value("--appcode")?),
            "--basic" => args.basic = Some(value("--basic")?),
            "-h" | "--help" => return Err(String::new()),
            url if !url.starts_with('-') && args.url.is_empty() => args.url = url.to_string(),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    let signs = args.appcode.is_none() && args.basic.is_none();
    if signs && (args.key.is_empty() || args.secret.is_empty() || args.url.is_empty()) {
        return Err("--key, --secret and a URL are required".into());
    }
    if args.url.is_empty() {
        return Err("a URL is required".into());
    }
    if args.appcode.is_some() && args.basic.is_some() {
        return Err("--appcode and --basic are two credentials: give one".into());
    }
    if args.basic.as_deref().is_some_and(|b| !b.contains(':')) {
        return Err("--basic takes USER:PASSWORD".into());
    }
    Ok(args)
}

/// `/path?query` of an absolute URL.
fn path_and_query(url: &str) -> Result<&str, String> {
    let (_, rest) = split_url(url)?;
    Ok(rest)
}

/// The authority (`Host`) and `/path?query` of an absolute URL.
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("`{url}` is not an absolute http(s) URL"))?;
    Ok(match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    })
}

fn nonce() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A shell word in single quotes (a quote inside as `'\''`).
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What a mode other than the `X-Ca-*` signature adds to a request.
struct Added {
    headers: Vec<(String, String)>,
    /// What `--explain` prints.
    explained: String,
}

/// The headers an AppCode, Basic or Huawei-signed request adds; `None`
/// for an `X-Ca-*` signature.
fn other_mode(args: &Args) -> Result<Option<Added>, String> {
    if let Some(code) = &args.appcode {
        let header = if args.huawei {
            (APPCODE_HEADER.to_string(), code.clone())
        } else {
            ("Authorization".to_string(), format!("APPCODE {code}"))
        };
        let explained = format!("nothing is signed: the request carries `{}: …`", header.0);
        return Ok(Some(Added {
            headers: vec![header],
            explained,
        }));
    }
    if let Some(credentials) = &args.basic {
        let (user, password) = credentials.split_once(':').unwrap_or_default();
        let header = (
            "Authorization".to_string(),
            basic_authorization(user, password),
        );
        let explained = format!("nothing is signed: the request carries `{}: …`", header.0);
        return Ok(Some(Added {
            headers: vec![header],
            explained,
        }));
    }
    if !args.huawei {
        return Ok(None);
    }
    let (host, path_and_query) = split_url(&args.url)?;
    let mut signed_headers = vec![("host".to_string(), host.to_string())];
    signed_headers.extend(args.headers.iter().cloned());
    let signed = huawei::sign_request(
        &args.key,
        &args.secret,
        &huawei::ClientRequest {
            method: &args.method,
            path_and_query,
            headers: &signed_headers,
            body: args.data.as_deref().unwrap_or_default().as_bytes(),
            unsigned_payload: args.unsigned_payload,
        },
        now_ms(),
    );
    let explained = format!(
        "canonical request (newlines shown as lines):\n{}\n\nstring to sign:\n{}\n\nas the gateway prints the canonical request in X-Ca-Error-Message:\n{}",
        signed.canonical_request,
        signed.string_to_sign,
        signed.canonical_request.replace('\n', "|")
    );
    Ok(Some(Added {
        headers: signed.headers,
        explained,
    }))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The output: the headers, or a curl command sending them.
fn print(args: &Args, headers: &[(String, String)]) -> String {
    if args.curl {
        let mut line = format!("curl -sS -X {} {}", args.method, shell_quote(&args.url));
        for (name, value) in headers {
            line.push_str(&format!(
                " \\\n  -H {}",
                shell_quote(&format!("{name}: {value}"))
            ));
        }
        if let Some(body) = &args.data {
            line.push_str(&format!(" \\\n  --data-binary {}", shell_quote(body)));
        }
        return line;
    }
    headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run(args: Args) -> Result<String, String> {
    if let Some(added) = other_mode(&args)? {
        if args.explain {
            return Ok(added.explained);
        }
        let mut headers = args.headers.clone();
        headers.extend(added.headers);
        return Ok(print(&args, &headers));
    }
    let mut headers = args.headers.clone();
    if args.form
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push((
            "Content-Type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ));
    }
    if let (Some(body), false) = (&args.data, args.form) {
        headers.push(("Content-MD5".into(), content_md5(body.as_bytes())));
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
    {
        // curl sends `Accept: */*` unless told otherwise; sign what is sent.
        headers.push(("Accept".into(), "*/*".into()));
    }
    let timestamp_ms = now_ms();
    let request = ClientRequest {
        method: args.method.clone(),
        path_and_query: path_and_query(&args.url)?.to_string(),
        headers: headers.clone(),
        signed_extra: args.sign_headers.clone(),
        form_body: args.form.then(|| args.data.clone().unwrap_or_default()),
    };
    let credentials = Credentials {
        key: args.key.clone(),
        secret: args.secret.clone(),
        method: if args.sha1 {
            SignatureMethod::HmacSha1
        } else {
            SignatureMethod::HmacSha256
        },
    };
    let signed = sign_request(&credentials, &request, timestamp_ms, &nonce())
        .map_err(|e| format!("the URL or form has a malformed encoding: {e:?}"))?;
    headers.extend(signed.headers);
    if args.explain {
        return Ok(format!(
            "string to sign (newlines shown as lines):\n{}\n\nas the gateway prints it in X-Ca-Error-Message:\n{}",
            signed.string_to_sign,
            for_error_message(&signed.string_to_sign)
        ));
    }
    Ok(print(&args, &headers))
}

/// What `sign` prints for its arguments (after the command's name): the
/// headers, the curl command or the explanation; an error says why not
/// (empty: the usage was asked for).
pub fn output(args: impl Iterator<Item = String>) -> Result<String, String> {
    parse_args(args).and_then(run)
}

/// Runs `sign` with its arguments (after the command's name); `program` is
/// the name errors are reported under (`gatewayctl sign` or `ca-sign`).
pub fn main(args: impl Iterator<Item = String>, program: &str) -> ExitCode {
    match output(args) {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{program}: {message}\n\n{USAGE}");
            ExitCode::from(crate::EXIT_USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn urls_give_their_path_and_query() {
        assert_eq!(path_and_query("http://h:8080/a/b?x=1"), Ok("/a/b?x=1"));
        assert_eq!(path_and_query("https://h"), Ok("/"));
        assert!(path_and_query("h/a").is_err());
    }

    #[test]
    fn nonces_are_uuid_shaped_and_distinct() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);
    }

    #[test]
    fn missing_arguments_are_explained() {
        assert_eq!(
            args(&["--key", "k"]).err().as_deref(),
            Some("--key, --secret and a URL are required")
        );
        assert_eq!(
            args(&["--appcode", "c"]).err().as_deref(),
            Some("a URL is required")
        );
        assert_eq!(
            args(&["--basic", "nocolon", "http://h/"]).err().as_deref(),
            Some("--basic takes USER:PASSWORD")
        );
        assert!(args(&["--appcode", "c", "http://h/"]).is_ok());
        assert!(args(&["--header", "nocolon", "--key", "k"]).is_err());
    }

    /// Whether sign-auth takes the request `sign` describes, with what it
    /// printed.
    fn accepted(list: &[&str], method: &str, path: &str, body: &[u8]) -> Result<(), String> {
        use gateway_common::host::FakeHost;
        use gateway_common::store::MemoryStore;
        use sign_auth::policy::Step;
        let printed = run(args(list)?)?;
        let mut host = FakeHost::new()
            .with_header(":method", method)
            .with_header(":path", path)
            .with_header(":authority", "127.0.0.1:8080");
        for line in printed.lines() {
            let (name, value) = line.split_once(": ").ok_or(line.to_string())?;
            host = host.with_header(&name.to_ascii_lowercase(), value);
        }
        host.clock.set(std::time::Duration::from_millis(now_ms()));
        let policy = sign_auth::compile_config(
            br#"{"apps": [{"key": "203751", "secrets": ["s"],
                           "huawei": [{"key": "hw", "secrets": ["hw-s"]}],
                           "appcodes": ["c0de"], "basic": [{"username": "u", "password": "p:w"}]}],
                 "modes": ["app", "huawei_app", "appcode", "basic"]}"#,
        )
        .map_err(|e| e.to_string())?;
        let store = MemoryStore::new();
        let step = match policy.begin(&host, &store, body.is_empty()) {
            Step::NeedBody(pending) => policy.finish(*pending, body, &store, now_ms()),
            step => step,
        };
        match step {
            Step::Pass(Some(verified)) if verified.identity.app_key == "203751" => Ok(()),
            other => Err(format!("{other:?}\n{printed}")),
        }
    }

    #[test]
    fn every_mode_prints_what_sign_auth_takes() {
        let url = "http://127.0.0.1:8080/orders/1?b=2&a=1";
        for (list, method, body) in [
            (vec!["--key", "203751", "--secret", "s"], "GET", ""),
            (
                vec!["--huawei", "--key", "hw", "--secret", "hw-s"],
                "GET",
                "",
            ),
            (
                vec![
                    "--huawei",
                    "--key",
                    "hw",
                    "--secret",
                    "hw-s",
                    "-X",
                    "POST",
                    "-H",
                    "Content-Type: application/json",
                    "--data",
                    "{\"a\":1}",
                ],
                "POST",
                "{\"a\":1}",
            ),
            (vec!["--appcode", "c0de"], "GET", ""),
            (vec!["--appcode", "c0de", "--huawei"], "GET", ""),
            (vec!["--basic", "u:p:w"], "GET", ""),
        ] {
            let mut all = list.clone();
            all.push(url);
            assert_eq!(
                accepted(&all, method, "/orders/1?b=2&a=1", body.as_bytes()),
                Ok(()),
                "{list:?}"
            );
        }
        let wrong = ["--basic", "u:nope", url];
        assert!(accepted(&wrong, "GET", "/orders/1?b=2&a=1", b"").is_err());
    }

    #[test]
    fn huawei_explain_shows_the_canonical_request() {
        let out = run(args(&[
            "--huawei",
            "--key",
            "hw",
            "--secret",
            "s",
            "--explain",
            "http://h.example/a%20b?x=1",
        ])
        .unwrap())
        .unwrap();
        assert!(out.starts_with("canonical request (newlines shown as lines):\nGET\n/a%20b/\nx=1\nhost:h.example\nx-sdk-date:"), "{out}");
        assert!(out.contains("\nSDK-HMAC-SHA256\n"), "{out}");
    }

    #[test]
    fn a_curl_line_carries_every_signature_header() {
        let out = run(args(&[
            "--key",
            "203751",
            "--secret",
            "s",
            "--curl",
            "-X",
            "POST",
            "--data",
            "a=1",
            "--form",
            "http://127.0.0.1:8080/orders?x=1",
        ])
        .unwrap())
        .unwrap();
        for needle in [
            "curl -sS -X POST 'http://127.0.0.1:8080/orders?x=1'",
            "X-Ca-Key: 203751",
            "x-ca-signature:",
            "--data-binary 'a=1'",
            "application/x-www-form-urlencoded",
        ] {
            assert!(
                out.to_ascii_lowercase()
                    .contains(&needle.to_ascii_lowercase()),
                "{needle}\n{out}"
            );
        }
    }
}
