//! The proxy-wasm side of the gateway module: its root context, which
//! loads every section with its filter's code, and each request's pipeline
//! of the policies' own HTTP contexts. Re-exported from the crate root.

use crate::config::Section;
use crate::pipeline::{BodyVerdict, CallVerdict, Flow, Member, Pipeline, Verdict};
use crate::{config, MODULE_NAME};
use circuit_breaker::CircuitBreakerFilter;
use ext_auth::ExtAuthFilter;
use gateway_common::adapter::{
    self, Filter, Loaded, LoadedPolicy, ProxyWasmCallAnswer, ProxyWasmStream, StreamNotes,
};
use gateway_common::fleet::client::{self as fleet_client, Batch, Ticket};
use gateway_common::host::{stream_scope, StreamMemory};
use gateway_common::metrics::VmMemory;
use gateway_common::stream::PolicySteps;
use gateway_common::wake::{self, WakeableContext, WAKE_TOKEN};
use ip_acl::IpAclFilter;
use log_push::LogPushWorker;
use param_validation::ParamValidationFilter;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use request_mapping::RequestMappingFilter;
use sign_auth::SignAuthFilter;
use std::time::Duration;
use throttling::ThrottlingFilter;

/// Loads one section with its filter's code, logging any error as that
/// filter would.
fn load(section: Section, bytes: &[u8]) -> Option<Box<dyn LoadedPolicy>> {
    fn boxed<F: Filter>(bytes: &[u8]) -> Option<Box<dyn LoadedPolicy>> {
        let loaded = Loaded::<F>::load(bytes, F::define_metrics)?;
        Some(Box::new(loaded))
    }
    match section {
        Section::SignAuth => boxed::<SignAuthFilter>(bytes),
        Section::IpAcl => boxed::<IpAclFilter>(bytes),
        Section::ExtAuth => boxed::<ExtAuthFilter>(bytes),
        Section::Throttling => boxed::<ThrottlingFilter>(bytes),
        Section::ParamValidation => boxed::<ParamValidationFilter>(bytes),
        Section::RequestMapping => boxed::<RequestMappingFilter>(bytes),
        Section::CircuitBreaker => boxed::<CircuitBreakerFilter>(bytes),
        Section::LogPush => {
            let worker = LogPushWorker::load(bytes, log_push::Metrics::define)?;
            Some(Box::new(worker))
        }
    }
}

/// The module's root context: the enabled policies, in order.
#[derive(Default)]
pub struct GatewayRoot {
    policies: Vec<Box<dyn LoadedPolicy>>,
    shutting_down: bool,
    vm_memory: VmMemory,
}

/// How often the VM's memory is reported when no policy ticks sooner.
const VM_MEMORY_PERIOD: Duration = Duration::from_secs(1);

impl Context for GatewayRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        if wake::forward_call_answer(token, headers, body_size, trailers) {
            return;
        }
        let handled = self
            .policies
            .iter_mut()
            .any(|policy| policy.on_http_call_response(token, body_size));
        if handled && self.shutting_down && self.policies.iter().all(|p| p.idle()) {
            self.done();
        }
    }

    fn on_done(&mut self) -> bool {
        self.shutting_down = true;
        self.vm_memory.withdraw();
        // Every policy is told, even after one that is not done yet.
        let mut done = true;
        for policy in &mut self.policies {
            done &= policy.on_done();
        }
        done
    }
}

impl RootContext for GatewayRoot {
    fn on_configure(&mut self, _config_size: usize) -> bool {
        let sections = match config::split(&adapter::plugin_configuration()) {
            Ok(sections) => sections,
            Err(err) => {
                adapter::log(
                    LogLevel::Error,
                    &format!("{MODULE_NAME}: invalid configuration: {err}"),
                );
                return false;
            }
        };
        // Every section is loaded, so every faulty one is logged at once.
        let loaded: Vec<Option<Box<dyn LoadedPolicy>>> = sections
            .iter()
            .map(|(section, bytes)| load(*section, bytes))
            .collect();
        let Some(policies) = loaded.into_iter().collect::<Option<Vec<_>>>() else {
            return false;
        };
        // Natively there is no VM to report, so no tick of its own.
        let vm_memory_period = cfg!(target_arch = "wasm32").then_some(VM_MEMORY_PERIOD);
        if let Some(period) = policies
            .iter()
            .filter_map(|p| p.tick_period())
            .chain(vm_memory_period)
            .min()
        {
            self.set_tick_period(period);
        }
        self.vm_memory.withdraw();
        self.vm_memory = VmMemory::define(MODULE_NAME);
        self.vm_memory.report();
        adapter::run_policies_in_pipeline();
        if policies.iter().any(|p| p.wakes()) {
            wake::open_wake_queue();
        }
        self.policies = policies;
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        wake::on_queue_ready(queue_id);
    }

