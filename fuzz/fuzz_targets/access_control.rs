//! access-control's condition language and decision: the `@condition`
//! option is compiled as a check of a rule over `/u/{id}` (with Alibaba
//! parameters declared); a condition it accepts is evaluated over the
//! request (query, headers, path variable, a form or JSON body). Any text
//! is compiled or refused, and any request decided, without a panic.
#![no_main]

use access_control::policy::{decide, Body};
use gateway_common::host::RequestLine;
use gateway_fuzz::{Request, AUTHORITY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let request = Request::parse(data);
    let condition = request.option("condition").unwrap_or("query.a == 1");
    let config = serde_json::json!({"rules": [{
        "match": {"path": {"template": "/u/{id}"}},
        "parameters": {"kind": "Header:X-Kind", "total": "BodyJsonField:$.order.total"},
        "checks": [{"condition": condition, "if_true": "deny"}]
    }]});
    let Ok(policy) = access_control::compile_config(config.to_string().as_bytes()) else {
        return;
    };
    let Some((index, captures)) = policy.rules.rule_for(&request.attrs()) else {
        return;
    };
    let Some(rule) = policy.rules.rule(index) else {
        return;
    };
    let host = request
        .host(&[])
        .with_property(&["source", "address"], "192.0.2.1:5000");
    let line = RequestLine {
        authority: AUTHORITY.into(),
        method: request.method.clone(),
        path: request.path.clone(),
    };
    let body = Body::parse(request.header("content-type"), &request.body);
    let values = policy.rules.request_values(&host, &line, &captures, &body);
    let _ = decide(rule, values);
});
