//! The proxy-wasm adapter of sign-auth: the filter as a `.wasm` module
//! and as the gateway module's section. Re-exported from the crate root.

use crate::backend::{KEY_ID_HEADER, SIGNATURE_HEADER, SIGNED_HEADERS_HEADER, TIMESTAMP_HEADER};
use crate::policy::{codes, now_ms, BackendSigner, FleetCheck, Pending, SignAuth, Step, Verified};
use crate::*;
use gateway_common::adapter::{self, BufferedBody, Filter};
use gateway_common::config::ConfigError;
use gateway_common::error::GatewayError;
use gateway_common::fleet::client::{self as fleet_client, Answer, Waiting};
use gateway_common::fleet::wire::Failure;
use gateway_common::fleet::FleetMetrics;
use gateway_common::host::ProxyWasmHost;
use gateway_common::identity::{self, Identity};
use gateway_common::metrics::{Counter, DenialCounters};
use gateway_common::store::ProxyWasmStore;
use gateway_common::stream::PolicySteps;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

const SIGNATURE_HEADERS: [&str; 4] = [
    "x-ca-signature",
    "x-ca-signature-headers",
    "x-ca-signature-method",
    "x-ca-nonce",
];

/// `allowed`, `anonymous`, and `denied.<code>` per error code.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    allowed: Counter,
    anonymous: Counter,
    nonce_unchecked: Counter,
    denied: DenialCounters<{ codes::COUNT }>,
    fleet: FleetMetrics,
}

impl Metrics {
    pub fn define() -> Self {
        Self {
            allowed: Counter::define(FILTER_NAME, "allowed"),
            anonymous: Counter::define(FILTER_NAME, "anonymous"),
            nonce_unchecked: Counter::define(FILTER_NAME, "nonce_unchecked"),
            denied: DenialCounters::define(FILTER_NAME, &codes::ALL),
            fleet: FleetMetrics::define(FILTER_NAME),
        }
    }
}

/// The filter, as the shared root context sees it.
pub struct SignAuthFilter;

impl Filter for SignAuthFilter {
    const NAME: &'static str = FILTER_NAME;
    type Policy = SignAuth;
    type Metrics = Metrics;

    fn compile(bytes: &[u8]) -> Result<SignAuth, ConfigError> {
        compile_config(bytes)
    }

    fn prepare(policy: &SignAuth) -> Result<(), String> {
        policy
            .nonce_table()
            .initialize(&ProxyWasmStore)
            .map_err(|e| format!("cannot create the nonce table in shared data: {e:?}"))
    }

    fn define_metrics() -> Metrics {
        Metrics::define()
    }

    fn uses_fleet(policy: &SignAuth) -> bool {
        policy.fleet().is_some()
    }

    /// Still a proxy-wasm context of its own (see `http_context`).
    fn steps(_: &Rc<Self::Policy>, _: Self::Metrics) -> Option<Box<dyn PolicySteps>> {
        None
    }

    fn http_context(policy: Rc<SignAuth>, metrics: Metrics) -> Box<dyn HttpContext> {
        Box::new(SignAuthHttp {
            policy,
            metrics,
            pending: None,
            fleet: Waiting::default(),
        })
    }
}

pub struct SignAuthHttp {
    policy: Rc<SignAuth>,
    metrics: Metrics,
    pending: Option<Box<Pending>>,
    /// A nonce on its way to the fleet store.
    fleet: Waiting<Box<FleetCheck>>,
}

impl SignAuthHttp {
    fn reject(&self, error: &GatewayError) -> Action {
        self.metrics.denied.inc(error);
        adapter::send_error(error);
        Action::Pause
    }

    fn pass(&self, verified: Option<Verified>) {
        self.count_pass(verified.as_ref());
        self.forward(verified.as_ref());
    }

    fn count_pass(&self, verified: Option<&Verified>) {
        match verified {
            Some(verified) => {
                self.metrics.allowed.inc();
                if verified.nonce_unchecked {
                    self.metrics.nonce_unchecked.inc();
                }
            }
            None => self.metrics.anonymous.inc(),
        }
    }

    /// What the upstream sees of a request let through.
    fn forward(&self, verified: Option<&Verified>) {
        if self.policy.strip_signature_headers() {
            for name in SIGNATURE_HEADERS {
                adapter::set_request_header(name, None);
            }
        }
        if let Some(verified) = verified {
            self.publish(&verified.identity);
        }
        if let Some(signer) = self.policy.backend_signer() {
            self.sign_for_backend(signer);
        }
    }

    fn take(&mut self, step: Step) -> Action {
        match step {
            Step::Pass(verified) => {
                self.pass(verified);
                Action::Continue
            }
            Step::Reject(error) => self.reject(&error),
            Step::NeedBody(pending) => {
                // Only the headers step asks for the body.
                self.pending = Some(pending);
                Action::Pause
            }
            Step::CheckFleet(check) => self.check_fleet(check),
        }
    }

