//! Quota leases (`fleet.lease`): a worker that counts a request in the
//! fleet store takes several units of a fixed-window counter at once and
//! admits the next requests from them without a store call.
//!
//! The units are counted in Redis when they are taken, so the fleet never
//! admits more than the limit. The script grants at most what is left
//! divided by `holders` and never fewer than one, so leases shrink to the
//! request's own unit near the limit, where every request is a store call
//! as without leases. Units a worker holds when the window ends were
//! counted but not used: requests elsewhere may have been refused for
//! them, at most `units - 1` per worker holding a lease of the counter.

use gateway_common::config::ConfigError;
use gateway_common::fleet::wire::LeaseAsk;
use serde::Deserialize;
use std::collections::HashMap;

/// `fleet.lease`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    /// The most units one worker holds of a counter (its request's
    /// included); 2 to 10000.
    pub units: u32,
    /// How many workers of the fleet may hold a lease of one counter at
    /// once (Envoys × workers, default 16): a lease is at most the quota
    /// left divided by it.
    #[serde(default = "default_holders")]
    pub holders: u32,
}

fn default_holders() -> u32 {
    16
}

const MAX_UNITS: u32 = 10_000;
const MAX_HOLDERS: u32 = 100_000;
/// The most counters a worker holds leases of; past it, a new counter is
/// counted a request at a time until the old windows have ended.
const MAX_COUNTERS: usize = 4096;

impl LeaseConfig {
    pub fn compile(&self) -> Result<LeaseAsk, ConfigError> {
        if !(2..=MAX_UNITS).contains(&self.units) {
            return Err(ConfigError::new(
                "units",
                format!("2 to {MAX_UNITS} (1 is no lease: leave `lease` out)"),
            ));
        }
        if !(1..=MAX_HOLDERS).contains(&self.holders) {
            return Err(ConfigError::new("holders", format!("1 to {MAX_HOLDERS}")));
        }
        Ok(LeaseAsk {
            units: self.units,
            holders: self.holders,
        })
    }
}

/// The units this worker holds, by counter (the counter's key in the store).
#[derive(Debug, Default)]
pub struct Leases {
    held: HashMap<String, Held>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    units: u32,
    /// Units asked for by calls not answered yet (beyond their requests').
    asked: u32,
    /// When the counter's window ends: the units end with it.
    window_end_ms: u64,
    /// The quota left in the store when the units were granted.
    left: u32,
}

impl Leases {
    /// The units held of `key` now.
    pub fn held(&self, key: &str, now_ms: u64) -> u32 {
        self.live(key, now_ms).map_or(0, |held| held.units)
    }

    fn live(&self, key: &str, now_ms: u64) -> Option<&Held> {
        self.held
            .get(key)
            .filter(|held| held.window_end_ms > now_ms)
    }

    /// The units a call for `key` asks for, its request's included: what
    /// keeps this worker's units, held and asked for, within `most` (at
    /// least the request's own). The units asked beyond the request's are
    /// reserved until [`Leases::answered`].
    pub fn ask(&mut self, key: &str, most: u32, window_end_ms: u64, now_ms: u64) -> u32 {
        let (held, asked) = self
            .live(key, now_ms)
            .map_or((0, 0), |held| (held.units, held.asked));
        let want = most.saturating_sub(held).saturating_sub(asked).max(1);
        if want > 1 {
            match self.entry(key, window_end_ms, now_ms) {
                Some(entry) => entry.asked += want - 1,
                // No room to keep what comes: the request's unit only.
                None => return 1,
            }
        }
        want
    }

    /// The answer to a call that asked for `want` units of `key` came, with
    /// `granted` of them (the request's included; 0 when the call failed or
    /// its request was refused); `left`: the quota left in the store.
    pub fn answered(&mut self, key: &str, want: u32, granted: u32, left: u32, now_ms: u64) {
        let Some(held) = self
            .held
            .get_mut(key)
            .filter(|held| held.window_end_ms > now_ms)
        else {
            return;
        };
        held.asked = held.asked.saturating_sub(want.saturating_sub(1));
        if granted > 1 {
            held.units = held.units.saturating_add(granted - 1);
            held.left = left;
        }
    }

    /// `key`'s entry, made (or made anew after its window) when there is room.
    fn entry(&mut self, key: &str, window_end_ms: u64, now_ms: u64) -> Option<&mut Held> {
        if !self.held.contains_key(key) && self.held.len() >= MAX_COUNTERS {
            self.held.retain(|_, held| held.window_end_ms > now_ms);
            if self.held.len() >= MAX_COUNTERS {
                return None;
            }
        }
        let held = self.held.entry(key.to_string()).or_insert(Held::NONE);
        if held.window_end_ms <= now_ms {
            *held = Held {
                window_end_ms,
                ..Held::NONE
            };
        }
        Some(held)
    }

