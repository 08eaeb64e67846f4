//! error-mapping's configuration and decision on a backend's answer: the
//! `@condition`, `@error_code` and `@message` options are compiled into a
//! rule over `/r/{id}` (with Alibaba parameters of the response declared);
//! what it accepts decides the answer whose status is `@status` and whose
//! body is the input's body, parsed by its `content-type`. Any text is
//! compiled or refused, and any answer decided, without a panic.
#![no_main]

use error_mapping::policy::{decide, Body, ResponseValues};
use gateway_common::host::RequestLine;
use gateway_fuzz::{Request, AUTHORITY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let request = Request::parse(data);
    let condition = request.option("condition").unwrap_or("status >= 400");
    let error_code = request.option("error_code").unwrap_or("resultCode");
    let message = request
        .option("message")
        .unwrap_or("${resultCode} ${param.id}");
    let config = serde_json::json!({"rules": [{
        "match": {"path": {"template": "/r/{id}"}},
        "parameters": {"resultCode": "BodyJsonField:$.result_code", "status": "StatusCode",
                       "kind": "Header:X-Kind"},
        "condition": condition,
        "error_code": error_code,
        "mappings": [{"code": "E1", "status": 404, "message": message}],
        "default": {"status": 500, "error_code": "${resultCode}", "message": message}
    }]});
    let Ok(policy) = error_mapping::compile_config(config.to_string().as_bytes()) else {
        return;
    };
    let Some((index, captures)) = policy.rules.rule_for(&request.attrs()) else {
        return;
    };
    let Some(rule) = policy.rules.rule(index) else {
        return;
    };
    let host = request.host(&[]);
    let line = RequestLine {
        authority: AUTHORITY.into(),
        method: request.method.clone(),
        path: request.path.clone(),
    };
    let body = Body::parse(request.header("content-type"), &request.body);
    let kind = request.header("x-kind").map(str::to_string);
    let headers = move |name: &str| (name == "x-kind").then(|| kind.clone()).flatten();
    let values = ResponseValues {
        request: policy
            .rules
            .request_values(&host, &line, &captures, &Body::None),
        status: request.option("status").and_then(|s| s.parse().ok()),
        headers: &headers,
        body: &body,
    };
    let _ = decide(rule, values);
});
