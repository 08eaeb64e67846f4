//! The per-worker queue and its batches: when to send, what to retry, what
//! to drop. Time comes in as milliseconds, so every rule is tested with a
//! fake clock.
//!
//! Memory is bounded by the queue limits plus one batch (the one being sent
//! or waiting for its retry). At most one batch is in flight per worker, so
//! records reach the sink in order unless a batch is dropped.

use crate::record::Record;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub batch_records: usize,
    pub batch_bytes: usize,
    pub flush_interval_ms: u64,
    pub queue_records: usize,
    pub queue_bytes: usize,
    /// Attempts after the first; a batch is dropped when they fail too.
    pub max_retries: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum FlightState {
    Sending,
    WaitingUntil(u64),
}

#[derive(Debug)]
struct Flight {
    records: Vec<Record>,
    bytes: usize,
    /// 1 for the first attempt.
    attempt: u32,
    state: FlightState,
}

/// What became of a batch when its attempt finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Sent(usize),
    /// The batch will be sent again after `delay_ms`.
    Retrying {
        records: usize,
        delay_ms: u64,
    },
    /// Every attempt failed; the records are gone.
    Dropped(usize),
    /// No batch was in flight (a late or duplicate answer).
    Unexpected,
}

#[derive(Debug)]
pub struct Shipper {
    limits: Limits,
    queue: VecDeque<(Record, usize)>,
    queued_bytes: usize,
    flight: Option<Flight>,
    last_flush_ms: u64,
}

impl Shipper {
    pub fn new(limits: Limits, now_ms: u64) -> Self {
        Self {
            limits,
            queue: VecDeque::new(),
            queued_bytes: 0,
            flight: None,
            last_flush_ms: now_ms,
        }
    }

    /// Queues a record; returns how many records were dropped to make room
    /// (the oldest first; the new one itself if it alone is over the limit).
    pub fn push(&mut self, record: Record) -> usize {
        let bytes = record.heap_size();
        if bytes > self.limits.queue_bytes || self.limits.queue_records == 0 {
            return 1;
        }
        let mut dropped = 0;
        while self.queue.len() >= self.limits.queue_records
            || self.queued_bytes + bytes > self.limits.queue_bytes
        {
            let Some((_, old_bytes)) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= old_bytes;
            dropped += 1;
        }
        self.queued_bytes += bytes;
        self.queue.push_back((record, bytes));
        dropped
    }

    /// Records and bytes waiting in the queue (not counting a batch in flight).
    pub fn queued(&self) -> (usize, usize) {
        (self.queue.len(), self.queued_bytes)
    }

    /// Records and bytes held in all: the queue plus the batch in flight.
    pub fn held(&self) -> (usize, usize) {
        let flight = self.flight.as_ref().map_or(0, |f| f.records.len());
        (
            self.queue.len() + flight,
            self.queued_bytes + self.flight_bytes(),
        )
    }

    /// Whether a batch is being sent or waits for its retry.
    pub fn busy(&self) -> bool {
        self.flight.is_some()
    }

    fn batch_due(&self, now_ms: u64) -> bool {
        !self.queue.is_empty()
            && (self.queue.len() >= self.limits.batch_records
                || self.queued_bytes >= self.limits.batch_bytes
                || now_ms.saturating_sub(self.last_flush_ms) >= self.limits.flush_interval_ms)
    }

    /// The batch to send now, if any: a retry that is due, or a new batch
    /// when the queue holds a full one or the flush interval has passed.
    pub fn poll(&mut self, now_ms: u64) -> Option<&[Record]> {
        self.next(now_ms, false)
    }

    /// Like [`poll`](Self::poll), but a partial batch goes at once (shutdown).
    pub fn drain(&mut self, now_ms: u64) -> Option<&[Record]> {
        self.next(now_ms, true)
    }

