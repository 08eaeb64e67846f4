//! `gatewayctl export openapi`: a checked document's APIs as OpenAPI 3.1,
//! for callers (operations, parameters with their constraints, body
//! schemas, the gateway's address as the server, a security scheme per
//! authentication mode, the error codes each API may answer) so standard
//! generators write client SDKs; with `complete`, also everything else the
//! gateway needs (`x-gateway` and `x-gateway-*`), so `import` of the export
//! gives back the same APIs.

use crate::format::{AuthMode, Document};
use crate::generate::{variables, Generated};
use crate::reference::{self, ApiReference};
use crate::source::Source;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this group's APIs.
    pub group: Option<String>,
    /// For callers of this stage: its APIs, with `X-Ca-Stage` required.
    pub stage: Option<String>,
    /// The gateway's URLs (default: one per listener).
    pub servers: Vec<String>,
    /// Everything the gateway needs too (apps, their secrets included).
    pub complete: bool,
    /// The document's title (default: the file's name).
    pub title: Option<String>,
}

/// The OpenAPI document, and what could not be exported (each named).
pub struct Exported {
    pub document: Value,
    pub warnings: Vec<String>,
    /// The APIs exported, as callers see them.
    pub apis: Vec<ApiReference>,
}

/// The methods an operation can be listed under, in the order a
/// method-less API takes the first one free.
const METHODS: [&str; 8] = [
    "get", "post", "put", "delete", "patch", "head", "options", "trace",
];

/// The name of the security scheme of an authentication mode.
fn scheme_name(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::App => "alibaba_signature",
        AuthMode::HuaweiApp => "huawei_signature",
        AuthMode::Appcode => "appcode",
        AuthMode::Basic => "basic",
        AuthMode::Jwt => "jwt",
        AuthMode::ExtAuth => "authorizer",
        AuthMode::Anonymous => "anonymous",
    }
}

fn security_scheme(mode: AuthMode) -> Value {
    let mut scheme = match mode {
        AuthMode::App => json!({ "type": "apiKey", "in": "header", "name": "X-Ca-Signature" }),
        AuthMode::HuaweiApp => json!({ "type": "http", "scheme": "SDK-HMAC-SHA256" }),
        AuthMode::Appcode => json!({ "type": "apiKey", "in": "header", "name": "X-Apig-AppCode" }),
        AuthMode::Basic => json!({ "type": "http", "scheme": "basic" }),
        AuthMode::Jwt => json!({ "type": "http", "scheme": "bearer", "bearerFormat": "JWT" }),
        AuthMode::ExtAuth | AuthMode::Anonymous => {
            json!({ "type": "apiKey", "in": "header", "name": "Authorization" })
        }
    };
    scheme["description"] = json!(format!(
        "{} (see the gateway's sign-auth documentation).",
        reference::capitalised(reference::auth_summary(mode))
    ));
    scheme["x-gateway-auth"] = json!(mode.name());
    scheme
}

/// The APIs of a checked document `options` select (its group, the APIs
/// its stage serves), as callers see them.
pub fn select(
    source: &Source,
    generated: &Generated,
    options: &Options,
) -> Result<Vec<ApiReference>, String> {
    let document = &generated.document;
    if let Some(group) = &options.group {
        if !document.groups.iter().any(|g| &g.name == group) {
            return Err(format!("--group {group}: the document has no such group"));
        }
    }
    let selected: Vec<ApiReference> = reference::apis(&source.value, document)
        .into_iter()
        .filter(|api| options.group.is_none() || api.group == options.group)
        .filter(|api| match stage_header(options) {
            // Every API serves RELEASE.
            None => true,
            // An API without stages takes every stage's calls.
            Some(stage) => {
                api.stages.is_empty() || api.stages.iter().any(|s| s.eq_ignore_ascii_case(stage))
            }
        })
        .collect();
    if selected.is_empty() {
        return Err("no API is selected (see --group and --stage)".into());
    }
    Ok(selected)
}

/// The export as a YAML file headed by where it comes from.
pub fn to_yaml(file: &str, exported: &Exported) -> String {
    format!(
        "# Written by `gatewayctl export openapi` from {file}.\n{}",
        crate::yaml::to_yaml_without_anchors(&exported.document)
    )
}

/// The `X-Ca-Stage` a caller of the selected stage sends (none for
/// RELEASE, the stage of a request without it).
pub fn stage_header(options: &Options) -> Option<&str> {
    options
        .stage
        .as_deref()
        .filter(|stage| !stage.eq_ignore_ascii_case(crate::stages::RELEASE))
}

