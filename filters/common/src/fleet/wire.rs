//! The fleet store's wire format: one request's operations as one call of
//! [`SCRIPT`] through Webdis (`POST /` with `EVALSHA/<sha>/<numkeys>/<keys…>/<args…>`,
//! every part percent-encoded), and the parsing of Webdis's JSON answer.
//! No host calls: the policy builds the body, an adapter sends it.

use serde_json::Value;

/// The Lua script every call runs: nonces, quota groups and records, in order.
pub const SCRIPT: &str = include_str!("script.lua");
/// SHA-1 of [`SCRIPT`], the name Redis caches it under (a test checks it).
pub const SCRIPT_SHA1: &str = "3d4ac499c10a9e4f83a45ce4c5e1990a7f1b9777";

/// The values of one operation's result.
pub const RESULT_WIDTH: usize = 3;

/// A record's value when the call only reads it.
const READ_ONLY: &str = "-";

/// One fleet check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Records `key` for `ttl_ms` unless it is recorded already.
    Nonce { key: String, ttl_ms: u64 },
    /// Counts the request in every rule of the group that admits it, or in
    /// none when one of them refuses it.
    Quotas(Vec<QuotaCheck>),
    /// Writes a versioned record if its version is still `version`, and
    /// answers its version (and value, when it moved on).
    Record(RecordSwap),
}

/// A compare-and-set of a versioned record (a fleet breaker's state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSwap {
    pub key: String,
    /// The version the value was computed from (0: none yet).
    pub version: u64,
    /// The new value (visible ASCII, not `-`); `None` only reads.
    pub value: Option<String>,
    /// How long the record lives after a write.
    pub ttl_ms: u64,
    /// The version of the record when this write creates it: random (see
    /// [`first_version`]), so a record made again after it expired never
    /// repeats a version some Envoy still holds.
    pub first_version: u64,
}

/// Versions a new record may start at: below 2^40, so a record's versions
/// stay exact in the script's doubles for as many writes as it will ever see.
pub const FIRST_VERSIONS: u64 = 1 << 40;

/// A new record's first version from random bits (never 0, which means absent).
pub fn first_version(random: u64) -> u64 {
    random % (FIRST_VERSIONS - 1) + 1
}

/// One quota rule's check, with the numbers the script compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaCheck {
    /// The counter of the current window.
    pub key: String,
    /// The previous window's counter (sliding windows only).
    pub previous_key: Option<String>,
    pub limit: u32,
    /// The weight of the current window (1 for fixed windows, the window's
    /// length in ms for sliding ones) and of the previous one (0 for fixed
    /// windows, the ms left of the current window for sliding ones).
    pub window_weight: u64,
    pub previous_weight: u64,
    /// How long the counter must live (its window, and the next one for
    /// sliding windows, plus a grace period).
    pub ttl_ms: u64,
    pub dry_run: bool,
    /// Units to take at once, for a fixed window (`None`: the request's one).
    pub lease: Option<LeaseAsk>,
}

/// A quota lease asked for: up to `units` counted at once (the request's
/// among them), at most the quota left divided by `holders` and never
/// below one, so leases shrink to a single unit near the limit. The units
/// granted come back in the result's `previous`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAsk {
    pub units: u32,
    pub holders: u32,
}

impl LeaseAsk {
    /// The units the script grants when `current` of `limit` are counted.
    pub fn grant(self, limit: u64, current: u64) -> u64 {
        let left = limit.saturating_sub(current);
        let share = left / u64::from(self.holders.max(1));
        u64::from(self.units).min(share).min(left).max(1)
    }
}

impl Op {
    /// The result triples this operation produces.
    pub fn results(&self) -> usize {
        match self {
            Op::Nonce { .. } => 1,
            Op::Quotas(rules) => rules.len(),
            Op::Record(_) => 1,
        }
    }

