//! sign-auth's part in one request, written against the stream seam: the
//! signature is checked on the request headers (the request held for its
//! body when the signature covers it), the nonce recorded in this Envoy's
//! table or sent to the fleet store, and what passes is forwarded without
//! the client's signature headers, with the verified identity published
//! and, when configured, signed again for the backend.

use crate::backend::{
    self, BackendFormat, KEY_ID_HEADER, SIGNATURE_HEADER, SIGNED_HEADERS_HEADER, TIMESTAMP_HEADER,
};
use crate::huawei;
use crate::jwt::CacheUse;
use crate::modes::Source;
use crate::policy::{
    self, codes, now_ms, BackendSigner, FleetCheck, Pending, SignAuth, Step, Verified,
};
use crate::{FILTER_NAME, IDENTITY_HEADERS};
use gateway_common::error::GatewayError;
use gateway_common::fleet::wire::{Answer, Failure};
use gateway_common::fleet::FleetMetrics;
use gateway_common::identity::{self, Identity};
use gateway_common::metrics::{Counter, DefineMetrics, DenialCounters};
use gateway_common::params::retain_raw_pairs;
use gateway_common::slots::Stored;
use gateway_common::stream::{
    buffer_request_body, declared_body_length, refuse, refuse_with, BufferedBody, FleetCall,
    PolicySteps, Stream, Verdict,
};
use std::rc::Rc;

const SIGNATURE_HEADERS: [&str; 4] = [
    "x-ca-signature",
    "x-ca-signature-headers",
    "x-ca-signature-method",
    "x-ca-nonce",
];

/// `allowed`, `anonymous`, `nonce_unchecked`, `denied.<code>` per error
/// code, and the fleet store's counters.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    allowed: Counter,
    anonymous: Counter,
    nonce_unchecked: Counter,
    token_cache_hit: Counter,
    token_cache_miss: Counter,
    token_cache_evicted: Counter,
    pub(crate) jwks_fetched: Counter,
    pub(crate) jwks_failed: Counter,
    denied: DenialCounters<{ codes::COUNT }>,
    fleet: FleetMetrics,
}

impl Metrics {
    pub fn define(host: &mut dyn DefineMetrics) -> Self {
        Self {
            allowed: host.define_counter(FILTER_NAME, "allowed"),
            anonymous: host.define_counter(FILTER_NAME, "anonymous"),
            nonce_unchecked: host.define_counter(FILTER_NAME, "nonce_unchecked"),
            token_cache_hit: host.define_counter(FILTER_NAME, "jwt.cache_hit"),
            token_cache_miss: host.define_counter(FILTER_NAME, "jwt.cache_miss"),
            token_cache_evicted: host.define_counter(FILTER_NAME, "jwt.cache_evicted"),
            jwks_fetched: host.define_counter(FILTER_NAME, "jwt.jwks_fetched"),
            jwks_failed: host.define_counter(FILTER_NAME, "jwt.jwks_failed"),
            denied: DenialCounters::define_with(host, FILTER_NAME, &codes::ALL),
            fleet: FleetMetrics::define_with(host, FILTER_NAME),
        }
    }
}

pub struct SignAuthSteps {
    policy: Rc<SignAuth>,
    metrics: Metrics,
    /// A request held for its body.
    pending: Option<Box<Pending>>,
    /// A nonce sent to the fleet store, and how.
    fleet: Option<(Box<FleetCheck>, FleetCall)>,
}

impl SignAuthSteps {
    pub fn new(policy: Rc<SignAuth>, metrics: Metrics) -> Self {
        Self {
            policy,
            metrics,
            pending: None,
            fleet: None,
        }
    }

    fn take(&mut self, stream: &mut dyn Stream, step: Step) -> Verdict {
        match step {
            Step::Pass(verified) => self.pass(stream, verified.as_ref()),
            Step::Reject(error) => refuse(stream, &self.metrics.denied, &error),
            Step::Challenge(error, challenge) => refuse_with(
                stream,
                &self.metrics.denied,
                &error,
                &[("www-authenticate", challenge)],
            ),
            Step::NeedBody(pending) => {
                // Only the headers step asks for the body.
                self.pending = Some(pending);
                Verdict::Pause
            }
            Step::CheckFleet(check) => self.check_fleet(stream, check),
        }
    }

