//! Deployment as a user does it: the Istio manifests in `envoy/istio`
//! (WasmPlugin and EnvoyFilter), the OCI images `make oci` builds
//! (`scripts/oci.sh`), and those images pushed to a real registry with
//! `skopeo` and pulled back.

use integration_tests::envoy::{
    validate, wasm_module, workspace_root, WasmFilter, NATIVE_FILTER_TYPE,
};
use integration_tests::http;
use integration_tests::istio::{apply_envoy_filter, minimal_gateway};
use integration_tests::registry::{registry_bin, skopeo, skopeo_bin, Registry};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The filters, in the order the gateway runs them.
const FILTERS: [&str; 13] = [
    "sign-auth",
    "ip-acl",
    "ext-auth",
    "access-control",
    "routing",
    "throttling",
    "param-validation",
    "threat-protection",
    "response-cache",
    "error-mapping",
    "request-mapping",
    "circuit-breaker",
    "log-push",
];

/// The filters that read bodies while holding the headers (error-mapping
/// a response's).
const BODY_READERS: [&str; 6] = [
    "sign-auth",
    "access-control",
    "param-validation",
    "threat-protection",
    "error-mapping",
    "request-mapping",
];

/// The repository the manifests pull from (a placeholder users replace).
const REPOSITORY: &str = "registry.example.com/gateway-filters";

/// The tag `make oci` writes: the workspace version.
const TAG: &str = env!("CARGO_PKG_VERSION");

const HCM: &str = "envoy.filters.network.http_connection_manager";
const ROUTER: &str = "envoy.filters.http.router";
const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

fn module(filter: &str) -> String {
    filter.replace('-', "_")
}

/// The filter's own configuration parser, exactly what `on_configure` runs.
fn compile(filter: &str, config: &[u8]) -> Result<(), String> {
    let section = gateway_registry::Section::from_key(&module(filter))
        .unwrap_or_else(|| panic!("unknown filter `{filter}`"));
    gateway_registry::check(section, config).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// The manifests

fn istio_dir() -> PathBuf {
    workspace_root().join("envoy/istio")
}

/// Every YAML document of a file (a multi-document stream), as JSON values.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .enumerate()
        .map(|(i, document)| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} document {}: {e}", path.display(), i + 1))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// (file name, document) for every manifest in envoy/istio.
fn manifests() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = fs::read_dir(istio_dir())
        .unwrap_or_else(|e| panic!("envoy/istio: {e}"))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in envoy/istio");
    files
        .iter()
        .flat_map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            yaml_documents(path)
                .into_iter()
                .map(move |doc| (name.clone(), doc))
        })
        .collect()
}