    /// Its first key, whose hash slot is its keys' (see
    /// [`super::Store::key`]); `None` for a group of no rules.
    pub fn first_key(&self) -> Option<&str> {
        match self {
            Op::Nonce { key, .. } => Some(key),
            Op::Quotas(rules) => rules.first().map(|rule| rule.key.as_str()),
            Op::Record(swap) => Some(&swap.key),
        }
    }

    /// Whether the script runs nothing after this operation, given its
    /// results: a replayed nonce, or a quota group a rule refused.
    pub fn stops(&self, results: &[OpResult]) -> bool {
        match self {
            Op::Nonce { .. } | Op::Quotas(_) => {
                results.iter().any(|result| result.state == State::Refused)
            }
            Op::Record(_) => false,
        }
    }
}

/// The state of one operation's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// A nonce recorded, a request counted, a record written.
    Done,
    /// A nonce seen before, a rule over its limit, a record not written
    /// (its version moved on, or the call only read it).
    Refused,
    /// Over its limit in dry run: not counted, not refused.
    DryRunRefused,
    /// Within its limit, but another rule of its group refused the request.
    NotCounted,
    /// Not run: an earlier nonce was a replay, or a quota group refused.
    #[default]
    NotRun,
}

/// One operation's result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpResult {
    pub state: State,
    /// The quota counts: the previous window's and the current one's. A
    /// record's version is `current`.
    pub previous: u64,
    pub current: u64,
    /// A record's stored value, when it is not the version sent.
    pub value: Option<String>,
}

/// Every result of one call, or why there are none.
pub type Answer = Result<Vec<OpResult>, Failure>;

/// Why a call gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The call could not be made (e.g. the cluster is unknown).
    Dispatch,
    /// No answer in time, or the connection failed.
    NoAnswer,
    /// Webdis answered with this HTTP status (503: Redis is down).
    Status(u32),
    /// Redis does not have the script cached: send it again with `EVAL`.
    NoScript,
    /// Redis or the script answered an error.
    Error(String),
    /// The answer is not what the script returns.
    BadReply(String),
}

impl Failure {
    /// The failure's name in metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Dispatch => "dispatch",
            Failure::NoAnswer => "no_answer",
            Failure::Status(_) => "status",
            Failure::NoScript => "no_script",
            Failure::Error(_) => "error",
            Failure::BadReply(_) => "bad_reply",
        }
    }

    pub const REASONS: [&'static str; 6] = [
        "dispatch",
        "no_answer",
        "status",
        "no_script",
        "error",
        "bad_reply",
    ];
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Dispatch => write!(f, "the call to the store could not be made"),
            Failure::NoAnswer => write!(f, "no answer in time"),
            Failure::Status(status) => write!(f, "HTTP status {status}"),
            Failure::NoScript => write!(f, "the script is not loaded"),
            Failure::Error(message) => write!(f, "error: {message}"),
            Failure::BadReply(why) => write!(f, "unexpected answer: {why}"),
        }
    }
}

/// The command part of a call after the script (`<numkeys>`, the keys, the
/// call's id, the arguments), kept so a call can be sent again with the
/// script text after `NOSCRIPT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arguments {
    parts: Vec<String>,
    /// Where the id is in `parts`.
    id_at: usize,
}

