//! The fleet store's Redis, called by the native module itself: one
//! connection per Redis server in the process, owned by a thread of its own
//! (never a worker's), with the commands of every request pipelined on it.
//! A command's answer (or its absence, once its timeout passed) is handed
//! to a [`Mailbox`], whose owner's worker runs it later through Envoy's
//! scheduler.
//!
//! While the server cannot be reached, a command is answered at once with
//! no answer (its policy applies its failure mode without waiting), and the
//! connection is tried again after a growing pause. In a Redis Cluster
//! ([`crate::cluster`]) there is such a connection per primary, and a
//! command goes to the one serving its hash slot.

use crate::mailbox::{log, server_of, Answer, Mailbox, Servers};
use gateway_common::fleet::resp::{self, Reply};
use gateway_common::fleet::{RedisServers, RedisTarget};
use gateway_common::sync::lock;
use gateway_common::tls::TlsTarget;
use rustls::ClientConnection;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long connecting (and signing in) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The pause before connecting again, doubling up to the longest.
const FIRST_RETRY: Duration = Duration::from_millis(50);
const LONGEST_RETRY: Duration = Duration::from_secs(2);
/// With Sentinel, a failed primary is replaced within seconds: its
/// successor is asked for more often.
const LONGEST_RETRY_SENTINEL: Duration = Duration::from_millis(500);
/// A connection whose oldest command waited this long past its timeout is
/// stuck (the server stopped answering): it is closed and made again.
const STUCK: Duration = Duration::from_secs(1);
/// How often the connection's thread looks for commands past their timeout.
const SWEEP: Duration = Duration::from_millis(5);
/// The most commands written in one go.
const BATCH: usize = 256;

/// Sends `command` to `target`'s connection (in a Redis Cluster, to the
/// primary of the hash `slot`); its answer reaches `mailbox` with `token`,
/// within `timeout`.
pub(crate) fn send(
    target: &RedisTarget,
    slot: u16,
    command: Vec<u8>,
    timeout: Duration,
    mailbox: &Arc<Mailbox>,
    token: u32,
) {
    let job = Job {
        command,
        deadline: Instant::now() + timeout,
        mailbox: Arc::clone(mailbox),
        token,
        route: None,
        asking: false,
    };
    match target.servers {
        RedisServers::Cluster { .. } => crate::cluster::send(target, slot, job),
        _ => send_on(&connection(target), job),
    }
}

/// Gives `job` to a connection's thread (answered as not sent when the
/// thread is gone).
fn send_on(connection: &Jobs, job: Job) {
    if let Err(job) = try_send(connection, job) {
        job.answer(Answer::Unsent);
    }
}

/// Gives `job` to a connection's thread; the job back when the thread is gone.
pub(crate) fn try_send(connection: &Jobs, job: Job) -> Result<(), Job> {
    lock(connection)
        .send(job)
        .map_err(|mpsc::SendError(job)| job)
}

/// One command on its way.
pub(crate) struct Job {
    pub command: Vec<u8>,
    pub deadline: Instant,
    mailbox: Arc<Mailbox>,
    token: u32,
    /// In a Redis Cluster: how to follow a redirect to another node.
    pub route: Option<crate::cluster::Route>,
    /// Sent after `ASKING` (a redirect to a slot being migrated).
    pub asking: bool,
}

impl Job {
    /// Answers the command; in a Redis Cluster, its route may send it on
    /// to another node instead.
    pub fn answer(mut self, answer: Answer) {
        match self.route.take() {
            Some(route) => route.answered(self, answer),
            None => self.deliver(answer),
        }
    }

    /// Hands `answer` to the command's mailbox.
    pub fn deliver(self, answer: Answer) {
        self.mailbox.deliver(self.token, answer);
    }
}

/// The sending end of a connection thread.
pub(crate) type Jobs = Arc<Mutex<Sender<Job>>>;

/// The sending end of a server's connection thread (made on first use).
pub(crate) fn connection(target: &RedisTarget) -> Jobs {
    static CONNECTIONS: Servers<RedisTarget, Job> = OnceLock::new();
    server_of(&CONNECTIONS, target, "gateway-redis", |target, jobs| {
        run(&target, &jobs)
    })
}

/// The commands written whose replies have not come, oldest first, each
/// with its deadline; a command answered already (its timeout passed) is
/// kept without its job, so the replies that follow find their commands.
type Pending = Arc<Mutex<VecDeque<(Instant, Option<Job>)>>>;