    fn on_tick(&mut self) {
        for policy in &mut self.policies {
            policy.on_tick();
        }
        self.vm_memory.report();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.policies.is_empty() {
            return None;
        }
        let members = self
            .policies
            .iter()
            .map(|policy| match policy.steps() {
                Some(steps) => PolicyContext::Steps(MemberSteps {
                    steps,
                    id: context_id,
                    fleet: None,
                    call: None,
                }),
                None => PolicyContext::Context(policy.http_context(context_id)),
            })
            .collect();
        let mut pipeline = Pipeline::new(members);
        // No policy after the last one with fleet checks sees the request
        // before their answer (as in the chain, where those policies decide
        // before the later ones run).
        if let Some(last) = self.policies.iter().rposition(|p| p.uses_fleet()) {
            pipeline = pipeline.with_barrier(last + 1, fleet_client::holds_replies);
        }
        let http = Box::new(GatewayHttp {
            stream: Stream {
                pipeline,
                batch: Batch::default(),
            },
            memory: StreamMemory::default(),
        });
        if self.policies.iter().any(|p| p.wakes()) {
            return Some(Box::new(WakeableContext::new(context_id, http)));
        }
        Some(http)
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A policy as a member of the pipeline: its steps over the stream seam,
/// whose verdicts are values, or (for policies not yet written against the
/// seam) its own HTTP context, whose notes during the callback tell a local
/// reply from a `Pause`.
enum PolicyContext {
    Steps(MemberSteps),
    Context(Box<dyn HttpContext>),
}

/// A policy's steps and what it waits for: the fleet operations it sent
/// and its call in flight.
struct MemberSteps {
    steps: Box<dyn PolicySteps>,
    /// The request's context id.
    id: u32,
    fleet: Option<Ticket>,
    call: Option<u32>,
}

impl MemberSteps {
    /// Runs a step over the stream and keeps the fleet operations and the
    /// call it sent; the body size it left, if it replaced the body. A
    /// step's verdict is what it did. Notes are for the policies' own
    /// contexts: one a step took all the same (through `adapter`'s
    /// functions) is dropped here, so it can never be read as a later
    /// member's.
    fn run(
        &mut self,
        step: impl FnOnce(&mut dyn PolicySteps, &mut ProxyWasmStream) -> Verdict,
    ) -> (Verdict, Option<usize>) {
        let mut stream = ProxyWasmStream::new(self.id);
        let verdict = step(self.steps.as_mut(), &mut stream);
        let _ = adapter::take_stream_notes();
        if let Some(ticket) = stream.fleet {
            self.fleet = Some(ticket);
        }
        if let Some(token) = stream.called {
            self.call = Some(token);
        }
        (verdict, stream.resized_to)
    }

    fn verdict(
        &mut self,
        step: impl FnOnce(&mut dyn PolicySteps, &mut ProxyWasmStream) -> Verdict,
    ) -> Verdict {
        self.run(step).0
    }

    /// It holds the request for its own fleet call.
    fn holds_for_fleet(&self) -> bool {
        self.fleet.as_ref().is_some_and(Ticket::holds_request)
    }

    /// What the answer to its own fleet call, its call or a wake did.
    fn call_response(&mut self, token: u32, body_size: usize) -> CallVerdict {
        let verdict = if let Some(answer) = self
            .fleet
            .as_mut()
            .filter(|ticket| ticket.holds_request())
            .and_then(|ticket| ticket.answer(token, body_size))
        {
            self.fleet = None;
            self.verdict(|steps, stream| steps.on_fleet_answer(stream, answer))
        } else if self.call == Some(token) {
            self.call = None;
            let answer = ProxyWasmCallAnswer { body_size };
            self.verdict(|steps, stream| steps.on_call_answer(stream, &answer))
        } else if token == WAKE_TOKEN {
            self.verdict(|steps, stream| steps.on_wake(stream))
        } else {
            return CallVerdict::Nothing;
        };
        match verdict {
            Verdict::Continue => CallVerdict::Resumed,
            Verdict::Answered => CallVerdict::Answered,
            Verdict::Pause => CallVerdict::Nothing,
        }
    }
}

impl Drop for MemberSteps {
    fn drop(&mut self) {
        self.run(|steps, stream| {
            steps.on_stream_end(stream);
            Verdict::Continue
        });
    }
}

fn verdict(action: Action, notes: StreamNotes) -> Verdict {
    match action {
        _ if notes.answered => Verdict::Answered,
        Action::Pause => Verdict::Pause,
        _ => Verdict::Continue,
    }
}

/// The verdict of a policy's own context on the callback it just ran.
fn verdict_of(action: Action) -> Verdict {
    verdict(action, adapter::take_stream_notes())
}

impl Member for PolicyContext {
    fn request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Verdict {
        match self {
            Self::Steps(member) => {
                member.verdict(|steps, stream| steps.on_request_headers(stream, end_of_stream))
            }
            Self::Context(http) => {
                verdict_of(http.on_http_request_headers(num_headers, end_of_stream))
            }
        }
    }

    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> BodyVerdict {
        match self {
            // Holding the headers alone would not hold the body back.
            Self::Steps(member) if member.holds_for_fleet() => Verdict::Pause.into(),
            Self::Steps(member) => {
                let (verdict, resized_to) = member
                    .run(|steps, stream| steps.on_request_body(stream, body_size, end_of_stream));
                BodyVerdict {
                    verdict,
                    resized_to,
                }
            }
            Self::Context(http) => {
                let action = http.on_http_request_body(body_size, end_of_stream);
                let notes = adapter::take_stream_notes();
                BodyVerdict {
                    verdict: verdict(action, notes),
                    resized_to: notes.request_body_size,
                }
            }
        }
    }

    fn request_trailers(&mut self, num_trailers: usize) -> Verdict {
        match self {
            Self::Steps(member) if member.holds_for_fleet() => Verdict::Pause,
            Self::Steps(member) => {
                member.verdict(|steps, stream| steps.on_request_trailers(stream))
            }
            Self::Context(http) => verdict_of(http.on_http_request_trailers(num_trailers)),
        }
    }

    fn response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Verdict {
        match self {
            Self::Steps(member) => {
                member.verdict(|steps, stream| steps.on_response_headers(stream, end_of_stream))
            }
            Self::Context(http) => {
                verdict_of(http.on_http_response_headers(num_headers, end_of_stream))
            }
        }
    }

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Verdict {
        match self {
            Self::Steps(_) => Verdict::Continue,
            Self::Context(http) => verdict_of(http.on_http_response_body(body_size, end_of_stream)),
        }
    }

    fn response_trailers(&mut self, num_trailers: usize) -> Verdict {
        match self {
            Self::Steps(_) => Verdict::Continue,
            Self::Context(http) => verdict_of(http.on_http_response_trailers(num_trailers)),
        }
    }

    fn call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) -> CallVerdict {
        match self {
            Self::Steps(member) => member.call_response(token, body_size),
            Self::Context(http) => {
                http.on_http_call_response(token, headers, body_size, trailers);
                let notes = adapter::take_stream_notes();
                if notes.answered {
                    CallVerdict::Answered
                } else if notes.resumed {
                    CallVerdict::Resumed
                } else {
                    CallVerdict::Nothing
                }
            }
        }
    }

    fn log(&mut self) {
        match self {
            Self::Steps(member) => {
                member.run(|steps, stream| {
                    steps.on_log(stream);
                    Verdict::Continue
                });
            }
            Self::Context(http) => http.on_log(),
        }
    }
}

impl PolicyContext {
    /// Shows the request's fleet answer to the member (its share of it, for
    /// steps); whether it answered the request.
    fn show_fleet_answer(&mut self, token: u32, answer: &fleet_client::Answer) -> bool {
        match self {
            Self::Steps(member) => {
                let Some(share) = member
                    .fleet
                    .as_ref()
                    .and_then(|ticket| ticket.share(answer))
                else {
                    return false;
                };
                member.fleet = None;
                member.verdict(|steps, stream| steps.on_fleet_answer(stream, share))
                    == Verdict::Answered
            }
            Self::Context(http) => {
                http.on_http_call_response(token, 0, 0, 0);
                adapter::take_stream_notes().answered
            }
        }
    }

