//! Coalescing: while one request of a worker asks the authorizer about an
//! identity, the worker's other requests with the same identity wait for
//! that answer instead of asking again. Requests are named by their host
//! context id; the adapter wakes the waiters.

use crate::cache::CacheKey;
use crate::policy::Decision;
use std::collections::HashMap;
use std::rc::Rc;

/// How a request joined the flight for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// It asks the authorizer; the others wait for it.
    Lead,
    /// Another request asks; this one waits to be woken.
    Wait,
}

#[derive(Debug)]
struct Flight {
    leader: u32,
    waiters: Vec<u32>,
}

/// The calls in flight of one worker, by key, and the decisions left for
/// the woken waiters.
#[derive(Debug, Default)]
pub struct Flights {
    flights: HashMap<CacheKey, Flight>,
    mail: HashMap<u32, Rc<Decision>>,
}

impl Flights {
    pub fn join(&mut self, key: CacheKey, context: u32) -> Joined {
        match self.flights.get_mut(&key) {
            Some(flight) => {
                flight.waiters.push(context);
                Joined::Wait
            }
            None => {
                self.flights.insert(
                    key,
                    Flight {
                        leader: context,
                        waiters: Vec::new(),
                    },
                );
                Joined::Lead
            }
        }
    }

    /// The leader's answer came: every waiter gets `decision`; returns them
    /// (to wake).
    pub fn land(&mut self, key: &CacheKey, leader: u32, decision: &Rc<Decision>) -> Vec<u32> {
        let Some(flight) = self.take_led(key, leader) else {
            return Vec::new();
        };
        for waiter in &flight.waiters {
            self.mail.insert(*waiter, Rc::clone(decision));
        }
        flight.waiters
    }

    /// The leader went away before its answer: its waiters are woken with
    /// no decision and ask again (one of them leads then).
    pub fn abandon(&mut self, key: &CacheKey, leader: u32) -> Vec<u32> {
        self.take_led(key, leader)
            .map(|flight| flight.waiters)
            .unwrap_or_default()
    }

    fn take_led(&mut self, key: &CacheKey, leader: u32) -> Option<Flight> {
        if self.flights.get(key).is_some_and(|f| f.leader == leader) {
            self.flights.remove(key)
        } else {
            None
        }
    }

    /// A waiter went away.
    pub fn leave(&mut self, key: &CacheKey, context: u32) {
        if let Some(flight) = self.flights.get_mut(key) {
            flight.waiters.retain(|w| *w != context);
        }
        self.mail.remove(&context);
    }

    /// The decision left for a woken waiter (none: ask again).
    pub fn take_mail(&mut self, context: u32) -> Option<Rc<Decision>> {
        self.mail.remove(&context)
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.flights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }
}
