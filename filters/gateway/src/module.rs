//! The gateway module over any host: its policies, loaded from the
//! module's document ([`GatewayPolicies`], a root's), and each request's
//! pipeline of the policies' steps ([`GatewayRequest`]), whose fleet checks
//! travel in one call per request. The proxy-wasm root and HTTP context
//! (`wasm.rs`) and the native module's hooks (`filters/native-host`) hand
//! each callback over with their host.

use crate::pipeline::{self, BodyVerdict, CallVerdict, Flow, Pipeline, Verdict};
use crate::{config, MODULE_NAME};
use access_control::AccessControlFilter;
use circuit_breaker::CircuitBreakerFilter;
use error_mapping::ErrorMappingFilter;
use ext_auth::ExtAuthFilter;
use gateway_common::fleet::client::Answer;
use gateway_common::hosting::{
    HostedSteps, Loaded, LoadedPolicy, RequestHost, RootHost, SharedRequest,
};
use gateway_common::stream::{CallAnswer, Level};
use gateway_registry::Section;
use ip_acl::IpAclFilter;
use log_push::LogPushWorker;
use param_validation::ParamValidationFilter;
use request_mapping::RequestMappingFilter;
use response_cache::ResponseCacheFilter;
use routing::RoutingFilter;
use sign_auth::SignAuthFilter;
use std::rc::Rc;
use std::time::Duration;
use threat_protection::ThreatProtectionFilter;
use throttling::ThrottlingFilter;

/// Loads one section with its filter's code, logging any error as that
/// filter would.
fn load(section: Section, bytes: &[u8], host: &mut dyn RootHost) -> Option<Box<dyn LoadedPolicy>> {
    match section {
        Section::SignAuth => Loaded::<SignAuthFilter>::boxed(bytes, host),
        Section::IpAcl => Loaded::<IpAclFilter>::boxed(bytes, host),
        Section::ExtAuth => Loaded::<ExtAuthFilter>::boxed(bytes, host),
        Section::AccessControl => Loaded::<AccessControlFilter>::boxed(bytes, host),
        Section::ResponseCache => Loaded::<ResponseCacheFilter>::boxed(bytes, host),
        Section::ErrorMapping => Loaded::<ErrorMappingFilter>::boxed(bytes, host),
        Section::Routing => Loaded::<RoutingFilter>::boxed(bytes, host),
        Section::Throttling => Loaded::<ThrottlingFilter>::boxed(bytes, host),
        Section::ParamValidation => Loaded::<ParamValidationFilter>::boxed(bytes, host),
        Section::ThreatProtection => Loaded::<ThreatProtectionFilter>::boxed(bytes, host),
        Section::RequestMapping => Loaded::<RequestMappingFilter>::boxed(bytes, host),
        Section::CircuitBreaker => Loaded::<CircuitBreakerFilter>::boxed(bytes, host),
        Section::LogPush => {
            let worker =
                LogPushWorker::load(bytes, host, |host| log_push::steps::Metrics::define(host))?;
            Some(Box::new(worker))
        }
    }
}

/// The module's enabled policies, in order, as one root holds them.
#[derive(Default)]
pub struct GatewayPolicies {
    policies: Vec<Box<dyn LoadedPolicy>>,
    shutting_down: bool,
}

impl GatewayPolicies {
    /// Loads the module's document; `None` refuses it (every faulty
    /// section is logged).
    pub fn load(document: &[u8], host: &mut dyn RootHost) -> Option<Self> {
        let sections = match config::split(document) {
            Ok(sections) => sections,
            Err(err) => {
                host.log(
                    Level::Error,
                    format_args!("{MODULE_NAME}: invalid configuration: {err}"),
                );
                return None;
            }
        };
        // Every section is loaded, so every faulty one is logged at once.
        let loaded: Vec<Option<Box<dyn LoadedPolicy>>> = sections
            .iter()
            .map(|(section, bytes)| load(*section, bytes, host))
            .collect();
        let policies = loaded.into_iter().collect::<Option<Vec<_>>>()?;
        Some(Self {
            policies,
            shutting_down: false,
        })
    }

    /// How often the policies want [`GatewayPolicies::on_tick`].
    pub fn tick_period(&self) -> Option<Duration> {
        self.policies.iter().filter_map(|p| p.tick_period()).min()
    }

    /// Some policy's requests may be woken by other requests.
    pub fn wakes(&self) -> bool {
        self.policies.iter().any(|p| p.wakes())
    }

    pub fn on_tick(&mut self, host: &mut dyn RootHost) {
        for policy in &mut self.policies {
            policy.on_tick(host);
        }
    }

