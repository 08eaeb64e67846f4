//! Coalescing: while one request of a worker fetches something by a key
//! (ext-auth's authorizer answer, the response cache's upstream answer),
//! the worker's other requests with the same key wait for it instead of
//! fetching again. Requests are named by their stream id; the leader wakes
//! the waiters ([`crate::stream::Stream::wake`]) with what it got (`M`,
//! the mail).

use crate::slots::CacheKey;
use std::collections::HashMap;

/// How a request joined the flight for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// It fetches; the others wait for it.
    Lead,
    /// Another request fetches; this one waits to be woken.
    Wait,
}

#[derive(Debug)]
struct Flight {
    leader: u32,
    waiters: Vec<u32>,
}

/// The fetches in flight of one worker, by key, and the mail left for the
/// woken waiters.
#[derive(Debug)]
pub struct Flights<M> {
    flights: HashMap<CacheKey, Flight>,
    mail: HashMap<u32, M>,
}

impl<M> Default for Flights<M> {
    fn default() -> Self {
        Self {
            flights: HashMap::new(),
            mail: HashMap::new(),
        }
    }
}

impl<M: Clone> Flights<M> {
    pub fn join(&mut self, key: CacheKey, stream: u32) -> Joined {
        match self.flights.get_mut(&key) {
            Some(flight) => {
                flight.waiters.push(stream);
                Joined::Wait
            }
            None => {
                self.flights.insert(
                    key,
                    Flight {
                        leader: stream,
                        waiters: Vec::new(),
                    },
                );
                Joined::Lead
            }
        }
    }

    /// The leader got what it fetched: every waiter gets `mail`; returns
    /// them (to wake).
    pub fn land(&mut self, key: &CacheKey, leader: u32, mail: &M) -> Vec<u32> {
        let Some(flight) = self.take_led(key, leader) else {
            return Vec::new();
        };
        for waiter in &flight.waiters {
            self.mail.insert(*waiter, mail.clone());
        }
        flight.waiters
    }

    /// The leader went away (or got nothing to share): its waiters are
    /// woken with no mail and decide again.
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
    pub fn leave(&mut self, key: &CacheKey, stream: u32) {
        if let Some(flight) = self.flights.get_mut(key) {
            flight.waiters.retain(|w| *w != stream);
        }
        self.mail.remove(&stream);
    }

    /// The mail left for a woken waiter (none: decide again).
    pub fn take_mail(&mut self, stream: u32) -> Option<M> {
        self.mail.remove(&stream)
    }

    /// Whether a request fetches `key`.
    pub fn in_flight(&self, key: &CacheKey) -> bool {
        self.flights.contains_key(key)
    }

    /// Fetches in flight.
    pub fn len(&self) -> usize {
        self.flights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }
}
