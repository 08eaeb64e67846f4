//! The Envoy bootstrap of a generated document: listeners, the route
//! table, clusters, and the policies as the gateway module (Wasm or native)
//! or as a chain of single filters.

use crate::format::{Backend, Cors, Document, Listener};
use crate::generate::{Generated, PathKind, Route, RouteAction, Section, StageMatch};
use crate::source::{Source, SourceError};
use serde_json::{json, Map, Value};

/// How the policies are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Every policy in `gateway.wasm`.
    Module,
    /// One `.wasm` filter per policy.
    Chain,
    /// Every policy in the native `libgateway.so`.
    Native,
}

/// Where the built filters are, as Envoy will see the paths.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub wasm_dir: String,
    pub native_module: String,
}

impl Default for Artifacts {
    fn default() -> Self {
        Self {
            wasm_dir: "target/wasm32-wasip1/release".into(),
            native_module: "target/native/libgateway.so".into(),
        }
    }
}

const TYPE_STRING: &str = "type.googleapis.com/google.protobuf.StringValue";

/// `host:port` → (host, port); IPv6 as `[::1]:8080`.
pub fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || host.contains(['/', ' ']) {
        return None;
    }
    Some((host.to_string(), port))
}

/// A duration as written (`500ms`, `2s`, `1.5s`, `5m`, `1h`) as Envoy's
/// protobuf JSON wants it: seconds, `0.5s`.
pub fn duration(text: &str) -> Option<String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        return None;
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let seconds = number.parse::<f64>().ok()? * scale;
    // Below a millisecond would be written `0s`, which Envoy reads as "none".
    let representable = seconds == 0.0 || seconds >= 0.001;
    (seconds.is_finite() && representable && seconds < 315_576_000_000.0).then(|| {
        let text = format!("{seconds:.3}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        format!("{text}s")
    })
}

/// Every duration of the document, checked before anything is written.
pub fn check_durations(document: &Document, source: &Source) -> Result<(), SourceError> {
    let mut durations: Vec<(String, &str)> = Vec::new();
    let t = &document.gateway.timeouts;
    for (field, value) in [
        ("request_headers", &t.request_headers),
        ("request", &t.request),
        ("stream_idle", &t.stream_idle),
        ("connection_idle", &t.connection_idle),
    ] {
        durations.push((format!("gateway.timeouts.{field}"), value));
    }
    for (i, backend) in document.backends.iter().enumerate() {
        let at = format!("backends[{i}]");
        durations.push((format!("{at}.connect_timeout"), &backend.connect_timeout));
        durations.push((format!("{at}.timeout"), &backend.timeout));
        if let Some(per_try) = backend
            .retries
            .as_ref()
            .and_then(|r| r.per_try_timeout.as_ref())
        {
            durations.push((format!("{at}.retries.per_try_timeout"), per_try));
        }
        if let Some(health) = &backend.health_check {
            durations.push((format!("{at}.health_check.interval"), &health.interval));
            durations.push((format!("{at}.health_check.timeout"), &health.timeout));
        }
        if let Some(outlier) = &backend.outlier_detection {
            durations.push((
                format!("{at}.outlier_detection.base_ejection_time"),
                &outlier.base_ejection_time,
            ));
        }
    }
    for (i, api) in document.apis.iter().enumerate() {
        if let Some(timeout) = &api.timeout {
            durations.push((format!("apis[{i}].timeout"), timeout));
        }
    }
    for (at, text) in durations {
        if duration(text).is_none() {
            return Err(source.error(
                &at,
                format!("`{text}` is not a duration (such as `500ms`, `2s`, `1.5s`, `5m`, `1h`)"),
            ));
        }
    }
    for (i, listener) in document.gateway.listeners.iter().enumerate() {
        if split_address(&listener.address).is_none() {
            return Err(source.error(
                &format!("gateway.listeners[{i}].address"),
                format!("`{}` is not `host:port`", listener.address),
            ));
        }
    }
    if let Some(cors) = &document.gateway.cors {
        if cors.allow_credentials && cors.allow_origins.iter().any(|o| o == "*") {
            return Err(source.error(
                "gateway.cors.allow_origins",
                "`*` with `allow_credentials: true` would let any site call the APIs with the user's credentials: list the origins",
            ));
        }
    }
    if let Some(admin) = &document.gateway.admin {
        if split_address(admin).is_none() {
            return Err(source.error("gateway.admin", format!("`{admin}` is not `host:port`")));
        }
    }
    Ok(())
}

