//! The breaker of one API: its state machine and its rolling window, as one
//! compact record that lives in Envoy shared data. Pure: the clock is a
//! parameter (milliseconds since the epoch), so every transition is testable
//! with a fake clock.
//!
//! ```text
//!            trip condition                 open duration elapsed
//!  CLOSED ─────────────────────▶ OPEN ─────────────────────────▶ HALF-OPEN
//!    ▲                           ▲  ▲                               │  │
//!    │                           │  └── a probe fails, or they ─────┘  │
//!    │                           │      do not finish in time          │
//!    └──────────────── all probes succeed ─────────────────────────────┘
//! ```

use std::fmt;

/// Most buckets a window may have (bounds the record at 32 + 60 × 20 bytes).
pub const MAX_BUCKETS: usize = 60;
/// Most probe calls a half-open breaker may admit.
pub const MAX_PROBES: u16 = 1000;
/// `Retry-After` while every probe slot is taken: how long the probes take
/// is unknown.
const PROBES_OUT_RETRY_AFTER_MS: u64 = 1000;

const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 32;
const BUCKET_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    /// The value of the `state` gauge.
    pub fn gauge_value(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(State::Closed),
            1 => Some(State::Open),
            2 => Some(State::HalfOpen),
            _ => None,
        }
    }

    fn as_byte(self) -> u8 {
        self.gauge_value() as u8
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        })
    }
}

/// The compiled settings of one breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Width of one bucket of the rolling window.
    pub bucket_ms: u32,
    /// Buckets in the window (1..=[`MAX_BUCKETS`]).
    pub buckets: u8,
    /// Calls the window must hold before a rate can trip the breaker.
    pub min_calls: u32,
    pub failure_rate_percent: Option<u32>,
    pub slow_call_rate_percent: Option<u32>,
    pub consecutive_failures: Option<u32>,
    /// How long the first trip keeps the breaker open.
    pub open_ms: u64,
    /// Each further trip without a recovery multiplies the open duration by this.
    pub open_multiplier: f64,
    pub max_open_ms: u64,
    /// Probe calls admitted in half-open; all must succeed to close.
    pub probes: u16,
    /// Probes in flight that make no progress (none finishes) for this long
    /// count as failed; a half-open breaker with none in flight waits for
    /// traffic as long as it takes.
    pub probe_timeout_ms: u64,
}

impl Settings {
    /// Every setting, in a fixed order: names a rule's record in the fleet
    /// store, so Envoys running other settings of a rule (during a
    /// rollout) keep their own record instead of fighting over one.
    pub fn fingerprint(&self) -> String {
        let rate = |r: Option<u32>| r.map_or("-".to_string(), |r| r.to_string());
        format!(
            "{FORMAT_VERSION}/{}/{}/{}/{}/{}/{}/{}/{}/{}/{}/{}",
            self.bucket_ms,
            self.buckets,
            self.min_calls,
            rate(self.failure_rate_percent),
            rate(self.slow_call_rate_percent),
            rate(self.consecutive_failures),
            self.open_ms,
            self.open_multiplier,
            self.max_open_ms,
            self.probes,
            self.probe_timeout_ms
        )
    }

    /// The whole window.
    pub fn window_ms(&self) -> u64 {
        u64::from(self.bucket_ms) * u64::from(self.buckets)
    }

    /// The open duration after `trips` trips in a row (the first is 1).
    pub fn open_duration_ms(&self, trips: u32) -> u64 {
        let growth = self
            .open_multiplier
            .powi(trips.saturating_sub(1).min(1024) as i32);
        let duration = self.open_ms as f64 * growth;
        if duration.is_finite() && duration < self.max_open_ms as f64 {
            (duration as u64).max(1)
        } else {
            self.max_open_ms
        }
    }
}

/// What a finished call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallOutcome {
    pub failed: bool,
    pub slow: bool,
}

/// Given to an admitted call, handed back with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticket {
    /// A normal call while closed; it counts in the window.
    Counted,
    /// One of the probes of half-open period `generation`.
    Probe { generation: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit(Ticket),
    /// The degraded answer; the breaker may admit calls again after this long.
    Reject {
        retry_after_ms: u64,
    },
}

