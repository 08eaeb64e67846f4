//! One call on record: the fields, how they are chosen, redacted and
//! written as a JSON object.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A field of the record, in the order records list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Time,
    TimestampMs,
    RecordId,
    RequestId,
    Api,
    AppKey,
    AppName,
    ClientIp,
    Method,
    Host,
    Path,
    Query,
    Status,
    ErrorCode,
    LatencyMs,
    UpstreamLatencyMs,
    RequestBytes,
    ResponseBytes,
    UpstreamCluster,
    UpstreamHost,
    UserAgent,
    ResponseFlags,
    Stage,
    User,
    /// The backend's own status, when error mapping changed it.
    BackendStatus,
    /// The backend's own error code, when error mapping read one.
    BackendErrorCode,
    /// What threat-protection found (`sql`, `json_depth`…), where, and
    /// libinjection's fingerprint.
    Threat,
    ThreatPlace,
    ThreatFingerprint,
}

impl Field {
    pub const ALL: [Field; 29] = [
        Field::Time,
        Field::TimestampMs,
        Field::RecordId,
        Field::RequestId,
        Field::Api,
        Field::AppKey,
        Field::AppName,
        Field::ClientIp,
        Field::Method,
        Field::Host,
        Field::Path,
        Field::Query,
        Field::Status,
        Field::ErrorCode,
        Field::LatencyMs,
        Field::UpstreamLatencyMs,
        Field::RequestBytes,
        Field::ResponseBytes,
        Field::UpstreamCluster,
        Field::UpstreamHost,
        Field::UserAgent,
        Field::ResponseFlags,
        Field::Stage,
        Field::User,
        Field::BackendStatus,
        Field::BackendErrorCode,
        Field::Threat,
        Field::ThreatPlace,
        Field::ThreatFingerprint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::TimestampMs => "timestamp_ms",
            Field::RecordId => "record_id",
            Field::RequestId => "request_id",
            Field::Api => "api",
            Field::AppKey => "app_key",
            Field::AppName => "app_name",
            Field::ClientIp => "client_ip",
            Field::Method => "method",
            Field::Host => "host",
            Field::Path => "path",
            Field::Query => "query",
            Field::Status => "status",
            Field::ErrorCode => "error_code",
            Field::LatencyMs => "latency_ms",
            Field::UpstreamLatencyMs => "upstream_latency_ms",
            Field::RequestBytes => "request_bytes",
            Field::ResponseBytes => "response_bytes",
            Field::UpstreamCluster => "upstream_cluster",
            Field::UpstreamHost => "upstream_host",
            Field::UserAgent => "user_agent",
            Field::ResponseFlags => "response_flags",
            Field::Stage => "stage",
            Field::User => "user",
            Field::BackendStatus => "backend_status",
            Field::BackendErrorCode => "backend_error_code",
            Field::Threat => "threat",
            Field::ThreatPlace => "threat_place",
            Field::ThreatFingerprint => "threat_fingerprint",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// The fields a deployment records. `record_id` is always among them: it is
/// what a store deduplicates a retried batch by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSet(u32);

impl FieldSet {
    /// Everything but the query string, which may carry personal data,
    /// and the fields of error mapping and threat-protection (each costs
    /// an Envoy property read per call, and a store's table gains them
    /// when it asks for them).
    pub fn default_set() -> Self {
        let left_out = Field::Query.bit()
            | Field::BackendStatus.bit()
            | Field::BackendErrorCode.bit()
            | Field::Threat.bit()
            | Field::ThreatPlace.bit()
            | Field::ThreatFingerprint.bit();
        Self(Field::ALL.iter().map(|f| f.bit()).sum::<u32>() & !left_out)
    }

    pub fn of(fields: &[Field]) -> Self {
        Self(
            fields
                .iter()
                .fold(Field::RecordId.bit(), |bits, f| bits | f.bit()),
        )
    }

    pub fn contains(self, field: Field) -> bool {
        self.0 & field.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Field> {
        Field::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

/// One call. Text fields are empty when unknown; the JSON leaves out only
/// `upstream_latency_ms` when there was no upstream response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub timestamp_ms: u64,
    /// Unique per record and the same in every attempt to send it.
    pub record_id: RecordId,
    pub request_id: String,
    pub api: String,
    pub app_key: String,
    pub app_name: String,
    pub client_ip: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub error_code: String,
    pub latency_ms: u64,
    pub upstream_latency_ms: Option<u64>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub upstream_cluster: String,
    pub upstream_host: String,
    pub user_agent: String,
    pub response_flags: String,
    /// The stage called (`X-Ca-Stage`, `RELEASE` when absent).
    pub stage: String,
    /// The user a third-party authorizer named (ext-auth's `gw_user`).
    pub user: String,
    /// Values of the configured extra headers, in configuration order.
    pub headers: Vec<String>,
    /// The backend's status and error code when error mapping changed
    /// what the client saw.
    pub backend_status: Option<u16>,
    pub backend_error_code: String,
    /// What threat-protection found, if anything (the value found never).
    pub threat: String,
    pub threat_place: String,
    pub threat_fingerprint: String,
}

pub enum FieldValue<'a> {
    Text(&'a str),
    Int(u64),
    Absent,
}

impl Record {
    pub fn value(&self, field: Field) -> FieldValue<'_> {
        use FieldValue::{Absent, Int, Text};
        match field {
            Field::Time | Field::TimestampMs => Int(self.timestamp_ms),
            Field::RecordId => Text(self.record_id.as_str()),
            Field::RequestId => Text(&self.request_id),
            Field::Api => Text(&self.api),
            Field::AppKey => Text(&self.app_key),
            Field::AppName => Text(&self.app_name),
            Field::ClientIp => Text(&self.client_ip),
            Field::Method => Text(&self.method),
            Field::Host => Text(&self.host),
            Field::Path => Text(&self.path),
            Field::Query => Text(&self.query),
            Field::Status => Int(u64::from(self.status)),
            Field::ErrorCode => Text(&self.error_code),
            Field::LatencyMs => Int(self.latency_ms),
            Field::UpstreamLatencyMs => self.upstream_latency_ms.map_or(Absent, Int),
            Field::RequestBytes => Int(self.request_bytes),
            Field::ResponseBytes => Int(self.response_bytes),
            Field::UpstreamCluster => Text(&self.upstream_cluster),
            Field::UpstreamHost => Text(&self.upstream_host),
            Field::UserAgent => Text(&self.user_agent),
            Field::ResponseFlags => Text(&self.response_flags),
            Field::Stage => Text(&self.stage),
            Field::User => Text(&self.user),
            Field::BackendStatus => self
                .backend_status
                .map_or(Absent, |status| Int(u64::from(status))),
            Field::BackendErrorCode => Text(&self.backend_error_code),
            Field::Threat => Text(&self.threat),
            Field::ThreatPlace => Text(&self.threat_place),
            Field::ThreatFingerprint => Text(&self.threat_fingerprint),
        }
    }

    /// Memory the record holds, for the queue's byte limit.
    pub fn heap_size(&self) -> usize {
        let texts = [
            &self.request_id,
            &self.api,
            &self.app_key,
            &self.app_name,
            &self.client_ip,
            &self.method,
            &self.host,
            &self.path,
            &self.query,
            &self.error_code,
            &self.upstream_cluster,
            &self.upstream_host,
            &self.user_agent,
            &self.response_flags,
            &self.stage,
            &self.user,
            &self.backend_error_code,
            &self.threat,
            &self.threat_place,
            &self.threat_fingerprint,
        ];
        std::mem::size_of::<Record>()
            + texts.iter().map(|t| t.capacity()).sum::<usize>()
            + self
                .headers
                .iter()
                .map(|h| h.capacity() + std::mem::size_of::<String>())
                .sum::<usize>()
    }
}

/// A record's identity: 32 lowercase hex digits, a random 64-bit prefix
/// drawn once per queue and a 64-bit count. Unlike `x-request-id`, which a
/// client may send and a proxy may keep, no caller can make two calls share
/// one, so a store may drop a row whose id it already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordId([u8; 32]);

impl Default for RecordId {
    fn default() -> Self {
        Self([b'0'; 32])
    }
}

impl RecordId {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Hands out record ids; shared by the threads that feed one queue.
#[derive(Debug)]
pub struct RecordIds {
    prefix: u64,
    count: AtomicU64,
}

impl RecordIds {
    /// `prefix` must be random: ids of two queues differ by it alone.
    pub fn new(prefix: u64) -> Self {
        Self {
            prefix,
            count: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> RecordId {
        let count = self.count.fetch_add(1, Ordering::Relaxed);
        let mut id = [0; 32];
        // 32 hex digits fill the 32 bytes exactly.
        let _ = write!(&mut id[..], "{:016x}{count:016x}", self.prefix);
        RecordId(id)
    }
}

/// How the record's time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeStyle {
    /// RFC 3339 with milliseconds, UTC, under the given key.
    Rfc3339(&'static str),
    /// Seconds since the Unix epoch (what a ClickHouse `DateTime` column reads).
    EpochSeconds,
}

/// What a record looks like on the wire: which fields, the extra header
/// columns and the time style.
#[derive(Debug, Clone)]
pub struct Layout {
    pub fields: FieldSet,
    /// Column names of the extra headers (`header_x_tenant`).
    pub header_columns: Vec<String>,
}

pub fn rfc3339_millis(timestamp_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(timestamp_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Appends `text` as a JSON string.
pub fn write_json_str(out: &mut Vec<u8>, text: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

impl Layout {
    /// Appends the record as one JSON object.
    pub fn write_json(&self, out: &mut Vec<u8>, record: &Record, time: TimeStyle) {
        out.push(b'{');
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, name: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            write_json_str(out, name);
            out.push(b':');
        };
        for field in self.fields.iter() {
            match (field, record.value(field)) {
                (Field::Time, _) => match time {
                    TimeStyle::Rfc3339(name) => {
                        key(out, name);
                        write_json_str(out, &rfc3339_millis(record.timestamp_ms));
                    }
                    TimeStyle::EpochSeconds => {
                        key(out, "time");
                        let _ = write!(out, "{}", record.timestamp_ms / 1000);
                    }
                },
                (_, FieldValue::Text(text)) => {
                    key(out, field.name());
                    write_json_str(out, text);
                }
                (_, FieldValue::Int(value)) => {
                    key(out, field.name());
                    let _ = write!(out, "{value}");
                }
                (_, FieldValue::Absent) => {}
            }
        }
        for (column, value) in self.header_columns.iter().zip(&record.headers) {
            key(out, column);
            write_json_str(out, value);
        }
        out.push(b'}');
    }
}

/// The stage a request called, as Alibaba's `X-Ca-Stage` names it: the
/// header upper-cased (at most 32 characters), `RELEASE` when absent.
pub use gateway_common::host::stage;

/// Column name for an extra header: `X-Tenant` → `header_x_tenant`.
pub fn header_column(name: &str) -> String {
    let mut column = String::from("header_");
    column.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        }
    }));
    column
}

pub const REDACTED: &str = "[REDACTED]";

/// Headers whose values are credentials: never recorded, whatever the
/// configuration says.
pub const CREDENTIAL_HEADERS: [&str; 7] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-ca-signature",
    "x-api-key",
    "x-gw-signature",
];

/// Query parameters whose values are redacted when the query is recorded.
pub const CREDENTIAL_QUERY_PARAMETERS: [&str; 9] = [
    "access_token",
    "token",
    "signature",
    "sign",
    "password",
    "secret",
    "api_key",
    "apikey",
    "x-ca-signature",
];

/// The query string with the values of `secret_names` (case-insensitive)
/// replaced, keeping everything else as sent.
pub fn redact_query(query: &str, secret_names: &[String]) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = gateway_common::params::url_decode(name).unwrap_or_default();
        if !value.is_empty()
            && secret_names
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&decoded))
        {
            out.push_str(name);
            out.push('=');
            out.push_str(REDACTED);
        } else {
            out.push_str(pair);
        }
    }
    out
}

