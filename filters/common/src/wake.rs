//! Waking one request from another on the same worker: ext-auth's waiting
//! requests, when the request that asked the authorizer for them has the
//! answer.
//!
//! A request context that may be woken is wrapped in a [`WakeableContext`],
//! known by its context id. Another context asks for a wake with
//! [`wake_later`]; the wakes run when that context's callback is over
//! (the wrapper sees to it), and the woken context is shown [`WAKE_TOKEN`]
//! in `on_http_call_response`, with the host acting on it
//! (`set_effective_context`).
//!
//! - Under Envoy's Wasm host they run in a callback of the worker's root
//!   (the asking context enqueues to the root's wake queue). Envoy makes
//!   every HTTP call from the root and the SDK answers it to the context
//!   whose callback made it: a call a woken context makes in a root
//!   callback is answered to the root, which hands it on
//!   ([`forward_call_answer`]). Made in another request's callback, it
//!   would be answered to that request, which may be gone by then.

use crate::host::random_u64;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, Status};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// The token a woken context is shown in `on_http_call_response` (Envoy's
/// tokens count up from 1).
pub const WAKE_TOKEN: u32 = u32::MAX - 1;

type Shared = Rc<RefCell<Box<dyn HttpContext>>>;
type Registered = Weak<RefCell<Box<dyn HttpContext>>>;

thread_local! {
    static WAKEABLE: RefCell<HashMap<u32, Registered>> = RefCell::new(HashMap::new());
    static PENDING: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static QUEUE: Cell<Option<u32>> = const { Cell::new(None) };
    /// The worker's queue name, drawn once per VM.
    static QUEUE_NAME: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The queue holds a wake signal the root has not read yet.
    static SIGNALLED: Cell<bool> = const { Cell::new(false) };
    /// The context being woken (its calls are answered to the root).
    static WAKING: Cell<Option<u32>> = const { Cell::new(None) };
    static CALL_OWNERS: RefCell<HashMap<u32, u32>> = RefCell::new(HashMap::new());
}

/// Wakes `context_id` once the current callback is over.
pub fn wake_later(context_id: u32) {
    PENDING.with(|pending| pending.borrow_mut().push(context_id));
}

/// Opens the worker's wake queue; call from every `on_configure` of the
/// root. A reconfigured VM gets a new root: registering the name again
/// makes Envoy signal that root.
pub fn open_wake_queue() {
    let name = QUEUE_NAME.with(|name| {
        name.borrow_mut()
            .get_or_insert_with(|| format!("gw.wake.{:016x}", random_u64()))
            .clone()
    });
    QUEUE.set(hostcalls::register_shared_queue(&name).ok());
    // A signal sent to a root that is gone is never read.
    SIGNALLED.set(false);
}

/// The root's `on_queue_ready`: whether it was the wake queue (whose
/// wakes then ran).
pub fn on_queue_ready(queue_id: u32) -> bool {
    if QUEUE.get() != Some(queue_id) {
        return false;
    }
    while let Ok(Some(_)) = hostcalls::dequeue_shared_queue(queue_id) {}
    SIGNALLED.set(false);
    run_wakes();
    true
}

/// The root's `on_http_call_response`: hands the answer to a call a woken
/// context made to that context; whether it was such a call.
pub fn forward_call_answer(token: u32, headers: usize, body_size: usize, trailers: usize) -> bool {
    let Some(owner) = CALL_OWNERS.with(|owners| owners.borrow_mut().remove(&token)) else {
        return false;
    };
    if let Some(context) = registered(owner) {
        if hostcalls::set_effective_context(owner).is_ok() {
            deliver(owner, &context, |http| {
                http.on_http_call_response(token, headers, body_size, trailers)
            });
        }
    }
    run_wakes();
    true
}

