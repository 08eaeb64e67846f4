//! A local HTTP/1.1 "echo upstream": every request is answered with a JSON
//! description of exactly what arrived, so tests can assert what the backend
//! saw after Envoy and the filters were done with it.
//!
//! Behaviour a test can steer:
//! - `GET /healthz` answers `200 ok`, or `503 unhealthy` after
//!   [`EchoServer::set_healthy`]`(false)`; health checks are not recorded.
//! - `x-echo-status: NNN` sets the status of that response;
//!   [`EchoServer::set_forced_status`] overrides it for every request.
//! - `x-echo-delay-ms: N` (at most 60000) delays the response by N ms.
//! - [`EchoServer::start_scripted`]: a function of each request chooses the
//!   answer, how long it waits and whether the connection is cut mid-answer
//!   (a sink that fails in the ways real stores and proxies do).
//!
//! Responses always carry a `Content-Length` (never chunked), except 204 and
//! 304 which must not have a body.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// Limit on the request line plus headers, and separately on chunked trailers.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
const MAX_CHUNK_SIZE_LINE: usize = 4096;
/// Stray CRLFs tolerated before a request line (RFC 9112 §2.2).
const MAX_LEADING_EMPTY_LINES: usize = 8;
const MAX_DELAY_MS: u64 = 60_000;
/// How often a blocked connection thread wakes up to look at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Drop` waits for threads before leaving them to exit on their own.
const DROP_GRACE: Duration = Duration::from_secs(1);
/// Upper bound on reading leftovers after an error, so the client sees our
/// response instead of a reset caused by unread data.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 1024 * 1024;
const HEALTH_PATH: &str = "/healthz";
const READ_CHUNK: usize = 16 * 1024;

/// One request as the echo server received it (health checks excluded).
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    /// The request target up to (not including) the first `?`.
    pub path: String,
    /// The raw text after the first `?`; empty if there is none.
    pub query: String,
    /// The raw request target.
    pub uri: String,
    /// Header names lower-cased, in arrival order, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// The body after chunked decoding, if any.
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a scripted server answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Waited before the answer is written.
    pub delay: Duration,
    /// Writes only this many bytes of the answer, then closes the connection.
    pub cut_after: Option<usize>,
    /// Headers of the answer (a `content-type` here replaces the default).
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            body: body.into(),
            delay: Duration::ZERO,
            cut_after: None,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn cut_after(mut self, bytes: usize) -> Self {
        self.cut_after = Some(bytes);
        self
    }
}

type Script = Box<dyn Fn(&ReceivedRequest) -> Reply + Send + Sync>;

/// The demo's third-party authorizer (ext-auth asks it): for
/// `Authorization: Bearer <token>` with a token of `users`, 200 with
/// `x-user-id: <user>` and `cache-control: max-age=30`; for `revoked`, 403
/// with a JSON body; otherwise 401 with `www-authenticate`.
pub fn bearer_authorizer(
    users: Vec<(String, String)>,
) -> impl Fn(&ReceivedRequest) -> Reply + Send + Sync + 'static {
    move |request| {
        let token = request
            .header("authorization")
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        if let Some((_, user)) = users.iter().find(|(known, _)| known == token) {
            return Reply::new(200, "")
                .header("x-user-id", user)
                .header("cache-control", "max-age=30");
        }
        if token == "revoked" {
            return Reply::new(403, r#"{"error":"the token was revoked"}"#)
                .header("content-type", "application/json");
        }
        Reply::new(401, "").header("www-authenticate", "Bearer realm=\"demo\"")
    }
}

/// State shared by the handle, the accept thread and connection threads.
struct Shared {
    id: String,
    script: Option<Script>,
    stop: AtomicBool,
    healthy: AtomicBool,
    /// 0 means "not forced".
    forced_status: AtomicU16,
    requests: Mutex<Vec<ReceivedRequest>>,
    /// Clones of open client sockets, so `Drop` can shut them down.
    open_streams: Mutex<HashMap<u64, TcpStream>>,
    connection_threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running echo upstream; dropping it stops the server.
pub struct EchoServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub fn start(id: &str) -> io::Result<EchoServer> {
        Self::start_on(id, "127.0.0.1:0")
    }

