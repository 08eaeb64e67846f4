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
//!
//! In a Redis Cluster a script runs on the keys of one hash slot only: the
//! operations are sent in runs of one slot, one run after the other, and a
//! run is sent only when the ones before did not stop the script (a replay,
//! a refused quota group), so the operations after a stop are not run, as
//! in one call.

use super::wire::{parse_reply, parse_resp_reply, Arguments, Failure, Op, OpResult};
use super::{hash_slot, Store, Target};
use crate::hosting::Caller;
use crate::stream::CallAnswer;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An answer larger than this is refused unread (a script answer is a few
/// hundred bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The token a batch's answer is shown with when the call could not be made.
pub const UNSENT: u32 = u32::MAX;

pub use super::wire::Answer;

/// One call in flight: the run of operations sent, and (in a Redis
/// Cluster) the runs of other slots still to send.
#[derive(Debug)]
struct Call {
    token: u32,
    store: Arc<Store>,
    /// The run in flight and its hash slot.
    ops: Vec<Op>,
    slot: u16,
    arguments: Arguments,
    results: usize,
    resent: bool,
    /// The results of the runs answered before.
    answered: Vec<OpResult>,
    /// The runs to send after this one.
    next: VecDeque<Run>,
    /// In a Redis Cluster, when the call (all its runs) must be answered.
    deadline: Option<Instant>,
}

/// Operations of one hash slot, and the slot.
type Run = (u16, Vec<Op>);

/// `ops` in runs of one hash slot, in order: the first, and the others
/// (none outside a Redis Cluster).
fn runs(store: &Store, ops: Vec<Op>) -> (Run, VecDeque<Run>) {
    if !store.is_cluster() {
        return ((0, ops), VecDeque::new());
    }
    let mut runs: VecDeque<Run> = VecDeque::new();
    for op in ops {
        let slot = op.first_key().map(hash_slot).unwrap_or_default();
        match runs.back_mut() {
            Some((last, run)) if *last == slot => run.push(op),
            _ => runs.push_back((slot, vec![op])),
        }
    }
    (runs.pop_front().unwrap_or_default(), runs)
}

/// Sends the call (by the script's SHA-1, or `with_script`) to the store,
/// to be answered within `timeout`.
fn dispatch(
    store: &Store,
    slot: u16,
    arguments: &Arguments,
    with_script: bool,
    timeout: Duration,
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
            caller.dispatch_redis(redis, slot, command, timeout)
        }
    }
    .map_err(|_| Failure::Dispatch)
}

impl Call {
    fn send(store: Arc<Store>, ops: Vec<Op>, caller: &mut dyn Caller) -> Result<Self, Failure> {
        let ((slot, ops), next) = runs(&store, ops);
        // The runs of a cluster share the call's timeout (only the native
        // module, which has a monotonic clock, speaks to one).
        let deadline = store.is_cluster().then(|| Instant::now() + store.timeout);
        let arguments = Arguments::new(&ops, crate::host::random_u64());
        let token = dispatch(&store, slot, &arguments, false, store.timeout, caller)?;
        Ok(Self {
            token,
            store,
            results: ops.iter().map(Op::results).sum(),
            ops,
            slot,
            arguments,
            resent: false,
            answered: Vec::new(),
            next,
            deadline,
        })
    }