/// Why the breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    FailureRate {
        failures: u32,
        calls: u32,
        threshold_percent: u32,
    },
    SlowCallRate {
        slow: u32,
        calls: u32,
        threshold_percent: u32,
    },
    ConsecutiveFailures(u32),
    OpenDurationElapsed,
    ProbeFailed,
    ProbeTimeout,
    ProbesSucceeded(u16),
    /// Another Envoy changed the fleet breaker; this one read it.
    SeenInFleet,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::FailureRate {
                failures,
                calls,
                threshold_percent,
            } => write!(
                f,
                "{failures} of {calls} calls failed ({}%, threshold {threshold_percent}%)",
                percent(failures, calls)
            ),
            Reason::SlowCallRate {
                slow,
                calls,
                threshold_percent,
            } => write!(
                f,
                "{slow} of {calls} calls were slow ({}%, threshold {threshold_percent}%)",
                percent(slow, calls)
            ),
            Reason::ConsecutiveFailures(n) => write!(f, "{n} consecutive failures"),
            Reason::OpenDurationElapsed => f.write_str("open duration elapsed"),
            Reason::ProbeFailed => f.write_str("a probe call failed"),
            Reason::ProbeTimeout => f.write_str("the probe calls did not finish in time"),
            Reason::ProbesSucceeded(n) => write!(f, "{n} probe calls succeeded"),
            Reason::SeenInFleet => f.write_str("read from the fleet store"),
        }
    }
}

fn percent(part: u32, whole: u32) -> u64 {
    u64::from(part) * 100 / u64::from(whole.max(1))
}

/// A state change, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: Reason,
    /// When the breaker opened: for how long.
    pub open_ms: Option<u64>,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)?;
        if let Some(ms) = self.open_ms {
            write!(f, " for {ms} ms")?;
        }
        write!(f, ": {}", self.reason)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Bucket {
    /// `now / bucket_ms` of the period this bucket counts.
    epoch: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// Calls, failures and slow calls in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowTotals {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

/// One breaker's shared record. Fixed size, no heap: decoded on the stack
/// for each update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    state: State,
    /// Trips since the breaker last closed; grows the open duration.
    trips: u32,
    consecutive_failures: u32,
    /// Counts half-open periods, so a late probe of an earlier one is ignored.
    generation: u32,
    probes_admitted: u16,
    probes_succeeded: u16,
    /// Open: when it may half-open. Half-open with probes in flight: by
    /// when one of them must finish.
    until_ms: u64,
    buckets: [Bucket; MAX_BUCKETS],
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: State::Closed,
            trips: 0,
            consecutive_failures: 0,
            generation: 0,
            probes_admitted: 0,
            probes_succeeded: 0,
            until_ms: 0,
            buckets: [Bucket::default(); MAX_BUCKETS],
        }
    }
}

impl Breaker {
    pub fn state(&self) -> State {
        self.state
    }

    /// When an open breaker may half-open.
    pub fn open_until_ms(&self) -> Option<u64> {
        (self.state == State::Open).then_some(self.until_ms)
    }

    /// Decides for a new call. May move open → half-open (the duration
    /// elapsed), admit a probe, or re-open a half-open breaker whose probes
    /// stopped making progress.
    pub fn admit(&mut self, settings: &Settings, now_ms: u64) -> (Admission, Option<Transition>) {
        match self.state {
            State::Closed => (Admission::Admit(Ticket::Counted), None),
            State::Open if now_ms < self.until_ms => (
                Admission::Reject {
                    retry_after_ms: self.until_ms - now_ms,
                },
                None,
            ),
            State::Open => {
                let transition = self.half_open();
                let (admission, _) = self.admit_probe(settings, now_ms);
                (admission, Some(transition))
            }
            State::HalfOpen => self.admit_probe(settings, now_ms),
        }
    }

    fn probes_in_flight(&self) -> u16 {
        self.probes_admitted.saturating_sub(self.probes_succeeded)
    }

    fn probes_stalled(&self, now_ms: u64) -> bool {
        self.probes_in_flight() > 0 && now_ms >= self.until_ms
    }

    fn admit_probe(&mut self, settings: &Settings, now_ms: u64) -> (Admission, Option<Transition>) {
        if self.probes_stalled(now_ms) {
            let transition = self.open(settings, now_ms, Reason::ProbeTimeout);
            let retry_after_ms = self.until_ms - now_ms;
            return (Admission::Reject { retry_after_ms }, Some(transition));
        }
        if self.probes_admitted < settings.probes {
            if self.probes_in_flight() == 0 {
                self.until_ms = now_ms.saturating_add(settings.probe_timeout_ms);
            }
            self.probes_admitted += 1;
            let ticket = Ticket::Probe {
                generation: self.generation,
            };
            return (Admission::Admit(ticket), None);
        }
        (
            Admission::Reject {
                retry_after_ms: PROBES_OUT_RETRY_AFTER_MS,
            },
            None,
        )
    }