fn seconds(text: &str) -> String {
    duration(text).unwrap_or_else(|| text.to_string())
}

fn socket_address(address: &str) -> Value {
    let (host, port) = split_address(address).unwrap_or_else(|| (address.to_string(), 0));
    json!({ "socket_address": { "address": host, "port_value": port } })
}

/// The configuration of the policies as one JSON document (the module's).
pub fn module_document(generated: &Generated) -> Value {
    let mut document = Map::new();
    for (section, config) in &generated.sections {
        document.insert(section.key().into(), config.clone());
    }
    Value::Object(document)
}

/// JSON for people: a value that fits on a line stays on one line.
fn pretty(value: &Value) -> String {
    let mut text = String::new();
    write_json(&mut text, value, 0);
    text.push('\n');
    text
}

const JSON_LINE: usize = 78;

fn write_json(out: &mut String, value: &Value, indent: usize) {
    let compact = value.to_string();
    let fits = indent + compact.len() <= JSON_LINE;
    let inner = " ".repeat(indent + 2);
    match value {
        Value::Object(map) if !fits => {
            out.push_str("{\n");
            for (i, (key, child)) in map.iter().enumerate() {
                out.push_str(&inner);
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_json(out, child, indent + 2);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&" ".repeat(indent));
            out.push('}');
        }
        Value::Array(items) if !fits => {
            out.push_str("[\n");
            for (i, child) in items.iter().enumerate() {
                out.push_str(&inner);
                write_json(out, child, indent + 2);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&" ".repeat(indent));
            out.push(']');
        }
        _ => out.push_str(&compact),
    }
}

/// Which filters read bodies while holding the headers (error-mapping a
/// response's).
fn reads_bodies(section: Section) -> bool {
    section.needs().body
}

/// The HTTP filter entry of one Wasm module of the suite: a policy's
/// `.wasm` (`sign_auth`, …) or the gateway module (`gateway`), configured
/// with `configuration`. The one writer of these entries: the generated
/// configurations, the real-Envoy tests' harness and the bench use it.
/// log-push, response-cache and error-mapping fail open (a record, a hit or
/// a mapping lost never costs a request); the filters that read bodies
/// while holding the headers, and the module, may hold them.
pub fn wasm_filter_entry(module: &str, file: &str, configuration: String) -> Value {
    let section = Section::ALL
        .into_iter()
        .find(|section| section.key() == module);
    // Logging, caching and error mapping are not worth a refused request.
    let fail_open = matches!(
        section,
        Some(Section::LogPush | Section::ResponseCache | Section::ErrorMapping)
    );
    let holds_headers = section.map_or(module == "gateway", reads_bodies);
    wasm_filter(module, file, configuration, fail_open, holds_headers)
}

/// The HTTP filter entry of the native module (`libgateway.so` at `file`)
/// configured with `configuration`, the gateway module's document.
pub fn native_filter_entry(file: &str, configuration: String) -> Value {
    json!({
        "name": NATIVE_FILTER,
        "typed_config": {
            "@type": NATIVE_TYPE,
            "dynamic_module_config": { "module": { "local": { "filename": file } } },
            "filter_name": "gateway",
            "filter_config": { "@type": TYPE_STRING, "value": configuration },
        },
    })
}

/// The native module's filter entry name.
const NATIVE_FILTER: &str = "gateway.module";

fn wasm_filter(
    name: &str,
    file: &str,
    configuration: String,
    fail_open: bool,
    holds_headers: bool,
) -> Value {
    let mut config = json!({
        "name": name,
        "root_id": name,
        "failure_policy": if fail_open { "FAIL_OPEN" } else { "FAIL_CLOSED" },
        "vm_config": {
            "vm_id": name,
            "runtime": "envoy.wasm.runtime.v8",
            "code": { "local": { "filename": file } },
        },
        "configuration": { "@type": TYPE_STRING, "value": configuration },
    });
    if holds_headers {
        config["allow_on_headers_stop_iteration"] = Value::Bool(true);
    }
    json!({
        "name": format!("gateway.{name}"),
        "typed_config": {
            "@type": WASM_TYPE,
            "config": config,
        },
    })
}

