//! `commander run --sync`: source and target listed side by side and
//! merge-joined in key order, so a catch-up run sends only what is new or
//! changed (and, with `--delete`, what the target has that the source does
//! not). Memory is bounded by the ranges in flight, never by the bucket.
//!
//! This module holds the pure parts: what "unchanged" means ([`Compare`],
//! [`classify`]) and the tallies a run, its job record and `commander
//! status` carry ([`Tally`]). The paired walk lives in
//! [`super::parallel::list_pair`]. See docs/sync.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Files and bytes of one class of keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

impl Count {
    /// Count one object of `bytes`.
    pub fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }

    /// Add another count.
    pub fn merge(&mut self, other: Count) {
        self.files += other.files;
        self.bytes += other.bytes;
    }
}

/// What a `--sync` run found, by class (bytes: the source's size, or the
/// target's for target-only keys). Carried by the run's summary and added
/// to its job record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Keys compared: present on either side and admitted by the filters.
    pub compared: u64,
    /// On the source only: sent.
    pub new: Count,
    /// On both and different, by the attribute that showed it (`size`,
    /// `mtime`), or sent for the executor to compare (`etag`: same size,
    /// ETags differ or are missing; `checksum`: `--compare checksum`).
    pub changed: BTreeMap<String, Count>,
    /// On both and shown equal by the listing: not sent.
    pub unchanged: Count,
    /// Different, and the target was modified after the source: not sent
    /// (`--overwrite-newer` sends them).
    pub target_newer: Count,
    /// On the target only.
    pub target_only: Count,
    /// Target-only keys sent as deletes (`--delete`).
    pub deletes: Count,
}

impl Tally {
    /// Every changed key, whatever showed it.
    pub fn changed_total(&self) -> Count {
        let mut c = Count::default();
        for v in self.changed.values() {
            c.merge(*v);
        }
        c
    }

    /// Add another run's tally (a resumed job accumulates).
    pub fn merge(&mut self, other: &Tally) {
        self.compared += other.compared;
        self.new.merge(other.new);
        for (k, v) in &other.changed {
            self.changed.entry(k.clone()).or_default().merge(*v);
        }
        self.unchanged.merge(other.unchanged);
        self.target_newer.merge(other.target_newer);
        self.target_only.merge(other.target_only);
        self.deletes.merge(other.deletes);
    }
}
