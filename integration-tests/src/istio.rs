//! Istio's EnvoyFilter patches applied the way Istio applies them, to a
//! bootstrap Envoy can validate: the manifests in `envoy/istio` and the ones
//! gatewayctl writes are tested the same way.

use crate::envoy::{native_module, wasm_module, NATIVE_FILTER_TYPE};
use serde_json::{json, Value};

const HCM: &str = "envoy.filters.network.http_connection_manager";
const ROUTER: &str = "envoy.filters.http.router";

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// A gateway listener (an HTTP connection manager with only the router,
/// one route to a `backend` cluster) for EnvoyFilter patches to apply to.
pub fn minimal_gateway() -> Value {
    json!({
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": HCM,
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "gateway",
                        "route_config": {"virtual_hosts": [{
                            "name": "all",
                            "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]
                        }]},
                        "http_filters": [{
                            "name": ROUTER,
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }]
                    }
                }]}]
            }],
            "clusters": [{
                "name": "backend",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}
                ]}]}
            }]
        }
    })
}

/// The module a patch loads, swapped for the one built here: a local file
/// in the gateway pod (or a remote download with its sha256) becomes
/// `<target>/wasm32-wasip1/release/<root_id>.wasm`.
fn with_local_module(mut filter: Value) -> Value {
    if filter["typed_config"]["@type"] == NATIVE_FILTER_TYPE {
        let module = &mut filter["typed_config"]["dynamic_module_config"]["module"];
        assert!(
            module
                .pointer("/local/filename")
                .is_some_and(Value::is_string),
            "the native module is loaded from a local file: {module}"
        );
        *module = json!({"local": {"filename": native_module()}});
        return filter;
    }
    let config = &mut filter["typed_config"]["config"];
    let root_id = str_at(config, "/root_id").to_string();
    let code = &mut config["vm_config"]["code"];
    let local = code
        .pointer("/local/filename")
        .is_some_and(Value::is_string);
    let remote = code
        .pointer("/remote/http_uri/uri")
        .is_some_and(Value::is_string)
        && code.pointer("/remote/sha256").is_some_and(Value::is_string);
    assert!(
        local || remote,
        "{root_id}: code is neither local nor remote: {code}"
    );
    *code = json!({"local": {"filename": wasm_module(&root_id)}});
    filter
}

/// Applies an EnvoyFilter's patches the way Istio does, for the patch kinds
/// the manifests use: HTTP_FILTER INSERT_BEFORE (into every matching HTTP
/// connection manager) and CLUSTER ADD.
pub fn apply_envoy_filter(config: &mut Value, envoy_filter: &Value) {
    let name = str_at(envoy_filter, "/metadata/name");
    for patch in envoy_filter["spec"]["configPatches"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(patch["match"]["context"], "GATEWAY", "{name}");
        let value = patch["patch"]["value"].clone();
        match (
            patch["applyTo"].as_str().unwrap_or_default(),
            patch["patch"]["operation"].as_str().unwrap_or_default(),
        ) {
            ("HTTP_FILTER", "INSERT_BEFORE") => {
                let network_filter = str_at(patch, "/match/listener/filterChain/filter/name");
                let before = str_at(patch, "/match/listener/filterChain/filter/subFilter/name");
                let value = with_local_module(value);
                let mut inserted = 0;
                for listener in config["static_resources"]["listeners"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    for chain in listener["filter_chains"]
                        .as_array_mut()
                        .into_iter()
                        .flatten()
                    {
                        for filter in chain["filters"].as_array_mut().into_iter().flatten() {
                            if filter["name"] != network_filter {
                                continue;
                            }
                            let Some(http_filters) =
                                filter["typed_config"]["http_filters"].as_array_mut()
                            else {
                                continue;
                            };
                            if let Some(at) = http_filters.iter().position(|f| f["name"] == before)
                            {
                                http_filters.insert(at, value.clone());
                                inserted += 1;
                            }
                        }
                    }
                }
                assert!(inserted > 0, "{name}: no `{before}` to insert before");
            }
            ("CLUSTER", "ADD") => match config["static_resources"]["clusters"].as_array_mut() {
                Some(clusters) => clusters.push(value),
                None => panic!("no static clusters"),
            },
            (apply_to, operation) => {
                panic!("{name}: the test helper does not apply {apply_to} {operation}")
            }
        }
    }
}