/// The gateway's URLs: those given, else one per listener.
pub fn servers(generated: &Generated, options: &Options) -> Vec<String> {
    if options.servers.is_empty() {
        default_servers(&generated.document)
    } else {
        options.servers.clone()
    }
}

/// The title given, else one naming the file.
pub fn title(source: &Source, options: &Options) -> String {
    options.title.clone().unwrap_or_else(|| {
        let name = std::path::Path::new(&source.file)
            .file_name()
            .map_or(source.file.clone(), |n| n.to_string_lossy().into_owned());
        format!("APIs of {name}")
    })
}

/// Exports the APIs of a checked document.
pub fn openapi(
    source: &Source,
    generated: &Generated,
    options: &Options,
) -> Result<Exported, String> {
    let selected = select(source, generated, options)?;
    let servers = servers(generated, options);
    if options.complete {
        if let Some(url) = servers.iter().find(|url| url_path(url).is_some()) {
            return Err(format!(
                "--complete with the server {url}: its path would be put before every API's \
                 path by `import`; give the server without a path"
            ));
        }
    }
    let mut exporter = Exporter {
        options,
        schemas: Map::new(),
        schemes: BTreeMap::new(),
        warnings: Vec::new(),
    };
    exporter
        .schemas
        .insert("GatewayError".into(), gateway_error());
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut tags = Vec::new();
    for (order, api) in selected.iter().enumerate() {
        let item = paths.entry(api.path.clone()).or_default();
        let method = match &api.method {
            Some(method) => Some(method.to_ascii_lowercase()),
            None => METHODS
                .iter()
                .find(|m| !item.contains_key(**m))
                .map(|m| m.to_string()),
        };
        let Some(method) = method.filter(|m| !item.contains_key(m)) else {
            exporter.warnings.push(format!(
                "apis.{}: OpenAPI has one operation per method and path, and {} {} is another \
                 API's already; left out",
                api.name,
                api.method.as_deref().unwrap_or("any method"),
                api.path
            ));
            continue;
        };
        if !METHODS.contains(&method.as_str()) {
            exporter.warnings.push(format!(
                "apis.{}: method {} has no place in OpenAPI; left out",
                api.name,
                method.to_ascii_uppercase()
            ));
            continue;
        }
        if let Some(group) = &api.group {
            if !tags.contains(group) {
                tags.push(group.clone());
            }
        }
        let mut operation = exporter.operation(api);
        if options.complete {
            operation["x-gateway-order"] = json!(order);
        }
        item.insert(method, operation);
    }
    let title = title(source, options);
    let mut out = Map::new();
    out.insert("openapi".into(), json!("3.1.0"));
    out.insert(
        "info".into(),
        json!({
            "title": title,
            "version": "1.0.0",
            "description": format!(
                "Written by `gatewayctl export openapi` from {}. Every refusal of the gateway \
                 has one shape: the status, a JSON body `{{code, message, request_id}}` and the \
                 headers X-Ca-Error-Code, X-Ca-Error-Message, X-Ca-Request-Id. A request no API \
                 matches is answered 404 S404NF.",
                source.file
            ),
        }),
    );
    out.insert(
        "servers".into(),
        Value::Array(
            servers
                .into_iter()
                .map(|url| json!({ "url": url }))
                .collect(),
        ),
    );
    if !tags.is_empty() {
        out.insert(
            "tags".into(),
            Value::Array(
                tags.into_iter()
                    .map(|name| json!({ "name": name }))
                    .collect(),
            ),
        );
    }
    out.insert(
        "paths".into(),
        Value::Object(
            paths
                .into_iter()
                .filter(|(_, item)| !item.is_empty())
                .map(|(path, item)| (path, Value::Object(item)))
                .collect(),
        ),
    );
    let schemes: Map<String, Value> = exporter
        .schemes
        .iter()
        .map(|(name, scheme)| (name.clone(), scheme.clone()))
        .collect();
    let mut components = json!({ "schemas": exporter.schemas });
    if !schemes.is_empty() {
        components["securitySchemes"] = Value::Object(schemes);
    }
    out.insert("components".into(), components);
    if options.complete {
        let mut gateway = source.value.as_object().cloned().unwrap_or_default();
        for field in ["version", "apis", "groups"] {
            gateway.remove(field);
        }
        out.insert("x-gateway".into(), Value::Object(gateway));
    }
    Ok(Exported {
        document: Value::Object(out),
        warnings: exporter.warnings,
        apis: selected,
    })
}