    /// A call the root made answered: shown to the policy that made it.
    /// Returns whether the module, shutting down, is now done.
    pub fn on_call_answer(
        &mut self,
        token: u32,
        answer: &dyn CallAnswer,
        host: &mut dyn RootHost,
    ) -> bool {
        let handled = self
            .policies
            .iter_mut()
            .any(|policy| policy.on_call_answer(token, answer, host));
        handled && self.shutting_down && self.idle()
    }

    /// The host removes the configuration; whether the module is done at
    /// once. Every policy is told, even after one that is not done yet.
    pub fn on_done(&mut self, host: &mut dyn RootHost) -> bool {
        self.shutting_down = true;
        let mut done = true;
        for policy in &mut self.policies {
            done &= policy.on_done(host);
        }
        done
    }

    /// Nothing in flight and nothing left to send.
    pub fn idle(&self) -> bool {
        self.policies.iter().all(|p| p.idle())
    }

    /// A request's pipeline of the policies' steps; `None` when no policy
    /// is enabled.
    pub fn request(&self) -> Option<GatewayRequest> {
        if self.policies.is_empty() {
            return None;
        }
        let shared = Rc::new(SharedRequest::default());
        let members = self
            .policies
            .iter()
            .map(|policy| Member(HostedSteps::new(policy.steps(), Some(Rc::clone(&shared)))))
            .collect();
        let mut pipeline = Pipeline::new(members);
        // No policy after the last one with fleet checks sees the request
        // before their answer (as in the chain, where those policies decide
        // before the later ones run).
        if let Some(last) = self.policies.iter().rposition(|p| p.uses_fleet()) {
            let shared = Rc::clone(&shared);
            pipeline =
                pipeline.with_barrier(last + 1, move || shared.batch.borrow().holds_replies());
        }
        Some(GatewayRequest { pipeline, shared })
    }
}

/// A policy as a member of the pipeline: its steps over the host of the
/// callback, sharing the request's fleet batch.
struct Member(HostedSteps);