    /// Sends the nonce to the fleet store. The single filter holds the
    /// request for the answer; in the gateway module the nonce joins the
    /// request's one call and the request goes on to the next policies
    /// meanwhile, refused when the answer says it is a replay.
    fn check_fleet(&mut self, check: Box<FleetCheck>) -> Action {
        let Some(fleet) = self.policy.fleet() else {
            // Only a policy with a fleet store asks for a fleet check; were
            // it otherwise, this Envoy's table decides, as without a store.
            let verdict = self
                .policy
                .conclude(*check, &Err(Failure::Dispatch), &ProxyWasmStore);
            return self.take(Step::from(verdict));
        };
        match fleet_client::submit(&fleet.store, self.policy.fleet_ops(&check)) {
            Ok(ticket) => {
                let holds = ticket.holds_request();
                if !holds {
                    self.forward(Some(&check.verified));
                }
                self.fleet.start(check, ticket);
                if holds {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
            Err(failure) => match self.conclude(*check, Err(failure)) {
                Ok(verified) => {
                    self.pass(Some(verified));
                    Action::Continue
                }
                Err(error) => self.reject(&error),
            },
        }
    }

    fn conclude(&self, check: FleetCheck, answer: Answer) -> Result<Verified, GatewayError> {
        let mode = self
            .policy
            .fleet()
            .map(|f| f.failure_mode)
            .unwrap_or_default();
        let failure = policy::fleet_failure(&answer);
        let now = now_ms(&ProxyWasmHost);
        self.metrics
            .fleet
            .note(FILTER_NAME, failure.as_ref(), mode, now);
        self.policy.conclude(check, &answer, &ProxyWasmStore)
    }

    fn publish(&self, identity: &Identity) {
        identity::publish(&ProxyWasmHost, identity);
        if self.policy.forward_identity_headers() {
            adapter::set_request_header(IDENTITY_HEADERS[0], Some(&identity.app_key));
            if let Some(name) = &identity.app_name {
                adapter::set_request_header(IDENTITY_HEADERS[1], Some(name));
            }
            if let Some(api) = &identity.api {
                adapter::set_request_header(IDENTITY_HEADERS[2], Some(api));
            }
        }
    }

    /// Signs the request as it leaves this filter (after identity headers).
    fn sign_for_backend(&self, signer: &BackendSigner) {
        for name in [
            KEY_ID_HEADER,
            TIMESTAMP_HEADER,
            SIGNED_HEADERS_HEADER,
            SIGNATURE_HEADER,
        ] {
            adapter::set_request_header(name, None);
        }
        let method = adapter::request_header(":method").unwrap_or_default();
        let path = adapter::request_header(":path").unwrap_or_default();
        let headers: Vec<(String, String)> = signer
            .headers
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    adapter::request_header(name).unwrap_or_default(),
                )
            })
            .collect();
        // The path was already checked when parameters were read; a path that
        // cannot be decoded is forwarded unsigned and the backend refuses it.
        if let Ok(signed) = backend::sign(
            &signer.key.id,
            &signer.secret,
            now_ms(&ProxyWasmHost),
            &method,
            &path,
            &headers,
        ) {
            for (name, value) in signed {
                adapter::set_request_header(name, Some(&value));
            }
        }
    }
}

impl Context for SignAuthHttp {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some((check, ticket, answer)) = self.fleet.answered(token, body_size) else {
            return;
        };
        let _reads = gateway_common::host::callback_scope();
        match self.conclude(*check, answer) {
            Ok(verified) if ticket.holds_request() => {
                self.pass(Some(verified));
                fleet_client::resume_request();
            }
            // Batched: forwarded already, when the nonce was sent.
            Ok(verified) => self.count_pass(Some(&verified)),
            Err(error) => {
                self.reject(&error);
            }
        }
    }
}

impl HttpContext for SignAuthHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        for name in IDENTITY_HEADERS {
            adapter::set_request_header(name, None);
        }
        let step = self
            .policy
            .begin(&ProxyWasmHost, &ProxyWasmStore, end_of_stream);
        if let Step::NeedBody(_) = step {
            let declared = adapter::declared_body_length();
            if declared.is_some_and(|len| len > self.policy.max_body_bytes()) {
                return self.reject(&codes::BODY_TOO_LARGE);
            }
        }
        self.take(step)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.fleet.holds_request() {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let _reads = gateway_common::host::callback_scope();
        if self.fleet.holds_request() {
            // Holding the headers alone would not hold the body back.
            return Action::Pause;
        }
        if self.pending.is_none() {
            return Action::Continue;
        }
        let body = match adapter::buffer_request_body(
            body_size,
            end_of_stream,
            self.policy.max_body_bytes(),
        ) {
            BufferedBody::Incomplete => return Action::Pause,
            BufferedBody::TooLarge => {
                self.pending = None;
                return self.reject(&codes::BODY_TOO_LARGE);
            }
            BufferedBody::Complete(body) => body,
        };
        let Some(pending) = self.pending.take() else {
            return Action::Continue;
        };
        let now = now_ms(&ProxyWasmHost);
        let step = self.policy.finish(*pending, &body, &ProxyWasmStore, now);
        self.take(step)
    }
}

#[cfg(feature = "entrypoint")]
gateway_common::declare_root!(
    gateway_common::adapter::RootRank::Filter,
    gateway_common::adapter::FilterRoot::<SignAuthFilter>::default()
);