/// The path of a URL, when it has one other than `/`.
fn url_path(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/')
        .map(|at| &rest[at..])
        .filter(|path| *path != "/")
}

/// One server per listener: `localhost` unless the gateway names its hosts.
fn default_servers(document: &Document) -> Vec<String> {
    let host = document
        .gateway
        .hosts
        .iter()
        .find(|h| !h.contains('*'))
        .map(|h| h.split(':').next().unwrap_or(h).to_string())
        .unwrap_or_else(|| "localhost".into());
    let servers: Vec<String> = document
        .gateway
        .listeners
        .iter()
        .map(|listener| {
            let scheme = if listener.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let port = listener.address.rsplit(':').next().unwrap_or("80");
            format!("{scheme}://{host}:{port}")
        })
        .collect();
    if servers.is_empty() {
        vec![format!("http://{host}:8080")]
    } else {
        servers
    }
}

/// The gateway's error shape.
fn gateway_error() -> Value {
    json!({
        "type": "object",
        "description": "A refusal of the gateway (X-Ca-Error-Code and X-Ca-Error-Message carry the same).",
        "required": ["code", "message"],
        "properties": {
            "code": { "type": "string", "description": "The error code, e.g. A429IP." },
            "message": { "type": "string" },
            "request_id": { "type": "string" },
        },
    })
}

struct Exporter<'a> {
    options: &'a Options,
    schemas: Map<String, Value>,
    schemes: BTreeMap<String, Value>,
    warnings: Vec<String>,
}