    /// Records the outcome of an admitted call.
    pub fn record(
        &mut self,
        settings: &Settings,
        now_ms: u64,
        ticket: Ticket,
        outcome: CallOutcome,
    ) -> Option<Transition> {
        match (self.state, ticket) {
            (State::Closed, _) => {
                self.count(settings, now_ms, outcome);
                let reason = self.trip_reason(settings, now_ms)?;
                Some(self.open(settings, now_ms, reason))
            }
            (State::HalfOpen, Ticket::Probe { generation }) if generation == self.generation => {
                if self.probes_stalled(now_ms) {
                    return Some(self.open(settings, now_ms, Reason::ProbeTimeout));
                }
                let slow_matters = settings.slow_call_rate_percent.is_some();
                if outcome.failed || (outcome.slow && slow_matters) {
                    return Some(self.open(settings, now_ms, Reason::ProbeFailed));
                }
                self.probes_succeeded = self.probes_succeeded.saturating_add(1);
                if self.probes_succeeded >= settings.probes {
                    return Some(self.close(Reason::ProbesSucceeded(self.probes_succeeded)));
                }
                // Progress: the probes still out get a fresh deadline.
                self.until_ms = now_ms.saturating_add(settings.probe_timeout_ms);
                None
            }
            // Admitted before the breaker opened, or a probe of an earlier
            // half-open period: it says nothing about the current state.
            _ => None,
        }
    }

    /// Gives back an admitted call whose outcome is unknown (answered
    /// without the upstream, or the client left): a probe slot is freed.
    pub fn release(&mut self, ticket: Ticket) {
        if let (State::HalfOpen, Ticket::Probe { generation }) = (self.state, ticket) {
            if generation == self.generation && self.probes_admitted > self.probes_succeeded {
                self.probes_admitted -= 1;
            }
        }
    }

    /// The window's totals at `now_ms`.
    pub fn window(&self, settings: &Settings, now_ms: u64) -> WindowTotals {
        let current = now_ms / u64::from(settings.bucket_ms.max(1));
        let span = u64::from(settings.buckets);
        let mut totals = WindowTotals::default();
        for bucket in &self.buckets[..usize::from(settings.buckets)] {
            if bucket.epoch <= current && bucket.epoch + span > current {
                totals.calls = totals.calls.saturating_add(bucket.calls);
                totals.failures = totals.failures.saturating_add(bucket.failures);
                totals.slow = totals.slow.saturating_add(bucket.slow);
            }
        }
        totals
    }