    fn next(&mut self, now_ms: u64, force: bool) -> Option<&[Record]> {
        match &self.flight {
            Some(Flight {
                state: FlightState::Sending,
                ..
            }) => return None,
            Some(Flight {
                state: FlightState::WaitingUntil(until),
                ..
            }) if now_ms < *until => return None,
            Some(_) => {}
            None if self.batch_due(now_ms) || (force && !self.queue.is_empty()) => {
                self.start_batch(now_ms)
            }
            None => return None,
        }
        let flight = self.flight.as_mut()?;
        flight.state = FlightState::Sending;
        Some(&flight.records)
    }

    fn start_batch(&mut self, now_ms: u64) {
        let mut records = Vec::new();
        let mut bytes = 0;
        while let Some((_, next)) = self.queue.front() {
            let full = records.len() >= self.limits.batch_records
                || (!records.is_empty() && bytes + next > self.limits.batch_bytes);
            if full {
                break;
            }
            let Some((record, size)) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= size;
            bytes += size;
            records.push(record);
        }
        self.last_flush_ms = now_ms;
        self.flight = Some(Flight {
            records,
            bytes,
            attempt: 1,
            state: FlightState::Sending,
        });
    }

    /// Bytes held by the batch in flight.
    pub fn flight_bytes(&self) -> usize {
        self.flight.as_ref().map_or(0, |f| f.bytes)
    }

    /// The sink answered (`ok`: a 2xx), or the call failed or timed out.
    pub fn finish(&mut self, ok: bool, now_ms: u64) -> Finished {
        let Some(flight) = self.flight.as_mut() else {
            return Finished::Unexpected;
        };
        if flight.state != FlightState::Sending {
            return Finished::Unexpected;
        }
        let records = flight.records.len();
        if ok {
            self.flight = None;
            return Finished::Sent(records);
        }
        if flight.attempt > self.limits.max_retries {
            self.flight = None;
            return Finished::Dropped(records);
        }
        let delay_ms = backoff_ms(&self.limits, flight.attempt);
        flight.attempt += 1;
        flight.state = FlightState::WaitingUntil(now_ms + delay_ms);
        Finished::Retrying { records, delay_ms }
    }
}