    /// Starts a server on `addr` (e.g. `"127.0.0.1:8081"`).
    pub fn start_on(id: &str, addr: &str) -> io::Result<EchoServer> {
        Self::start_with(id, addr, None)
    }

    /// Starts a server on an ephemeral port of 127.0.0.1 whose answers
    /// `script` chooses (requests are recorded as by `start`).
    pub fn start_scripted(
        id: &str,
        script: impl Fn(&ReceivedRequest) -> Reply + Send + Sync + 'static,
    ) -> io::Result<EchoServer> {
        Self::start_with(id, "127.0.0.1:0", Some(Box::new(script)))
    }

    /// [`EchoServer::start_scripted`] on `addr`.
    pub fn start_scripted_on(
        id: &str,
        addr: &str,
        script: impl Fn(&ReceivedRequest) -> Reply + Send + Sync + 'static,
    ) -> io::Result<EchoServer> {
        Self::start_with(id, addr, Some(Box::new(script)))
    }

    fn start_with(id: &str, addr: &str, script: Option<Script>) -> io::Result<EchoServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            id: id.to_string(),
            script,
            stop: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            forced_status: AtomicU16::new(0),
            requests: Mutex::new(Vec::new()),
            open_streams: Mutex::new(HashMap::new()),
            connection_threads: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("echo-{id}-accept"))
            .spawn(move || accept_loop(listener, accept_shared))?;
        Ok(EchoServer {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// A snapshot of the recorded requests, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Drops the recorded requests (a long run's memory).
    pub fn forget_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Chooses what `GET /healthz` answers: 200 when healthy, 503 otherwise.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// When `Some`, every non-health request gets this status (still with the
    /// JSON body). Statuses outside 200..=599 are ignored.
    pub fn set_forced_status(&self, status: Option<u16>) {
        self.shared
            .forced_status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let deadline = Instant::now() + DROP_GRACE;
        self.shared.stop.store(true, Ordering::SeqCst);
        // accept() has no timeout: a throwaway connection wakes it up so it
        // sees the flag and closes the listener.
        let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_millis(200));
        if let Some(handle) = self.accept_thread.take() {
            join_until(handle, deadline);
        }
        for stream in lock(&self.shared.open_streams).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.connection_threads));
        for handle in threads {
            join_until(handle, deadline);
        }
    }
}

/// Where to connect to reach a listener bound to `addr`.
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// Joins `handle` if it finishes before `deadline`; otherwise detaches it
/// (it exits at its next look at the stop flag).
fn join_until(handle: JoinHandle<()>, deadline: Instant) {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let _ = handle.join();
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_connection_id: u64 = 0;
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match incoming {
            Ok(stream) => stream,
            Err(_) => {
                // E.g. out of file descriptors: back off instead of spinning.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        next_connection_id += 1;
        let connection_id = next_connection_id;
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.open_streams).insert(connection_id, clone);
        }
        let connection_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("echo-{}-conn-{connection_id}", shared.id))
            .spawn(move || {
                serve_connection(stream, &connection_shared);
                lock(&connection_shared.open_streams).remove(&connection_id);
            });
        match spawned {
            Ok(handle) => {
                let mut threads = lock(&shared.connection_threads);
                threads.retain(|h| !h.is_finished());
                threads.push(handle);
            }
            Err(_) => {
                // The stream went down with the closure; forget its clone.
                lock(&shared.open_streams).remove(&connection_id);
            }
        }
    }
}

/// Why a connection stops reading requests.
enum ConnError {
    /// The peer closed, the socket failed, or the server is stopping: close
    /// without answering.
    Closed,
    /// The request is unacceptable: answer with this status and close.
    Reject { status: u16, reason: &'static str },
}

impl From<io::Error> for ConnError {
    fn from(_: io::Error) -> Self {
        ConnError::Closed
    }
}

fn reject(status: u16, reason: &'static str) -> ConnError {
    ConnError::Reject { status, reason }
}

/// A fully read request plus what the connection needs to know about it.
struct IncomingRequest {
    received: ReceivedRequest,
    http10: bool,
    keep_alive: bool,
}

enum BodyFraming {
    Length(u64),
    Chunked,
}

/// A client connection with a read buffer; `buf[start..]` is unread.
struct Connection<'a> {
    stream: TcpStream,
    shared: &'a Shared,
    buf: Vec<u8>,
    start: usize,
}

