//! Fleet-wide state: nonces and quota counters that hold for every Envoy of
//! a fleet, in Redis, reached over HTTP through Webdis and an Envoy cluster
//! the user names (Envoy pools, times out, balances and health-checks the
//! calls like any other upstream), or, in the native module, by Redis's own
//! protocol on the module's connection ([`Target::Redis`]).
//!
//! A policy turns a request's checks into [`wire::Op`]s; all of one
//! request's operations travel in one call of one atomic Lua script
//! ([`wire::SCRIPT`]), and the adapter ([`client`]) only sends the body and
//! hands back the answer. In the gateway module the operations of every
//! policy are gathered into one call per request.
//!
//! Keys never carry client input: every client-derived part is a SHA-256
//! digest ([`digest`]). When the store fails, each policy applies its
//! [`FailureMode`].

pub mod client;
pub mod model;
pub mod resp;
pub mod wire;

use crate::config::{check_host_port, ConfigError};
use crate::metrics::{Counter, DefineMetrics};
use crate::stream::{Level, Telemetry};
use crate::upstream::{Upstream, UpstreamFields, UpstreamKind};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;

const DEFAULT_KEY_PREFIX: &str = "gw:";
const DEFAULT_TIMEOUT_MS: u64 = 50;
const MAX_TIMEOUT_MS: u64 = 10_000;
const MAX_PREFIX: usize = 64;
/// How long fleet keys outlive what they record, for Envoys whose clocks
/// are a little behind the others'.
pub const CLOCK_GRACE_MS: u64 = 1_000;

/// Where the fleet store is: an Envoy cluster in front of Webdis, or (the
/// native module) Redis itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The Envoy cluster of the Webdis servers.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Redis itself, which the native module calls on its own connection.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// The `:authority` of the calls (default: the cluster name).
    #[serde(default)]
    pub authority: Option<String>,
    /// The path Webdis answers commands on (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Put before every key (default `gw:`), so several gateways can share
    /// one Redis.
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// How long a request waits for the store before its policies apply
    /// their failure mode (default 50 ms).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// An `Authorization` header for Webdis's ACL (`Basic …`).
    #[serde(default)]
    pub authorization: Option<String>,
}

/// A Redis server the native module calls itself: at `address`, the
/// primary Redis Sentinel names, or the primaries of a Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `host:port`.
    #[serde(default)]
    pub address: Option<String>,
    /// The Sentinels that name the primary (instead of `address`).
    #[serde(default)]
    pub sentinel: Option<SentinelConfig>,
    /// A Redis Cluster's nodes (instead of `address`).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// An ACL user (Redis 6); with `password` only, the default user.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The database number (default 0).
    #[serde(default)]
    pub database: Option<u32>,
    /// TLS to Redis (and to the Sentinels), when given.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
}

/// Redis Sentinel: where the Sentinels are and the name they monitor the
/// primary by.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// `host:port` of each Sentinel, asked in this order.
    pub addresses: Vec<String>,
    /// The name of the monitored primary (`sentinel monitor <name> …`).
    pub master: String,
    /// The Sentinels' own ACL user and password, when they require one.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// Redis Cluster: some of its nodes, from which the others are learnt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `host:port` of nodes to ask for the cluster's slots, in this order.
    pub addresses: Vec<String>,
}

/// A checked [`RedisConfig`]: one connection per process serves every
/// configuration naming the same one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisTarget {
    pub servers: RedisServers,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: u32,
    pub tls: Option<crate::tls::TlsTarget>,
}

/// Where the Redis primary is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedisServers {
    /// At this `host:port`.
    Address(String),
    /// Wherever these Sentinels say the primary `master` is, asked again
    /// each time a connection is made.
    Sentinel {
        addresses: Vec<String>,
        master: String,
        username: Option<String>,
        password: Option<String>,
    },
    /// A Redis Cluster: each command goes to the primary that serves its
    /// hash slot, as these nodes (and then the cluster's own) say.
    Cluster { addresses: Vec<String> },
}

