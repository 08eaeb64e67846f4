//! The proxy-wasm side of the gateway module: its root context, which
//! loads every section with its filter's code, and each request's pipeline
//! of the policies' steps over the stream seam, whose fleet checks travel
//! in one call per request. Re-exported from the crate root.

use crate::pipeline::{self, BodyVerdict, CallVerdict, Flow, Pipeline, Verdict};
use crate::{config, MODULE_NAME};
use circuit_breaker::CircuitBreakerFilter;
use ext_auth::ExtAuthFilter;
use gateway_common::adapter::{self, Filter, HostedSteps, Loaded, LoadedPolicy};
use gateway_common::fleet::client::{self as fleet_client, Batch};
use gateway_common::host::{stream_scope, StreamMemory};
use gateway_common::metrics::{ProxyWasmMetrics, VmMemory};
use gateway_common::wake::{self, WakeableContext};
use gateway_registry::Section;
use ip_acl::IpAclFilter;
use log_push::LogPushWorker;
use param_validation::ParamValidationFilter;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use request_mapping::RequestMappingFilter;
use sign_auth::SignAuthFilter;
use std::cell::RefCell;
use std::rc::Rc;
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
            let worker = LogPushWorker::load(bytes, || {
                log_push::steps::Metrics::define(&mut ProxyWasmMetrics)
            })?;
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
        let batch = Rc::new(RefCell::new(Batch::default()));
        let members = self
            .policies
            .iter()
            .map(|policy| {
                Member(HostedSteps::new(
                    policy.steps(),
                    context_id,
                    Some(Rc::clone(&batch)),
                ))
            })
            .collect();
        let mut pipeline = Pipeline::new(members);
        // No policy after the last one with fleet checks sees the request
        // before their answer (as in the chain, where those policies decide
        // before the later ones run).
        if let Some(last) = self.policies.iter().rposition(|p| p.uses_fleet()) {
            let batch = Rc::clone(&batch);
            pipeline = pipeline.with_barrier(last + 1, move || batch.borrow().holds_replies());
        }
        let http = Box::new(GatewayHttp {
            stream: Stream { pipeline, batch },
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
/// whose verdicts are values, sharing the request's fleet batch.
struct Member(HostedSteps);

impl pipeline::Member for Member {
    fn request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Verdict {
        self.0
            .verdict(|steps, stream| steps.on_request_headers(stream, end_of_stream))
    }

    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> BodyVerdict {
        if self.0.holds_for_fleet() {
            return Verdict::Pause.into();
        }
        let (verdict, resized_to) = self
            .0
            .run(|steps, stream| steps.on_request_body(stream, body_size, end_of_stream));
        BodyVerdict {
            verdict,
            resized_to,
        }
    }

    fn request_trailers(&mut self, _num_trailers: usize) -> Verdict {
        if self.0.holds_for_fleet() {
            return Verdict::Pause;
        }
        self.0
            .verdict(|steps, stream| steps.on_request_trailers(stream))
    }

    fn response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Verdict {
        self.0
            .verdict(|steps, stream| steps.on_response_headers(stream, end_of_stream))
    }

    fn response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Verdict {
        Verdict::Continue
    }

    fn response_trailers(&mut self, _num_trailers: usize) -> Verdict {
        Verdict::Continue
    }

    /// The answer to its own fleet call, its call, or a wake.
    fn call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) -> CallVerdict {
        match self.0.call_response(token, body_size) {
            Some(Verdict::Continue) => CallVerdict::Resumed,
            Some(Verdict::Answered) => CallVerdict::Answered,
            Some(Verdict::Pause) | None => CallVerdict::Nothing,
        }
    }

    fn log(&mut self) {
        self.0.verdict(|steps, stream| {
            steps.on_log(stream);
            Verdict::Continue
        });
    }
}

/// One request's context: the pipeline of the policies' steps.
struct GatewayHttp {
    stream: Stream,
    /// Reads that hold for the whole stream, shared by its callbacks.
    memory: StreamMemory,
}

/// Where the request stands in the policies and with the fleet store.
struct Stream {
    pipeline: Pipeline<Member>,
    /// The request's fleet checks, shared with its policies' streams.
    batch: Rc<RefCell<Batch>>,
}

impl Stream {
    /// Runs a request callback of the pipeline, then sends what the
    /// policies gathered and holds the request for it.
    fn request_step(&mut self, step: impl FnOnce(&mut Pipeline<Member>) -> Flow) -> Action {
        let flow = step(&mut self.pipeline);
        let sent = {
            let mut batch = self.batch.borrow_mut();
            if batch.has_unsent() {
                Some(batch.send())
            } else {
                None
            }
        };
        if let Some(Err(failure)) = sent {
            // Every policy decides by its failure mode, now.
            return action(self.conclude_fleet(Err(failure)));
        }
        if self.pipeline.answered() {
            if !self.batch.borrow().in_flight() {
                self.release_held_reply();
            }
            return Action::Pause;
        }
        action(flow)
    }

    /// Shows the fleet's answer to the policies, then lets the request on
    /// past the barrier (unless one of them answered it); the flow after
    /// that (`Continue`: resume it).
    fn conclude_fleet(&mut self, answer: fleet_client::Answer) -> Flow {
        self.show_answer(&answer);
        self.pipeline.release()
    }

    /// Shows the fleet's answer to the policies, in order, until one of
    /// them answers the request; a reply held meanwhile goes out unless an
    /// earlier policy's verdict replaced it.
    fn show_answer(&mut self, answer: &fleet_client::Answer) {
        let answered = self
            .pipeline
            .members_mut()
            .iter_mut()
            .any(|member| member.0.show_fleet_answer(answer) == Some(Verdict::Answered));
        if answered {
            // An earlier policy's verdict: a later one's reply is moot.
            self.batch.borrow_mut().take_held_reply();
            self.pipeline.mark_answered();
        } else {
            self.release_held_reply();
        }
    }

    /// Sends the local reply a policy made while the fleet's answer was
    /// not in (see `Batch::holds_replies`).
    fn release_held_reply(&mut self) {
        let held = self.batch.borrow_mut().take_held_reply();
        if let Some(reply) = held {
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
        let answer = self.stream.batch.borrow_mut().answer(token, body_size);
        if let Some(answer) = answer {
            if self.stream.conclude_fleet(answer) == Flow::Continue {
                let _ = hostcalls::resume_http_request();
            }
            return;
        }
        // A policy's own call, or a wake: the policies after one letting
        // go of the request may send fleet checks, batched as ever.
        let action = self.stream.request_step(|pipeline| {
            pipeline.on_call_response(|member| {
                pipeline::Member::call_response(member, token, headers, body_size, trailers)
            })
        });
        if action == Action::Continue {
            let _ = hostcalls::resume_http_request();
        }
    }
}

impl HttpContext for GatewayHttp {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let _reads = stream_scope(&mut self.memory);
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
