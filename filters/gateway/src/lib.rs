//! gateway: work in progress.