impl<'a> Connection<'a> {
    fn new(stream: TcpStream, shared: &'a Shared) -> Self {
        Connection {
            stream,
            shared,
            buf: Vec::new(),
            start: 0,
        }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Appends at least one byte from the socket to the buffer.
    fn fill(&mut self) -> Result<(), ConnError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return Err(ConnError::Closed);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if is_retryable(&e) => continue,
                Err(_) => return Err(ConnError::Closed),
            }
        }
    }

    /// Reads one line (LF or CRLF terminated, terminator stripped). The line
    /// with its terminator may use at most `budget` bytes, which is reduced by
    /// what was consumed; beyond it the request is rejected with
    /// `too_long_status`.
    fn read_line(
        &mut self,
        budget: &mut usize,
        too_long_status: u16,
    ) -> Result<Vec<u8>, ConnError> {
        let mut searched = 0;
        loop {
            let unread = self.unread();
            if let Some(offset) = unread[searched..].iter().position(|&b| b == b'\n') {
                let consumed = searched + offset + 1;
                if consumed > *budget {
                    return Err(reject(too_long_status, "line too long"));
                }
                let mut line = unread[..consumed - 1].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.start += consumed;
                *budget -= consumed;
                return Ok(line);
            }
            searched = unread.len();
            if searched >= *budget {
                return Err(reject(too_long_status, "line too long"));
            }
            self.fill()?;
        }
    }

    /// Appends exactly `len` body bytes to `body`.
    fn read_exact_into(&mut self, body: &mut Vec<u8>, len: u64) -> Result<(), ConnError> {
        let mut remaining = usize::try_from(len).map_err(|_| reject(413, "body too large"))?;
        loop {
            let take = remaining.min(self.unread().len());
            body.extend_from_slice(&self.unread()[..take]);
            self.start += take;
            remaining -= take;
            if remaining == 0 {
                return Ok(());
            }
            self.fill()?;
        }
    }

    fn read_request(&mut self) -> Result<IncomingRequest, ConnError> {
        let mut head_budget = MAX_HEAD_BYTES;
        let mut request_line = Vec::new();
        for _ in 0..=MAX_LEADING_EMPTY_LINES {
            request_line = self.read_line(&mut head_budget, 414)?;
            if !request_line.is_empty() {
                break;
            }
        }
        let (method, target, http10) = parse_request_line(&request_line)
            .ok_or_else(|| reject(400, "malformed request line"))?;

        let mut headers = Vec::new();
        loop {
            let line = self.read_line(&mut head_budget, 431)?;
            if line.is_empty() {
                break;
            }
            headers.push(parse_header_line(&line).ok_or_else(|| reject(400, "malformed header"))?);
        }

        let transfer_codings = header_tokens(&headers, "transfer-encoding");
        let has_content_length = headers.iter().any(|(n, _)| n == "content-length");
        // A body framed both ways is a smuggling smell: decode it as chunked
        // (RFC 9112 §6.3) and close the connection afterwards.
        let mut close_after = false;
        let framing = if !transfer_codings.is_empty() {
            if transfer_codings.last().map(String::as_str) != Some("chunked") {
                return Err(reject(400, "transfer-encoding must end with chunked"));
            }
            close_after = has_content_length;
            BodyFraming::Chunked
        } else {
            BodyFraming::Length(content_length(&headers)?.unwrap_or(0))
        };
        if let BodyFraming::Length(len) = framing {
            if len > MAX_BODY_BYTES {
                return Err(reject(413, "body too large"));
            }
        }

        let body_expected = match framing {
            BodyFraming::Length(len) => len > 0,
            BodyFraming::Chunked => true,
        };
        let expects_continue = headers
            .iter()
            .any(|(n, v)| n == "expect" && v.eq_ignore_ascii_case("100-continue"));
        if expects_continue && body_expected && !http10 {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }

        let body = match framing {
            BodyFraming::Length(len) => {
                let mut body = Vec::with_capacity(len.min(1024 * 1024) as usize);
                self.read_exact_into(&mut body, len)?;
                body
            }
            BodyFraming::Chunked => self.read_chunked_body()?,
        };

        let connection_tokens = header_tokens(&headers, "connection");
        let has_token = |token: &str| connection_tokens.iter().any(|t| t == token);
        let keep_alive =
            !close_after && !has_token("close") && (!http10 || has_token("keep-alive"));

        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let received = ReceivedRequest {
            method,
            path: path.to_string(),
            query: query.to_string(),
            uri: target.clone(),
            headers,
            body,
        };
        Ok(IncomingRequest {
            received,
            http10,
            keep_alive,
        })
    }

    fn read_chunked_body(&mut self) -> Result<Vec<u8>, ConnError> {
        let mut body = Vec::new();
        loop {
            let mut line_budget = MAX_CHUNK_SIZE_LINE;
            let line = self.read_line(&mut line_budget, 400)?;
            let size =
                parse_chunk_size(&line).ok_or_else(|| reject(400, "malformed chunk size"))?;
            if size == 0 {
                break;
            }
            if body.len() as u64 + size > MAX_BODY_BYTES {
                return Err(reject(413, "body too large"));
            }
            self.read_exact_into(&mut body, size)?;
            let mut crlf_budget = 2;
            if !self.read_line(&mut crlf_budget, 400)?.is_empty() {
                return Err(reject(400, "chunk data longer than its size"));
            }
        }
        // Trailers are read and dropped.
        let mut trailer_budget = MAX_HEAD_BYTES;
        while !self.read_line(&mut trailer_budget, 431)?.is_empty() {}
        Ok(body)
    }

    /// Closes after an answer without resetting the connection: a close
    /// with unread input makes the kernel send RST, which can destroy the
    /// response before the client reads it.
    fn lingering_close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER_TIME;
        let mut scratch = [0u8; READ_CHUNK];
        let mut drained = 0;
        while drained < LINGER_BYTES && Instant::now() < deadline {
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            match self.stream.read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => drained += n,
                Err(e) if is_retryable(&e) => continue,
                Err(_) => return,
            }
        }
    }
}

