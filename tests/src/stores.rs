//! Test support: stores (see lib.rs).
