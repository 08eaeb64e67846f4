//! [`NativeRequest`]: one stream's host for one hook, over Envoy's
//! callbacks, and the answers to calls as a module reads them.

use crate::abi::{attribute, header_type};
use crate::envoy::{Direction, EnvoyAnswer, EnvoyFilter, OwnedAnswer};
use crate::host;
use crate::mailbox::{self, Mailbox};
use crate::redis;
use crate::root::{next_token, Config};
use gateway_common::fleet::RedisTarget;
use gateway_common::host::Host;
use gateway_common::hosting::{Caller, RequestHost};
use gateway_common::key::ShortKey;
use gateway_common::metrics::{Counter, Gauge};
use gateway_common::store::SharedStore;
use gateway_common::stream::{CallAnswer, CallNotMade, HttpCall, Level, Telemetry};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What a hook's code asked for that runs the filter chain (a local
/// reply), done once the code has returned.
#[derive(Default)]
pub(crate) struct After {
    pub reply: Option<Reply>,
}

pub(crate) struct Reply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Envoy's response code details; `None` leaves Envoy's own.
    pub details: Option<&'static str>,
}

impl After {
    /// Sends the reply asked for.
    pub fn run(self, envoy: Option<EnvoyFilter>) {
        if let (Some(reply), Some(envoy)) = (self.reply, envoy) {
            let headers: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            envoy.send_response(reply.status, &headers, &reply.body, reply.details);
        }
    }
}

/// One stream's host during one hook. `envoy` is `None` when the stream's
/// filter is already gone (its destroy hook): reads find nothing, writes
/// do nothing.
pub(crate) struct NativeRequest<'a> {
    pub envoy: Option<EnvoyFilter>,
    pub config: &'a Config,
    pub id: u32,
    /// When the stream began (`request.time`), in ns since the epoch.
    pub started_nanos: u64,
    /// Inside the request body hook (the bytes just received are readable).
    pub in_request_body: bool,
    /// Inside the response body hook.
    pub in_response_body: bool,
    /// The stream's calls in flight: Envoy's callout id, the token.
    pub callouts: &'a mut Vec<(u64, u32)>,
    /// Where the stream's Redis answers go (made with its first command).
    pub mailbox: &'a mut Option<Arc<Mailbox>>,
    pub after: &'a mut After,
}

/// The filter state key of a published property, as Envoy's Wasm host
/// names it (so `%FILTER_STATE(wasm.gw_app)%` reads the same in every
/// form).
fn filter_state_key(name: &str) -> ShortKey {
    ShortKey::format(format_args!("wasm.{name}"))
}

fn int(value: Option<u64>) -> Option<Vec<u8>> {
    value.map(|v| v.to_le_bytes().to_vec())
}

impl Host for NativeRequest<'_> {
    fn request_header(&self, name: &str) -> Option<String> {
        self.envoy?.header(header_type::REQUEST_HEADER, name)
    }

    fn request_header_values(&self, name: &str) -> Vec<String> {
        self.envoy
            .map(|envoy| envoy.header_values(header_type::REQUEST_HEADER, name))
            .unwrap_or_default()
    }

    /// The properties the suite reads, by proxy-wasm path; integers as
    /// 8-byte little-endian, as Envoy's Wasm host gives them.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let envoy = self.envoy?;
        match path {
            ["source", "address"] => envoy.attribute_string(attribute::SOURCE_ADDRESS),
            ["connection", "tls_version"] => {
                envoy.attribute_string(attribute::CONNECTION_TLS_VERSION)
            }
            ["xds", "route_name"] => envoy.attribute_string(attribute::XDS_ROUTE_NAME),
            ["xds", "cluster_name"] => envoy.attribute_string(attribute::XDS_CLUSTER_NAME),
            ["upstream", "address"] => envoy.attribute_string(attribute::UPSTREAM_ADDRESS),
            ["request", "time"] => int(Some(self.started_nanos)),
            ["request", "total_size"] => int(envoy.attribute_int(attribute::REQUEST_TOTAL_SIZE)),
            ["response", "code"] => int(envoy.attribute_int(attribute::RESPONSE_CODE)),
            ["response", "code_details"] => {
                envoy.attribute_string(attribute::RESPONSE_CODE_DETAILS)
            }
            ["response", "flags"] => int(envoy.attribute_int(attribute::RESPONSE_FLAGS)),
            ["response", "total_size"] => int(envoy.attribute_int(attribute::RESPONSE_TOTAL_SIZE)),
            [name] => envoy.filter_state(&filter_state_key(name)),
            _ => None,
        }
    }

    /// A one-segment path is the stream's own value (filter state, as in
    /// Envoy's Wasm host); Envoy's attributes cannot be written.
    fn set_property(&self, path: &[&str], value: &[u8]) -> bool {
        match (self.envoy, path) {
            (Some(envoy), [name]) if !name.is_empty() => {
                envoy.set_filter_state(&filter_state_key(name), value)
            }
            _ => false,
        }
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl Telemetry for NativeRequest<'_> {
    fn increment(&mut self, counter: Counter, delta: u64) {
        self.config.metrics().increment(counter, delta);
    }

    fn set_gauge(&mut self, gauge: Gauge, value: u64) {
        self.config.metrics().set_gauge(gauge, value);
    }

    fn add_to_gauge(&mut self, gauge: Gauge, delta: i64) {
        self.config.metrics().add_to_gauge(gauge, delta);
    }

    fn logs(&self, level: Level) -> bool {
        host::logs(level)
    }

    fn log(&self, level: Level, message: std::fmt::Arguments<'_>) {
        host::log(level, message);
    }
}