impl RedisServers {
    /// How logs name them.
    pub fn describe(&self) -> String {
        match self {
            RedisServers::Address(address) => address.clone(),
            RedisServers::Sentinel { master, .. } => format!("the primary `{master}` (Sentinel)"),
            RedisServers::Cluster { addresses } => {
                format!("the Redis Cluster of {}", addresses.join(", "))
            }
        }
    }
}

/// The most Sentinels (or cluster nodes) a store may list.
const MAX_SENTINELS: usize = 16;

/// Where a checked store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Webdis behind an Envoy cluster, called over HTTP.
    Webdis(Upstream),
    /// Redis, called by the native module itself.
    Redis(RedisTarget),
}

/// A checked [`StoreConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub target: Target,
    pub key_prefix: String,
    pub authorization: Option<String>,
    /// How long a request waits for the store's answer.
    pub timeout: std::time::Duration,
}

/// The fleet store as an upstream: Webdis answers on `/`, and a request
/// waits 50 ms at most by default.
const STORE: UpstreamKind = UpstreamKind {
    name: "the store",
    default_path: Some("/"),
    default_timeout_ms: DEFAULT_TIMEOUT_MS,
    max_timeout_ms: MAX_TIMEOUT_MS,
};

impl Store {
    pub fn compile(config: &StoreConfig) -> Result<Self, ConfigError> {
        // Both may be given: one configuration for every form, the Wasm
        // modules calling Webdis and the native module Redis itself.
        let webdis = config
            .cluster
            .as_ref()
            .map(|cluster| {
                Upstream::compile(
                    UpstreamFields {
                        cluster,
                        authority: config.authority.as_deref(),
                        path: config.path.as_deref(),
                        timeout_ms: config.timeout_ms,
                    },
                    STORE,
                )
            })
            .transpose()?;
        if webdis.is_some() && config.redis.as_ref().is_some_and(|r| r.cluster.is_some()) {
            // The forms would key differently (hash tags in a cluster only),
            // and Webdis reaches one Redis.
            return Err(ConfigError::new(
                "redis.cluster",
                "beside `cluster` (Webdis), `redis` must be the Redis Webdis reaches: give `address` or `sentinel`",
            ));
        }
        let redis = match &config.redis {
            Some(redis) => redis_target(config, redis, webdis.is_some())?,
            None => None,
        };
        let target = match (webdis, redis) {
            (_, Some(redis)) => Target::Redis(redis),
            (Some(webdis), None) => Target::Webdis(webdis),
            (None, None) => {
                return Err(ConfigError::new(
                    "cluster",
                    "required: the Envoy cluster of Webdis (or, in the native module, `redis`)",
                ))
            }
        };
        let timeout_ms = config.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(ConfigError::new(
                "timeout_ms",
                format!("1 to {MAX_TIMEOUT_MS}"),
            ));
        }
        let key_prefix = config
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.into());
        let prefix_ok = (1..=MAX_PREFIX).contains(&key_prefix.len())
            && key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":_-.".contains(&b));
        if !prefix_ok {
            return Err(ConfigError::new(
                "key_prefix",
                format!("1 to {MAX_PREFIX} letters, digits and `:_-.`"),
            ));
        }
        if let Some(value) = &config.authorization {
            if value.is_empty() || !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err(ConfigError::new(
                    "authorization",
                    "must be a header value of visible ASCII characters",
                ));
            }
        }
        Ok(Self {
            target,
            key_prefix,
            authorization: config.authorization.clone(),
            timeout: std::time::Duration::from_millis(timeout_ms),
        })
    }

    /// A key of this store: the prefix, `kind`, then `tag` and `rest`
    /// joined by `:`. In a Redis Cluster `tag` is the key's hash tag
    /// (`gw:n:{<tag>}:…`): keys of one tag share a hash slot, so the keys
    /// one operation runs on atomically must share their tag.
    pub fn key(&self, kind: &str, tag: &str, rest: &[&str]) -> String {
        let mut key = self.key_prefix.clone();
        key.push_str(kind);
        key.push(':');
        if self.is_cluster() {
            key.push('{');
            key.push_str(tag);
            key.push('}');
        } else {
            key.push_str(tag);
        }
        for part in rest {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Whether the store is a Redis Cluster, where each call's keys must
    /// share one hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(
            &self.target,
            Target::Redis(RedisTarget {
                servers: RedisServers::Cluster { .. },
                ..
            })
        )
    }
}

