//! [`wire::SCRIPT`](super::wire::SCRIPT)'s semantics in Rust, over an
//! in-memory key space with expiry: the fleet store of native tests. The
//! integration tests run the same operations against the real script in
//! Redis and compare, so the two cannot drift apart.

use super::wire::{Op, OpResult, RecordSwap, State};
use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct ScriptModel {
    /// key → (value, expiry in ms on [`ScriptModel::now_ms`]'s clock).
    keys: HashMap<String, (u64, u64)>,
    /// key → (version, value, expiry).
    records: HashMap<String, (u64, String, u64)>,
    pub now_ms: u64,
}

impl ScriptModel {
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&self, key: &str) -> u64 {
        match self.keys.get(key) {
            Some((value, expiry)) if *expiry > self.now_ms => *value,
            _ => 0,
        }
    }

    /// The keys that have not expired.
    pub fn live_keys(&self) -> usize {
        let now = self.now_ms;
        let counters = self.keys.values().filter(|(_, expiry)| *expiry > now);
        let records = self.records.values().filter(|(_, _, expiry)| *expiry > now);
        counters.count() + records.count()
    }

    fn swap(&mut self, swap: &RecordSwap) -> OpResult {
        let now = self.now_ms;
        let (version, stored) = match self.records.get(&swap.key) {
            Some((version, value, expiry)) if *expiry > now => (*version, Some(value.clone())),
            _ => (0, None),
        };
        let result = |state, current, value| OpResult {
            state,
            previous: 0,
            current,
            value,
        };
        if version != swap.version {
            return result(State::Refused, version, stored);
        }
        match &swap.value {
            Some(value) => {
                let expiry = now + swap.ttl_ms.max(1);
                let written = if version == 0 {
                    swap.first_version.max(1)
                } else {
                    version + 1
                };
                self.records
                    .insert(swap.key.clone(), (written, value.clone(), expiry));
                result(State::Done, written, None)
            }
            None => result(State::Refused, version, None),
        }
    }

    /// Runs one call's operations as the script does.
    pub fn run(&mut self, ops: &[Op]) -> Vec<OpResult> {
        let mut out = Vec::new();
        let mut stopped = false;
        let result = |state, previous, current| OpResult {
            state,
            previous,
            current,
            value: None,
        };
        for op in ops {
            match op {
                Op::Nonce { key, ttl_ms } => {
                    if stopped {
                        out.push(result(State::NotRun, 0, 0));
                    } else if self.get(key) != 0 {
                        out.push(result(State::Refused, 0, 0));
                        stopped = true;
                    } else {
                        let expiry = self.now_ms + (*ttl_ms).max(1);
                        self.keys.insert(key.clone(), (1, expiry));
                        out.push(result(State::Done, 0, 0));
                    }
                }
                Op::Record(swap) => {
                    if stopped {
                        out.push(result(State::NotRun, 0, 0));
                    } else {
                        out.push(self.swap(swap));
                    }
                }
                Op::Quotas(rules) => {
                    if stopped {
                        out.extend(rules.iter().map(|_| result(State::NotRun, 0, 0)));
                        continue;
                    }
                    let read: Vec<(u64, u64, bool)> = rules
                        .iter()
                        .map(|rule| {
                            let current = self.get(&rule.key);
                            let previous = rule.previous_key.as_ref().map_or(0, |k| self.get(k));
                            let estimate = u128::from(previous) * u128::from(rule.previous_weight)
                                + u128::from(current + 1) * u128::from(rule.window_weight);
                            let admits =
                                estimate <= u128::from(rule.limit) * u128::from(rule.window_weight);
                            (previous, current, admits)
                        })
                        .collect();
                    let refused = rules
                        .iter()
                        .zip(&read)
                        .any(|(rule, (_, _, admits))| !admits && !rule.dry_run);
                    for (rule, (previous, current, admits)) in rules.iter().zip(read) {
                        if !admits {
                            let state = if rule.dry_run {
                                State::DryRunRefused
                            } else {
                                State::Refused
                            };
                            out.push(result(state, previous, current));
                        } else if refused {
                            out.push(result(State::NotCounted, previous, current));
                        } else {
                            let now = self.now_ms;
                            let fixed = rule.previous_key.is_none();
                            let counted = match rule.lease {
                                Some(ask) if fixed && !rule.dry_run => {
                                    ask.grant(u64::from(rule.limit), current)
                                }
                                _ => 1,
                            };
                            let entry = self.keys.entry(rule.key.clone()).or_insert((0, 0));
                            if entry.1 <= now {
                                *entry = (0, now + rule.ttl_ms.max(1));
                            }
                            entry.0 += counted;
                            let previous = if fixed { counted } else { previous };
                            out.push(result(State::Done, previous, entry.0));
                        }
                    }
                    stopped = refused;
                }
            }
        }
        out
    }
}