/// The policy filters of the HTTP filter chain.
pub fn policy_filters(generated: &Generated, host: Host, artifacts: &Artifacts) -> Vec<Value> {
    if generated.sections.is_empty() {
        return Vec::new();
    }
    match host {
        Host::Module => vec![wasm_filter_entry(
            "gateway",
            &format!("{}/gateway.wasm", artifacts.wasm_dir),
            pretty(&module_document(generated)),
        )],
        Host::Native => vec![native_filter_entry(
            &artifacts.native_module,
            pretty(&module_document(generated)),
        )],
        Host::Chain => generated
            .sections
            .iter()
            .map(|(section, config)| {
                let key = section.key();
                wasm_filter_entry(
                    key,
                    &format!("{}/{key}.wasm", artifacts.wasm_dir),
                    pretty(config),
                )
            })
            .collect(),
    }
}

fn route_match(route: &Route) -> Value {
    let mut matcher = Map::new();
    match &route.path {
        PathKind::Exact(path) => {
            matcher.insert("path".into(), json!(path));
        }
        PathKind::Prefix(prefix) => {
            matcher.insert("prefix".into(), json!(prefix));
        }
        PathKind::Template(template) => {
            matcher.insert(
                "path_match_policy".into(),
                json!({
                    "name": "envoy.path.match.uri_template.uri_template_matcher",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                        "path_template": template,
                    },
                }),
            );
        }
    }
    let mut headers = Vec::new();
    if let Some(method) = &route.method {
        // The filters match methods in any case; so does the route.
        headers.push(
            json!({ "name": ":method", "string_match": { "exact": method, "ignore_case": true } }),
        );
    }
    match &route.stage {
        StageMatch::Any => {}
        StageMatch::Stage(stage) => headers.push(json!({
            "name": "x-ca-stage",
            "string_match": { "exact": stage, "ignore_case": true },
        })),
        StageMatch::Unknown => {
            headers.push(json!({ "name": "x-ca-stage", "present_match": true }));
            headers.push(json!({
                "name": "x-ca-stage",
                "string_match": { "exact": "RELEASE", "ignore_case": true },
                "invert_match": true,
            }));
        }
    }
    if let Some(chosen) = &route.chosen_by_routing {
        headers.push(json!({ "name": "x-gw-route", "string_match": { "exact": chosen } }));
    }
    if !headers.is_empty() {
        matcher.insert("headers".into(), Value::Array(headers));
    }
    Value::Object(matcher)
}

fn route(route: &Route, document: &Document) -> Value {
    let mut out = json!({ "name": route.name, "match": route_match(route) });
    // Envoy's per-route stats, one set per API (its stages and routed
    // choices together): `envoy_vhost_route_upstream_rq_*{envoy_route="<api>"}`.
    if let Some(api) = route.api() {
        out["stat_prefix"] = json!(api);
    }
    if route.chosen_by_routing.is_some() {
        // The routing filter's choice stays at the gateway.
        out["request_headers_to_remove"] = json!(["x-gw-route"]);
    }
    match &route.action {
        RouteAction::Backend {
            backend,
            timeout,
            path_rewrite,
            host_rewrite,
        } => {
            let mut action = json!({ "cluster": backend, "timeout": seconds(timeout) });
            match (path_rewrite, &route.path) {
                (Some(rewrite), PathKind::Template(_)) => {
                    action["path_rewrite_policy"] = json!({
                        "name": "envoy.path.rewrite.uri_template.uri_template_rewriter",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.path.rewrite.uri_template.v3.UriTemplateRewriteConfig",
                            "path_template_rewrite": rewrite,
                        },
                    });
                }
                (Some(rewrite), _) => action["prefix_rewrite"] = json!(rewrite),
                (None, _) => {}
            }
            if let Some(host) = host_rewrite {
                action["host_rewrite_literal"] = json!(host);
            }
            let retries = document
                .backends
                .iter()
                .find(|b| &b.name == backend)
                .and_then(|b| b.retries.as_ref());
            if let Some(retries) = retries {
                let mut policy = json!({
                    "retry_on": retries.on.join(","),
                    "num_retries": retries.attempts,
                });
                if let Some(per_try) = &retries.per_try_timeout {
                    policy["per_try_timeout"] = json!(seconds(per_try));
                }
                action["retry_policy"] = policy;
            }
            if let Some(mirror) = &route.mirror {
                action["request_mirror_policies"] = json!([{
                    "cluster": mirror.backend,
                    "runtime_fraction": { "default_value": {
                        "numerator": mirror.per_ten_thousand,
                        "denominator": "TEN_THOUSAND",
                    } },
                }]);
            }
            out["route"] = action;
        }
        RouteAction::Respond {
            status,
            body,
            headers,
        } => {
            out["direct_response"] = json!({ "status": status, "body": { "inline_string": body } });
            if !headers.is_empty() {
                out["response_headers_to_add"] = headers
                    .iter()
                    .map(|(key, value)| json!({ "header": { "key": key, "value": value } }))
                    .collect();
            }
        }
    }
    out
}