fn is_retryable(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    // The read timeout only lets the thread notice the stop flag; idle
    // keep-alive connections stay open until the client or Drop closes them.
    let _ = stream.set_read_timeout(Some(POLL_INTERVAL));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let mut connection = Connection::new(stream, shared);
    loop {
        let request = match connection.read_request() {
            Ok(request) => request,
            Err(ConnError::Reject { status, reason }) => {
                let body = json!({ "error": reason, "status": status }).to_string();
                let response = encode_response(
                    &shared.id,
                    status,
                    "application/json",
                    body.as_bytes(),
                    true,
                    Some("close"),
                );
                if connection.stream.write_all(&response).is_ok() {
                    connection.lingering_close();
                }
                return;
            }
            Err(ConnError::Closed) => return,
        };
        let Some((response, cut_after)) = respond(shared, &request) else {
            return;
        };
        if let Some(bytes) = cut_after {
            let _ = connection
                .stream
                .write_all(&response[..bytes.min(response.len())]);
            let _ = connection.stream.shutdown(Shutdown::Both);
            return;
        }
        if connection.stream.write_all(&response).is_err() {
            return;
        }
        if !request.keep_alive {
            connection.lingering_close();
            return;
        }
    }
}

/// Builds the answer to `request` and where to cut it; `None` if the server
/// stopped meanwhile.
fn respond(shared: &Shared, request: &IncomingRequest) -> Option<(Vec<u8>, Option<usize>)> {
    let received = &request.received;
    let send_body = received.method != "HEAD";
    let connection_header = if !request.keep_alive {
        Some("close")
    } else if request.http10 {
        Some("keep-alive")
    } else {
        None
    };

    if matches!(received.method.as_str(), "GET" | "HEAD") && received.path == HEALTH_PATH {
        let (status, body) = if shared.healthy.load(Ordering::SeqCst) {
            (200, "ok")
        } else {
            (503, "unhealthy")
        };
        return Some((
            encode_response(
                &shared.id,
                status,
                "text/plain",
                body.as_bytes(),
                send_body,
                connection_header,
            ),
            None,
        ));
    }

    lock(&shared.requests).push(received.clone());

    if let Some(script) = &shared.script {
        let reply = script(received);
        if !sleep_unless_stopped(shared, reply.delay) {
            return None;
        }
        let status = valid_status(reply.status).unwrap_or(500);
        let content_type = reply
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map_or("application/octet-stream", |(_, value)| value.as_str());
        let mut response = encode_response(
            &shared.id,
            status,
            content_type,
            &reply.body,
            send_body,
            connection_header,
        );
        let extra: String = reply
            .headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("content-type"))
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        // After the status line.
        let at = response
            .windows(2)
            .position(|pair| pair == b"\r\n")
            .map_or(0, |i| i + 2);
        response.splice(at..at, extra.into_bytes());
        return Some((response, reply.cut_after));
    }

    if let Some(delay_ms) = received
        .header("x-echo-delay-ms")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms <= MAX_DELAY_MS)
    {
        if !sleep_unless_stopped(shared, Duration::from_millis(delay_ms)) {
            return None;
        }
    }

    let status = valid_status(shared.forced_status.load(Ordering::SeqCst))
        .or_else(|| {
            received
                .header("x-echo-status")
                .and_then(|v| v.parse::<u16>().ok())
                .and_then(valid_status)
        })
        .unwrap_or(200);
    let body = echo_json(&shared.id, received).to_string();
    Some((
        encode_response(
            &shared.id,
            status,
            "application/json",
            body.as_bytes(),
            send_body,
            connection_header,
        ),
        None,
    ))
}