impl Caller for NativeRequest<'_> {
    /// The call goes out with the stream (Envoy cancels it if the stream
    /// ends first).
    fn dispatch_call(&mut self, call: HttpCall<'_>) -> Result<u32, CallNotMade> {
        let envoy = self.envoy.ok_or(CallNotMade)?;
        let callout = envoy.callout(&call).ok_or(CallNotMade)?;
        let token = next_token();
        self.callouts.push((callout, token));
        Ok(token)
    }

    /// The answer comes through the stream's scheduler; none comes after
    /// the stream ends (its mailbox is closed).
    fn dispatch_redis(
        &mut self,
        target: &RedisTarget,
        slot: u16,
        command: Vec<u8>,
        timeout: Duration,
    ) -> Result<u32, CallNotMade> {
        if self.mailbox.is_none() {
            let scheduler = self
                .envoy
                .ok_or(CallNotMade)?
                .scheduler()
                .ok_or(CallNotMade)?;
            *self.mailbox = Some(Mailbox::new(Box::new(move || {
                scheduler.commit(mailbox::ANSWERS)
            })));
        }
        let mailbox = self.mailbox.as_ref().ok_or(CallNotMade)?;
        let token = next_token();
        redis::send(target, slot, command, timeout, mailbox, token);
        Ok(token)
    }
}

impl NativeRequest<'_> {
    /// Replaces the first `old_size` bytes of a body with `body`.
    fn replace_body(&self, direction: Direction, in_hook: bool, old_size: usize, body: &[u8]) {
        let Some(envoy) = self.envoy else { return };
        let old = envoy.body(direction, in_hook, usize::MAX);
        let kept = old.get(old_size..).unwrap_or_default();
        let mut new = Vec::with_capacity(body.len() + kept.len());
        new.extend_from_slice(body);
        new.extend_from_slice(kept);
        if !envoy.replace_body(direction, in_hook, &new) {
            self.log(
                Level::Error,
                format_args!("native module: Envoy refused a body rewrite"),
            );
        }
    }
}

impl RequestHost for NativeRequest<'_> {
    fn request_header_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(envoy) = self.envoy {
            envoy.headers(header_type::REQUEST_HEADER, |name, _| {
                names.push(String::from_utf8_lossy(name).into_owned())
            });
        }
        names
    }

    /// A request header change makes Envoy pick the route again, as
    /// Envoy's Wasm host does (a fallback route chosen by a header).
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        if let Some(envoy) = self.envoy {
            envoy.set_header(header_type::REQUEST_HEADER, name, value);
            envoy.clear_route_cache();
        }
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.envoy?.header(header_type::RESPONSE_HEADER, name)
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        if let Some(envoy) = self.envoy {
            envoy.set_header(header_type::RESPONSE_HEADER, name, value);
        }
    }

    fn response_headers(&self) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        if let Some(envoy) = self.envoy {
            envoy.headers(header_type::RESPONSE_HEADER, |name, value| {
                headers.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                ))
            });
        }
        headers
    }

    fn response_body(&self, size: usize) -> Vec<u8> {
        self.envoy
            .map(|envoy| envoy.body(Direction::Response, self.in_response_body, size))
            .unwrap_or_default()
    }

    fn replace_response_body(&mut self, old_size: usize, body: &[u8]) {
        self.replace_body(Direction::Response, self.in_response_body, old_size, body);
    }

    /// Sent once the hook's code has returned (Envoy runs the reply
    /// through this filter's hooks at once); the first reply wins.
    fn send_local_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.after.reply.get_or_insert_with(|| Reply {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            body: body.to_vec(),
            details: None,
        });
    }

    fn request_body(&self, size: usize) -> Vec<u8> {
        self.envoy
            .map(|envoy| envoy.body(Direction::Request, self.in_request_body, size))
            .unwrap_or_default()
    }

    fn replace_request_body(&mut self, old_size: usize, body: &[u8]) {
        self.replace_body(Direction::Request, self.in_request_body, old_size, body);
    }

    fn shared_data(&self) -> &dyn SharedStore {
        host::shared_data()
    }

    fn clear_route_cache(&mut self) {
        if let Some(envoy) = self.envoy {
            envoy.clear_route_cache();
        }
    }

    fn stream_id(&self) -> u32 {
        self.id
    }

    fn wake(&mut self, stream_id: u32) {
        host::wake(stream_id);
    }
}

impl CallAnswer for EnvoyAnswer<'_> {
    /// Read in place (no copy of the header).
    fn status(&self) -> Option<u32> {
        let status = std::str::from_utf8(self.header(":status")?).ok()?;
        status.trim().parse().ok()
    }

    fn header(&self, name: &str) -> Option<String> {
        EnvoyAnswer::header(self, name).map(|value| String::from_utf8_lossy(value).into_owned())
    }

    fn body_size(&self) -> usize {
        EnvoyAnswer::body_size(self)
    }

    fn body(&self) -> Vec<u8> {
        EnvoyAnswer::body(self)
    }
}

impl CallAnswer for OwnedAnswer {
    fn header(&self, name: &str) -> Option<String> {
        if !self.succeeded {
            return None;
        }
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }

    fn body_size(&self) -> usize {
        self.body.len()
    }

    fn body(&self) -> Vec<u8> {
        self.body.clone()
    }
}
