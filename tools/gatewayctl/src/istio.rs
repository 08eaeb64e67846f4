//! `gatewayctl build --istio`: the policies as an Istio `EnvoyFilter` on the
//! ingress gateway, with the clusters the filters call. Istio owns the
//! routes (VirtualServices), so the policies match by method and path.
//!
//! An EnvoyFilter rather than WasmPlugins: a WasmPlugin cannot set
//! `allow_on_headers_stop_iteration`, which the filters that read bodies need.

use crate::envoy::{cluster, policy_filters, Artifacts, Host};
use crate::generate::Generated;
use serde_json::{json, Value};

/// Where the manifests go.
#[derive(Debug, Clone)]
pub struct Placement {
    pub namespace: String,
    /// `istio: ingressgateway` by default.
    pub selector: (String, String),
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            namespace: "istio-system".into(),
            selector: ("istio".into(), "ingressgateway".into()),
        }
    }
}

/// The backends the filters themselves call (fleet store, authorizer, log sink).
fn called_backends(generated: &Generated) -> Vec<&str> {
    let document = &generated.document;
    let mut names: Vec<&str> = document
        .gateway
        .fleet_store
        .iter()
        .filter_map(|store| store.webdis.as_deref())
        .collect();
    for (section, config) in &generated.sections {
        let cluster = match section.key() {
            "ext_auth" => config.pointer("/authorizer/cluster"),
            "log_push" => config.pointer("/sink/cluster"),
            _ => config.pointer("/fleet/store/cluster"),
        };
        if let Some(name) = cluster.and_then(Value::as_str) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The EnvoyFilter: clusters added, then the policy filters before the router.
pub fn envoy_filter(
    generated: &Generated,
    host: Host,
    artifacts: &Artifacts,
    placement: &Placement,
) -> Value {
    let mut patches = Vec::new();
    for name in called_backends(generated) {
        if let Some(backend) = generated.document.backends.iter().find(|b| b.name == name) {
            patches.push(json!({
                "applyTo": "CLUSTER",
                "match": { "context": "GATEWAY" },
                "patch": { "operation": "ADD", "value": cluster(backend) },
            }));
        }
    }
    for filter in policy_filters(generated, host, artifacts) {
        patches.push(json!({
            "applyTo": "HTTP_FILTER",
            "match": {
                "context": "GATEWAY",
                "listener": { "filterChain": { "filter": {
                    "name": "envoy.filters.network.http_connection_manager",
                    "subFilter": { "name": "envoy.filters.http.router" },
                } } },
            },
            "patch": { "operation": "INSERT_BEFORE", "value": filter },
        }));
    }
    let (label, value) = &placement.selector;
    json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {
            "name": "gateway-policies",
            "namespace": placement.namespace,
            "labels": { "app.kubernetes.io/part-of": "gateway-filters" },
        },
        "spec": {
            "workloadSelector": { "labels": { label: value } },
            "configPatches": patches,
        },
    })
}
