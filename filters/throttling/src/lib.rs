//! throttling: work in progress.