    fn pass(&self, stream: &mut dyn Stream, verified: Option<&Verified>) -> Verdict {
        self.count_pass(stream, verified);
        self.forward(stream, verified);
        Verdict::Continue
    }

    fn count_pass(&self, stream: &mut dyn Stream, verified: Option<&Verified>) {
        match verified {
            Some(verified) => {
                stream.increment(self.metrics.allowed, 1);
                if verified.nonce_unchecked {
                    stream.increment(self.metrics.nonce_unchecked, 1);
                }
                match verified.token_cache {
                    Some(CacheUse::Hit) => stream.increment(self.metrics.token_cache_hit, 1),
                    Some(CacheUse::Missed(stored)) => {
                        stream.increment(self.metrics.token_cache_miss, 1);
                        if stored == Stored::Evicted {
                            stream.increment(self.metrics.token_cache_evicted, 1);
                        }
                    }
                    None => {}
                }
            }
            None => stream.increment(self.metrics.anonymous, 1),
        }
    }

    /// What the upstream sees of a request let through.
    fn forward(&self, stream: &mut dyn Stream, verified: Option<&Verified>) {
        let keeps_credentials = verified.is_some_and(|v| v.strip.is_none());
        if self.policy.strip_signature_headers() && !keeps_credentials {
            for name in SIGNATURE_HEADERS {
                stream.set_request_header(name, None);
            }
        }
        match verified.and_then(|v| v.strip.as_ref()) {
            Some(Source::Header(name)) => stream.set_request_header(name, None),
            Some(Source::Query(name)) => remove_query_parameter(stream, name),
            Some(Source::CaHeaders | Source::Cookie) | None => {}
        }
        if let Some(verified) = verified {
            self.publish(stream, &verified.identity);
            for (name, value) in &verified.headers {
                stream.set_request_header(name, Some(value));
            }
        }
        if self.policy.backend_signer().is_some() {
            self.sign_for_backend(stream);
        }
    }

    /// Sends the nonce to the fleet store. A single filter holds the
    /// request for the answer; in the gateway module the nonce joins the
    /// request's one call and the request goes on to the next policies
    /// meanwhile (forwarded as it will leave), refused if the answer says
    /// it is a replay.
    fn check_fleet(&mut self, stream: &mut dyn Stream, check: Box<FleetCheck>) -> Verdict {
        let Some(fleet) = self.policy.fleet() else {
            // Only a policy with a fleet store asks for a fleet check; were
            // it otherwise, this Envoy's table decides, as without a store.
            let verdict =
                self.policy
                    .conclude(*check, &Err(Failure::Dispatch), stream.shared_data());
            return self.take(stream, Step::from(verdict));
        };
        match stream.send_to_fleet(&fleet.store, self.policy.fleet_ops(&check)) {
            Ok(FleetCall::Own) => {
                self.fleet = Some((check, FleetCall::Own));
                Verdict::Pause
            }
            Ok(FleetCall::Batched) => {
                self.forward(stream, Some(&check.verified));
                self.fleet = Some((check, FleetCall::Batched));
                Verdict::Continue
            }
            Err(failure) => {
                let verdict = self.conclude(stream, *check, Err(failure));
                self.take(stream, Step::from(verdict))
            }
        }
    }

    fn conclude(
        &self,
        stream: &mut dyn Stream,
        check: FleetCheck,
        answer: Answer,
    ) -> Result<Verified, GatewayError> {
        let mode = self
            .policy
            .fleet()
            .map(|f| f.failure_mode)
            .unwrap_or_default();
        let failure = policy::fleet_failure(&answer);
        let now = now_ms(&*stream);
        self.metrics
            .fleet
            .count(stream, FILTER_NAME, failure.as_ref(), mode, now);
        self.policy.conclude(check, &answer, stream.shared_data())
    }

    fn publish(&self, stream: &mut dyn Stream, identity: &Identity) {
        identity::publish(&*stream, identity);
        if self.policy.forward_identity_headers() {
            stream.set_request_header(IDENTITY_HEADERS[0], Some(&identity.app_key));
            if let Some(name) = &identity.app_name {
                stream.set_request_header(IDENTITY_HEADERS[1], Some(name));
            }
            if let Some(api) = &identity.api {
                stream.set_request_header(IDENTITY_HEADERS[2], Some(api));
            }
            if let Some(user) = &identity.user {
                stream.set_request_header(IDENTITY_HEADERS[3], Some(user));
            }
        }
    }

