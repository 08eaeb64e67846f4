//! The native module's own connections (Redis, Kafka): the thread that
//! serves each target, and where they hand their answers: a [`Mailbox`]
//! per stream or configuration, emptied on its owner's thread when Envoy's
//! scheduler runs it.

use gateway_common::sync::lock;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;

/// The threads serving targets of one kind, by target.
pub(crate) type Servers<T, J> = OnceLock<Mutex<HashMap<T, Arc<Mutex<Sender<J>>>>>>;

/// The sending end of the thread of `servers` that serves `target`,
/// started on first use with `serve`. A thread that cannot start is not
/// kept: the jobs sent meanwhile find no receiver (their senders answer
/// them as not sent), and the next use tries again.
pub(crate) fn server_of<T, J>(
    servers: &'static Servers<T, J>,
    target: &T,
    name: &str,
    serve: impl FnOnce(T, Receiver<J>) + Send + 'static,
) -> Arc<Mutex<Sender<J>>>
where
    T: Clone + Eq + Hash + Send + 'static,
    J: Send + 'static,
{
    let mut servers = lock(servers.get_or_init(Default::default));
    if let Some(sender) = servers.get(target) {
        return Arc::clone(sender);
    }
    let (sender, jobs) = mpsc::channel();
    let owned = target.clone();
    let started = thread::Builder::new()
        .name(name.into())
        .spawn(move || serve(owned, jobs));
    let sender = Arc::new(Mutex::new(sender));
    match started {
        Ok(_) => {
            servers.insert(target.clone(), Arc::clone(&sender));
        }
        Err(error) => log(&format!("cannot start the thread `{name}`: {error}")),
    }
    sender
}

/// A warning in Envoy's log (on the terminal in unit tests).
pub(crate) fn log(message: &str) {
    if cfg!(test) {
        eprintln!("{message}");
    } else {
        crate::envoy::log(
            crate::envoy::level::WARN,
            &format!("native module: {message}"),
        );
    }
}

/// The scheduler event of a mailbox with answers (0: a wake or a tick).
pub const ANSWERS: u64 = 1;

/// What a command's answer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The server's reply: Redis's; for a Kafka batch, empty once every
    /// record is acknowledged.
    Reply(Vec<u8>),
    /// None in time: the command was written, and may have run.
    Late,
    /// The command was never written (no connection): it did not run.
    Unsent,
}

/// Wakes the mailbox's owner on its thread (commits its scheduler with
/// [`ANSWERS`]); dropped on the owner's thread when the mailbox closes.
pub(crate) type Waker = Box<dyn Fn() + Send + Sync>;

/// The answers of one stream's (or one configuration's) commands, and how
/// to wake its thread. Closed when its owner ends: later answers are
/// dropped, and no scheduler is used after its owner deleted it.
pub(crate) struct Mailbox(Mutex<MailboxState>);

struct MailboxState {
    waker: Option<Waker>,
    answers: Vec<(u32, Answer)>,
}

impl Mailbox {
    pub fn new(waker: Waker) -> Arc<Self> {
        Arc::new(Self(Mutex::new(MailboxState {
            waker: Some(waker),
            answers: Vec::new(),
        })))
    }

    pub fn deliver(&self, token: u32, answer: Answer) {
        let mut state = lock(&self.0);
        if state.waker.is_some() {
            state.answers.push((token, answer));
        }
        if let Some(waker) = &state.waker {
            waker();
        }
    }

    /// The answers in, oldest first.
    pub fn take(&self) -> Vec<(u32, Answer)> {
        std::mem::take(&mut lock(&self.0).answers)
    }

    /// The oldest answer in; when more are in, the owner is woken again
    /// for them (a stream handles one answer per wake: what it does with
    /// one may end it).
    pub fn take_one(&self) -> Option<(u32, Answer)> {
        let mut state = lock(&self.0);
        if state.answers.is_empty() {
            return None;
        }
        let first = state.answers.remove(0);
        if let (false, Some(waker)) = (state.answers.is_empty(), &state.waker) {
            waker();
        }
        Some(first)
    }

    /// No more answers; the waker is dropped here, on the owner's thread.
    pub fn close(&self) {
        let waker = {
            let mut state = lock(&self.0);
            state.answers.clear();
            state.waker.take()
        };
        drop(waker);
    }
}

/// A server for the connections' tests that accepts connections and never
/// answers (nor closes them); its port.
#[cfg(test)]
pub(crate) fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}