    /// Takes a unit of every counter in `keys` if each has one, and returns
    /// for each the quota left as this worker knows it (the store's when
    /// granted, plus the units still held); takes none otherwise.
    pub fn take_each(&mut self, keys: &[String], now_ms: u64) -> Option<Vec<u32>> {
        if keys.is_empty() || keys.iter().any(|key| self.held(key, now_ms) == 0) {
            return None;
        }
        Some(
            keys.iter()
                .map(|key| {
                    let held = self.held.get_mut(key).map_or(Held::NONE, |held| {
                        held.units -= 1;
                        *held
                    });
                    held.left.saturating_add(held.units)
                })
                .collect(),
        )
    }

    /// The counters held (live or not yet swept).
    pub fn counters(&self) -> usize {
        self.held.len()
    }
}

impl Held {
    const NONE: Held = Held {
        units: 0,
        asked: 0,
        window_end_ms: 0,
        left: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants `units` of `key` as a call answered with them would.
    fn grant(leases: &mut Leases, key: &str, units: u32, end: u64, left: u32, now: u64) {
        let want = leases.ask(key, units, end, now);
        leases.answered(key, want, want.min(units), left, now);
    }

    #[test]
    fn units_are_taken_all_or_none_and_end_with_their_window() {
        let mut leases = Leases::default();
        let (a, b) = ("gw:q:a:1".to_string(), "gw:q:b:1".to_string());
        grant(&mut leases, &a, 3, 1_000, 50, 0);
        // b holds nothing: nothing is taken of a.
        assert_eq!(leases.take_each(&[a.clone(), b.clone()], 10), None);
        assert_eq!(leases.held(&a, 10), 2);
        grant(&mut leases, &b, 2, 1_000, 7, 10);
        assert_eq!(
            leases.take_each(&[a.clone(), b.clone()], 20),
            Some(vec![51, 7])
        );
        assert_eq!(leases.take_each(&[a.clone(), b.clone()], 20), None);
        assert_eq!(
            leases.take_each(std::slice::from_ref(&a), 20),
            Some(vec![50])
        );
        assert_eq!(leases.take_each(std::slice::from_ref(&a), 20), None);
        grant(&mut leases, &a, 4, 1_000, 40, 30);
        assert_eq!(leases.held(&a, 999), 3);
        assert_eq!(leases.held(&a, 1_000), 0, "the window ended");
        assert_eq!(leases.take_each(std::slice::from_ref(&a), 1_000), None);
        // The next window starts with none held.
        grant(&mut leases, &a, 3, 2_000, 40, 1_500);
        assert_eq!(leases.held(&a, 1_500), 2);
        assert_eq!(leases.take_each(&[], 0), None);
    }

    #[test]
    fn calls_in_flight_never_ask_for_more_than_the_most_a_worker_holds() {
        let mut leases = Leases::default();
        let key = "gw:q:a:1";
        // Three calls at once: the first asks for 10, the others for their
        // request's unit only.
        let asks: Vec<u32> = (0..3).map(|_| leases.ask(key, 10, 1_000, 0)).collect();
        assert_eq!(asks, [10, 1, 1]);
        leases.answered(key, 1, 1, 90, 1);
        leases.answered(key, 10, 6, 84, 2);
        assert_eq!(leases.held(key, 3), 5);
        // Held 5 of 10: a call asks for what is missing.
        assert_eq!(leases.ask(key, 10, 1_000, 3), 5);
        // A failed call gives its ask back.
        leases.answered(key, 5, 0, 0, 4);
        assert_eq!(leases.ask(key, 10, 1_000, 5), 5);
    }

    #[test]
    fn the_counters_held_are_bounded() {
        let mut leases = Leases::default();
        for i in 0..MAX_COUNTERS {
            grant(&mut leases, &format!("k{i}"), 2, 100, 5, 0);
        }
        grant(&mut leases, "one more", 2, 100, 5, 0);
        assert_eq!(leases.held("one more", 0), 0, "full: not leased");
        // Once their windows ended, room is made.
        grant(&mut leases, "one more", 2, 300, 5, 200);
        assert_eq!(leases.held("one more", 200), 1);
        assert_eq!(leases.counters(), 1);
    }

    #[test]
    fn a_bad_lease_is_named() {
        let bad = |units, holders| LeaseConfig { units, holders }.compile().unwrap_err().path;
        assert_eq!(bad(1, 16), "units");
        assert_eq!(bad(10_001, 16), "units");
        assert_eq!(bad(10, 0), "holders");
        assert!(LeaseConfig {
            units: 10,
            holders: 16
        }
        .compile()
        .is_ok());
    }
}