/// Final statuses only: a 1xx would leave the client waiting for another
/// response.
fn valid_status(status: u16) -> Option<u16> {
    (200..=599).contains(&status).then_some(status)
}

/// Sleeps for `duration`; returns false early if the server is stopping.
fn sleep_unless_stopped(shared: &Shared, duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

fn echo_json(id: &str, request: &ReceivedRequest) -> Value {
    let mut headers = Map::new();
    for (name, value) in &request.headers {
        match headers.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    let header_list: Vec<Value> = request.headers.iter().map(|(n, v)| json!([n, v])).collect();
    json!({
        "upstream": id,
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "uri": request.uri,
        "headers": headers,
        "header_list": header_list,
        "body": String::from_utf8_lossy(&request.body),
        "body_length": request.body.len(),
    })
}

fn encode_response(
    id: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
    send_body: bool,
    connection: Option<&str>,
) -> Vec<u8> {
    // 204 and 304 responses end at the header block (RFC 9110 §6.4.1).
    let bodyless = status == 204 || status == 304;
    let safe_id: String = id.chars().filter(|c| !c.is_control()).collect();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\nx-echo-upstream: {safe_id}\r\n",
        reason_phrase(status)
    );
    if !bodyless {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    if let Some(connection) = connection {
        head.push_str(&format!("connection: {connection}\r\n"));
    }
    head.push_str("\r\n");
    let mut response = head.into_bytes();
    if send_body && !bodyless {
        response.extend_from_slice(body);
    }
    response
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        // The reason phrase is optional (RFC 9112 §4).
        _ => "",
    }
}

/// tchar from RFC 9110 §5.6.2.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits `METHOD TARGET HTTP/1.x`; returns (method, target, is HTTP/1.0).
fn parse_request_line(line: &[u8]) -> Option<(String, String, bool)> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || method.is_empty() || !method.bytes().all(is_token_byte) {
        return None;
    }
    if target.is_empty() || target.chars().any(char::is_control) {
        return None;
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return None,
    };
    Some((method.to_string(), target.to_string(), http10))
}

