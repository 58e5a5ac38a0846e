//! Test support: queues (see lib.rs).