impl Arguments {
    /// `call_id`: random bits the answer must echo (see [`Arguments::id`]).
    pub fn new(ops: &[Op], call_id: u64) -> Self {
        let mut keys: Vec<&str> = Vec::new();
        let mut args: Vec<String> = vec![format!("{call_id:016x}")];
        for op in ops {
            match op {
                Op::Nonce { key, ttl_ms } => {
                    keys.push(key);
                    args.push("n".into());
                    args.push(ttl_ms.max(&1).to_string());
                }
                Op::Record(swap) => {
                    keys.push(&swap.key);
                    args.extend([
                        "r".to_string(),
                        swap.version.to_string(),
                        swap.value.clone().unwrap_or_else(|| READ_ONLY.into()),
                        swap.ttl_ms.max(1).to_string(),
                        swap.first_version.max(1).to_string(),
                    ]);
                }
                Op::Quotas(rules) => {
                    args.push("g".into());
                    args.push(rules.len().to_string());
                    for rule in rules {
                        keys.push(&rule.key);
                        if let Some(previous) = &rule.previous_key {
                            keys.push(previous);
                        }
                        let algorithm = if rule.previous_key.is_some() {
                            "s"
                        } else {
                            "f"
                        };
                        let lease = rule
                            .lease
                            .filter(|_| rule.previous_key.is_none() && !rule.dry_run)
                            .unwrap_or(LeaseAsk {
                                units: 1,
                                holders: 1,
                            });
                        args.extend([
                            algorithm.to_string(),
                            rule.limit.to_string(),
                            rule.window_weight.to_string(),
                            rule.previous_weight.to_string(),
                            rule.ttl_ms.max(1).to_string(),
                            if rule.dry_run { "1" } else { "0" }.to_string(),
                            lease.units.max(1).to_string(),
                            lease.holders.max(1).to_string(),
                        ]);
                    }
                }
            }
        }
        let mut parts = Vec::with_capacity(1 + keys.len() + args.len());
        parts.push(keys.len().to_string());
        parts.extend(keys.iter().map(|key| key.to_string()));
        let id_at = parts.len();
        parts.extend(args);
        Self { parts, id_at }
    }

    /// The call's id, the first value of its answer: an answer that starts
    /// with another is another call's, which Webdis can deliver to a new
    /// connection after its own client closed (a cancelled or timed-out call).
    pub fn id(&self) -> &str {
        &self.parts[self.id_at]
    }

    /// Webdis's path of the command: its parts percent-encoded, joined by `/`.
    fn webdis(&self, command: &str, script: &str) -> Vec<u8> {
        let mut body = String::from(command);
        for part in std::iter::once(script).chain(self.parts.iter().map(String::as_str)) {
            body.push('/');
            percent_encode(part, &mut body);
        }
        body.into_bytes()
    }

    /// The Webdis body that calls the cached script by its SHA-1.
    pub fn by_sha(&self) -> Vec<u8> {
        self.webdis("EVALSHA", SCRIPT_SHA1)
    }

    /// The Webdis body that sends the script itself (Redis caches it on the way).
    pub fn with_script(&self) -> Vec<u8> {
        self.webdis("EVAL", SCRIPT)
    }

    /// [`Arguments::by_sha`] as a Redis command.
    pub fn resp_by_sha(&self) -> Vec<u8> {
        self.resp("EVALSHA", SCRIPT_SHA1)
    }

    /// [`Arguments::with_script`] as a Redis command.
    pub fn resp_with_script(&self) -> Vec<u8> {
        self.resp("EVAL", SCRIPT)
    }

    fn resp(&self, command: &str, script: &str) -> Vec<u8> {
        super::resp::command(
            [command.as_bytes(), script.as_bytes()]
                .into_iter()
                .chain(self.parts.iter().map(String::as_bytes)),
        )
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so no
/// part can be read as a separator by Webdis.
fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 15)]));
        }
    }
}

/// Reads Webdis's answer to the call `id` expecting `expected` results:
/// `status` is the HTTP status (`None` when there was no answer).
pub fn parse_reply(
    status: Option<u32>,
    body: &[u8],
    id: &str,
    expected: usize,
) -> Result<Vec<OpResult>, Failure> {
    match status {
        None => return Err(Failure::NoAnswer),
        Some(200) => {}
        Some(other) => return Err(Failure::Status(other)),
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| Failure::BadReply("the body is not JSON".into()))?;
    let reply = match &value {
        Value::Object(fields) if fields.len() == 1 => fields
            .get("EVALSHA")
            .or_else(|| fields.get("EVAL"))
            .ok_or_else(|| Failure::BadReply("not an EVAL or EVALSHA answer".into()))?,
        _ => return Err(Failure::BadReply("not an object of one command".into())),
    };
    let items = match reply {
        Value::Array(items) => items,
        _ => return Err(Failure::BadReply("not a list".into())),
    };
    // Webdis answers a Redis error as `[false, "<message>"]`.
    if let [Value::Bool(false), Value::String(message)] = items.as_slice() {
        return Err(redis_error(message));
    }
    let items: Vec<Item> = items
        .iter()
        .map(|item| match item {
            Value::String(text) => Item::Text(text.clone()),
            other => Item::Integer(other.as_i64()),
        })
        .collect();
    results(&items, id, expected)
}