fn cors_policy(cors: &Cors) -> Value {
    let origins: Vec<Value> = cors
        .allow_origins
        .iter()
        .map(|origin| {
            if origin == "*" {
                json!({ "safe_regex": { "regex": ".*" } })
            } else {
                json!({ "exact": origin })
            }
        })
        .collect();
    let mut policy = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "allow_origin_string_match": origins,
        "allow_credentials": cors.allow_credentials,
    });
    for (field, list) in [
        ("allow_methods", &cors.allow_methods),
        ("allow_headers", &cors.allow_headers),
        ("expose_headers", &cors.expose_headers),
    ] {
        if !list.is_empty() {
            policy[field] = json!(list.join(", "));
        }
    }
    if let Some(max_age) = cors.max_age_seconds {
        policy["max_age"] = json!(max_age.to_string());
    }
    policy
}

/// The route table (`gateway`): a virtual host with a route per API and
/// stage, then the not-found answers.
pub fn route_configuration(generated: &Generated) -> Value {
    let document = &generated.document;
    let gateway = &document.gateway;
    let mut virtual_host = json!({
        "name": "api",
        "domains": if gateway.hosts.is_empty() { vec!["*".to_string()] } else { gateway.hosts.clone() },
        "routes": generated.routes.iter().map(|r| route(r, document)).collect::<Vec<_>>(),
    });
    if let Some(cors) = &gateway.cors {
        virtual_host["typed_per_filter_config"] =
            json!({ "envoy.filters.http.cors": cors_policy(cors) });
    }
    json!({ "name": ROUTE_CONFIGURATION, "virtual_hosts": [virtual_host] })
}

/// The name of the one route table.
const ROUTE_CONFIGURATION: &str = "gateway";

/// The connection manager with `policies` (the policy filters) and
/// `routes` (the field naming the route table: `route_config` inline or
/// `rds`).
fn connection_manager(generated: &Generated, policies: Vec<Value>, routes: (&str, Value)) -> Value {
    let gateway = &generated.document.gateway;
    let mut filters = Vec::new();
    if gateway.cors.is_some() {
        filters.push(json!({
            "name": "envoy.filters.http.cors",
            "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors" },
        }));
    }
    filters.extend(policies);
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
    }));
    let timeouts = &gateway.timeouts;
    let mut manager = json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "gateway",
            "codec_type": "AUTO",
            // An edge gateway: the client is the TCP peer.
            "use_remote_address": true,
            "normalize_path": true,
            "merge_slashes": true,
            "path_with_escaped_slashes_action": "REJECT_REQUEST",
            "request_headers_timeout": seconds(&timeouts.request_headers),
            "request_timeout": seconds(&timeouts.request),
            "stream_idle_timeout": seconds(&timeouts.stream_idle),
            "common_http_protocol_options": {
                "idle_timeout": seconds(&timeouts.connection_idle),
                "headers_with_underscores_action": "REJECT_REQUEST",
            },
            "http2_protocol_options": { "max_concurrent_streams": 100 },
            "http_filters": filters,
        },
    });
    manager["typed_config"][routes.0] = routes.1;
    manager
}

