//! One request's way through the policies, as the chain of single filters
//! would take it, but inside one Envoy filter.
//!
//! - Request callbacks reach the policies in order. A policy that holds the
//!   request (`Pause` on its headers, to read the body) holds it for every
//!   policy after it: those see the request headers only once it lets the
//!   request go, and then at once the body it held (with its size as the
//!   policies before left it).
//! - A policy that answers the request itself ends the request phase:
//!   nothing after it runs for the request.
//! - Response callbacks reach every policy, last first, as Envoy runs
//!   encoder filters; `on_log` reaches every policy, first first, as Envoy
//!   runs access loggers. A policy whose request phase never ran has nothing
//!   to do there, except log-push, which records refused requests too.
//!   Unlike a chain, a policy holding the response (error-mapping, the
//!   response cache) does not hold it back from the policies before it:
//!   each is given every callback, a body at the size the ones after it
//!   left it, so a policy that reads the body holds it to its end and reads
//!   it whole then (every callback shows it all while it is held).
//!
//! - A barrier may stand before a member (the gateway module puts one after
//!   the last policy with fleet checks): while the barrier's condition holds
//!   (those checks are unanswered), no member after it gets the request; the
//!   body is held; [`Pipeline::release`] lets the request through once the
//!   condition no longer holds.
//!
//! Nothing here calls the host: a [`Member`] is any policy context, a fake
//! one in the tests.

pub use gateway_common::stream::Verdict;

/// What a policy made of a body callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyVerdict {
    pub verdict: Verdict,
    /// The body's size after the policy replaced it.
    pub resized_to: Option<usize>,
}

impl From<Verdict> for BodyVerdict {
    fn from(verdict: Verdict) -> Self {
        Self {
            verdict,
            resized_to: None,
        }
    }
}

/// What a policy made of an HTTP call's answer (or a wake, see
/// `gateway_common::wake`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallVerdict {
    /// Not its call, or nothing changed.
    Nothing,
    /// It lets go of the request it held.
    Resumed,
    /// It answered the request.
    Answered,
}

/// What the module answers Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// One policy's context for one request; each callback is handed the
/// host of the callback that runs.
pub trait Member<H: ?Sized> {
    fn request_headers(&mut self, host: &mut H, end_of_stream: bool) -> Verdict;
    fn request_body(&mut self, host: &mut H, body_size: usize, end_of_stream: bool) -> BodyVerdict;
    fn request_trailers(&mut self, host: &mut H) -> Verdict;
    fn response_headers(&mut self, host: &mut H, end_of_stream: bool) -> Verdict;
    fn response_body(&mut self, host: &mut H, body_size: usize, end_of_stream: bool)
        -> BodyVerdict;
    fn response_trailers(&mut self, host: &mut H) -> Verdict;
    fn log(&mut self, host: &mut H);
}

/// The policies' contexts for one request, in order, and how far the
/// request has gone through them.
pub struct Pipeline<M> {
    members: Vec<M>,
    /// `members[..started]` have been given the request headers.
    started: usize,
    /// The first member the next request body callback is shown to: a
    /// member holding the body sees it again as it grows; the members before
    /// it already let it pass.
    body_from: usize,
    /// A member answered the request: the request phase is over.
    answered: bool,
    /// No member from this index on starts while the condition holds.
    barrier: Option<(usize, Box<dyn Fn() -> bool>)>,
    /// The request waits at the barrier.
    at_barrier: bool,
    /// The request headers ended the stream.
    headers_end_stream: bool,
    /// The body held at the barrier (size, end of stream), for the members
    /// after it.
    body_seen: Option<(usize, bool)>,
    /// Trailers came while the request waited at the barrier.
    trailers_seen: bool,
    /// The last body callback the member holding the request held, for
    /// the members after it once it lets go outside a callback.
    held_body: Option<(usize, bool)>,
    /// The member holding the request held the trailers.
    held_trailers: bool,
}

impl<M> Pipeline<M> {
    pub fn new(members: Vec<M>) -> Self {
        Self {
            members,
            started: 0,
            body_from: 0,
            answered: false,
            barrier: None,
            at_barrier: false,
            headers_end_stream: false,
            body_seen: None,
            trailers_seen: false,
            held_body: None,
            held_trailers: false,
        }
    }

    /// Holds the request before `members[index]` while `holds()` is true.
    pub fn with_barrier(mut self, index: usize, holds: impl Fn() -> bool + 'static) -> Self {
        self.barrier = Some((index, Box::new(holds)));
        self
    }

    /// The request waits at the barrier.
    pub fn at_barrier(&self) -> bool {
        self.at_barrier
    }

