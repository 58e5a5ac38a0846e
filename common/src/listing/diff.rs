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

use crate::store::Listed;
use crate::verify::etag_bare;

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
    /// Objects the target listing returned (before filters).
    pub target_listed: u64,
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
        self.target_listed += other.target_listed;
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

/// `--compare`: what a listing must show for a key on both sides to count as
/// unchanged (and not be sent). Listings carry size, ETag and last-modified
/// time, never checksum values: whatever they cannot decide is sent as an
/// [`Op::Update`](crate::message::Op::Update) for the executor to compare
/// (checksums first, then ETags knowing the encryption, `--deep` bytes), so
/// nothing is called unchanged on a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compare {
    /// Size, then ETag: equal ETags are unchanged; different ETags
    /// (SSE-KMS, other part sizes) go to executors to compare. Where a
    /// listing has no ETags (directories), size and time as `mtime`.
    #[default]
    Auto,
    /// Size only: equal sizes are unchanged (fast, blind to same-size edits).
    Size,
    /// Size and ETag: different or missing ETags are copied without a
    /// compare (for targets known not to be SSE-KMS or re-chunked).
    Etag,
    /// Size, then every same-size pair goes to executors to compare
    /// (checksums, ETags, `--deep` bytes): the most exact, one HEAD per side.
    Checksum,
    /// Size and time: unchanged unless the source was modified after the target.
    Mtime,
}

impl Compare {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compare::Auto => "auto",
            Compare::Size => "size",
            Compare::Etag => "etag",
            Compare::Checksum => "checksum",
            Compare::Mtime => "mtime",
        }
    }
}

/// How pairs are judged: `--compare` and `--overwrite-newer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rule {
    pub compare: Compare,
    /// Send keys whose target differs and is newer than the source too.
    pub overwrite_newer: bool,
}

/// What the diff makes of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// On the source only: copied.
    New,
    /// Shown different by the listing (`size`, `mtime`, or `etag` under
    /// `--compare etag`): copied.
    Changed(&'static str),
    /// Not shown equal by the listing (`etag`: ETags differ or are missing;
    /// `checksum`: `--compare checksum`): sent for the executor to compare.
    Compare {
        why: &'static str,
        /// The target was modified after the source: if it differs, keep it.
        keep_newer_target: bool,
    },
    /// Shown equal by the listing: not sent.
    Unchanged,
    /// Shown different, and the target is the newer: not sent.
    TargetNewer,
    /// On the target only: deleted with `--delete`, else kept.
    TargetOnly,
}

/// Judge one key from what the two listings say of it.
pub fn classify(source: Option<&Listed>, target: Option<&Listed>, rule: Rule) -> Class {
    let (s, t) = match (source, target) {
        (Some(s), Some(t)) => (s, t),
        (Some(_), None) => return Class::New,
        (None, _) => return Class::TargetOnly,
    };
    let target_newer = match (s.last_modified, t.last_modified) {
        (Some(a), Some(b)) => b > a,
        _ => false,
    };
    let changed = |why| match target_newer && !rule.overwrite_newer {
        true => Class::TargetNewer,
        false => Class::Changed(why),
    };
    if s.size != t.size {
        return changed("size");
    }
    let source_newer = match (s.last_modified, t.last_modified) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    };
    // Neither ETags nor both times (an inventory without those fields):
    // `auto` has nothing but the size, so executors compare.
    let times_known = s.last_modified.is_some() && t.last_modified.is_some();
    let etags = match (s.etag.as_deref(), t.etag.as_deref()) {
        (Some(a), Some(b)) => Some(etag_bare(a).eq_ignore_ascii_case(etag_bare(b))),
        _ => None,
    };
    let etags_equal = etags == Some(true);
    let compare = |why| Class::Compare {
        why,
        keep_newer_target: target_newer && !rule.overwrite_newer,
    };
    match rule.compare {
        Compare::Size => Class::Unchanged,
        Compare::Mtime => by_time(source_newer),
        // Without ETags on a side (directories, some S3-compatible stores),
        // `auto` falls back to `mtime`: a directory target keeps its
        // source's mtime, an S3 target is written after its source.
        Compare::Auto if etags.is_none() && times_known => by_time(source_newer),
        Compare::Auto | Compare::Etag if etags_equal => Class::Unchanged,
        Compare::Auto => compare("etag"),
        Compare::Etag => changed("etag"),
        Compare::Checksum => compare("checksum"),
    }
}

/// `mtime`: unchanged unless the source was modified after the target.
fn by_time(source_newer: bool) -> Class {
    match source_newer {
        true => Class::Changed("mtime"),
        false => Class::Unchanged,
    }
}

impl Tally {
    /// Count one key of `class` (`size`: the source's, or the target's for
    /// target-only keys).
    pub fn count(&mut self, class: Class, size: u64) {
        self.compared += 1;
        match class {
            Class::New => self.new.add(size),
            Class::Changed(why) | Class::Compare { why, .. } => {
                self.changed.entry(why.to_string()).or_default().add(size)
            }
            Class::Unchanged => self.unchanged.add(size),
            Class::TargetNewer => self.target_newer.add(size),
            Class::TargetOnly => self.target_only.add(size),
        }
    }
}

/// One key of the merge join, in source key space: what each side listed.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub key: String,
    pub source: Option<Listed>,
    pub target: Option<Listed>,
}

