//! `gatewayctl docs`: a static HTML reference of a document's APIs for
//! their callers, one self-contained page (its style inline, no script, no
//! network at view time) beside the OpenAPI document it links to: each
//! API's method, path, parameters, body schema, authentication, stages,
//! quotas and error codes, and a request to copy for each way in.

use crate::export::{self, Options};
use crate::format::AuthMode;
use crate::generate::Generated;
use crate::reference::{self, ApiReference, ErrorCode, ERROR_CODES};
use crate::source::Source;
use gateway_common::params::encode_component;
use serde_json::{json, Map, Value};
use std::fmt::{self, Write};
use std::path::{Path, PathBuf};

/// The page's file name in the output directory.
pub const PAGE: &str = "index.html";
/// The OpenAPI document written beside it.
pub const OPENAPI: &str = "openapi.yaml";

const STYLE: &str = "
body { font: 15px/1.5 system-ui, sans-serif; margin: 0; color: #1d2430; display: flex; }
nav { width: 19rem; flex: none; height: 100vh; overflow: auto; position: sticky; top: 0;
      background: #f4f6f9; border-right: 1px solid #dde2ea; padding: 1rem; box-sizing: border-box; }
nav ul { list-style: none; padding: 0; margin: 0 0 1rem; }
nav li { margin: .2rem 0; }
nav a { color: #1d2430; text-decoration: none; }
nav a:hover { text-decoration: underline; }
main { padding: 1.5rem 2.5rem; max-width: 60rem; min-width: 0; }
section { border-top: 1px solid #dde2ea; padding-top: .5rem; margin-top: 1.5rem; }
h1 { margin-top: 0; }
code, pre { font: 13px/1.45 ui-monospace, monospace; }
pre { background: #f4f6f9; padding: .75rem; overflow: auto; border-radius: 4px; white-space: pre-wrap; word-break: break-all; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #dde2ea; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f6f9; }
.method { display: inline-block; min-width: 3.5rem; font: bold 12px ui-monospace, monospace;
          color: #fff; background: #3b6fb6; border-radius: 3px; padding: 0 .3rem; text-align: center; }
.method.any { background: #6b7686; }
.muted { color: #5d6878; }
";

/// Why `docs` wrote nothing (or not everything).
#[derive(Debug)]
pub enum DocsError {
    /// `--group` or `--stage` selects no API.
    Selection(String),
    /// The directory or a file in it cannot be written.
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl fmt::Display for DocsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Selection(message) => f.write_str(message),
            Self::Io { path, error } => write!(f, "{}: cannot be written: {error}", path.display()),
        }
    }
}

/// Writes the reference of a checked document's APIs into `dir` (created
/// if missing): [`PAGE`] and, beside it, the callers' [`OPENAPI`] document.
/// What the export left out is returned as warnings.
pub fn write(
    dir: &Path,
    source: &Source,
    generated: &Generated,
    options: &Options,
) -> Result<Vec<String>, DocsError> {
    let callers = Options {
        complete: false,
        ..options.clone()
    };
    let exported = export::openapi(source, generated, &callers).map_err(DocsError::Selection)?;
    let page = page(
        &export::title(source, &callers),
        &exported.apis,
        &export::servers(generated, &callers),
        &callers,
    );
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| DocsError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, text) in [
        (PAGE, page),
        (OPENAPI, export::to_yaml(&source.file, &exported)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(exported.warnings)
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A word of shell, in single quotes where needed.
fn shell(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c));
    if plain {
        word.to_string()
    } else {
        crate::sign::shell_quote(word)
    }
}

/// The page for `apis` (as `export::openapi` selected them), served at
/// `servers`.
pub fn page(title: &str, apis: &[ApiReference], servers: &[String], options: &Options) -> String {
    let mut out = String::new();
    let server = servers
        .first()
        .cloned()
        .unwrap_or_else(|| "http://localhost:8080".into());
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        title = escape(title)
    );
    // The index.
    out.push_str("<nav>\n<p><strong>APIs</strong></p>\n<ul>\n");
    for api in apis {
        let _ = writeln!(
            out,
            "<li><a href=\"#api-{name}\">{method} <code>{path}</code></a> <span class=\"muted\">{name}</span></li>",
            name = escape(&api.name),
            method = method_badge(api),
            path = escape(&display_path(api)),
        );
    }
    out.push_str(
        "</ul>\n<ul>\n<li><a href=\"#authentication\">Authentication</a></li>\n\
         <li><a href=\"#errors\">Error responses</a></li>\n</ul>\n</nav>\n<main>\n",
    );
    let _ = writeln!(out, "<h1>{}</h1>", escape(title));
    out.push_str("<p>Servers: ");
    let urls: Vec<String> = servers
        .iter()
        .map(|url| format!("<code>{}</code>", escape(url)))
        .collect();
    out.push_str(&urls.join(", "));
    out.push_str("</p>\n");
    if let Some(stage) = export::stage_header(options) {
        let _ = writeln!(
            out,
            "<p>Stage <strong>{}</strong>: send <code>X-Ca-Stage: {0}</code> with every request.</p>",
            escape(stage)
        );
    }
    let _ = writeln!(
        out,
        "<p>The same APIs as an <a href=\"{OPENAPI}\">OpenAPI 3.1 document</a>, for client generators.</p>"
    );
    authentication(&mut out, apis);
    for api in apis {
        api_section(&mut out, api, &server, options);
    }
    errors(&mut out);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn method_badge(api: &ApiReference) -> String {
    match &api.method {
        Some(method) => format!("<span class=\"method\">{}</span>", escape(method)),
        None => "<span class=\"method any\">ANY</span>".into(),
    }
}

fn display_path(api: &ApiReference) -> String {
    if api.prefix {
        format!("{}/…", api.path.trim_end_matches('/'))
    } else {
        api.path.clone()
    }
}

fn mode_title(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::App => "Alibaba Cloud signature",
        AuthMode::HuaweiApp => "Huawei APIG signature",
        AuthMode::Appcode => "AppCode",
        AuthMode::Basic => "Basic credentials",
        AuthMode::Jwt => "JSON Web Token",
        AuthMode::ExtAuth => "The gateway's authorizer",
        AuthMode::Anonymous => "No credentials",
    }
}

fn authentication(out: &mut String, apis: &[ApiReference]) {
    out.push_str("<section id=\"authentication\">\n<h2>Authentication</h2>\n");
    out.push_str(
        "<p>Each API takes one or more of these; its section says which, with a request to copy.</p>\n",
    );
    let mut modes: Vec<AuthMode> = Vec::new();
    for api in apis {
        for mode in &api.auth {
            if !modes.contains(mode) {
                modes.push(*mode);
            }
        }
    }
    for mode in modes {
        let _ = writeln!(
            out,
            "<h3 id=\"auth-{}\">{}</h3>",
            mode.name(),
            mode_title(mode)
        );
        if mode != AuthMode::Anonymous {
            let how = reference::capitalised(reference::auth_summary(mode));
            let _ = writeln!(out, "<p>{}.</p>", escape(&how));
        }
        let more = match mode {
            AuthMode::App => {
                "Your provider gives you an app key and secret. The signature covers the method, \
                 the path and query, the signed headers and the body's MD5; the timestamp must be \
                 within 15 minutes of the gateway's clock and each nonce is used once. \
                 <code>gatewayctl sign --curl</code> writes the request for you."
            }
            AuthMode::HuaweiApp => {
                "Your provider gives you an app key and secret. The signature covers the method, \
                 the canonical path and query, the signed headers (host and X-Sdk-Date at least) \
                 and the body's SHA-256. <code>gatewayctl sign --huawei --curl</code> writes the \
                 request for you."
            }
            AuthMode::Appcode => "Send the AppCode your provider gave you; over HTTPS only.",
            AuthMode::Basic => {
                "Send the user and password your provider gave you; over HTTPS only."
            }
            AuthMode::Jwt => "Send a token of an issuer the gateway trusts, unexpired.",
            AuthMode::ExtAuth => "Your provider tells you which credentials to send.",
            AuthMode::Anonymous => "Anyone may call; credentials, if sent, are checked.",
        };
        let _ = writeln!(out, "<p>{more}</p>");
    }
    out.push_str("</section>\n");
}

fn api_section(out: &mut String, api: &ApiReference, server: &str, options: &Options) {
    let _ = writeln!(
        out,
        "<section id=\"api-{name}\">\n<h2>{method} <code>{path}</code></h2>",
        name = escape(&api.name),
        method = method_badge(api),
        path = escape(&display_path(api)),
    );
    let mut facts = vec![format!("API <strong>{}</strong>", escape(&api.name))];
    if let Some(group) = &api.group {
        facts.push(format!("group {}", escape(group)));
    }
    if api.method.is_none() {
        facts.push("any method".into());
    }
    if api.prefix {
        facts.push(format!(
            "every path under <code>{}</code>",
            escape(&api.path)
        ));
    }
    if let Some(status) = api.mock_status {
        facts.push(format!("answered by the gateway ({status})"));
    }
    let _ = writeln!(out, "<p>{}</p>", facts.join(" · "));

    out.push_str("<h3>Authentication</h3>\n<ul>\n");
    for mode in &api.auth {
        let _ = writeln!(
            out,
            "<li><a href=\"#auth-{}\">{}</a></li>",
            mode.name(),
            mode_title(*mode)
        );
    }
    out.push_str("</ul>\n");
    if api.apps_restricted {
        out.push_str("<p>Only some apps may call this API.</p>\n");
    }
    if !api.stages.is_empty() {
        let stages: Vec<String> = api
            .stages
            .iter()
            .map(|s| format!("<code>{}</code>", escape(s)))
            .collect();
        let _ = writeln!(
            out,
            "<h3>Stages</h3>\n<p>RELEASE (no <code>X-Ca-Stage</code>) and {} (<code>X-Ca-Stage: …</code>); any other stage is answered 404 S404ST.</p>",
            stages.join(", ")
        );
    }
    parameters(out, api);
    if let Some(schema) = &api.body_schema {
        let _ = writeln!(
            out,
            "<h3>Request body</h3>\n<p><code>application/json</code>, checked against this JSON Schema:</p>\n<pre>{}</pre>",
            escape(&serde_json::to_string_pretty(schema).unwrap_or_default())
        );
    }
    if !api.quotas.is_empty() {
        out.push_str("<h3>Quotas</h3>\n<ul>\n");
        for quota in &api.quotas {
            let exceptions = if quota.exceptions {
                " (some callers have their own limit)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "<li>{} calls per {} for {}{exceptions}; more are answered 429 with <code>Retry-After</code>.</li>",
                quota.limit,
                escape(&quota.window),
                escape(&quota.per)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h3>Example requests</h3>\n");
    for mode in &api.auth {
        let _ = writeln!(
            out,
            "<p>{}:</p>\n<pre><code>{}</code></pre>",
            mode_title(*mode),
            escape(&example_request(api, *mode, server, options))
        );
    }
    if !api.errors.is_empty() {
        out.push_str(
            "<h3>Errors</h3>\n<p>Besides the backend's own answers, in the <a href=\"#errors\">gateway's error shape</a>:</p>\n",
        );
        error_table(out, api.errors.iter().copied());
    }
    out.push_str("</section>\n");
}

fn parameters(out: &mut String, api: &ApiReference) {
    if api.parameters.is_empty() {
        return;
    }
    out.push_str(
        "<h3>Parameters</h3>\n<table>\n<tr><th>name</th><th>in</th><th>type</th><th>required</th><th>constraints</th></tr>\n",
    );
    for parameter in &api.parameters {
        let text = |key: &str| parameter.get(key).map(scalar).unwrap_or_default();
        let required = parameter["in"] == "path" || parameter["required"] == true;
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&text("name")),
            escape(&text("in")),
            escape(parameter["type"].as_str().unwrap_or("string")),
            if required { "yes" } else { "no" },
            escape(&constraints(parameter)),
        );
    }
    out.push_str("</table>\n");
}

fn scalar(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), String::from)
}

/// A parameter's constraints, for people.
fn constraints(parameter: &Value) -> String {
    let mut parts = Vec::new();
    for (key, text) in [
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("exclusive_minimum", ">"),
        ("exclusive_maximum", "<"),
    ] {
        if let Some(value) = parameter.get(key) {
            parts.push(format!("{text} {}", scalar(value)));
        }
    }
    for (key, text) in [
        ("min_length", "at least {} characters"),
        ("max_length", "at most {} characters"),
        ("min_items", "at least {} items"),
        ("max_items", "at most {} items"),
    ] {
        if let Some(value) = parameter.get(key) {
            parts.push(text.replace("{}", &scalar(value)));
        }
    }
    if let Some(Value::Array(values)) = parameter.get("enum") {
        let values: Vec<String> = values.iter().map(scalar).collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    if let Some(pattern) = parameter.get("pattern") {
        parts.push(format!("matches {}", scalar(pattern)));
    }
    if let Some(default) = parameter.get("default") {
        parts.push(format!("default {}", scalar(default)));
    }
    if let Some(pointer) = parameter.get("pointer") {
        parts.push(format!("at {}", scalar(pointer)));
    }
    if let Some(items) = parameter.get("items") {
        let inner = constraints(items);
        let kind = items["type"].as_str().unwrap_or("string");
        parts.push(if inner.is_empty() {
            format!("items: {kind}")
        } else {
            format!("items: {kind}, {inner}")
        });
    }
    parts.join("; ")
}

/// A value to send for a parameter: its first allowed value, its default,
/// or one of its type.
fn example_value(parameter: &Value) -> String {
    if let Some(first) = parameter.get("enum").and_then(|e| e.get(0)) {
        return scalar(first);
    }
    if let Some(default) = parameter.get("default") {
        return scalar(default);
    }
    match parameter["type"].as_str() {
        Some("integer") => parameter.get("minimum").map_or("1".into(), scalar),
        Some("number") => parameter.get("minimum").map_or("1.5".into(), scalar),
        Some("boolean") => "true".into(),
        Some("array") => example_value(parameter.get("items").unwrap_or(&Value::Null)),
        _ => parameter["name"].as_str().map_or("VALUE".into(), |name| {
            name.to_ascii_uppercase().replace('-', "_")
        }),
    }
}

/// A JSON value a body schema takes: its required properties, each with
/// its example, enum's first value, or one of its type.
fn example_body(schema: &Value, root: &Value, depth: usize) -> Value {
    if depth > 6 {
        return Value::Null;
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer));
        return target.map_or(Value::Null, |t| example_body(t, root, depth + 1));
    }
    for key in ["const", "default"] {
        if let Some(value) = schema.get(key) {
            return value.clone();
        }
    }
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    if let Some(first) = schema.get("examples").and_then(|e| e.get(0)) {
        return first.clone();
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(first) = schema.get(key).and_then(|s| s.get(0)) {
            return example_body(first, root, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|k| *k != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut object = Map::new();
            let required = schema["required"].as_array().cloned().unwrap_or_default();
            for name in required.iter().filter_map(Value::as_str) {
                let property = schema["properties"].get(name).unwrap_or(&Value::Null);
                object.insert(name.into(), example_body(property, root, depth + 1));
            }
            Value::Object(object)
        }
        "array" => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            let count = schema["minItems"].as_u64().unwrap_or(1).clamp(1, 3);
            Value::Array(
                (0..count)
                    .map(|_| example_body(items, root, depth + 1))
                    .collect(),
            )
        }
        "integer" => schema.get("minimum").cloned().unwrap_or(json!(1)),
        "number" => schema.get("minimum").cloned().unwrap_or(json!(1.5)),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => json!("text"),
    }
}

/// A request to copy for calling `api` in `mode`.
pub fn example_request(
    api: &ApiReference,
    mode: AuthMode,
    server: &str,
    options: &Options,
) -> String {
    let method = api.method.clone().unwrap_or_else(|| "GET".into());
    let by_place = |place: &str| -> Vec<&Value> {
        api.parameters.iter().filter(|p| p["in"] == place).collect()
    };
    let mut path = api.path.clone();
    for parameter in by_place("path") {
        let name = parameter["name"].as_str().unwrap_or_default();
        path = path.replace(
            &format!("{{{name}}}"),
            &encode_component(&example_value(parameter)),
        );
    }
    for variable in crate::generate::variables(&api.path.clone()) {
        path = path.replace(&format!("{{{variable}}}"), "1");
    }
    let query: Vec<String> = by_place("query")
        .into_iter()
        .filter(|p| p["required"] == true)
        .map(|p| {
            format!(
                "{}={}",
                encode_component(p["name"].as_str().unwrap_or_default()),
                encode_component(&example_value(p))
            )
        })
        .collect();
    let mut url = format!("{}{path}", server.trim_end_matches('/'));
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    let mut headers: Vec<String> = by_place("header")
        .into_iter()
        .filter(|p| p["required"] == true)
        .map(|p| {
            format!(
                "{}: {}",
                p["name"].as_str().unwrap_or_default(),
                example_value(p)
            )
        })
        .collect();
    if let Some(stage) = export::stage_header(options) {
        headers.push(format!("X-Ca-Stage: {stage}"));
    }
    let form: Vec<String> = by_place("form")
        .into_iter()
        .filter(|p| p["required"] == true)
        .map(|p| {
            format!(
                "{}={}",
                p["name"].as_str().unwrap_or_default(),
                encode_component(&example_value(p))
            )
        })
        .collect();
    let body = match &api.body_schema {
        Some(schema) => {
            headers.push("Content-Type: application/json".into());
            Some(example_body(schema, schema, 0).to_string())
        }
        None if !form.is_empty() => {
            headers.push("Content-Type: application/x-www-form-urlencoded".into());
            Some(form.join("&"))
        }
        None => None,
    };
    let mut words: Vec<String> = match mode {
        AuthMode::App | AuthMode::HuaweiApp => {
            let mut words = vec!["gatewayctl".into(), "sign".into()];
            if mode == AuthMode::HuaweiApp {
                words.push("--huawei".into());
            }
            words
                .extend(["--key", "YOUR_APP_KEY", "--secret", "YOUR_APP_SECRET"].map(String::from));
            words
        }
        _ => vec!["curl".into()],
    };
    let signing = matches!(mode, AuthMode::App | AuthMode::HuaweiApp);
    if signing || method != "GET" || body.is_some() {
        words.extend([if signing { "--method" } else { "-X" }.into(), method]);
    }
    match mode {
        AuthMode::Appcode => {
            words.extend(["-H".into(), "Authorization: APPCODE YOUR_APPCODE".into()]);
        }
        AuthMode::Basic => words.extend(["-u".into(), "YOUR_USER:YOUR_PASSWORD".into()]),
        AuthMode::Jwt => {
            words.extend(["-H".into(), "Authorization: Bearer YOUR_TOKEN".into()]);
        }
        AuthMode::ExtAuth => {
            words.extend(["-H".into(), "Authorization: YOUR_CREDENTIAL".into()]);
        }
        _ => {}
    }
    for header in headers {
        words.extend([if signing { "--header" } else { "-H" }.into(), header]);
    }
    if let Some(body) = body {
        words.extend([if signing { "--data" } else { "--data-raw" }.into(), body]);
        if signing && api.body_schema.is_none() {
            words.push("--form".into());
        }
    }
    if signing {
        words.push("--curl".into());
    }
    words.push(url);
    let command = words.iter().map(|w| shell(w)).collect::<Vec<_>>().join(" ");
    match mode {
        AuthMode::App | AuthMode::HuaweiApp => {
            format!("# prints the signed curl command (each run a fresh nonce and time)\n{command}")
        }
        AuthMode::ExtAuth => format!(
            "# the credentials your provider gave you, where it told you to send them\n{command}"
        ),
        _ => command,
    }
}

fn errors(out: &mut String) {
    out.push_str(
        "<section id=\"errors\">\n<h2>Error responses</h2>\n\
         <p>Every refusal of the gateway has one shape: the status, a JSON body and headers.</p>\n\
         <pre>HTTP/1.1 429 Too Many Requests\nx-ca-error-code: A429IP\n\
         x-ca-error-message: Throttled by IP Flow Control\nx-ca-request-id: 7c1b9c43-0a55-4a4e-9d9b-8f1f7d6f1a0e\n\
         retry-after: 17\ncontent-type: application/json; charset=utf-8\n\n\
         {&quot;code&quot;:&quot;A429IP&quot;,&quot;message&quot;:&quot;Throttled by IP Flow Control&quot;,&quot;request_id&quot;:&quot;7c1b9c43-0a55-4a4e-9d9b-8f1f7d6f1a0e&quot;}</pre>\n\
         <p>Give the <code>request_id</code> when you ask your provider about a call. The codes:</p>\n",
    );
    error_table(out, &ERROR_CODES);
    out.push_str("</section>\n");
}

/// A table of error codes: code, status, message.
fn error_table<'a>(out: &mut String, errors: impl IntoIterator<Item = &'a ErrorCode>) {
    out.push_str("<table>\n<tr><th>code</th><th>status</th><th>message</th></tr>\n");
    for error in errors {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            error.code,
            error.status,
            escape(error.message)
        );
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source;

    fn references(text: &str) -> Vec<ApiReference> {
        let source = Source::parse("apis.yaml", text).expect("parses");
        let generated = crate::load(&source).expect("checks");
        reference::apis(&source.value, &generated.document)
    }

    const DOCUMENT: &str = "version: 1
backends: [ { name: b, endpoints: [\"127.0.0.1:1\"] } ]
apps: [ { key: k, secrets: [s] } ]
apis:
  - name: create-order
    method: POST
    path: /orders/{shop}
    backend: b
    auth: [app, appcode]
    parameters:
      - { name: shop, in: path, type: integer, minimum: 3 }
      - { name: lang, in: query, required: true, enum: [en, zh] }
      - { name: x-trace, in: header, required: true }
    body_schema:
      type: object
      required: [items]
      properties:
        items: { type: array, minItems: 1, items: { $ref: '#/definitions/item' } }
      definitions:
        item: { type: object, required: [sku, count], properties: { sku: { type: string }, count: { type: integer, minimum: 1 } } }
  - { name: hostile, method: GET, path: /h, backend: b, auth: anonymous,
      parameters: [ { name: q, in: query, pattern: '</pre><script>alert(1)</script>' } ] }
";

    #[test]
    fn a_request_to_copy_for_each_way_in() {
        let apis = references(DOCUMENT);
        let order = &apis[0];
        let options = Options::default();
        assert_eq!(
            example_request(order, AuthMode::App, "https://api.example.com", &options),
            "# prints the signed curl command (each run a fresh nonce and time)\n\
             gatewayctl sign --key YOUR_APP_KEY --secret YOUR_APP_SECRET --method POST \
             --header 'x-trace: X_TRACE' --header 'Content-Type: application/json' \
             --data '{\"items\":[{\"count\":1,\"sku\":\"text\"}]}' --curl \
             'https://api.example.com/orders/3?lang=en'"
        );
        assert_eq!(
            example_request(order, AuthMode::Appcode, "https://api.example.com", &options),
            "curl -X POST -H 'Authorization: APPCODE YOUR_APPCODE' -H 'x-trace: X_TRACE' \
             -H 'Content-Type: application/json' --data-raw '{\"items\":[{\"count\":1,\"sku\":\"text\"}]}' \
             'https://api.example.com/orders/3?lang=en'"
        );
        let staged = Options {
            stage: Some("TEST".into()),
            ..Options::default()
        };
        assert_eq!(
            example_request(
                &apis[1],
                AuthMode::Anonymous,
                "http://localhost:8080",
                &staged
            ),
            "curl -H 'X-Ca-Stage: TEST' http://localhost:8080/h"
        );
    }

    #[test]
    fn what_the_document_says_is_escaped() {
        let apis = references(DOCUMENT);
        let page = page(
            "Shop <APIs>",
            &apis,
            &["http://localhost:8080".into()],
            &Options::default(),
        );
        assert!(
            !page.contains("<script>"),
            "a pattern is text, never markup"
        );
        assert!(page.contains("matches &lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("<title>Shop &lt;APIs&gt;</title>"));
        assert!(page.contains("<section id=\"api-create-order\">"));
        assert!(page.contains("href=\"#auth-appcode\""));
        assert!(page.contains("<td><code>A401AC</code></td><td>401</td><td>Invalid AppCode</td>"));
    }
}
