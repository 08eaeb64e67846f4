//! `gatewayctl import`: an OpenAPI 3.0 or 3.1 document (YAML or JSON) as an
//! `apis.yaml`. Operations become APIs, their parameters declared
//! parameters, a JSON request body a body schema (components it refers to
//! carried along as `definitions`), the first server the backend;
//! `x-gateway-*` extensions say what OpenAPI cannot. Whatever cannot be
//! translated is listed with its JSON Pointer, never dropped in silence.

use crate::generate::{is_template_variable, variables};
use crate::source::{Source, SourceError};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Operation-level extensions and the `apis.yaml` field each sets (what
/// `export openapi --complete` writes; `x-gateway-parameters` and
/// `x-gateway-body-schema` replace what the operation's own say).
pub const OPERATION_EXTENSIONS: [(&str, &str); 14] = [
    ("x-gateway-name", "name"),
    ("x-gateway-auth", "auth"),
    ("x-gateway-apps", "apps"),
    ("x-gateway-policies", "policies"),
    ("x-gateway-mapping", "mapping"),
    ("x-gateway-validation", "validation"),
    ("x-gateway-stages", "stages"),
    ("x-gateway-timeout", "timeout"),
    ("x-gateway-backend", "backend"),
    ("x-gateway-parameters", "parameters"),
    ("x-gateway-body-schema", "body_schema"),
    ("x-gateway-mock", "mock"),
    ("x-gateway-log", "log"),
    ("x-gateway-auth-options", "auth_options"),
];

/// The modes a security scheme's `x-gateway-auth` (as `export` writes it)
/// may name.
const EXPORTED_MODES: [&str; 6] = ["app", "huawei_app", "appcode", "basic", "jwt", "ext_auth"];

/// Operation-level extensions saying how the API matches: any method (the
/// operation's is one of them), or every path under the operation's.
const MATCH_EXTENSIONS: [&str; 2] = ["x-gateway-any-method", "x-gateway-path-prefix"];

/// The operation-level extension giving the API's place in the document
/// (where paths overlap, the API listed first takes the calls); APIs
/// without one follow, in the OpenAPI document's order.
const ORDER_EXTENSION: &str = "x-gateway-order";

/// The translated document and what could not be translated.
#[derive(Debug, Clone)]
pub struct Imported {
    pub document: Value,
    /// `#/json/pointer: what was left out and why`.
    pub untranslated: Vec<String>,
    /// The JSON Pointer of the operation each API comes from.
    pub origins: Vec<String>,
}

/// A JSON Pointer reference token: `~` as `~0`, `/` as `~1`.
pub(crate) fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A JSON Pointer reference token read back: `~1` as `/`, `~0` as `~`.
pub(crate) fn unescape_token(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// `/paths/~1orders/get` from its parts.
fn pointer(parts: &[&str]) -> String {
    let mut out = String::from("#");
    for part in parts {
        out.push('/');
        out.push_str(&escape_token(part));
    }
    out
}

/// The source path of JSON Pointer parts (for the line of an error).
fn source_path(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            out = gateway_common::config::join_path(&out, part);
        }
    }
    out
}

struct Importer<'a> {
    source: &'a Source,
    root: &'a Value,
    untranslated: Vec<String>,
}

impl<'a> Importer<'a> {
    fn note(&mut self, parts: &[&str], message: impl AsRef<str>) {
        // Written as comment lines: a newline from the document stays text.
        let note = format!("{}: {}", pointer(parts), message.as_ref());
        let note = note.replace('\r', "\\r").replace('\n', "\\n");
        // A path-level parameter is read once per operation.
        if !self.untranslated.contains(&note) {
            self.untranslated.push(note);
        }
    }

    /// `values` with each kept once (JSON Schema wants an `enum` without
    /// repeats); what was repeated is noted.
    fn once_each(&mut self, at: &[&str], values: Vec<Value>) -> Vec<Value> {
        let mut kept: Vec<Value> = Vec::with_capacity(values.len());
        let mut repeated = Vec::new();
        for value in values {
            if kept.contains(&value) {
                repeated.push(value.to_string());
            } else {
                kept.push(value);
            }
        }
        if !repeated.is_empty() {
            self.note(
                at,
                format!("repeats {}: each value is kept once", repeated.join(", ")),
            );
        }
        kept
    }

    fn error(&self, parts: &[&str], message: impl Into<String>) -> SourceError {
        let mut error = self.source.error(&source_path(parts), message);
        error.path = pointer(parts);
        error
    }

    /// Follows a local `$ref` (to its end, refusing cycles).
    fn resolve<'v>(&self, value: &'v Value, at: &[&str]) -> Result<&'v Value, SourceError>
    where
        'a: 'v,
    {
        let mut current = value;
        let mut seen = BTreeSet::new();
        while let Some(reference) = current.get("$ref").and_then(Value::as_str) {
            let Some(local) = reference.strip_prefix('#') else {
                return Err(self.error(
                    at,
                    format!("`{reference}` is in another document: only references within this file are read"),
                ));
            };
            if !seen.insert(reference.to_string()) {
                return Err(
                    self.error(at, format!("`{reference}` refers to itself (a $ref cycle)"))
                );
            }
            current = self.root.pointer(local).ok_or_else(|| {
                self.error(
                    at,
                    format!("`{reference}` refers to nothing in this document"),
                )
            })?;
        }
        Ok(current)
    }
}

/// Reads the OpenAPI document of `source`: what cannot be carried exactly
/// is carried as closely as it safely can or left out, and noted; an
/// operation that cannot be imported at all is left out with a note.
pub fn import(source: &Source) -> Result<Imported, SourceError> {
    import_with(source, false)
}

