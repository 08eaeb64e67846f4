//! request-mapping: a backend path template (`@backend: /x/{id}`) and a
//! constant value (`@constant: v`) from the fuzzer, then any request
//! through the rule. A template the parser takes
//! maps every request or refuses it with request-mapping's own 400/413;
//! what it writes is well-formed: a path starting with `/`, and no header
//! value or path with CR, LF or NUL (no header or request splitting).
#![no_main]

use gateway_fuzz::Request;
use libfuzzer_sys::fuzz_target;
use request_mapping::policy::{Frontend, SystemValue};
use serde_json::json;

const FRONTEND_TEMPLATE: &str = "/users/{id}/orders/{order}";

fn is_clean(text: &str) -> bool {
    !text.contains(['\r', '\n', '\0'])
}

fuzz_target!(|data: &[u8]| {
    let request = Request::parse(data);
    let backend_path = request.option("backend").unwrap_or("/orders/{id}");
    let constant = request.option("constant").unwrap_or("public-api");
    let document = json!({
        "rules": [{
            "name": "fuzz",
            "match": { "path": { "template": FRONTEND_TEMPLATE } },
            "backend": { "path": backend_path, "method": "PUT" },
            "parameters": [
                { "from": { "in": "query", "name": "lang" }, "to": { "in": "header", "name": "X-Lang" } },
                { "from": { "in": "header", "name": "x-sku" }, "to": { "in": "query", "name": "sku" } },
                { "from": { "in": "path", "name": "id" }, "to": { "in": "body", "name": "/customer/id" }, "type": "integer" },
                { "from": { "in": "body", "name": "/qty" }, "to": { "in": "body", "name": "/item/quantity" }, "type": "integer" },
                { "from": { "in": "header", "name": "cookie" } }
            ],
            "constants": [
                { "to": { "in": "header", "name": "X-Channel" }, "value": constant },
                { "to": { "in": "body", "name": "/channel" }, "value": constant }
            ],
            "system": [
                { "value": "client_ip", "to": { "in": "header", "name": "X-Client-IP" } },
                { "value": "request_id", "to": { "in": "query", "name": "trace" } }
            ]
        }]
    });
    let Ok(mapping) = request_mapping::compile_config(document.to_string().as_bytes()) else {
        return;
    };
    let attrs = request.attrs();
    let Some((index, captures)) = mapping.rules.first_for(&attrs) else {
        return;
    };
    let Some(rule) = mapping.rules.get(index) else {
        return;
    };
    let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    let header = |name: &str| request.header(name).map(str::to_string);
    let system = |kind: SystemValue| match kind {
        SystemValue::ClientIp => Some("192.0.2.7".to_string()),
        SystemValue::RequestId => request.header("x-request-id").map(str::to_string),
        _ => None,
    };
    let content_type = request.header("content-type");
    let frontend = Frontend {
        path,
        query,
        captures: &captures,
        header: Some(&header),
        system: Some(&system),
        content_type,
        body: rule.needs_body().then_some(request.body.as_slice()),
    };
    // Envoy refuses a request line or header with CR, LF or NUL before any
    // filter sees it; from anything else, what is written must not have them.
    let clean_input = is_clean(&request.path)
        && request
            .headers
            .iter()
            .all(|(n, v)| is_clean(n) && is_clean(v));
    match rule.apply(&frontend) {
        Ok(mapped) if clean_input => {
            if let Some(path) = &mapped.path {
                assert!(
                    path.starts_with('/'),
                    "a backend path without `/`: {path:?}"
                );
                assert!(
                    is_clean(path),
                    "a control character in the backend path: {path:?}"
                );
            }
            for (name, value) in &mapped.set_headers {
                assert!(
                    is_clean(name) && is_clean(value),
                    "header splitting: {name:?}: {value:?}"
                );
            }
        }
        Ok(_) => {}
        Err(error) => assert!(
            matches!(error.status, 400 | 413 | 415),
            "an unexpected status: {error:?}"
        ),
    }
});