    /// Sends the run in flight (again, `with_script`) within what is left
    /// of the call's time.
    fn dispatch_run(&mut self, with_script: bool, caller: &mut dyn Caller) -> Option<Answer> {
        let timeout = match self.deadline {
            None => self.store.timeout,
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => return Some(Err(Failure::NoAnswer)),
            },
        };
        let dispatched = dispatch(
            &self.store,
            self.slot,
            &self.arguments,
            with_script,
            timeout,
            caller,
        );
        match dispatched {
            Ok(token) => {
                self.token = token;
                None
            }
            Err(failure) => Some(Err(failure)),
        }
    }

    /// The answer, if `token` is this call's; `None` for another call's
    /// answer, or when the call was sent again with the script, or its next
    /// run was sent.
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
            return self.dispatch_run(true, caller);
        }
        let results = match answer {
            // One run (the only one outside a cluster): its results.
            Ok(results) if self.next.is_empty() && self.answered.is_empty() => {
                return Some(Ok(results))
            }
            Ok(results) => results,
            Err(failure) => return Some(Err(failure)),
        };
        let mut stopped = false;
        let mut at = 0;
        for op in &self.ops {
            let count = op.results();
            stopped |= op.stops(results.get(at..at + count).unwrap_or_default());
            at += count;
        }
        self.answered.extend(results);
        if stopped {
            // What the script would have answered for the runs not sent.
            let not_run: usize = self
                .next
                .iter()
                .flat_map(|(_, ops)| ops)
                .map(Op::results)
                .sum();
            self.answered
                .extend(std::iter::repeat_with(OpResult::default).take(not_run));
            self.next.clear();
        }
        let Some((slot, ops)) = self.next.pop_front() else {
            return Some(Ok(std::mem::take(&mut self.answered)));
        };
        self.arguments = Arguments::new(&ops, crate::host::random_u64());
        self.results = ops.iter().map(Op::results).sum();
        self.ops = ops;
        self.slot = slot;
        self.resent = false;
        self.dispatch_run(false, caller)
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
    let call = Call::send(Arc::clone(store), ops, caller)?;
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
        self.call = Some(Call::send(store, std::mem::take(&mut self.ops), caller)?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::resp::{self, Reply};
    use crate::fleet::wire::{QuotaCheck, State};
    use crate::fleet::StoreConfig;
    use crate::stream::{CallNotMade, FakeAnswer, HttpCall};

    /// Records the commands sent to Redis, by hash slot.
    #[derive(Default)]
    struct Sent(Vec<(u16, Vec<Vec<u8>>)>);

    impl Caller for Sent {
        fn dispatch_call(&mut self, _: HttpCall<'_>) -> Result<u32, CallNotMade> {
            Err(CallNotMade)
        }

        fn dispatch_redis(
            &mut self,
            _: &crate::fleet::RedisTarget,
            slot: u16,
            command: Vec<u8>,
            _: std::time::Duration,
        ) -> Result<u32, CallNotMade> {
            let Ok(Some((Reply::Array(Some(parts)), _))) = resp::parse(&command) else {
                panic!("not a command")
            };
            let parts = parts
                .into_iter()
                .map(|part| match part {
                    Reply::Bulk(Some(bytes)) => bytes,
                    other => panic!("{other:?}"),
                })
                .collect();
            self.0.push((slot, parts));
            Ok(self.0.len() as u32)
        }
    }

    impl Sent {
        /// The keys of the last command.
        fn keys(&self) -> Vec<String> {
            let (_, parts) = self.0.last().expect("a command");
            let count: usize = String::from_utf8_lossy(&parts[2]).parse().expect("numkeys");
            parts[3..3 + count]
                .iter()
                .map(|key| String::from_utf8_lossy(key).into_owned())
                .collect()
        }

        /// Redis's reply to the last command: its id, then the triples.
        fn reply(&self, triples: &[[i64; 3]]) -> FakeAnswer {
            let (_, parts) = self.0.last().expect("a command");
            let count: usize = String::from_utf8_lossy(&parts[2]).parse().expect("numkeys");
            let id = String::from_utf8_lossy(&parts[3 + count]).into_owned();
            let mut body = format!("*{}\r\n${}\r\n{id}\r\n", 1 + 3 * triples.len(), id.len());
            for value in triples.iter().flatten() {
                body.push_str(&format!(":{value}\r\n"));
            }
            FakeAnswer::new(200).with_body(body.as_bytes())
        }
    }

    fn store(redis: &str) -> Arc<Store> {
        let config: StoreConfig =
            serde_json::from_str(&format!(r#"{{"redis": {redis}}}"#)).expect("config");
        Arc::new(Store::compile(&config).expect("store"))
    }

    fn quota(store: &Store, rule: &str) -> QuotaCheck {
        QuotaCheck {
            key: store.key("q", "policy", &[rule, "d", "1"]),
            previous_key: None,
            limit: 5,
            window_weight: 1,
            previous_weight: 0,
            ttl_ms: 1000,
            dry_run: false,
            lease: None,
        }
    }

    /// A nonce, then a group of two rules.
    fn ops(store: &Store) -> Vec<Op> {
        vec![
            Op::Nonce {
                key: store.key("n", "abc", &[]),
                ttl_ms: 1000,
            },
            Op::Quotas(vec![quota(store, "a"), quota(store, "b")]),
        ]
    }

    fn states(answer: &Answer) -> Vec<State> {
        answer
            .as_ref()
            .expect("results")
            .iter()
            .map(|r| r.state)
            .collect()
    }

    #[test]
    fn one_redis_takes_a_requests_operations_in_one_call() {
        let store = store(r#"{"address": "r:1"}"#);
        let mut sent = Sent::default();
        let mut call = Call::send(Arc::clone(&store), ops(&store), &mut sent).expect("sent");
        assert_eq!(
            sent.keys(),
            ["gw:n:abc", "gw:q:policy:a:d:1", "gw:q:policy:b:d:1"]
        );
        let answer = call.answer(
            1,
            &sent.reply(&[[1, 0, 0], [1, 1, 1], [1, 1, 1]]),
            &mut sent,
        );
        assert_eq!(states(&answer.expect("answered")), [State::Done; 3]);
        assert_eq!(sent.0.len(), 1);
    }

    #[test]
    fn a_cluster_takes_them_slot_by_slot_in_order() {
        let store = store(r#"{"cluster": {"addresses": ["r:1"]}}"#);
        let mut sent = Sent::default();
        let mut call = Call::send(Arc::clone(&store), ops(&store), &mut sent).expect("sent");
        assert_eq!(sent.keys(), ["gw:n:{abc}"]);
        assert_eq!(sent.0[0].0, hash_slot("abc"));
        // The nonce is fresh: the quota group goes to its own slot.
        let first = sent.reply(&[[1, 0, 0]]);
        assert!(call.answer(1, &first, &mut sent).is_none());
        assert_eq!(sent.keys(), ["gw:q:{policy}:a:d:1", "gw:q:{policy}:b:d:1"]);
        assert_eq!(sent.0[1].0, hash_slot("policy"));
        // An answer with another token is another call's.
        let second = sent.reply(&[[1, 1, 1], [0, 0, 5]]);
        assert!(call.answer(1, &second, &mut sent).is_none());
        let answer = call.answer(2, &second, &mut sent).expect("answered");
        assert_eq!(states(&answer), [State::Done, State::Done, State::Refused]);
    }

    #[test]
    fn in_a_cluster_nothing_runs_after_a_replay() {
        let store = store(r#"{"cluster": {"addresses": ["r:1"]}}"#);
        let mut sent = Sent::default();
        let mut call = Call::send(Arc::clone(&store), ops(&store), &mut sent).expect("sent");
        let replayed = sent.reply(&[[0, 0, 0]]);
        let answer = call.answer(1, &replayed, &mut sent).expect("answered");
        assert_eq!(
            states(&answer),
            [State::Refused, State::NotRun, State::NotRun]
        );
        assert_eq!(sent.0.len(), 1, "the quotas were not sent");
        // A refused group stops what follows it too.
        let mut ops = ops(&store);
        ops.swap(0, 1);
        let mut sent = Sent::default();
        let mut call = Call::send(Arc::clone(&store), ops, &mut sent).expect("sent");
        let refused = sent.reply(&[[0, 0, 5], [3, 0, 1]]);
        let answer = call.answer(1, &refused, &mut sent).expect("answered");
        assert_eq!(
            states(&answer),
            [State::Refused, State::NotCounted, State::NotRun]
        );
        assert_eq!(sent.0.len(), 1, "the nonce was not sent");
    }
}
