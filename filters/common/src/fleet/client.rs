//! Sends fleet operations through the host's calls and hands back the
//! answer; it decides nothing.
//!
//! A single filter's request [`submit`]s its operations and gets a
//! [`Ticket::Own`] call: it holds the request until the answer arrives in
//! its `on_http_call_response`. In the gateway module every policy's
//! operations join the request's [`Batch`] ([`Ticket::Batched`]), which
//! the module sends as one call once the policies have run; each policy is
//! then shown its share of the answer ([`Ticket::share`]).
//!
//! After `NOSCRIPT` (Redis restarted, or its script cache was flushed) a
//! call is sent once more with the script itself, which Redis caches again.

use super::wire::{parse_reply, parse_resp_reply, Arguments, Failure, Op, OpResult};
use super::{Store, Target};
use crate::hosting::Caller;
use crate::stream::CallAnswer;
use std::sync::Arc;

/// An answer larger than this is refused unread (a script answer is a few
/// hundred bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The token a batch's answer is shown with when the call could not be made.
pub const UNSENT: u32 = u32::MAX;

pub use super::wire::Answer;

/// One call in flight.
#[derive(Debug)]
struct Call {
    token: u32,
    store: Arc<Store>,
    arguments: Arguments,
    results: usize,
    resent: bool,
}

/// Sends the call (by the script's SHA-1, or `with_script`) to the store.
fn dispatch(
    store: &Store,
    arguments: &Arguments,
    with_script: bool,
    caller: &mut dyn Caller,
) -> Result<u32, Failure> {
    match &store.target {
        Target::Webdis(upstream) => {
            let body = if with_script {
                arguments.with_script()
            } else {
                arguments.by_sha()
            };
            let authorization = store
                .authorization
                .as_deref()
                .map(|value| ("authorization", value));
            let call = upstream.call(
                "POST",
                [("content-type", "text/plain")]
                    .into_iter()
                    .chain(authorization),
                Some(&body),
            );
            caller.dispatch_call(call)
        }
        Target::Redis(redis) => {
            let command = if with_script {
                arguments.resp_with_script()
            } else {
                arguments.resp_by_sha()
            };
            caller.dispatch_redis(redis, command, store.timeout)
        }
    }
    .map_err(|_| Failure::Dispatch)
}

impl Call {
    fn send(store: Arc<Store>, ops: &[Op], caller: &mut dyn Caller) -> Result<Self, Failure> {
        let arguments = Arguments::new(ops, crate::host::random_u64());
        let token = dispatch(&store, &arguments, false, caller)?;
        Ok(Self {
            token,
            store,
            arguments,
            results: ops.iter().map(Op::results).sum(),
            resent: false,
        })
    }

    /// The answer, if `token` is this call's; `None` for another call's
    /// answer, or when the call was sent again with the script.
    fn answer(
        &mut self,
        token: u32,
        answer: &dyn CallAnswer,
        caller: &mut dyn Caller,
    ) -> Option<Answer> {
        if token != self.token {
            return None;
        }
        let answer = read_answer(&self.store, answer, self.arguments.id(), self.results);
        if answer == Err(Failure::NoScript) && !self.resent {
            self.resent = true;
            return match dispatch(&self.store, &self.arguments, true, caller) {
                Ok(token) => {
                    self.token = token;
                    None
                }
                Err(failure) => Some(Err(failure)),
            };
        }
        Some(answer)
    }
}

/// The answer of the call being reported. The status
/// is read only when the body is not a script answer (Webdis sends one
/// with 200 only), to tell a timeout or an HTTP error from a bad body: one
/// host call fewer per request. Redis's own answer is its reply (RESP), or
/// no status when none came in time.
fn read_answer(store: &Store, answer: &dyn CallAnswer, id: &str, expected: usize) -> Answer {
    let body_size = answer.body_size();
    let from_body = if body_size > MAX_ANSWER_BYTES {
        Err(Failure::BadReply(format!("{body_size} bytes")))
    } else if matches!(store.target, Target::Redis(_)) {
        return match answer.status() {
            None if answer.not_sent() => Err(Failure::Dispatch),
            None => Err(Failure::NoAnswer),
            Some(_) => parse_resp_reply(&answer.body(), id, expected),
        };
    } else {
        parse_reply(Some(200), &answer.body(), id, expected)
    };
    let Err(body_failure) = from_body else {
        return from_body;
    };
    match answer.status() {
        Some(200) => Err(body_failure),
        None => Err(Failure::NoAnswer),
        Some(other) => Err(Failure::Status(other)),
    }
}

/// A policy's operations on their way to the store.
#[derive(Debug)]
pub enum Ticket {
    /// Sent as the policy's own call: hold the request until it is answered.
    Own(Box<OwnCall>),
    /// Part of the module's call for the request: results `first..first+count`.
    Batched { first: usize, count: usize },
}

/// A [`Ticket::Own`]'s call.
#[derive(Debug)]
pub struct OwnCall(Call);