fn listener(listener: &Listener, manager: &Value, buffer_limit: u32) -> Value {
    let mut chain = json!({ "filters": [manager] });
    if let Some(tls) = &listener.tls {
        chain["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_params": { "tls_minimum_protocol_version": "TLSv1_2" },
                    "tls_certificates": [{
                        "certificate_chain": { "filename": tls.certificate },
                        "private_key": { "filename": tls.private_key },
                    }],
                },
            },
        });
    }
    json!({
        "name": listener.name,
        "address": socket_address(&listener.address),
        "per_connection_buffer_limit_bytes": buffer_limit,
        "filter_chains": [chain],
    })
}

pub fn cluster(backend: &Backend) -> Value {
    let endpoints: Vec<Value> = backend
        .endpoints
        .iter()
        .map(|endpoint| json!({ "endpoint": { "address": socket_address(endpoint) } }))
        .collect();
    let by_name = backend.endpoints.iter().any(|endpoint| {
        split_address(endpoint).is_some_and(|(host, _)| host.parse::<std::net::IpAddr>().is_err())
    });
    let mut cluster = json!({
        "name": backend.name,
        "type": if by_name { "STRICT_DNS" } else { "STATIC" },
        "connect_timeout": seconds(&backend.connect_timeout),
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": { "cluster_name": backend.name, "endpoints": [{ "lb_endpoints": endpoints }] },
    });
    if let Some(health) = &backend.health_check {
        cluster["health_checks"] = json!([{
            "timeout": seconds(&health.timeout),
            "interval": seconds(&health.interval),
            "no_traffic_interval": seconds(&health.interval),
            "unhealthy_threshold": health.unhealthy_threshold,
            "healthy_threshold": health.healthy_threshold,
            "http_health_check": { "path": health.path },
        }]);
    }
    if let Some(outlier) = &backend.outlier_detection {
        cluster["outlier_detection"] = json!({
            "consecutive_5xx": outlier.consecutive_5xx,
            "base_ejection_time": seconds(&outlier.base_ejection_time),
        });
    }
    if let Some(max) = backend.max_requests {
        cluster["circuit_breakers"] = json!({ "thresholds": [{
            "max_connections": max, "max_pending_requests": max, "max_requests": max,
        }] });
    }
    if let Some(tls) = &backend.tls {
        let sni = tls.sni.clone().unwrap_or_else(|| {
            backend
                .endpoints
                .first()
                .and_then(|e| split_address(e))
                .map(|(host, _)| host)
                .unwrap_or_default()
        });
        cluster["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": sni,
            },
        });
    }
    cluster
}

/// The complete bootstrap.
pub fn bootstrap(generated: &Generated, host: Host, artifacts: &Artifacts) -> Value {
    let manager = connection_manager(
        generated,
        policy_filters(generated, host, artifacts),
        ("route_config", route_configuration(generated)),
    );
    let mut out = with_listeners(generated, &manager);
    out["static_resources"]["clusters"] = json!(generated
        .document
        .backends
        .iter()
        .map(cluster)
        .collect::<Vec<_>>());
    out
}

/// The bootstrap of a gateway whose routes, clusters and policy
/// configurations are published into `dir` (see [`crate::publish`]): the
/// listeners, the admin address and the connection manager's settings are
/// here, taken from the document; the rest is read from `dir` and read
/// again whenever a publish swaps it.
pub fn dynamic_bootstrap(generated: &Generated, host: Host, dir: &str) -> Value {
    let policies = dynamic_filters(host)
        .into_iter()
        .map(|(name, type_url)| {
            json!({
                "name": name,
                "config_discovery": {
                    "config_source": watched(dir, &format!("{name}.json")),
                    "type_urls": type_url,
                },
            })
        })
        .collect();
    let rds = json!({
        "route_config_name": ROUTE_CONFIGURATION,
        "config_source": watched(dir, ROUTES_FILE),
    });
    let manager = connection_manager(generated, policies, ("rds", rds));
    let mut out = with_listeners(generated, &manager);
    out["node"] = json!({ "id": "gateway", "cluster": "gateway" });
    out["dynamic_resources"] = json!({ "cds_config": watched(dir, CLUSTERS_FILE) });
    out
}