impl<'h> pipeline::Member<dyn RequestHost + 'h> for Member {
    fn request_headers(
        &mut self,
        host: &mut (dyn RequestHost + 'h),
        end_of_stream: bool,
    ) -> Verdict {
        self.0.verdict(host, |steps, stream| {
            steps.on_request_headers(stream, end_of_stream)
        })
    }

    fn request_body(
        &mut self,
        host: &mut (dyn RequestHost + 'h),
        body_size: usize,
        end_of_stream: bool,
    ) -> BodyVerdict {
        if self.0.holds_for_fleet() {
            return Verdict::Pause.into();
        }
        let (verdict, resized_to) = self.0.request_body(host, body_size, end_of_stream);
        BodyVerdict {
            verdict,
            resized_to,
        }
    }

    fn request_trailers(&mut self, host: &mut (dyn RequestHost + 'h)) -> Verdict {
        if self.0.holds_for_fleet() {
            return Verdict::Pause;
        }
        self.0.request_trailers(host)
    }

    fn response_headers(
        &mut self,
        host: &mut (dyn RequestHost + 'h),
        end_of_stream: bool,
    ) -> Verdict {
        self.0.verdict(host, |steps, stream| {
            steps.on_response_headers(stream, end_of_stream)
        })
    }

    fn response_body(
        &mut self,
        host: &mut (dyn RequestHost + 'h),
        body_size: usize,
        end_of_stream: bool,
    ) -> BodyVerdict {
        let (verdict, resized_to) = self.0.response_body(host, body_size, end_of_stream);
        BodyVerdict {
            verdict,
            resized_to,
        }
    }

    fn response_trailers(&mut self, host: &mut (dyn RequestHost + 'h)) -> Verdict {
        self.0.response_trailers(host)
    }

    fn log(&mut self, host: &mut (dyn RequestHost + 'h)) {
        self.0.verdict(host, |steps, stream| {
            steps.on_log(stream);
            Verdict::Continue
        });
    }
}

/// What the pipeline makes of a step's verdict on an answer or a wake.
fn call_verdict(verdict: Option<Verdict>) -> CallVerdict {
    match verdict {
        Some(Verdict::Continue) => CallVerdict::Resumed,
        Some(Verdict::Answered) => CallVerdict::Answered,
        Some(Verdict::Pause) | None => CallVerdict::Nothing,
    }
}

/// One request: where it stands in the policies and with the fleet store.
/// Each callback returns the flow (`Continue`: the request goes on, or is
/// resumed when the callback was not Envoy's request callback).
pub struct GatewayRequest {
    pipeline: Pipeline<Member>,
    /// The request's fleet checks and reads, shared with its policies'
    /// streams.
    shared: Rc<SharedRequest>,
}

impl GatewayRequest {
    pub fn on_request_headers(&mut self, host: &mut dyn RequestHost, end_of_stream: bool) -> Flow {
        self.request_step(host, |pipeline, host| {
            pipeline.on_request_headers(host, end_of_stream)
        })
    }

    pub fn on_request_body(
        &mut self,
        host: &mut dyn RequestHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        self.request_step(host, |pipeline, host| {
            pipeline.on_request_body(host, body_size, end_of_stream)
        })
    }

    pub fn on_request_trailers(&mut self, host: &mut dyn RequestHost) -> Flow {
        self.request_step(host, |pipeline, host| pipeline.on_request_trailers(host))
    }

    pub fn on_response_headers(&mut self, host: &mut dyn RequestHost, end_of_stream: bool) -> Flow {
        self.pipeline.on_response_headers(host, end_of_stream)
    }

    pub fn on_response_body(
        &mut self,
        host: &mut dyn RequestHost,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        self.pipeline
            .on_response_body(host, body_size, end_of_stream)
    }

    pub fn on_response_trailers(&mut self, host: &mut dyn RequestHost) -> Flow {
        self.pipeline.on_response_trailers(host)
    }

    /// The answer to a call of the request: the fleet's to the batch, or a
    /// policy's own (each knows the tokens of the calls it made).
    pub fn on_call_answer(
        &mut self,
        host: &mut dyn RequestHost,
        token: u32,
        answer: &dyn CallAnswer,
    ) -> Flow {
        let fleet_answer = self
            .shared
            .batch
            .borrow_mut()
            .answer(token, answer, &mut *host);
        if let Some(fleet_answer) = fleet_answer {
            return self.conclude_fleet(host, fleet_answer);
        }
        // A policy's own call: the policies after one letting go of the
        // request may send fleet checks, batched as ever.
        self.request_step(host, |pipeline, host| {
            pipeline.on_call_response(host, |member, host| {
                call_verdict(member.0.call_answer(host, token, answer))
            })
        })
    }

    /// Another request of the worker woke this one.
    pub fn on_wake(&mut self, host: &mut dyn RequestHost) -> Flow {
        self.request_step(host, |pipeline, host| {
            pipeline.on_call_response(host, |member, host| call_verdict(Some(member.0.wake(host))))
        })
    }

    pub fn on_log(&mut self, host: &mut dyn RequestHost) {
        self.pipeline.on_log(host);
    }

    /// The stream goes: every policy lets go of what it holds for others.
    pub fn end(&mut self, host: &mut dyn RequestHost) {
        for member in self.pipeline.members_mut() {
            member.0.end(host);
        }
    }

    /// Runs a request callback of the pipeline, then sends what the
    /// policies gathered and holds the request for it.
    fn request_step(
        &mut self,
        host: &mut dyn RequestHost,
        step: impl FnOnce(&mut Pipeline<Member>, &mut dyn RequestHost) -> Flow,
    ) -> Flow {
        let flow = step(&mut self.pipeline, host);
        let sent = {
            let mut batch = self.shared.batch.borrow_mut();
            if batch.has_unsent() {
                Some(batch.send(&mut *host))
            } else {
                None
            }
        };
        if let Some(Err(failure)) = sent {
            // Every policy decides by its failure mode, now.
            return self.conclude_fleet(host, Err(failure));
        }
        if self.pipeline.answered() {
            if !self.shared.batch.borrow().in_flight() {
                self.release_held_reply(host);
            }
            return Flow::Pause;
        }
        flow
    }

    /// Shows the fleet's answer to the policies, then lets the request on
    /// past the barrier (unless one of them answered it).
    fn conclude_fleet(&mut self, host: &mut dyn RequestHost, answer: Answer) -> Flow {
        self.show_answer(host, &answer);
        self.pipeline.release(host)
    }

    /// Shows the fleet's answer to the policies, in order, until one of
    /// them answers the request; a reply held meanwhile goes out unless an
    /// earlier policy's verdict replaced it.
    fn show_answer(&mut self, host: &mut dyn RequestHost, answer: &Answer) {
        let answered = self
            .pipeline
            .members_mut()
            .iter_mut()
            .any(|member| member.0.show_fleet_answer(host, answer) == Some(Verdict::Answered));
        if answered {
            // An earlier policy's verdict: a later one's reply is moot.
            self.shared.batch.borrow_mut().take_held_reply();
            self.pipeline.mark_answered();
        } else {
            self.release_held_reply(host);
        }
    }

    /// Sends the local reply a policy made while the fleet's answer was
    /// not in (see `Batch::holds_replies`).
    fn release_held_reply(&mut self, host: &mut dyn RequestHost) {
        let held = self.shared.batch.borrow_mut().take_held_reply();
        if let Some(reply) = held {
            let headers: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            host.send_local_reply(reply.status, &headers, &reply.body);
        }
    }
}