/// Parses `name: value` into (lower-cased name, trimmed value). Leading
/// whitespace (obsolete line folding) and space before the colon are rejected.
fn parse_header_line(line: &[u8]) -> Option<(String, String)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, rest) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().copied().all(is_token_byte) {
        return None;
    }
    let value = rest.trim_ascii();
    if value.iter().any(|&b| b == 0 || b == b'\r') {
        return None;
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    Some((name, String::from_utf8_lossy(value).into_owned()))
}

/// The comma-separated, lower-cased tokens of every `name` header.
fn header_tokens(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The declared Content-Length; all values (including list forms like
/// `5, 5`) must agree.
fn content_length(headers: &[(String, String)]) -> Result<Option<u64>, ConnError> {
    let mut length = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
        for item in value.split(',') {
            let item = item.trim();
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(reject(400, "malformed content-length"));
            }
            // All digits, so failure can only mean overflow.
            let parsed = item
                .parse::<u64>()
                .map_err(|_| reject(413, "body too large"))?;
            if length.is_some_and(|previous| previous != parsed) {
                return Err(reject(400, "conflicting content-length"));
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

/// Parses `HEX[;extensions]`.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|&b| b == b';').next()?.trim_ascii();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).expect("response body is JSON")
        }
    }

    /// A raw HTTP/1.1 client over one connection.
    struct Client {
        reader: BufReader<TcpStream>,
    }

    impl Client {
        fn connect(addr: SocketAddr) -> Client {
            let stream = TcpStream::connect(addr).expect("connect to echo server");
            stream
                .set_read_timeout(Some(CLIENT_TIMEOUT))
                .expect("set timeout");
            Client {
                reader: BufReader::new(stream),
            }
        }

        fn send(&mut self, raw: &[u8]) {
            self.reader.get_mut().write_all(raw).expect("send request");
        }

        fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
            let mut status_line = String::new();
            self.reader
                .read_line(&mut status_line)
                .expect("read status line");
            let status = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                self.reader.read_line(&mut line).expect("read header");
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').expect("header has a colon");
                headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
            (status, headers)
        }

        /// Reads one response; `has_body` is false for answers to HEAD.
        fn response_with(&mut self, has_body: bool) -> Response {
            let (status, headers) = self.read_head();
            let mut response = Response {
                status,
                headers,
                body: Vec::new(),
            };
            if has_body {
                let length: usize = response
                    .header("content-length")
                    .expect("content-length present")
                    .parse()
                    .expect("numeric content-length");
                response.body = vec![0; length];
                self.reader
                    .read_exact(&mut response.body)
                    .expect("read body");
            }
            response
        }

        fn response(&mut self) -> Response {
            self.response_with(true)
        }

        /// True if the server closed the connection (EOF or reset).
        fn is_closed(&mut self) -> bool {
            let mut byte = [0u8; 1];
            matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
        }
    }

    fn exchange(server: &EchoServer, raw: &[u8]) -> Response {
        let mut client = Client::connect(server.addr());
        client.send(raw);
        client.response()
    }

    fn get(server: &EchoServer, path: &str) -> Response {
        exchange(
            server,
            format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").as_bytes(),
        )
    }

    #[test]
    fn get_with_query_is_echoed() {
        let server = EchoServer::start("alpha").expect("start");
        let response = exchange(
            &server,
            b"GET /things/1?a=1&b=two HTTP/1.1\r\nHost: example.test\r\nX-Multi: one\r\nx-multi: two\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.header("x-echo-upstream"), Some("alpha"));
        let echoed = response.json();
        assert_eq!(echoed["upstream"], "alpha");
        assert_eq!(echoed["method"], "GET");
        assert_eq!(echoed["path"], "/things/1");
        assert_eq!(echoed["query"], "a=1&b=two");
        assert_eq!(echoed["uri"], "/things/1?a=1&b=two");
        assert_eq!(echoed["headers"]["host"], "example.test");
        assert_eq!(echoed["headers"]["x-multi"], "one, two");
        assert_eq!(echoed["header_list"][1], json!(["x-multi", "one"]));
        assert_eq!(echoed["header_list"][2], json!(["x-multi", "two"]));
        assert_eq!(echoed["body"], "");
        assert_eq!(echoed["body_length"], 0);

        let recorded = server.requests();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].path, "/things/1");
        assert_eq!(recorded[0].header("X-MULTI"), Some("one"));
        assert_eq!(server.id(), "alpha");
        assert_eq!(server.port(), server.addr().port());
    }

    #[test]
    fn post_with_content_length_body() {
        let server = EchoServer::start("post").expect("start");
        let response = exchange(
            &server,
            b"POST /submit HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world",
        );
        assert_eq!(response.status, 200);
        let echoed = response.json();
        assert_eq!(echoed["method"], "POST");
        assert_eq!(echoed["body"], "hello world");
        assert_eq!(echoed["body_length"], 11);
        assert_eq!(server.requests()[0].body, b"hello world");
    }

    #[test]
    fn chunked_body_is_decoded_and_trailers_ignored() {
        let server = EchoServer::start("chunked").expect("start");
        let response = exchange(
            &server,
            b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: yes\r\n\r\n",
        );
        assert_eq!(response.status, 200);
        let echoed = response.json();
        assert_eq!(echoed["body"], "hello world");
        assert_eq!(echoed["body_length"], 11);
        assert!(server.requests()[0].header("x-trailer").is_none());
    }

    #[test]
    fn keep_alive_serves_several_requests_on_one_connection() {
        let server = EchoServer::start("ka").expect("start");
        let mut client = Client::connect(server.addr());
        client.send(b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
        let first = client.response();
        client.send(b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n");
        let second = client.response();
        assert_eq!(first.json()["path"], "/first");
        assert_eq!(first.json()["body"], "abc");
        assert_eq!(second.json()["path"], "/second");
        assert!(first.header("connection").is_none());

        client.send(b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let last = client.response();
        assert_eq!(last.header("connection"), Some("close"));
        assert!(client.is_closed());
        assert_eq!(server.request_count(), 3);
    }

    #[test]
    fn head_gets_headers_without_body() {
        let server = EchoServer::start("head").expect("start");
        let mut client = Client::connect(server.addr());
        client.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
        let head = client.response_with(false);
        assert_eq!(head.status, 200);
        let length: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("length");
        assert!(length > 0);
        // Had a body been sent, this would read it instead of the next response.
        client.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(client.response().json()["path"], "/after");
    }

    #[test]
    fn expect_continue_gets_interim_response() {
        let server = EchoServer::start("expect").expect("start");
        let mut client = Client::connect(server.addr());
        client.send(
            b"PUT /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        );
        let (interim, _) = client.read_head();
        assert_eq!(interim, 100);
        client.send(b"data");
        let response = client.response();
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["body"], "data");
    }

    #[test]
    fn echo_status_header_and_forced_status() {
        let server = EchoServer::start("status").expect("start");
        let raw = b"GET /s HTTP/1.1\r\nHost: t\r\nx-echo-status: 418\r\nConnection: close\r\n\r\n";
        let response = exchange(&server, raw);
        assert_eq!(response.status, 418);
        assert_eq!(response.json()["path"], "/s");

        let invalid = exchange(
            &server,
            b"GET /s HTTP/1.1\r\nx-echo-status: 999\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(invalid.status, 200);

        server.set_forced_status(Some(503));
        let forced = exchange(&server, raw);
        assert_eq!(forced.status, 503);
        assert_eq!(forced.json()["path"], "/s");
        assert_eq!(get(&server, "/other").status, 503);

        server.set_forced_status(None);
        assert_eq!(exchange(&server, raw).status, 418);
        assert_eq!(get(&server, "/other").status, 200);
    }

    #[test]
    fn no_content_status_sends_no_body() {
        let server = EchoServer::start("nc").expect("start");
        let mut client = Client::connect(server.addr());
        client.send(b"GET /n HTTP/1.1\r\nx-echo-status: 204\r\n\r\n");
        let response = client.response_with(false);
        assert_eq!(response.status, 204);
        assert!(response.header("content-length").is_none());
        client.send(b"GET /next HTTP/1.1\r\n\r\n");
        assert_eq!(client.response().json()["path"], "/next");
    }

    #[test]
    fn delay_header_delays_the_response() {
        let server = EchoServer::start("slow").expect("start");
        let started = Instant::now();
        let response = exchange(
            &server,
            b"GET /d HTTP/1.1\r\nx-echo-delay-ms: 300\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(response.status, 200);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn healthz_follows_health_flag_and_is_not_recorded() {
        let server = EchoServer::start("health").expect("start");
        server.set_forced_status(Some(500));
        let healthy = get(&server, "/healthz");
        assert_eq!(healthy.status, 200);
        assert_eq!(healthy.body, b"ok");

        server.set_healthy(false);
        let unhealthy = get(&server, "/healthz");
        assert_eq!(unhealthy.status, 503);
        assert_eq!(unhealthy.body, b"unhealthy");

        server.set_healthy(true);
        assert_eq!(get(&server, "/healthz").status, 200);
        assert_eq!(server.request_count(), 0);
        assert!(server.requests().is_empty());
    }

    #[test]
    fn garbage_gets_400_and_server_keeps_serving() {
        let server = EchoServer::start("garbage").expect("start");
        for garbage in [
            &b"this is not http\r\n\r\n"[..],
            b"\x00\x01\x02\r\n\r\n",
            b"GET /x HTTP/9.9\r\n\r\n",
            b"GET /x HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /x HTTP/1.1\r\n folded: header\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut client = Client::connect(server.addr());
            client.send(garbage);
            let response = client.response();
            assert_eq!(response.status, 400, "for {garbage:?}");
            assert_eq!(response.header("connection"), Some("close"));
            assert!(client.is_closed());
        }
        assert_eq!(server.request_count(), 0);
        assert_eq!(get(&server, "/still-alive").status, 200);
    }

    #[test]
    fn oversized_head_and_body_are_refused() {
        let server = EchoServer::start("limits").expect("start");
        let big_header = format!(
            "GET /big HTTP/1.1\r\nx-big: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        );
        assert_eq!(exchange(&server, big_header.as_bytes()).status, 431);

        let big_body = b"POST /big HTTP/1.1\r\nContent-Length: 17000000\r\n\r\n";
        assert_eq!(exchange(&server, big_body).status, 413);
        assert_eq!(server.request_count(), 0);
        assert_eq!(get(&server, "/ok").status, 200);
    }

    #[test]
    fn drop_stops_the_server_promptly() {
        let server = EchoServer::start("gone").expect("start");
        let addr = server.addr();
        let mut idle = Client::connect(addr);
        idle.send(b"GET /idle HTTP/1.1\r\n\r\n");
        assert_eq!(idle.response().status, 200);
        // A request stuck in a long delay must not hold Drop up either.
        let mut slow = Client::connect(addr);
        slow.send(b"GET /slow HTTP/1.1\r\nx-echo-delay-ms: 60000\r\n\r\n");
        while server.request_count() < 2 {
            thread::sleep(Duration::from_millis(5));
        }

        let started = Instant::now();
        drop(server);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "drop took {:?}",
            started.elapsed()
        );
        assert!(idle.is_closed());
        assert!(slow.is_closed());
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn parsers_reject_edge_cases() {
        assert_eq!(parse_chunk_size(b"1A"), Some(26));
        assert_eq!(parse_chunk_size(b"0 ; name=value"), Some(0));
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"-1"), None);
        assert_eq!(parse_chunk_size(b"ffffffffffffffffff"), None);
        assert!(parse_request_line(b"GET / HTTP/1.1").is_some());
        assert!(parse_request_line(b"GET  / HTTP/1.1").is_none());
        assert!(parse_request_line(b"G(T / HTTP/1.1").is_none());
        assert_eq!(
            parse_header_line(b"X-A:  spaced value \t"),
            Some(("x-a".to_string(), "spaced value".to_string()))
        );
        assert!(parse_header_line(b"x-a : v").is_none());
        assert!(parse_header_line(b": v").is_none());
    }
}