/// An error Redis answered.
fn redis_error(message: &str) -> Failure {
    if message.starts_with("NOSCRIPT") {
        Failure::NoScript
    } else {
        Failure::Error(message.chars().take(200).collect())
    }
}

/// Reads Redis's own answer (RESP) to the call `id` expecting `expected`
/// results.
pub fn parse_resp_reply(body: &[u8], id: &str, expected: usize) -> Result<Vec<OpResult>, Failure> {
    use super::resp::{parse, Reply};
    let reply = match parse(body) {
        Ok(Some((reply, length))) if length == body.len() => reply,
        Ok(_) => return Err(Failure::BadReply("not one whole reply".into())),
        Err(why) => return Err(Failure::BadReply(why)),
    };
    let items = match reply {
        Reply::Error(message) => return Err(redis_error(&message)),
        Reply::Array(Some(items)) => items,
        _ => return Err(Failure::BadReply("not a list".into())),
    };
    let items: Vec<Item> = items
        .into_iter()
        .map(|item| match item {
            Reply::Integer(n) => Item::Integer(Some(n)),
            Reply::Bulk(Some(bytes)) => Item::Text(String::from_utf8_lossy(&bytes).into_owned()),
            _ => Item::Integer(None),
        })
        .collect();
    results(&items, id, expected)
}

/// One value of the script's answer: a number, or a record's text (`None`:
/// neither).
enum Item {
    Integer(Option<i64>),
    Text(String),
}

