//! A request's values for conditions, read from the host on demand: what
//! access control and routing evaluate their conditions over; and a
//! response's, with its request's, for error mapping.

use super::{Facts, Reference};
use crate::client_ip::ClientAddressResolver;
use crate::host::{Host, RequestLine};
use crate::identity;
use crate::matching::host_without_port;
use crate::params::{body_kind, parse_pairs_lenient, BodyKind};
use serde_json::Value;

/// A request body a check reads, parsed once.
#[derive(Debug, Clone, Default)]
pub enum Body {
    /// No body was read (or not one of the kinds checks read).
    #[default]
    None,
    Form(Vec<(String, String)>),
    Json(Value),
}

impl Body {
    /// Parses a whole body by its `Content-Type`: a JSON body that does not
    /// parse has no fields (a check then sees `null`); a form's pairs that
    /// do not decode are kept as sent, the others read all the same.
    pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Self {
        match body_kind(content_type) {
            BodyKind::Json => serde_json::from_slice(bytes).map_or(Body::None, Body::Json),
            BodyKind::Form => Body::Form(parse_pairs_lenient(&String::from_utf8_lossy(bytes))),
            BodyKind::Other => Body::None,
        }
    }

    /// A body of this `Content-Type` is one checks read.
    pub fn readable(content_type: Option<&str>) -> bool {
        body_kind(content_type) != BodyKind::Other
    }

    fn form(&self, name: &str) -> Option<String> {
        match self {
            Body::Form(pairs) => first(pairs, name),
            _ => None,
        }
    }

    fn json(&self, path: &[String]) -> Option<String> {
        let Body::Json(root) = self else {
            return None;
        };
        let mut value = root;
        for step in path {
            value = match value {
                Value::Object(fields) => fields.get(step)?,
                Value::Array(items) => items.get(step.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        match value {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }
}

fn first(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
}

/// A request's values for the checks, read from the host on demand.
pub struct RequestValues<'r> {
    pub host: &'r dyn Host,
    pub line: &'r RequestLine,
    pub captures: &'r [(&'r str, String)],
    pub body: &'r Body,
    pub client_address: &'r ClientAddressResolver,
    query: Option<Vec<(String, String)>>,
}

impl<'r> RequestValues<'r> {
    pub fn new(
        host: &'r dyn Host,
        line: &'r RequestLine,
        captures: &'r [(&'r str, String)],
        body: &'r Body,
        client_address: &'r ClientAddressResolver,
    ) -> Self {
        Self {
            host,
            line,
            captures,
            body,
            client_address,
            query: None,
        }
    }
}

impl Facts for RequestValues<'_> {
    fn lookup(&mut self, reference: &Reference) -> Option<String> {
        let (path, query) = self
            .line
            .path
            .split_once('?')
            .unwrap_or((&self.line.path, ""));
        match reference {
            Reference::Method => Some(self.line.method.clone()),
            Reference::Path => Some(path.to_string()),
            Reference::Host => Some(host_without_port(&self.line.authority).to_ascii_lowercase()),
            Reference::Stage => Some(crate::host::stage(
                self.host.request_header("x-ca-stage").as_deref(),
            )),
            Reference::App => identity::app_key(self.host),
            Reference::AppName => identity::read_identity(self.host)?.app_name,
            Reference::User => identity::user(self.host),
            Reference::ClientIp => self
                .client_address
                .client_of(self.host)
                .ok()
                .map(|ip| ip.to_string()),
            Reference::Query(name) => {
                let pairs = self.query.get_or_insert_with(|| parse_pairs_lenient(query));
                first(pairs, name)
            }
            Reference::Header(name) => self.host.request_header(name),
            Reference::Param(name) => self
                .captures
                .iter()
                .find(|(variable, _)| variable == name)
                .map(|(_, value)| value.clone()),
            Reference::Form(name) => self.body.form(name),
            Reference::Json(path) => self.body.json(path),
            // Never compiled into a request condition.
            Reference::Status | Reference::ResponseHeader(_) | Reference::ResponseJson(_) => None,
        }
    }
}

/// The request headers [`RequestValues`] reads for `references` (besides
/// the request line), so a policy that decides later can keep them.
pub fn request_headers_read(references: &[Reference]) -> Vec<&str> {
    let mut names = Vec::new();
    for reference in references {
        let name = match reference {
            Reference::Header(name) => name.as_str(),
            Reference::Stage => "x-ca-stage",
            Reference::ClientIp => "x-forwarded-for",
            _ => continue,
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// A response's values, and its request's (whose body is not kept).
pub struct ResponseValues<'r> {
    pub request: RequestValues<'r>,
    pub status: Option<u16>,
    /// The response headers.
    pub headers: &'r dyn Fn(&str) -> Option<String>,
    /// The response body, when a condition reads it.
    pub body: &'r Body,
}

impl Facts for ResponseValues<'_> {
    fn lookup(&mut self, reference: &Reference) -> Option<String> {
        match reference {
            Reference::Status => self.status.map(|status| status.to_string()),
            Reference::ResponseHeader(name) => (self.headers)(name),
            Reference::ResponseJson(path) => self.body.json(path),
            Reference::Form(_) | Reference::Json(_) => None,
            other => self.request.lookup(other),
        }
    }
}