    /// Lets a request waiting at the barrier through (its condition no
    /// longer holds): the members after it get the headers, then the body
    /// seen so far. `Continue` when the request may go on to the upstream.
    pub fn release<H: ?Sized>(&mut self, host: &mut H) -> Flow
    where
        M: Member<H>,
    {
        if !self.at_barrier || self.answered {
            return Flow::Pause;
        }
        self.at_barrier = false;
        let body = self.body_seen.take();
        let trailers = std::mem::take(&mut self.trailers_seen);
        self.start_after_hold(host, body, trailers)
    }

    /// The members from `started` on get the request after a hold: the
    /// headers, or at once the body held so far (the members before let it
    /// pass), then the trailers held (Envoy does not repeat them).
    /// `Continue` when the request may go on to the upstream.
    fn start_after_hold<H: ?Sized>(
        &mut self,
        host: &mut H,
        body: Option<(usize, bool)>,
        trailers: bool,
    ) -> Flow
    where
        M: Member<H>,
    {
        let first = self.started;
        let mut flow = match body {
            Some((size, end_of_stream)) => {
                self.body_from = first;
                self.on_request_body(host, size, end_of_stream)
            }
            None => self.start_members(host, self.headers_end_stream),
        };
        if trailers {
            if self.answered {
                return Flow::Pause;
            }
            for member in &mut self.members[first..self.started] {
                match member.request_trailers(host) {
                    Verdict::Continue => {}
                    Verdict::Pause => return Flow::Pause,
                    Verdict::Answered => {
                        self.answered = true;
                        return Flow::Pause;
                    }
                }
            }
            flow = if self.started < self.members.len() {
                Flow::Pause
            } else {
                Flow::Continue
            };
        }
        flow
    }

    /// An HTTP call answered (or a wake): each member is shown it. When the
    /// member holding the request lets go, the members after it get the
    /// request headers, then the body and trailers it held; `Continue`
    /// when the request may then go on to the upstream.
    pub fn on_call_response<H: ?Sized>(
        &mut self,
        host: &mut H,
        mut show: impl FnMut(&mut M, &mut H) -> CallVerdict,
    ) -> Flow
    where
        M: Member<H>,
    {
        let holder = self.body_from;
        let mut answered = false;
        let mut resumed = false;
        for (index, member) in self.members.iter_mut().enumerate() {
            match show(member, host) {
                CallVerdict::Nothing => {}
                CallVerdict::Answered => answered = true,
                CallVerdict::Resumed => resumed |= index == holder,
            }
        }
        if answered {
            self.answered = true;
        }
        if self.answered || !resumed || self.at_barrier || holder + 1 != self.started {
            return Flow::Pause;
        }
        let body = self.held_body.take();
        let trailers = std::mem::take(&mut self.held_trailers);
        self.start_after_hold(host, body, trailers)
    }

    /// Whether the request must wait at the barrier now (and notes it).
    fn stops_at_barrier(&mut self) -> bool {
        if let Some((at, holds)) = &self.barrier {
            if self.started == *at && holds() {
                self.at_barrier = true;
            }
        }
        self.at_barrier
    }

    /// Every member, in order, for the callbacks each one gets regardless
    /// of the request's progress.
    pub fn members_mut(&mut self) -> &mut [M] {
        &mut self.members
    }

    /// A member answered the request outside a request callback (from the
    /// answer of an HTTP call): the request phase is over.
    pub fn mark_answered(&mut self) {
        self.answered = true;
    }

    pub fn answered(&self) -> bool {
        self.answered
    }

    pub fn on_request_headers<H: ?Sized>(&mut self, host: &mut H, end_of_stream: bool) -> Flow
    where
        M: Member<H>,
    {
        self.headers_end_stream = end_of_stream;
        self.start_members(host, end_of_stream)
    }

    /// Gives the request headers to the members that have not seen them
    /// yet, until one holds the request or answers it.
    fn start_members<H: ?Sized>(&mut self, host: &mut H, end_of_stream: bool) -> Flow
    where
        M: Member<H>,
    {
        loop {
            if self.stops_at_barrier() {
                return Flow::Pause;
            }
            let Some(member) = self.members.get_mut(self.started) else {
                return Flow::Continue;
            };
            let index = self.started;
            self.started += 1;
            match member.request_headers(host, end_of_stream) {
                Verdict::Continue => {}
                Verdict::Pause => {
                    self.body_from = index;
                    return Flow::Pause;
                }
                Verdict::Answered => {
                    self.answered = true;
                    return Flow::Pause;
                }
            }
        }
    }

