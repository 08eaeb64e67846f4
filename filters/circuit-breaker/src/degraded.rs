//! What a call gets while its breaker is open: a configured answer (by
//! default the shared error shape, 503 `A503CB`, with `Retry-After`), or a
//! header that the Envoy route configuration uses to send it to a fallback.

use gateway_common::error::header_safe;
use std::borrow::Cow;

/// The message of the degraded answer's error shape.
pub const MESSAGE: &str = "API Circuit Breaker Open";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhenOpen {
    Respond(DegradedResponse),
    Fallback(FallbackRoute),
}

/// Marks a request for the fallback route: `header: value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackRoute {
    /// Lower case.
    pub header: String,
    pub value: String,
}

/// The configured answer, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DegradedResponse {
    status: u16,
    /// `A<status>CB`, in the Alibaba style of the shared error codes.
    code: String,
    extra_headers: Vec<(String, String)>,
    /// A configured body and its content type; `None`: the shared JSON shape.
    body: Option<(Vec<u8>, String)>,
    retry_after: bool,
}

/// A rendered answer, ready for `send_http_response`; a configured body is
/// borrowed, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedResponse<'a> {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: Cow<'a, [u8]>,
}

impl RenderedResponse<'_> {
    pub fn header_pairs<'a>(&'a self, extra: &'a [(String, String)]) -> Vec<(&'a str, &'a str)> {
        self.headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect()
    }
}

impl DegradedResponse {
    pub fn new(
        status: u16,
        extra_headers: Vec<(String, String)>,
        body: Option<(Vec<u8>, String)>,
        retry_after: bool,
    ) -> Self {
        Self {
            status,
            code: format!("A{status}CB"),
            extra_headers,
            body,
            retry_after,
        }
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    /// The configured headers, sent after the filter's own.
    pub fn extra_headers(&self) -> &[(String, String)] {
        &self.extra_headers
    }

    /// Renders the answer: the shared error shape (same body and headers as
    /// `gateway_common::error::render`) unless a body is configured, plus
    /// `Retry-After` in whole seconds (at least 1).
    pub fn render(&self, request_id: Option<&str>, retry_after_ms: u64) -> RenderedResponse<'_> {
        let request_id = request_id.map(header_safe);
        let (content_type, body) = match &self.body {
            Some((body, content_type)) => (content_type.clone(), Cow::Borrowed(body.as_slice())),
            None => {
                let body = serde_json::json!({
                    "code": self.code,
                    "message": MESSAGE,
                    "request_id": request_id,
                });
                (
                    "application/json; charset=utf-8".to_string(),
                    Cow::Owned(body.to_string().into_bytes()),
                )
            }
        };
        let mut headers = vec![
            ("content-type", content_type),
            ("x-ca-error-code", self.code.clone()),
            ("x-ca-error-message", MESSAGE.to_string()),
        ];
        if let Some(id) = request_id {
            headers.push(("x-ca-request-id", id));
        }
        if self.retry_after {
            let seconds = retry_after_ms.div_ceil(1000).max(1);
            headers.push(("retry-after", seconds.to_string()));
        }
        RenderedResponse {
            status: u32::from(self.status),
            headers,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::error::{render, GatewayError};

    fn default_answer() -> DegradedResponse {
        DegradedResponse::new(503, Vec::new(), None, true)
    }

    #[test]
    fn the_default_answer_is_the_shared_error_shape_plus_retry_after() {
        let answer = default_answer();
        let rendered = answer.render(Some("req-1"), 1500);
        let shared = render(&GatewayError::new(503, "A503CB", MESSAGE), Some("req-1"));
        assert_eq!(rendered.status, shared.status);
        assert_eq!(rendered.body.as_ref(), shared.body.as_slice());
        assert_eq!(
            &rendered.headers[..shared.headers.len()],
            &shared.headers[..]
        );
        assert_eq!(
            rendered.headers.last(),
            Some(&("retry-after", "2".to_string()))
        );
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        for (ms, seconds) in [(0, "1"), (1, "1"), (1000, "1"), (1001, "2"), (30_000, "30")] {
            let answer = default_answer();
            let rendered = answer.render(None, ms);
            let value = rendered
                .headers
                .iter()
                .find(|(name, _)| *name == "retry-after")
                .map(|(_, v)| v.as_str());
            assert_eq!(value, Some(seconds), "{ms} ms");
        }
    }

    #[test]
    fn a_configured_status_and_body_replace_the_defaults() {
        let answer = DegradedResponse::new(
            429,
            vec![("x-degraded".into(), "1".into())],
            Some((b"{\"items\":[]}".to_vec(), "application/json".into())),
            false,
        );
        let rendered = answer.render(Some("id"), 5000);
        assert_eq!(rendered.status, 429);
        assert_eq!(rendered.body.as_ref(), b"{\"items\":[]}");
        let pairs = rendered.header_pairs(answer.extra_headers());
        assert!(pairs.contains(&("content-type", "application/json")));
        assert!(pairs.contains(&("x-ca-error-code", "A429CB")));
        assert!(pairs.contains(&("x-degraded", "1")));
        assert!(!pairs.iter().any(|(name, _)| *name == "retry-after"));
    }

    #[test]
    fn a_hostile_request_id_cannot_inject_headers() {
        let answer = default_answer();
        let rendered = answer.render(Some("id\r\nset-cookie: x=1"), 1000);
        for (_, value) in &rendered.headers {
            assert!(!value.contains('\r') && !value.contains('\n'));
        }
    }
}