/// Merge-join two key-sorted runs (each strictly increasing) into one
/// key-sorted run where every key of either appears exactly once.
pub fn join(source: Vec<Listed>, target: Vec<Listed>) -> Vec<Joined> {
    let mut out = Vec::with_capacity(source.len().max(target.len()));
    let mut s = source.into_iter().peekable();
    let mut t = target.into_iter().peekable();
    loop {
        let order = match (s.peek(), t.peek()) {
            (None, None) => return out,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => a.key.cmp(&b.key),
        };
        let (source, target) = match order {
            std::cmp::Ordering::Less => (s.next(), None),
            std::cmp::Ordering::Greater => (None, t.next()),
            std::cmp::Ordering::Equal => (s.next(), t.next()),
        };
        let key = source
            .as_ref()
            .or(target.as_ref())
            .map(|l| l.key.clone())
            .unwrap_or_default();
        out.push(Joined {
            key,
            source,
            target,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn obj(size: u64, etag: Option<&str>, minute: u32) -> Listed {
        Listed {
            key: "k".into(),
            size,
            etag: etag.map(|e| format!("\"{e}\"")),
            last_modified: Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0).unwrap()),
            ..Listed::default()
        }
    }

    #[test]
    fn classify_table() {
        let rule = |compare| Rule {
            compare,
            overwrite_newer: false,
        };
        let auto = rule(Compare::Auto);
        let (old, new) = (1, 2);
        let same = obj(5, Some("aa"), old);
        let copy_of_same = obj(5, Some("AA"), new);
        let edited = obj(5, Some("bb"), new);
        let grown = obj(6, Some("cc"), old);
        let no_etag = obj(5, None, new);
        let grown_new = obj(6, Some("x"), new);
        let aa_new = obj(5, Some("aa"), new);
        let bb_old = obj(5, Some("bb"), old);
        let none_old = obj(5, None, old);
        let untimed = Listed {
            last_modified: None,
            ..obj(5, None, old)
        };
        type Case<'a> = (&'a str, Option<&'a Listed>, Option<&'a Listed>, Rule, Class);
        let cases: Vec<Case> = vec![
            ("source only", Some(&same), None, auto, Class::New),
            ("target only", None, Some(&same), auto, Class::TargetOnly),
            (
                "same etag",
                Some(&same),
                Some(&copy_of_same),
                auto,
                Class::Unchanged,
            ),
            (
                "size differs, source newer",
                Some(&grown_new),
                Some(&same),
                auto,
                Class::Changed("size"),
            ),
            (
                "size differs, target newer",
                Some(&grown),
                Some(&copy_of_same),
                auto,
                Class::TargetNewer,
            ),
            (
                "size differs, target newer, overwrite",
                Some(&grown),
                Some(&copy_of_same),
                Rule {
                    compare: Compare::Auto,
                    overwrite_newer: true,
                },
                Class::Changed("size"),
            ),
            (
                "etags differ: executors compare, keeping a newer target",
                Some(&same),
                Some(&edited),
                auto,
                Class::Compare {
                    why: "etag",
                    keep_newer_target: true,
                },
            ),
            (
                "no etag on one side, source modified after the target",
                Some(&aa_new),
                Some(&none_old),
                auto,
                Class::Changed("mtime"),
            ),
            (
                "neither etags nor times: executors compare",
                Some(&untimed),
                Some(&untimed),
                auto,
                Class::Compare {
                    why: "etag",
                    keep_newer_target: false,
                },
            ),
            (
                "no etag on one side, target written after",
                Some(&same),
                Some(&no_etag),
                auto,
                Class::Unchanged,
            ),
            (
                "size mode ignores content",
                Some(&same),
                Some(&edited),
                rule(Compare::Size),
                Class::Unchanged,
            ),
            (
                "etag mode copies a different etag",
                Some(&aa_new),
                Some(&bb_old),
                rule(Compare::Etag),
                Class::Changed("etag"),
            ),
            (
                "etag mode keeps a newer different target",
                Some(&same),
                Some(&edited),
                rule(Compare::Etag),
                Class::TargetNewer,
            ),
            (
                "checksum mode compares even equal etags",
                Some(&same),
                Some(&copy_of_same),
                rule(Compare::Checksum),
                Class::Compare {
                    why: "checksum",
                    keep_newer_target: true,
                },
            ),
            (
                "mtime: target written after",
                Some(&same),
                Some(&no_etag),
                rule(Compare::Mtime),
                Class::Unchanged,
            ),
            (
                "mtime: source modified after",
                Some(&no_etag),
                Some(&none_old),
                rule(Compare::Mtime),
                Class::Changed("mtime"),
            ),
        ];
        for (what, s, t, r, want) in cases {
            assert_eq!(classify(s, t, r), want, "{what}");
        }
    }

    #[test]
    fn tallies_count_and_merge() {
        let mut a = Tally::default();
        a.count(Class::New, 3);
        a.count(Class::Changed("size"), 4);
        a.count(
            Class::Compare {
                why: "etag",
                keep_newer_target: false,
            },
            5,
        );
        a.count(Class::Unchanged, 6);
        a.count(Class::TargetOnly, 7);
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.compared, 10);
        assert_eq!(b.new, Count { files: 2, bytes: 6 });
        assert_eq!(b.changed["size"], Count { files: 2, bytes: 8 });
        assert_eq!(
            b.changed_total(),
            Count {
                files: 4,
                bytes: 18
            }
        );
        assert_eq!(
            b.target_only,
            Count {
                files: 2,
                bytes: 14
            }
        );
    }

    #[test]
    fn join_pairs_equal_keys_and_keeps_order() {
        let l = |k: &str| Listed {
            key: k.into(),
            ..Listed::default()
        };
        let j = join(vec![l("a"), l("c"), l("d")], vec![l("b"), l("c"), l("e")]);
        let got: Vec<(&str, bool, bool)> = j
            .iter()
            .map(|j| (j.key.as_str(), j.source.is_some(), j.target.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", true, false),
                ("b", false, true),
                ("c", true, true),
                ("d", true, false),
                ("e", false, true)
            ]
        );
    }
}