impl Exporter<'_> {
    fn operation(&mut self, api: &ApiReference) -> Value {
        let mut operation = Map::new();
        operation.insert("operationId".into(), json!(api.name));
        let summary = match (&api.method, api.prefix) {
            (None, true) => format!("{}: any method, every path under {}", api.name, api.path),
            (None, false) => format!("{}: any method", api.name),
            (Some(_), true) => format!("{}: every path under {}", api.name, api.path),
            (Some(_), false) => api.name.clone(),
        };
        operation.insert("summary".into(), json!(summary));
        operation.insert("description".into(), json!(description(api)));
        if let Some(group) = &api.group {
            operation.insert("tags".into(), json!([group]));
        }
        let parameters = self.parameters(api);
        if !parameters.is_empty() {
            operation.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = self.request_body(api) {
            operation.insert("requestBody".into(), body);
        }
        operation.insert("responses".into(), responses(api));
        operation.insert("security".into(), self.security(api));
        if api.method.is_none() {
            operation.insert("x-gateway-any-method".into(), json!(true));
        }
        if api.prefix {
            operation.insert("x-gateway-path-prefix".into(), json!(true));
        }
        if self.options.complete {
            // Every field, null where the API has none: the operation's
            // own parameters, body and security then say nothing more.
            for (extension, field) in crate::openapi::OPERATION_EXTENSIONS {
                let value = api.api.get(field).cloned().unwrap_or(Value::Null);
                operation.insert(extension.into(), value);
            }
        }
        Value::Object(operation)
    }

    /// The declared query, header and path parameters (and the template's
    /// undeclared variables) as OpenAPI parameters.
    fn parameters(&mut self, api: &ApiReference) -> Vec<Value> {
        let mut out = Vec::new();
        let mut declared_path = Vec::new();
        for parameter in &api.parameters {
            let place = parameter["in"].as_str().unwrap_or_default();
            if !matches!(place, "query" | "header" | "path") {
                continue;
            }
            let name = parameter["name"].as_str().unwrap_or_default();
            if place == "path" {
                declared_path.push(name.to_string());
            }
            let mut schema = schema_of(parameter);
            if let Some(default) = parameter.get("default") {
                schema["default"] = typed(parameter, default);
            }
            out.push(json!({
                "name": name,
                "in": place,
                "required": place == "path" || parameter["required"] == true,
                "schema": schema,
            }));
        }
        if !api.prefix {
            for variable in variables(&api.path) {
                if !declared_path.iter().any(|declared| declared == variable) {
                    out.push(json!({
                        "name": variable, "in": "path", "required": true,
                        "schema": { "type": "string" },
                    }));
                }
            }
        }
        if let Some(stage) = stage_header(self.options) {
            out.push(json!({
                "name": "X-Ca-Stage",
                "in": "header",
                "required": true,
                "description": "The stage called.",
                "schema": { "type": "string", "enum": [stage] },
            }));
        }
        out
    }

    /// The JSON body schema (its definitions moved into components), or
    /// the declared form or body fields.
    fn request_body(&mut self, api: &ApiReference) -> Option<Value> {
        if let Some(schema) = &api.body_schema {
            let schema = self.components_schema(&api.name, schema);
            return Some(json!({
                "required": true,
                "content": { "application/json": { "schema": schema } },
            }));
        }
        let fields = |place: &str| -> Map<String, Value> {
            api.parameters
                .iter()
                .filter(|p| p["in"] == place)
                .filter_map(|p| {
                    let name = match place {
                        // A top-level field of the JSON body only.
                        "body" => match p.get("pointer").and_then(Value::as_str) {
                            Some(pointer) => pointer
                                .strip_prefix('/')
                                .filter(|rest| !rest.contains('/'))?
                                .to_string(),
                            None => p["name"].as_str()?.to_string(),
                        },
                        _ => p["name"].as_str()?.to_string(),
                    };
                    Some((name, schema_of(p)))
                })
                .collect()
        };
        let required = |place: &str| -> Vec<Value> {
            api.parameters
                .iter()
                .filter(|p| p["in"] == place && p["required"] == true)
                .map(|p| p["name"].clone())
                .collect()
        };
        let mut content = Map::new();
        for (place, media) in [
            ("form", "application/x-www-form-urlencoded"),
            ("body", "application/json"),
        ] {
            let properties = fields(place);
            if !properties.is_empty() {
                content.insert(
                    media.into(),
                    json!({ "schema": {
                        "type": "object",
                        "properties": properties,
                        "required": required(place),
                    } }),
                );
            }
        }
        (!content.is_empty()).then(|| json!({ "content": content }))
    }

    /// A draft-7 body schema for OpenAPI: its `definitions` become
    /// components (renamed when another API's differ) and its references
    /// follow them.
    fn components_schema(&mut self, api: &str, schema: &Value) -> Value {
        let mut schema = schema.clone();
        let mut renamed = BTreeMap::new();
        if let Some(Value::Object(definitions)) =
            schema.as_object_mut().and_then(|s| s.remove("definitions"))
        {
            for (name, definition) in &definitions {
                let mut chosen = name.clone();
                if self
                    .schemas
                    .get(&chosen)
                    .is_some_and(|existing| existing != definition)
                {
                    chosen = format!("{api}.{name}");
                }
                renamed.insert(name.clone(), chosen);
            }
            for (name, mut definition) in definitions {
                retarget(&mut definition, &renamed);
                self.schemas.insert(renamed[&name].clone(), definition);
            }
        }
        if let Some(object) = schema.as_object_mut() {
            object.remove("$schema");
        }
        retarget(&mut schema, &renamed);
        schema
    }

    fn security(&mut self, api: &ApiReference) -> Value {
        let mut requirements = Vec::new();
        for mode in &api.auth {
            if *mode == AuthMode::Anonymous {
                requirements.push(json!({}));
                continue;
            }
            let name = scheme_name(*mode);
            self.schemes
                .entry(name.into())
                .or_insert_with(|| security_scheme(*mode));
            requirements.push(json!({ name: [] }));
            if let (AuthMode::Appcode, Some(query)) = (mode, &api.appcode_query) {
                let name = format!("appcode_query_{query}");
                let mut scheme = security_scheme(AuthMode::Appcode);
                scheme["in"] = json!("query");
                scheme["name"] = json!(query);
                self.schemes.entry(name.clone()).or_insert(scheme);
                requirements.push(json!({ name: [] }));
            }
        }
        Value::Array(requirements)
    }
}

/// `$ref`s to `#/definitions/X` pointed at the components X became.
fn retarget(schema: &mut Value, renamed: &BTreeMap<String, String>) {
    match schema {
        Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                match (key.as_str(), value.as_str()) {
                    ("$ref", Some(reference)) => {
                        if let Some(name) = reference.strip_prefix("#/definitions/") {
                            let name = crate::openapi::unescape_token(name);
                            let target = renamed.get(&name).cloned().unwrap_or(name);
                            *value = json!(format!(
                                "#/components/schemas/{}",
                                crate::openapi::escape_token(&target)
                            ));
                        }
                    }
                    _ => retarget(value, renamed),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| retarget(item, renamed)),
        _ => {}
    }
}

