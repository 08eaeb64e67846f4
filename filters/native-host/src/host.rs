//! The host's state between Envoy's calls and how a hook runs the module:
//! the module, the process's shared data, each stream ([`NativeStream`]),
//! the streams that may be woken, and the answers that came while module
//! code was running (delivered when it has returned).

use crate::abi::header_type;
use crate::envoy::{self, EnvoyAnswer, EnvoyFilter, OwnedAnswer, StreamScheduler};
use crate::mailbox::{self, Mailbox};
use crate::request::{After, NativeRequest, Reply};
use crate::root::{self, take_token, with_root, Config};
use crate::{Module, ModuleRequest};
use gateway_common::hosting::RequestHost;
use gateway_common::store::MemoryStore;
use gateway_common::stream::{CallAnswer, Level};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

pub(crate) static MODULE: OnceLock<&'static dyn Module> = OnceLock::new();

/// The state every worker shares (Envoy's shared data, in process memory).
pub(crate) fn shared_data() -> &'static MemoryStore {
    static SHARED: OnceLock<MemoryStore> = OnceLock::new();
    SHARED.get_or_init(MemoryStore::new)
}

fn envoy_level(level: Level) -> u32 {
    match level {
        Level::Trace => envoy::level::TRACE,
        Level::Debug => envoy::level::DEBUG,
        Level::Info => envoy::level::INFO,
        Level::Warn => envoy::level::WARN,
        Level::Error => envoy::level::ERROR,
    }
}

pub(crate) fn logs(level: Level) -> bool {
    envoy::log_enabled(envoy_level(level))
}

/// Writes to Envoy's `dynamic_modules` log; formats nothing when the level
/// is off.
pub(crate) fn log(level: Level, message: std::fmt::Arguments<'_>) {
    let level = envoy_level(level);
    if envoy::log_enabled(level) {
        envoy::log(level, &message.to_string());
    }
}

thread_local! {
    /// How deep in module code this thread is.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Answers Envoy gave while module code was running (a call that
    /// failed at once): delivered when it has returned.
    static DEFERRED: RefCell<Vec<Deferred>> = const { RefCell::new(Vec::new()) };
    /// The schedulers of this worker's streams that may be woken, by id.
    static WAKEABLE: RefCell<HashMap<u32, StreamScheduler>> = RefCell::new(HashMap::new());
    static NEXT_STREAM: Cell<u32> = const { Cell::new(0) };
}