/// A checked `redis` store, or none where it is not the one used: in the
/// Wasm modules, which cannot open connections of their own and call
/// Webdis (`cluster`) when it is given beside. Webdis's fields have a place
/// only beside `cluster`.
fn redis_target(
    config: &StoreConfig,
    redis: &RedisConfig,
    has_webdis: bool,
) -> Result<Option<RedisTarget>, ConfigError> {
    if cfg!(target_arch = "wasm32") {
        if has_webdis {
            return Ok(None);
        }
        return Err(ConfigError::new(
            "redis",
            "the Wasm modules reach the store through Webdis: give `cluster` (`redis` is the native module's)",
        ));
    }
    for (field, given) in [
        ("authority", config.authority.is_some()),
        ("path", config.path.is_some()),
        ("authorization", config.authorization.is_some()),
    ] {
        if given && !has_webdis {
            return Err(ConfigError::new(
                field,
                "Webdis's: with `redis`, give `redis.username` and `redis.password`",
            ));
        }
    }
    let servers = match (&redis.address, &redis.sentinel, &redis.cluster) {
        (Some(address), None, None) => {
            check_host_port("redis.address", address)?;
            RedisServers::Address(address.clone())
        }
        (None, Some(sentinel), None) => sentinel_servers(sentinel)?,
        (None, None, Some(cluster)) => {
            check_addresses(
                "redis.cluster.addresses",
                &cluster.addresses,
                "cluster nodes",
            )?;
            if redis.database.is_some_and(|database| database != 0) {
                return Err(ConfigError::new(
                    "redis.database",
                    "a Redis Cluster has database 0 only",
                ));
            }
            RedisServers::Cluster {
                addresses: cluster.addresses.clone(),
            }
        }
        (None, None, None) => {
            return Err(ConfigError::new(
                "redis.address",
                "required: Redis's host:port (or `sentinel`, or `cluster`)",
            ))
        }
        (_, Some(_), _) => {
            return Err(ConfigError::new(
                "redis.sentinel",
                "give one of `address`, `sentinel` and `cluster`",
            ))
        }
        (_, _, Some(_)) => {
            return Err(ConfigError::new(
                "redis.cluster",
                "give one of `address`, `sentinel` and `cluster`",
            ))
        }
    };
    check_credentials("redis", &redis.username, &redis.password)?;
    let tls = redis
        .tls
        .as_ref()
        .map(|tls| crate::tls::TlsTarget::compile(tls).map_err(|e| e.within("redis.tls")))
        .transpose()?;
    Ok(Some(RedisTarget {
        servers,
        username: redis.username.clone(),
        password: redis.password.clone(),
        database: redis.database.unwrap_or(0),
        tls,
    }))
}

fn sentinel_servers(sentinel: &SentinelConfig) -> Result<RedisServers, ConfigError> {
    check_addresses("redis.sentinel.addresses", &sentinel.addresses, "Sentinels")?;
    if sentinel.master.is_empty()
        || sentinel.master.len() > 64
        || !sentinel.master.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ConfigError::new(
            "redis.sentinel.master",
            "1 to 64 visible ASCII characters: the name Sentinel monitors the primary by",
        ));
    }
    check_credentials("redis.sentinel", &sentinel.username, &sentinel.password)?;
    Ok(RedisServers::Sentinel {
        addresses: sentinel.addresses.clone(),
        master: sentinel.master.clone(),
        username: sentinel.username.clone(),
        password: sentinel.password.clone(),
    })
}