/// [`import`], or with `strict` the first operation that cannot be
/// imported is an error.
pub fn import_with(source: &Source, strict: bool) -> Result<Imported, SourceError> {
    let root = &source.value;
    let version = root.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !(version.starts_with("3.0") || version.starts_with("3.1")) {
        let message = if root.get("swagger").is_some() {
            "Swagger 2.0 is not read: convert it to OpenAPI 3 first".to_string()
        } else {
            format!("`openapi: {version}`: OpenAPI 3.0 or 3.1 is expected")
        };
        return Err(source.error("openapi", message));
    }
    let mut importer = Importer {
        source,
        root,
        untranslated: Vec::new(),
    };
    let mut document = Map::new();
    document.insert("version".into(), json!(crate::format::VERSION));
    // `x-gateway`: the parts of the apis.yaml OpenAPI has no place for.
    let mut extra = match root.get("x-gateway") {
        None => Map::new(),
        Some(Value::Object(extra)) => extra.clone(),
        Some(_) => {
            return Err(importer.error(&["x-gateway"], "must be a mapping of apis.yaml fields"))
        }
    };
    for field in ["version", "apis"] {
        if extra.contains_key(field) {
            return Err(importer.error(
                &["x-gateway", field],
                "comes from the OpenAPI document itself",
            ));
        }
    }
    let backend = importer.backend(&mut extra)?;
    for (key, value) in extra {
        document.insert(key, value);
    }
    let default_auth = match root.get("x-gateway-auth") {
        Some(Value::String(auth)) => Some(auth.clone()),
        Some(_) => {
            return Err(importer.error(&["x-gateway-auth"], "must be app, anonymous or ext_auth"))
        }
        None => None,
    };
    let base_path = importer.base_path();
    let mut apis = Vec::new();
    let mut origins = Vec::new();
    let mut names = BTreeSet::new();
    let empty = Map::new();
    let paths = root
        .get("paths")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (path, item) in paths {
        let item = importer.resolve(item, &["paths", path])?;
        for (key, _) in item.as_object().unwrap_or(&empty) {
            let known = METHODS.contains(&key.as_str())
                || matches!(
                    key.as_str(),
                    "parameters" | "summary" | "description" | "servers" | "$ref"
                )
                || key.starts_with("x-");
            if !known {
                importer.note(&["paths", path, key], "not an operation; left out");
            } else if key == "servers" {
                importer.note(
                    &["paths", path, key],
                    "per-path servers are not read; the document's first server is the backend",
                );
            }
        }
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let at = ["paths", path.as_str(), method];
            let api = importer.operation(
                &at,
                item,
                operation,
                &format!("{base_path}{path}"),
                backend.as_deref(),
                default_auth.as_deref(),
                &mut names,
            );
            let place = match operation.get(ORDER_EXTENSION) {
                None => Ok(u64::MAX),
                Some(place) => place.as_u64().ok_or_else(|| {
                    importer.error(
                        &[&at[..], &[ORDER_EXTENSION]].concat(),
                        "must be a whole number",
                    )
                }),
            };
            match place.and_then(|place| api.map(|api| api.map(|api| (place, api)))) {
                Ok(Some((place, api))) => {
                    apis.push((place, api));
                    origins.push(pointer(&at));
                }
                Ok(None) => {}
                Err(err) if !strict => {
                    let within = err.path.strip_prefix(&pointer(&at)).unwrap_or(&err.path);
                    let within = if within.is_empty() {
                        String::new()
                    } else {
                        format!(" (at {within})")
                    };
                    importer.note(&at, format!("operation left out: {}{within}", err.message));
                }
                Err(err) => return Err(err),
            }
        }
    }
    for key in ["webhooks", "callbacks"] {
        if root.get(key).is_some() {
            importer.note(&[key], "not part of the gateway's APIs; left out");
        }
    }
    if apis.is_empty() {
        let left_out = importer
            .untranslated
            .iter()
            .find(|note| note.contains(": operation left out: "));
        let message = match left_out {
            Some(note) => format!("no operation could be imported: {note}"),
            None => "no operation to import".into(),
        };
        return Err(importer.error(&["paths"], message));
    }
    // A stable sort: the document's order where no place is given.
    let mut placed: Vec<(u64, Value, String)> = apis
        .into_iter()
        .zip(origins)
        .map(|((place, api), origin)| (place, api, origin))
        .collect();
    placed.sort_by_key(|(place, _, _)| *place);
    let (apis, origins): (Vec<Value>, Vec<String>) = placed
        .into_iter()
        .map(|(_, api, origin)| (api, origin))
        .unzip();
    document.insert("apis".into(), Value::Array(apis));
    Ok(Imported {
        document: Value::Object(document),
        untranslated: importer.untranslated,
        origins,
    })
}

/// An import as an apis.yaml, checked as `check` does.
pub struct Checked {
    pub imported: Imported,
    /// The apis.yaml text.
    pub text: String,
    /// What the check found (none: the import checks).
    pub errors: Vec<SourceError>,
}

/// Imports `source` and checks the result (named `name` in errors). Unless
/// `strict`, an API the check refuses is left out with a note naming the
/// reason and the rest is checked again, so a valid document always gives
/// an apis.yaml that checks, with as many of its operations as can be.
pub fn import_checked(source: &Source, name: &str, strict: bool) -> Result<Checked, SourceError> {
    let mut imported = import_with(source, strict)?;
    loop {
        let text = to_apis_yaml(&imported, &source.file);
        let errors = match Source::parse(name, &text) {
            Ok(checked) => crate::load(&checked).err().unwrap_or_default(),
            Err(error) => vec![error],
        };
        let refused: BTreeMap<usize, &SourceError> = errors
            .iter()
            .filter_map(|error| Some((api_index(&error.path)?, error)))
            .collect();
        let apis = imported.document["apis"].as_array().map_or(0, Vec::len);
        if errors.is_empty() || strict || refused.len() != errors.len() || refused.len() == apis {
            return Ok(Checked {
                imported,
                text,
                errors,
            });
        }
        let notes: Vec<(usize, String)> = refused
            .iter()
            .map(|(index, error)| {
                let within = error.path.split_once("): ").map(|(_, rest)| rest);
                let why = match within {
                    Some(field) => format!("{} (at {field})", error.message),
                    None => error.message.clone(),
                };
                (*index, why)
            })
            .collect();
        for (index, why) in notes.into_iter().rev() {
            if let Some(apis) = imported.document["apis"].as_array_mut() {
                apis.remove(index);
            }
            let origin = imported.origins.remove(index);
            imported
                .untranslated
                .push(format!("{origin}: operation left out: {why}"));
        }
    }
}

/// The index of the API an error's path is in (`apis[3] (name)…`).
fn api_index(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("apis[")?;
    rest[..rest.find(']')?].parse().ok()
}