/// The connection thread: connects, serves until the connection fails,
/// then connects again after a pause. While a connection is being made (on
/// a helper thread) commands wait for it within their timeouts; during the
/// pause after a failed attempt, every command is answered at once with no
/// answer.
fn run(target: &RedisTarget, jobs: &Receiver<Job>) {
    let longest_retry = match target.servers {
        RedisServers::Sentinel { .. } => LONGEST_RETRY_SENTINEL,
        _ => LONGEST_RETRY,
    };
    let mut retry = FIRST_RETRY;
    let mut next_try = Instant::now();
    let mut reported = false;
    // The primary last connected to (Sentinel may name another one).
    let mut primary: Option<String> = None;
    loop {
        // Until it is time to try again, and while trying.
        while Instant::now() < next_try {
            if !answer_at_once(jobs, next_try - Instant::now()) {
                return;
            }
        }
        let (made, connecting) = mpsc::channel();
        let owned = target.clone();
        let helper = thread::Builder::new()
            .name("gateway-redis-connect".into())
            .spawn(move || {
                let _ = made.send(connect(&owned));
            });
        let mut waiting: Vec<Job> = Vec::new();
        let outcome = loop {
            match (helper.is_ok(), connecting.try_recv()) {
                (true, Ok(outcome)) => break outcome,
                (true, Err(mpsc::TryRecvError::Empty)) => {
                    match jobs.recv_timeout(SWEEP) {
                        Ok(job) => waiting.push(job),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    waiting.extend(jobs.try_iter());
                    let now = Instant::now();
                    let (late, on_time): (Vec<Job>, Vec<Job>) =
                        waiting.drain(..).partition(|job| job.deadline <= now);
                    waiting = on_time;
                    for job in late {
                        job.answer(Answer::Unsent);
                    }
                }
                _ => break Err(io::Error::other("cannot start connecting")),
            }
        };
        if outcome.is_err() {
            for job in waiting.drain(..) {
                job.answer(Answer::Unsent);
            }
        }
        let failure = match outcome {
            Ok((link, address)) => {
                if primary.as_ref().is_some_and(|last| *last != address) {
                    log(&format!(
                        "{}: now at {address} (was {})",
                        target.servers.describe(),
                        primary.as_deref().unwrap_or_default()
                    ));
                }
                if reported {
                    log(&format!("connected to Redis at {address} again"));
                    reported = false;
                }
                primary = Some(address);
                match serve(link, jobs, waiting) {
                    Served::Disconnected => return,
                    // A connection that answered: connect again at once.
                    Served::Failed { answered: true, .. } => {
                        retry = FIRST_RETRY;
                        next_try = Instant::now();
                        continue;
                    }
                    Served::Failed {
                        answered: false,
                        why,
                    } => match why {
                        Some(why) => format!("the connection was made, then failed: {why}"),
                        None => "the connection was made but nothing was answered".to_string(),
                    },
                    Served::Demoted => "the primary answered as a replica (READONLY)".to_string(),
                }
            }
            Err(error) => error.to_string(),
        };
        if !reported {
            log(&format!(
                "cannot use Redis at {}: {failure}; commands get no answer until it can",
                target.servers.describe()
            ));
            reported = true;
        }
        next_try = Instant::now() + retry;
        retry = (retry * 2).min(longest_retry);
    }
}

/// Answers with no answer the commands that come within `wait`; false when
/// nobody can send commands any more.
fn answer_at_once(jobs: &Receiver<Job>, wait: Duration) -> bool {
    match jobs.recv_timeout(wait) {
        Ok(job) => {
            job.answer(Answer::Unsent);
            for job in jobs.try_iter() {
                job.answer(Answer::Unsent);
            }
            true
        }
        Err(RecvTimeoutError::Timeout) => true,
        Err(RecvTimeoutError::Disconnected) => false,
    }
}

/// A connection made: its socket and, with TLS, its session.
struct Link {
    stream: TcpStream,
    tls: Option<ClientConnection>,
}

/// Finds the primary, connects, signs in and selects the database; the
/// connection and the address it reached.
fn connect(target: &RedisTarget) -> io::Result<(Link, String)> {
    let (addresses, master, username, password) = match &target.servers {
        RedisServers::Sentinel {
            addresses,
            master,
            username,
            password,
        } => (addresses, master, username, password),
        RedisServers::Address(address) => {
            return connect_to(target, address, false).map(|link| (link, address.clone()))
        }
        // Each node is connected to as an address (see crate::cluster).
        RedisServers::Cluster { .. } => {
            return Err(io::Error::other("a cluster is reached through its nodes"))
        }
    };
    // The first primary a Sentinel names that is one (a Sentinel may still
    // name a primary that was just demoted).
    let mut failures = Vec::new();
    for sentinel in addresses {
        let named = ask_sentinel(
            sentinel,
            master,
            username.as_deref(),
            password.as_deref(),
            target.tls.as_ref(),
        );
        match named
            .and_then(|address| connect_to(target, &address, true).map(|link| (link, address)))
        {
            Ok(connected) => return Ok(connected),
            Err(error) => failures.push(format!("{sentinel}: {error}")),
        }
    }
    Err(io::Error::other(format!(
        "no Sentinel named a primary `{master}` that could be used ({})",
        failures.join("; ")
    )))
}

/// Connects to `address`, signs in, selects the database and, when
/// `primary_only`, checks with `ROLE` that the server is a primary (a user
/// not allowed `ROLE` is taken at Sentinel's word: a replica's `READONLY`
/// sends the connection back to the Sentinels).
fn connect_to(target: &RedisTarget, address: &str, primary_only: bool) -> io::Result<Link> {
    let (mut stream, mut buffer, mut tls) = open(address, target.tls.as_ref())?;
    {
        let mut setup = Setup::new(&mut stream, tls.as_mut());
        sign_in(
            &mut setup,
            &mut buffer,
            target.username.as_deref(),
            target.password.as_deref(),
        )?;
        if target.database != 0 {
            let database = target.database.to_string();
            expect_ok(
                &mut setup,
                &mut buffer,
                vec![b"SELECT", database.as_bytes()],
            )?;
        }
        if primary_only {
            setup.write_all(&resp::command([&b"ROLE"[..]]))?;
            if let Reply::Array(Some(role)) = read_reply(&mut setup, &mut buffer)? {
                if role.first() != Some(&Reply::Bulk(Some(b"master".to_vec()))) {
                    return Err(io::Error::other(format!(
                        "{address}, named by Sentinel, is not a primary"
                    )));
                }
            }
        }
        // With TLS 1.3, Redis refuses a client's certificate after the
        // handshake: something is read here, so that is a failed connection
        // with its reason, not a silent one.
        let read_nothing = target.password.is_none() && target.database == 0 && !primary_only;
        if setup.is_tls() && read_nothing {
            expect_ok(&mut setup, &mut buffer, vec![b"PING"])?;
        }
    }
    // A server that stops reading cannot block the writer past STUCK.
    stream.set_write_timeout(Some(STUCK))?;
    Ok(Link { stream, tls })
}

/// A connection being set up, read and written in plain text over TLS or
/// not.
enum Setup<'a> {
    Plain(&'a mut TcpStream),
    Tls(rustls::Stream<'a, ClientConnection, TcpStream>),
}

impl<'a> Setup<'a> {
    fn new(stream: &'a mut TcpStream, tls: Option<&'a mut ClientConnection>) -> Self {
        match tls {
            Some(tls) => Setup::Tls(rustls::Stream::new(tls, stream)),
            None => Setup::Plain(stream),
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self, Setup::Tls(_))
    }
}

impl Read for Setup<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self {
            Setup::Plain(stream) => stream.read(buffer),
            Setup::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for Setup<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Setup::Plain(stream) => stream.write(bytes),
            Setup::Tls(stream) => stream.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Setup::Plain(stream) => stream.flush(),
            Setup::Tls(stream) => stream.flush(),
        }
    }
}