fn of_kind(kind: &str) -> Vec<Value> {
    manifests()
        .into_iter()
        .map(|(_, doc)| doc)
        .filter(|doc| doc["kind"] == kind)
        .collect()
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// The WasmPlugin of a filter (named `gateway-<filter>`).
fn wasm_plugin(filter: &str) -> Value {
    let name = format!("gateway-{filter}");
    let mut found: Vec<Value> = of_kind("WasmPlugin")
        .into_iter()
        .filter(|doc| doc["metadata"]["name"] == name.as_str())
        .collect();
    assert_eq!(found.len(), 1, "exactly one WasmPlugin {name}");
    found.remove(0)
}

/// The EnvoyFilter of a filter (named `gateway-<filter>`).
fn envoy_filter(filter: &str) -> Value {
    let name = format!("gateway-{filter}");
    let mut found: Vec<Value> = of_kind("EnvoyFilter")
        .into_iter()
        .filter(|doc| doc["metadata"]["name"] == name.as_str())
        .collect();
    assert_eq!(found.len(), 1, "exactly one EnvoyFilter {name}");
    found.remove(0)
}

/// The HTTP_FILTER patch of an EnvoyFilter: the Wasm filter it inserts.
fn http_filter_patch(filter: &Value) -> &Value {
    let patches: Vec<&Value> = filter["spec"]["configPatches"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|patch| patch["applyTo"] == "HTTP_FILTER")
        .collect();
    assert_eq!(patches.len(), 1, "one HTTP_FILTER patch in {filter}");
    patches[0]
}

/// The configuration of the Wasm filter in `envoy/<filter>.yaml`, the
/// example the manifests must carry.
fn example_config(filter: &str) -> Value {
    let path = workspace_root().join(format!("envoy/{filter}.yaml"));
    let documents = yaml_documents(&path);
    let listeners = documents[0]["static_resources"]["listeners"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no listeners", path.display()));
    let configs: Vec<&str> = listeners
        .iter()
        .flat_map(|l| l["filter_chains"].as_array().into_iter().flatten())
        .flat_map(|c| c["filters"].as_array().into_iter().flatten())
        .flat_map(|f| {
            f["typed_config"]["http_filters"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter(|f| f["typed_config"]["@type"] == WASM_FILTER_TYPE)
        .map(|f| str_at(f, "/typed_config/config/configuration/value"))
        .collect();
    assert_eq!(configs.len(), 1, "{}: one Wasm filter", path.display());
    serde_json::from_str(configs[0])
        .unwrap_or_else(|e| panic!("{}: the filter config is not JSON: {e}", path.display()))
}

/// What the filter receives from a WasmPlugin: Istio holds `pluginConfig`
/// as a protobuf Struct (every number a double) and hands it to Envoy as its
/// protojson text, where a whole number prints without a fraction.
fn as_istio_passes_it(value: &Value) -> Value {
    match value {
        Value::Number(number) => {
            let double = number.as_f64().unwrap_or(f64::NAN);
            if double.fract() == 0.0 && double.abs() < 9.0e15 {
                json!(double as i64)
            } else {
                json!(double)
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(as_istio_passes_it).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), as_istio_passes_it(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_istio_manifest_parses_with_a_known_kind_and_known_fields() {
    let all = manifests();
    let files: BTreeSet<&str> = all.iter().map(|(file, _)| file.as_str()).collect();
    assert_eq!(
        files,
        ["envoyfilters.yaml", "wasmplugins.yaml"]
            .into_iter()
            .collect(),
        "the manifest files"
    );
    let wasm_plugin_fields = set(&[
        "selector",
        "targetRefs",
        "url",
        "sha256",
        "imagePullPolicy",
        "imagePullSecret",
        "pluginConfig",
        "pluginName",
        "phase",
        "priority",
        "failStrategy",
        "vmConfig",
        "match",
        "type",
    ]);
    let envoy_filter_fields = set(&[
        "workloadSelector",
        "targetRefs",
        "configPatches",
        "priority",
    ]);
    let mut names = BTreeSet::new();
    for (file, doc) in &all {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let (api_version, fields) = match kind {
            "WasmPlugin" => ("extensions.istio.io/v1alpha1", &wasm_plugin_fields),
            "EnvoyFilter" => ("networking.istio.io/v1alpha3", &envoy_filter_fields),
            other => panic!("{file}: unexpected kind `{other}`"),
        };
        assert_eq!(doc["apiVersion"], api_version, "{file}: {kind}");
        assert_eq!(
            keys(doc),
            set(&["apiVersion", "kind", "metadata", "spec"]),
            "{file}: top-level fields"
        );
        let name = str_at(doc, "/metadata/name");
        let namespace = str_at(doc, "/metadata/namespace");
        assert!(
            names.insert(format!("{kind}/{namespace}/{name}")),
            "{file}: {kind} {namespace}/{name} defined twice"
        );
        let unknown: Vec<String> = keys(&doc["spec"]).difference(fields).cloned().collect();
        assert!(
            unknown.is_empty(),
            "{file}: {name}: unknown fields {unknown:?}"
        );
    }
    // One of each per filter, and the fleet store's cluster.
    for kind in ["WasmPlugin", "EnvoyFilter"] {
        let found: BTreeSet<String> = of_kind(kind)
            .iter()
            .map(|doc| str_at(doc, "/metadata/name").to_string())
            .collect();
        let mut expected: BTreeSet<String> =
            FILTERS.iter().map(|f| format!("gateway-{f}")).collect();
        if kind == "EnvoyFilter" {
            expected.insert(FLEET_STORE_FILTER.to_string());
        }
        assert_eq!(found, expected, "the {kind}s");
    }
}

/// Istio's order of WasmPlugins: by phase, then by priority, higher first
/// (ties are broken by name, which the manifests must not rely on).
fn phase_rank(phase: &str) -> u8 {
    match phase {
        "AUTHN" => 1,
        "AUTHZ" => 2,
        "STATS" => 3,
        // UNSPECIFIED_PHASE: at the end of the chain, right before the router.
        "UNSPECIFIED_PHASE" | "" => 4,
        other => panic!("unknown phase `{other}`"),
    }
}

#[test]
fn wasm_plugins_run_in_the_gateway_order_with_their_fail_strategies() {
    let mut placed = Vec::new();
    let mut slots = BTreeSet::new();
    for filter in FILTERS {
        let plugin = wasm_plugin(filter);
        let spec = &plugin["spec"];
        let phase = spec["phase"].as_str().unwrap_or_default();
        let priority = spec["priority"]
            .as_i64()
            .unwrap_or_else(|| panic!("{filter}: priority must be set explicitly"));
        assert!(
            i32::try_from(priority).is_ok(),
            "{filter}: priority is an int32"
        );
        assert!(
            slots.insert((phase_rank(phase), priority)),
            "{filter}: another plugin has phase {phase} and priority {priority}: the order would depend on names"
        );
        placed.push((phase_rank(phase), -priority, filter));

        // The image `make oci` builds, under the placeholder repository.
        assert_eq!(
            spec["url"],
            format!("oci://{REPOSITORY}/{filter}:{TAG}").as_str(),
            "{filter}: url"
        );
        assert_eq!(spec["pluginName"], module(filter).as_str(), "{filter}");
        assert_eq!(spec["type"], "HTTP", "{filter}");
        assert!(
            ["IfNotPresent", "Always"].contains(&str_at(spec, "/imagePullPolicy")),
            "{filter}: imagePullPolicy"
        );

        // On the ingress gateway: a selector or targetRefs, never both.
        assert!(
            spec.get("selector").is_some() != spec.get("targetRefs").is_some(),
            "{filter}: exactly one of selector and targetRefs"
        );
        if let Some(selector) = spec.get("selector") {
            assert_eq!(
                selector["matchLabels"]["istio"], "ingressgateway",
                "{filter}: selector"
            );
        }

        let strategy = str_at(spec, "/failStrategy");
        let expected = match filter {
            // Authentication and access control, and the filters whose
            // absence would let unchecked or wrongly shaped requests through.
            "sign-auth" | "ip-acl" | "ext-auth" | "access-control" | "routing"
            | "param-validation" | "threat-protection" | "request-mapping" => "FAIL_CLOSE",
            // Capacity protection and logging: their failure must not
            // become an outage.
            "throttling" | "response-cache" | "error-mapping" | "circuit-breaker" | "log-push" => {
                "FAIL_OPEN"
            }
            other => panic!("{other}"),
        };
        assert_eq!(strategy, expected, "{filter}: failStrategy");
    }
    placed.sort();
    let order: Vec<&str> = placed.iter().map(|(_, _, filter)| *filter).collect();
    assert_eq!(
        order, FILTERS,
        "the chain Istio builds from phases and priorities"
    );
    // Authentication before Istio's authentication filters, logging last.
    assert_eq!(wasm_plugin("sign-auth")["spec"]["phase"], "AUTHN");
    assert_eq!(wasm_plugin("ip-acl")["spec"]["phase"], "AUTHZ");
    assert_eq!(wasm_plugin("log-push")["spec"]["phase"], "STATS");
}

#[test]
fn every_plugin_config_is_the_example_and_the_filter_accepts_it() {
    for filter in FILTERS {
        let plugin = wasm_plugin(filter);
        let config = &plugin["spec"]["pluginConfig"];
        assert!(config.is_object(), "{filter}: pluginConfig is a map");
        let text = serde_json::to_string(&as_istio_passes_it(config)).expect("JSON");
        if let Err(reason) = compile(filter, text.as_bytes()) {
            panic!("{filter}: the WasmPlugin's pluginConfig is refused: {reason}\n{text}");
        }

        let mut expected = example_config(filter);
        if FLEET_FILTERS.contains(&filter) {
            // The example with the fleet store: Istio's cluster for Webdis.
            expected["fleet"] = json!({"store": {
                "cluster": "outbound|7379||webdis.gateway.svc.cluster.local",
                "authority": "webdis.gateway.svc.cluster.local:7379"
            }});
        }
        if filter == "ext-auth" {
            // The only difference: the authorizer is Istio's own cluster for
            // its Service, with the Host to send.
            let authorizer = &mut expected["authorizer"];
            authorizer["cluster"] = json!("outbound|8080||authorizer.auth.svc.cluster.local");
            authorizer["authority"] = json!("authorizer.auth.svc.cluster.local:8080");
        }
        if filter == "log-push" {
            // The only difference: the sink is Istio's own cluster for the
            // ClickHouse Service, with the Host to send.
            let sink = &mut expected["sink"];
            sink["cluster"] = json!("outbound|8123||clickhouse.logging.svc.cluster.local");
            sink["authority"] = json!("clickhouse.logging.svc.cluster.local:8123");
        }
        assert_eq!(
            as_istio_passes_it(config),
            as_istio_passes_it(&expected),
            "{filter}: pluginConfig differs from envoy/{filter}.yaml"
        );
    }
}

#[test]
fn every_envoy_filter_config_is_the_example_and_the_filter_accepts_it() {
    for filter in FILTERS {
        let manifest = envoy_filter(filter);
        let spec = &manifest["spec"];
        assert_eq!(
            spec["workloadSelector"]["labels"]["istio"], "ingressgateway",
            "{filter}: workloadSelector"
        );
        let patch = http_filter_patch(&manifest);
        assert_eq!(patch["match"]["context"], "GATEWAY", "{filter}");
        assert_eq!(
            patch["match"]["listener"]["filterChain"]["filter"]["name"], HCM,
            "{filter}"
        );
        assert_eq!(
            patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"], ROUTER,
            "{filter}"
        );
        assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE", "{filter}");

        let value = &patch["patch"]["value"];
        assert_eq!(
            value["name"],
            format!("gateway.{}", module(filter)).as_str()
        );
        assert_eq!(value["typed_config"]["@type"], WASM_FILTER_TYPE, "{filter}");
        let config = &value["typed_config"]["config"];
        assert_eq!(config["root_id"], module(filter).as_str(), "{filter}");
        assert_eq!(
            config["vm_config"]["runtime"], "envoy.wasm.runtime.v8",
            "{filter}"
        );
        assert_eq!(
            config["allow_on_headers_stop_iteration"].as_bool() == Some(true),
            BODY_READERS.contains(&filter),
            "{filter}: allow_on_headers_stop_iteration is for the filters that read bodies"
        );
        assert!(
            config.get("fail_open").is_none(),
            "{filter}: fail_open is deprecated, use failure_policy"
        );
        let expected_policy = match str_at(&wasm_plugin(filter), "/spec/failStrategy") {
            "FAIL_CLOSE" => "FAIL_CLOSED",
            "FAIL_OPEN" => "FAIL_OPEN",
            other => panic!("{other}"),
        };
        assert_eq!(
            config["failure_policy"], expected_policy,
            "{filter}: the same failure choice as its WasmPlugin"
        );

        assert_eq!(config["configuration"]["@type"], STRING_VALUE_TYPE);
        let text = str_at(config, "/configuration/value");
        if let Err(reason) = compile(filter, text.as_bytes()) {
            panic!("{filter}: the EnvoyFilter's configuration is refused: {reason}\n{text}");
        }
        let parsed: Value = serde_json::from_str(text).expect("the StringValue is JSON");
        let mut expected = example_config(filter);
        if FLEET_FILTERS.contains(&filter) {
            // The example with the fleet store, whose cluster
            // gateway-fleet-store adds.
            expected["fleet"] = json!({"store": {"cluster": "fleet_store"}});
        }
        assert_eq!(
            parsed, expected,
            "{filter}: configuration differs from envoy/{filter}.yaml"
        );
    }
}

/// sign-auth, throttling and circuit-breaker keep their state in the fleet store.
const FLEET_FILTERS: [&str; 3] = ["sign-auth", "throttling", "circuit-breaker"];
const FLEET_STORE_FILTER: &str = "gateway-fleet-store";

fn fleet_store_filter() -> Value {
    let mut found: Vec<Value> = of_kind("EnvoyFilter")
        .into_iter()
        .filter(|doc| doc["metadata"]["name"] == FLEET_STORE_FILTER)
        .collect();
    assert_eq!(found.len(), 1, "one {FLEET_STORE_FILTER}");
    found.remove(0)
}

#[test]
fn the_fleet_store_cluster_is_added_once_for_the_filters_that_name_it() {
    let store = fleet_store_filter();
    let patches = store["spec"]["configPatches"].as_array().expect("patches");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0]["applyTo"], "CLUSTER");
    assert_eq!(patches[0]["patch"]["operation"], "ADD");
    assert_eq!(patches[0]["match"]["context"], "GATEWAY");
    let cluster = str_at(&patches[0], "/patch/value/name");
    for filter in FLEET_FILTERS {
        let manifest = envoy_filter(filter);
        let text = str_at(
            http_filter_patch(&manifest),
            "/patch/value/typed_config/config/configuration/value",
        );
        let config: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(str_at(&config, "/fleet/store/cluster"), cluster, "{filter}");
        let plugin = wasm_plugin(filter);
        let istio_cluster = str_at(&plugin, "/spec/pluginConfig/fleet/store/cluster");
        assert!(
            istio_cluster.starts_with("outbound|7379||webdis."),
            "{filter}: {istio_cluster}"
        );
    }
}

/// The filters whose EnvoyFilter adds the cluster they call, and where
/// their configuration names it.
const CLUSTER_ADDING_FILTERS: [(&str, &str); 2] = [
    ("ext-auth", "/authorizer/cluster"),
    ("log-push", "/sink/cluster"),
];

#[test]
fn the_filters_that_call_a_cluster_have_their_envoy_filter_add_it() {
    for (filter, pointer) in CLUSTER_ADDING_FILTERS {
        let manifest = envoy_filter(filter);
        let text = str_at(
            http_filter_patch(&manifest),
            "/patch/value/typed_config/config/configuration/value",
        );
        let config: Value = serde_json::from_str(text).expect("JSON");
        let clusters: Vec<&Value> = manifest["spec"]["configPatches"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|patch| patch["applyTo"] == "CLUSTER")
            .collect();
        assert_eq!(clusters.len(), 1, "{filter}: one CLUSTER patch");
        assert_eq!(clusters[0]["patch"]["operation"], "ADD", "{filter}");
        assert_eq!(clusters[0]["match"]["context"], "GATEWAY", "{filter}");
        assert_eq!(
            clusters[0]["patch"]["value"]["name"],
            str_at(&config, pointer),
            "{filter}"
        );
    }
    // No other EnvoyFilter adds clusters.
    for filter in FILTERS
        .iter()
        .filter(|f| !CLUSTER_ADDING_FILTERS.iter().any(|(name, _)| name == *f))
    {
        let other = envoy_filter(filter);
        assert_eq!(
            other["spec"]["configPatches"].as_array().map(Vec::len),
            Some(1),
            "{filter}: only its HTTP_FILTER patch"
        );
    }
}

// ---------------------------------------------------------------------------
// EnvoyFilter patches applied to a real Envoy config

/// A gateway as Istio builds one, reduced to what the patches match: a
/// listener whose HTTP connection manager has only the router.
fn http_filter_names(config: &Value) -> Vec<String> {
    config
        .pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|f| f["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn assert_validates(config: &Value, what: &str) {
    let text = serde_json::to_string_pretty(config).expect("JSON");
    let (ok, output) = validate(&text, "json");
    assert!(
        ok && output.contains("OK"),
        "{what}: refused by envoy --mode validate:\n{output}\n{text}"
    );
}

#[test]
fn every_envoy_filter_patch_passes_envoy_validate_alone_and_all_together() {
    // Each one alone, in parallel: a real Envoy loads the module and runs
    // the filter's configuration check.
    std::thread::scope(|scope| {
        for filter in FILTERS {
            scope.spawn(move || {
                let mut config = minimal_gateway();
                apply_envoy_filter(&mut config, &envoy_filter(filter));
                assert_eq!(
                    http_filter_names(&config),
                    [format!("gateway.{}", module(filter)), ROUTER.to_string()]
                );
                assert_validates(&config, filter);
            });
        }
    });

    // All of them, applied as Istio does: by ascending priority.
    let mut envoy_filters: Vec<Value> = FILTERS.iter().map(|f| envoy_filter(f)).collect();
    envoy_filters.push(fleet_store_filter());
    let priorities: BTreeSet<i64> = envoy_filters
        .iter()
        .map(|f| {
            f["spec"]["priority"]
                .as_i64()
                .expect("an explicit priority")
        })
        .collect();
    assert_eq!(priorities.len(), FILTERS.len() + 1, "distinct priorities");
    envoy_filters.sort_by_key(|f| f["spec"]["priority"].as_i64());
    let mut config = minimal_gateway();
    for envoy_filter in &envoy_filters {
        apply_envoy_filter(&mut config, envoy_filter);
    }
    let mut expected: Vec<String> = FILTERS
        .iter()
        .map(|f| format!("gateway.{}", module(f)))
        .collect();
    expected.push(ROUTER.to_string());
    assert_eq!(http_filter_names(&config), expected, "the chain");
    let clusters: Vec<&str> = config["static_resources"]["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        clusters,
        ["backend", "fleet_store", "authorizer", "clickhouse"]
    );
    assert_validates(&config, "the whole chain");
}

#[test]
fn the_native_module_envoy_filter_passes_envoy_validate_and_its_sections_are_accepted() {
    let path = istio_dir().join("native/gateway-native.yaml");
    let documents = yaml_documents(&path);
    assert_eq!(documents.len(), 1, "one EnvoyFilter");
    let envoy_filter = &documents[0];
    assert_eq!(envoy_filter["kind"], "EnvoyFilter");
    let patch = &envoy_filter["spec"]["configPatches"][0]["patch"]["value"];
    assert_eq!(patch["typed_config"]["@type"], NATIVE_FILTER_TYPE);
    assert_eq!(patch["typed_config"]["filter_name"], "gateway");
    // Each section is accepted by its policy's own parser.
    let document: Value = serde_json::from_str(str_at(patch, "/typed_config/filter_config/value"))
        .expect("the module's document is JSON");
    let sections = document.as_object().expect("an object");
    assert!(!sections.is_empty());
    for (section, config) in sections {
        let filter = section.replace('_', "-");
        compile(&filter, config.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{section}: {e}"));
    }
    // And a real Envoy loads the module and the document.
    let mut config = minimal_gateway();
    apply_envoy_filter(&mut config, envoy_filter);
    assert_eq!(
        http_filter_names(&config),
        ["gateway.native".to_string(), ROUTER.to_string()]
    );
    assert_validates(&config, "the native module");
}

// ---------------------------------------------------------------------------
// The OCI images

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs scripts/oci.sh (what `make oci` runs) on the modules built here,
/// writing into `out`.
fn run_oci_script(out: &Path) -> String {
    let wasm_dir = wasm_module("ip_acl")
        .parent()
        .map(Path::to_path_buf)
        .expect("the module directory");
    for filter in FILTERS {
        wasm_module(&module(filter)); // each one is built, or a clear message
    }
    let output = Command::new("bash")
        .arg(workspace_root().join("scripts/oci.sh"))
        .env("WASM_DIR", &wasm_dir)
        .env("OCI_DIR", out)
        .env_remove("OCI_TAG")
        .env_remove("SOURCE_DATE_EPOCH")
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("run scripts/oci.sh: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "scripts/oci.sh failed:\n{text}");
    text
}

/// A blob of an OCI layout, checked against its descriptor (size and digest).
fn blob(layout: &Path, descriptor: &Value) -> Vec<u8> {
    let digest = str_at(descriptor, "/digest");
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{digest}: not a sha256 digest"));
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{digest}: malformed"
    );
    let path = layout.join("blobs/sha256").join(hex);
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        Some(bytes.len() as u64),
        descriptor["size"].as_u64(),
        "{}: size",
        path.display()
    );
    assert_eq!(sha256_hex(&bytes), hex, "{}: digest", path.display());
    bytes
}

/// Checks one image layout against the OCI image layout and Wasm image
/// specs, and that its module is `wasm`: returns (manifest descriptor,
/// manifest).
fn check_image_layout(layout: &Path, name: &str, wasm: &[u8]) -> (Value, Value) {
    assert_eq!(
        read_json(&layout.join("oci-layout")),
        json!({"imageLayoutVersion": "1.0.0"}),
        "{name}: oci-layout"
    );
    let index = read_json(&layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2, "{name}: index.json");
    if let Some(media_type) = index.get("mediaType") {
        assert_eq!(media_type, INDEX_MEDIA_TYPE, "{name}: index.json");
    }
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{name}: one manifest");
    let manifest_descriptor = manifests[0].clone();
    assert_eq!(
        manifest_descriptor["mediaType"], MANIFEST_MEDIA_TYPE,
        "{name}"
    );
    assert_eq!(
        manifest_descriptor["annotations"]["org.opencontainers.image.ref.name"], TAG,
        "{name}: tag"
    );
    let manifest: Value =
        serde_json::from_slice(&blob(layout, &manifest_descriptor)).expect("manifest JSON");
    assert_eq!(manifest["schemaVersion"], 2, "{name}: manifest");
    assert_eq!(
        manifest["mediaType"], MANIFEST_MEDIA_TYPE,
        "{name}: manifest"
    );

    // The config: the Wasm image spec's runtime config.
    let config = &manifest["config"];
    assert_eq!(
        config["mediaType"], WASM_CONFIG_MEDIA_TYPE,
        "{name}: config"
    );
    let runtime: Value = serde_json::from_slice(&blob(layout, config)).expect("config JSON");
    assert_eq!(runtime["type"], "envoy_proxy", "{name}: runtime config");
    assert_eq!(
        runtime["abiVersions"],
        json!(["proxy_abi_version_0_2_1"]),
        "{name}: the proxy-wasm ABI the module exports"
    );
    assert_eq!(
        runtime["config"]["root_ids"],
        json!([module(name)]),
        "{name}: root ids"
    );

    // Two layers, as Istio requires of this variant: the runtime config and
    // the module, whose bytes are the .wasm file's.
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2, "{name}: layers");
    assert_eq!(layers[0]["mediaType"], WASM_CONFIG_MEDIA_TYPE, "{name}");
    assert_eq!(layers[0]["digest"], config["digest"], "{name}");
    blob(layout, &layers[0]);
    assert_eq!(layers[1]["mediaType"], WASM_LAYER_MEDIA_TYPE, "{name}");
    assert_eq!(
        layers[1]["annotations"]["org.opencontainers.image.title"],
        "plugin.wasm"
    );
    let module_bytes = blob(layout, &layers[1]);
    assert!(
        module_bytes == wasm,
        "{name}: the layer is not the .wasm file"
    );
    assert_eq!(
        manifest["annotations"]["module.wasm.runtime/type"],
        "envoy_proxy"
    );

    // Nothing else in the layout.
    let referenced: BTreeSet<String> = [&manifest_descriptor, config, &layers[1]]
        .iter()
        .map(|d| {
            str_at(d, "/digest")
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect();
    let present: BTreeSet<String> = fs::read_dir(layout.join("blobs/sha256"))
        .expect("blobs")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(present, referenced, "{name}: blobs");
    (manifest_descriptor, manifest)
}

/// Every file under `dir`, by relative path.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)
            .expect("read dir")
            .filter_map(|e| e.ok())
        {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("under dir").to_path_buf();
                files.insert(relative, fs::read(&path).expect("read file"));
            }
        }
    }
    files
}

#[test]
fn make_oci_builds_a_wasm_image_layout_per_filter_and_is_idempotent() {
    let out = tempfile::Builder::new()
        .prefix("gw-oci-")
        .tempdir()
        .expect("temp dir");
    let printed = run_oci_script(out.path());
    let first = snapshot(out.path());
    run_oci_script(out.path());
    assert!(
        snapshot(out.path()) == first,
        "a second run changed the layouts: the images must be reproducible"
    );

    let images: BTreeSet<String> = fs::read_dir(out.path())
        .expect("read OCI_DIR")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for filter in FILTERS {
        assert!(
            images.contains(filter),
            "no layout for {filter}: {images:?}"
        );
    }
    for image in &images {
        assert!(
            !image.starts_with('.'),
            "scripts/oci.sh left {image} behind"
        );
        let wasm = fs::read(wasm_module(&module(image))).expect("the module");
        let (descriptor, _) = check_image_layout(&out.path().join(image), image, &wasm);
        // The digest the script prints is the one users pin.
        assert!(
            printed.contains(str_at(&descriptor, "/digest")),
            "{image}: digest not printed:\n{printed}"
        );
    }

    // What the WasmPlugins pull is what was built: <repository>/<layout>:<tag>.
    for filter in FILTERS {
        let url = str_at(&wasm_plugin(filter), "/spec/url").to_string();
        let reference = url
            .strip_prefix(&format!("oci://{REPOSITORY}/"))
            .unwrap_or_else(|| panic!("{url}"));
        let (image, tag) = reference.split_once(':').expect("a tag");
        assert!(images.contains(image), "{url}: make oci builds no {image}");
        let index = read_json(&out.path().join(image).join("index.json"));
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], tag,
            "{url}"
        );
    }
}

#[test]
fn images_pushed_with_skopeo_are_pulled_back_unchanged() {
    // Both tools are part of the set-up: missing means `make setup` was not run.
    skopeo_bin();
    registry_bin();
    let work = tempfile::Builder::new()
        .prefix("gw-oci-push-")
        .tempdir()
        .expect("temp dir");
    let built = work.path().join("built");
    run_oci_script(&built);
    let registry = Registry::start();

    for filter in FILTERS {
        let wasm = fs::read(wasm_module(&module(filter))).expect("the module");
        let layout = built.join(filter);
        let (descriptor, manifest) = check_image_layout(&layout, filter, &wasm);
        let manifest_digest = str_at(&descriptor, "/digest");
        let remote = format!("{}/gateway-filters/{filter}:{TAG}", registry.address());

        // Push, as the README tells users to.
        skopeo(
            work.path(),
            &[
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{}:{TAG}", layout.display()),
                &format!("docker://{remote}"),
            ],
        );

        // Fetch it the way Istio's agent does (registry API v2): the
        // manifest by tag, byte for byte, then the layer with the Wasm
        // media type among exactly two.
        let base = format!("http://{}/v2/gateway-filters/{filter}", registry.address());
        let response = http::get(
            &format!("{base}/manifests/{TAG}"),
            &[("accept", MANIFEST_MEDIA_TYPE)],
        )
        .unwrap_or_else(|e| panic!("GET manifest: {e}"));
        assert_eq!(
            response.status,
            200,
            "{filter}: manifest\n{}",
            registry.log()
        );
        assert_eq!(
            response.header("docker-content-digest"),
            Some(manifest_digest),
            "{filter}: the registry keeps the manifest digest"
        );
        assert_eq!(response.header("content-type"), Some(MANIFEST_MEDIA_TYPE));
        assert_eq!(
            response.body,
            blob(&layout, &descriptor),
            "{filter}: manifest bytes"
        );
        let layers = manifest["layers"].as_array().expect("layers");
        let wasm_layers: Vec<&Value> = layers
            .iter()
            .filter(|l| l["mediaType"] == WASM_LAYER_MEDIA_TYPE)
            .collect();
        assert_eq!((layers.len(), wasm_layers.len()), (2, 1), "{filter}");
        let response = http::get(
            &format!("{base}/blobs/{}", str_at(wasm_layers[0], "/digest")),
            &[],
        )
        .unwrap_or_else(|e| panic!("GET blob: {e}"));
        assert_eq!(response.status, 200, "{filter}: blob");
        assert!(
            response.body == wasm,
            "{filter}: the registry serves another module"
        );

        // Pull it back into a fresh layout.
        let pulled = work.path().join("pulled").join(filter);
        fs::create_dir_all(work.path().join("pulled")).expect("pulled dir");
        skopeo(
            work.path(),
            &[
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{remote}"),
                &format!("oci:{}:{TAG}", pulled.display()),
            ],
        );
        let (pulled_descriptor, _) = check_image_layout(&pulled, filter, &wasm);
        assert_eq!(
            pulled_descriptor["digest"], manifest_digest,
            "{filter}: the pulled image has another manifest"
        );
    }
}

// ---------------------------------------------------------------------------
// ECDS: the filter's configuration as its own xDS resource

/// Writes the ECDS resource of the single Wasm filter `gateway.ip_acl`.
fn write_ecds(path: &Path, ip_acl_config: &Value) {
    integration_tests::envoy::write_ecds(
        path,
        &WasmFilter::json("ip_acl", ip_acl_config).to_http_filter(),
    );
}

#[test]
fn a_filter_configured_through_ecds_is_reconfigured_without_a_restart() {
    use integration_tests::echo::EchoServer;
    use integration_tests::envoy::{gateway_config, Envoy};
    use std::time::Duration;

    let upstream = EchoServer::start("backend").expect("echo upstream");
    let dir = tempfile::Builder::new()
        .prefix("gw-ecds-")
        .tempdir()
        .expect("temp dir");
    let ecds = dir.path().join("ip_acl.json");
    write_ecds(&ecds, &json!({"deny": ["203.0.113.0/24"]}));

    // The listener names the filter and where its configuration comes
    // from; the Wasm configuration itself is the ECDS resource (a file here,
    // a management server such as istiod in production).
    let mut config = gateway_config(&[], &[upstream.port()]);
    let http_filters = config
        .pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .expect("http_filters");
    http_filters.insert(
        0,
        json!({
            "name": "gateway.ip_acl",
            "config_discovery": {
                "config_source": {"path_config_source": {
                    "path": ecds,
                    "watched_directory": {"path": dir.path()}
                }},
                "type_urls": [WASM_FILTER_TYPE]
            }
        }),
    );
    // xDS subscriptions, file-based ones too, need a node identity.
    config["node"] = json!({"id": "gateway-1", "cluster": "gateway"});
    let envoy = Envoy::start(&config);
    let status = |envoy: &Envoy| {
        http::get(&envoy.url("/orders/1"), &[])
            .map(|r| r.status)
            .unwrap_or(0)
    };
    assert_eq!(status(&envoy), 200, "127.0.0.1 is not denied yet");

    // A new configuration: the same Envoy, the same listener, the filter
    // now denies loopback.
    write_ecds(&ecds, &json!({"deny": ["127.0.0.0/8"]}));
    assert!(
        envoy.wait_for(Duration::from_secs(10), |e| status(e) == 403),
        "the ECDS update did not reach the filter\n{}",
        envoy.log()
    );
    assert_eq!(
        envoy.stat("listener_manager.listener_modified"),
        0,
        "the listener was not rebuilt"
    );

    // A configuration the filter refuses is rejected as an update: the last
    // good one stays in force.
    write_ecds(&ecds, &json!({"deny": ["10.0.0.300/8"]}));
    assert!(
        envoy.wait_for(Duration::from_secs(10), |e| e
            .log()
            .contains("10.0.0.300/8")),
        "the refused update is not logged\n{}",
        envoy.log()
    );
    assert_eq!(status(&envoy), 403, "the last good configuration stays");
}
