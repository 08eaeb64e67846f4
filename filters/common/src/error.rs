//! One error response for every filter: the status, a JSON body
//! `{"code","message","request_id"}` and the `X-Ca-Error-Code` /
//! `X-Ca-Error-Message` headers that Alibaba Cloud API Gateway clients read.

use std::borrow::Cow;

/// Header values longer than this are cut, so a hostile request cannot make
/// the gateway echo a huge value back.
pub const MAX_MESSAGE_LEN: usize = 512;

/// A refusal a filter answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u16,
    /// Six characters in the Alibaba style: origin letter, status, reason.
    pub code: &'static str,
    pub message: Cow<'static, str>,
}

impl GatewayError {
    pub const fn new(status: u16, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message: Cow::Borrowed(message),
        }
    }

    pub fn with_message(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.message = message.into();
        self
    }
}

/// The documented error codes (README, "Error responses").
pub mod codes {
    use super::GatewayError;

    /// ip-acl: the client address is denied by an IP access-control list.
    pub const IP_DENIED: GatewayError =
        GatewayError::new(403, "A403IP", "Access denied by IP Control Policy");
    /// A request header the gateway needs is malformed (for example X-Forwarded-For).
    pub const INVALID_HEADER: GatewayError = GatewayError::new(400, "I400HD", "Invalid Header");
    /// The gateway cannot decide because of an internal failure; fail-closed answer.
    pub const INTERNAL: GatewayError = GatewayError::new(500, "X500ER", "Internal Gateway Error");
}

/// A rendered error response, ready for `send_http_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl ErrorResponse {
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// Renders `error` for the client. `request_id` is Envoy's `x-request-id`.
pub fn render(error: &GatewayError, request_id: Option<&str>) -> ErrorResponse {
    render_parts(error.status, error.code, &error.message, request_id)
}

/// [`render`] of a status, code and message made at run time (a backend's
/// error mapped for the client).
pub fn render_parts(
    status: u16,
    code: &str,
    message: &str,
    request_id: Option<&str>,
) -> ErrorResponse {
    let code = header_safe(code);
    let message = header_safe(message);
    let request_id = request_id.map(header_safe);
    let body = serde_json::json!({
        "code": code,
        "message": message,
        "request_id": request_id,
    });
    let mut headers = vec![
        (
            "content-type",
            "application/json; charset=utf-8".to_string(),
        ),
        ("x-ca-error-code", code),
        ("x-ca-error-message", message.clone()),
    ];
    if let Some(id) = request_id {
        headers.push(("x-ca-request-id", id));
    }
    ErrorResponse {
        status: u32::from(status),
        headers,
        body: body.to_string().into_bytes(),
    }
}

/// Makes a value safe for an HTTP header: control characters become spaces
/// (no header injection) and the length is bounded on a character boundary.
pub fn header_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_MESSAGE_LEN));
    for ch in value.chars() {
        if out.len() + ch.len_utf8() > MAX_MESSAGE_LEN {
            break;
        }
        out.push(if ch.is_control() { ' ' } else { ch });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_renders_the_shared_shape() {
        let response = render(&codes::IP_DENIED, Some("req-1"));
        assert_eq!(response.status, 403);
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"code":"A403IP","message":"Access denied by IP Control Policy","request_id":"req-1"})
        );
        let header = |name| {
            response
                .headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("x-ca-error-code"), Some("A403IP"));
        assert_eq!(
            header("x-ca-error-message"),
            Some("Access denied by IP Control Policy")
        );
        assert_eq!(header("x-ca-request-id"), Some("req-1"));
    }

    #[test]
    fn a_missing_request_id_is_null_in_the_body() {
        let response = render(&codes::INTERNAL, None);
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["request_id"], serde_json::Value::Null);
        assert!(!response
            .headers
            .iter()
            .any(|(k, _)| *k == "x-ca-request-id"));
    }

    #[test]
    fn messages_cannot_inject_headers() {
        let error = codes::INVALID_HEADER.with_message("bad\r\nSet-Cookie: x=1");
        let response = render(&error, Some("id\nX-Evil: 1"));
        for (_, value) in &response.headers {
            assert!(!value.contains('\r') && !value.contains('\n'), "{value:?}");
        }
    }

    #[test]
    fn long_messages_are_bounded_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let safe = header_safe(&long);
        assert!(safe.len() <= MAX_MESSAGE_LEN);
        assert!(safe.chars().all(|c| c == 'é'));
    }
}