    fn on_done(&mut self) -> bool {
        match self {
            Self::Steps(_) => true,
            Self::Context(http) => http.on_done(),
        }
    }
}

/// One request's context: the pipeline of the policies' own contexts.
struct GatewayHttp {
    stream: Stream,
    /// Reads that hold for the whole stream, shared by its callbacks.
    memory: StreamMemory,
}

/// Where the request stands in the policies and with the fleet store.
struct Stream {
    pipeline: Pipeline<PolicyContext>,
    /// The request's fleet checks.
    batch: Batch,
}

impl Stream {
    /// Runs a request callback of the pipeline with the batch open, then
    /// sends what the policies gathered and holds the request for it.
    fn request_step(&mut self, step: impl FnOnce(&mut Pipeline<PolicyContext>) -> Flow) -> Action {
        let flow = {
            let _batch = fleet_client::batch_scope(&mut self.batch);
            step(&mut self.pipeline)
        };
        if self.batch.has_unsent() {
            if let Err(failure) = self.batch.send() {
                // Every policy decides by its failure mode, now.
                return action(self.conclude_fleet(fleet_client::UNSENT, Err(failure)));
            }
        }
        if self.pipeline.answered() {
            if !self.batch.in_flight() {
                self.release_held_reply();
            }
            return Action::Pause;
        }
        action(flow)
    }