/// Runs module code, catching a panic; answers that come meanwhile wait.
pub(crate) fn guarded<R>(code: impl FnOnce() -> R) -> Result<R, ()> {
    DEPTH.with(|depth| depth.set(depth.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(code));
    DEPTH.with(|depth| depth.set(depth.get() - 1));
    result.map_err(|_| ())
}

fn in_module_code() -> bool {
    DEPTH.with(Cell::get) > 0
}

/// Wakes a stream of this worker (its scheduled hook runs soon).
pub(crate) fn wake(stream_id: u32) {
    WAKEABLE.with(|wakeable| {
        if let Some(scheduler) = wakeable.borrow().get(&stream_id) {
            scheduler.commit(envoy::WAKE);
        }
    });
}

/// Whose call an answer that had to wait is for.
enum AnswerFor {
    /// A stream, by its module pointer, and Envoy's filter.
    Stream(*mut NativeStream, EnvoyFilter),
    /// A configuration's main root.
    Config(*const Config),
}

struct Deferred {
    owner: AnswerFor,
    callout: u64,
    answer: OwnedAnswer,
}

/// Delivers the answers that waited, once no module code runs.
fn deliver_deferred() {
    if in_module_code() {
        return;
    }
    loop {
        let next = DEFERRED.with(|deferred| {
            let mut deferred = deferred.borrow_mut();
            (!deferred.is_empty()).then(|| deferred.remove(0))
        });
        let Some(Deferred {
            owner,
            callout,
            answer,
        }) = next
        else {
            return;
        };
        match owner {
            // SAFETY: a deferred answer of a stream is dropped when the
            // stream is destroyed (see `stream_destroy`), so the pointer is
            // live.
            AnswerFor::Stream(stream, envoy) => unsafe {
                stream_answer(stream, envoy, callout, &answer)
            },
            // SAFETY: Envoy destroys a configuration only after its streams
            // and never during its own hooks, which is where this runs.
            AnswerFor::Config(config) => unsafe { config_answer(&*config, callout, &answer) },
        }
    }
}

/// One stream: its module request and what the host keeps for it.
pub(crate) struct NativeStream {
    config: *const Config,
    /// Gone once its code panicked: Envoy's later calls pass through.
    request: Option<Box<dyn ModuleRequest>>,
    id: u32,
    started_nanos: u64,
    callouts: Vec<(u64, u32)>,
    /// Where its Redis commands' answers go (made with its first command).
    mailbox: Option<Arc<Mailbox>>,
    /// Other streams may wake it: its scheduler is made in its first hook
    /// (where Envoy's dispatcher is surely set).
    wakes: bool,
    registered: bool,
    completed: bool,
}

/// Runs `code` with the stream behind `stream`.
///
/// # Safety
/// `stream` is the pointer filter-new returned, not yet destroyed. The host
/// makes a reference to a stream only here, and nothing in `code` calls
/// back into Envoy in a way that runs this stream's hooks: replies and
/// resumes are done after `code` returns (see [`After`]), and an answer
/// Envoy gives while module code runs waits ([`stream_callout_done`]). So
/// the reference is the only one while it lives.
unsafe fn with_stream<R>(
    stream: *mut NativeStream,
    code: impl FnOnce(&mut NativeStream) -> R,
) -> R {
    code(&mut *stream)
}

/// The hooks of a stream the module takes part in.
#[derive(Clone, Copy)]
pub(crate) enum Hook {
    RequestHeaders { end_of_stream: bool },
    RequestBody { end_of_stream: bool },
    RequestTrailers,
    ResponseHeaders { end_of_stream: bool },
    ResponseBody { end_of_stream: bool },
    ResponseTrailers,
}

impl Hook {
    fn in_request(self) -> bool {
        matches!(
            self,
            Hook::RequestHeaders { .. } | Hook::RequestBody { .. } | Hook::RequestTrailers
        )
    }
}

pub(crate) fn stream_new(config: &Config) -> Option<Box<NativeStream>> {
    root::delete_dead_roots();
    let made = with_root(config, true, |root, _| (root.request(), root.wakes()));
    let Some((Some(request), wakes)) = made else {
        return None;
    };
    let id = NEXT_STREAM.with(|next| {
        let id = next.get().wrapping_add(1).max(1);
        next.set(id);
        id
    });
    let started_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Some(Box::new(NativeStream {
        config,
        request: Some(request),
        id,
        started_nanos,
        callouts: Vec::new(),
        mailbox: None,
        wakes,
        registered: false,
        completed: false,
    }))
}

/// What running a stream's code came to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// The stream's code is gone (it panicked before): the stream passes.
    Absent,
    /// It panicked now; `answered` with the internal error (when the
    /// request was still coming in).
    Panicked { answered: bool },
    /// Whether the request goes on.
    Done(bool),
}

/// Runs `code` on the stream's module request with the stream's host; what
/// it came to, and the reply to send once the stream is no longer
/// borrowed.
fn run(
    stream: &mut NativeStream,
    envoy: Option<EnvoyFilter>,
    in_request: bool,
    in_body: Option<envoy::Direction>,
    code: impl FnOnce(&mut dyn ModuleRequest, &mut dyn RequestHost) -> bool,
) -> (Ran, After) {
    // SAFETY: Envoy destroys a configuration only after its streams.
    let config = unsafe { &*stream.config };
    let mut after = After::default();
    let Some(mut request) = stream.request.take() else {
        return (Ran::Absent, after);
    };
    if let (true, false, Some(envoy)) = (stream.wakes, stream.registered, envoy) {
        stream.registered = true;
        if let Some(scheduler) = envoy.scheduler() {
            WAKEABLE.with(|wakeable| wakeable.borrow_mut().insert(stream.id, scheduler));
        }
    }
    let mut host = NativeRequest {
        envoy,
        config,
        id: stream.id,
        started_nanos: stream.started_nanos,
        in_request_body: in_body == Some(envoy::Direction::Request),
        in_response_body: in_body == Some(envoy::Direction::Response),
        callouts: &mut stream.callouts,
        mailbox: &mut stream.mailbox,
        after: &mut after,
    };
    let result = guarded(|| code(&mut *request, &mut host));
    let ran = match result {
        Ok(go_on) => {
            stream.request = Some(request);
            Ran::Done(go_on)
        }
        Err(()) => {
            // Its policies let go of what they hold for other requests
            // (requests waiting for its answer), then it goes.
            let _ = guarded(|| request.on_end(&mut host));
            let _ = guarded(|| drop(request));
            stream.callouts.clear();
            after = After::default();
            envoy::log(
                envoy::level::CRITICAL,
                "native module: a policy failed on this request (see the panic above); it is answered with an internal error",
            );
            if in_request {
                after.reply = envoy.and_then(internal_error);
            }
            Ran::Panicked {
                answered: after.reply.is_some(),
            }
        }
    };
    (ran, after)
}