/// 1 to [`MAX_SENTINELS`] `host:port`s of `what`.
fn check_addresses(field: &str, addresses: &[String], what: &str) -> Result<(), ConfigError> {
    if addresses.is_empty() || addresses.len() > MAX_SENTINELS {
        return Err(ConfigError::new(
            field,
            format!("1 to {MAX_SENTINELS} {what}"),
        ));
    }
    for (i, address) in addresses.iter().enumerate() {
        check_host_port(&format!("{field}[{i}]"), address)?;
    }
    Ok(())
}

/// A user goes with a password, and neither is empty.
fn check_credentials(
    section: &str,
    username: &Option<String>,
    password: &Option<String>,
) -> Result<(), ConfigError> {
    for (field, value) in [("username", username), ("password", password)] {
        if value.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::new(
                format!("{section}.{field}"),
                "must not be empty",
            ));
        }
    }
    if username.is_some() && password.is_none() {
        return Err(ConfigError::new(
            format!("{section}.password"),
            format!("required with `{section}.username`"),
        ));
    }
    Ok(())
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag
/// (what is between the first `{` and the `}` after it, when not empty) or
/// of the whole key, modulo 16384.
pub fn hash_slot(key: &str) -> u16 {
    const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);
    let bytes = key.as_bytes();
    let tag = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let inside = &bytes[open + 1..];
        let close = inside.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &inside[..close])
    });
    CRC16.checksum(tag.unwrap_or(bytes)) % 16384
}

/// What a policy does with a request when the store gives no usable answer
/// (no answer in time, connection refused, an HTTP error, a reply that does
/// not parse).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Decide with this Envoy's own state, as without a fleet store.
    #[default]
    Local,
    /// Let the request through unchecked.
    Allow,
    /// Refuse it with the policy's "store unavailable" error (503).
    Deny,
}

impl FailureMode {
    pub fn name(self) -> &'static str {
        match self {
            FailureMode::Local => "local",
            FailureMode::Allow => "allow",
            FailureMode::Deny => "deny",
        }
    }
}

/// A policy's fleet counters: `fleet.answered`, `fleet.failure.<reason>`
/// and `fleet.failure_mode.<mode>` (the requests each mode decided).
#[derive(Debug, Clone, Copy)]
pub struct FleetMetrics {
    answered: Counter,
    failures: [Counter; wire::Failure::REASONS.len()],
    modes: [Counter; 3],
}

impl FleetMetrics {
    pub fn define_with(metrics: &mut dyn DefineMetrics, filter: &str) -> Self {
        Self {
            answered: metrics.define_counter(filter, "fleet.answered"),
            failures: wire::Failure::REASONS
                .map(|reason| metrics.define_counter(filter, &format!("fleet.failure.{reason}"))),
            modes: [FailureMode::Local, FailureMode::Allow, FailureMode::Deny].map(|mode| {
                metrics.define_counter(filter, &format!("fleet.failure_mode.{}", mode.name()))
            }),
        }
    }

    /// Counts how the store answered a request's checks (`failure`: why it
    /// did not decide them, and `mode` decided) and logs a failure, at most
    /// once per interval.
    pub fn count(
        &self,
        telemetry: &mut dyn Telemetry,
        filter: &'static str,
        failure: Option<&wire::Failure>,
        mode: FailureMode,
        now_ms: u64,
    ) {
        match failure {
            None => self.count_answered(telemetry),
            Some(failure) => {
                self.count_failure(telemetry, filter, failure, mode, now_ms);
                self.count_decided_by(telemetry, mode);
            }
        }
    }

    /// Counts a call the store answered.
    pub fn count_answered(&self, telemetry: &mut dyn Telemetry) {
        telemetry.increment(self.answered, 1);
    }