/// A declared parameter's constraints as a JSON Schema.
fn schema_of(parameter: &Value) -> Value {
    let mut schema = Map::new();
    let kind = parameter["type"].as_str().unwrap_or("string");
    schema.insert("type".into(), json!(kind));
    for (from, to) in [
        ("minimum", "minimum"),
        ("maximum", "maximum"),
        ("exclusive_minimum", "exclusiveMinimum"),
        ("exclusive_maximum", "exclusiveMaximum"),
        ("min_length", "minLength"),
        ("max_length", "maxLength"),
        ("min_items", "minItems"),
        ("max_items", "maxItems"),
    ] {
        if let Some(value) = parameter.get(from) {
            schema.insert(to.into(), value.clone());
        }
    }
    if let Some(pattern) = parameter.get("pattern").and_then(Value::as_str) {
        // The gateway matches the whole value; OpenAPI's pattern searches.
        schema.insert("pattern".into(), json!(format!("^(?:{pattern})$")));
    }
    if let Some(Value::Array(values)) = parameter.get("enum") {
        let values = values.iter().map(|v| typed(parameter, v)).collect();
        schema.insert("enum".into(), Value::Array(values));
    }
    if let Some(items) = parameter.get("items") {
        schema.insert("items".into(), schema_of(items));
    }
    Value::Object(schema)
}

/// A value written as text in apis.yaml, as the parameter's type.
fn typed(parameter: &Value, value: &Value) -> Value {
    let Some(text) = value.as_str() else {
        return value.clone();
    };
    match parameter["type"].as_str() {
        Some("integer") => text.parse::<i64>().map_or(value.clone(), |n| json!(n)),
        Some("number") => text.parse::<f64>().map_or(value.clone(), |n| json!(n)),
        Some("boolean") => text.parse::<bool>().map_or(value.clone(), |b| json!(b)),
        _ => value.clone(),
    }
}

/// The API's answers: its success and each status of the codes it may
/// refuse with.
fn responses(api: &ApiReference) -> Value {
    let mut out = Map::new();
    let status = api.mock_status.unwrap_or(200).to_string();
    let what = if api.mock_status.is_some() {
        "The gateway's own answer."
    } else {
        "The backend's answer."
    };
    out.insert(status, json!({ "description": what }));
    let mut by_status: BTreeMap<u16, Vec<&reference::ErrorCode>> = BTreeMap::new();
    for error in &api.errors {
        by_status.entry(error.status).or_default().push(error);
    }
    for (status, errors) in by_status {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect();
        let codes: Vec<&str> = errors.iter().map(|e| e.code).collect();
        let entry = out.entry(status.to_string()).or_insert_with(|| json!({}));
        entry["description"] = json!(format!("Refused by the gateway. {}.", lines.join("; ")));
        entry["headers"] = json!({
            "X-Ca-Error-Code": { "schema": { "type": "string", "enum": codes } },
        });
        entry["content"] = json!({
            "application/json": { "schema": { "$ref": "#/components/schemas/GatewayError" } },
        });
    }
    Value::Object(out)
}