    pub fn on_request_body<H: ?Sized>(
        &mut self,
        host: &mut H,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow
    where
        M: Member<H>,
    {
        if self.answered {
            return Flow::Pause;
        }
        let mut body_size = body_size;
        self.held_body = None;
        loop {
            while let Some(member) = self.members[..self.started].get_mut(self.body_from) {
                let verdict = member.request_body(host, body_size, end_of_stream);
                if let Some(size) = verdict.resized_to {
                    body_size = size;
                }
                match verdict.verdict {
                    Verdict::Continue => self.body_from += 1,
                    Verdict::Pause => {
                        self.held_body = Some((body_size, end_of_stream));
                        return Flow::Pause;
                    }
                    Verdict::Answered => {
                        self.answered = true;
                        return Flow::Pause;
                    }
                }
            }
            if self.at_barrier || (self.started == self.members.len() && self.stops_at_barrier()) {
                // Every member before the barrier let the body pass (the
                // next callback, the buffer grown, is for those after it);
                // the members after it are shown it when it is released.
                self.body_seen = Some((body_size, end_of_stream));
                self.body_from = self.started;
                return Flow::Pause;
            }
            if self.started == self.members.len() {
                // The next body callback brings new data, for everyone.
                self.body_from = 0;
                return Flow::Continue;
            }
            // The member holding the request let it go: the members after
            // it see the headers now, then the body held so far (those
            // started up to a barrier too).
            let first_new = self.started;
            self.start_members(host, false);
            if self.answered {
                return Flow::Pause;
            }
            self.body_from = first_new;
        }
    }

    pub fn on_request_trailers<H: ?Sized>(&mut self, host: &mut H) -> Flow
    where
        M: Member<H>,
    {
        if self.answered {
            return Flow::Pause;
        }
        for member in &mut self.members[..self.started] {
            match member.request_trailers(host) {
                Verdict::Continue => {}
                Verdict::Pause => {
                    self.held_trailers = true;
                    return Flow::Pause;
                }
                Verdict::Answered => {
                    self.answered = true;
                    return Flow::Pause;
                }
            }
        }
        if self.at_barrier || self.stops_at_barrier() {
            self.trailers_seen = true;
            return Flow::Pause;
        }
        if self.started < self.members.len() {
            // The member that held the request let it go on the trailers:
            // the members after it see the headers, the body held so far
            // and the trailers now.
            let body = self.held_body.take();
            return self.start_after_hold(host, body, true);
        }
        Flow::Continue
    }

    pub fn on_response_headers<H: ?Sized>(&mut self, host: &mut H, end_of_stream: bool) -> Flow
    where
        M: Member<H>,
    {
        self.every_member_last_first(|member| member.response_headers(host, end_of_stream))
    }

    pub fn on_response_body<H: ?Sized>(
        &mut self,
        host: &mut H,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow
    where
        M: Member<H>,
    {
        // Each member is shown the body as the ones before it left it.
        let mut body_size = body_size;
        self.every_member_last_first(|member| {
            let verdict = member.response_body(host, body_size, end_of_stream);
            if let Some(size) = verdict.resized_to {
                body_size = size;
            }
            verdict.verdict
        })
    }

    pub fn on_response_trailers<H: ?Sized>(&mut self, host: &mut H) -> Flow
    where
        M: Member<H>,
    {
        self.every_member_last_first(|member| member.response_trailers(host))
    }

    /// Each policy is given the callback, last first, and the response is
    /// held if any of them asked for it.
    fn every_member_last_first(&mut self, mut callback: impl FnMut(&mut M) -> Verdict) -> Flow {
        let mut flow = Flow::Continue;
        for member in self.members.iter_mut().rev() {
            if callback(member) != Verdict::Continue {
                flow = Flow::Pause;
            }
        }
        flow
    }

    pub fn on_log<H: ?Sized>(&mut self, host: &mut H)
    where
        M: Member<H>,
    {
        for member in &mut self.members {
            member.log(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    type Journal = Rc<RefCell<Vec<String>>>;

    /// A policy that writes each callback it gets in a shared journal and
    /// answers from a script (Continue when the script is empty).
    struct Fake {
        name: &'static str,
        journal: Journal,
        headers: VecDeque<Verdict>,
        body: VecDeque<BodyVerdict>,
        response_body: VecDeque<BodyVerdict>,
        trailers: VecDeque<Verdict>,
        calls: VecDeque<CallVerdict>,
    }

    impl Fake {
        fn note(&self, what: String) {
            self.journal
                .borrow_mut()
                .push(format!("{} {what}", self.name));
        }
    }

    impl Fake {
        fn call_response(&mut self, token: u32) -> CallVerdict {
            self.note(format!("call {token}"));
            self.calls.pop_front().unwrap_or(CallVerdict::Nothing)
        }
    }

    impl Member<()> for Fake {
        fn request_headers(&mut self, _: &mut (), end_of_stream: bool) -> Verdict {
            self.note(format!("headers eos={end_of_stream}"));
            self.headers.pop_front().unwrap_or(Verdict::Continue)
        }
        fn request_body(
            &mut self,
            _: &mut (),
            body_size: usize,
            end_of_stream: bool,
        ) -> BodyVerdict {
            self.note(format!("body {body_size} eos={end_of_stream}"));
            self.body.pop_front().unwrap_or(Verdict::Continue.into())
        }
        fn request_trailers(&mut self, _: &mut ()) -> Verdict {
            self.note("trailers".into());
            self.trailers.pop_front().unwrap_or(Verdict::Continue)
        }
        fn response_headers(&mut self, _: &mut (), _end_of_stream: bool) -> Verdict {
            self.note("response headers".into());
            Verdict::Continue
        }
        fn response_body(
            &mut self,
            _: &mut (),
            body_size: usize,
            _end_of_stream: bool,
        ) -> BodyVerdict {
            self.note(format!("response body {body_size}"));
            self.response_body
                .pop_front()
                .unwrap_or(Verdict::Continue.into())
        }
        fn response_trailers(&mut self, _: &mut ()) -> Verdict {
            self.note("response trailers".into());
            Verdict::Continue
        }
        fn log(&mut self, _: &mut ()) {
            self.note("log".into());
        }
    }

    struct Setup {
        journal: Journal,
        fakes: Vec<Fake>,
    }

    fn policies(names: &[&'static str]) -> Setup {
        let journal = Journal::default();
        let fakes = names
            .iter()
            .map(|name| Fake {
                name,
                journal: Rc::clone(&journal),
                headers: VecDeque::new(),
                body: VecDeque::new(),
                response_body: VecDeque::new(),
                trailers: VecDeque::new(),
                calls: VecDeque::new(),
            })
            .collect();
        Setup { journal, fakes }
    }

    impl Setup {
        fn headers(mut self, index: usize, verdicts: &[Verdict]) -> Self {
            self.fakes[index].headers.extend(verdicts);
            self
        }
        fn body(mut self, index: usize, verdicts: &[BodyVerdict]) -> Self {
            self.fakes[index].body.extend(verdicts);
            self
        }
        fn response_body(mut self, index: usize, verdicts: &[BodyVerdict]) -> Self {
            self.fakes[index].response_body.extend(verdicts);
            self
        }
        fn trailers(mut self, index: usize, verdicts: &[Verdict]) -> Self {
            self.fakes[index].trailers.extend(verdicts);
            self
        }
        fn calls(mut self, index: usize, verdicts: &[CallVerdict]) -> Self {
            self.fakes[index].calls.extend(verdicts);
            self
        }
        fn start(self) -> (Pipeline<Fake>, Journal) {
            (Pipeline::new(self.fakes), self.journal)
        }

        /// Started with a barrier before `fakes[index]`, whose condition
        /// holds until `set_store_pending(false)`.
        fn start_with_barrier(self, index: usize) -> (Pipeline<Fake>, Journal) {
            set_store_pending(true);
            let (pipeline, journal) = self.start();
            (pipeline.with_barrier(index, store_pending), journal)
        }
    }

    fn taken(journal: &Journal) -> Vec<String> {
        journal.borrow_mut().drain(..).collect()
    }

    const HOLD: Verdict = Verdict::Pause;
    const ANSWER: Verdict = Verdict::Answered;

    #[test]
    fn request_headers_reach_every_policy_in_order() {
        let (mut pipeline, journal) = policies(&["a", "b", "c"]).start();
        assert_eq!(pipeline.on_request_headers(&mut (), true), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "a headers eos=true",
                "b headers eos=true",
                "c headers eos=true"
            ]
        );
    }

    #[test]
    fn after_a_local_reply_no_later_policy_runs_for_the_request_but_all_see_response_and_log() {
        let (mut pipeline, journal) = policies(&["auth", "acl", "log"])
            .headers(1, &[ANSWER])
            .start();
        assert_eq!(pipeline.on_request_headers(&mut (), false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 10, true), Flow::Pause);
        assert_eq!(pipeline.on_request_trailers(&mut ()), Flow::Pause);
        assert_eq!(
            taken(&journal),
            ["auth headers eos=false", "acl headers eos=false"]
        );
        assert_eq!(pipeline.on_response_headers(&mut (), false), Flow::Continue);
        pipeline.on_log(&mut ());
        assert_eq!(
            taken(&journal),
            [
                "log response headers",
                "acl response headers",
                "auth response headers",
                "auth log",
                "acl log",
                "log log"
            ]
        );
    }

    #[test]
    fn a_policy_holding_the_request_for_its_body_holds_every_later_policy() {
        let pause = BodyVerdict::from(HOLD);
        let (mut pipeline, journal) = policies(&["auth", "acl", "validate"])
            .headers(0, &[HOLD])
            .body(0, &[pause, pause])
            .start();
        assert_eq!(pipeline.on_request_headers(&mut (), false), Flow::Pause);
        assert_eq!(taken(&journal), ["auth headers eos=false"]);
        // The body grows while auth holds it; nobody else sees it yet.
        assert_eq!(pipeline.on_request_body(&mut (), 4, false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 9, false), Flow::Pause);
        assert_eq!(
            taken(&journal),
            ["auth body 4 eos=false", "auth body 9 eos=false"]
        );
        // Auth lets it go: the others see the headers, then the whole body.
        assert_eq!(pipeline.on_request_body(&mut (), 12, true), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "auth body 12 eos=true",
                "acl headers eos=false",
                "validate headers eos=false",
                "acl body 12 eos=true",
                "validate body 12 eos=true"
            ]
        );
    }

    #[test]
    fn a_second_policy_holding_the_request_reads_the_body_the_first_one_held() {
        let (mut pipeline, journal) = policies(&["auth", "acl", "validate", "map"])
            .headers(0, &[HOLD])
            .headers(2, &[HOLD])
            .start();
        assert_eq!(pipeline.on_request_headers(&mut (), false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 7, true), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "auth headers eos=false",
                "auth body 7 eos=true",
                "acl headers eos=false",
                "validate headers eos=false",
                "acl body 7 eos=true",
                "validate body 7 eos=true",
                "map headers eos=false",
                "map body 7 eos=true"
            ]
        );
    }

    #[test]
    fn a_second_policy_holding_an_incomplete_body_is_shown_the_rest_alone() {
        let (mut pipeline, journal) = policies(&["auth", "validate", "map"])
            .headers(0, &[HOLD])
            .headers(1, &[HOLD])
            .body(1, &[HOLD.into()])
            .start();
        pipeline.on_request_headers(&mut (), false);
        // Auth let the first chunk go before the end of the body.
        assert_eq!(pipeline.on_request_body(&mut (), 3, false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 8, true), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "auth headers eos=false",
                "auth body 3 eos=false",
                "validate headers eos=false",
                "validate body 3 eos=false",
                "validate body 8 eos=true",
                "map headers eos=false",
                "map body 8 eos=true"
            ]
        );
    }

    #[test]
    fn a_policy_that_replaces_the_body_shows_later_policies_its_new_size() {
        let resized = BodyVerdict {
            verdict: Verdict::Continue,
            resized_to: Some(20),
        };
        let (mut pipeline, journal) = policies(&["validate", "map"])
            .headers(0, &[HOLD])
            .body(0, &[resized])
            .start();
        pipeline.on_request_headers(&mut (), false);
        assert_eq!(pipeline.on_request_body(&mut (), 12, true), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "validate headers eos=false",
                "validate body 12 eos=true",
                "map headers eos=false",
                "map body 20 eos=true"
            ]
        );
    }

    #[test]
    fn a_policy_answering_from_the_body_ends_the_request_phase() {
        let (mut pipeline, journal) = policies(&["auth", "acl"])
            .headers(0, &[HOLD])
            .body(0, &[ANSWER.into()])
            .start();
        pipeline.on_request_headers(&mut (), false);
        assert_eq!(pipeline.on_request_body(&mut (), 12, true), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 12, true), Flow::Pause);
        assert_eq!(
            taken(&journal),
            ["auth headers eos=false", "auth body 12 eos=true"]
        );
        pipeline.on_log(&mut ());
        assert_eq!(taken(&journal), ["auth log", "acl log"]);
    }