    fn count(&mut self, settings: &Settings, now_ms: u64, outcome: CallOutcome) {
        let epoch = now_ms / u64::from(settings.bucket_ms.max(1));
        let index = (epoch % u64::from(settings.buckets.max(1))) as usize;
        let bucket = &mut self.buckets[index];
        // A bucket from a later epoch (another worker's clock ran ahead)
        // keeps its counts; only an older one is recycled.
        if bucket.epoch < epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u32::from(outcome.failed));
        bucket.slow = bucket.slow.saturating_add(u32::from(outcome.slow));
        self.consecutive_failures = if outcome.failed {
            self.consecutive_failures.saturating_add(1)
        } else {
            0
        };
    }

    fn trip_reason(&self, settings: &Settings, now_ms: u64) -> Option<Reason> {
        if let Some(limit) = settings.consecutive_failures {
            if self.consecutive_failures >= limit {
                return Some(Reason::ConsecutiveFailures(self.consecutive_failures));
            }
        }
        let totals = self.window(settings, now_ms);
        if totals.calls < settings.min_calls {
            return None;
        }
        let reached = |part: u32, threshold: u32| {
            u64::from(part) * 100 >= u64::from(threshold) * u64::from(totals.calls)
        };
        if let Some(threshold) = settings.failure_rate_percent {
            if reached(totals.failures, threshold) {
                return Some(Reason::FailureRate {
                    failures: totals.failures,
                    calls: totals.calls,
                    threshold_percent: threshold,
                });
            }
        }
        if let Some(threshold) = settings.slow_call_rate_percent {
            if reached(totals.slow, threshold) {
                return Some(Reason::SlowCallRate {
                    slow: totals.slow,
                    calls: totals.calls,
                    threshold_percent: threshold,
                });
            }
        }
        None
    }

    fn open(&mut self, settings: &Settings, now_ms: u64, reason: Reason) -> Transition {
        let from = self.state;
        self.trips = self.trips.saturating_add(1);
        let open_ms = settings.open_duration_ms(self.trips);
        *self = Self {
            state: State::Open,
            trips: self.trips,
            generation: self.generation,
            until_ms: now_ms.saturating_add(open_ms),
            ..Self::default()
        };
        Transition {
            from,
            to: State::Open,
            reason,
            open_ms: Some(open_ms),
        }
    }

    fn half_open(&mut self) -> Transition {
        *self = Self {
            state: State::HalfOpen,
            trips: self.trips,
            generation: self.generation.wrapping_add(1),
            ..Self::default()
        };
        Transition {
            from: State::Open,
            to: State::HalfOpen,
            reason: Reason::OpenDurationElapsed,
            open_ms: None,
        }
    }

    fn close(&mut self, reason: Reason) -> Transition {
        let from = self.state;
        *self = Self {
            generation: self.generation,
            ..Self::default()
        };
        Transition {
            from,
            to: State::Closed,
            reason,
            open_ms: None,
        }
    }

    /// The record's bytes in shared data. The window's shape is part of it,
    /// so a record written under other window settings reads as fresh.
    pub fn encode(&self, settings: &Settings) -> Vec<u8> {
        let count = usize::from(settings.buckets).min(MAX_BUCKETS);
        let mut out = Vec::with_capacity(HEADER_LEN + count * BUCKET_LEN);
        out.extend_from_slice(&[FORMAT_VERSION, self.state.as_byte(), count as u8, 0]);
        out.extend_from_slice(&settings.bucket_ms.to_le_bytes());
        out.extend_from_slice(&self.trips.to_le_bytes());
        out.extend_from_slice(&self.consecutive_failures.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.probes_admitted.to_le_bytes());
        out.extend_from_slice(&self.probes_succeeded.to_le_bytes());
        out.extend_from_slice(&self.until_ms.to_le_bytes());
        for bucket in &self.buckets[..count] {
            out.extend_from_slice(&bucket.epoch.to_le_bytes());
            out.extend_from_slice(&bucket.calls.to_le_bytes());
            out.extend_from_slice(&bucket.failures.to_le_bytes());
            out.extend_from_slice(&bucket.slow.to_le_bytes());
        }
        out
    }

    /// Reads a record; anything absent, malformed or written under other
    /// window settings is a fresh, closed breaker.
    pub fn decode(bytes: Option<&[u8]>, settings: &Settings) -> Self {
        bytes
            .and_then(|bytes| Self::try_decode(bytes, settings))
            .unwrap_or_default()
    }

    fn try_decode(bytes: &[u8], settings: &Settings) -> Option<Self> {
        let count = usize::from(settings.buckets);
        if count > MAX_BUCKETS || bytes.len() != HEADER_LEN + count * BUCKET_LEN {
            return None;
        }
        let mut reader = Reader(bytes);
        let [version, state, stored_count, _] = reader.array()?;
        if version != FORMAT_VERSION || usize::from(stored_count) != count {
            return None;
        }
        let state = State::from_byte(state)?;
        if u32::from_le_bytes(reader.array()?) != settings.bucket_ms {
            return None;
        }
        let mut breaker = Self {
            state,
            trips: u32::from_le_bytes(reader.array()?),
            consecutive_failures: u32::from_le_bytes(reader.array()?),
            generation: u32::from_le_bytes(reader.array()?),
            probes_admitted: u16::from_le_bytes(reader.array()?),
            probes_succeeded: u16::from_le_bytes(reader.array()?),
            until_ms: u64::from_le_bytes(reader.array()?),
            buckets: [Bucket::default(); MAX_BUCKETS],
        };
        for bucket in &mut breaker.buckets[..count] {
            *bucket = Bucket {
                epoch: u64::from_le_bytes(reader.array()?),
                calls: u32::from_le_bytes(reader.array()?),
                failures: u32::from_le_bytes(reader.array()?),
                slow: u32::from_le_bytes(reader.array()?),
            };
        }
        Some(breaker)
    }
}