    /// Signs the request as it leaves this filter (after identity headers).
    fn sign_for_backend(&self, stream: &mut dyn Stream) {
        let Some(signer) = self.policy.backend_signer() else {
            return;
        };
        for name in [
            KEY_ID_HEADER,
            TIMESTAMP_HEADER,
            SIGNED_HEADERS_HEADER,
            SIGNATURE_HEADER,
        ] {
            stream.set_request_header(name, None);
        }
        let method = stream.request_header(":method").unwrap_or_default();
        let path = stream.request_header(":path").unwrap_or_default();
        if signer.format == BackendFormat::Huawei {
            self.sign_as_huawei(stream, signer, &method, &path);
            return;
        }
        let headers: Vec<(String, String)> = signer
            .headers
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    stream.request_header(name).unwrap_or_default(),
                )
            })
            .collect();
        // The path was already checked when parameters were read; a path that
        // cannot be decoded is forwarded unsigned and the backend refuses it.
        if let Ok(signed) = backend::sign(
            &signer.key.id,
            &signer.secret,
            now_ms(&*stream),
            &method,
            &path,
            &headers,
        ) {
            for (name, value) in signed {
                stream.set_request_header(name, Some(&value));
            }
        }
    }
}

impl SignAuthSteps {
    /// Huawei's form: `Authorization: SDK-HMAC-SHA256 Access=<key id>, …`
    /// over the host, the listed headers present and `X-Sdk-Date`, the body
    /// left out (`X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD`).
    fn sign_as_huawei(
        &self,
        stream: &mut dyn Stream,
        signer: &BackendSigner,
        method: &str,
        path: &str,
    ) {
        for name in [
            "authorization",
            huawei::DATE_HEADER,
            huawei::CONTENT_SHA256_HEADER,
        ] {
            stream.set_request_header(name, None);
        }
        let mut headers = vec![(
            "host".to_string(),
            stream.request_header(":authority").unwrap_or_default(),
        )];
        headers.extend(signer.headers.iter().filter_map(|name| {
            stream
                .request_header(name)
                .map(|value| (name.clone(), value))
        }));
        let signed = huawei::sign_with(
            &signer.key.id,
            &signer.huawei_secret,
            &huawei::ClientRequest {
                method,
                path_and_query: path,
                headers: &headers,
                body: b"",
                unsigned_payload: true,
            },
            now_ms(&*stream),
        );
        for (name, value) in signed.headers {
            stream.set_request_header(&name, Some(&value));
        }
    }
}

/// Removes the query parameter `name` from the request's path.
fn remove_query_parameter(stream: &mut dyn Stream, name: &str) {
    let line = stream.request_line();
    let Some((path, query)) = line.path.split_once('?') else {
        return;
    };
    if let Some(kept) = retain_raw_pairs(query, |key| key != name) {
        let separator = if kept.is_empty() { "" } else { "?" };
        stream.set_request_header(":path", Some(&format!("{path}{separator}{kept}")));
    }
}

impl PolicySteps for SignAuthSteps {
    fn on_request_headers(&mut self, stream: &mut dyn Stream, end_of_stream: bool) -> Verdict {
        for name in IDENTITY_HEADERS {
            stream.set_request_header(name, None);
        }
        for name in self.policy.claim_headers() {
            stream.set_request_header(name, None);
        }
        let step = self
            .policy
            .begin(&*stream, stream.shared_data(), end_of_stream);
        if let Step::NeedBody(_) = step {
            if declared_body_length(stream).is_some_and(|len| len > self.policy.max_body_bytes()) {
                return refuse(stream, &self.metrics.denied, &codes::BODY_TOO_LARGE);
            }
        }
        self.take(stream, step)
    }