fn internal_error(envoy: EnvoyFilter) -> Option<Reply> {
    let module = MODULE.get()?;
    let request_id = envoy.header(header_type::REQUEST_HEADER, "x-request-id");
    let reply = module.internal_error(request_id.as_deref());
    Some(Reply {
        status: reply.status,
        headers: reply.headers,
        body: reply.body,
        details: Some("gateway_internal_error"),
    })
}

/// Runs a hook Envoy called; Envoy's status value (0: continue, 1: stop
/// for every hook; a request answered or panicked stops too).
///
/// # Safety
/// As [`with_stream`].
pub(crate) unsafe fn stream_hook(stream: *mut NativeStream, envoy: EnvoyFilter, hook: Hook) -> u32 {
    let in_body = match hook {
        Hook::RequestBody { .. } => Some(envoy::Direction::Request),
        Hook::ResponseBody { .. } => Some(envoy::Direction::Response),
        _ => None,
    };
    let (ran, after) = with_stream(stream, |stream| {
        run(
            stream,
            Some(envoy),
            hook.in_request(),
            in_body,
            |request, host| match hook {
                Hook::RequestHeaders { end_of_stream } => {
                    request.on_request_headers(host, end_of_stream)
                }
                Hook::RequestBody { end_of_stream } => {
                    let size = envoy.body_size(envoy::Direction::Request, true);
                    request.on_request_body(host, size, end_of_stream)
                }
                Hook::RequestTrailers => request.on_request_trailers(host),
                Hook::ResponseHeaders { end_of_stream } => {
                    request.on_response_headers(host, end_of_stream)
                }
                Hook::ResponseBody { end_of_stream } => {
                    let size = envoy.body_size(envoy::Direction::Response, true);
                    request.on_response_body(host, size, end_of_stream)
                }
                Hook::ResponseTrailers => request.on_response_trailers(host),
            },
        )
    });
    after.run(Some(envoy));
    deliver_deferred();
    match ran {
        Ran::Absent | Ran::Done(true) | Ran::Panicked { answered: false } => 0,
        Ran::Done(false) | Ran::Panicked { answered: true } => 1,
    }
}

/// Sends what a stream's code asked for outside Envoy's request hooks (an
/// answer, a wake): its reply, or the request resumed.
fn conclude(envoy: EnvoyFilter, ran: Ran, after: After) {
    after.run(Some(envoy));
    if ran == Ran::Done(true) {
        envoy.continue_decoding();
    }
}

/// The answer to a stream's call (delivered later if module code runs).
///
/// # Safety
/// As [`with_stream`].
pub(crate) unsafe fn stream_callout_done(
    stream: *mut NativeStream,
    envoy: EnvoyFilter,
    callout: u64,
    answer: &EnvoyAnswer<'_>,
) {
    if in_module_code() {
        DEFERRED.with(|deferred| {
            deferred.borrow_mut().push(Deferred {
                owner: AnswerFor::Stream(stream, envoy),
                callout,
                answer: answer.copied(),
            })
        });
        return;
    }
    stream_answer(stream, envoy, callout, answer);
    deliver_deferred();
}

/// # Safety
/// As [`with_stream`].
unsafe fn stream_answer(
    stream: *mut NativeStream,
    envoy: EnvoyFilter,
    callout: u64,
    answer: &dyn CallAnswer,
) {
    let ran = with_stream(stream, |stream| {
        let token = take_token(&mut stream.callouts, callout)?;
        Some(run(stream, Some(envoy), true, None, |request, host| {
            request.on_call_answer(host, token, answer)
        }))
    });
    if let Some((ran, after)) = ran {
        conclude(envoy, ran, after);
    }
}

