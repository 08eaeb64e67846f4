//! Redis Cluster: a connection per primary (the connections of
//! [`crate::redis`], one per node address), a table of which primary serves
//! each of the 16384 hash slots, and the redirects that keep it right.
//!
//! The table is read with `CLUSTER SLOTS` from a known node (those named in
//! the configuration first) when the cluster is first used, every
//! [`REFRESH_EVERY`], and soon after a node could not be reached or a
//! command was redirected. A command whose slot is not known yet goes to a
//! node named in the configuration, which redirects it. A `MOVED` reply
//! records the slot's new primary and sends the command there; an `ASK`
//! (a slot being migrated) sends it, after `ASKING`, to the node named,
//! without changing the table. A command follows at most
//! [`MOST_REDIRECTS`] redirects, within its own timeout.

use crate::mailbox::{log, Answer};
use crate::redis::{self, Job, Jobs};
use gateway_common::fleet::resp::Reply;
use gateway_common::fleet::{RedisServers, RedisTarget};
use gateway_common::sync::lock;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread;
use std::time::{Duration, Instant};

/// Redis Cluster's hash slots.
const SLOTS: usize = 16384;
/// A slot whose primary is not known.
const UNKNOWN: u16 = u16::MAX;
/// How often the slot table is read without a reason.
const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// The shortest time between two readings of the table.
const REFRESH_PAUSE: Duration = Duration::from_millis(100);
/// The most redirects one command follows.
const MOST_REDIRECTS: u8 = 3;

/// Sends `job` to the primary of `slot` in the cluster `target`.
pub(crate) fn send(target: &RedisTarget, slot: u16, job: Job) {
    let cluster = cluster_of(target);
    let (node, jobs) = cluster.node_of(slot);
    let route = Route {
        cluster: Arc::clone(&cluster),
        redirects: MOST_REDIRECTS,
        node,
    };
    cluster.send_to(route, &jobs, job);
}

/// How a command in a cluster follows redirects.
pub(crate) struct Route {
    cluster: Arc<Cluster>,
    redirects: u8,
    /// The node the command was sent to.
    node: u16,
}

impl Route {
    /// Sends the command on when `answer` redirects it; otherwise hands
    /// the answer over (and, when the node could not be reached, has the
    /// table read again: its slots may have a new primary).
    pub fn answered(mut self, mut job: Job, answer: Answer) {
        match &answer {
            Answer::Reply(reply) if self.redirects > 0 => {
                if let Some(redirect) = Redirect::read(reply) {
                    self.redirects -= 1;
                    let cluster = Arc::clone(&self.cluster);
                    let (node, jobs) = match redirect {
                        Redirect::Moved { slot, address } => {
                            job.asking = false;
                            cluster.moved(slot, &cluster.full_address(&address, self.node))
                        }
                        Redirect::Ask { address } => {
                            job.asking = true;
                            cluster.node_at(&cluster.full_address(&address, self.node))
                        }
                    };
                    self.node = node;
                    cluster.send_to(self, &jobs, job);
                    return;
                }
            }
            Answer::Unsent => self.cluster.refresh_soon(),
            _ => {}
        }
        job.deliver(answer);
    }
}

/// Where a reply sends a command instead.
#[derive(Debug, PartialEq, Eq)]
enum Redirect {
    /// `-MOVED <slot> <host:port>`: the slot is served there now.
    Moved { slot: u16, address: String },
    /// `-ASK <slot> <host:port>`: this command's keys are there already.
    Ask { address: String },
}

impl Redirect {
    fn read(reply: &[u8]) -> Option<Self> {
        let line = reply.strip_prefix(b"-")?.strip_suffix(b"\r\n")?;
        let line = std::str::from_utf8(line).ok()?;
        let mut words = line.split(' ');
        let (kind, slot, address) = (words.next()?, words.next()?, words.next()?);
        let slot: u16 = slot
            .parse()
            .ok()
            .filter(|&slot| usize::from(slot) < SLOTS)?;
        let address = address.to_string();
        match kind {
            "MOVED" => Some(Redirect::Moved { slot, address }),
            "ASK" => Some(Redirect::Ask { address }),
            _ => None,
        }
    }
}

/// A cluster's table of slots and its nodes' connections.
pub(crate) struct Cluster {
    target: RedisTarget,
    /// Per slot, the index of its primary in `nodes` (or [`UNKNOWN`]).
    owners: Box<[AtomicU16]>,
    /// Every node met, never removed (a slot's index stays valid), and
    /// its connection.
    nodes: RwLock<Vec<(String, Jobs)>>,
    refresh: Mutex<Sender<()>>,
}