/// Exponential backoff: the initial delay doubled after each failed retry,
/// capped.
pub fn backoff_ms(limits: &Limits, failed_attempts: u32) -> u64 {
    let doublings = failed_attempts.saturating_sub(1).min(32);
    limits
        .initial_backoff_ms
        .saturating_mul(1 << doublings)
        .min(limits.max_backoff_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            batch_records: 3,
            batch_bytes: 1 << 20,
            flush_interval_ms: 1000,
            queue_records: 10,
            queue_bytes: 1 << 20,
            max_retries: 2,
            initial_backoff_ms: 100,
            max_backoff_ms: 250,
        }
    }

    fn record(id: usize) -> Record {
        Record {
            request_id: format!("r-{id}"),
            ..Default::default()
        }
    }

    fn ids(batch: &[Record]) -> Vec<&str> {
        batch.iter().map(|r| r.request_id.as_str()).collect()
    }

    #[test]
    fn a_full_batch_is_sent_at_once_and_a_partial_one_after_the_interval() {
        let mut shipper = Shipper::new(limits(), 0);
        for i in 0..4 {
            assert_eq!(shipper.push(record(i)), 0);
        }
        assert_eq!(ids(shipper.poll(10).unwrap()), ["r-0", "r-1", "r-2"]);
        assert_eq!(shipper.poll(10), None, "one batch in flight at a time");
        assert_eq!(shipper.finish(true, 20), Finished::Sent(3));
        assert_eq!(shipper.poll(20), None, "one record waits for the interval");
        assert_eq!(shipper.poll(1009), None);
        assert_eq!(ids(shipper.poll(1010).unwrap()), ["r-3"]);
        assert_eq!(shipper.finish(true, 1011), Finished::Sent(1));
        assert_eq!(shipper.queued(), (0, 0));
        assert_eq!(shipper.poll(5000), None, "nothing to send");
    }

    #[test]
    fn a_batch_ends_before_it_passes_the_byte_limit() {
        let one = record(0).heap_size();
        let mut shipper = Shipper::new(
            Limits {
                batch_records: 100,
                batch_bytes: one * 2 + one / 2,
                ..limits()
            },
            0,
        );
        for i in 0..5 {
            shipper.push(record(i));
        }
        assert_eq!(shipper.poll(0).unwrap().len(), 2);
    }

    #[test]
    fn failed_batches_are_retried_with_growing_capped_backoff_then_dropped() {
        let mut shipper = Shipper::new(limits(), 0);
        for i in 0..3 {
            shipper.push(record(i));
        }
        assert!(shipper.poll(0).is_some());
        assert_eq!(
            shipper.finish(false, 0),
            Finished::Retrying {
                records: 3,
                delay_ms: 100
            }
        );
        assert_eq!(shipper.poll(99), None);
        assert_eq!(ids(shipper.poll(100).unwrap()), ["r-0", "r-1", "r-2"]);
        assert_eq!(
            shipper.finish(false, 100),
            Finished::Retrying {
                records: 3,
                delay_ms: 200
            }
        );
        assert!(shipper.poll(300).is_some());
        assert_eq!(shipper.finish(false, 300), Finished::Dropped(3));
        assert!(!shipper.busy());
        assert_eq!(backoff_ms(&limits(), 3), 250, "capped at max_backoff_ms");
    }

    #[test]
    fn a_retry_that_succeeds_sends_the_same_records() {
        let mut shipper = Shipper::new(limits(), 0);
        for i in 0..3 {
            shipper.push(record(i));
        }
        shipper.poll(0);
        shipper.finish(false, 0);
        shipper.push(record(9));
        assert_eq!(ids(shipper.poll(100).unwrap()), ["r-0", "r-1", "r-2"]);
        assert_eq!(shipper.finish(true, 100), Finished::Sent(3));
        assert_eq!(shipper.queued().0, 1);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_records() {
        let mut shipper = Shipper::new(limits(), 0);
        for i in 0..10 {
            assert_eq!(shipper.push(record(i)), 0);
        }
        assert_eq!(shipper.push(record(10)), 1);
        assert_eq!(shipper.push(record(11)), 1);
        assert_eq!(shipper.queued().0, 10);
        assert_eq!(ids(shipper.poll(0).unwrap()), ["r-2", "r-3", "r-4"]);
    }

    #[test]
    fn the_byte_limit_bounds_the_queue_too() {
        let one = record(0).heap_size();
        let mut shipper = Shipper::new(
            Limits {
                queue_bytes: one * 3,
                ..limits()
            },
            0,
        );
        let dropped: usize = (0..5).map(|i| shipper.push(record(i))).sum();
        assert_eq!(dropped, 2);
        assert_eq!(shipper.queued(), (3, one * 3));
        let mut huge = record(99);
        huge.path = "x".repeat(one * 4);
        assert_eq!(
            shipper.push(huge),
            1,
            "a record over the whole limit is refused"
        );
        assert_eq!(shipper.queued().0, 3);
    }

    #[test]
    fn draining_sends_a_partial_batch_at_once() {
        let mut shipper = Shipper::new(limits(), 0);
        shipper.push(record(0));
        assert_eq!(shipper.poll(1), None);
        assert_eq!(ids(shipper.drain(1).unwrap()), ["r-0"]);
    }

    #[test]
    fn late_answers_are_ignored() {
        let mut shipper = Shipper::new(limits(), 0);
        assert_eq!(shipper.finish(true, 0), Finished::Unexpected);
        for i in 0..3 {
            shipper.push(record(i));
        }
        shipper.poll(0);
        shipper.finish(false, 0);
        assert_eq!(
            shipper.finish(true, 1),
            Finished::Unexpected,
            "waiting, not sending"
        );
    }
}