/// The reply of the server at `address` to one `question`, on a
/// connection of its own (signed in with `username` and `password`).
pub(crate) fn ask(
    address: &str,
    username: Option<&str>,
    password: Option<&str>,
    tls: Option<&TlsTarget>,
    question: &[&[u8]],
) -> io::Result<Reply> {
    let (mut stream, mut buffer, mut session) = open(address, tls)?;
    let mut stream = Setup::new(&mut stream, session.as_mut());
    sign_in(&mut stream, &mut buffer, username, password)?;
    stream.write_all(&resp::command(question.iter().copied()))?;
    read_reply(&mut stream, &mut buffer)
}

/// `host:port`, with an IPv6 host in brackets.
pub(crate) fn host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The `host:port` a Sentinel names as the primary `master`.
fn ask_sentinel(
    sentinel: &str,
    master: &str,
    username: Option<&str>,
    password: Option<&str>,
    tls: Option<&TlsTarget>,
) -> io::Result<String> {
    let question = [
        &b"SENTINEL"[..],
        b"get-master-addr-by-name",
        master.as_bytes(),
    ];
    match ask(sentinel, username, password, tls, &question)? {
        Reply::Array(Some(parts)) => match parts.as_slice() {
            [Reply::Bulk(Some(host)), Reply::Bulk(Some(port))] => Ok(host_port(
                &String::from_utf8_lossy(host),
                &String::from_utf8_lossy(port),
            )),
            _ => Err(io::Error::other("an answer that is not host and port")),
        },
        Reply::Array(None) | Reply::Bulk(None) => {
            Err(io::Error::other(format!("does not know `{master}`")))
        }
        Reply::Error(message) => Err(io::Error::other(message)),
        other => Err(io::Error::other(format!("unexpected reply {other:?}"))),
    }
}