    /// Counts and logs (at most once per interval) a call without an
    /// answer, such as a background sync that decides no request itself.
    pub fn count_failure(
        &self,
        telemetry: &mut dyn Telemetry,
        filter: &'static str,
        failure: &wire::Failure,
        mode: FailureMode,
        now_ms: u64,
    ) {
        let counter = wire::Failure::REASONS
            .iter()
            .position(|r| *r == failure.reason())
            .map(|i| self.failures[i])
            .unwrap_or_default();
        telemetry.increment(counter, 1);
        if let Some(line) = failure_report(filter, failure, mode, now_ms) {
            telemetry.log(Level::Warn, format_args!("{line}"));
        }
    }

    /// Counts a request decided by the failure mode.
    pub fn count_decided_by(&self, telemetry: &mut dyn Telemetry, mode: FailureMode) {
        telemetry.increment(self.modes[mode as usize], 1);
    }
}

const FAILURE_LOG_INTERVAL_MS: u64 = 10_000;

thread_local! {
    /// Per filter: when its last failure line was written, and the failures
    /// since (a worker's log throttle, not a request's state).
    static FAILURE_LOG: RefCell<HashMap<&'static str, (u64, u64)>> = RefCell::new(HashMap::new());
}

/// The line to log for a store failure: the first at once, then at most one
/// per 10 s and worker, with the number of failures since.
pub fn failure_report(
    filter: &'static str,
    failure: &wire::Failure,
    mode: FailureMode,
    now_ms: u64,
) -> Option<String> {
    FAILURE_LOG.with(|log| {
        let mut log = log.borrow_mut();
        let (last, since) = log.entry(filter).or_insert((0, 0));
        *since += 1;
        if *last != 0 && now_ms.saturating_sub(*last) < FAILURE_LOG_INTERVAL_MS {
            return None;
        }
        let count = std::mem::take(since);
        *last = now_ms.max(1);
        Some(format!(
            "{filter}: fleet store failing ({failure}); {count} failed call(s) since the last report, failure mode `{}`",
            mode.name()
        ))
    })
}

/// 128 bits of SHA-256 over length-prefixed `parts`, in hex: how client
/// input (an app key and nonce, a quota key's value) appears in a key.
pub fn digest(parts: &[&[u8]]) -> String {
    hex(&sha256(parts)[..16])
}

/// 64 bits of SHA-256 over length-prefixed `parts`: bits no caller can
/// predict from a clock reading in nanoseconds and a counter, where a
/// filter has no random source of its own.
pub fn mix(parts: &[&[u8]]) -> u64 {
    let hash = sha256(parts);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first)
}

/// SHA-256 over `parts`, each prefixed with its length, so no two lists of
/// parts hash the same input.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex: how binary values (a breaker's record) travel to the store.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(HEX_DIGITS[usize::from(byte & 15)]));
    }
    text
}

