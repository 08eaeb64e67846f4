//! empty-filter: work in progress.
