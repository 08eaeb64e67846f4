//! Only the test in `tests/` (see Cargo.toml).