impl Importer<'_> {
    /// The backend from the first server, unless `x-gateway` brings backends.
    fn backend(&mut self, extra: &mut Map<String, Value>) -> Result<Option<String>, SourceError> {
        if extra.contains_key("backends") {
            return Ok(None);
        }
        let servers = self.root.get("servers").and_then(Value::as_array);
        let Some(server) = servers.and_then(|s| s.first()) else {
            self.note(
                &["servers"],
                "no server: the APIs have no backend (give one in x-gateway.backends)",
            );
            return Ok(None);
        };
        for index in 1..servers.map_or(0, Vec::len) {
            let index = index.to_string();
            self.note(
                &["servers", &index],
                "only the first server becomes the backend",
            );
        }
        let url = self.server_url(server);
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            self.error(
                &["servers", "0", "url"],
                format!("`{url}` is not an absolute http(s) URL"),
            )
        })?;
        let authority = rest.split('/').next().unwrap_or("");
        let tls = match scheme {
            "https" => true,
            "http" => false,
            _ => {
                return Err(self.error(
                    &["servers", "0", "url"],
                    format!("`{scheme}` is not http or https"),
                ))
            }
        };
        let endpoint = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let mut backend = json!({ "name": "backend", "endpoints": [endpoint] });
        if tls {
            backend["tls"] = json!({});
        }
        extra.insert("backends".into(), json!([backend]));
        Ok(Some("backend".into()))
    }

    /// The first server's URL with its variables' defaults.
    fn server_url(&self, server: &Value) -> String {
        let mut url = server
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(variables) = server.get("variables").and_then(Value::as_object) {
            for (name, variable) in variables {
                if let Some(default) = variable.get("default").and_then(Value::as_str) {
                    url = url.replace(&format!("{{{name}}}"), default);
                }
            }
        }
        url
    }

    /// The first server's path, which every API path starts with.
    fn base_path(&self) -> String {
        let Some(server) = self.root.get("servers").and_then(|s| s.get(0)) else {
            return String::new();
        };
        let url = self.server_url(server);
        let after = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let path = after.find('/').map_or("", |at| &after[at..]);
        path.trim_end_matches('/').to_string()
    }

    #[allow(clippy::too_many_arguments)]
    fn operation(
        &mut self,
        at: &[&str],
        item: &Value,
        operation: &Value,
        path: &str,
        backend: Option<&str>,
        default_auth: Option<&str>,
        names: &mut BTreeSet<String>,
    ) -> Result<Option<Value>, SourceError> {
        if let Some(bad) = variables(path)
            .into_iter()
            .find(|name| !is_template_variable(name))
        {
            self.note(
                at,
                format!("the path variable `{bad}` is not a name Envoy's URI templates take (a letter, then letters, digits or `_`, at most 16); the operation is left out"),
            );
            return Ok(None);
        }
        let mut api = Map::new();
        let name = operation
            .get("operationId")
            .and_then(Value::as_str)
            .map(api_name)
            .unwrap_or_else(|| api_name(&format!("{}{}", at[2], path)));
        let mut unique = name.clone();
        let mut counter = 2;
        while !names.insert(unique.clone()) {
            unique = format!("{name}-{counter}");
            counter += 1;
        }
        api.insert("name".into(), json!(unique));
        api.insert("method".into(), json!(at[2].to_ascii_uppercase()));
        api.insert("path".into(), json!(path));
        if let Some(backend) = backend {
            api.insert("backend".into(), json!(backend));
        }
        let (auth, auth_options) = self.auth(at, operation, default_auth)?;
        api.insert("auth".into(), auth);
        if let Some(options) = auth_options {
            api.insert("auth_options".into(), Value::Object(options));
        }
        let parameters = self.parameters(at, item, operation)?;
        if !parameters.is_empty() {
            api.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = operation.get("requestBody") {
            let mut body_at = at.to_vec();
            body_at.push("requestBody");
            if let Some(schema) = self.body_schema(&body_at, body)? {
                api.insert("body_schema".into(), schema);
            }
        }
        for key in ["callbacks", "servers"] {
            if operation.get(key).is_some() {
                let mut note_at = at.to_vec();
                note_at.push(key);
                self.note(&note_at, "not read by the gateway; left out");
            }
        }
        for (key, value) in operation.as_object().into_iter().flatten() {
            if !key.starts_with("x-gateway") {
                continue;
            }
            let mut ext_at = at.to_vec();
            ext_at.push(key);
            if key == ORDER_EXTENSION {
                continue;
            }
            if MATCH_EXTENSIONS.contains(&key.as_str()) {
                match value {
                    Value::Bool(true) if key == "x-gateway-any-method" => {
                        api.remove("method");
                    }
                    Value::Bool(true) => {
                        if let Some(path) = api.remove("path") {
                            api.insert("path_prefix".into(), path);
                        }
                    }
                    Value::Bool(false) => {}
                    _ => return Err(self.error(&ext_at, "must be true or false")),
                }
                continue;
            }
            let Some((_, field)) = OPERATION_EXTENSIONS.iter().find(|(ext, _)| ext == key) else {
                let mut known: Vec<&str> = OPERATION_EXTENSIONS.iter().map(|(e, _)| *e).collect();
                known.extend(MATCH_EXTENSIONS);
                known.push(ORDER_EXTENSION);
                return Err(self.error(
                    &ext_at,
                    format!(
                        "unknown extension `{key}`, expected one of {}",
                        known.join(", ")
                    ),
                ));
            };
            if value.is_null() {
                // The API has none (what the operation says otherwise aside).
                api.remove(*field);
            } else {
                api.insert((*field).into(), value.clone());
            }
        }
        Ok(Some(Value::Object(api)))
    }

    /// The API's `auth` (and `auth_options`) from the operation's
    /// `security` (else the document's): each scheme an alternative way in.
    fn auth(
        &mut self,
        at: &[&str],
        operation: &Value,
        default: Option<&str>,
    ) -> Result<(Value, Option<Map<String, Value>>), SourceError> {
        if let Some(auth) = operation
            .get("x-gateway-auth")
            .and_then(Value::as_str)
            .or(default)
        {
            return Ok((json!(auth), None));
        }
        let requirements: Vec<&Map<String, Value>> = operation
            .get("security")
            .or_else(|| self.root.get("security"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .collect();
        if requirements.is_empty() {
            return Ok((json!("anonymous"), None));
        }
        let mut note_at = at.to_vec();
        note_at.push("security");
        let issuers = self
            .root
            .pointer("/x-gateway/settings/sign_auth/jwt")
            .is_some();
        let mut modes: Vec<&str> = Vec::new();
        let mut options = Map::new();
        let mut untranslated = Vec::new();
        for requirement in &requirements {
            if requirement.is_empty() {
                modes.push("anonymous");
                continue;
            }
            if requirement.len() > 1 {
                self.note(
                    &note_at,
                    "schemes required together are taken as alternatives: the gateway checks one credential",
                );
            }
            for name in requirement.keys() {
                let scheme = self
                    .root
                    .pointer(&format!(
                        "/components/securitySchemes/{}",
                        escape_token(name)
                    ))
                    .map(|scheme| self.resolve(scheme, &["components", "securitySchemes", name]))
                    .transpose()?;
                let field = |key: &str| {
                    scheme
                        .and_then(|s| s.get(key))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_ascii_lowercase()
                };
                let exported = match scheme.and_then(|s| s.get("x-gateway-auth")) {
                    None => None,
                    Some(Value::String(mode)) if EXPORTED_MODES.contains(&mode.as_str()) => {
                        Some(mode.as_str())
                    }
                    Some(_) => {
                        return Err(self.error(
                            &["components", "securitySchemes", name, "x-gateway-auth"],
                            format!("must be one of {}", EXPORTED_MODES.join(", ")),
                        ))
                    }
                };
                let mode = match (field("type").as_str(), field("in").as_str()) {
                    ("apikey", "query") if exported.is_none_or(|mode| mode == "appcode") => {
                        let parameter = scheme
                            .and_then(|s| s.get("name"))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        options.insert("appcode_query".into(), json!(parameter));
                        Some("appcode")
                    }
                    _ if exported.is_some() => exported,
                    ("apikey", "header") => {
                        let header = field("name");
                        if header != "authorization" && header != "x-apig-appcode" {
                            self.note(
                                &note_at,
                                format!(
                                    "`{name}`: an API key in `{header}` becomes an AppCode, which clients send in `Authorization: APPCODE …` or `X-Apig-AppCode`"
                                ),
                            );
                        }
                        Some("appcode")
                    }
                    ("http", _) if field("scheme") == "basic" => Some("basic"),
                    ("http", _) if field("scheme") == "bearer" && issuers => Some("jwt"),
                    ("openidconnect" | "oauth2", _) if issuers => Some("jwt"),
                    _ => None,
                };
                match mode {
                    Some(mode) => modes.push(mode),
                    None => untranslated.push(format!("`{name}`")),
                }
            }
        }
        modes.sort_unstable();
        modes.dedup();
        let app_modes = modes.iter().filter(|m| **m != "anonymous").count();
        if !untranslated.is_empty() {
            let fallback = if app_modes == 0 {
                modes.push("app");
                "; the gateway asks for an app signature"
            } else {
                ""
            };
            self.note(
                &note_at,
                format!(
                    "security {} is not translated (bearer tokens, OAuth 2 and OpenID Connect become `jwt` when `x-gateway` gives `settings.sign_auth.jwt`; cookie keys have no equivalent){fallback} (x-gateway-auth chooses)",
                    untranslated.join(", ")
                ),
            );
        }
        let auth = match modes.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        Ok((auth, (!options.is_empty()).then_some(options)))
    }

    /// Path-level parameters, overridden by the operation's (same name and place).
    fn parameters(
        &mut self,
        at: &[&str],
        item: &Value,
        operation: &Value,
    ) -> Result<Vec<Value>, SourceError> {
        let mut declared: BTreeMap<(String, String), (Vec<String>, Value)> = BTreeMap::new();
        let mut order = Vec::new();
        let path_at = &at[..2];
        for (owner_at, owner) in [(path_at, item), (at, operation)] {
            let list = owner.get("parameters").and_then(Value::as_array);
            for (index, parameter) in list.into_iter().flatten().enumerate() {
                let index = index.to_string();
                let mut parts: Vec<&str> = owner_at.to_vec();
                parts.push("parameters");
                parts.push(&index);
                let parameter = self.resolve(parameter, &parts)?;
                let name = parameter
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let place = parameter
                    .get("in")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let key = (place.clone(), name.clone());
                if !declared.contains_key(&key) {
                    order.push(key.clone());
                }
                let parts: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
                declared.insert(key, (parts, parameter.clone()));
            }
        }
        let mut out = Vec::new();
        for key in order {
            let Some((parts, parameter)) = declared.remove(&key) else {
                continue;
            };
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            if let Some(converted) = self.parameter(&parts, &parameter)? {
                out.push(converted);
            }
        }
        Ok(out)
    }

    fn parameter(&mut self, at: &[&str], parameter: &Value) -> Result<Option<Value>, SourceError> {
        let name = parameter.get("name").and_then(Value::as_str).unwrap_or("");
        let place = parameter.get("in").and_then(Value::as_str).unwrap_or("");
        if !matches!(place, "query" | "header" | "path") {
            self.note(
                at,
                format!(
                    "`{name}` is a `{place}` parameter, which the gateway does not check; left out"
                ),
            );
            return Ok(None);
        }
        let mut out = Map::new();
        out.insert("name".into(), json!(name));
        out.insert("in".into(), json!(place));
        if parameter.get("required").and_then(Value::as_bool) == Some(true) && place != "path" {
            out.insert("required".into(), json!(true));
        }
        for key in ["style", "explode", "allowReserved", "content"] {
            if parameter.get(key).is_some() {
                let mut note_at = at.to_vec();
                note_at.push(key);
                self.note(
                    &note_at,
                    format!("`{key}` is not read: the value is checked as a plain {place} value"),
                );
            }
        }
        if let Some(schema) = parameter.get("schema") {
            let mut schema_at = at.to_vec();
            schema_at.push("schema");
            let schema = self.inline_schema(&schema_at, schema, 0)?;
            self.constraints(&schema_at, &schema, &mut out, true);
            if place == "path" && out.remove("default").is_some() {
                schema_at.push("default");
                self.note(
                    &schema_at,
                    format!("`{name}` is a path variable, which always has a value: its default is left out"),
                );
            }
        }
        Ok(Some(Value::Object(out)))
    }

    /// A parameter's schema with `$ref`s and `allOf` merged in (parameters
    /// are plain values: nothing recursive to keep).
    fn inline_schema(
        &self,
        at: &[&str],
        schema: &Value,
        depth: usize,
    ) -> Result<Value, SourceError> {
        if depth > 32 {
            return Err(self.error(at, "the schema nests too deep (a $ref cycle?)"));
        }
        let schema = self.resolve(schema, at)?;
        let Some(object) = schema.as_object() else {
            return Ok(schema.clone());
        };
        let mut merged = Map::new();
        for (key, value) in object {
            match key.as_str() {
                "allOf" => {
                    for part in value.as_array().into_iter().flatten() {
                        if let Value::Object(part) = self.inline_schema(at, part, depth + 1)? {
                            for (k, v) in part {
                                merged.entry(k).or_insert(v);
                            }
                        }
                    }
                }
                "items" => {
                    merged.insert(key.clone(), self.inline_schema(at, value, depth + 1)?);
                }
                _ => {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(Value::Object(merged))
    }

    /// JSON Schema keywords as param-validation's constraints.
    fn constraints(
        &mut self,
        at: &[&str],
        schema: &Value,
        out: &mut Map<String, Value>,
        top: bool,
    ) {
        let types: Vec<&str> = match schema.get("type") {
            Some(Value::String(kind)) => vec![kind.as_str()],
            Some(Value::Array(kinds)) => kinds
                .iter()
                .filter_map(Value::as_str)
                .filter(|k| *k != "null")
                .collect(),
            _ => Vec::new(),
        };
        match types.as_slice() {
            [] => {}
            [kind @ ("string" | "integer" | "number" | "boolean" | "array")] => {
                if *kind != "string" {
                    out.insert("type".into(), json!(kind));
                }
            }
            other => self.note(
                at,
                format!("type {other:?} is not a parameter type; checked as a string"),
            ),
        }
        let number = |value: &Value| value.is_number().then(|| value.clone());
        // 3.0: `exclusiveMinimum: true` qualifies `minimum`; 3.1: a number.
        for (bound, exclusive, field, exclusive_field) in [
            (
                "minimum",
                "exclusiveMinimum",
                "minimum",
                "exclusive_minimum",
            ),
            (
                "maximum",
                "exclusiveMaximum",
                "maximum",
                "exclusive_maximum",
            ),
        ] {
            let value = schema.get(bound).and_then(number);
            match (schema.get(exclusive), value.clone()) {
                (Some(Value::Bool(true)), Some(value)) => {
                    out.insert(exclusive_field.into(), value);
                }
                (Some(Value::Number(n)), _) => {
                    out.insert(exclusive_field.into(), json!(n));
                    if let Some(value) = value {
                        out.insert(field.into(), value);
                    }
                }
                (_, Some(value)) => {
                    out.insert(field.into(), value);
                }
                _ => {}
            }
        }
        for (from, to) in [
            ("minLength", "min_length"),
            ("maxLength", "max_length"),
            ("minItems", "min_items"),
            ("maxItems", "max_items"),
        ] {
            if let Some(n) = schema.get(from).and_then(Value::as_u64) {
                out.insert(to.into(), json!(n));
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match crate::ecma::translate(pattern) {
                // OpenAPI's pattern is searched for; param-validation's
                // matches the whole value.
                Ok(pattern) => {
                    out.insert(
                        "pattern".into(),
                        json!(format!("(?s:.)*(?:{pattern})(?s:.)*")),
                    );
                }
                Err(why) => self.note(
                    &[at, &["pattern"]].concat(),
                    format!("`{pattern}` is not checked: {why}"),
                ),
            }
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            let texts = values
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| json!(scalar_text(v)))
                .collect();
            let values = self.once_each(&[at, &["enum"]].concat(), texts);
            out.insert("enum".into(), Value::Array(values));
        }
        if let Some(constant) = schema.get("const") {
            out.insert("enum".into(), json!([scalar_text(constant)]));
        }
        if top {
            if let Some(default) = schema.get("default") {
                out.insert("default".into(), json!(scalar_text(default)));
            }
        }
        if let Some(items) = schema.get("items") {
            let mut item = Map::new();
            let mut items_at = at.to_vec();
            items_at.push("items");
            self.constraints(&items_at, items, &mut item, false);
            out.insert("items".into(), Value::Object(item));
        }
        for (key, value) in schema.as_object().into_iter().flatten() {
            let mut key_at = at.to_vec();
            key_at.push(key);
            match key.as_str() {
                "format" => {
                    let format = value.as_str().unwrap_or("");
                    if !matches!(format, "int32" | "int64" | "float" | "double") {
                        self.note(
                            &key_at,
                            format!("format `{format}` is not checked by the gateway"),
                        );
                    }
                }
                "oneOf" | "anyOf" | "not" | "multipleOf" | "uniqueItems" | "properties" => {
                    self.note(&key_at, format!("`{key}` is not checked for a parameter"));
                }
                _ => {}
            }
        }
    }

    /// A JSON request body's schema, for param-validation (draft 7): the
    /// components it refers to carried along as `definitions`.
    fn body_schema(&mut self, at: &[&str], body: &Value) -> Result<Option<Value>, SourceError> {
        let body = self.resolve(body, at)?;
        let content = body.get("content").and_then(Value::as_object);
        let mut json_schema = None;
        for (media, entry) in content.into_iter().flatten() {
            let mut media_at = at.to_vec();
            media_at.push("content");
            media_at.push(media);
            let is_json = media == "application/json" || media.ends_with("+json");
            match (is_json, entry.get("schema")) {
                (true, Some(schema)) if json_schema.is_none() => {
                    media_at.push("schema");
                    json_schema = Some(self.portable_schema(&media_at, schema)?);
                }
                (true, None) => {}
                _ => self.note(
                    &media_at,
                    format!("`{media}` bodies are not checked by the gateway"),
                ),
            }
        }
        Ok(json_schema)
    }

    /// A schema with every `#/components/schemas/X` it reaches copied into
    /// `definitions` and its references pointed there; OpenAPI 3.0's
    /// `nullable` becomes a `null` type.
    fn portable_schema(&mut self, at: &[&str], schema: &Value) -> Result<Value, SourceError> {
        let mut definitions = Map::new();
        let mut pending = Vec::new();
        let mut out = self.rewrite(at, schema, &mut pending)?;
        while let Some(name) = pending.pop() {
            if definitions.contains_key(&name) {
                continue;
            }
            let parts = ["components", "schemas", name.as_str()];
            let target = self
                .root
                .pointer(&format!("/components/schemas/{}", escape_token(&name)))
                .ok_or_else(|| {
                    self.error(
                        at,
                        format!("`#/components/schemas/{name}` refers to nothing in this document"),
                    )
                })?;
            if target.get("$ref").and_then(Value::as_str)
                == Some(format!("#/components/schemas/{name}").as_str())
            {
                return Err(self.error(
                    &parts,
                    format!("`#/components/schemas/{name}` refers to itself (a $ref cycle)"),
                ));
            }
            definitions.insert(name.clone(), Value::Null);
            let rewritten = self.rewrite(&parts, target, &mut pending)?;
            definitions.insert(name, rewritten);
        }
        if !definitions.is_empty() {
            if let Value::Object(object) = &mut out {
                object.insert("definitions".into(), Value::Object(definitions));
            } else {
                out = json!({ "allOf": [out], "definitions": definitions });
            }
        }
        Ok(out)
    }

    /// A schema rewritten for draft 7; only keyword positions are touched
    /// (a property may be called `deprecated` or `$ref`).
    fn rewrite(
        &mut self,
        at: &[&str],
        schema: &Value,
        pending: &mut Vec<String>,
    ) -> Result<Value, SourceError> {
        let Value::Object(object) = schema else {
            return Ok(schema.clone());
        };
        let mut out = Map::new();
        let mut dropped_property_pattern = false;
        for (key, value) in object {
            let key_at = [at, &[key.as_str()]].concat();
            match key.as_str() {
                "$ref" => {
                    let reference = value.as_str().unwrap_or("");
                    let Some(name) = reference.strip_prefix("#/components/schemas/") else {
                        return Err(self.error(
                            at,
                            format!("`{reference}`: a body schema may refer only to #/components/schemas/"),
                        ));
                    };
                    let name = unescape_token(name);
                    let escaped = escape_token(&name);
                    pending.push(name);
                    out.insert(key.clone(), json!(format!("#/definitions/{escaped}")));
                }
                // Documentation only.
                "example" | "examples" | "xml" | "externalDocs" | "discriminator"
                | "deprecated" => {}
                // Maps of names to schemas.
                "properties" | "definitions" | "$defs" | "dependentSchemas" => {
                    let mut named = Map::new();
                    for (name, child) in value.as_object().into_iter().flatten() {
                        let child_at = [&key_at[..], &[name.as_str()]].concat();
                        named.insert(name.clone(), self.rewrite(&child_at, child, pending)?);
                    }
                    out.insert(key.clone(), Value::Object(named));
                }
                // Patterns to schemas.
                "patternProperties" => {
                    let mut named = Map::new();
                    for (pattern, child) in value.as_object().into_iter().flatten() {
                        let child_at = [&key_at[..], &[pattern.as_str()]].concat();
                        match crate::ecma::translate(pattern) {
                            Ok(translated) => {
                                named.insert(translated, self.rewrite(&child_at, child, pending)?);
                            }
                            Err(why) => {
                                self.note(
                                    &child_at,
                                    format!("the property pattern is not checked: {why}; left out"),
                                );
                                dropped_property_pattern = true;
                            }
                        }
                    }
                    out.insert(key.clone(), Value::Object(named));
                }
                "pattern" => match value.as_str().map(crate::ecma::translate) {
                    Some(Ok(pattern)) => {
                        out.insert(key.clone(), json!(pattern));
                    }
                    Some(Err(why)) => self.note(&key_at, format!("not checked: {why}")),
                    None => {
                        out.insert(key.clone(), value.clone());
                    }
                },
                "enum" => {
                    let values = value.as_array().cloned().unwrap_or_default();
                    out.insert(key.clone(), Value::Array(self.once_each(&key_at, values)));
                }
                // Lists of schemas.
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                    let mut items = Vec::new();
                    for (i, child) in value.as_array().into_iter().flatten().enumerate() {
                        let index = i.to_string();
                        let child_at = [&key_at[..], &[index.as_str()]].concat();
                        items.push(self.rewrite(&child_at, child, pending)?);
                    }
                    out.insert(key.clone(), Value::Array(items));
                }
                // One schema.
                "items"
                | "additionalProperties"
                | "not"
                | "contains"
                | "propertyNames"
                | "if"
                | "then"
                | "else"
                | "additionalItems" => {
                    out.insert(key.clone(), self.rewrite(&key_at, value, pending)?);
                }
                // Values (enum, const, default, required, bounds, …) as written.
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
        // Properties the dropped pattern described must not fall to
        // `additionalProperties` (which may refuse them).
        if dropped_property_pattern && out.remove("additionalProperties").is_some() {
            self.note(
                &[at, &["additionalProperties"]].concat(),
                "left out with the property pattern it completes",
            );
        }
        if out.remove("nullable") == Some(Value::Bool(true)) {
            if let Some(Value::String(kind)) = out.get("type").cloned() {
                out.insert("type".into(), json!([kind, "null"]));
            }
        }
        // OpenAPI 3.0: `exclusiveMinimum: true` qualifies `minimum`.
        for (bound, exclusive) in [
            ("minimum", "exclusiveMinimum"),
            ("maximum", "exclusiveMaximum"),
        ] {
            match out.get(exclusive) {
                Some(Value::Bool(true)) => match out.remove(bound) {
                    Some(value) => {
                        out.insert(exclusive.into(), value);
                    }
                    None => {
                        out.remove(exclusive);
                    }
                },
                Some(Value::Bool(false)) => {
                    out.remove(exclusive);
                }
                _ => {}
            }
        }
        Ok(Value::Object(out))
    }
}

/// An operationId as an API name: letters, digits, `-`, `_`, at most 64.
fn api_name(id: &str) -> String {
    let mut name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-');
    let name: String = name.chars().take(64).collect();
    if name.is_empty() {
        "api".into()
    } else {
        name
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The imported document as an `apis.yaml`, untranslated parts listed on top.
pub fn to_apis_yaml(imported: &Imported, from: &str) -> String {
    let mut out = format!("# Imported by `gatewayctl import` from {from}.\n");
    if imported.untranslated.is_empty() {
        out.push_str("# Everything in it was translated.\n");
    } else {
        out.push_str("# Not translated (JSON Pointers into the OpenAPI document):\n");
        for line in &imported.untranslated {
            out.push_str(&format!("#   {line}\n"));
        }
    }
    out.push_str(&crate::yaml::to_yaml(&imported.document));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import_text(text: &str) -> Result<Imported, String> {
        let source = Source::parse("openapi.yaml", text).map_err(|e| e.to_string())?;
        import_with(&source, true).map_err(|e| e.to_string())
    }

    fn imported(text: &str) -> Imported {
        import_text(text).unwrap_or_else(|err| panic!("{err}"))
    }

    fn error_of(text: &str) -> String {
        match import_text(text) {
            Ok(imported) => panic!("accepted: {}", imported.document),
            Err(err) => err,
        }
    }

    const HEAD: &str = "openapi: 3.0.3\ninfo: { title: t, version: '1' }\nservers: [ { url: 'https://api.example.com/v2/' } ]\n";

    #[test]
    fn the_test_documents_import_and_check() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi");
        for (file, untranslated) in [("orders-3.0.yaml", 4), ("inventory-3.1.json", 1)] {
            let source = Source::read(&format!("{dir}/{file}")).expect("read");
            let imported = import(&source).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                imported.untranslated.len(),
                untranslated,
                "{file}: {:?}",
                imported.untranslated
            );
            let text = to_apis_yaml(&imported, file);
            let apis =
                Source::parse("imported.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(apis.value, imported.document, "the YAML reads back");
            crate::load(&apis).unwrap_or_else(|errors| panic!("{file}: {errors:?}"));
        }
    }

    #[test]
    fn the_first_server_is_the_backend_and_its_path_the_prefix() {
        let doc = imported(&format!(
            "{HEAD}paths:\n  /a:\n    get: {{ operationId: getA }}\n"
        ));
        assert_eq!(
            doc.document["backends"],
            json!([{"name": "backend", "endpoints": ["api.example.com:443"], "tls": {}}])
        );
        assert_eq!(
            doc.document["apis"],
            json!([{"name": "getA", "method": "GET", "path": "/v2/a", "backend": "backend", "auth": "anonymous"}])
        );
    }

    #[test]
    fn parameter_schemas_become_constraints() {
        let doc = imported(&format!(
            "{HEAD}paths:\n  /a/{{id}}:\n    get:\n      parameters:\n\
             \x20       - {{ name: id, in: path, required: true, schema: {{ type: integer, minimum: 0, exclusiveMinimum: true }} }}\n\
             \x20       - {{ name: q, in: query, required: true, schema: {{ type: string, minLength: 1, maxLength: 9, pattern: '^[a-z]+$', default: x }} }}\n\
             \x20       - {{ name: n, in: query, schema: {{ type: number, maximum: 9.5, enum: [1, 2.5] }} }}\n\
             \x20       - {{ name: f, in: query, schema: {{ type: array, minItems: 1, items: {{ type: boolean }} }} }}\n\
             \x20       - {{ name: X-Id, in: header, schema: {{ type: string, format: uuid }} }}\n"
        ));
        assert_eq!(
            doc.document["apis"][0]["parameters"],
            json!([
                {"name": "id", "in": "path", "type": "integer", "exclusive_minimum": 0},
                {"name": "q", "in": "query", "required": true, "min_length": 1, "max_length": 9, "pattern": "(?s:.)*(?:^[a-z]+$)(?s:.)*", "default": "x"},
                {"name": "n", "in": "query", "type": "number", "maximum": 9.5, "enum": ["1", "2.5"]},
                {"name": "f", "in": "query", "type": "array", "min_items": 1, "items": {"type": "boolean"}},
                {"name": "X-Id", "in": "header"},
            ])
        );
        assert_eq!(doc.document["apis"][0]["name"], "get-v2-a-id");
        assert_eq!(
            doc.untranslated,
            ["#/paths/~1a~1{id}/get/parameters/4/schema/format: format `uuid` is not checked by the gateway"]
        );
    }

    #[test]
    fn extensions_say_what_openapi_cannot() {
        let doc = imported(&format!(
            "{HEAD}x-gateway-auth: app\nx-gateway:\n  apps: [ {{ key: k, secrets: [s] }} ]\npaths:\n  /a:\n    get:\n      x-gateway-apps: [k]\n      x-gateway-timeout: 3s\n    post:\n      x-gateway-auth: anonymous\n"
        ));
        assert_eq!(
            doc.document["apps"],
            json!([{"key": "k", "secrets": ["s"]}])
        );
        assert_eq!(doc.document["apis"][0]["auth"], "app");
        assert_eq!(doc.document["apis"][0]["apps"], json!(["k"]));
        assert_eq!(doc.document["apis"][0]["timeout"], "3s");
        assert_eq!(doc.document["apis"][1]["auth"], "anonymous");
        assert_eq!(
            error_of(&format!("{HEAD}paths:\n  /a:\n    get:\n      x-gateway-quota: 3\n")),
            "openapi.yaml:7: #/paths/~1a/get/x-gateway-quota: unknown extension `x-gateway-quota`, expected one of \
             x-gateway-name, x-gateway-auth, x-gateway-apps, x-gateway-policies, x-gateway-mapping, \
             x-gateway-validation, x-gateway-stages, x-gateway-timeout, x-gateway-backend, \
             x-gateway-parameters, x-gateway-body-schema, x-gateway-mock, x-gateway-log, \
             x-gateway-auth-options, x-gateway-any-method, x-gateway-path-prefix, x-gateway-order"
        );
    }

    #[test]
    fn the_extensions_export_writes_give_the_api_back_exactly() {
        let doc = imported(&format!(
            "{HEAD}paths:
  /files:
    get:
      x-gateway-any-method: true
      x-gateway-path-prefix: true
      x-gateway-order: 1
      security: [ {{ key: [] }} ]
      x-gateway-auth-options: null
  /a/{{id}}:
    put:
      x-gateway-order: 0
      parameters: [ {{ name: id, in: path, required: true, schema: {{ type: integer }} }} ]
      requestBody: {{ content: {{ application/json: {{ schema: {{ type: object }} }} }} }}
      x-gateway-parameters: [ {{ name: id, in: path, pattern: '[0-9]+' }} ]
      x-gateway-body-schema: null
components:
  securitySchemes:
    key: {{ type: apiKey, in: query, name: code, x-gateway-auth: appcode }}
"
        ));
        let apis = &doc.document["apis"];
        // Placed by x-gateway-order, not by path.
        assert_eq!(apis[0]["path"], "/v2/a/{id}", "under the server's path");
        assert_eq!(
            apis[0]["parameters"],
            json!([{"name": "id", "in": "path", "pattern": "[0-9]+"}])
        );
        assert!(
            apis[0].get("body_schema").is_none(),
            "null: the API has none"
        );
        assert_eq!(apis[1]["path_prefix"], "/v2/files");
        assert!(apis[1].get("path").is_none() && apis[1].get("method").is_none());
        assert_eq!(apis[1]["auth"], "appcode");
        assert!(
            apis[1].get("auth_options").is_none(),
            "null: the API has none"
        );
        assert_eq!(
            error_of(&format!(
                "{HEAD}paths:\n  /a:\n    get:\n      x-gateway-order: first\n"
            )),
            "openapi.yaml:7: #/paths/~1a/get/x-gateway-order: must be a whole number"
        );
        // Unless strict, only that operation is left out.
        let text = format!(
            "{HEAD}paths:\n  /a:\n    get:\n      x-gateway-order: first\n  /b:\n    get: {{}}\n"
        );
        let lenient = import(&Source::parse("openapi.yaml", &text).unwrap()).unwrap();
        assert_eq!(lenient.document["apis"].as_array().unwrap().len(), 1);
        assert_eq!(
            lenient.untranslated,
            ["#/paths/~1a/get: operation left out: must be a whole number (at /x-gateway-order)"]
        );
    }

    #[test]
    fn body_schemas_keep_property_names_and_convert_3_0_exclusive_bounds() {
        let doc = imported(&format!(
            "{HEAD}paths:\n  /a:\n    post:\n      requestBody: {{ content: {{ application/json: {{ schema: {{ type: object, properties: {{ deprecated: {{ type: boolean }}, n: {{ type: number, minimum: 1, exclusiveMinimum: true, example: 2 }} }} }} }} }} }}\n"
        ));
        assert_eq!(
            doc.document["apis"][0]["body_schema"],
            json!({"type": "object", "properties": {
                "deprecated": {"type": "boolean"},
                "n": {"type": "number", "exclusiveMinimum": 1},
            }})
        );
    }

    #[test]
    fn a_note_keeps_the_document_text_on_its_comment_line() {
        let doc = imported(&format!("{HEAD}paths:\n  /a:\n    get:\n      parameters: [ {{ name: q, in: query, schema: {{ format: \"x\\nversion: 9\" }} }} ]\n"));
        assert_eq!(doc.untranslated, ["#/paths/~1a/get/parameters/0/schema/format: format `x\\nversion: 9` is not checked by the gateway"]);
        assert!(!to_apis_yaml(&doc, "o.yaml").contains("\nversion: 9"));
    }

    #[test]
    fn a_valid_document_always_imports_what_it_can_and_lists_the_rest() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/openapi/awkward-3.0.yaml"
        );
        let text = std::fs::read_to_string(path).expect("test document");
        let source = Source::parse("awkward.yaml", &text).expect("parse");
        let checked = import_checked(&source, "apis.yaml", false).expect("imported");
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        let names: Vec<&str> = checked.imported.document["apis"]
            .as_array()
            .expect("apis")
            .iter()
            .filter_map(|api| api["name"].as_str())
            .collect();
        assert_eq!(names, ["health", "getItem", "createThing"]);
        let notes = checked.imported.untranslated.join("\n");
        for expected in [
            "#/paths/~1elsewhere/get: operation left out: `common.yaml#/components/parameters/Page` is in another document",
            "#/paths/~1anything~1{id}~1{action}~1{id}/get: operation left out: variable `id` appears twice",
            "#/paths/~1items~1{itemId}/get/parameters/0/schema/default: `itemId` is a path variable",
            "#/paths/~1items~1{itemId}/get/parameters/1/schema/enum: repeats \"asc\": each value is kept once",
            "#/paths/~1items~1{itemId}/get/parameters/2/schema/pattern: `^(?=.*[0-9])[a-z0-9]+$` is not checked: lookaround",
            "#/paths/~1things/post/requestBody/content/application~1json/schema/properties/kind/enum: repeats \"a\"",
            "schema/patternProperties/^x-(?!internal): the property pattern is not checked: lookaround",
        ] {
            assert!(notes.contains(expected), "no `{expected}` in\n{notes}");
        }
        let body = &checked.imported.document["apis"][2]["body_schema"];
        assert_eq!(
            body["properties"]["guid"]["pattern"],
            "^(?:\\{[0-9a-fA-F]{8}\\}|\\{[0-9a-fA-F]{4}\\})$"
        );
        // --strict: the first operation that cannot be imported fails it.
        let strict = import_checked(&source, "apis.yaml", true)
            .err()
            .expect("refused");
        assert!(strict.message.contains("common.yaml"), "{strict}");
    }

    #[test]
    fn bad_references_and_versions_are_named() {
        assert_eq!(
            error_of("swagger: '2.0'\npaths: {}\n"),
            "openapi.yaml:1: openapi: Swagger 2.0 is not read: convert it to OpenAPI 3 first"
        );
        assert_eq!(
            error_of(&format!("{HEAD}paths:\n  /a:\n    get:\n      parameters: [ {{ $ref: '#/components/parameters/Nope' }} ]\n")),
            "openapi.yaml:7: #/paths/~1a/get/parameters/0: `#/components/parameters/Nope` refers to nothing in this document"
        );
        assert_eq!(
            error_of(&format!(
                "{HEAD}components:\n  parameters:\n    A: {{ $ref: '#/components/parameters/B' }}\n    B: {{ $ref: '#/components/parameters/A' }}\npaths:\n  /a:\n    get:\n      parameters: [ {{ $ref: '#/components/parameters/A' }} ]\n"
            )),
            "openapi.yaml:11: #/paths/~1a/get/parameters/0: `#/components/parameters/A` refers to itself (a $ref cycle)"
        );
        assert_eq!(
            error_of(&format!("{HEAD}paths:\n  /a:\n    get:\n      parameters: [ {{ $ref: 'other.yaml#/P' }} ]\n")),
            "openapi.yaml:7: #/paths/~1a/get/parameters/0: `other.yaml#/P` is in another document: only references within this file are read"
        );
        assert_eq!(
            error_of(&format!(
                "{HEAD}components:\n  schemas:\n    S: {{ $ref: '#/components/schemas/S' }}\npaths:\n  /a:\n    post:\n      requestBody: {{ content: {{ application/json: {{ schema: {{ $ref: '#/components/schemas/S' }} }} }} }}\n"
            )),
            "openapi.yaml:6: #/components/schemas/S: `#/components/schemas/S` refers to itself (a $ref cycle)"
        );
    }

    #[test]
    fn what_cannot_be_translated_is_listed_with_its_pointer() {
        let doc = imported(&format!(
            "{HEAD}security: [ {{ key: [] }} ]\npaths:\n  /a/{{user-id}}:\n    get: {{}}\n  /b:\n    get:\n      parameters: [ {{ name: c, in: cookie }}, {{ name: s, in: query, style: form, explode: false }} ]\n      requestBody: {{ content: {{ text/plain: {{}} }} }}\n"
        ));
        assert_eq!(
            doc.untranslated,
            [
                "#/paths/~1a~1{user-id}/get: the path variable `user-id` is not a name Envoy's URI templates take (a letter, then letters, digits or `_`, at most 16); the operation is left out",
                "#/paths/~1b/get/security: security `key` is not translated (bearer tokens, OAuth 2 and OpenID Connect become `jwt` when `x-gateway` gives `settings.sign_auth.jwt`; cookie keys have no equivalent); the gateway asks for an app signature (x-gateway-auth chooses)",
                "#/paths/~1b/get/parameters/0: `c` is a `cookie` parameter, which the gateway does not check; left out",
                "#/paths/~1b/get/parameters/1/style: `style` is not read: the value is checked as a plain query value",
                "#/paths/~1b/get/parameters/1/explode: `explode` is not read: the value is checked as a plain query value",
                "#/paths/~1b/get/requestBody/content/text~1plain: `text/plain` bodies are not checked by the gateway",
            ]
        );
        assert_eq!(doc.document["apis"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn security_schemes_become_the_auth_modes_that_take_their_credentials() {
        let doc = imported(&format!(
            "{HEAD}components:
  securitySchemes:
    code: {{ type: apiKey, in: header, name: X-Apig-AppCode }}
    key: {{ type: apiKey, in: query, name: AppCode }}
    other: {{ type: apiKey, in: header, name: X-Api-Key }}
    users: {{ type: http, scheme: basic }}
    token: {{ type: http, scheme: bearer, bearerFormat: JWT }}
paths:
  /a:
    get: {{ security: [ {{ code: [] }}, {{ users: [] }} ] }}
  /b:
    get: {{ security: [ {{ key: [] }}, {{}} ] }}
  /c:
    get: {{ security: [ {{ token: [] }} ] }}
  /d:
    get: {{ security: [ {{ other: [] }}, {{ token: [] }} ] }}
"
        ));
        let apis = &doc.document["apis"];
        assert_eq!(apis[0]["auth"], json!(["appcode", "basic"]));
        assert_eq!(apis[1]["auth"], json!(["anonymous", "appcode"]));
        assert_eq!(apis[1]["auth_options"], json!({"appcode_query": "AppCode"}));
        assert_eq!(apis[2]["auth"], json!("app"));
        assert_eq!(apis[3]["auth"], json!("appcode"));
        // With the issuers given, bearer tokens are JWTs.
        let with_issuers = imported(&format!(
            "{HEAD}x-gateway:\n  settings: {{ sign_auth: {{ jwt: {{ issuers: [ {{ name: idp, jwks_uri: {{ cluster: backend, path: /keys }} }} ] }} }} }}\ncomponents:\n  securitySchemes:\n    token: {{ type: http, scheme: bearer }}\n    oidc: {{ type: openIdConnect, openIdConnectUrl: 'https://idp.example/.well-known/openid-configuration' }}\npaths:\n  /c:\n    get: {{ security: [ {{ token: [] }}, {{ oidc: [] }} ] }}\n"
        ));
        assert_eq!(with_issuers.document["apis"][0]["auth"], json!("jwt"));
        assert!(
            with_issuers.untranslated.is_empty(),
            "{:?}",
            with_issuers.untranslated
        );
        assert_eq!(
            doc.untranslated,
            [
                "#/paths/~1c/get/security: security `token` is not translated (bearer tokens, OAuth 2 and OpenID Connect become `jwt` when `x-gateway` gives `settings.sign_auth.jwt`; cookie keys have no equivalent); the gateway asks for an app signature (x-gateway-auth chooses)",
                "#/paths/~1d/get/security: `other`: an API key in `x-api-key` becomes an AppCode, which clients send in `Authorization: APPCODE …` or `X-Apig-AppCode`",
                "#/paths/~1d/get/security: security `token` is not translated (bearer tokens, OAuth 2 and OpenID Connect become `jwt` when `x-gateway` gives `settings.sign_auth.jwt`; cookie keys have no equivalent) (x-gateway-auth chooses)",
            ]
        );
    }
}
