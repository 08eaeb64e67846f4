//! circuit-breaker: work in progress.