/// The file of the published route table.
pub const ROUTES_FILE: &str = "routes.json";
/// The file of the published clusters.
pub const CLUSTERS_FILE: &str = "clusters.json";

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const NATIVE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
/// What an unused policy's filter is in a published chain: Envoy's header
/// mutation filter with nothing to do, a native no-op.
const NO_OP_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";

/// The policy filters of a dynamic bootstrap, each with the configuration
/// types it takes: the module's one filter, or every policy's (a document
/// published later may use a policy this one does not).
fn dynamic_filters(host: Host) -> Vec<(String, Vec<&'static str>)> {
    match host {
        Host::Module => vec![("gateway.gateway".into(), vec![WASM_TYPE])],
        Host::Native => vec![(NATIVE_FILTER.into(), vec![NATIVE_TYPE])],
        Host::Chain => Section::ALL
            .into_iter()
            .map(|section| {
                (
                    format!("gateway.{}", section.key()),
                    vec![WASM_TYPE, NO_OP_TYPE],
                )
            })
            .collect(),
    }
}

/// A resource file in the published directory, read again when an entry
/// is moved into the directory (a publish swaps `..data`, as Kubernetes
/// swaps a mounted ConfigMap's).
fn watched(dir: &str, file: &str) -> Value {
    json!({
        "path_config_source": {
            "path": format!("{}/{file}", dir.trim_end_matches('/')),
            "watched_directory": { "path": dir },
        },
        "resource_api_version": "V3",
    })
}