/// The cluster of `target` (its table is read at once on first use).
fn cluster_of(target: &RedisTarget) -> Arc<Cluster> {
    static CLUSTERS: OnceLock<Mutex<HashMap<RedisTarget, Arc<Cluster>>>> = OnceLock::new();
    let mut clusters = lock(CLUSTERS.get_or_init(Default::default));
    if let Some(cluster) = clusters.get(target) {
        return Arc::clone(cluster);
    }
    let (refresh, asked) = mpsc::channel();
    let cluster = Arc::new(Cluster {
        target: target.clone(),
        owners: (0..SLOTS).map(|_| AtomicU16::new(UNKNOWN)).collect(),
        nodes: RwLock::new(Vec::new()),
        refresh: Mutex::new(refresh),
    });
    let reader = Arc::clone(&cluster);
    let started = thread::Builder::new()
        .name("gateway-redis-cluster".into())
        .spawn(move || reader.keep_table(&asked));
    if let Err(error) = started {
        log(&format!(
            "cannot start the thread `gateway-redis-cluster`: {error}"
        ));
    }
    cluster.refresh_soon();
    clusters.insert(target.clone(), Arc::clone(&cluster));
    cluster
}

impl Cluster {
    /// The primary of `slot` and its connection, or (not known yet) the
    /// first node named in the configuration, which redirects.
    fn node_of(&self, slot: u16) -> (u16, Jobs) {
        let owner = self.owners[usize::from(slot) % SLOTS].load(Ordering::Acquire);
        if owner != UNKNOWN {
            let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, jobs)) = nodes.get(usize::from(owner)) {
                return (owner, Arc::clone(jobs));
            }
        }
        let first = match &self.target.servers {
            RedisServers::Cluster { addresses } => addresses.first().cloned(),
            _ => None,
        };
        self.node_at(&first.unwrap_or_default())
    }

    /// The node at `address` (added when new) and its connection.
    fn node_at(&self, address: &str) -> (u16, Jobs) {
        {
            let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(index) = nodes.iter().position(|(known, _)| known == address) {
                return (index as u16, Arc::clone(&nodes[index].1));
            }
        }
        // Made before the lock is taken: starting a thread takes a while.
        let jobs = self.connect(address);
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = nodes.iter().position(|(known, _)| known == address) {
            return (index as u16, Arc::clone(&nodes[index].1));
        }
        nodes.push((address.to_string(), Arc::clone(&jobs)));
        ((nodes.len() - 1) as u16, jobs)
    }

    /// The connection to the node at `address` (the same Redis
    /// connections as outside a cluster, one per address).
    fn connect(&self, address: &str) -> Jobs {
        redis::connection(&RedisTarget {
            servers: RedisServers::Address(address.to_string()),
            ..self.target.clone()
        })
    }

    /// `address` of a redirect, whose host is the node's it came from
    /// when it names none (`:port`: Redis does not know its own host).
    fn full_address(&self, address: &str, from: u16) -> String {
        let Some(port) = address.strip_prefix(':') else {
            return address.to_string();
        };
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        let from = nodes.get(usize::from(from)).map_or("", |(known, _)| known);
        let host = from.rsplit_once(':').map_or(from, |(host, _)| host);
        format!("{host}:{port}")
    }

    /// Gives the command to the node's connection; when its thread is gone
    /// (it could not start), the node gets a new one for the next command.
    fn send_to(&self, route: Route, jobs: &Jobs, mut job: Job) {
        let node = route.node;
        job.route = Some(route);
        if let Err(job) = redis::try_send(jobs, job) {
            let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
            if let Some((address, jobs)) = nodes.get_mut(usize::from(node)) {
                *jobs = self.connect(address);
            }
            drop(nodes);
            job.answer(Answer::Unsent);
        }
    }

    /// Records that `slot` is served at `address` (a `MOVED`), and has the
    /// table read again soon; the node and its connection.
    fn moved(&self, slot: u16, address: &str) -> (u16, Jobs) {
        let (index, jobs) = self.node_at(address);
        self.owners[usize::from(slot)].store(index, Ordering::Release);
        self.refresh_soon();
        (index, jobs)
    }

    /// Has the table read again as soon as [`REFRESH_PAUSE`] allows.
    fn refresh_soon(&self) {
        let _ = lock(&self.refresh).send(());
    }

    /// The table's thread: reads it when asked (at most every
    /// [`REFRESH_PAUSE`]) and every [`REFRESH_EVERY`].
    fn keep_table(&self, asked: &Receiver<()>) {
        let mut failing = false;
        let mut primaries = 0;
        loop {
            match asked.recv_timeout(REFRESH_EVERY) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // What asked until now is answered by this reading; what asks
            // while it runs (a MOVED it may not see) gets another.
            while asked.try_recv().is_ok() {}
            let started = Instant::now();
            match self.read_table() {
                Ok(count) => {
                    if failing || count != primaries {
                        log(&format!(
                            "{}: {count} primaries serve the slots",
                            self.target.servers.describe()
                        ));
                    }
                    failing = false;
                    primaries = count;
                }
                Err(error) if !failing => {
                    log(&format!(
                        "cannot read the slots of {}: {error}; commands go where the nodes redirect them",
                        self.target.servers.describe()
                    ));
                    failing = true;
                }
                Err(_) => {}
            }
            thread::sleep(REFRESH_PAUSE.saturating_sub(started.elapsed()));
        }
    }

    /// Reads the table from the first node that answers (the known ones,
    /// then those of the configuration); the number of primaries.
    fn read_table(&self) -> io::Result<usize> {
        let mut candidates: Vec<String> = self
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(address, _)| address.clone())
            .collect();
        if let RedisServers::Cluster { addresses } = &self.target.servers {
            candidates.extend(addresses.iter().cloned());
        }
        let mut failures = Vec::new();
        for address in &candidates {
            let reply = redis::ask(
                address,
                self.target.username.as_deref(),
                self.target.password.as_deref(),
                self.target.tls.as_ref(),
                &[b"CLUSTER", b"SLOTS"],
            );
            match reply.and_then(|reply| slot_ranges(reply, address)) {
                Ok(ranges) if !ranges.is_empty() => {
                    let mut primaries: Vec<&str> = Vec::new();
                    for (first, last, primary) in &ranges {
                        let (index, _) = self.node_at(primary);
                        for slot in *first..=*last {
                            self.owners[usize::from(slot)].store(index, Ordering::Release);
                        }
                        if !primaries.contains(&primary.as_str()) {
                            primaries.push(primary);
                        }
                    }
                    return Ok(primaries.len());
                }
                Ok(_) => failures.push(format!("{address}: no slot is served")),
                Err(error) => failures.push(format!("{address}: {error}")),
            }
        }
        Err(io::Error::other(failures.join("; ")))
    }
}