/// Sends `ops` as a call of their own.
pub fn submit(
    store: &Arc<Store>,
    ops: Vec<Op>,
    caller: &mut dyn Caller,
) -> Result<Ticket, Failure> {
    let call = Call::send(Arc::clone(store), &ops, caller)?;
    Ok(Ticket::Own(Box::new(OwnCall(call))))
}

impl Ticket {
    /// Whether the policy holds the request for the answer (its own call);
    /// a batched policy lets it go on and the module holds it.
    pub fn holds_request(&self) -> bool {
        matches!(self, Ticket::Own(_))
    }

    /// The answer to its own call, when `token` brings it (see
    /// [`Call::answer`]); a batched ticket's answer is the batch's.
    pub fn answer(
        &mut self,
        token: u32,
        answer: &dyn CallAnswer,
        caller: &mut dyn Caller,
    ) -> Option<Answer> {
        match self {
            Ticket::Own(call) => call.0.answer(token, answer, caller),
            Ticket::Batched { .. } => None,
        }
    }

    /// The policy's share of its batch's answer (`None` for its own call).
    pub fn share(&self, answer: &Answer) -> Option<Answer> {
        let Ticket::Batched { first, count } = self else {
            return None;
        };
        Some(match answer {
            Ok(results) => results
                .get(*first..*first + *count)
                .map(<[OpResult]>::to_vec)
                .ok_or_else(|| Failure::BadReply("too few results".into())),
            Err(failure) => Err(failure.clone()),
        })
    }
}

/// A policy's checks waiting for the store: what the policy needs to decide
/// once the answer is in, and the ticket.
#[derive(Debug)]
pub struct Waiting<T>(Option<(T, Ticket)>);

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Waiting<T> {
    pub fn start(&mut self, pending: T, ticket: Ticket) {
        self.0 = Some((pending, ticket));
    }

    /// Checks were sent and are not answered yet.
    pub fn is_waiting(&self) -> bool {
        self.0.is_some()
    }

    /// What waited, its ticket and the answer, when `token` brings it.
    pub fn answered(
        &mut self,
        token: u32,
        answer: &dyn CallAnswer,
        caller: &mut dyn Caller,
    ) -> Option<(T, Ticket, Answer)> {
        let answer = self.0.as_mut()?.1.answer(token, answer, caller)?;
        let (pending, ticket) = self.0.take()?;
        Some((pending, ticket, answer))
    }
}

/// The operations of one request in the gateway module, sent as one call.
#[derive(Debug, Default)]
pub struct Batch {
    store: Option<Arc<Store>>,
    ops: Vec<Op>,
    results: usize,
    call: Option<Call>,
    sent: bool,
    /// A local reply held back until the batch is answered.
    held_reply: Option<LocalReply>,
}

/// A local reply a policy made while earlier policies' checks were still
/// with the store (see [`holds_replies`]).
pub use crate::stream::LocalReply;

impl Batch {
    /// Whether a local reply must wait: the batch has checks of earlier
    /// policies that are not answered yet. Their answer comes first, as in
    /// the chain of single filters, where those policies decided before the
    /// one replying ran: a replay is refused as a replay, and what they
    /// record and count is recorded and counted, before a later refusal.
    pub fn holds_replies(&self) -> bool {
        self.has_unsent() || self.in_flight()
    }

    /// Keeps a local reply until the batch is answered (see
    /// [`Batch::holds_replies`]); the first one made is the one sent.
    pub fn hold_reply(&mut self, reply: LocalReply) {
        self.held_reply.get_or_insert(reply);
    }

    /// Adds a policy's operations; `None` when they go to another store or
    /// the batch is already sent (the policy then sends its own call).
    pub fn add(&mut self, store: &Arc<Store>, ops: &[Op]) -> Option<Ticket> {
        if self.sent || self.store.as_ref().is_some_and(|s| **s != **store) {
            return None;
        }
        self.store.get_or_insert_with(|| Arc::clone(store));
        let count: usize = ops.iter().map(Op::results).sum();
        let ticket = Ticket::Batched {
            first: self.results,
            count,
        };
        self.results += count;
        self.ops.extend_from_slice(ops);
        Some(ticket)
    }

    /// Operations are waiting to be sent.
    pub fn has_unsent(&self) -> bool {
        !self.sent && !self.ops.is_empty()
    }

    /// The call is sent and not answered yet.
    pub fn in_flight(&self) -> bool {
        self.call.is_some()
    }

    /// Sends the operations as one call.
    pub fn send(&mut self, caller: &mut dyn Caller) -> Result<(), Failure> {
        self.sent = true;
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        self.call = Some(Call::send(store, &std::mem::take(&mut self.ops), caller)?);
        Ok(())
    }

    /// The local reply held back, if any.
    pub fn take_held_reply(&mut self) -> Option<LocalReply> {
        self.held_reply.take()
    }

    /// The answer, if `token` brings the batch's (see [`Call::answer`]).
    pub fn answer(
        &mut self,
        token: u32,
        answer: &dyn CallAnswer,
        caller: &mut dyn Caller,
    ) -> Option<Answer> {
        let answer = self.call.as_mut()?.answer(token, answer, caller)?;
        self.call = None;
        Some(answer)
    }
}
