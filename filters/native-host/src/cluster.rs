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
pub(crate) fn send(target: &RedisTarget, slot: u16, mut job: Job) {
    let cluster = cluster_of(target);
    let node = cluster.node_of(slot);
    job.route = Some(Route {
        cluster,
        redirects: MOST_REDIRECTS,
    });
    redis::send_on(&node, job);
}

/// How a command in a cluster follows redirects.
pub(crate) struct Route {
    cluster: Arc<Cluster>,
    redirects: u8,
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
                    let node = match redirect {
                        Redirect::Moved { slot, address } => {
                            job.asking = false;
                            cluster.moved(slot, &address)
                        }
                        Redirect::Ask { address } => {
                            job.asking = true;
                            cluster.node_at(&address)
                        }
                    };
                    job.route = Some(self);
                    redis::send_on(&node, job);
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
    /// Every node met, never removed (a slot's index stays valid).
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
    /// The connection to the primary of `slot`, or (not known yet) to the
    /// first node named in the configuration, which redirects.
    fn node_of(&self, slot: u16) -> Jobs {
        let owner = self.owners[usize::from(slot) % SLOTS].load(Ordering::Acquire);
        if owner != UNKNOWN {
            let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, jobs)) = nodes.get(usize::from(owner)) {
                return Arc::clone(jobs);
            }
        }
        let first = match &self.target.servers {
            RedisServers::Cluster { addresses } => addresses.first().cloned(),
            _ => None,
        };
        self.node_at(&first.unwrap_or_default())
    }

    /// The connection to the node at `address`.
    fn node_at(&self, address: &str) -> Jobs {
        let index = self.index_of(address);
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&nodes[usize::from(index)].1)
    }

    /// The index of the node at `address` in `nodes`, added when new.
    fn index_of(&self, address: &str) -> u16 {
        {
            let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(index) = nodes.iter().position(|(known, _)| known == address) {
                return index as u16;
            }
        }
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = nodes.iter().position(|(known, _)| known == address) {
            return index as u16;
        }
        let node = RedisTarget {
            servers: RedisServers::Address(address.to_string()),
            ..self.target.clone()
        };
        nodes.push((address.to_string(), redis::connection(&node)));
        (nodes.len() - 1) as u16
    }

    /// Records that `slot` is served at `address` (a `MOVED`), and has the
    /// table read again soon; the connection to it.
    fn moved(&self, slot: u16, address: &str) -> Jobs {
        let index = self.index_of(address);
        self.owners[usize::from(slot)].store(index, Ordering::Release);
        self.refresh_soon();
        self.node_at(address)
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
            // What asked meanwhile is answered by this reading.
            while asked.try_recv().is_ok() {}
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
                        let index = self.index_of(primary);
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