/// The slot ranges of a `CLUSTER SLOTS` reply, each with its primary's
/// `host:port` (a node that does not know its own host is at the host
/// of `asked`).
fn slot_ranges(reply: Reply, asked: &str) -> io::Result<Vec<(u16, u16, String)>> {
    let bad =
        |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("CLUSTER SLOTS: {why}"));
    let entries = match reply {
        Reply::Array(Some(entries)) => entries,
        Reply::Error(message) => return Err(io::Error::other(message)),
        _ => return Err(bad("not a list")),
    };
    let asked_host = asked.rsplit_once(':').map_or(asked, |(host, _)| host);
    let asked_host = asked_host.trim_start_matches('[').trim_end_matches(']');
    let slot = |reply: &Reply| match reply {
        Reply::Integer(slot) if (0..SLOTS as i64).contains(slot) => Ok(*slot as u16),
        _ => Err(bad("a slot out of range")),
    };
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let Reply::Array(Some(parts)) = entry else {
            return Err(bad("an entry that is not a list"));
        };
        let [first, last, Reply::Array(Some(primary)), ..] = parts.as_slice() else {
            return Err(bad("an entry without a primary"));
        };
        let (first, last) = (slot(first)?, slot(last)?);
        let [Reply::Bulk(Some(host)), Reply::Integer(port), ..] = primary.as_slice() else {
            return Err(bad("a primary without host and port"));
        };
        let host = String::from_utf8_lossy(host);
        let host = if host.is_empty() || host == "?" {
            asked_host
        } else {
            &host
        };
        if first <= last {
            ranges.push((first, last, redis::host_port(host, &port.to_string())));
        }
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::tests::{answers, mailbox, scripted};
    use gateway_common::fleet::resp;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    /// A node that knows no slot table (`CLUSTER SLOTS` fails) and
    /// redirects each `GET <key>` to the node on `other`: `moved` (slot 5)
    /// with `MOVED`, `bare` (slot 6) with a `MOVED` naming no host, `asked`
    /// (slot 7) with `ASK`.
    fn redirecting(other: u16, redirected: Arc<AtomicUsize>) -> u16 {
        scripted(Arc::new(move |parts| {
            if parts.first().is_some_and(|command| command == b"GET") {
                redirected.fetch_add(1, Ordering::SeqCst);
            }
            match parts {
                [_, key] if key == b"moved" => format!("-MOVED 5 127.0.0.1:{other}\r\n"),
                [_, key] if key == b"bare" => format!("-MOVED 6 :{other}\r\n"),
                [_, key] if key == b"asked" => format!("-ASK 7 127.0.0.1:{other}\r\n"),
                _ => "-ERR unexpected\r\n".to_string(),
            }
            .into_bytes()
        }))
    }

    #[test]
    fn moved_and_ask_send_the_command_to_the_node_named() {
        // The node redirected to answers `GET asked` only right after
        // `ASKING`, as Redis does for a slot it is importing.
        let asking = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&asking);
        let target_node = scripted(Arc::new(move |parts| {
            let after_asking = seen.swap(false, Ordering::SeqCst);
            match parts {
                [command] if command == b"ASKING" => {
                    seen.store(true, Ordering::SeqCst);
                    b"+OK\r\n".to_vec()
                }
                [_, key] if key == b"moved" => b":1\r\n".to_vec(),
                [_, key] if key == b"bare" => b":2\r\n".to_vec(),
                [_, key] if key == b"asked" && after_asking => b":3\r\n".to_vec(),
                _ => b"-ERR unexpected\r\n".to_vec(),
            }
        }));
        let redirected = Arc::new(AtomicUsize::new(0));
        let first = redirecting(target_node, Arc::clone(&redirected));
        let target = RedisTarget {
            servers: RedisServers::Cluster {
                addresses: vec![format!("127.0.0.1:{first}")],
            },
            username: None,
            password: None,
            database: 0,
            tls: None,
        };
        let (mailbox, _) = mailbox();
        for (slot, key) in [(5, "moved"), (6, "bare"), (7, "asked")] {
            let get = resp::command([&b"GET"[..], key.as_bytes()]);
            let token = u32::from(slot);
            redis::send(&target, slot, get, Duration::from_secs(5), &mailbox, token);
        }
        let got = answers(&mailbox, 3);
        assert_eq!(got[&5], Answer::Reply(b":1\r\n".to_vec()));
        assert_eq!(got[&6], Answer::Reply(b":2\r\n".to_vec()));
        assert_eq!(got[&7], Answer::Reply(b":3\r\n".to_vec()));
        // A slot moved is sent to its new node at once.
        let before = redirected.load(Ordering::SeqCst);
        let get = resp::command([&b"GET"[..], &b"moved"[..]]);
        redis::send(&target, 5, get, Duration::from_secs(5), &mailbox, 8);
        assert_eq!(answers(&mailbox, 1)[&8], Answer::Reply(b":1\r\n".to_vec()));
        assert_eq!(redirected.load(Ordering::SeqCst), before);
    }

    #[test]
    fn redirects_are_read_and_other_errors_are_not() {
        assert_eq!(
            Redirect::read(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved {
                slot: 3999,
                address: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            Redirect::read(b"-ASK 3999 [::1]:6381\r\n"),
            Some(Redirect::Ask {
                address: "[::1]:6381".into()
            })
        );
        for other in [
            &b"-ERR unknown\r\n"[..],
            b"-MOVED 16384 a:1\r\n",
            b"-MOVED x a:1\r\n",
            b"-MOVED 1\r\n",
            b"+MOVED 1 a:1\r\n",
            b"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
        ] {
            assert_eq!(Redirect::read(other), None, "{other:?}");
        }
    }

    fn bulk(text: &str) -> Reply {
        Reply::Bulk(Some(text.as_bytes().to_vec()))
    }

    fn entry(first: i64, last: i64, host: &str, port: i64) -> Reply {
        Reply::Array(Some(vec![
            Reply::Integer(first),
            Reply::Integer(last),
            Reply::Array(Some(vec![bulk(host), Reply::Integer(port), bulk("id")])),
            Reply::Array(Some(vec![bulk(host), Reply::Integer(port + 1), bulk("r")])),
        ]))
    }

    #[test]
    fn slot_ranges_name_each_primary() {
        let reply = Reply::Array(Some(vec![
            entry(0, 5460, "127.0.0.1", 7000),
            entry(5461, 10922, "", 7001),
            entry(10923, 16383, "::1", 7002),
        ]));
        assert_eq!(
            slot_ranges(reply, "10.0.0.9:7000").unwrap(),
            vec![
                (0, 5460, "127.0.0.1:7000".to_string()),
                (5461, 10922, "10.0.0.9:7001".to_string()),
                (10923, 16383, "[::1]:7002".to_string()),
            ]
        );
        let bad = [
            Reply::Array(Some(vec![entry(0, 16384, "a", 1)])),
            Reply::Array(Some(vec![Reply::Array(Some(vec![Reply::Integer(0)]))])),
            Reply::Integer(1),
            Reply::Error("ERR This instance has cluster support disabled".into()),
        ];
        for reply in bad {
            assert!(slot_ranges(reply.clone(), "a:1").is_err(), "{reply:?}");
        }
    }
}