/// Reads fixed-size fields from the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: CallOutcome = CallOutcome {
        failed: true,
        slow: false,
    };
    const OK: CallOutcome = CallOutcome {
        failed: false,
        slow: false,
    };
    const SLOW: CallOutcome = CallOutcome {
        failed: false,
        slow: true,
    };

    fn settings() -> Settings {
        Settings {
            bucket_ms: 1000,
            buckets: 10,
            min_calls: 4,
            failure_rate_percent: Some(50),
            slow_call_rate_percent: None,
            consecutive_failures: None,
            open_ms: 1000,
            open_multiplier: 1.0,
            max_open_ms: 1000,
            probes: 2,
            probe_timeout_ms: 5000,
        }
    }

    /// Records `outcomes` at `now` and returns the last transition.
    fn feed(
        breaker: &mut Breaker,
        settings: &Settings,
        now: u64,
        outcomes: &[CallOutcome],
    ) -> Option<Transition> {
        let mut last = None;
        for outcome in outcomes {
            let (admission, _) = breaker.admit(settings, now);
            assert_eq!(admission, Admission::Admit(Ticket::Counted));
            last = breaker
                .record(settings, now, Ticket::Counted, *outcome)
                .or(last);
        }
        last
    }

    fn tripped(settings: &Settings, now: u64) -> Breaker {
        let mut breaker = Breaker::default();
        let transition = feed(&mut breaker, settings, now, &[FAIL; 4]);
        assert_eq!(transition.map(|t| t.to), Some(State::Open));
        breaker
    }

    fn probe(breaker: &mut Breaker, settings: &Settings, now: u64) -> Ticket {
        match breaker.admit(settings, now).0 {
            Admission::Admit(ticket @ Ticket::Probe { .. }) => ticket,
            other => panic!("expected a probe, got {other:?}"),
        }
    }

    #[test]
    fn a_closed_breaker_admits_every_call() {
        let s = settings();
        let mut breaker = Breaker::default();
        for now in 0..100 {
            assert_eq!(
                breaker.admit(&s, now),
                (Admission::Admit(Ticket::Counted), None)
            );
        }
        assert_eq!(breaker, Breaker::default());
    }

    #[test]
    fn the_failure_rate_trips_exactly_at_the_threshold() {
        let s = settings();
        let mut breaker = Breaker::default();
        // 1 of 4 = 25 %, 1 of 3 below min_calls: stays closed.
        assert_eq!(feed(&mut breaker, &s, 0, &[OK, FAIL, OK, OK]), None);
        // 2 of 5 = 40 %: closed.
        assert_eq!(feed(&mut breaker, &s, 0, &[FAIL]), None);
        // 3 of 6 = 50 %: open.
        let transition = feed(&mut breaker, &s, 0, &[FAIL]).unwrap();
        assert_eq!(
            transition,
            Transition {
                from: State::Closed,
                to: State::Open,
                reason: Reason::FailureRate {
                    failures: 3,
                    calls: 6,
                    threshold_percent: 50
                },
                open_ms: Some(1000),
            }
        );
        assert_eq!(
            transition.to_string(),
            "closed -> open for 1000 ms: 3 of 6 calls failed (50%, threshold 50%)"
        );
    }

    #[test]
    fn no_rate_trips_below_the_minimum_number_of_calls() {
        let s = settings();
        let mut breaker = Breaker::default();
        assert_eq!(feed(&mut breaker, &s, 0, &[FAIL; 3]), None);
        assert_eq!(breaker.state(), State::Closed);
        assert!(feed(&mut breaker, &s, 0, &[FAIL]).is_some());
    }

    #[test]
    fn the_slow_call_rate_trips_at_its_threshold() {
        let s = Settings {
            failure_rate_percent: None,
            slow_call_rate_percent: Some(75),
            ..settings()
        };
        let mut breaker = Breaker::default();
        assert_eq!(feed(&mut breaker, &s, 0, &[SLOW, SLOW, OK, FAIL]), None);
        let transition = feed(&mut breaker, &s, 0, &[SLOW, SLOW, SLOW, SLOW]).unwrap();
        // 6 of 8 = 75 %.
        assert_eq!(
            transition.reason,
            Reason::SlowCallRate {
                slow: 6,
                calls: 8,
                threshold_percent: 75
            }
        );
    }

    #[test]
    fn consecutive_failures_trip_regardless_of_the_minimum_and_a_success_resets_them() {
        let s = Settings {
            min_calls: 100,
            consecutive_failures: Some(3),
            ..settings()
        };
        let mut breaker = Breaker::default();
        assert_eq!(
            feed(&mut breaker, &s, 0, &[FAIL, FAIL, OK, FAIL, FAIL]),
            None
        );
        let transition = feed(&mut breaker, &s, 0, &[FAIL]).unwrap();
        assert_eq!(transition.reason, Reason::ConsecutiveFailures(3));
    }

    #[test]
    fn an_open_breaker_rejects_until_its_duration_elapsed() {
        let s = settings();
        let mut breaker = tripped(&s, 10_000);
        assert_eq!(
            breaker.admit(&s, 10_000),
            (
                Admission::Reject {
                    retry_after_ms: 1000
                },
                None
            )
        );
        assert_eq!(
            breaker.admit(&s, 10_999).0,
            Admission::Reject { retry_after_ms: 1 }
        );
        let (admission, transition) = breaker.admit(&s, 11_000);
        assert!(matches!(admission, Admission::Admit(Ticket::Probe { .. })));
        assert_eq!(
            transition,
            Some(Transition {
                from: State::Open,
                to: State::HalfOpen,
                reason: Reason::OpenDurationElapsed,
                open_ms: None
            })
        );
    }

    #[test]
    fn half_open_admits_exactly_the_configured_probes() {
        let s = settings();
        let mut breaker = tripped(&s, 0);
        probe(&mut breaker, &s, 1000);
        probe(&mut breaker, &s, 1000);
        for now in 1000..1100 {
            assert_eq!(
                breaker.admit(&s, now),
                (
                    Admission::Reject {
                        retry_after_ms: 1000
                    },
                    None
                )
            );
        }
    }

    #[test]
    fn all_probes_succeeding_closes_the_breaker_with_a_fresh_window() {
        let s = settings();
        let mut breaker = tripped(&s, 0);
        let first = probe(&mut breaker, &s, 1000);
        let second = probe(&mut breaker, &s, 1000);
        assert_eq!(breaker.record(&s, 1001, first, OK), None);
        assert_eq!(breaker.state(), State::HalfOpen);
        let transition = breaker.record(&s, 1002, second, SLOW).unwrap();
        assert_eq!(
            (transition.from, transition.to, transition.reason),
            (State::HalfOpen, State::Closed, Reason::ProbesSucceeded(2))
        );
        assert_eq!(breaker.window(&s, 1002), WindowTotals::default());
        // A fresh start: three failures are not enough again.
        assert_eq!(feed(&mut breaker, &s, 1003, &[FAIL; 3]), None);
    }

    #[test]
    fn a_failed_probe_reopens_for_longer_and_the_growth_is_capped() {
        let s = Settings {
            open_multiplier: 2.0,
            max_open_ms: 5000,
            probes: 1,
            ..settings()
        };
        let mut breaker = tripped(&s, 0);
        let mut now;
        let mut durations = Vec::new();
        for _ in 0..5 {
            now = breaker.open_until_ms().unwrap();
            let ticket = probe(&mut breaker, &s, now);
            let transition = breaker.record(&s, now, ticket, FAIL).unwrap();
            assert_eq!(transition.reason, Reason::ProbeFailed);
            assert_eq!(
                (transition.from, transition.to),
                (State::HalfOpen, State::Open)
            );
            durations.push(transition.open_ms.unwrap());
        }
        assert_eq!(durations, [2000, 4000, 5000, 5000, 5000]);
        // Recovery resets the growth.
        now = breaker.open_until_ms().unwrap();
        let ticket = probe(&mut breaker, &s, now);
        assert!(breaker.record(&s, now, ticket, OK).is_some());
        assert_eq!(breaker.state(), State::Closed);
        let transition = feed(&mut breaker, &s, now, &[FAIL; 4]).unwrap();
        assert_eq!(transition.open_ms, Some(1000));
    }

    #[test]
    fn a_slow_probe_fails_only_when_slow_calls_can_trip_the_breaker() {
        let slow_matters = Settings {
            slow_call_rate_percent: Some(50),
            probes: 1,
            ..settings()
        };
        let mut breaker = tripped(&slow_matters, 0);
        let ticket = probe(&mut breaker, &slow_matters, 1000);
        let transition = breaker.record(&slow_matters, 1000, ticket, SLOW);
        assert_eq!(transition.map(|t| t.to), Some(State::Open));

        let slow_ignored = Settings {
            probes: 1,
            ..settings()
        };
        let mut breaker = tripped(&slow_ignored, 0);
        let ticket = probe(&mut breaker, &slow_ignored, 1000);
        let transition = breaker.record(&slow_ignored, 1000, ticket, SLOW);
        assert_eq!(transition.map(|t| t.to), Some(State::Closed));
    }

    #[test]
    fn probes_that_do_not_finish_in_time_reopen_the_breaker() {
        let s = settings();
        let mut breaker = tripped(&s, 0);
        let ticket = probe(&mut breaker, &s, 1000);
        probe(&mut breaker, &s, 1000);
        // Still waiting at the last millisecond before the deadline.
        assert_eq!(
            breaker.admit(&s, 5999).0,
            Admission::Reject {
                retry_after_ms: 1000
            }
        );
        let (admission, transition) = breaker.admit(&s, 6000);
        assert_eq!(
            admission,
            Admission::Reject {
                retry_after_ms: 1000
            }
        );
        assert_eq!(transition.map(|t| t.reason), Some(Reason::ProbeTimeout));
        // The late probe's success changes nothing.
        assert_eq!(breaker.record(&s, 6001, ticket, OK), None);
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn a_half_open_breaker_without_probes_in_flight_waits_for_traffic() {
        let s = settings();
        let mut breaker = tripped(&s, 0);
        let first = probe(&mut breaker, &s, 1000);
        assert_eq!(breaker.record(&s, 1001, first, OK), None);
        // No call for a long time: still half-open, the next call is a probe.
        let second = probe(&mut breaker, &s, 1_000_000);
        let transition = breaker.record(&s, 1_000_001, second, OK).unwrap();
        assert_eq!(transition.to, State::Closed);
    }

    #[test]
    fn a_finished_probe_gives_the_others_a_fresh_deadline() {
        let s = settings();
        let mut breaker = tripped(&s, 0);
        let first = probe(&mut breaker, &s, 1000);
        let second = probe(&mut breaker, &s, 1000);
        assert_eq!(breaker.record(&s, 5000, first, OK), None);
        // 9 s after the second was admitted, 4 s after the first finished.
        assert!(matches!(
            breaker.admit(&s, 9000),
            (Admission::Reject { .. }, None)
        ));
        let transition = breaker.record(&s, 9000, second, OK).unwrap();
        assert_eq!(transition.to, State::Closed);
    }

    #[test]
    fn a_probe_finishing_after_the_deadline_reopens_the_breaker() {
        let s = settings();
        let mut breaker = tripped(&s, 0);
        let ticket = probe(&mut breaker, &s, 1000);
        let transition = breaker.record(&s, 6000, ticket, OK).unwrap();
        assert_eq!(transition.reason, Reason::ProbeTimeout);
    }

    #[test]
    fn a_released_probe_frees_its_slot() {
        let s = settings();
        let mut breaker = tripped(&s, 0);
        let first = probe(&mut breaker, &s, 1000);
        probe(&mut breaker, &s, 1000);
        assert!(matches!(
            breaker.admit(&s, 1000).0,
            Admission::Reject { .. }
        ));
        breaker.release(first);
        probe(&mut breaker, &s, 1000);
        assert!(matches!(
            breaker.admit(&s, 1000).0,
            Admission::Reject { .. }
        ));
    }

    #[test]
    fn a_probe_of_an_earlier_half_open_period_is_ignored() {
        let s = Settings {
            probes: 1,
            ..settings()
        };
        let mut breaker = tripped(&s, 0);
        let stale = probe(&mut breaker, &s, 1000);
        // That period timed out; the breaker opened and half-opened again.
        breaker.admit(&s, 6000);
        let until = breaker.open_until_ms().unwrap();
        let current = probe(&mut breaker, &s, until);
        assert_ne!(stale, current);
        assert_eq!(breaker.record(&s, until, stale, OK), None);
        breaker.release(stale);
        assert!(matches!(
            breaker.admit(&s, until).0,
            Admission::Reject { .. }
        ));
        assert_eq!(breaker.state(), State::HalfOpen);
    }

    #[test]
    fn calls_admitted_before_the_breaker_opened_are_ignored() {
        let s = settings();
        let mut breaker = tripped(&s, 0);
        let before = breaker;
        assert_eq!(breaker.record(&s, 10, Ticket::Counted, FAIL), None);
        assert_eq!(breaker, before);
        // Nor do they count while half-open.
        probe(&mut breaker, &s, 1000);
        let half_open = breaker;
        assert_eq!(breaker.record(&s, 1000, Ticket::Counted, FAIL), None);
        assert_eq!(breaker, half_open);
    }

    #[test]
    fn old_buckets_roll_out_of_the_window() {
        let s = settings();
        let mut breaker = Breaker::default();
        feed(&mut breaker, &s, 0, &[FAIL, FAIL, FAIL]);
        assert_eq!(breaker.window(&s, 9_999).failures, 3);
        // At 10 s the first bucket has left the 10 s window.
        assert_eq!(breaker.window(&s, 10_000), WindowTotals::default());
        assert_eq!(feed(&mut breaker, &s, 10_000, &[OK, OK, FAIL]), None);
        assert_eq!(
            breaker.window(&s, 10_000),
            WindowTotals {
                calls: 3,
                failures: 1,
                slow: 0
            }
        );
    }

    #[test]
    fn a_recycled_bucket_forgets_its_old_counts() {
        let s = Settings {
            min_calls: 100,
            ..settings()
        };
        let mut breaker = Breaker::default();
        feed(&mut breaker, &s, 500, &[FAIL; 3]);
        feed(&mut breaker, &s, 9_500, &[OK]);
        // 10.5 s lands in the bucket of 0.5 s, ten periods later.
        feed(&mut breaker, &s, 10_500, &[OK]);
        assert_eq!(
            breaker.window(&s, 10_500),
            WindowTotals {
                calls: 2,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn failures_spread_over_the_window_still_trip_it() {
        let s = settings();
        let mut breaker = Breaker::default();
        assert_eq!(feed(&mut breaker, &s, 0, &[FAIL]), None);
        assert_eq!(feed(&mut breaker, &s, 3_000, &[FAIL]), None);
        assert_eq!(feed(&mut breaker, &s, 6_000, &[FAIL]), None);
        assert!(feed(&mut breaker, &s, 9_999, &[OK]).is_some());
    }

    #[test]
    fn a_clock_running_behind_adds_to_the_newer_bucket() {
        let s = settings();
        let mut breaker = Breaker::default();
        feed(&mut breaker, &s, 12_000, &[FAIL]);
        // Another worker's clock says 2 s: same slot, older epoch.
        feed(&mut breaker, &s, 2_000, &[FAIL]);
        assert_eq!(breaker.window(&s, 12_000).failures, 2);
    }

    #[test]
    fn the_record_round_trips_through_its_bytes() {
        let s = settings();
        let mut breaker = Breaker::default();
        feed(&mut breaker, &s, 5_000, &[FAIL, OK, SLOW]);
        let bytes = breaker.encode(&s);
        assert_eq!(bytes.len(), HEADER_LEN + 10 * BUCKET_LEN);
        assert_eq!(Breaker::decode(Some(&bytes), &s), breaker);
        let mut open = tripped(&s, 0);
        probe(&mut open, &s, 1000);
        assert_eq!(Breaker::decode(Some(&open.encode(&s)), &s), open);
    }

    #[test]
    fn a_record_of_other_window_settings_or_garbage_reads_as_fresh() {
        let s = settings();
        let open = tripped(&s, 0).encode(&s);
        let other_width = Settings {
            bucket_ms: 500,
            ..settings()
        };
        let other_count = Settings {
            buckets: 5,
            bucket_ms: 2000,
            ..settings()
        };
        assert_eq!(
            Breaker::decode(Some(&open), &other_width),
            Breaker::default()
        );
        assert_eq!(
            Breaker::decode(Some(&open), &other_count),
            Breaker::default()
        );
        assert_eq!(Breaker::decode(None, &s), Breaker::default());
        assert_eq!(Breaker::decode(Some(&[]), &s), Breaker::default());
        assert_eq!(Breaker::decode(Some(&open[..40]), &s), Breaker::default());
        let mut bad_state = open.clone();
        bad_state[1] = 9;
        assert_eq!(Breaker::decode(Some(&bad_state), &s), Breaker::default());
    }

    #[test]
    fn the_largest_record_is_bounded() {
        let s = Settings {
            buckets: MAX_BUCKETS as u8,
            ..settings()
        };
        assert_eq!(Breaker::default().encode(&s).len(), 1232);
    }

    #[test]
    fn open_durations_grow_by_the_multiplier_up_to_the_cap() {
        let s = Settings {
            open_ms: 1000,
            open_multiplier: 1.5,
            max_open_ms: 4000,
            ..settings()
        };
        let durations: Vec<u64> = (1..=6).map(|trips| s.open_duration_ms(trips)).collect();
        assert_eq!(durations, [1000, 1500, 2250, 3375, 4000, 4000]);
        assert_eq!(s.open_duration_ms(u32::MAX), 4000);
        let constant = settings();
        assert_eq!(constant.open_duration_ms(50), 1000);
    }
}