/// Whether a request is kept under sampling `rate` (0.0 to 1.0): decided by
/// a hash of the request id, so every Envoy and every retry agrees.
pub fn sampled(request_id: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    // FNV-1a, then the murmur3 finaliser so similar ids spread evenly.
    let mut hash = request_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    (hash >> 11) as f64 / (1u64 << 53) as f64 <= rate
}

/// Envoy's response flags (the legacy bitmask in the `response.flags`
/// attribute) as the short names its access log prints, comma-separated.
pub fn response_flag_names(bits: u64) -> String {
    const NAMES: [&str; 30] = [
        "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
        "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF",
        "DO", "DR", "UDO",
    ];
    let mut names = String::new();
    for (bit, name) in NAMES.iter().enumerate() {
        if bits & (1 << bit) != 0 {
            if !names.is_empty() {
                names.push(',');
            }
            names.push_str(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            timestamp_ms: 1_795_435_200_123,
            request_id: "r-1".into(),
            api: "orders".into(),
            method: "GET".into(),
            path: "/orders/7".into(),
            status: 200,
            latency_ms: 12,
            headers: vec!["tenant \"a\"".into()],
            ..Default::default()
        }
    }

    fn json(layout: &Layout, record: &Record, time: TimeStyle) -> serde_json::Value {
        let mut out = Vec::new();
        layout.write_json(&mut out, record, time);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn a_record_is_one_json_object_with_the_chosen_fields() {
        let layout = Layout {
            fields: FieldSet::of(&[
                Field::Time,
                Field::Api,
                Field::Status,
                Field::UpstreamLatencyMs,
            ]),
            header_columns: vec![header_column("X-Tenant")],
        };
        assert_eq!(
            json(&layout, &record(), TimeStyle::Rfc3339("time")),
            serde_json::json!({"time": "2026-11-23T12:00:00.123Z", "record_id": "0".repeat(32),
                               "api": "orders", "status": 200, "header_x_tenant": "tenant \"a\""})
        );
        assert_eq!(
            json(&layout, &record(), TimeStyle::EpochSeconds)["time"],
            1_795_435_200
        );
        assert_eq!(
            json(&layout, &record(), TimeStyle::Rfc3339("@timestamp"))["@timestamp"],
            "2026-11-23T12:00:00.123Z"
        );
    }

    #[test]
    fn the_stage_is_the_header_upper_cased_or_release() {
        assert_eq!(stage(None), "RELEASE");
        assert_eq!(stage(Some("  ")), "RELEASE");
        assert_eq!(stage(Some("test")), "TEST");
        assert_eq!(stage(Some(" Pre ")), "PRE");
        assert_eq!(stage(Some(&"x".repeat(100))).len(), 32);
    }

    #[test]
    fn the_default_field_set_leaves_out_the_query_and_the_fields_other_filters_publish() {
        let set = FieldSet::default_set();
        let left_out = [
            Field::Query,
            Field::BackendStatus,
            Field::BackendErrorCode,
            Field::Threat,
            Field::ThreatPlace,
            Field::ThreatFingerprint,
        ];
        for field in left_out {
            assert!(!set.contains(field));
        }
        assert_eq!(set.iter().count(), Field::ALL.len() - left_out.len());
        assert_eq!(Field::from_name("latency_ms"), Some(Field::LatencyMs));
        assert_eq!(Field::from_name("password"), None);
    }

    #[test]
    fn record_ids_are_the_prefix_then_the_count_in_hex() {
        let ids = RecordIds::new(0x0123_4567_89ab_cdef);
        assert_eq!(ids.next().as_str(), "0123456789abcdef0000000000000000");
        assert_eq!(ids.next().as_str(), "0123456789abcdef0000000000000001");
        for _ in 0..0xfe {
            ids.next();
        }
        assert_eq!(ids.next().as_str(), "0123456789abcdef0000000000000100");
        let other = RecordIds::new(u64::MAX);
        assert_eq!(other.next().as_str(), "ffffffffffffffff0000000000000000");
    }

    #[test]
    fn record_ids_stay_unique_across_threads() {
        let ids = std::sync::Arc::new(RecordIds::new(7));
        let drawn: Vec<Vec<RecordId>> = (0..4)
            .map(|_| {
                let ids = ids.clone();
                std::thread::spawn(move || (0..1000).map(|_| ids.next()).collect())
            })
            .map(|t| t.join().expect("thread"))
            .collect();
        let unique: std::collections::HashSet<_> = drawn.iter().flatten().map(|id| id.0).collect();
        assert_eq!(unique.len(), 4000);
    }

    #[test]
    fn every_field_set_holds_the_record_id() {
        assert!(FieldSet::of(&[]).contains(Field::RecordId));
        assert!(FieldSet::of(&[Field::Status]).contains(Field::RecordId));
        assert!(FieldSet::default_set().contains(Field::RecordId));
    }

    #[test]
    fn credential_query_values_are_redacted() {
        let secrets: Vec<String> = CREDENTIAL_QUERY_PARAMETERS.map(String::from).to_vec();
        assert_eq!(
            redact_query("q=shoes&Token=abc&page=2&sign=&access%5Ftoken=x", &secrets),
            "q=shoes&Token=[REDACTED]&page=2&sign=&access%5Ftoken=[REDACTED]"
        );
    }

    #[test]
    fn sampling_is_decided_by_the_request_id() {
        assert!(sampled("any", 1.0));
        assert!(!sampled("any", 0.0));
        let kept = (0..10_000)
            .filter(|i| sampled(&format!("req-{i}"), 0.25))
            .count();
        assert!((2_200..2_800).contains(&kept), "{kept}");
        assert_eq!(sampled("req-42", 0.5), sampled("req-42", 0.5));
    }

    #[test]
    fn response_flags_print_as_envoy_prints_them() {
        assert_eq!(response_flag_names(0), "");
        assert_eq!(response_flag_names(1 << 5), "UF");
        assert_eq!(response_flag_names((1 << 2) | (1 << 15)), "UT,URX");
    }

    #[test]
    fn the_heap_size_grows_with_the_text() {
        let small = record();
        let mut large = record();
        large.path = "/x".repeat(1000);
        assert!(large.heap_size() >= small.heap_size() + 2000 - small.path.len());
    }

    proptest::proptest! {
        #[test]
        fn any_text_makes_valid_json_that_reads_back(path in "\\PC*", agent in ".*", header in ".*") {
            let layout = Layout {
                fields: FieldSet::default_set(),
                header_columns: vec![header_column("X-Anything")],
            };
            let record = Record { path: path.clone(), user_agent: agent.clone(), headers: vec![header.clone()], ..record() };
            let parsed = json(&layout, &record, TimeStyle::Rfc3339("time"));
            proptest::prop_assert_eq!(parsed["path"].as_str(), Some(path.as_str()));
            proptest::prop_assert_eq!(parsed["user_agent"].as_str(), Some(agent.as_str()));
            proptest::prop_assert_eq!(parsed["header_x_anything"].as_str(), Some(header.as_str()));
        }

        #[test]
        fn a_redacted_query_never_shows_a_token_value(prefix in "[a-z=&]{0,12}", secret in "[A-Za-z0-9]{1,16}") {
            let secrets: Vec<String> = CREDENTIAL_QUERY_PARAMETERS.map(String::from).to_vec();
            let query = format!("{prefix}&token={secret}SECRET&TOKEN={secret}SECRET");
            proptest::prop_assert!(!redact_query(&query, &secrets).contains("SECRET"));
        }
    }
}