/// The bytes of [`hex`]'s text; `None` for anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let text = text.as_bytes();
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hex_reads_back_what_it_wrote_and_nothing_else() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
        for bad in ["0", "0g", "0A", "zz", "0 "] {
            assert_eq!(unhex(bad), None, "{bad}");
        }
        assert_eq!(unhex(""), Some(vec![]));
    }

    fn store(json: &str) -> Result<Store, ConfigError> {
        Store::compile(&serde_json::from_str::<StoreConfig>(json).unwrap())
    }

    #[test]
    fn defaults_are_a_short_timeout_and_the_gw_prefix() {
        let store = store(r#"{"cluster": "fleet_store"}"#).unwrap();
        let Target::Webdis(upstream) = &store.target else {
            panic!("webdis")
        };
        assert_eq!(upstream.authority, "fleet_store");
        assert_eq!(upstream.path, "/");
        assert_eq!(store.key_prefix, "gw:");
        assert_eq!(store.timeout, Duration::from_millis(50));
        assert_eq!(upstream.timeout, store.timeout);
        assert_eq!(store.key("n", "ab", &[]), "gw:n:ab");
        assert_eq!(store.key("q", "r", &["d", "7"]), "gw:q:r:d:7");
    }

    #[test]
    fn a_redis_store_is_the_native_modules() {
        let direct = store(
            r#"{"redis": {"address": "redis:6379", "username": "gw", "password": "s", "database": 2},
                "timeout_ms": 20}"#,
        )
        .unwrap();
        assert_eq!(
            direct.target,
            Target::Redis(RedisTarget {
                servers: RedisServers::Address("redis:6379".into()),
                username: Some("gw".into()),
                password: Some("s".into()),
                database: 2,
                tls: None,
            })
        );
        assert_eq!(direct.timeout, Duration::from_millis(20));
        let sentinel = store(
            r#"{"redis": {"sentinel": {"addresses": ["s1:26379", "s2:26379"], "master": "gw",
                "password": "sp"}, "username": "gw", "password": "s"}}"#,
        )
        .unwrap();
        let Target::Redis(target) = sentinel.target else {
            panic!("redis")
        };
        assert_eq!(
            target.servers,
            RedisServers::Sentinel {
                addresses: vec!["s1:26379".into(), "s2:26379".into()],
                master: "gw".into(),
                username: None,
                password: Some("sp".into()),
            }
        );
        assert_eq!(target.username.as_deref(), Some("gw"));
    }

    #[test]
    fn beside_webdis_redis_is_what_the_native_module_calls() {
        // One configuration for every form: the Wasm modules call Webdis
        // (they refuse `redis` alone), the native module Redis itself, and
        // Webdis's own fields are allowed for the Wasm modules' calls.
        let both = store(
            r#"{"cluster": "fleet_store", "authorization": "Basic dTpw",
                "redis": {"address": "redis:6379"}}"#,
        )
        .unwrap();
        assert_eq!(
            both.target,
            Target::Redis(RedisTarget {
                servers: RedisServers::Address("redis:6379".into()),
                username: None,
                password: None,
                database: 0,
                tls: None,
            })
        );
    }

    #[test]
    fn a_cluster_store_tags_its_keys_with_their_slot_group() {
        let cluster =
            store(r#"{"redis": {"cluster": {"addresses": ["a:7000", "b:7001"]}}}"#).unwrap();
        let Target::Redis(target) = &cluster.target else {
            panic!("redis")
        };
        assert_eq!(
            target.servers,
            RedisServers::Cluster {
                addresses: vec!["a:7000".into(), "b:7001".into()]
            }
        );
        assert!(cluster.is_cluster());
        assert_eq!(cluster.key("n", "ab", &[]), "gw:n:{ab}");
        let first = cluster.key("q", "p", &["r1", "d", "7"]);
        let second = cluster.key("q", "p", &["r2", "e", "7"]);
        assert_eq!(first, "gw:q:{p}:r1:d:7");
        assert_eq!(hash_slot(&first), hash_slot(&second));
    }

    #[test]
    fn hash_slots_are_redis_clusters() {
        // The examples of Redis's cluster specification.
        assert_eq!(hash_slot("123456789"), 0x31c3);
        assert_eq!(hash_slot("foo"), 12182);
        assert_eq!(hash_slot("bar"), 5061);
        assert_eq!(
            hash_slot("{user1000}.following"),
            hash_slot("{user1000}.followers")
        );
        assert_eq!(hash_slot("{user1000}.following"), hash_slot("user1000"));
        // An empty tag: the whole key.
        assert_eq!(hash_slot("foo{}{bar}"), 8363);
        assert_eq!(hash_slot("foo{{bar}}zap"), hash_slot("{bar"));
        assert_eq!(hash_slot("{bar"), 4015);
        assert_eq!(hash_slot("foo{bar}{zap}"), hash_slot("bar"));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (r#"{"cluster": ""}"#, "cluster"),
            (r#"{"cluster": "a b"}"#, "cluster"),
            (r#"{"cluster": "c", "authority": "a b"}"#, "authority"),
            (r#"{"cluster": "c", "path": "x"}"#, "path"),
            (r#"{"cluster": "c", "key_prefix": "a/b"}"#, "key_prefix"),
            (r#"{"cluster": "c", "key_prefix": "a b"}"#, "key_prefix"),
            (r#"{"cluster": "c", "key_prefix": ""}"#, "key_prefix"),
            (r#"{"cluster": "c", "key_prefix": "{gw}:"}"#, "key_prefix"),
            (
                r#"{"cluster": "c", "authorization": "Basic é"}"#,
                "authorization",
            ),
            (r#"{"cluster": "c", "timeout_ms": 0}"#, "timeout_ms"),
            (r#"{"cluster": "c", "timeout_ms": 10001}"#, "timeout_ms"),
            (
                r#"{"cluster": "c", "authorization": "a\r\nb"}"#,
                "authorization",
            ),
            (r#"{}"#, "cluster"),
            (
                r#"{"cluster": "c", "redis": {"address": "r"}}"#,
                "redis.address",
            ),
            (
                r#"{"cluster": "c b", "redis": {"address": "r:1"}}"#,
                "cluster",
            ),
            (
                r#"{"cluster": "c", "redis": {"cluster": {"addresses": ["a:7000"]}}}"#,
                "redis.cluster",
            ),
            (r#"{"redis": {"address": "r"}}"#, "redis.address"),
            (r#"{"redis": {"address": ":6379"}}"#, "redis.address"),
            (r#"{"redis": {"address": "r:0"}}"#, "redis.address"),
            (r#"{"redis": {"address": "r :1"}}"#, "redis.address"),
            (
                r#"{"redis": {"address": "r:1", "username": "u"}}"#,
                "redis.password",
            ),
            (
                r#"{"redis": {"address": "r:1", "password": ""}}"#,
                "redis.password",
            ),
            (r#"{"redis": {"address": "r:1"}, "path": "/"}"#, "path"),
            (r#"{"redis": {}}"#, "redis.address"),
            (
                r#"{"redis": {"address": "r:1", "sentinel": {"addresses": ["s:1"], "master": "m"}}}"#,
                "redis.sentinel",
            ),
            (
                r#"{"redis": {"sentinel": {"addresses": [], "master": "m"}}}"#,
                "redis.sentinel.addresses",
            ),
            (
                r#"{"redis": {"sentinel": {"addresses": ["s:1", "s"], "master": "m"}}}"#,
                "redis.sentinel.addresses[1]",
            ),
            (
                r#"{"redis": {"sentinel": {"addresses": ["s:1"], "master": ""}}}"#,
                "redis.sentinel.master",
            ),
            (
                r#"{"redis": {"sentinel": {"addresses": ["s:1"], "master": "a b"}}}"#,
                "redis.sentinel.master",
            ),
            (
                r#"{"redis": {"sentinel": {"addresses": ["s:1"], "master": "m", "username": "u"}}}"#,
                "redis.sentinel.password",
            ),
            (
                r#"{"redis": {"address": "r:1"}, "timeout_ms": 0}"#,
                "timeout_ms",
            ),
            (
                r#"{"redis": {"address": "r:1", "cluster": {"addresses": ["c:1"]}}}"#,
                "redis.cluster",
            ),
            (
                r#"{"redis": {"cluster": {"addresses": []}}}"#,
                "redis.cluster.addresses",
            ),
            (
                r#"{"redis": {"cluster": {"addresses": ["c:1", "c"]}}}"#,
                "redis.cluster.addresses[1]",
            ),
            (
                r#"{"redis": {"cluster": {"addresses": ["c:1"]}, "database": 1}}"#,
                "redis.database",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(store(json).unwrap_err().path, field, "{json}");
        }
        let unknown = serde_json::from_str::<StoreConfig>(r#"{"cluster": "c", "host": "x"}"#);
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `host`"));
    }

    #[test]
    fn digests_are_length_prefixed_and_hex() {
        let ab_c = digest(&[b"ab", b"c"]);
        assert_eq!(ab_c.len(), 32);
        assert!(ab_c.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(ab_c, digest(&[b"a", b"bc"]));
        assert_eq!(ab_c, digest(&[b"ab", b"c"]));
    }
}