    #[test]
    fn a_streamed_body_reaches_every_policy_once_per_chunk() {
        let (mut pipeline, journal) = policies(&["a", "b"]).start();
        pipeline.on_request_headers(&mut (), false);
        assert_eq!(pipeline.on_request_body(&mut (), 4, false), Flow::Continue);
        assert_eq!(pipeline.on_request_body(&mut (), 6, true), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "a headers eos=false",
                "b headers eos=false",
                "a body 4 eos=false",
                "b body 4 eos=false",
                "a body 6 eos=true",
                "b body 6 eos=true"
            ]
        );
    }

    #[test]
    fn a_policy_holding_a_streamed_body_is_shown_it_again_as_it_grows() {
        let (mut pipeline, journal) = policies(&["a", "b", "c"]).body(1, &[HOLD.into()]).start();
        pipeline.on_request_headers(&mut (), false);
        assert_eq!(pipeline.on_request_body(&mut (), 4, false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 9, true), Flow::Continue);
        assert_eq!(
            &taken(&journal)[3..],
            [
                "a body 4 eos=false",
                "b body 4 eos=false",
                "b body 9 eos=true",
                "c body 9 eos=true"
            ]
        );
    }

    #[test]
    fn trailers_wait_while_a_policy_still_holds_the_request() {
        let (mut pipeline, journal) = policies(&["auth", "acl"])
            .headers(0, &[HOLD])
            .body(0, &[HOLD.into()])
            .trailers(0, &[HOLD])
            .start();
        pipeline.on_request_headers(&mut (), false);
        pipeline.on_request_body(&mut (), 3, false);
        assert_eq!(pipeline.on_request_trailers(&mut ()), Flow::Pause);
        assert_eq!(
            taken(&journal),
            [
                "auth headers eos=false",
                "auth body 3 eos=false",
                "auth trailers"
            ]
        );
    }

    #[test]
    fn a_policy_letting_the_request_go_on_the_trailers_starts_the_ones_after_it() {
        let (mut pipeline, journal) = policies(&["auth", "acl"])
            .headers(0, &[HOLD])
            .body(0, &[HOLD.into()])
            .start();
        pipeline.on_request_headers(&mut (), false);
        pipeline.on_request_body(&mut (), 3, false);
        assert_eq!(pipeline.on_request_trailers(&mut ()), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "auth headers eos=false",
                "auth body 3 eos=false",
                "auth trailers",
                "acl headers eos=false",
                "acl body 3 eos=false",
                "acl trailers"
            ]
        );
    }

    thread_local! {
        static STORE_PENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    fn store_pending() -> bool {
        STORE_PENDING.with(std::cell::Cell::get)
    }

    fn set_store_pending(pending: bool) {
        STORE_PENDING.with(|p| p.set(pending));
    }

    #[test]
    fn no_member_after_the_barrier_starts_until_it_is_released() {
        let (mut pipeline, journal) =
            policies(&["auth", "quota", "breaker", "log"]).start_with_barrier(2);
        assert_eq!(pipeline.on_request_headers(&mut (), true), Flow::Pause);
        assert!(pipeline.at_barrier());
        assert_eq!(
            taken(&journal),
            ["auth headers eos=true", "quota headers eos=true"]
        );
        set_store_pending(false);
        assert_eq!(pipeline.release(&mut ()), Flow::Continue);
        assert_eq!(
            taken(&journal),
            ["breaker headers eos=true", "log headers eos=true"]
        );
        assert_eq!(pipeline.release(&mut ()), Flow::Pause, "released once");
    }

    #[test]
    fn a_body_arriving_at_the_barrier_is_held_and_shown_to_the_later_members_on_release() {
        let (mut pipeline, journal) =
            policies(&["auth", "quota", "validate"]).start_with_barrier(2);
        assert_eq!(pipeline.on_request_headers(&mut (), false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 4, false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 9, true), Flow::Pause);
        // The members before the barrier let the first chunk pass; the
        // grown buffer is for the member after it.
        assert_eq!(
            taken(&journal)[2..],
            ["auth body 4 eos=false", "quota body 4 eos=false"]
        );
        set_store_pending(false);
        assert_eq!(pipeline.release(&mut ()), Flow::Continue);
        assert_eq!(
            taken(&journal),
            ["validate headers eos=false", "validate body 9 eos=true"]
        );
    }

    #[test]
    fn a_barrier_after_the_last_member_holds_a_body_and_trailers_too() {
        let (mut pipeline, journal) = policies(&["auth", "quota"]).start_with_barrier(2);
        assert_eq!(pipeline.on_request_headers(&mut (), false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 4, false), Flow::Pause);
        assert_eq!(pipeline.on_request_trailers(&mut ()), Flow::Pause);
        taken(&journal);
        set_store_pending(false);
        assert_eq!(pipeline.release(&mut ()), Flow::Continue);
        assert!(taken(&journal).is_empty(), "nobody after the barrier");
        // After the release, new data is for everyone.
        assert_eq!(pipeline.on_request_body(&mut (), 6, true), Flow::Continue);
        assert_eq!(
            taken(&journal),
            ["auth body 6 eos=true", "quota body 6 eos=true"]
        );
    }

    #[test]
    fn the_barrier_reached_from_a_body_callback_shows_that_body_to_the_members_before_it() {
        let (mut pipeline, journal) = policies(&["auth", "acl", "quota", "validate"])
            .headers(0, &[HOLD])
            .start_with_barrier(3);
        assert_eq!(pipeline.on_request_headers(&mut (), false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 7, true), Flow::Pause);
        assert_eq!(
            taken(&journal),
            [
                "auth headers eos=false",
                "auth body 7 eos=true",
                "acl headers eos=false",
                "quota headers eos=false",
                "acl body 7 eos=true",
                "quota body 7 eos=true"
            ]
        );
        set_store_pending(false);
        assert_eq!(pipeline.release(&mut ()), Flow::Continue);
        assert_eq!(
            taken(&journal),
            ["validate headers eos=false", "validate body 7 eos=true"]
        );
    }

    #[test]
    fn trailers_at_the_barrier_reach_the_members_after_it_on_release() {
        let (mut pipeline, journal) = policies(&["auth", "validate"]).start_with_barrier(1);
        assert_eq!(pipeline.on_request_headers(&mut (), false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 3, false), Flow::Pause);
        assert_eq!(pipeline.on_request_trailers(&mut ()), Flow::Pause);
        assert_eq!(
            taken(&journal),
            [
                "auth headers eos=false",
                "auth body 3 eos=false",
                "auth trailers"
            ]
        );
        set_store_pending(false);
        assert_eq!(pipeline.release(&mut ()), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "validate headers eos=false",
                "validate body 3 eos=false",
                "validate trailers"
            ]
        );
    }

    #[test]
    fn a_release_before_the_body_leaves_every_chunk_for_everyone() {
        let (mut pipeline, journal) = policies(&["auth", "validate"]).start_with_barrier(1);
        assert_eq!(pipeline.on_request_headers(&mut (), false), Flow::Pause);
        set_store_pending(false);
        assert_eq!(pipeline.release(&mut ()), Flow::Continue);
        assert_eq!(pipeline.on_request_body(&mut (), 4, true), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "auth headers eos=false",
                "validate headers eos=false",
                "auth body 4 eos=true",
                "validate body 4 eos=true"
            ]
        );
    }

    #[test]
    fn a_member_answering_on_release_ends_the_request_phase() {
        let (mut pipeline, journal) = policies(&["auth", "breaker", "log"])
            .headers(1, &[ANSWER])
            .start_with_barrier(1);
        assert_eq!(pipeline.on_request_headers(&mut (), true), Flow::Pause);
        set_store_pending(false);
        assert_eq!(pipeline.release(&mut ()), Flow::Pause);
        assert!(pipeline.answered());
        assert_eq!(
            taken(&journal),
            ["auth headers eos=true", "breaker headers eos=true"]
        );
    }

    #[test]
    fn a_barrier_whose_condition_does_not_hold_changes_nothing() {
        let (mut pipeline, journal) = policies(&["auth", "quota", "breaker"]).start_with_barrier(2);
        set_store_pending(false);
        assert_eq!(pipeline.on_request_headers(&mut (), true), Flow::Continue);
        assert!(!pipeline.at_barrier());
        assert_eq!(taken(&journal).len(), 3);
    }

    #[test]
    fn a_barrier_after_the_last_member_holds_the_request_itself() {
        let (mut pipeline, journal) = policies(&["auth", "quota"]).start_with_barrier(2);
        assert_eq!(pipeline.on_request_headers(&mut (), true), Flow::Pause);
        set_store_pending(false);
        assert_eq!(pipeline.release(&mut ()), Flow::Continue);
        assert_eq!(taken(&journal).len(), 2);
    }

    #[test]
    fn response_callbacks_reach_every_policy_last_first() {
        let (mut pipeline, journal) = policies(&["a", "b", "c"]).start();
        pipeline.on_request_headers(&mut (), true);
        taken(&journal);
        assert_eq!(pipeline.on_response_headers(&mut (), false), Flow::Continue);
        assert_eq!(pipeline.on_response_body(&mut (), 8, true), Flow::Continue);
        assert_eq!(pipeline.on_response_trailers(&mut ()), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "c response headers",
                "b response headers",
                "a response headers",
                "c response body 8",
                "b response body 8",
                "a response body 8",
                "c response trailers",
                "b response trailers",
                "a response trailers"
            ]
        );
    }

    #[test]
    fn a_response_body_rewritten_by_one_policy_reaches_the_next_at_its_new_size() {
        let (mut pipeline, journal) = policies(&["a", "b", "c"])
            .response_body(
                2,
                &[
                    Verdict::Pause.into(),
                    BodyVerdict {
                        verdict: Verdict::Continue,
                        resized_to: Some(3),
                    },
                ],
            )
            .start();
        pipeline.on_request_headers(&mut (), true);
        taken(&journal);
        assert_eq!(pipeline.on_response_body(&mut (), 8, false), Flow::Pause);
        assert_eq!(pipeline.on_response_body(&mut (), 20, true), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "c response body 8",
                "b response body 8",
                "a response body 8",
                "c response body 20",
                "b response body 3",
                "a response body 3",
            ]
        );
    }

    fn call(pipeline: &mut Pipeline<Fake>, token: u32) -> Flow {
        pipeline.on_call_response(&mut (), |member, _| member.call_response(token))
    }

    #[test]
    fn a_member_holding_the_request_for_a_call_lets_the_later_ones_start_from_its_answer() {
        let (mut pipeline, journal) = policies(&["auth", "ext", "quota"])
            .headers(1, &[HOLD])
            .calls(1, &[CallVerdict::Nothing, CallVerdict::Resumed])
            .start();
        assert_eq!(pipeline.on_request_headers(&mut (), true), Flow::Pause);
        assert_eq!(
            taken(&journal),
            ["auth headers eos=true", "ext headers eos=true"]
        );
        // Another call's answer: nothing moves.
        assert_eq!(call(&mut pipeline, 3), Flow::Pause);
        assert_eq!(call(&mut pipeline, 4), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "auth call 3",
                "ext call 3",
                "quota call 3",
                "auth call 4",
                "ext call 4",
                "quota call 4",
                "quota headers eos=true"
            ]
        );
    }

    #[test]
    fn the_body_held_while_waiting_for_a_call_reaches_the_later_members_on_release() {
        let (mut pipeline, journal) = policies(&["ext", "validate"])
            .headers(0, &[HOLD])
            .body(0, &[HOLD.into(), HOLD.into()])
            .calls(0, &[CallVerdict::Resumed])
            .start();
        assert_eq!(pipeline.on_request_headers(&mut (), false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 4, false), Flow::Pause);
        assert_eq!(pipeline.on_request_body(&mut (), 9, true), Flow::Pause);
        taken(&journal);
        assert_eq!(call(&mut pipeline, 7), Flow::Continue);
        assert_eq!(
            taken(&journal),
            [
                "ext call 7",
                "validate call 7",
                "validate headers eos=false",
                "validate body 9 eos=true"
            ]
        );
        // New data is for everyone again.
        assert_eq!(pipeline.on_request_body(&mut (), 12, true), Flow::Continue);
        assert_eq!(
            taken(&journal),
            ["ext body 12 eos=true", "validate body 12 eos=true"]
        );
    }

    #[test]
    fn trailers_held_while_waiting_for_a_call_reach_the_later_members_on_release() {
        let (mut pipeline, journal) = policies(&["ext", "validate"])
            .headers(0, &[HOLD])
            .body(0, &[HOLD.into()])
            .trailers(0, &[HOLD])
            .calls(0, &[CallVerdict::Resumed])
            .start();
        pipeline.on_request_headers(&mut (), false);
        pipeline.on_request_body(&mut (), 3, false);
        assert_eq!(pipeline.on_request_trailers(&mut ()), Flow::Pause);
        taken(&journal);
        assert_eq!(call(&mut pipeline, 7), Flow::Continue);
        assert_eq!(
            taken(&journal)[2..],
            [
                "validate headers eos=false",
                "validate body 3 eos=false",
                "validate trailers"
            ]
        );
    }

    #[test]
    fn held_trailers_reach_a_later_member_that_holds_the_unfinished_body() {
        let (mut pipeline, journal) = policies(&["ext", "validate"])
            .headers(0, &[HOLD])
            .body(0, &[HOLD.into()])
            .trailers(0, &[HOLD])
            .headers(1, &[HOLD])
            .body(1, &[HOLD.into()])
            .calls(0, &[CallVerdict::Resumed])
            .start();
        pipeline.on_request_headers(&mut (), false);
        pipeline.on_request_body(&mut (), 3, false);
        pipeline.on_request_trailers(&mut ());
        taken(&journal);
        assert_eq!(call(&mut pipeline, 7), Flow::Continue);
        assert_eq!(
            taken(&journal)[2..],
            [
                "validate headers eos=false",
                "validate body 3 eos=false",
                "validate trailers"
            ]
        );
    }

    #[test]
    fn a_member_answering_from_a_call_ends_the_request_phase() {
        let (mut pipeline, journal) = policies(&["ext", "quota"])
            .headers(0, &[HOLD])
            .calls(0, &[CallVerdict::Answered])
            .start();
        pipeline.on_request_headers(&mut (), true);
        assert_eq!(call(&mut pipeline, 7), Flow::Pause);
        assert!(pipeline.answered());
        assert_eq!(
            taken(&journal),
            ["ext headers eos=true", "ext call 7", "quota call 7"]
        );
    }

    #[test]
    fn a_resume_from_a_member_not_holding_the_request_changes_nothing() {
        let (mut pipeline, journal) = policies(&["auth", "ext", "quota"])
            .headers(1, &[HOLD])
            .calls(0, &[CallVerdict::Resumed])
            .start();
        pipeline.on_request_headers(&mut (), true);
        assert_eq!(call(&mut pipeline, 7), Flow::Pause);
        assert!(!taken(&journal)
            .iter()
            .any(|line| line.starts_with("quota headers")));
    }

    #[test]
    fn the_fleet_barrier_after_a_released_member_still_holds_the_request() {
        let (mut pipeline, journal) = policies(&["ext", "quota", "map"])
            .headers(0, &[HOLD])
            .calls(0, &[CallVerdict::Resumed])
            .start_with_barrier(2);
        pipeline.on_request_headers(&mut (), true);
        assert_eq!(call(&mut pipeline, 7), Flow::Pause);
        assert!(pipeline.at_barrier());
        taken(&journal);
        set_store_pending(false);
        assert_eq!(pipeline.release(&mut ()), Flow::Continue);
        assert_eq!(taken(&journal), ["map headers eos=true"]);
    }
}
