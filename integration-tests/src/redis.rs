//! A real fleet store per test: Debian's `redis-server` and `webdis` (which
//! `scripts/setup.sh` installs) on loopback with free ports and a temporary
//! directory, stopped when dropped. Webdis allows only the two commands the
//! filters send (`EVALSHA`, `EVAL`), as the README's ACL does. Redis can be
//! stopped and started again on its port to play an outage; the test talks
//! to Redis directly (RESP over TCP) to read what the filters stored.

use crate::process::{self, free_port};
use serde_json::json;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The Redis user of the native module's own connection.
const DIRECT_USER: &str = "gateway";
const DIRECT_PASSWORD: &str = "gateway-secret";
/// Webdis's threads and its Redis connections per thread.
const WEBDIS_THREADS: usize = 2;
const WEBDIS_POOL_SIZE: usize = 8;

use crate::process::installed as binary;

pub struct FleetStore {
    dir: tempfile::TempDir,
    redis_port: u16,
    webdis_port: u16,
    /// With TLS: the port Redis takes TLS connections on (beside its plain
    /// port, which the test uses) and the certificates' directory.
    tls: Option<(u16, tempfile::TempDir)>,
    redis: Option<Child>,
    webdis: Option<Child>,
}

impl FleetStore {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut store = Self {
            dir,
            redis_port: free_port(),
            webdis_port: free_port(),
            tls: None,
            redis: None,
            webdis: None,
        };
        store.start_redis();
        store.start_webdis();
        store
    }

    /// A store whose Redis also takes TLS connections, from clients with a
    /// certificate its CA signed (`tls-auth-clients yes`, Redis's default):
    /// `scripts/make-certs.sh`'s CA and certificate (for `localhost` and
    /// 127.0.0.1, server and client).
    pub fn start_tls() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-redis-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let (certs, _) = crate::envoy::make_certs();
        let mut store = Self {
            dir,
            redis_port: free_port(),
            webdis_port: free_port(),
            tls: Some((free_port(), certs)),
            redis: None,
            webdis: None,
        };
        store.start_redis();
        store
    }

    /// A `fleet.store.redis` over TLS (see [`FleetStore::start_tls`]),
    /// trusting `ca_file` (this store's CA unless given).
    pub fn redis_tls_config(&self, ca_file: Option<&Path>) -> serde_json::Value {
        let (port, certs) = self.tls.as_ref().expect("a store started with TLS");
        let file = |name: &str| certs.path().join(name).to_string_lossy().into_owned();
        let ca_file = ca_file.map_or_else(
            || file("ca.pem"),
            |path| path.to_string_lossy().into_owned(),
        );
        json!({
            "address": format!("127.0.0.1:{port}"),
            "username": DIRECT_USER,
            "password": DIRECT_PASSWORD,
            "tls": {"ca_file": ca_file, "cert_file": file("cert.pem"), "key_file": file("key.pem")}
        })
    }

    /// The port Webdis listens on: the Envoy store cluster's endpoint.
    pub fn webdis_port(&self) -> u16 {
        self.webdis_port
    }

    /// The port Redis listens on (no password for the default user).
    pub fn redis_port(&self) -> u16 {
        self.redis_port
    }

    /// A `fleet.store.redis` for the native module's own connection: Redis's
    /// address and the user allowed the filters' two commands.
    pub fn redis_config(&self) -> serde_json::Value {
        json!({
            "address": format!("127.0.0.1:{}", self.redis_port),
            "username": DIRECT_USER,
            "password": DIRECT_PASSWORD,
        })
    }

    /// Freezes Redis (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause_redis(&self) {
        self.signal_redis("-STOP");
    }

    /// Lets a frozen Redis go on (SIGCONT).
    pub fn resume_redis(&self) {
        self.signal_redis("-CONT");
    }

    fn signal_redis(&self, signal: &str) {
        let pid = self.redis.as_ref().expect("Redis runs").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// How many times Redis ran `command` (lower case: `evalsha`), from
    /// `INFO commandstats`.
    pub fn command_calls(&self, command: &str) -> u64 {
        command_calls_at(self.redis_port, command)
    }

    /// How many times Redis ran the filters' script (`EVALSHA` and `EVAL`).
    pub fn script_calls(&self) -> u64 {
        self.command_calls("evalsha") + self.command_calls("eval")
    }

    /// Starts Redis (again) on its port, empty.
    pub fn start_redis(&mut self) {
        assert!(self.redis.is_none(), "Redis is already running");
        let tls: Vec<String> = match &self.tls {
            Some((port, certs)) => {
                let file = |name: &str| certs.path().join(name).to_string_lossy().into_owned();
                vec![
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    file("cert.pem"),
                    "--tls-key-file".into(),
                    file("key.pem"),
                    "--tls-ca-cert-file".into(),
                    file("ca.pem"),
                    "--tls-auth-clients".into(),
                    "yes".into(),
                ]
            }
            None => Vec::new(),
        };
        let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
        self.redis = Some(start_redis_server(self.redis_port, self.dir.path(), &tls));
        if self.webdis.is_some() {
            self.wait_for_webdis();
        }
    }

    /// Waits until Webdis passes commands on to Redis (after a restart of
    /// Redis, Webdis answers 503 until it has reconnected): each of its
    /// pooled connections reconnects on its own, so until many commands in a
    /// row go through.
    fn wait_for_webdis(&mut self) {
        const IN_A_ROW: usize = 4 * WEBDIS_THREADS * WEBDIS_POOL_SIZE;
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("http://127.0.0.1:{}/", self.webdis_port);
        let mut in_a_row = 0;
        while in_a_row < IN_A_ROW {
            let answer = crate::http::post(&url, &[], b"EVAL/return%201/0");
            if answer.as_ref().is_ok_and(|r| r.status == 200) {
                in_a_row += 1;
            } else {
                in_a_row = 0;
                if Instant::now() >= deadline {
                    panic!("Webdis did not reach Redis: {}", self.webdis_state(&answer));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// What a test that waited for Webdis in vain reports: its last answer,
    /// whether it still runs, the end of its log.
    fn webdis_state(&mut self, answer: &Result<crate::http::Response, String>) -> String {
        let answer = match answer {
            Ok(response) => format!("HTTP {} {}", response.status, response.text()),
            Err(err) => err.clone(),
        };
        let running = match self.webdis.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => "running".to_string(),
            Some(Ok(Some(status))) => format!("exited ({status})"),
            Some(Err(err)) => format!("unknown ({err})"),
            None => "not started".to_string(),
        };
        let log = fs::read_to_string(self.dir.path().join("webdis.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "last answer: {answer}; webdis {running}; its log ends:\n{}",
            tail.join("\n")
        )
    }

    /// Stops Redis; Webdis then answers 503 until it is back.
    pub fn stop_redis(&mut self) {
        if let Some(mut child) = self.redis.take() {
            process::stop(&mut child, Duration::from_secs(3));
        }
    }

    fn start_webdis(&mut self) {
        let config = json!({
            "redis_host": "127.0.0.1",
            "redis_port": self.redis_port,
            "redis_auth": null,
            "http_host": "127.0.0.1",
            "http_port": self.webdis_port,
            "threads": WEBDIS_THREADS,
            "pool_size": WEBDIS_POOL_SIZE,
            "daemonize": false,
            "database": 0,
            "acl": [
                {"disabled": ["*"]},
                {"enabled": ["EVALSHA", "EVAL"]}
            ],
            "verbosity": 1,
            "logfile": self.dir.path().join("webdis.log")
        });
        let path = self.dir.path().join("webdis.json");
        fs::write(&path, config.to_string()).unwrap_or_else(|e| panic!("webdis.json: {e}"));
        let child = Command::new(binary("WEBDIS_BIN", "/usr/bin/webdis", "webdis"))
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start webdis: {e}"));
        self.webdis = Some(child);
        self.wait_for_webdis();
    }

    /// A Redis command's reply, straight from Redis.
    pub fn command(&self, args: &[&str]) -> Reply {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    fn try_command(&self, args: &[&str]) -> Result<Reply, String> {
        command_at(self.redis_port, args)
    }

    /// The keys stored under `pattern` (e.g. `gw:q:*`).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        names(self.command(&["KEYS", pattern]), "KEYS")
    }

    pub fn db_size(&self) -> i64 {
        match self.command(&["DBSIZE"]) {
            Reply::Integer(n) => n,
            other => panic!("DBSIZE: {other:?}"),
        }
    }
}

impl Drop for FleetStore {
    fn drop(&mut self) {
        if let Some(mut child) = self.webdis.take() {
            process::stop(&mut child, Duration::from_secs(3));
        }
        self.stop_redis();
    }
}

/// Starts Redis on `port` (in `dir`, nothing saved) with `extra`
/// arguments, and waits until it answers. The native module's own
/// connection signs in as [`DIRECT_USER`], which may run the filters' two
/// commands (and the script's) on their keys.
fn start_redis_server(port: u16, dir: &Path, extra: &[&str]) -> Child {
    let mut child = Command::new(redis_server())
        .args(["--bind", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .args(["--user", DIRECT_USER, "on"])
        .arg(format!(">{DIRECT_PASSWORD}"))
        .args(["~gw:*", "+evalsha", "+eval"])
        // What the script runs (Redis checks a script's own calls too).
        .args([
            "+get",
            "+set",
            "+incr",
            "+incrby",
            "+pexpire",
            "+hmget",
            "+hset",
            // With Sentinel, the server connected to is checked to be a primary.
            "+role",
            // In a Redis Cluster, the slots are read and redirects followed.
            "+cluster|slots",
            "+asking",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start redis-server: {e}"));
    let deadline = Instant::now() + START_TIMEOUT;
    while command_at(port, &["PING"]).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("redis-server on {port} exited: {status}");
        }
        assert!(Instant::now() < deadline, "Redis did not start");
        thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Debian's `redis-server` (also Sentinel, with `--sentinel`).
fn redis_server() -> std::path::PathBuf {
    binary("REDIS_SERVER_BIN", "/usr/bin/redis-server", "redis-server")
}

/// A Redis command's reply from the server (or Sentinel) on `port`.
pub fn command_at(port: u16, args: &[&str]) -> Result<Reply, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    (&stream).write_all(&request).map_err(|e| e.to_string())?;
    read_reply(&mut BufReader::new(&stream))
}

/// A replicated fleet store: a Redis primary, a replica and three
/// Sentinels (quorum 2) watching them as [`SENTINEL_MASTER`], on loopback,
/// stopped when dropped. A Sentinel declares the primary down after
/// [`DOWN_AFTER_MS`] without an answer, and the three fail over to the
/// replica.
pub struct ReplicatedStore {
    dir: tempfile::TempDir,
    primary_port: u16,
    replica_port: u16,
    sentinel_ports: Vec<u16>,
    primary: Option<Child>,
    replica: Option<Child>,
    sentinels: Vec<Child>,
}

/// The name the Sentinels monitor the primary by.
pub const SENTINEL_MASTER: &str = "gw";
/// How long the Sentinels wait for a silent primary before failing over.
pub const DOWN_AFTER_MS: u64 = 1000;

impl ReplicatedStore {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-sentinel-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let (primary_port, replica_port) = (free_port(), free_port());
        let sub = |name: &str| {
            let path = dir.path().join(name);
            fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            path
        };
        let primary = start_redis_server(primary_port, &sub("primary"), &[]);
        let replica = start_redis_server(
            replica_port,
            &sub("replica"),
            &["--replicaof", "127.0.0.1", &primary_port.to_string()],
        );
        let mut store = Self {
            primary_port,
            replica_port,
            sentinel_ports: Vec::new(),
            primary: Some(primary),
            replica: Some(replica),
            sentinels: Vec::new(),
            dir,
        };
        store.wait_until("the replica is in sync", |store| {
            info_field(store.replica_port, "replication", "master_link_status")
                .is_some_and(|status| status == "up")
        });
        for i in 0..3 {
            let port = free_port();
            let path = store.dir.path().join(format!("sentinel-{i}.conf"));
            let config = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 5000\n\
                 sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                dir = store.dir.path().display()
            );
            fs::write(&path, config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let child = Command::new(redis_server())
                .arg(&path)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start redis-server --sentinel: {e}"));
            store.sentinels.push(child);
            store.sentinel_ports.push(port);
        }
        // Every Sentinel knows the replica and the two other Sentinels, so
        // a failover can be agreed on.
        store.wait_until("the Sentinels know each other and the replica", |store| {
            store.sentinel_ports.iter().all(|port| {
                let count =
                    |what: &str| match command_at(*port, &["SENTINEL", what, SENTINEL_MASTER]) {
                        Ok(Reply::Array(items)) => items.len(),
                        _ => 0,
                    };
                count("replicas") == 1 && count("sentinels") == 2
            })
        });
        store
    }

    fn wait_until(&self, what: &str, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not in {START_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `fleet.store.redis` naming the Sentinels, with the user allowed
    /// the filters' commands.
    pub fn redis_config(&self) -> serde_json::Value {
        let addresses: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        json!({
            "sentinel": {"addresses": addresses, "master": SENTINEL_MASTER},
            "username": DIRECT_USER,
            "password": DIRECT_PASSWORD,
        })
    }

    pub fn primary_port(&self) -> u16 {
        self.primary_port
    }

    pub fn replica_port(&self) -> u16 {
        self.replica_port
    }

    /// The port of the primary the first Sentinel names now.
    pub fn named_primary(&self) -> Option<u16> {
        match command_at(
            self.sentinel_ports[0],
            &["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER],
        ) {
            Ok(Reply::Array(parts)) => match parts.as_slice() {
                [_, Reply::Bulk(Some(port))] => port.parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }

    /// Kills the primary (SIGKILL: no goodbye to anyone).
    pub fn kill_primary(&mut self) {
        if let Some(mut child) = self.primary.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A command's reply from the Redis on `port`.
    pub fn command(&self, port: u16, args: &[&str]) -> Reply {
        command_at(port, args).unwrap_or_else(|e| panic!("redis {port} {args:?}: {e}"))
    }
}

impl Drop for ReplicatedStore {
    fn drop(&mut self) {
        for mut child in self.sentinels.drain(..) {
            process::stop(&mut child, Duration::from_secs(3));
        }
        for child in [self.primary.take(), self.replica.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            process::stop(&mut child, Duration::from_secs(3));
        }
    }
}

/// How many times the Redis on `port` ran `command` (lower case), from
/// `INFO commandstats` (a command a cluster node redirected did not run).
fn command_calls_at(port: u16, command: &str) -> u64 {
    info_field(port, "commandstats", &format!("cmdstat_{command}"))
        .as_deref()
        .and_then(|stats| stats.strip_prefix("calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

/// A Redis Cluster of three primaries (no replicas) on loopback, each
/// serving a third of the hash slots, stopped when dropped.
pub struct ClusterStore {
    _dir: tempfile::TempDir,
    ports: Vec<u16>,
    nodes: Vec<Child>,
}

impl ClusterStore {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        // The bus ports are free ones too (by default a node's is its port
        // + 10000, which may be taken or past 65535).
        let buses: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = ports
            .iter()
            .zip(&buses)
            .map(|(port, bus)| {
                let path = dir.path().join(port.to_string());
                fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let bus = bus.to_string();
                start_redis_server(
                    *port,
                    &path,
                    &[
                        "--cluster-port",
                        &bus,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            })
            .collect();
        let store = Self {
            _dir: dir,
            ports,
            nodes,
        };
        let ranges = [("0", "5460"), ("5461", "10922"), ("10923", "16383")];
        for (port, (first, last)) in store.ports.iter().zip(ranges) {
            store.ok(*port, &["CLUSTER", "ADDSLOTSRANGE", first, last]);
        }
        for (port, bus) in store.ports.iter().zip(&buses).skip(1) {
            let (port, bus) = (port.to_string(), bus.to_string());
            store.ok(
                store.ports[0],
                &["CLUSTER", "MEET", "127.0.0.1", &port, &bus],
            );
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while !store.ports.iter().all(|port| {
            let info = match command_at(*port, &["CLUSTER", "INFO"]) {
                Ok(Reply::Bulk(Some(info))) => info,
                _ => String::new(),
            };
            info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
        }) {
            assert!(Instant::now() < deadline, "the cluster did not form");
            thread::sleep(Duration::from_millis(50));
        }
        store
    }

    fn ok(&self, port: u16, args: &[&str]) {
        let reply = self.command(port, args);
        assert_eq!(reply, Reply::Status("OK".into()), "{port} {args:?}");
    }

    /// A `fleet.store.redis` naming the first `named` nodes (the others
    /// are learnt from them), with the user allowed the filters' commands.
    pub fn redis_config(&self, named: usize) -> serde_json::Value {
        let addresses: Vec<String> = self.ports[..named]
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        json!({
            "cluster": {"addresses": addresses},
            "username": DIRECT_USER,
            "password": DIRECT_PASSWORD,
        })
    }

    /// The nodes' ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// A command's reply from the node on `port`.
    pub fn command(&self, port: u16, args: &[&str]) -> Reply {
        command_at(port, args).unwrap_or_else(|e| panic!("redis {port} {args:?}: {e}"))
    }

    /// The keys matching `pattern` on the node on `port`.
    pub fn keys(&self, port: u16, pattern: &str) -> Vec<String> {
        names(self.command(port, &["KEYS", pattern]), "KEYS")
    }

    /// How many times the node on `port` ran the filters' script.
    pub fn script_calls(&self, port: u16) -> u64 {
        command_calls_at(port, "evalsha") + command_calls_at(port, "eval")
    }

    /// The port of the node serving `slot`.
    pub fn owner_of(&self, slot: u16) -> u16 {
        let slot = i64::from(slot);
        let Reply::Array(entries) = self.command(self.ports[0], &["CLUSTER", "SLOTS"]) else {
            panic!("CLUSTER SLOTS")
        };
        for entry in entries {
            if let Reply::Array(parts) = entry {
                if let [Reply::Integer(first), Reply::Integer(last), Reply::Array(primary), ..] =
                    parts.as_slice()
                {
                    if (*first..=*last).contains(&slot) {
                        if let [_, Reply::Integer(port), ..] = primary.as_slice() {
                            return *port as u16;
                        }
                    }
                }
            }
        }
        panic!("no node serves slot {slot}")
    }

    fn id_of(&self, port: u16) -> String {
        match self.command(port, &["CLUSTER", "MYID"]) {
            Reply::Bulk(Some(id)) => id,
            other => panic!("CLUSTER MYID: {other:?}"),
        }
    }

    /// Moves `slot` and its keys to the node on `to`, as a resharding does
    /// (`IMPORTING`/`MIGRATING`, `MIGRATE` of its keys, then `NODE` on every
    /// node): clients that still send it to the old node are `MOVED`.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let from = self.owner_of(slot);
        assert_ne!(from, to, "slot {slot} is on {to} already");
        let (from_id, to_id) = (self.id_of(from), self.id_of(to));
        let slot = slot.to_string();
        self.ok(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        self.ok(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        loop {
            let question = ["CLUSTER", "GETKEYSINSLOT", &slot, "100"];
            let keys = names(self.command(from, &question), "GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            self.ok(from, &migrate);
        }
        for port in [to, from].into_iter().chain(
            self.ports
                .iter()
                .copied()
                .filter(|p| *p != to && *p != from),
        ) {
            self.ok(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
    }
}

impl Drop for ClusterStore {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            process::stop(child, Duration::from_secs(3));
        }
    }
}

/// The strings of a reply listing keys (`KEYS`, `CLUSTER GETKEYSINSLOT`).
fn names(reply: Reply, command: &str) -> Vec<String> {
    match reply {
        Reply::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Reply::Bulk(Some(key)) => Some(key),
                _ => None,
            })
            .collect(),
        other => panic!("{command}: {other:?}"),
    }
}

/// A field of `INFO <section>` of the Redis on `port`.
fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    let Ok(Reply::Bulk(Some(info))) = command_at(port, &["INFO", section]) else {
        return None;
    };
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().to_string())
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || rest.parse::<i64>().map_err(|e| format!("{line:?}: {e}"));
    match kind {
        "+" => Ok(Reply::Status(rest.into())),
        "-" => Ok(Reply::Error(rest.into())),
        ":" => Ok(Reply::Integer(number()?)),
        "$" => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Reply::Bulk(None));
            };
            let mut data = vec![0; len + 2];
            reader.read_exact(&mut data).map_err(|e| e.to_string())?;
            data.truncate(len);
            Ok(Reply::Bulk(Some(String::from_utf8_lossy(&data).into())))
        }
        "*" => {
            let count = number()?;
            (0..count.max(0))
                .map(|_| read_reply(reader))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        _ => Err(format!("unexpected reply line {line:?}")),
    }
}