/// Makes an HTTP call: every call a request's policy makes goes through
/// here, so a woken context's answer finds its way back.
pub fn dispatch_http_call(
    upstream: &str,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, Status> {
    let token = hostcalls::dispatch_http_call(upstream, headers, body, vec![], timeout)?;
    if let Some(owner) = WAKING.get() {
        CALL_OWNERS.with(|owners| owners.borrow_mut().insert(token, owner));
    }
    Ok(token)
}

fn registered(context_id: u32) -> Option<Shared> {
    WAKEABLE.with(|wakeable| wakeable.borrow().get(&context_id).and_then(Weak::upgrade))
}

fn deliver(context_id: u32, context: &Shared, callback: impl FnOnce(&mut dyn HttpContext)) {
    let Ok(mut http) = context.try_borrow_mut() else {
        return;
    };
    let outer = WAKING.replace(Some(context_id));
    callback(&mut **http);
    WAKING.set(outer);
}

/// Runs the wakes asked for, and those they ask for in turn.
fn run_wakes() {
    loop {
        let next = PENDING.with(|pending| {
            let mut pending = pending.borrow_mut();
            (!pending.is_empty()).then(|| pending.remove(0))
        });
        let Some(context_id) = next else {
            return;
        };
        let Some(context) = registered(context_id) else {
            continue;
        };
        if hostcalls::set_effective_context(context_id).is_err() {
            continue;
        }
        deliver(context_id, &context, |http| {
            http.on_http_call_response(WAKE_TOKEN, 0, 0, 0)
        });
    }
}

/// After a request callback: the wakes it asked for, at once or through
/// the root (see the module documentation); the host then acts on `own`
/// again.
fn flush(own: u32) {
    if PENDING.with(|pending| pending.borrow().is_empty()) {
        return;
    }
    if let Some(queue) = QUEUE.get() {
        if SIGNALLED.get() || hostcalls::enqueue_shared_queue(queue, Some(b"wake")).is_ok() {
            SIGNALLED.set(true);
            return;
        }
    }
    // No queue (or it refused the signal): at once, the calls' answers
    // then going to this context.
    run_wakes();
    let _ = hostcalls::set_effective_context(own);
}

/// A request context other contexts of the worker can wake; it passes
/// every callback on to the context it wraps.
pub struct WakeableContext {
    id: u32,
    inner: Option<Shared>,
}

impl WakeableContext {
    pub fn new(id: u32, inner: Box<dyn HttpContext>) -> Self {
        let inner: Shared = Rc::new(RefCell::new(inner));
        WAKEABLE.with(|wakeable| wakeable.borrow_mut().insert(id, Rc::downgrade(&inner)));
        Self {
            id,
            inner: Some(inner),
        }
    }

    fn run<R>(&mut self, fallback: R, callback: impl FnOnce(&mut dyn HttpContext) -> R) -> R {
        let result = match self.inner.as_ref().map(|inner| inner.try_borrow_mut()) {
            Some(Ok(mut http)) => callback(&mut **http),
            _ => fallback,
        };
        flush(self.id);
        result
    }
}

impl Drop for WakeableContext {
    fn drop(&mut self) {
        WAKEABLE.with(|wakeable| wakeable.borrow_mut().remove(&self.id));
        // What the context does as it goes (waking those waiting for it)
        // happens now, and its wakes with it.
        drop(self.inner.take());
        flush(self.id);
    }
}

impl Context for WakeableContext {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        // Without a wake queue, a context woken in this one's callback had
        // its calls answered here.
        if forward_call_answer(token, headers, body, trailers) {
            return;
        }
        self.run((), |http| {
            http.on_http_call_response(token, headers, body, trailers)
        });
    }

    fn on_done(&mut self) -> bool {
        self.run(true, |http| http.on_done())
    }
}

impl HttpContext for WakeableContext {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.run(Action::Continue, |http| {
            http.on_http_request_headers(num_headers, end_of_stream)
        })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.run(Action::Continue, |http| {
            http.on_http_request_body(body_size, end_of_stream)
        })
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        self.run(Action::Continue, |http| {
            http.on_http_request_trailers(num_trailers)
        })
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.run(Action::Continue, |http| {
            http.on_http_response_headers(num_headers, end_of_stream)
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.run(Action::Continue, |http| {
            http.on_http_response_body(body_size, end_of_stream)
        })
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        self.run(Action::Continue, |http| {
            http.on_http_response_trailers(num_trailers)
        })
    }

    fn on_log(&mut self) {
        self.run((), |http| http.on_log());
    }
}