/// What a caller reads about an API beside its parameters.
fn description(api: &ApiReference) -> String {
    let mut lines = Vec::new();
    let modes: Vec<String> = api
        .auth
        .iter()
        .map(|mode| format!("- {}", reference::auth_summary(*mode)))
        .collect();
    lines.push(format!("Authentication, one of:\n{}", modes.join("\n")));
    if api.apps_restricted {
        lines.push("Only some apps may call it.".into());
    }
    for quota in &api.quotas {
        let exceptions = if quota.exceptions {
            " (some callers have their own limit)"
        } else {
            ""
        };
        lines.push(format!(
            "Quota: {} calls per {} for {}{exceptions}; more are answered 429 with Retry-After.",
            quota.limit, quota.window, quota.per
        ));
    }
    if !api.stages.is_empty() {
        lines.push(format!(
            "Stages: RELEASE (no X-Ca-Stage) and {} (X-Ca-Stage: …).",
            api.stages.join(", ")
        ));
    }
    lines.join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::{bootstrap, Artifacts, Host};
    use crate::openapi::import_checked;

    fn example(name: &str) -> (Source, Generated) {
        let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let source = Source::read(&path).expect("example");
        let generated = crate::load(&source).expect("the example checks");
        (source, generated)
    }

    /// An export written as `gatewayctl export` writes it and imported
    /// again: the apis.yaml text and what the import left out.
    fn reimport(exported: &Value) -> (String, Vec<String>) {
        let text = crate::yaml::to_yaml_without_anchors(exported);
        let source = Source::parse("exported.yaml", &text).expect("the export is YAML");
        let checked = import_checked(&source, "imported.yaml", true).expect("imports");
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        (checked.text, checked.imported.untranslated)
    }

    #[test]
    fn a_complete_export_imports_back_to_the_same_gateway() {
        for name in ["demo.yaml", "shop.yaml"] {
            let (source, generated) = example(name);
            let options = Options {
                complete: true,
                ..Options::default()
            };
            let exported = openapi(&source, &generated, &options).expect("exports");
            assert!(
                exported.warnings.is_empty(),
                "{name}: {:?}",
                exported.warnings
            );
            let (text, _) = reimport(&exported.document);
            let again = Source::parse("imported.yaml", &text).expect("parses");
            let regenerated = crate::load(&again).expect("the import checks");
            assert_eq!(
                regenerated.document.apis.len(),
                generated.document.apis.len(),
                "{name}"
            );
            for host in [Host::Module, Host::Chain, Host::Native] {
                let artifacts = Artifacts::default();
                assert!(
                    bootstrap(&regenerated, host, &artifacts)
                        == bootstrap(&generated, host, &artifacts),
                    "{name}: the round trip changes the {host:?} bootstrap:\n{text}"
                );
            }
        }
    }

    #[test]
    fn a_complete_export_refuses_a_server_path_import_would_add() {
        let (source, generated) = example("shop.yaml");
        let options = Options {
            complete: true,
            servers: vec!["https://api.example.com/v1".into()],
            ..Options::default()
        };
        let error = openapi(&source, &generated, &options)
            .err()
            .expect("refused");
        assert!(error.contains("give the server without a path"), "{error}");
    }

    #[test]
    fn a_stage_selects_the_apis_serving_it() {
        let (source, generated) = example("shop.yaml");
        let all = select(&source, &generated, &Options::default()).expect("all");
        let names = |stage: &str| -> Vec<String> {
            let options = Options {
                stage: Some(stage.into()),
                ..Options::default()
            };
            select(&source, &generated, &options)
                .expect("some")
                .into_iter()
                .map(|api| api.name)
                .collect()
        };
        assert_eq!(
            names("release").len(),
            all.len(),
            "every API serves RELEASE"
        );
        let staged = all.iter().filter(|api| !api.stages.is_empty()).count();
        assert!(staged > 0 && staged < all.len());
        assert_eq!(names("PRE").len(), all.len() - staged, "none has PRE");
        assert_eq!(
            names("test").len(),
            all.len(),
            "the staged APIs all have TEST"
        );
    }

    #[test]
    fn a_callers_export_has_operations_parameters_bodies_and_security() {
        let (source, generated) = example("shop.yaml");
        let exported = openapi(&source, &generated, &Options::default()).expect("exports");
        let document = &exported.document;
        assert_eq!(document["openapi"], "3.1.0");
        assert!(
            document.get("x-gateway").is_none(),
            "no secrets for callers"
        );
        let text = document.to_string();
        assert!(
            !text.contains("\"secrets\""),
            "no app secret in a callers' export"
        );
        assert!(
            !text.contains("x-gateway-backend"),
            "no backend for callers"
        );
        let (imported, _) = reimport(document);
        let imported = Source::parse("imported.yaml", &imported).expect("parses");
        let apis = |value: &Value| -> Vec<(String, Value, Value)> {
            let mut apis: Vec<(String, Value, Value)> = value["apis"]
                .as_array()
                .unwrap()
                .iter()
                .map(|api| {
                    let path = api.get("path").or(api.get("path_prefix")).cloned().unwrap();
                    (
                        api["name"].as_str().unwrap().to_string(),
                        path,
                        api["method"].clone(),
                    )
                })
                .collect();
            apis.sort_by(|a, b| a.0.cmp(&b.0));
            apis
        };
        let original: Vec<(String, Value, Value)> = apis(&source.value)
            .into_iter()
            .map(|(name, path, method)| {
                let method = method
                    .as_str()
                    .map_or(Value::Null, |m| json!(m.to_ascii_uppercase()));
                (name, path, method)
            })
            .collect();
        assert_eq!(apis(&imported.value), original);
    }
}