    fn on_request_body(
        &mut self,
        stream: &mut dyn Stream,
        body_size: usize,
        end_of_stream: bool,
    ) -> Verdict {
        if self.pending.is_none() {
            return Verdict::Continue;
        }
        let body = match buffer_request_body(
            stream,
            body_size,
            end_of_stream,
            self.policy.max_body_bytes(),
        ) {
            BufferedBody::Incomplete => return Verdict::Pause,
            BufferedBody::TooLarge => {
                self.pending = None;
                return refuse(stream, &self.metrics.denied, &codes::BODY_TOO_LARGE);
            }
            BufferedBody::Complete(body) => body,
        };
        let Some(pending) = self.pending.take() else {
            return Verdict::Continue;
        };
        let now = now_ms(&*stream);
        let step = self
            .policy
            .finish(*pending, &body, stream.shared_data(), now);
        self.take(stream, step)
    }

    fn on_fleet_answer(&mut self, stream: &mut dyn Stream, answer: Answer) -> Verdict {
        let Some((check, call)) = self.fleet.take() else {
            return Verdict::Continue;
        };
        match (self.conclude(stream, *check, answer), call) {
            (Ok(verified), FleetCall::Own) => self.pass(stream, Some(&verified)),
            // Batched: forwarded already, when the nonce was sent.
            (Ok(verified), FleetCall::Batched) => {
                self.count_pass(stream, Some(&verified));
                Verdict::Continue
            }
            (Err(error), _) => refuse(stream, &self.metrics.denied, &error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{answer, client, fleet_policy, policy, Client, CONFIG};
    use gateway_common::fleet::wire::{Op, State};
    use gateway_common::host::Host;
    use gateway_common::identity::APP_KEY_PROPERTY;
    use gateway_common::stream::{Effect, FakeStream};

    fn steps_of(policy: SignAuth, stream: &mut FakeStream) -> SignAuthSteps {
        SignAuthSteps::new(Rc::new(policy), Metrics::define(stream))
    }

    fn stream_of(client: &Client) -> FakeStream {
        FakeStream::new(client.host())
    }

    fn form_client() -> Client {
        let mut c = client("POST", "/x?z=1");
        c.form = "name=hello+world&a=1";
        c.headers.push((
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ));
        c
    }

    fn published_app(stream: &FakeStream) -> Option<String> {
        stream
            .property(&[APP_KEY_PROPERTY])
            .map(|value| String::from_utf8_lossy(&value).into_owned())
    }

    #[test]
    fn a_signed_request_goes_on_without_its_signature_and_with_its_identity() {
        let mut c = client("GET", "/orders/7");
        c.headers.push(("x-gw-app-key", "forged".into()));
        let mut stream = stream_of(&c);
        let mut steps = steps_of(policy(CONFIG), &mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert_eq!(stream.reply(), None);
        for name in SIGNATURE_HEADERS {
            assert_eq!(stream.request_header(name), None, "{name} stripped");
        }
        assert_eq!(
            stream.request_header("x-gw-app-key").as_deref(),
            Some("203751")
        );
        assert_eq!(
            stream.request_header("x-gw-app-name").as_deref(),
            Some("mobile")
        );
        assert_eq!(published_app(&stream).as_deref(), Some("203751"));
        assert_eq!(stream.counted(FILTER_NAME, "allowed"), 1);
    }

    #[test]
    fn a_bad_signature_is_answered_and_counted_and_nothing_is_published() {
        let mut c = client("GET", "/orders/7");
        c.secret = "wrong-secret";
        let mut stream = stream_of(&c);
        let mut steps = steps_of(policy(CONFIG), &mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Answered
        );
        let reply = stream.reply().expect("a reply");
        assert_eq!(reply.status, 400);
        assert_eq!(reply.header("x-ca-error-code"), Some("A400IS"));
        assert_eq!(stream.counted(FILTER_NAME, "denied.A400IS"), 1);
        assert_eq!(published_app(&stream), None);
    }

    #[test]
    fn an_unsigned_request_to_an_anonymous_route_is_counted_as_anonymous() {
        let mut stream = FakeStream::new(
            gateway_common::host::FakeHost::new()
                .with_header(":method", "GET")
                .with_header(":path", "/public/a")
                .with_header("x-gw-app-key", "forged"),
        );
        let mut steps = steps_of(policy(CONFIG), &mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert_eq!(stream.request_header("x-gw-app-key"), None);
        assert_eq!(stream.counted(FILTER_NAME, "anonymous"), 1);
    }

    #[test]
    fn a_replayed_nonce_is_refused_by_this_envoys_table() {
        let c = client("GET", "/orders/7");
        let p = Rc::new(policy(CONFIG));
        let mut first = stream_of(&c);
        let metrics = Metrics::define(&mut first);
        let mut steps = SignAuthSteps::new(Rc::clone(&p), metrics);
        assert_eq!(
            steps.on_request_headers(&mut first, true),
            Verdict::Continue
        );
        let mut again = stream_of(&c);
        again.shared = std::mem::take(&mut first.shared);
        let metrics = Metrics::define(&mut again);
        let mut steps = SignAuthSteps::new(p, metrics);
        assert_eq!(
            steps.on_request_headers(&mut again, true),
            Verdict::Answered
        );
        assert_eq!(again.reply().map(|r| r.status), Some(400));
        assert_eq!(again.counted(FILTER_NAME, "denied.A400IN"), 1);
    }

    #[test]
    fn a_signed_form_body_is_held_until_whole_then_checked() {
        let c = form_client();
        let mut stream = stream_of(&c);
        stream.body = c.form.as_bytes().to_vec();
        let mut steps = steps_of(policy(CONFIG), &mut stream);
        assert_eq!(steps.on_request_headers(&mut stream, false), Verdict::Pause);
        assert_eq!(steps.on_request_body(&mut stream, 5, false), Verdict::Pause);
        assert_eq!(
            steps.on_request_body(&mut stream, c.form.len(), true),
            Verdict::Continue
        );
        assert_eq!(stream.counted(FILTER_NAME, "allowed"), 1);
        // Once decided, later chunks pass untouched.
        assert_eq!(
            steps.on_request_body(&mut stream, 0, true),
            Verdict::Continue
        );
    }

    #[test]
    fn a_tampered_form_body_is_refused() {
        let c = form_client();
        let mut stream = stream_of(&c);
        stream.body = b"name=evil&a=1".to_vec();
        let mut steps = steps_of(policy(CONFIG), &mut stream);
        assert_eq!(steps.on_request_headers(&mut stream, false), Verdict::Pause);
        assert_eq!(
            steps.on_request_body(&mut stream, 13, true),
            Verdict::Answered
        );
        assert_eq!(stream.counted(FILTER_NAME, "denied.A400IS"), 1);
    }

    #[test]
    fn a_body_over_the_limit_is_refused_by_its_length_or_as_it_grows() {
        let small = CONFIG.replacen('{', r#"{"max_body_bytes": 8,"#, 1);
        let mut declared = form_client();
        declared.headers.push(("content-length", "20".into()));
        let mut stream = stream_of(&declared);
        let mut steps = steps_of(policy(&small), &mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, false),
            Verdict::Answered
        );
        assert_eq!(stream.reply().map(|r| r.status), Some(413));

        let c = form_client();
        let mut stream = stream_of(&c);
        stream.body = c.form.as_bytes().to_vec();
        let mut steps = steps_of(policy(&small), &mut stream);
        assert_eq!(steps.on_request_headers(&mut stream, false), Verdict::Pause);
        assert_eq!(
            steps.on_request_body(&mut stream, c.form.len(), false),
            Verdict::Answered
        );
        assert_eq!(stream.reply().map(|r| r.status), Some(413));
    }

    #[test]
    fn the_request_is_signed_again_for_the_backend_after_its_identity() {
        let with_backend = CONFIG.replacen(
            '{',
            r#"{"backend_signature": {"keys": [{"id": "gw-1", "secret": "backend-secret"}]},"#,
            1,
        );
        let mut c = client("GET", "/orders/7?b=2&a=1");
        c.headers.push(("x-gw-signature", "forged".into()));
        let mut stream = stream_of(&c);
        let mut steps = steps_of(policy(&with_backend), &mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert_eq!(
            stream.request_header(KEY_ID_HEADER).as_deref(),
            Some("gw-1")
        );
        let signature = stream.request_header(SIGNATURE_HEADER).expect("signed");
        assert_ne!(signature, "forged");
        let signed_headers = stream
            .request_header(SIGNED_HEADERS_HEADER)
            .unwrap_or_default();
        assert!(signed_headers.contains("x-gw-app-key"), "{signed_headers}");
        // The identity headers were set before the signature was made.
        let last_identity = stream.effects.iter().rposition(
            |e| matches!(e, Effect::SetRequestHeader(name, Some(_)) if name == IDENTITY_HEADERS[0]),
        );
        let signature_set = stream.effects.iter().rposition(
            |e| matches!(e, Effect::SetRequestHeader(name, Some(_)) if name == SIGNATURE_HEADER),
        );
        assert!(last_identity < signature_set);
    }

    #[test]
    fn its_own_fleet_call_holds_the_request_until_the_store_answers() {
        let c = client("GET", "/orders/7");
        let mut stream = stream_of(&c);
        let mut steps = steps_of(fleet_policy("deny"), &mut stream);
        assert_eq!(steps.on_request_headers(&mut stream, true), Verdict::Pause);
        let sent = stream.sent_to_fleet();
        assert!(matches!(sent.as_slice(), [[Op::Nonce { .. }]]), "{sent:?}");
        // Not forwarded before the answer.
        assert!(stream.request_header("x-ca-signature").is_some());
        assert_eq!(
            steps.on_fleet_answer(&mut stream, answer(State::Done)),
            Verdict::Continue
        );
        assert_eq!(stream.request_header("x-ca-signature"), None);
        assert_eq!(published_app(&stream).as_deref(), Some("203751"));
        assert_eq!(stream.counted(FILTER_NAME, "allowed"), 1);
        assert_eq!(stream.counted(FILTER_NAME, "fleet.answered"), 1);
    }

    #[test]
    fn a_batched_nonce_goes_on_at_once_and_a_replay_is_refused_on_the_answer() {
        let c = client("GET", "/orders/7");
        let mut stream = stream_of(&c);
        stream.fleet_batches = true;
        let mut steps = steps_of(fleet_policy("deny"), &mut stream);
        assert_eq!(
            steps.on_request_headers(&mut stream, true),
            Verdict::Continue
        );
        assert_eq!(stream.request_header("x-ca-signature"), None, "forwarded");
        assert_eq!(
            steps.on_fleet_answer(&mut stream, answer(State::Refused)),
            Verdict::Answered
        );
        let reply = stream.reply().expect("a reply");
        assert_eq!(reply.header("x-ca-error-code"), Some("A400IN"));
        assert_eq!(stream.counted(FILTER_NAME, "allowed"), 0);
        assert_eq!(stream.counted(FILTER_NAME, "denied.A400IN"), 1);
    }

    #[test]
    fn an_unreachable_store_is_decided_by_the_failure_mode_at_once() {
        let c = client("GET", "/orders/7");
        for (mode, verdict, counter) in [
            ("deny", Verdict::Answered, "denied.A503NU"),
            ("allow", Verdict::Continue, "nonce_unchecked"),
            ("local", Verdict::Continue, "allowed"),
        ] {
            let mut stream = stream_of(&c);
            stream.fleet_unreachable = Some(Failure::Dispatch);
            let mut steps = steps_of(fleet_policy(mode), &mut stream);
            assert_eq!(
                steps.on_request_headers(&mut stream, true),
                verdict,
                "{mode}"
            );
            assert_eq!(stream.counted(FILTER_NAME, counter), 1, "{mode}");
            assert_eq!(stream.counted(FILTER_NAME, "fleet.failure.dispatch"), 1);
            assert_eq!(
                stream.counted(FILTER_NAME, &format!("fleet.failure_mode.{mode}")),
                1
            );
            assert!(stream.sent_to_fleet().is_empty());
        }
    }

    #[test]
    fn a_store_that_answers_badly_is_a_counted_failure() {
        let c = client("GET", "/orders/7");
        let mut stream = stream_of(&c);
        let mut steps = steps_of(fleet_policy("deny"), &mut stream);
        assert_eq!(steps.on_request_headers(&mut stream, true), Verdict::Pause);
        assert_eq!(
            steps.on_fleet_answer(&mut stream, Err(Failure::Status(503))),
            Verdict::Answered
        );
        assert_eq!(stream.reply().map(|r| r.status), Some(503));
        assert_eq!(stream.counted(FILTER_NAME, "fleet.failure.status"), 1);
        assert_eq!(stream.counted(FILTER_NAME, "fleet.failure_mode.deny"), 1);
    }
}