/// A connection's socket, read buffer and TLS session.
type Opened = (TcpStream, Vec<u8>, Option<ClientConnection>);

/// A connection to `address` with set-up timeouts (its TLS handshake
/// done, with `tls`), and its read buffer.
fn open(address: &str, tls: Option<&TlsTarget>) -> io::Result<Opened> {
    let socket = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let mut stream = TcpStream::connect_timeout(&socket, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    let session = tls
        .map(|tls| crate::tls::handshake(&mut stream, tls, address))
        .transpose()?;
    Ok((stream, Vec::new(), session))
}

/// `AUTH` with a user and password, or a password only; nothing without.
fn sign_in(
    stream: &mut (impl Read + Write),
    buffer: &mut Vec<u8>,
    username: Option<&str>,
    password: Option<&str>,
) -> io::Result<()> {
    match (username, password) {
        (Some(user), Some(password)) => expect_ok(
            stream,
            buffer,
            vec![b"AUTH", user.as_bytes(), password.as_bytes()],
        ),
        (None, Some(password)) => expect_ok(stream, buffer, vec![b"AUTH", password.as_bytes()]),
        _ => Ok(()),
    }
}

/// Sends a set-up command that answers `+OK`.
fn expect_ok(
    stream: &mut (impl Read + Write),
    buffer: &mut Vec<u8>,
    command: Vec<&[u8]>,
) -> io::Result<()> {
    let name = String::from_utf8_lossy(command[0]).into_owned();
    stream.write_all(&resp::command(command))?;
    match read_reply(stream, buffer)? {
        Reply::Simple(_) => Ok(()),
        Reply::Error(message) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{name}: {message}"),
        )),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name}: unexpected reply {other:?}"),
        )),
    }
}