/// The published resources of a checked document, each with the file it
/// goes in: the route table, the clusters, and a configuration for every
/// policy filter a dynamic bootstrap of any form subscribes to.
pub fn dynamic_resources(generated: &Generated, artifacts: &Artifacts) -> Vec<(String, Value)> {
    let resources = |items: Vec<Value>, type_url: &str| {
        let items: Vec<Value> = items
            .into_iter()
            .map(|mut item| {
                let mut typed = Map::new();
                typed.insert("@type".into(), json!(type_url));
                typed.extend(item.as_object_mut().map(std::mem::take).unwrap_or_default());
                Value::Object(typed)
            })
            .collect();
        json!({ "resources": items })
    };
    let mut files = vec![
        (
            ROUTES_FILE.to_string(),
            resources(
                vec![route_configuration(generated)],
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ),
        ),
        (
            CLUSTERS_FILE.to_string(),
            resources(
                generated.document.backends.iter().map(cluster).collect(),
                "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ),
        ),
    ];
    let document = pretty(&module_document(generated));
    let mut filters = vec![
        wasm_filter_entry(
            "gateway",
            &format!("{}/gateway.wasm", artifacts.wasm_dir),
            document.clone(),
        ),
        native_filter_entry(&artifacts.native_module, document),
    ];
    for section in Section::ALL {
        let key = section.key();
        let configured = generated.sections.iter().find(|(s, _)| *s == section);
        filters.push(match configured {
            Some((_, config)) => wasm_filter_entry(
                key,
                &format!("{}/{key}.wasm", artifacts.wasm_dir),
                pretty(config),
            ),
            None => json!({
                "name": format!("gateway.{key}"),
                "typed_config": { "@type": NO_OP_TYPE },
            }),
        });
    }
    for filter in filters {
        let name = filter["name"].as_str().unwrap_or_default().to_string();
        let extension = json!({ "name": name, "typed_config": filter["typed_config"] });
        files.push((
            format!("{name}.json"),
            resources(
                vec![extension],
                "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            ),
        ));
    }
    files
}

/// How Envoy names the suite's stats for Prometheus: the same in the Wasm
/// and native forms (`envoy_gw_<filter>_<what>`, the form in `gw_host`),
/// and the parts that vary (the policy and code of a refusal, a rule) as
/// labels, so a recording rule sums them:
/// `envoy_gw_denied{gw_policy="throttling",gw_code="A429IP"}`,
/// `envoy_gw_fleet_failure{gw_policy="throttling",gw_code="no_answer"}`,
/// `envoy_gw_throttling_rule_throttled{gw_rule="search_per-client"}`,
/// `envoy_gw_circuit_breaker_state{gw_breaker="flaky"}` (two extractors
/// of one tag name make Envoy warn at every start). `/stats` keeps the
/// full names. The monitoring rules (`monitoring/`) rely on these.
pub fn stats_tags() -> Value {
    const HOST: &str = "(?:wasmcustom|dynamicmodulescustom)";
    json!([
        { "tag_name": "gw_host", "regex": "^((wasmcustom|dynamicmodulescustom)\\.)gw\\." },
        {
            "tag_name": "gw_policy",
            "regex": format!("^{HOST}\\.gw(\\.(\\w+))\\.(?:denied|fleet\\.failure)\\.\\w+$"),
        },
        {
            "tag_name": "gw_code",
            "regex": format!("^{HOST}\\.gw\\.\\w+\\.(?:denied|fleet\\.failure)(\\.(\\w+))$"),
        },
        { "tag_name": "gw_rule", "regex": format!("^{HOST}\\.gw\\.throttling\\.rule(\\.([^.]+))\\.") },
        {
            "tag_name": "gw_breaker",
            "regex": format!("^{HOST}\\.gw\\.circuit_breaker(\\.([^.]+))\\.(?:calls|degraded|open_duration_ms|probes|state|transitions)"),
        },
    ])
}

/// The listeners of the document (or one on :8080) with `manager`, the
/// admin address and the stats' names.
fn with_listeners(generated: &Generated, manager: &Value) -> Value {
    let document = &generated.document;
    let default_listener = [Listener {
        name: "http".into(),
        address: "0.0.0.0:8080".into(),
        tls: None,
    }];
    let listeners = if document.gateway.listeners.is_empty() {
        &default_listener[..]
    } else {
        &document.gateway.listeners[..]
    };
    let mut out = json!({
        "static_resources": {
            "listeners": listeners
                .iter()
                .map(|l| listener(l, manager, document.gateway.buffer_limit_bytes))
                .collect::<Vec<_>>(),
        },
    });
    if let Some(admin) = &document.gateway.admin {
        out["admin"] = json!({ "address": socket_address(admin) });
    }
    out["stats_config"] = json!({ "stats_tags": stats_tags() });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_written_one_line_a_value_when_it_fits() {
        let value = json!({"rules": [{"name": "a", "match": {"path": {"exact": "/a"}}}],
                           "long": ["x".repeat(40), "y".repeat(40)]});
        let text = pretty(&value);
        assert_eq!(
            text,
            format!(
                "{{\n  \"long\": [\n    \"{}\",\n    \"{}\"\n  ],\n  \"rules\": [{{\"match\":{{\"path\":{{\"exact\":\"/a\"}}}},\"name\":\"a\"}}]\n}}\n",
                "x".repeat(40),
                "y".repeat(40)
            )
        );
        assert_eq!(serde_json::from_str::<Value>(&text).ok(), Some(value));
    }

    #[test]
    fn durations_become_seconds() {
        for (text, seconds) in [
            ("500ms", "0.5s"),
            ("2s", "2s"),
            ("1.5s", "1.5s"),
            ("5m", "300s"),
            ("1h", "3600s"),
            ("0.25s", "0.25s"),
        ] {
            assert_eq!(duration(text).as_deref(), Some(seconds), "{text}");
        }
        for bad in ["", "5", "s", "-1s", "1d", "1e3s", "ms"] {
            assert_eq!(duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(
            split_address("127.0.0.1:80"),
            Some(("127.0.0.1".into(), 80))
        );
        assert_eq!(split_address("[::1]:8080"), Some(("::1".into(), 8080)));
        assert_eq!(
            split_address("api.internal:443"),
            Some(("api.internal".into(), 443))
        );
        for bad in ["127.0.0.1", ":80", "a:b", "a:70000"] {
            assert_eq!(split_address(bad), None, "{bad}");
        }
    }
}