    /// Shows the fleet's answer to the policies, then lets the request on
    /// past the barrier (unless one of them answered it); the flow after
    /// that (`Continue`: resume it).
    fn conclude_fleet(&mut self, token: u32, answer: fleet_client::Answer) -> Flow {
        self.show_answer(token, answer);
        self.pipeline.release()
    }

    /// Shows the fleet's answer to the policies, in order, until one of
    /// them answers the request; a reply held meanwhile goes out unless an
    /// earlier policy's verdict replaced it.
    fn show_answer(&mut self, token: u32, answer: fleet_client::Answer) {
        let answered = fleet_client::with_answer(token, answer.clone(), || {
            for member in self.pipeline.members_mut() {
                if member.show_fleet_answer(token, &answer) {
                    return true;
                }
            }
            false
        });
        if answered {
            // An earlier policy's verdict: a later one's reply is moot.
            self.batch.take_held_reply();
            self.pipeline.mark_answered();
        } else {
            self.release_held_reply();
        }
    }

    /// Sends the local reply a policy made while the fleet's answer was
    /// not in (see `gateway_common::fleet::client::holds_replies`).
    fn release_held_reply(&mut self) {
        if let Some(reply) = self.batch.take_held_reply() {
            reply.send();
        }
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

impl Context for GatewayHttp {
    /// Told to every policy: each knows the tokens of the calls it made;
    /// the fleet call's answer is shown to them by [`Stream::show_answer`].
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) {
        let _reads = stream_scope(&mut self.memory);
        if let Some(answer) = self.stream.batch.answer(token, body_size) {
            if self.stream.conclude_fleet(token, answer) == Flow::Continue {
                let _ = hostcalls::resume_http_request();
            }
            return;
        }
        // A policy's own call, or a wake: the policies after one letting
        // go of the request may send fleet checks, batched as ever.
        let action = self.stream.request_step(|pipeline| {
            pipeline.on_call_response(|member| {
                member.call_response(token, headers, body_size, trailers)
            })
        });
        if action == Action::Continue {
            let _ = hostcalls::resume_http_request();
        }
    }

    fn on_done(&mut self) -> bool {
        let mut done = true;
        for member in self.stream.pipeline.members_mut() {
            done &= member.on_done();
        }
        done
    }
}

impl HttpContext for GatewayHttp {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let _reads = stream_scope(&mut self.memory);
        // Notes left by anything before this request are not this request's.
        adapter::take_stream_notes();
        self.stream
            .request_step(|pipeline| pipeline.on_request_headers(num_headers, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _reads = stream_scope(&mut self.memory);
        self.stream
            .request_step(|pipeline| pipeline.on_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        let _reads = stream_scope(&mut self.memory);
        self.stream
            .request_step(|pipeline| pipeline.on_request_trailers(num_trailers))
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let _reads = stream_scope(&mut self.memory);
        action(
            self.stream
                .pipeline
                .on_response_headers(num_headers, end_of_stream),
        )
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _reads = stream_scope(&mut self.memory);
        action(
            self.stream
                .pipeline
                .on_response_body(body_size, end_of_stream),
        )
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        let _reads = stream_scope(&mut self.memory);
        action(self.stream.pipeline.on_response_trailers(num_trailers))
    }

    fn on_log(&mut self) {
        let _reads = stream_scope(&mut self.memory);
        self.stream.pipeline.on_log();
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Module,
    GatewayRoot::default()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_reply_is_told_apart_from_a_pause_by_the_policy_notes() {
        let answered = StreamNotes {
            answered: true,
            ..StreamNotes::default()
        };
        assert_eq!(verdict(Action::Pause, answered), Verdict::Answered);
        assert_eq!(verdict(Action::Continue, answered), Verdict::Answered);
        assert_eq!(
            verdict(Action::Pause, StreamNotes::default()),
            Verdict::Pause
        );
        assert_eq!(
            verdict(Action::Continue, StreamNotes::default()),
            Verdict::Continue
        );
    }
}
