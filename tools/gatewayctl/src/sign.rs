//! `gatewayctl sign` (also installed as `ca-sign`): sign a request for the
//! sign-auth filter.
//!
//! ```text
//! gatewayctl sign --key 203751 --secret S [--method POST] [--header 'Accept: application/json']...
//!         [--data BODY [--form]] [--sign-header NAME]... [--sha1] [--curl | --explain] URL
//! ```

use sign_auth::client::{sign_request, ClientRequest, Credentials};
use sign_auth::signature::{content_md5, for_error_message, SignatureMethod};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

const USAGE: &str =
    "usage: gatewayctl sign --key KEY --secret SECRET [--method METHOD] [--header 'Name: value']...
                       [--data BODY [--form]] [--sign-header NAME]... [--sha1] [--curl | --explain] URL

Prints the X-Ca-* headers that sign the request (or, with --curl, a ready curl
command; with --explain, the string to sign). A non-form body gets a
Content-MD5 header. Each run uses a fresh nonce and the current time.";

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
            "-h" | "--help" => return Err(String::new()),
            url if !url.starts_with('-') && args.url.is_empty() => args.url = url.to_string(),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if args.key.is_empty() || args.secret.is_empty() || args.url.is_empty() {
        return Err("--key, --secret and a URL are required".into());
    }
    Ok(args)
}

/// `/path?query` of an absolute URL.
fn path_and_query(url: &str) -> Result<&str, String> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("`{url}` is not an absolute http(s) URL"))?;
    Ok(rest.find('/').map_or("/", |slash| &rest[slash..]))
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

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn run(args: Args) -> Result<String, String> {
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
    let timestamp_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
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
    if args.curl {
        let mut line = format!("curl -sS -X {} {}", args.method, shell_quote(&args.url));
        for (name, value) in &headers {
            line.push_str(&format!(
                " \\\n  -H {}",
                shell_quote(&format!("{name}: {value}"))
            ));
        }
        if let Some(body) = &args.data {
            line.push_str(&format!(" \\\n  --data-binary {}", shell_quote(body)));
        }
        return Ok(line);
    }
    Ok(headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Runs `sign` with its arguments (after the command's name); `program` is
/// the name errors are reported under (`gatewayctl sign` or `ca-sign`).
pub fn main(args: impl Iterator<Item = String>, program: &str) -> ExitCode {
    match parse_args(args).and_then(run) {
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
        assert!(args(&["--header", "nocolon", "--key", "k"]).is_err());
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