/// Reads one whole reply (during set-up).
fn read_reply(stream: &mut impl Read, buffer: &mut Vec<u8>) -> io::Result<Reply> {
    let mut chunk = [0u8; 4096];
    loop {
        match resp::parse(buffer) {
            Ok(Some((reply, length))) => {
                buffer.drain(..length);
                return Ok(reply);
            }
            Ok(None) => {}
            Err(why) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

#[derive(PartialEq, Eq)]
enum Served {
    /// The connection failed (`answered`: after at least one reply), for
    /// `why` when the reader knows.
    Failed { answered: bool, why: Option<String> },
    /// The server turned out to be a replica (`READONLY`).
    Demoted,
    /// Nobody can send commands any more.
    Disconnected,
}

/// The work of one of a connection's threads.
type ConnectionWork = Box<dyn FnOnce(TcpStream, &Connection) + Send>;

/// What the connection's threads share.
struct Connection {
    pending: Pending,
    /// Set by any of them when the connection is done for.
    closed: AtomicBool,
    /// A reply came on it.
    answered: AtomicBool,
    /// The server answered as a replica.
    demoted: AtomicBool,
    /// Why the reader stopped, when it knows (a TLS alert).
    error: Mutex<Option<String>>,
    /// The TLS session, when there is one: the writer seals what it writes
    /// (and only the writer writes to the socket, so records go out in
    /// order), the reader opens what comes.
    tls: Option<Mutex<ClientConnection>>,
}

/// Writes the commands as they come (each batch in one write) while a
/// reader thread hands the replies to their commands in order and a
/// sweeper answers the commands past their timeout (and closes a stuck
/// connection).
fn serve(link: Link, jobs: &Receiver<Job>, waiting: Vec<Job>) -> Served {
    let Link { stream, tls } = link;
    let connection = Arc::new(Connection {
        pending: Arc::default(),
        closed: AtomicBool::new(false),
        answered: AtomicBool::new(false),
        demoted: AtomicBool::new(false),
        error: Mutex::new(None),
        tls: tls.map(Mutex::new),
    });
    let spawn = |name: &str, work: ConnectionWork| {
        let stream = stream.try_clone()?;
        let shared = Arc::clone(&connection);
        thread::Builder::new()
            .name(name.into())
            .spawn(move || work(stream, &shared))
    };
    let reader = spawn("gateway-redis-read", Box::new(read_replies));
    let sweeper = spawn("gateway-redis-sweep", Box::new(sweep));
    let (Ok(reader), Ok(sweeper)) = (reader, sweeper) else {
        connection.closed.store(true, Ordering::Release);
        let _ = stream.shutdown(Shutdown::Both);
        for job in waiting {
            job.answer(Answer::Unsent);
        }
        return Served::Failed {
            answered: false,
            why: None,
        };
    };
    let mut writing = stream;
    let mut batch = Vec::new();
    // What waited for the connection goes first.
    let mut waiting = waiting.into_iter();
    let served = loop {
        if connection.closed.load(Ordering::Acquire) {
            break if connection.demoted.load(Ordering::Acquire) {
                Served::Demoted
            } else {
                Served::Failed {
                    answered: connection.answered.load(Ordering::Acquire),
                    why: lock(&connection.error).take(),
                }
            };
        }
        let first = match waiting.next() {
            Some(job) => job,
            None => match jobs.recv_timeout(SWEEP) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    // An alert the TLS session queued (rustls sends its
                    // other messages with the next commands).
                    if write_out(&mut writing, &connection, &[]).is_err() {
                        connection.closed.store(true, Ordering::Release);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break Served::Disconnected,
            },
        };
        batch.clear();
        let mut queue = lock(&connection.pending);
        let more = waiting.by_ref().chain(jobs.try_iter()).take(BATCH - 1);
        for job in std::iter::once(first).chain(more) {
            if job.deadline <= Instant::now() || connection.closed.load(Ordering::Acquire) {
                job.answer(Answer::Unsent);
                continue;
            }
            if job.asking {
                // Its `+OK` has no job to go to.
                batch.extend_from_slice(&resp::command([&b"ASKING"[..]]));
                queue.push_back((job.deadline, None));
            }
            batch.extend_from_slice(&job.command);
            queue.push_back((job.deadline, Some(job)));
        }
        drop(queue);
        // Not written on a connection given up meanwhile: those commands
        // are answered below, and must not run later.
        if connection.closed.load(Ordering::Acquire)
            || write_out(&mut writing, &connection, &batch).is_err()
        {
            connection.closed.store(true, Ordering::Release);
        }
    };
    connection.closed.store(true, Ordering::Release);
    for job in waiting {
        job.answer(Answer::Unsent);
    }
    let _ = writing.shutdown(Shutdown::Both);
    let _ = reader.join();
    let _ = sweeper.join();
    for (_, job) in lock(&connection.pending).drain(..) {
        if let Some(job) = job {
            job.answer(Answer::Late);
        }
    }
    served
}

/// Writes `bytes` on the connection, sealed first with TLS (with what the
/// session has to send of its own).
fn write_out(stream: &mut TcpStream, connection: &Connection, bytes: &[u8]) -> io::Result<()> {
    let Some(tls) = &connection.tls else {
        return stream.write_all(bytes);
    };
    let mut sealed = Vec::with_capacity(bytes.len() + 64);
    {
        let mut tls = lock(tls);
        if !bytes.is_empty() {
            tls.writer().write_all(bytes)?;
        }
        while tls.wants_write() {
            tls.write_tls(&mut sealed)?;
        }
    }
    if sealed.is_empty() {
        return Ok(());
    }
    stream.write_all(&sealed)
}

/// Opens what came on a TLS connection into `plain`; true when the server
/// closed the session (after what it sent before, which is in `plain`), an
/// error when the session failed (e.g. Redis refused the client's
/// certificate, which TLS 1.3 says after the handshake).
fn unseal(
    tls: &Mutex<ClientConnection>,
    mut sealed: &[u8],
    plain: &mut Vec<u8>,
) -> io::Result<bool> {
    let mut tls = lock(tls);
    while !sealed.is_empty() {
        tls.read_tls(&mut sealed)?;
        let state = tls
            .process_new_packets()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {error}")))?;
        let available = state.plaintext_bytes_to_read();
        if available > 0 {
            let start = plain.len();
            plain.resize(start + available, 0);
            tls.reader().read_exact(&mut plain[start..])?;
        }
        if state.peer_has_closed() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every [`SWEEP`], answers the commands past their timeout; closes the
/// connection when the oldest reply is [`STUCK`] overdue (the server
/// stopped answering).
fn sweep(stream: TcpStream, connection: &Connection) {
    while !connection.closed.load(Ordering::Acquire) {
        thread::sleep(SWEEP);
        let now = Instant::now();
        let mut expired = Vec::new();
        let stuck = {
            let mut queue = lock(&connection.pending);
            for (deadline, job) in queue.iter_mut() {
                // Deadlines grow along the queue only roughly (timeouts differ).
                if *deadline <= now {
                    expired.extend(job.take());
                }
            }
            queue
                .front()
                .is_some_and(|(deadline, _)| now.duration_since(*deadline) >= STUCK)
        };
        for job in expired {
            job.answer(Answer::Late);
        }
        if stuck {
            connection.closed.store(true, Ordering::Release);
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Reads replies and gives each to the oldest command written.
fn read_replies(mut stream: TcpStream, connection: &Connection) {
    let mut buffer: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let _ = stream.set_read_timeout(None);
    // The server closed the session: what it sent before is read first.
    let mut closed = false;
    'reading: while !closed {
        let read = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        match &connection.tls {
            None => buffer.extend_from_slice(&chunk[..read]),
            Some(tls) => match unseal(tls, &chunk[..read], &mut buffer) {
                Ok(ended) => closed = ended,
                Err(error) => {
                    *lock(&connection.error) = Some(error.to_string());
                    break;
                }
            },
        }
        let mut used = 0;
        loop {
            match resp::parse(&buffer[used..]) {
                Ok(Some((_, length))) => {
                    let reply = buffer[used..used + length].to_vec();
                    used += length;
                    connection.answered.store(true, Ordering::Release);
                    // A primary demoted to a replica (Redis 7 answers
                    // `-READONLY …`, Redis 6 an `-ERR` naming it): another
                    // one is asked for, after the pause of a failed attempt.
                    let demoted = reply.first() == Some(&b'-')
                        && reply.windows(8).any(|word| word == b"READONLY");
                    if demoted {
                        connection.demoted.store(true, Ordering::Release);
                    }
                    let next = lock(&connection.pending).pop_front();
                    match next {
                        Some((_, Some(job))) => job.answer(Answer::Reply(reply)),
                        // Its command was answered already (timed out).
                        Some((_, None)) => {}
                        // A reply to no command: the connection is confused.
                        None => break 'reading,
                    }
                    if demoted {
                        break 'reading;
                    }
                }
                Ok(None) => break,
                Err(_) => break 'reading,
            }
        }
        buffer.drain(..used);
    }
    connection.closed.store(true, Ordering::Release);
    let _ = stream.shutdown(Shutdown::Both);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mailbox::Waker;
    use std::collections::HashMap;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU16, AtomicUsize};

    /// A mailbox that counts its wakes.
    pub(crate) fn mailbox() -> (Arc<Mailbox>, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&wakes);
        let waker: Waker = Box::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        (Mailbox::new(waker), wakes)
    }

    /// Waits until `mailbox` has `n` answers and returns them by token.
    pub(crate) fn answers(mailbox: &Mailbox, n: usize) -> HashMap<u32, Answer> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = HashMap::new();
        while got.len() < n {
            assert!(Instant::now() < deadline, "{} of {n} answers", got.len());
            got.extend(mailbox.take());
            thread::sleep(Duration::from_millis(2));
        }
        got
    }

    fn target(port: u16) -> RedisTarget {
        RedisTarget {
            servers: RedisServers::Address(format!("127.0.0.1:{port}")),
            username: None,
            password: None,
            database: 0,
            tls: None,
        }
    }

    /// What a scripted server answers to a command (its parts).
    pub(crate) type Script = Arc<dyn Fn(&[Vec<u8>]) -> Vec<u8> + Send + Sync>;

    /// A server answering each command with `script`; returns its port.
    pub(crate) fn scripted(script: Script) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let script = Arc::clone(&script);
                thread::spawn(move || {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(read) = stream.read(&mut chunk) {
                        if read == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..read]);
                        while let Ok(Some((command, length))) = resp::parse(&buffer) {
                            buffer.drain(..length);
                            let Reply::Array(Some(parts)) = command else {
                                return;
                            };
                            let parts: Vec<Vec<u8>> = parts
                                .into_iter()
                                .filter_map(|part| match part {
                                    Reply::Bulk(Some(bytes)) => Some(bytes),
                                    _ => None,
                                })
                                .collect();
                            let _ = stream.write_all(&script(&parts));
                        }
                    }
                });
            }
        });
        port
    }

    /// A primary answering `ROLE` with `master` and each `GET <n>` with
    /// `:<n>`, after `delay` when n is in `slow`; once `demoted`, a
    /// replica (`READONLY`). Returns its port.
    fn primary(slow: &'static [i64], delay: Duration, demoted: Arc<AtomicBool>) -> u16 {
        scripted(Arc::new(move |parts| {
            let demoted = demoted.load(Ordering::SeqCst);
            match parts {
                [role] if role == b"ROLE" => {
                    let role = if demoted { "slave" } else { "master" };
                    format!("*1\r\n${}\r\n{role}\r\n", role.len()).into_bytes()
                }
                // As Redis 6 answers a script's refused write.
                [_, _] if demoted => {
                    b"-ERR Error running script: -READONLY You can't write against a read only replica.\r\n".to_vec()
                }
                [_, n] => {
                    let n: i64 = String::from_utf8_lossy(n).parse().unwrap_or(-1);
                    if slow.contains(&n) {
                        thread::sleep(delay);
                    }
                    format!(":{n}\r\n").into_bytes()
                }
                _ => b"-ERR unknown\r\n".to_vec(),
            }
        }))
    }

    fn server(slow: &'static [i64], delay: Duration) -> u16 {
        primary(slow, delay, Arc::default())
    }

    /// A Sentinel naming 127.0.0.1:`primary` as the primary `gw` (and no other).
    fn sentinel(primary: Arc<AtomicU16>) -> u16 {
        scripted(Arc::new(move |parts| match parts {
            [sentinel, _, name] if sentinel == b"SENTINEL" && name == b"gw" => {
                let port = primary.load(Ordering::SeqCst).to_string();
                format!("*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{port}\r\n", port.len()).into_bytes()
            }
            [sentinel, ..] if sentinel == b"SENTINEL" => b"*-1\r\n".to_vec(),
            _ => b"-ERR unknown\r\n".to_vec(),
        }))
    }

    fn sentinel_target(sentinels: Vec<u16>, master: &str) -> RedisTarget {
        RedisTarget {
            servers: RedisServers::Sentinel {
                addresses: sentinels
                    .into_iter()
                    .map(|port| format!("127.0.0.1:{port}"))
                    .collect(),
                master: master.into(),
                username: None,
                password: None,
            },
            username: None,
            password: None,
            database: 0,
            tls: None,
        }
    }

    /// Sends `GET n` until it is answered with something, within 5 s.
    fn answered(redis: &RedisTarget, mailbox: &Arc<Mailbox>, n: i64) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let token = u32::try_from(n).expect("token");
            send(redis, 0, get(n), Duration::from_secs(1), mailbox, token);
            if let Some(Answer::Reply(reply)) = answers(mailbox, 1).remove(&token) {
                return reply;
            }
            assert!(Instant::now() < deadline, "GET {n} never answered");
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn sentinel_names_the_primary_and_a_demoted_one_sends_the_connection_back() {
        let demoted = Arc::new(AtomicBool::new(false));
        let first = primary(&[], Duration::ZERO, Arc::clone(&demoted));
        let second = server(&[], Duration::ZERO);
        let named = Arc::new(AtomicU16::new(first));
        // The first Sentinel is down, the second knows another name only.
        let sentinels = vec![
            1,
            scripted(Arc::new(|_| b"*-1\r\n".to_vec())),
            sentinel(Arc::clone(&named)),
        ];
        let redis = sentinel_target(sentinels, "gw");
        let (mailbox, _) = mailbox();
        assert_eq!(answered(&redis, &mailbox, 1), b":1\r\n");
        // A failover: the first primary is now a replica, Sentinel names
        // the second. The command sent to the replica gets its READONLY
        // error (its policy applies its failure mode); the next ones go to
        // the new primary.
        demoted.store(true, Ordering::SeqCst);
        named.store(second, Ordering::SeqCst);
        let refused = answered(&redis, &mailbox, 2);
        assert!(refused.starts_with(b"-ERR Error running script: -READONLY"));
        assert_eq!(answered(&redis, &mailbox, 3), b":3\r\n");
    }

    #[test]
    fn a_sentinel_naming_a_replica_is_passed_over_for_the_next() {
        let replica = primary(&[], Duration::ZERO, Arc::new(AtomicBool::new(true)));
        let good = server(&[], Duration::ZERO);
        let redis = sentinel_target(
            vec![
                sentinel(Arc::new(AtomicU16::new(replica))),
                sentinel(Arc::new(AtomicU16::new(good))),
            ],
            "gw",
        );
        let (mailbox, _) = mailbox();
        assert_eq!(answered(&redis, &mailbox, 4), b":4\r\n");
    }

    #[test]
    fn a_replica_named_by_sentinel_or_an_unknown_primary_is_no_connection() {
        let replica = primary(&[], Duration::ZERO, Arc::new(AtomicBool::new(true)));
        let named = Arc::new(AtomicU16::new(replica));
        for redis in [
            sentinel_target(vec![sentinel(Arc::clone(&named))], "gw"),
            sentinel_target(vec![sentinel(Arc::clone(&named))], "other"),
        ] {
            let (mailbox, _) = mailbox();
            for token in 0..3 {
                send(&redis, 0, get(1), Duration::from_secs(2), &mailbox, token);
            }
            assert!(answers(&mailbox, 3)
                .values()
                .all(|answer| *answer == Answer::Unsent));
        }
    }

    fn get(n: i64) -> Vec<u8> {
        resp::command([&b"GET"[..], n.to_string().as_bytes()])
    }

    #[test]
    fn pipelined_replies_reach_their_own_commands() {
        let redis = target(server(&[], Duration::ZERO));
        let (mailbox, wakes) = mailbox();
        thread::scope(|scope| {
            for sender in 0..4 {
                let (redis, mailbox) = (&redis, &mailbox);
                scope.spawn(move || {
                    for i in 0..50 {
                        let n = sender * 50 + i;
                        let token = u32::try_from(n).expect("token");
                        send(redis, 0, get(n), Duration::from_secs(5), mailbox, token);
                    }
                });
            }
        });
        let got = answers(&mailbox, 200);
        for (token, answer) in got {
            assert_eq!(answer, Answer::Reply(format!(":{token}\r\n").into_bytes()));
        }
        assert_eq!(wakes.load(Ordering::SeqCst), 200, "woken once per answer");
    }

    #[test]
    fn a_late_reply_is_dropped_and_the_next_command_gets_its_own() {
        let redis = target(server(&[1], Duration::from_millis(300)));
        let (mailbox, _) = mailbox();
        send(&redis, 0, get(1), Duration::from_millis(50), &mailbox, 1);
        let started = Instant::now();
        let first = answers(&mailbox, 1);
        assert_eq!(first[&1], Answer::Late, "past its timeout");
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        send(&redis, 0, get(2), Duration::from_secs(5), &mailbox, 2);
        assert_eq!(answers(&mailbox, 1)[&2], Answer::Reply(b":2\r\n".to_vec()));
    }

    #[test]
    fn a_server_that_stops_answering_is_left_and_commands_keep_their_timeouts() {
        let port = crate::mailbox::silent_server();
        let redis = target(port);
        let (mailbox, _) = mailbox();
        let started = Instant::now();
        let mut token = 0;
        // For longer than a connection may stay stuck.
        while started.elapsed() < STUCK + Duration::from_millis(500) {
            token += 1;
            let sent = Instant::now();
            send(
                &redis,
                0,
                get(1),
                Duration::from_millis(100),
                &mailbox,
                token,
            );
            let got = answers(&mailbox, 1);
            assert_ne!(got[&token], Answer::Reply(b":1\r\n".to_vec()));
            assert!(
                sent.elapsed() < Duration::from_millis(600),
                "command {token} waited {:?}",
                sent.elapsed()
            );
        }
        assert!(token >= 8, "{token} commands");
    }

    #[test]
    fn no_server_is_no_answer_at_once_and_a_closed_mailbox_takes_nothing() {
        // Port 1: nothing listens there.
        let redis = target(1);
        let (mailbox, _) = mailbox();
        let started = Instant::now();
        for token in 0..5 {
            send(&redis, 0, get(1), Duration::from_secs(5), &mailbox, token);
        }
        let got = answers(&mailbox, 5);
        assert!(
            got.values().all(|answer| *answer == Answer::Unsent),
            "never written"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        mailbox.close();
        send(&redis, 0, get(1), Duration::from_secs(5), &mailbox, 9);
        thread::sleep(Duration::from_millis(100));
        assert!(mailbox.take().is_empty(), "closed");
    }
}
