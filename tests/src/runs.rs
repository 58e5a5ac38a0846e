//! Test support: runs (see lib.rs).