/// Another stream woke this one (`envoy::WAKE`), or answers of its Redis
/// commands are in (`mailbox::ANSWERS`).
///
/// # Safety
/// As [`with_stream`].
pub(crate) unsafe fn stream_scheduled(stream: *mut NativeStream, envoy: EnvoyFilter, event: u64) {
    if event == mailbox::ANSWERS {
        // One answer per wake: concluding may end the stream (and free it).
        let ran = with_stream(stream, |stream| {
            if stream.completed {
                return None;
            }
            let (token, answer) = stream.mailbox.as_ref()?.take_one()?;
            let answer = StoreAnswer(answer);
            Some(run(stream, Some(envoy), true, None, |request, host| {
                request.on_call_answer(host, token, &answer)
            }))
        });
        if let Some((ran, after)) = ran {
            conclude(envoy, ran, after);
        }
    } else {
        let (ran, after) = with_stream(stream, |stream| {
            run(stream, Some(envoy), true, None, |request, host| {
                request.on_wake(host)
            })
        });
        conclude(envoy, ran, after);
    }
    deliver_deferred();
}

/// A Redis reply (or a Kafka batch's outcome) as a call's answer: the reply
/// is the body; no status when none came, and not sent when the command
/// was never written.
struct StoreAnswer(mailbox::Answer);

impl CallAnswer for StoreAnswer {
    fn status(&self) -> Option<u32> {
        matches!(self.0, mailbox::Answer::Reply(_)).then_some(200)
    }

    fn header(&self, _name: &str) -> Option<String> {
        None
    }

    fn body_size(&self) -> usize {
        match &self.0 {
            mailbox::Answer::Reply(reply) => reply.len(),
            _ => 0,
        }
    }

    fn body(&self) -> Vec<u8> {
        match &self.0 {
            mailbox::Answer::Reply(reply) => reply.clone(),
            _ => Vec::new(),
        }
    }

    fn not_sent(&self) -> bool {
        self.0 == mailbox::Answer::Unsent
    }
}

/// The stream is over: the module logs it, then lets go of it.
///
/// # Safety
/// As [`with_stream`].
pub(crate) unsafe fn stream_complete(stream: *mut NativeStream, envoy: EnvoyFilter) {
    with_stream(stream, |stream| {
        if std::mem::replace(&mut stream.completed, true) {
            return;
        }
        // Replies are moot now: what the runs ask for is dropped.
        let _ = run(stream, Some(envoy), false, None, |request, host| {
            request.on_log(host);
            true
        });
        let _ = run(stream, Some(envoy), false, None, |request, host| {
            request.on_end(host);
            true
        });
    });
    deliver_deferred();
}

/// The stream goes (Envoy's filter is gone already): the module lets go of
/// it if it has not yet, and so does the host.
pub(crate) fn stream_destroy(mut stream: Box<NativeStream>) {
    let pointer: *mut NativeStream = &mut *stream;
    DEFERRED.with(|deferred| {
        deferred
            .borrow_mut()
            .retain(|answer| !matches!(answer.owner, AnswerFor::Stream(s, _) if s == pointer))
    });
    WAKEABLE.with(|wakeable| wakeable.borrow_mut().remove(&stream.id));
    if let Some(mailbox) = stream.mailbox.take() {
        mailbox.close();
    }
    if !stream.completed {
        let _ = run(&mut stream, None, false, None, |request, host| {
            request.on_end(host);
            true
        });
    }
    if let Some(request) = stream.request.take() {
        let _ = guarded(|| drop(request));
    }
    deliver_deferred();
}

/// The answer to a call of a configuration's main root.
pub(crate) fn config_callout_done(config: &Config, callout: u64, answer: &EnvoyAnswer<'_>) {
    if in_module_code() {
        let config: *const Config = config;
        DEFERRED.with(|deferred| {
            deferred.borrow_mut().push(Deferred {
                owner: AnswerFor::Config(config),
                callout,
                answer: answer.copied(),
            })
        });
        return;
    }
    config_answer(config, callout, answer);
    deliver_deferred();
}

fn config_answer(config: &Config, callout: u64, answer: &dyn CallAnswer) {
    let Some(token) = config.take_callout(callout) else {
        return;
    };
    with_root(config, false, |root, host| {
        root.on_call_answer(token, answer, host)
    });
}

/// The timer's tick (`envoy::WAKE`), or answers of the main root's Redis
/// commands and Kafka batches (`mailbox::ANSWERS`).
pub(crate) fn config_scheduled(config: &Config, event: u64) {
    if event == mailbox::ANSWERS {
        let answers = config.mailbox.as_ref().map(|mailbox| mailbox.take());
        for (token, answer) in answers.unwrap_or_default() {
            let answer = StoreAnswer(answer);
            with_root(config, false, |root, host| {
                root.on_call_answer(token, &answer, host)
            });
        }
    } else {
        root::config_tick(config);
    }
    deliver_deferred();
}
