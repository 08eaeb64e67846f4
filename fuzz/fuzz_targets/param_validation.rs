//! param-validation against a fixed rule set: query, headers, path
//! variables, a form or JSON body. Any request gets a rewrite or a 400/413
//! of param-validation's own; a request it let through with changes passes
//! unchanged when sent again as rewritten.
#![no_main]

use gateway_fuzz::{config, Request};
use libfuzzer_sys::fuzz_target;
use param_validation::policy::{RequestParts, Validation};
use std::sync::OnceLock;

fn policy() -> &'static Validation {
    static POLICY: OnceLock<Validation> = OnceLock::new();
    POLICY.get_or_init(|| {
        config(param_validation::compile_config(
            br#"{
              "rules": [
                {
                  "name": "create-order",
                  "match": { "path": { "template": "/users/{id}/orders" } },
                  "parameters": [
                    { "name": "id", "in": "path", "type": "integer", "minimum": 1 },
                    { "name": "dry_run", "in": "query", "type": "boolean", "default": "false" },
                    { "name": "x-trace", "in": "header", "pattern": "^[0-9a-f]{8}$" },
                    { "name": "qty", "in": "body", "pointer": "/order/qty", "type": "integer", "minimum": 1, "maximum": 100 },
                    { "name": "tags", "in": "body", "type": "array", "max_items": 5, "items": { "enum": ["gift", "express"] } }
                  ],
                  "body_schema": { "type": "object", "properties": { "order": { "type": "object" } } },
                  "max_body_bytes": 4096
                },
                {
                  "name": "search",
                  "match": { "path": { "prefix": "/" } },
                  "parameters": [
                    { "name": "q", "in": "query", "required": true, "max_length": 16 },
                    { "name": "page", "in": "query", "type": "integer", "minimum": 1, "maximum": 1000, "default": "1" },
                    { "name": "price", "in": "form", "type": "number", "exclusive_minimum": 0 },
                    { "name": "color", "in": "form", "enum": ["red", "blue"] }
                  ],
                  "drop_undefined": true
                }
              ]
            }"#,
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let request = Request::parse(data);
    let policy = policy();
    let attrs = request.attrs();
    let Some((rule, captures)) = policy.rules.first_rule_for(&attrs) else {
        return;
    };
    let content_type = request.header("content-type");
    let header = |name: &str| request.header(name).map(str::to_string);
    let body = rule
        .needs_body(content_type)
        .then_some(request.body.as_slice());
    let parts = RequestParts {
        query: request.query(),
        header: Some(&header),
        captures: &captures,
        content_type,
        body,
    };
    match rule.validate(&parts) {
        Ok(rewrite) => {
            let form = rewrite.form_body.as_deref().map(str::as_bytes);
            let again = RequestParts {
                query: rewrite.query.as_deref().unwrap_or(parts.query),
                body: form.or(body),
                ..parts
            };
            let second = rule.validate(&again);
            assert!(
                second.is_ok(),
                "the rewritten request is refused: {second:?}"
            );
        }
        Err(error) => assert!(
            matches!(error.status, 400 | 413 | 415),
            "an unexpected status: {error:?}"
        ),
    }
});