/// The script's answer to the call `id` as `expected` results.
fn results(items: &[Item], id: &str, expected: usize) -> Result<Vec<OpResult>, Failure> {
    let Some((Item::Text(answered), items)) = items.split_first() else {
        return Err(Failure::BadReply("no call id".into()));
    };
    if answered != id {
        return Err(Failure::BadReply("the answer of another call".into()));
    }
    if items.len() != expected * RESULT_WIDTH {
        return Err(Failure::BadReply(format!(
            "{} values for {expected} checks",
            items.len()
        )));
    }
    items
        .chunks_exact(RESULT_WIDTH)
        .map(|triple| {
            let int = |v: &Item| match v {
                Item::Integer(Some(n)) => Ok(*n),
                _ => Err(Failure::BadReply("not an integer".into())),
            };
            let count = |v: &Item| {
                int(v).and_then(|n| {
                    u64::try_from(n).map_err(|_| Failure::BadReply("a negative count".into()))
                })
            };
            let state = match int(&triple[0])? {
                1 => State::Done,
                0 => State::Refused,
                2 => State::DryRunRefused,
                3 => State::NotCounted,
                -1 => State::NotRun,
                other => return Err(Failure::BadReply(format!("unknown state {other}"))),
            };
            // A record's triple ends with its value, a string ('' for none).
            let (previous, current, value) = match &triple[2] {
                Item::Text(text) => (
                    0,
                    count(&triple[1])?,
                    (!text.is_empty()).then(|| text.clone()),
                ),
                other => (count(&triple[1])?, count(other)?, None),
            };
            Ok(OpResult {
                state,
                previous,
                current,
                value,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    const ID: &str = "id";

    #[test]
    fn the_script_sha1_is_the_scripts() {
        let digest = Sha1::digest(SCRIPT.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex, SCRIPT_SHA1,
            "update SCRIPT_SHA1 after changing script.lua"
        );
    }

    fn fixed(key: &str, limit: u32) -> QuotaCheck {
        QuotaCheck {
            key: key.into(),
            previous_key: None,
            limit,
            window_weight: 1,
            previous_weight: 0,
            ttl_ms: 2000,
            dry_run: false,
            lease: None,
        }
    }

    #[test]
    fn a_lease_is_asked_for_fixed_windows_only_and_shrinks_near_the_limit() {
        let ask = LeaseAsk {
            units: 10,
            holders: 4,
        };
        let leased = QuotaCheck {
            lease: Some(ask),
            ..fixed("gw:q:a", 100)
        };
        let sliding = QuotaCheck {
            previous_key: Some("gw:q:a:0".into()),
            ..leased.clone()
        };
        let dry = QuotaCheck {
            dry_run: true,
            ..leased.clone()
        };
        let args = |check: QuotaCheck| {
            String::from_utf8(Arguments::new(&[Op::Quotas(vec![check])], 1).by_sha()).unwrap()
        };
        assert!(args(leased).ends_with("/f/100/1/0/2000/0/10/4"));
        assert!(args(sliding).ends_with("/1/1"));
        assert!(args(dry).ends_with("/1/1"));
        // Far from the limit, the units asked; then the share of what is
        // left; one unit near the limit, and never past it.
        let grants: Vec<u64> = [0, 60, 80, 97, 99]
            .map(|current| ask.grant(100, current))
            .to_vec();
        assert_eq!(grants, [10, 10, 5, 1, 1]);
        let few = LeaseAsk {
            units: 10,
            holders: 1,
        };
        assert_eq!(few.grant(100, 97), 3);
    }

    #[test]
    fn every_part_is_percent_encoded_in_key_then_argument_order() {
        let ops = [
            Op::Nonce {
                key: "gw:n/1".into(),
                ttl_ms: 900_000,
            },
            Op::Quotas(vec![
                fixed("gw:q:a", 5),
                QuotaCheck {
                    previous_key: Some("gw:q:b:9".into()),
                    window_weight: 60_000,
                    previous_weight: 1_000,
                    dry_run: true,
                    ..fixed("gw:q:b:10", 7)
                },
            ]),
        ];
        let args = Arguments::new(&ops, 0xab);
        assert_eq!(args.id(), "00000000000000ab");
        assert_eq!(
            String::from_utf8(args.by_sha()).unwrap(),
            format!(
                "EVALSHA/{SCRIPT_SHA1}/4/gw%3An%2F1/gw%3Aq%3Aa/gw%3Aq%3Ab%3A10/gw%3Aq%3Ab%3A9\
                 /00000000000000ab/n/900000/g/2/f/5/1/0/2000/0/1/1/s/7/60000/1000/2000/1/1/1"
            )
        );
        let with_script = String::from_utf8(args.with_script()).unwrap();
        assert!(with_script.starts_with("EVAL/--%20The%20fleet"));
        assert!(with_script.ends_with("/s/7/60000/1000/2000/1/1/1"));
        assert!(!with_script["EVAL/".len()..].contains(' '));
    }

    #[test]
    fn results_are_read_in_triples() {
        let body = br#"{"EVALSHA":["id",1,0,0,1,0,3,0,0,5,3,2,4,2,0,9,-1,0,0]}"#;
        let results = parse_reply(Some(200), body, ID, 6).unwrap();
        let states: Vec<State> = results.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [
                State::Done,
                State::Done,
                State::Refused,
                State::NotCounted,
                State::DryRunRefused,
                State::NotRun
            ]
        );
        assert_eq!((results[3].previous, results[3].current), (2, 4));
        // The EVAL answer after a reload reads the same.
        let body = br#"{"EVAL":["id",0,0,0]}"#;
        assert_eq!(
            parse_reply(Some(200), body, ID, 1).unwrap()[0].state,
            State::Refused
        );
    }

    #[test]
    fn redis_s_own_answers_read_as_webdis_s_do() {
        let reply = b"*7\r\n$2\r\nid\r\n:1\r\n:0\r\n:5\r\n:0\r\n:9\r\n$4\r\n0a1b\r\n";
        let results = parse_resp_reply(reply, ID, 2).unwrap();
        assert_eq!(
            (results[0].state, results[0].previous, results[0].current),
            (State::Done, 0, 5)
        );
        assert_eq!(
            (
                results[1].state,
                results[1].current,
                results[1].value.as_deref()
            ),
            (State::Refused, 9, Some("0a1b"))
        );
        assert_eq!(
            parse_resp_reply(b"-NOSCRIPT No matching script.\r\n", ID, 1),
            Err(Failure::NoScript)
        );
        assert_eq!(
            parse_resp_reply(b"-NOPERM this user has no permissions\r\n", ID, 1),
            Err(Failure::Error("NOPERM this user has no permissions".into()))
        );
        for bad in [
            &b"*3\r\n$2\r\nid\r\n:1\r\n:0\r\n"[..],
            b"*4\r\n$2\r\nix\r\n:1\r\n:0\r\n:0\r\n",
            b"*3\r\n:1\r\n:0\r\n:0\r\n",
            b":1\r\n",
            b"*4\r\n$2\r\nid\r\n:1\r\n:0\r\n:0\r\n+x",
        ] {
            assert!(matches!(
                parse_resp_reply(bad, ID, 1),
                Err(Failure::BadReply(_))
            ));
        }
    }

    #[test]
    fn a_redis_command_carries_the_same_parts_unencoded() {
        let args = Arguments::new(
            &[Op::Nonce {
                key: "gw:n/1".into(),
                ttl_ms: 900,
            }],
            0x1f,
        );
        let expected = format!(
            "*7\r\n$7\r\nEVALSHA\r\n$40\r\n{SCRIPT_SHA1}\r\n$1\r\n1\r\n$6\r\ngw:n/1\r\n\
             $16\r\n000000000000001f\r\n$1\r\nn\r\n$3\r\n900\r\n"
        );
        assert_eq!(String::from_utf8(args.resp_by_sha()).unwrap(), expected);
        let with_script = args.resp_with_script();
        let (reply, length) = super::super::resp::parse(&with_script).unwrap().unwrap();
        assert_eq!(length, with_script.len());
        let super::super::resp::Reply::Array(Some(parts)) = reply else {
            panic!("an array")
        };
        assert_eq!(
            parts[0],
            super::super::resp::Reply::Bulk(Some(b"EVAL".to_vec()))
        );
        assert_eq!(
            parts[1],
            super::super::resp::Reply::Bulk(Some(SCRIPT.as_bytes().to_vec()))
        );
    }

    #[test]
    fn a_record_swap_sends_its_version_and_value_or_a_read_marker() {
        let swap = |value: Option<&str>| {
            Op::Record(RecordSwap {
                key: "gw:b:orders".into(),
                version: 7,
                value: value.map(String::from),
                ttl_ms: 60_000,
                first_version: 12_345,
            })
        };
        let body = Arguments::new(&[swap(Some("0a1b")), swap(None)], 1).by_sha();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!(
                "EVALSHA/{SCRIPT_SHA1}/2/gw%3Ab%3Aorders/gw%3Ab%3Aorders\
                 /0000000000000001/r/7/0a1b/60000/12345/r/7/-/60000/12345"
            )
        );
    }

    #[test]
    fn first_versions_are_never_zero_and_stay_exact_in_doubles() {
        for random in [0, 1, FIRST_VERSIONS - 2, FIRST_VERSIONS - 1, u64::MAX] {
            let first = first_version(random);
            assert!((1..FIRST_VERSIONS).contains(&first), "{random}: {first}");
        }
    }

    #[test]
    fn a_record_result_carries_its_version_and_the_stored_value() {
        let body = br#"{"EVALSHA":["id",1,8,"",0,9,"00ff",0,9,"",-1,0,""]}"#;
        let results = parse_reply(Some(200), body, ID, 4).unwrap();
        let read = |r: &OpResult| (r.state, r.previous, r.current, r.value.clone());
        assert_eq!(read(&results[0]), (State::Done, 0, 8, None));
        assert_eq!(
            read(&results[1]),
            (State::Refused, 0, 9, Some("00ff".into()))
        );
        assert_eq!(read(&results[2]), (State::Refused, 0, 9, None));
        assert_eq!(read(&results[3]), (State::NotRun, 0, 0, None));
        assert_eq!(
            parse_reply(Some(200), br#"{"EVALSHA":["id",0,"9",""]}"#, ID, 1),
            Err(Failure::BadReply("not an integer".into()))
        );
    }

    #[test]
    fn every_failure_shape_is_told_apart() {
        let cases: [(Option<u32>, &[u8], Failure); 11] = [
            (None, b"", Failure::NoAnswer),
            (Some(503), b"", Failure::Status(503)),
            (Some(403), b"", Failure::Status(403)),
            (
                Some(200),
                br#"{"EVALSHA":[false,"NOSCRIPT No matching script. Please use EVAL."]}"#,
                Failure::NoScript,
            ),
            (
                Some(200),
                br#"{"EVAL":[false,"ERR boom"]}"#,
                Failure::Error("ERR boom".into()),
            ),
            (
                Some(200),
                b"<html>",
                Failure::BadReply("the body is not JSON".into()),
            ),
            (
                Some(200),
                br#"{"GET":[1,0,0]}"#,
                Failure::BadReply("not an EVAL or EVALSHA answer".into()),
            ),
            (
                Some(200),
                br#"{"EVALSHA":1}"#,
                Failure::BadReply("not a list".into()),
            ),
            (
                Some(200),
                br#"{"EVALSHA":["id",1,0]}"#,
                Failure::BadReply("2 values for 1 checks".into()),
            ),
            (
                Some(200),
                br#"{"EVALSHA":["id",7,0,0]}"#,
                Failure::BadReply("unknown state 7".into()),
            ),
            (
                Some(200),
                br#"{"EVALSHA":["id",1,-4,0]}"#,
                Failure::BadReply("a negative count".into()),
            ),
        ];
        for (status, body, expected) in cases {
            assert_eq!(
                parse_reply(status, body, ID, 1),
                Err(expected),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_answer_without_the_calls_id_is_refused() {
        let another = br#"{"EVALSHA":["other",1,0,0]}"#;
        assert_eq!(
            parse_reply(Some(200), another, ID, 1),
            Err(Failure::BadReply("the answer of another call".into()))
        );
        // An answer of the script before call ids, or of another script.
        assert_eq!(
            parse_reply(Some(200), br#"{"EVALSHA":[1,0,0]}"#, ID, 1),
            Err(Failure::BadReply("no call id".into()))
        );
        assert_eq!(
            parse_resp_reply(b"*4\r\n$5\r\nother\r\n:1\r\n:0\r\n:0\r\n", ID, 1),
            Err(Failure::BadReply("the answer of another call".into()))
        );
    }

    #[test]
    fn a_long_error_message_is_cut() {
        let body = format!(r#"{{"EVAL":[false,"{}"]}}"#, "x".repeat(10_000));
        match parse_reply(Some(200), body.as_bytes(), ID, 1) {
            Err(Failure::Error(message)) => assert_eq!(message.len(), 200),
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn no_body_makes_the_parser_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64), expected in 0usize..4) {
            let _ = parse_reply(Some(200), &body, ID, expected);
        }

        #[test]
        fn an_encoded_part_has_no_separator(text in ".*") {
            let mut out = String::new();
            percent_encode(&text, &mut out);
            proptest::prop_assert!(out.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        }
    }
}
